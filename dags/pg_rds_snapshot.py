"""
### pg_rds_snapshot: daily manual RDS snapshot, pruned by its own tags (runbook 1.3)

For a deployment on AWS RDS (`dr.rds_instance_id`); unscheduled, and its first task skips, while that is
null. Daily at `dr.rds_snapshot_schedule` (04:00 in the configured time zone), also manual.

**check_rds** (the `dr.rds_conn_id` connection exists; the instance exists and can be snapshotted; names this
run's snapshot `{dr.rds_snapshot_prefix}-{instance}-{YYYYmmdd-HHMMSS}` from the run's logical date in UTC,
so a rerun reuses it) -> **create_snapshot** (the provider's `RdsCreateDbSnapshotOperator`, tagged
`Type=Manual`, `Retention=<dr.rds_retention_days>days` as the runbook did, plus `CreatedBy=pg_dataops`,
`CreatedByDag=pg_rds_snapshot`) -> **wait_available** (the provider's `RdsSnapshotExistenceSensor`, until
`available`) -> **plan_prune** (lists the instance's manual snapshots; deletes only the ones carrying both
`Type=Manual` and `CreatedBy=pg_dataops`, `available`, and older than their own `Retention` tag; never this
run's snapshot, never a snapshot without our tags; an unreadable `Retention` is kept and reported) ->
**delete_snapshot** (the provider's `RdsDeleteDbSnapshotOperator`, one mapped task per planned snapshot) ->
**report** (whatever happened: Slack summary of the snapshot, what was deleted, what was kept and why).

Any failed task alerts Slack and PagerDuty; the run is then red.
"""

from __future__ import annotations

import datetime as dt

from airflow.providers.amazon.aws.operators.rds import RdsDeleteDbSnapshotOperator
from airflow.providers.amazon.aws.sensors.rds import RdsSnapshotExistenceSensor
from airflow.sdk import chain
from pg_dataops.airflow.dag_defaults import standard_dag
from pg_dataops.common.config import load_config
from pg_dataops.dr.operators import (
    CheckRdsOperator,
    CreateRdsSnapshotOperator,
    PlanRdsPruneOperator,
    RdsSnapshotReportOperator,
)

CFG = load_config()
RDS_CONN_ID = CFG.dr.rds_conn_id

with standard_dag(
    "pg_rds_snapshot",
    description="Daily manual RDS snapshot with the runbook's tags; our snapshots past their Retention tag deleted",
    schedule=CFG.dr.rds_snapshot_schedule if CFG.dr.rds_instance_id else None,
    cfg=CFG,
    dagrun_timeout=dt.timedelta(minutes=CFG.dagrun_timeout_minutes),
    tags=["dr", "rds", "snapshot", "postgres"],
    doc_md=__doc__,
) as dag:
    check = CheckRdsOperator(task_id="check_rds")
    create = CreateRdsSnapshotOperator(
        task_id="create_snapshot",
        db_identifier=check.output["instance"],
        db_snapshot_identifier=check.output["snapshot_id"],
        retention_days=CFG.dr.rds_retention_days,
        wait_for_completion=False,  # wait_available waits, as its own task with its own time limit
        aws_conn_id=RDS_CONN_ID,
    )
    wait_available = RdsSnapshotExistenceSensor(
        task_id="wait_available",
        db_type="instance",
        db_snapshot_identifier=check.output["snapshot_id"],
        target_statuses=["available"],
        aws_conn_id=RDS_CONN_ID,
        mode="reschedule",  # a snapshot of a large instance takes a while: no worker slot held meanwhile
        poke_interval=60,
        timeout=CFG.task_timeout_minutes * 60,
    )
    plan = PlanRdsPruneOperator(task_id="plan_prune", instance=check.output["instance"],
                                snapshot_id=check.output["snapshot_id"])
    delete = RdsDeleteDbSnapshotOperator.partial(
        task_id="delete_snapshot", db_type="instance", aws_conn_id=RDS_CONN_ID, wait_for_completion=True,
    ).expand(db_snapshot_identifier=plan.output)
    report = RdsSnapshotReportOperator(task_id="report", check=check, plan=plan)
    chain(check, create, wait_available, plan, delete, report)
