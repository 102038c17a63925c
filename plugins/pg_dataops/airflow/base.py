"""Airflow glue shared by every capability: connections, the permanent-error list, the base step operator.

Errors that retrying cannot fix (a missing connection, a wrong password, a missing bucket, a full
disk, an existing key) fail the task at once; transient ones (network, S3 hiccups) use the retries.
The failing step's message is also pushed as XCom ``error`` so the catalog row can say why.

Connections are fetched here and only here: :func:`pg_conn` (libpq parameters, the connection's
extras included), :func:`catalog_connection`, :func:`s3_client`, :func:`aws_client`, :func:`post_slack`.
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


def triggered_by(context: Context) -> str:
    """Who started the run: the UI/API user, else how (a schedule, `airflow dags trigger`, a test)."""
    dag_run = context["dag_run"]
    user = getattr(dag_run, "triggering_user_name", None)
    if user:
        return str(user)
    return f"{getattr(dag_run, 'run_type', None) or 'unknown'} run"


def run_started(context: Context):
    """When the run was triggered (the RTO's start and the names' stamp): its start, else run_after."""
    import datetime as dt

    dag_run = context["dag_run"]
    return getattr(dag_run, "start_date", None) or getattr(dag_run, "run_after", None) or dt.datetime.now(dt.UTC)


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

    The connection's extras that are libpq parameters (``sslmode``, ``sslrootcert``, ``sslcert``,
    ``sslkey``, ``connect_timeout``, ``options``, ``application_name``, ...) are kept; RDS and
    standbys need them. ``require_database``: the database must be named (``database`` or the
    connection's schema); a server-level connection (restore server, catalog) may fall back to
    ``postgres``.
    """
    from pg_dataops.common.pg import PgConn, libpq_extras

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
    try:
        extras = libpq_extras(c.extra_dejson)
    except ValueError as exc:
        raise ConfigError(f"Airflow connection {conn_id!r} ({purpose}): {exc}") from None
    return PgConn(
        host=c.host or "localhost",
        port=int(c.port or 5432),
        user=c.login or "postgres",
        dbname=dbname,
        password=c.password or None,
        statement_timeout=cfg.statement_timeout_seconds,
        lock_timeout=cfg.lock_wait_timeout_seconds,
        extras=extras,
    )


def app_step_bearer(step) -> str | None:
    """An application step's token (:class:`~pg_dataops.common.config.AppStep`): its conn_id connection's
    password (registered as a secret); None when the step has no connection."""
    if step is None or not step.conn_id:
        return None
    return airflow_connection(step.conn_id, "application step token").password or None


def age_identity(cfg: Config) -> str:
    """The age identity (private key) of ``encryption.identity_conn_id``'s password, for restore-side tasks only.

    A missing connection fails naming it; the key is registered as a secret, so no later message carries it."""
    conn = airflow_connection(cfg.encryption.identity_conn_id, "age identity for encrypted backups")
    for line in (conn.password or "").splitlines():
        register_secret(line.strip())
    return conn.password or ""


def catalog_connection(cfg: Config):
    """An autocommit psycopg connection to the backup catalog (``catalog_conn_id``); close it when done."""
    from pg_dataops.common import pg

    return pg.connect(pg_conn(cfg.catalog_conn_id, None, "backup catalog", cfg=cfg), autocommit=True)


def post_slack(cfg: Config, context: Context, text: str, *, attachments: list[dict] | None = None) -> None:
    """One message to the configured Slack webhook (``slack_conn_id``); raises if it cannot be posted."""
    from pg_dataops.airflow.notifiers import slack_post

    airflow_connection(cfg.slack_conn_id, "Slack notifications")
    slack_post(cfg.slack_conn_id, context, text, attachments)


def s3_client(conn_id: str):
    # Check first: S3Hook falls back to ambient AWS credentials when the connection is missing,
    # which would send a backup somewhere nobody configured.
    airflow_connection(conn_id, "S3 backup storage")
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    return S3Hook(aws_conn_id=conn_id).get_conn()


