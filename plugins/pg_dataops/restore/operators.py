"""Thin operators of the restore DAGs over ``pg_dataops.restore``: fetch connections, call one core function,
return its dict. One section per DAG; the shared pieces first.

Parsed with the DAG files: boto3 and psycopg come in through the core modules, imported inside the methods.
The age identity (an encrypted backup's key) is passed to the core as a reader, never returned or pushed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import TriggerRule

from pg_dataops.airflow.base import (
    StepOperator,
    age_identity,
    catalog_connection,
    pg_conn,
    post_slack,
    s3_client,
    task_ids,
)
from pg_dataops.common.config import Config

if TYPE_CHECKING:
    from airflow.sdk import Context

__all__ = ["TriggerRule", "Sequence", "Any", "age_identity", "catalog_connection", "pg_conn", "post_slack",
           "s3_client", "task_ids"]


def triggered_by(context: Context) -> str:
    """Who started the run: the UI/API user, else how (a schedule, `airflow dags trigger`, a test)."""
    dag_run = context["dag_run"]
    user = getattr(dag_run, "triggering_user_name", None)
    if user:
        return str(user)
    return f"{getattr(dag_run, 'run_type', None) or 'unknown'} run"


class RestoreStep(StepOperator):
    """A restore DAG's step: its alerts name the plan's target."""

    @property
    def backup_target(self) -> str | None:
        plan = getattr(self, "plan", None)
        if isinstance(plan, dict) and isinstance(plan.get("target"), str):
            return plan["target"]
        return super().backup_target


def target_conn(cfg: Config, target: str, *, database: str | None = None, purpose: str = "target database"):
    """The target's PgConn (its database, or ``database`` on the same server)."""
    t = cfg.target(target)
    return pg_conn(t.conn_id, database or t.database, f"{purpose} of {target}", require_database=database is None,
                   cfg=cfg)


# ==== pg_full_recovery and pg_recovery_rehearsal (restore/full.py) =========================================
# (section owned by the full-recovery work)


# ==== pg_table_restore (restore/table.py) ===================================================================
# (section owned by the table-restore work)


# ==== pg_user_data_restore (restore/user.py) ================================================================
# (section owned by the user-restore work)
