"""
### pg_wal_archive_check: hourly checks on the WAL archive (runbook's check-wal-archive cron)

Every hour (`pitr.archive_check_schedule`, default `5 * * * *`, in the configured time zone); also manual.
One mapped task group per PITR target, **check_target.check_archive** (`pg_dataops.pitr.archive_check`), as of the wall clock:

- **page** (PagerDuty, and the run is red): archive_command failing (`pg_stat_archiver`: the last failure
  is newer than the last success) or `archive_mode` off; the newest WAL segment in S3 older than
  `pitr.rpo_minutes` while the server has written WAL after it; segments missing between the oldest kept
  base backup's start and the newest archived one (each gap named); `barman-cloud-check-wal-archive
  --timeline <server's timeline + 1>` failing (another server archives a higher timeline into the same place).
- **warn** (Slack): more than a few `.ready` files waiting (or the role cannot read them: pg_monitor), the
  newest segment older than 2 x archive_timeout + 60 s, the server several segments ahead of S3.

Keys are `pg_wal_archive_check/<target>/<check>`; their state is kept in the catalog table `monitor_alerts`
(as for pg_backup_monitor): PagerDuty is triggered on every failing run and resolved once under the same key
when the check passes; Slack hears of a warning once when it starts and once when it clears. A failure of
the task itself alerts Slack and PagerDuty like every backup task.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import task_group
from pg_dataops.airflow.dag_defaults import standard_dag
from pg_dataops.common.config import load_config
from pg_dataops.pitr.operators import WalArchiveCheckOperator

CFG = load_config()

with standard_dag(
    "pg_wal_archive_check",
    description="Hourly: WAL archiving failures, backlog, age against the RPO, gaps and foreign timelines in S3",
    schedule=CFG.pitr.archive_check_schedule,
    cfg=CFG,
    dagrun_timeout=dt.timedelta(minutes=55),  # never overlaps the next hourly run
    task_defaults=dict(max_retry_delay=dt.timedelta(minutes=15), execution_timeout=dt.timedelta(minutes=10)),
    tags=["backup", "postgres", "pitr", "wal", "monitoring"],
    doc_md=__doc__,
) as dag:

    @task_group
    def check_target(target: str):
        WalArchiveCheckOperator(task_id="check_archive", target=target)

    check_target.expand(target=[t.name for t in CFG.pitr_targets])