def aws_client(conn_id: str, client_type: str, purpose: str):
    """A boto3 client of ``client_type`` (rds, route53, ...) from an Airflow aws connection (its extra's
    region_name / endpoint_url apply). Checked first: AwsBaseHook would fall back to ambient credentials."""
    airflow_connection(conn_id, purpose)
    from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

    return AwsBaseHook(aws_conn_id=conn_id, client_type=client_type).get_conn()


def aws_credentials(conn_id: str) -> dict[str, str | None]:
    """The S3 connection's credentials and endpoint, for the Barman tools' environment and command line
    (restore_command runs them as the scratch server's child). Registered as secrets: never logged."""
    from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

    from pg_dataops.common.errors import register_secret

    conn = airflow_connection(conn_id, "S3 backup storage")
    hook = AwsBaseHook(aws_conn_id=conn_id, client_type="s3")
    creds = hook.get_credentials()
    register_secret(creds.secret_key)
    register_secret(creds.token)
    extra = conn.extra_dejson
    return {"access_key": creds.access_key, "secret_key": creds.secret_key, "token": creds.token,
            "region": extra.get("region_name") or hook.conn_region_name,
            "endpoint_url": extra.get("endpoint_url") or (extra.get("service_config", {}).get("s3", {}) or {}).get(
                "endpoint_url")}


class StepOperator(BaseOperator):
    """Every task of ours: runs one core step; turns its errors into a clear task failure and an ``error`` XCom.

    Subclasses implement :meth:`run_step`: fetch connections, call one core function, return its dict.
    Upstream results arrive as XComArgs (``dump.output``); where a step needs another task's ``error``
    or a result of a task that may not have run, it takes that task object and keeps its ``task_id``
    (see :func:`task_ids`), so a renamed task cannot silently give None.
    """

    ui_color = "#d8e8f8"

    # What the step is waiting for, in words, for the message when its execution_timeout hits.
    waiting_for: str | None = None

    def __init__(self, **kwargs):
        """Keyword arguments named in ``template_fields`` become attributes: a field with a class
        attribute of the same name has that default, any other one is required."""
        fields = {name: kwargs.pop(name) for name in self.template_fields if name in kwargs}
        missing = [name for name in self.template_fields if name not in fields and not hasattr(type(self), name)]
        if missing:
            raise TypeError(f"{type(self).__name__}: missing keyword argument(s) {', '.join(map(repr, missing))}")
        super().__init__(**kwargs)
        for name, value in fields.items():
            setattr(self, name, value)

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

    def xcom(self, context: Context, task_id: str, key: str = "return_value") -> Any:
        """XCom of another task of this run (same map index inside a mapped group), or None if it never pushed."""
        ti = context["ti"]
        return ti.xcom_pull(task_ids=task_id, key=key, map_indexes=ti.map_index)

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


def task_ids(**tasks: Any) -> dict[str, str]:
    """``{name: task_id}`` of task objects (or XComArgs) given at DAG-build time, for :meth:`StepOperator.xcom`."""
    out = {}
    for name, task in tasks.items():
        task = getattr(task, "operator", task)  # an XComArg names its task
        task_id = getattr(task, "task_id", None)
        if not isinstance(task_id, str):
            raise TypeError(f"{name}: expected a task or its .output, got {type(task).__name__}")
        out[name] = task_id
    return out


def step_results(op: StepOperator, context: Context, step_ids: dict[str, str]):
    """(results by step name, errors in run order as ``(task_id, error)``) of a report's steps (``{name: task_id}``,
    see :func:`task_ids`): a step's return value only where it succeeded (its ``error`` XCom is empty)."""
    errors = [(task_id, op.xcom(context, task_id, key="error")) for task_id in step_ids.values()]
    by_id = dict(errors)
    results = {name: (op.xcom(context, task_id) if by_id[task_id] == "" else None)
               for name, task_id in step_ids.items()}
    return results, errors
