"""Airflow glue shared by every capability: connections, the permanent-error list, the base step operator.

Errors that retrying cannot fix (a missing connection, a wrong password, a missing bucket, a full
disk, an existing key) fail the task at once; transient ones (network, S3 hiccups) use the retries.
The failing step's message is also pushed as XCom ``error`` so the catalog row can say why.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook, BaseOperator
from airflow.sdk.exceptions import (
    AirflowFailException,
    AirflowNotFoundException,
    AirflowTaskTimeout,
)

from pg_dataops.common.config import Config, ConfigError, load_config
from pg_dataops.common.errors import (
    AuthenticationFailed,
    BackupError,
    BucketMissing,
    ClientVersionError,
    ConnectionMissing,
    DiskFull,
    IntegrityError,
    ObjectExists,
    PermanentError,
    VerificationFailed,
    redact,
    register_secret,
)

if TYPE_CHECKING:
    from airflow.sdk import Context

    from pg_dataops.common.pg import PgConn

# The DAG files import this module at parse time: boto3 and psycopg (via backup.steps, common.s3,
# backup.verify, common.pg) are imported inside the methods that use them, to keep parsing fast.

# Retrying these cannot help; fail fast and alert.
PERMANENT = (ConfigError, ConnectionMissing, AuthenticationFailed, ClientVersionError, BucketMissing, DiskFull,
             ObjectExists, IntegrityError, VerificationFailed, PermanentError)


def run_moment(context) -> dt.datetime:
    """The run's logical date, or run_after for manual runs (logical_date may be None in Airflow 3)."""
    dag_run = context["dag_run"]
    return dag_run.logical_date or dag_run.run_after


def airflow_connection(conn_id: str, purpose: str):
    try:
        conn = BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        env = "AIRFLOW_CONN_" + conn_id.upper()
        raise ConnectionMissing(
            f"Airflow connection {conn_id!r} ({purpose}) is not defined: add it in Admin > Connections or as {env}"
        ) from None
    register_secret(conn.password)  # every later error text, alert and XCom of this process drops it
    return conn


def pg_conn(conn_id: str, database: str | None, purpose: str, *, require_database: bool = False,
            cfg: Config | None = None) -> PgConn:
    """A PgConn from an Airflow connection, with the config's time limits on our own sessions.

    ``require_database``: the database must be named (``database`` or the connection's schema); a
    server-level connection (restore server, catalog) may fall back to ``postgres``.
    """
    from pg_dataops.common.pg import PgConn

    c = airflow_connection(conn_id, purpose)
    dbname = database or c.schema
    if not dbname:
        if require_database:
            raise ConfigError(
                f"{purpose}: no database named: set the target's 'database' in the config or the schema "
                f"(database) field of Airflow connection {conn_id!r}; refusing to fall back to 'postgres'"
            )
        dbname = "postgres"
    cfg = cfg or load_config()
    return PgConn(
        host=c.host or "localhost",
        port=int(c.port or 5432),
        user=c.login or "postgres",
        dbname=dbname,
        password=c.password or None,
        statement_timeout=cfg.statement_timeout_seconds,
        lock_timeout=cfg.lock_wait_timeout_seconds,
    )


def s3_client(conn_id: str):
    # Check first: S3Hook falls back to ambient AWS credentials when the connection is missing,
    # which would send a backup somewhere nobody configured.
    airflow_connection(conn_id, "S3 backup storage")
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    return S3Hook(aws_conn_id=conn_id).get_conn()


class BackupStepOperator(BaseOperator):
    """Runs one core step; turns its errors into a clear task failure and an ``error`` XCom."""

    ui_color = "#d8e8f8"

    # What the step is waiting for, in words, for the message when its execution_timeout hits.
    waiting_for: str | None = None

    def execute(self, context: Context) -> Any:
        try:
            cfg = load_config()
            result = self.run_step(cfg, context)
        except (BackupError, ConfigError) as exc:
            context["ti"].xcom_push(key="error", value=redact(f"{self.task_id}: {exc}"))
            if isinstance(exc, PERMANENT):
                raise AirflowFailException(redact(str(exc))) from exc
            raise
        except AirflowTaskTimeout as exc:
            # Raised by the task runner's alarm wherever the step was waiting: say what it waited for,
            # in the record step's FAILED row and in the alert.
            message = self.timeout_message()
            context["ti"].xcom_push(key="error", value=f"{self.task_id}: {message}")
            raise AirflowTaskTimeout(message) from exc
        # An empty error tells the ALL_DONE steps "no error here" without a not-found lookup,
        # which the task SDK would log at error level and mislead whoever reads the log.
        context["ti"].xcom_push(key="error", value="")
        return result

    def run_step(self, cfg: Config, context: Context) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def timeout_message(self) -> str:
        limit = self.execution_timeout.total_seconds() / 60 if self.execution_timeout else 0
        what = f" waiting for {self.waiting_for}" if self.waiting_for else ""
        return f"timed out after {limit:g} min{what} (execution_timeout: config task_timeout_minutes)"

    def pull(self, context: Context, step: str, key: str = "return_value") -> Any:
        """XCom of a sibling step in this mapped group (same map index), or None if it never pushed."""
        ti = context["ti"]
        prefix = f"{self.task_group.group_id}." if self.task_group and self.task_group.group_id else ""
        return ti.xcom_pull(task_ids=prefix + step, key=key, map_indexes=ti.map_index)

    @property
    def backup_target(self) -> str | None:
        """The target this task works on, for alerts (rendered fields only exist at run time)."""
        target = getattr(self, "target", None)
        if isinstance(target, str):
            return target
        for name in ("dump", "manifest", "scratch"):
            value = getattr(self, name, None)
            if isinstance(value, dict) and isinstance(value.get("target"), str):
                return value["target"]
        return None
