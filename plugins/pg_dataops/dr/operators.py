"""Thin operators of the disaster-recovery DAGs: fetch connections, call one core function of ``pg_dataops.dr``,
return its dict. boto3 and the core modules are imported inside the methods, so parsing a DAG file stays fast.

pg_rds_snapshot uses the amazon provider's own operators for the RDS calls that change something
(``RdsCreateDbSnapshotOperator``, ``RdsSnapshotExistenceSensor``, ``RdsDeleteDbSnapshotOperator``); ours
decide what they act on."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import TriggerRule
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from pg_dataops.airflow.base import (
    StepOperator,
    app_step_bearer,
    aws_client,
    catalog_connection,
    pg_conn,
    post_slack,
    run_moment,
    step_results,
    task_ids,
)
from pg_dataops.common.config import Config

if TYPE_CHECKING:
    from airflow.sdk import Context

    from pg_dataops.common.config import Standby
    from pg_dataops.common.pg import PgConn

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


def _create_rds_snapshot_operator() -> type:
    """The class below, built on first use: subclassing the provider's operator imports the amazon provider and
    boto3, which only pg_rds_snapshot's DAG file should pay for at parse time (see ``__getattr__``)."""
    from airflow.providers.amazon.aws.operators.rds import RdsCreateDbSnapshotOperator

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

    CreateRdsSnapshotOperator.__qualname__ = "CreateRdsSnapshotOperator"  # as if defined at module level
    return CreateRdsSnapshotOperator


_LAZY: dict[str, Any] = {}


