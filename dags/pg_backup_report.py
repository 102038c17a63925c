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

import pendulum
from airflow.sdk import DAG
from pg_dataops.airflow.notifiers import default_args
from pg_dataops.airflow.runstate import fail_run_on_any_failure
from pg_dataops.common.config import load_config
from pg_dataops.observe.operators import BackupReportOperator

CFG = load_config()

with DAG(
    dag_id="pg_backup_report",
    description="Daily Slack report: last 24 h per tier, verification, RTO, S3 storage per tier, 30-day trend",
    schedule=CFG.report_schedule,
    start_date=pendulum.datetime(2026, 1, 1, tz=CFG.timezone),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=dt.timedelta(hours=2),
    default_args=default_args(CFG, execution_timeout=dt.timedelta(minutes=30)),
    tags=["backup", "postgres", "glimpse", "report"],
    doc_md=__doc__,
) as dag:
    BackupReportOperator(task_id="post_report")

# Last: a failed task makes the run failed (red), and a timed-out run alerts.
fail_run_on_any_failure(dag)
