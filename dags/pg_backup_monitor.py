"""
### pg_backup_monitor: hourly checks on the backups (runbook "백업 모니터링")

Every hour (`monitor_schedule`, in the configured time zone). One task, **check_and_alert**, evaluates
`pg_dataops.observe.monitor` on the catalog (`catalog_conn_id`) and the local backup disk, as of the wall clock:

- **page** (PagerDuty): the newest SUCCESS backup of a target, of any tier, is older than
  `monitor_max_backup_age_hours` (or there is none). Triggered on every failing run under the key
  `pg_backup_monitor/last_daily_backup_age/<target>`, resolved once when it passes again.
- **warn** (Slack): a backup's size deviates from the median of its tier by more than
  `monitor_size_deviation_pct`; less than `monitor_min_free_gb` free under `local_root`; a successful
  backup not uploaded or not verified. Posted once when a check starts failing, and a `cleared:` line
  once it passes.

The state last alerted per key is kept in the catalog table `monitor_alerts`, so nothing is repeated
hourly. Each message names the fact and the threshold. A failure of the task itself alerts Slack and
PagerDuty like every backup task.
"""

from __future__ import annotations

import datetime as dt

from pg_dataops.airflow.dag_defaults import standard_dag
from pg_dataops.common.config import load_config
from pg_dataops.observe.operators import MonitorBackupsOperator

CFG = load_config()

with standard_dag(
    "pg_backup_monitor",
    description="Hourly: backup age (PagerDuty), size deviation, free space, upload and verification (Slack)",
    schedule=CFG.monitor_schedule,
    cfg=CFG,
    dagrun_timeout=dt.timedelta(minutes=55),  # never overlaps the next hourly run
    task_defaults=dict(max_retry_delay=dt.timedelta(minutes=15), execution_timeout=dt.timedelta(minutes=10)),
    tags=["backup", "postgres", "glimpse", "monitoring"],
    doc_md=__doc__,
) as dag:
    MonitorBackupsOperator(task_id="check_and_alert")