def __getattr__(name: str) -> Any:
    # ``from pg_dataops.dr.operators import CreateRdsSnapshotOperator`` (PEP 562): built once, on demand.
    if name == "CreateRdsSnapshotOperator":
        if name not in _LAZY:
            _LAZY[name] = _create_rds_snapshot_operator()
        return _LAZY[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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


# ==== pg_replication_check ===============================================================================


class ReplicationCheckOperator(StepOperator):
    """Checks one target's primary and streaming standby (``pg_dataops.dr.check.check_and_alert``): primary
    reachable, standby there and streaming through its slot, replay lag (seconds and bytes), replay paused, and
    every replication slot's WAL (lost, too much held, inactive). Pages (PagerDuty) and warns (Slack) on changes,
    resolves under the same dedup_key; fails when a page-level check fails.

    ``target=None`` (no standby configured): says so, and clears what a standby removed from ``dr.standbys`` left
    failing (``pg_dataops.dr.check.no_standbys``)."""

    template_fields: Sequence[str] = ("target",)
    target: str | None = None
    ui_color = "#f8e8d8"
    waiting_for = "the primary, the standby or the backup catalog"

    def run_step(self, cfg: Config, context: Context) -> dict:
        import datetime as dt

        from pg_dataops.airflow.notifiers import send_pagerduty
        from pg_dataops.dr import check  # lazy: psycopg

        now = dt.datetime.now(dt.UTC)  # the wall clock: how far behind the standby is now, not at the logical date
        alerting = dict(slack=lambda text: post_slack(cfg, context, text),
                        pagerduty=lambda event: send_pagerduty(cfg, event))
        if self.target is None:
            catalog = catalog_connection(cfg)
            try:
                result = check.no_standbys(cfg, now, catalog=catalog, **alerting)
            finally:
                catalog.close()
            self.log.info("%s", result["message"])
            return result
        target = cfg.target(self.target)
        standby = cfg.dr.standby(target.name)
        primary = pg_conn(target.conn_id, target.database, f"replication check of {target.name} (primary)", cfg=cfg)
        standby_conn = pg_conn(standby.conn_id, None, f"replication check of {target.name} (standby {standby.name})",
                               cfg=cfg)
        catalog = catalog_connection(cfg)
        try:
            return check.check_and_alert(primary, standby_conn, cfg, target.name, now, catalog=catalog, **alerting)
        finally:
            catalog.close()


# ==== pg_standby_provision ===============================================================================


def _primary_conn(cfg: Config, target: str, standby: Standby) -> PgConn:
    """The role pg_basebackup and the standby's primary_conninfo use: replication_conn_id, else the target's."""
    if standby.replication_conn_id:
        return pg_conn(standby.replication_conn_id, None,
                       f"replication role on the primary (dr.standbys.{target}.replication_conn_id)", cfg=cfg)
    return pg_conn(cfg.target(target).conn_id, cfg.target(target).database, f"the primary of target {target}",
                   cfg=cfg)


def _standby_conn(cfg: Config, target: str, standby: Standby) -> PgConn:
    return pg_conn(standby.conn_id, None, f"the standby server (dr.standbys.{target}.conn_id)", cfg=cfg)


class ValidateStandbyOperator(StepOperator):
    """Refuses, before anything changes, a run that cannot build the standby: no standby configured for the
    target, no data directory (form or ``dr.standbys.<target>.data_directory``), a relative or non-empty one,
    a missing connection, an unreachable or unready primary, a slot already streaming, missing binaries or
    restore tool on this host, something already listening at the standby connection's host:port
    (``pg_dataops.dr.standby.preflight``). Returns the plan provision follows."""

    template_fields: Sequence[str] = ("target", "data_directory")
    ui_color = "#f8e8d8"
    waiting_for = "the primary and the standby's address (connection checks)"

    def run_step(self, cfg: Config, context: Context) -> dict:
        from pg_dataops.common import wal
        from pg_dataops.dr import standby as standby_mod

        target = self.target
        standby = cfg.dr.standby(target)
        where = f"dr.standbys.{target}"
        data_directory = standby_mod.choose_data_directory(self.data_directory, standby.data_directory,
                                                           f"{where}.data_directory")
        restore_argv = None
        if cfg.pitr.covers(target):  # the archive fallback exists only where WAL is archived
            from pg_dataops.airflow.base import aws_credentials

            credentials = aws_credentials(cfg.s3_conn_id)
            restore_argv = wal.restore_command_argv(cfg, target, endpoint_url=credentials["endpoint_url"])
        plan = standby_mod.preflight(
            primary=_primary_conn(cfg, target, standby), standby=_standby_conn(cfg, target, standby),
            slot=standby.slot, data_directory=data_directory, pg_bin_root=cfg.pg_bin_root,
            pg_ctl=standby.start is None, restore_tool=restore_argv[0] if restore_argv else None)
        plan.update(target=target, name=standby.name, conn_id=standby.conn_id,
                    restore_command=wal.command_line(restore_argv) if restore_argv else None,
                    start=standby.start.describe() if standby.start else "pg_ctl")
        self.log.info("building standby %s of %s from %s into %s (slot %s%s), listening on %s, started by %s; "
                      "restore_command: %s", standby.name, target, plan["primary"], plan["data_directory"],
                      plan["slot"], ", exists: reused" if plan["slot_exists"] else ", created", plan["standby"],
                      plan["start"], plan["restore_command"] or "none (not a PITR target)")
        return plan


class ProvisionStandbyOperator(StepOperator):
    """The slot, ``pg_basebackup -R -S``, the standby's settings (port, hot_standby, restore_command), its start
    (``dr.standbys.<target>.start`` or pg_ctl, with the S3 credentials in the server's environment for
    restore_command), then the wait until it streams (``pg_dataops.dr.standby.provision``)."""

    template_fields: Sequence[str] = ("plan",)
    ui_color = "#f8e8d8"

    def run_step(self, cfg: Config, context: Context) -> dict:
        from pg_dataops.common import appsteps, wal
        from pg_dataops.dr import standby as standby_mod

        plan = self.plan
        target = plan["target"]
        standby = cfg.dr.standby(target)
        server_env = None
        if plan["restore_command"]:
            from pg_dataops.airflow.base import aws_credentials

            server_env = wal.aws_env(aws_credentials(cfg.s3_conn_id))
        start = None
        if standby.start is not None:
            bearer = app_step_bearer(standby.start)

            def start(_datadir):
                return appsteps.run_required(standby.start, f"dr.standbys.{target}.start", bearer=bearer)

        self.waiting_for = f"pg_basebackup into {plan['data_directory']} and the standby streaming"
        # Our own deadline first, so a standby that never streams fails with what it last saw.
        timeout = max(60, cfg.task_timeout_minutes * 60 - 60)
        result = standby_mod.provision(
            primary=_primary_conn(cfg, target, standby), standby=_standby_conn(cfg, target, standby),
            slot=plan["slot"], data_directory=plan["data_directory"], bin_dir=plan["bin_dir"],
            restore_command=plan["restore_command"], start=start, server_env=server_env, timeout=timeout)
        self.log.info(standby_mod.describe(result, plan["name"]))
        return {**result, "target": target, "name": plan["name"], "conn_id": plan["conn_id"],
                "standby_address": plan["standby"]}


class StandbyReportOperator(StepOperator):
    """Slack: where the new standby is and how far behind it streams (``pg_dataops.dr.standby.describe``).
    Failures alert through every task's failure callbacks instead."""

    template_fields: Sequence[str] = ("result",)
    ui_color = "#f8e8d8"

    def run_step(self, cfg: Config, context: Context) -> dict:
        from pg_dataops.dr import standby as standby_mod

        result = self.result
        text = (f":white_check_mark: Standby of {result['target']} built: "
                f"{standby_mod.describe(result, result['name'])} Connection {result['conn_id']} "
                f"({result['standby_address']}).")
        post_slack(cfg, context, text)
        return {"slack": text}


# ==== pg_failover (dr/failover.py, dr/repoint.py) =========================================================
# The plan (validate's XCom) names both servers as validated; each later step re-reads the servers and acts
# only when its work is not done yet, so a rerun with the same params finishes a failover that failed midway.


class _FailoverStep(StepOperator):
    """A pg_failover step: its alerts name the plan's target."""

    template_fields: Sequence[str] = ("plan",)
    ui_color = "#f4d8d8"

    @property
    def backup_target(self) -> str | None:
        plan = getattr(self, "plan", None)
        if isinstance(plan, dict) and isinstance(plan.get("target"), str):
            return plan["target"]
        return super().backup_target


def failover_conns(cfg: Config, target: str):
    """(target config, standby config, primary PgConn, standby PgConn): both in the target's database."""
    t = cfg.target(target)
    standby = cfg.dr.standby(target)
    primary = pg_conn(t.conn_id, t.database, f"primary of {target}", cfg=cfg)
    standby_conn = pg_conn(standby.conn_id, primary.dbname, f"standby {standby.name} of {target}", cfg=cfg)
    return t, standby, primary, standby_conn


class ValidateFailoverOperator(_FailoverStep):
    """Checks both servers before anything changes (``pg_dataops.dr.failover.assess``): refuses a healthy primary
    unless ``force``, an unreachable or foreign standby, a wrong ``confirm``; returns the plan whose Markdown (the
    data that would be lost, each step) is the approval's body."""

    template_fields: Sequence[str] = ("target", "force", "dry_run", "confirm")
    waiting_for = "the primary and the standby to answer"

    def run_step(self, cfg: Config, context: Context) -> dict:
        import datetime as dt

        from pg_dataops.dr import failover, replication

        force, dry_run = _flag(self.force), _flag(self.dry_run)
        _, standby, primary_conn, standby_conn = failover_conns(cfg, self.target)
        primary, primary_error = _probe(primary_conn, replication.primary_status)
        standby_status, standby_error = _probe(standby_conn, replication.standby_status)
        plan = failover.assess(
            target=self.target, standby_name=standby.name, slot=standby.slot, primary_conn=primary_conn,
            standby_conn=standby_conn, primary=primary, primary_error=primary_error, standby=standby_status,
            standby_error=standby_error, force=force, dry_run=dry_run, confirm=str(self.confirm or ""),
            failover_cfg=cfg.dr.failover, dns_value=standby.dns_value, now=dt.datetime.now(dt.UTC))
        self.log.info("failover plan%s:\n%s", " (dry run: nothing will change)" if dry_run else "", plan["markdown"])
        return plan


def _probe(conn, status_of):
    """(status, None) when the server answered the status query, else (None, why)."""
    from pg_dataops.dr import replication

    pg, why = replication.connect_probe(conn)
    if pg is None:
        return None, why
    try:
        with pg:
            return status_of(pg), None
    except Exception as exc:  # a server that accepts connections but cannot answer is not healthy either
        return None, f"{type(exc).__name__}: {str(exc).strip()[:300]}"


def _flag(value: Any) -> bool:
    return value is True or str(value).strip().lower() in ("true", "1", "yes")


class FailoverAppStepOperator(_FailoverStep):
    """A configured step of ``dr.failover`` (``step``: ``fence``, so the old primary cannot take writes, or
    ``app_restart``, the runbook's ``systemctl restart glimpse-api``): a command or an HTTP call
    (``pg_dataops.common.appsteps.run_required``); skipped, and says so, when not configured. Fencing and
    restarting are idempotent by contract: a rerun does them again."""

    def __init__(self, *, step: str, **kwargs):
        super().__init__(**kwargs)
        if step not in ("fence", "app_restart"):
            raise ValueError(f"step must be fence or app_restart, got {step!r}")
        self.step = step
        self.waiting_for = f"dr.failover.{step}"

    def run_step(self, cfg: Config, context: Context) -> dict:
        from pg_dataops.common import appsteps

        app_step = getattr(cfg.dr.failover, self.step)
        result = appsteps.run_required(app_step, f"dr.failover.{self.step}", bearer=app_step_bearer(app_step))
        self.log.info("%s: %s", self.step,
                      result["what"] if result.get("skipped") else appsteps.describe_outcome(result))
        return result


class PromoteStandbyOperator(_FailoverStep):
    """``pg_promote(wait => true)`` on the standby, then waits until it takes a write
    (``pg_dataops.dr.failover.promote``); a standby promoted by an earlier try is only checked."""

    waiting_for = "the standby's promotion"

    def run_step(self, cfg: Config, context: Context) -> dict:
        from pg_dataops.common import pg as pgmod
        from pg_dataops.dr import failover

        _, _, _, standby_conn = failover_conns(cfg, self.plan["target"])
        result = failover.promote(lambda: pgmod.connect(standby_conn, autocommit=True),
                                  timeout_seconds=cfg.dr.failover.promote_timeout_seconds)
        self.log.info("%s is %s: writable at %s (timeline %s, xid %s)", self.plan["new_primary"],
                      "already promoted" if result["already_promoted"] else f"promoted in {result['seconds']} s",
                      result["writable_at"], result["timeline"], result["xid"])
        return result


class RepointApplicationOperator(_FailoverStep):
    """Points the application at the new primary: the env file's host/port lines (a copy of the file kept first)
    and the target's Airflow connection through Airflow's REST API, so every DAG, backups included, follows
    (``pg_dataops.dr.repoint``). Each part is skipped when not configured and is a no-op when already done."""

    waiting_for = "the env file and Airflow's REST API"

    def run_step(self, cfg: Config, context: Context) -> dict:
        from pg_dataops.airflow.base import airflow_connection, run_started
        from pg_dataops.dr import repoint

        fo = cfg.dr.failover
        host, port = self.plan["new_host"], int(self.plan["new_port"])
        out: dict[str, Any] = {"env_file": None, "airflow_connection": None}
        if fo.env_file:
            values = {fo.env_host_key: host, **({fo.env_port_key: str(port)} if fo.env_port_key else {})}
            out["env_file"] = repoint.rewrite_env_file(fo.env_file, values,
                                                       stamp=run_started(context).strftime("%Y%m%d_%H%M%S"))
            self.log.info("env file %s: %s", fo.env_file, "changed" if out["env_file"]["changed"] else "already set")
        if fo.airflow_api_conn_id:
            api_conn = airflow_connection(fo.airflow_api_conn_id, "Airflow REST API (dr.failover.airflow_api_conn_id)")
            api = repoint.AirflowApi(_api_base_url(api_conn), api_conn.login or "", api_conn.password or "")
            conn_id = cfg.target(self.plan["target"]).conn_id
            out["airflow_connection"] = repoint.point_connection(api, conn_id, host, port)
            # What tasks will read: a secrets backend or an AIRFLOW_CONN_ variable of the same id wins over the
            # metadata DB, and would keep every DAG on the lost primary.
            seen = airflow_connection(conn_id, f"target connection {conn_id}")
            if (seen.host, int(seen.port or 5432)) != (host, port):
                raise repoint.RepointError(
                    f"Airflow connection {conn_id} was updated in the metadata DB, but tasks still read "
                    f"{seen.host}:{seen.port} (a secrets backend or an AIRFLOW_CONN_{conn_id.upper()} variable "
                    f"defines it too): change it there to {host}:{port}")
            self.log.info("Airflow connection %s: %s", conn_id,
                          f"now points at {host}:{port}" if out["airflow_connection"]["changed"] else "already set")
        if not fo.env_file and not fo.airflow_api_conn_id:
            out["skipped"] = "neither dr.failover.env_file nor dr.failover.airflow_api_conn_id configured"
        return out


def _api_base_url(conn) -> str:
    """The REST API's base URL from an http connection: its host (a full URL, or a name with schema/port)."""
    host = (conn.host or "").rstrip("/")
    if host.startswith(("http://", "https://")):
        base = host
    else:
        base = f"{conn.schema or 'http'}://{host}"
    if conn.port and f":{conn.port}" not in base.split("//", 1)[1]:
        base += f":{conn.port}"
    return base


class UpdateDnsOperator(_FailoverStep):
    """UPSERTs the database's Route53 record (``dr.failover.route53``) to the new primary through boto3 (the
    provider has no Route53 operator: ``AwsBaseHook(client_type="route53")``); skipped when not configured."""

    waiting_for = "Route53 (change_resource_record_sets until INSYNC)"

    def run_step(self, cfg: Config, context: Context) -> dict:
        from pg_dataops.dr import repoint

        record = cfg.dr.failover.route53
        if record is None:
            return {"skipped": "no dr.failover.route53 configured"}
        client = aws_client(record.conn_id, "route53", "Route53 (dr.failover.route53.conn_id)")
        result = repoint.upsert_record(client, record, self.plan["dns_value"])
        self.log.info("%s %s: %s -> %s (%s)", record.record_type, record.record_name, result.get("before"),
                      result.get("after"), "changed" if result["changed"] else "already set")
        return result


class VerifyFailoverOperator(_FailoverStep):
    """A write through the new primary, through the DNS record's target and through the target's Airflow
    connection as it reads now, all landing on the promoted server; the env file's lines
    (``pg_dataops.dr.failover.verify``)."""

    template_fields: Sequence[str] = ("plan", "promoted")
    waiting_for = "writes through every way to the new primary"

    def run_step(self, cfg: Config, context: Context) -> dict:
        import dataclasses

        from pg_dataops.common import pg as pgmod
        from pg_dataops.dr import failover, repoint

        t, _, _, standby_conn = failover_conns(cfg, self.plan["target"])
        fo = cfg.dr.failover
        checks = [(f"the new primary {failover.endpoint(standby_conn)}",
                   lambda: pgmod.connect(standby_conn, autocommit=True))]
        if fo.route53 is not None:
            client = aws_client(fo.route53.conn_id, "route53", "Route53 (dr.failover.route53.conn_id)")
            value = repoint.record_value(client, fo.route53)
            via_dns = dataclasses.replace(standby_conn, host=(value or "").rstrip("."))
            checks.append((f"the DNS record {fo.route53.record_name} ({value})",
                           lambda: pgmod.connect(via_dns, autocommit=True)))
        if fo.airflow_api_conn_id:
            current = pg_conn(t.conn_id, standby_conn.dbname, f"Airflow connection {t.conn_id}", cfg=cfg)
            checks.append((f"the Airflow connection {t.conn_id} ({failover.endpoint(current)})",
                           lambda: pgmod.connect(current, autocommit=True)))
        expected_env, env_values = None, None
        if fo.env_file:
            expected_env = {fo.env_host_key: self.plan["new_host"],
                            **({fo.env_port_key: str(self.plan["new_port"])} if fo.env_port_key else {})}
            env_values = repoint.read_env_values(fo.env_file, list(expected_env))
        from pg_dataops.dr import replication

        with pgmod.connect(standby_conn, autocommit=True) as pg:
            status = replication.standby_status(pg)
        result = failover.verify(checks, identity=(status["system_identifier"], status["timeline"]),
                                 expected_env=expected_env, env_values=env_values)
        for w in result["writes"]:
            self.log.info("write ok via %s (xid %s)", w["via"], w["xid"])
        return result


class ReportFailoverOperator(_FailoverStep):
    """ALL_DONE: the ``failovers`` catalog row (status, who, the data lost, the failover time, each step's state
    and duration) and the timeline to Slack and PagerDuty. The catalog is read through its connection as it is
    now; when that is the target's database and still points at the dead primary, the row goes to the new one."""

    def __init__(self, *, steps: dict[str, Any], approval: Any, **kwargs):
        kwargs.setdefault("trigger_rule", TriggerRule.ALL_DONE)
        super().__init__(**kwargs)
        self.step_ids = task_ids(**steps)
        self.approval_id = task_ids(approval=approval)["approval"]

    def run_step(self, cfg: Config, context: Context) -> dict:
        from pg_dataops.airflow.approval import DECISION_KEY
        from pg_dataops.airflow.base import run_started, triggered_by
        from pg_dataops.airflow.notifiers import send_pagerduty
        from pg_dataops.dr import failover

        ti = context["ti"]
        results, errors = step_results(self, context, self.step_ids)
        approval = self.xcom(context, self.approval_id, key=DECISION_KEY)
        timings = _timings(context, {**self.step_ids, "approve": self.approval_id})
        params = dict(context["params"])
        error = next((e for _, e in errors if e), None)  # the first failed step's, named by its task id
        plan = self.plan if isinstance(self.plan, dict) else None
        row = failover.report_row(plan=plan, results=results, timings=timings, error=error, approval=approval,
                                  target=str(params.get("target") or "?"), params=params,
                                  triggered_by=triggered_by(context), triggered_at=run_started(context),
                                  dag_id=ti.dag_id, run_id=ti.run_id)
        text = failover.report_text(row)
        row["catalog"] = _record_failover(cfg, row, plan)
        self.log.info("failover %s recorded (%s)\n%s", row["status"], row["catalog"], text)
        post_slack(cfg, context, text)
        # A failed step paged already (the standard failure callbacks); a completed failover pages too: production
        # moved, someone has to rebuild the old primary as a standby.
        if row["status"] == "SUCCESS":
            send_pagerduty(cfg, {
                "action": "trigger", "summary": text.splitlines()[0][:1000], "severity": "warning",
                "source": "pg_dataops",
                "dedup_key": f"pg_failover/{row['target']}/{ti.run_id}",
                "custom_details": {"timeline": row["timeline"], "loss": row["loss"],
                                   "failover_seconds": row["failover_seconds"], "text": text},
                "component": row["target"], "group": "pg_failover"})
        return {k: v for k, v in row.items() if k != "results"} | {"text": text}


def _timings(context: Context, ids: dict[str, str]) -> dict[str, dict]:
    """{step name: {"state", "seconds"}} of this run's finished task instances (the breadcrumbs)."""
    ti = context["ti"]
    try:
        crumbs = {c.get("task_id"): c for c in ti.get_task_breadcrumbs(dag_id=ti.dag_id, run_id=ti.run_id)}
    except Exception:  # durations only enrich the report
        crumbs = {}
    out = {}
    for name, task_id in ids.items():
        c = crumbs.get(task_id)
        if c:
            out[name] = {"state": c.get("state"), "seconds": round(float(c.get("duration") or 0), 3)}
    return out


def _record_failover(cfg: Config, row: dict, plan: dict | None) -> str:
    """Writes the row; returns where. The catalog may live in the target database (the runbook's layout): when
    its connection still names the lost primary, the promoted server holds that database now."""
    from pg_dataops.common import pg as pgmod
    from pg_dataops.common.errors import DatabaseUnreachable
    from pg_dataops.dr import failover

    try:
        pg = catalog_connection(cfg)
        where = f"catalog ({cfg.catalog_conn_id})"
    except DatabaseUnreachable:
        target = cfg.target(row["target"]) if row["target"] in cfg.target_names else None
        if target is None or cfg.catalog_conn_id != target.conn_id:
            raise
        if not plan or not (row.get("results") or {}).get("promote"):
            # Nothing was promoted: the catalog's only copy is on the primary that does not answer. Slack carries
            # the report; raising would only hide it behind a second failure.
            return "not recorded: the catalog lives in the target database, on the primary that does not answer"
        _, _, _, standby_conn = failover_conns(cfg, row["target"])
        pg = pgmod.connect(standby_conn, autocommit=True)
        where = f"catalog in {standby_conn.dbname} on the new primary {failover.endpoint(standby_conn)}"
    try:
        row_id = failover.record(pg, row)
    finally:
        pg.close()
    return f"failovers row {row_id} in the {where}"
