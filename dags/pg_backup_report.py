"""
### pg_backup_report: the daily backup report (runbook 09:00 report)

Every day at 09:00 in the configured time zone (`report_schedule`). One task, **post_report**, builds
`pg_dataops.observe.report` as of the wall clock and posts it to Slack (`slack_conn_id`):

- the last 24 h: successes and failures per tier, and every attempt with size, duration, upload and
  verification (failures with their step and error);
- verification coverage, the last measured restore against `rto_objective_hours`;
- storage in S3 per tier (bytes and objects under `{prefix}/{tier}/` in `bucket`, listed at run time);
- what is overdue now (the same checks as `pg_backup_monitor`, which does the alerting);
- a 30-day size and duration sparkline per target and tier.

The report is read-only: it alerts nobody and changes no alert state. A failure of the task (catalog
or S3 unreachable, bucket missing) alerts Slack and PagerDuty like every backup task.
"""

from __future__ import annotations

import datetime as dt

from pg_dataops.airflow.dag_defaults import standard_dag
from pg_dataops.common.config import load_config
from pg_dataops.observe.operators import BackupReportOperator

CFG = load_config()

with standard_dag(
    "pg_backup_report",
    description="Daily Slack report: last 24 h per tier, verification, RTO, S3 storage per tier, 30-day trend",
    schedule=CFG.report_schedule,
    cfg=CFG,
    dagrun_timeout=dt.timedelta(hours=2),
    task_defaults=dict(execution_timeout=dt.timedelta(minutes=30)),
    tags=["backup", "postgres", "glimpse", "report"],
    doc_md=__doc__,
) as dag:
    BackupReportOperator(task_id="post_report")
