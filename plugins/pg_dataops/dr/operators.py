"""Thin operators of the disaster-recovery DAGs: fetch connections, call one core function of ``pg_dataops.dr``,
return its dict. boto3 and the core modules are imported inside the methods, so parsing a DAG file stays fast.

pg_rds_snapshot uses the amazon provider's own operators for the RDS calls that change something
(``RdsCreateDbSnapshotOperator``, ``RdsSnapshotExistenceSensor``, ``RdsDeleteDbSnapshotOperator``); ours
decide what they act on."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.providers.amazon.aws.operators.rds import RdsCreateDbSnapshotOperator
from airflow.sdk import TriggerRule
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from pg_dataops.airflow.base import StepOperator, aws_client, post_slack, run_moment, task_ids
from pg_dataops.common.config import Config

if TYPE_CHECKING:
    from airflow.sdk import Context

RDS_PURPOSE = "RDS snapshots (dr.rds_conn_id)"
NOT_CONFIGURED = ("RDS is not configured: dr.rds_instance_id is null (set it, or PGBACKUP_DR_RDS_INSTANCE_ID, on "
                  "a deployment on RDS); nothing to do")


# ==== pg_rds_snapshot ====================================================================================


class CheckRdsOperator(StepOperator):
    """Skips the run when RDS is not configured; else checks the connection and that the instance exists and can
    be snapshotted, and names this run's snapshot (``pg_dataops.dr.rds.preflight``). Pushes XComs ``instance``
    and ``snapshot_id`` for the provider's operators."""

    template_fields: Sequence[str] = ()
    ui_color = "#f8e8d8"
    waiting_for = "the RDS API (describe_db_instances)"

    def run_step(self, cfg: Config, context: Context) -> dict:
        from pg_dataops.dr import rds

        if cfg.dr.rds_instance_id is None:
            raise AirflowSkipException(NOT_CONFIGURED)
        client = aws_client(cfg.dr.rds_conn_id, "rds", RDS_PURPOSE)
        checked = rds.preflight(client, cfg.dr.rds_instance_id, cfg.dr.rds_snapshot_prefix, run_moment(context))
        context["ti"].xcom_push(key="instance", value=checked["instance"])
        context["ti"].xcom_push(key="snapshot_id", value=checked["snapshot_id"])
        self.log.info("RDS instance %s is %s; this run's snapshot: %s", checked["instance"],
                      checked["instance_status"], checked["snapshot_id"])
        return checked


class CreateRdsSnapshotOperator(RdsCreateDbSnapshotOperator):
    """The provider's ``RdsCreateDbSnapshotOperator`` with our tags (``pg_dataops.dr.rds.our_tags``), made
    idempotent: a rerun or retry whose snapshot already exists and is ours reuses it
    (``pg_dataops.dr.rds.existing_snapshot``); one of that name that is not ours fails the task."""

    def __init__(self, *, retention_days: int, **kwargs):
        from pg_dataops.dr import rds

        kwargs.setdefault("db_type", "instance")
        super().__init__(**kwargs)
        self.tags = rds.our_tags(retention_days, self.dag_id)

    def execute(self, context: Context) -> str:
        from pg_dataops.common.errors import PermanentError
        from pg_dataops.dr import rds

        try:
            existing = rds.existing_snapshot(self.hook.conn, self.db_snapshot_identifier, self.db_identifier)
        except PermanentError as exc:
            raise AirflowFailException(str(exc)) from exc
        if existing is not None:
            self.log.info("snapshot %s already exists (%s) and is ours: reusing it", existing["id"], existing["status"])
            return json.dumps({"reused": existing})
        return super().execute(context)


class PlanRdsPruneOperator(StepOperator):
    """Lists the instance's manual snapshots and decides which of ours are past their ``Retention`` tag
    (``pg_dataops.dr.rds.plan_for``); never this run's snapshot, never one without our tags. Returns the ids to
    delete (Airflow maps only over a return value: the mapped ``RdsDeleteDbSnapshotOperator``); the whole plan,
    with the reason for each snapshot kept, is XCom ``plan``."""

    template_fields: Sequence[str] = ("instance", "snapshot_id")
    ui_color = "#f8e8d8"
    waiting_for = "the RDS API (describe_db_snapshots)"

    def run_step(self, cfg: Config, context: Context) -> list[str]:
        from pg_dataops.dr import rds

        client = aws_client(cfg.dr.rds_conn_id, "rds", RDS_PURPOSE)
        plan = rds.plan_for(client, self.instance, run_moment(context), keep_id=self.snapshot_id)
        context["ti"].xcom_push(key="plan", value=plan)
        self.log.info("delete %s; keep %s", plan["delete_ids"] or "nothing",
                      [f"{k['id']} ({k['reason']})" for k in plan["keep"]])
        return plan["delete_ids"]


class RdsSnapshotReportOperator(StepOperator):
    """Whatever happened (trigger rule ALL_DONE): asks RDS for this run's snapshot and which planned deletions
    are gone (``pg_dataops.dr.rds.outcome``), and posts the Slack summary (created, deleted, kept with the
    reason, failed tasks). Skips when the check skipped (RDS not configured). Failures themselves alert
    through every task's failure callbacks; run_outcome makes the run red."""

    template_fields: Sequence[str] = ()

    def __init__(self, *, check: Any, plan: Any, **kwargs):
        kwargs.setdefault("trigger_rule", TriggerRule.ALL_DONE)
        super().__init__(**kwargs)
        self.step_ids = task_ids(check=check, plan=plan)

    def run_step(self, cfg: Config, context: Context) -> dict:
        from pg_dataops.airflow.runstate import failed_tasks
        from pg_dataops.dr import rds

        checked = self.xcom(context, self.step_ids["check"])
        check_error = self.xcom(context, self.step_ids["check"], key="error")
        if checked is None and not check_error:
            raise AirflowSkipException(NOT_CONFIGURED)
        plan = self.xcom(context, self.step_ids["plan"], key="plan")
        instance = cfg.dr.rds_instance_id
        facts, error = None, check_error or None
        if checked is not None:
            try:
                facts = rds.outcome(aws_client(cfg.dr.rds_conn_id, "rds", RDS_PURPOSE), instance,
                                    checked["snapshot_id"], plan)
            except Exception as exc:  # the report still goes out, saying what it could not read
                error = f"could not read the outcome from RDS: {exc}"
        text = rds.report_text(instance, facts, plan, failed=failed_tasks(context), error=error)
        post_slack(cfg, context, text)
        return {"facts": facts, "plan": plan, "slack": text}
