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
    app_step_bearer,
    catalog_connection,
    pg_conn,
    post_slack,
    run_started,
    s3_client,
    step_results,
    task_ids,
    triggered_by,
)
from pg_dataops.common.config import Config

if TYPE_CHECKING:
    from airflow.sdk import Context


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
# The plan (validate's XCom) names everything later steps touch: the backup and its manifest, the work folder,
# the new database (marked with the run: only this run drops it), the kept name, the safety dump's key. The age
# identity and any application token are read where they are used, never returned or pushed.


def _server(cfg: Config, plan: dict):
    """The target server (its maintenance database): creates, drops and renames databases."""
    return target_conn(cfg, plan["target"], database="postgres", purpose="target server")


class ValidateFullRecoveryOperator(RestoreStep):
    """Checks the form (backup date or key, parallel jobs, sections, confirm) against S3 and the target server
    before anything is made (``pg_dataops.restore.full.plan_recovery``); returns the plan and posts the start
    to Slack. A refusal fails the run naming the cause, with nothing created."""

    ui_color = "#e8e0f8"
    waiting_for = "the S3 listing of backups and the target server"

    def run_step(self, cfg: Config, context: Context) -> dict:
        from pg_dataops.common import databases
        from pg_dataops.restore import full, source
        from pg_dataops.restore.request import RequestRefused

        params = dict(context["params"])
        target = str(params.get("target") or "")
        if target not in cfg.target_names:
            raise RequestRefused(f"target {target!r} is not one of the configured targets: "
                                 f"{', '.join(cfg.target_names)}")
        conn = target_conn(cfg, target)
        client = s3_client(cfg.s3_conn_id)
        ti = context["ti"]
        plan = full.plan_recovery(
            cfg, params, target=target, database=conn.dbname, conn_id=cfg.target(target).conn_id,
            find_backup=lambda date, key: source.find_backup(client, cfg, target, backup_date=date, backup_key=key),
            identity=lambda: age_identity(cfg), database_exists=lambda name: databases.database_exists(conn, name),
            run_id=ti.run_id, dag_id=ti.dag_id, started_at=run_started(context))
        self.log.info("plan: %s (%s) into %s with -j%s, sections %s; then swap with %s kept as %s; safety dump %s",
                      plan["backup_key"], plan["backup"]["local_date"], plan["new_database"], plan["jobs"],
                      ",".join(plan["sections"]), plan["database"], plan["kept_database"], plan["safety_location"])
        try:
            post_slack(cfg, context, full.start_text(plan, triggered_by(context)))
        except Exception as exc:  # noqa: BLE001 - the recovery matters more than its announcement
            self.log.warning("could not post the start to Slack: %s", exc)
        return plan


class DownloadForRecoveryOperator(RestoreStep):
    """Downloads the plan's backup into the run's folder: SHA-256 against .sha256 and manifest, then decrypted
    with the restore identity when encrypted (``pg_dataops.restore.full.download``)."""

    template_fields: Sequence[str] = ("plan",)
    ui_color = "#e8e0f8"

    def run_step(self, cfg: Config, context: Context) -> dict:
        from pg_dataops.restore import full

        self.waiting_for = f"the download of s3://{cfg.bucket}/{self.plan['backup_key']}"
        got = full.download(s3_client(cfg.s3_conn_id), cfg, self.plan, identity=lambda: age_identity(cfg),
                            timeout=cfg.task_timeout_minutes * 60)
        self.log.info("downloaded %s: %s bytes in %.1f s, SHA-256 matches%s", got["path"], got["size"],
                      got["download_seconds"], f"; decrypted in {got['decrypt_seconds']:.1f} s"
                      if got.get("encrypted") else "")
        return got


class RestoreNewDatabaseOperator(RestoreStep):
    """CREATE DATABASE (the plan's new one, never an existing one) and pg_restore --jobs into it; dropped again
    when the restore fails (``pg_dataops.restore.full.restore_new``)."""

    template_fields: Sequence[str] = ("plan", "downloaded")
    ui_color = "#e8e0f8"

    def run_step(self, cfg: Config, context: Context) -> dict:
        from pg_dataops.restore import full

        self.waiting_for = f"pg_restore -j{self.plan['jobs']} into {self.plan['new_database']}"
        result = full.restore_new(_server(cfg, self.plan), self.plan, self.downloaded["path"],
                                  pg_bin_root=cfg.pg_bin_root, timeout=cfg.task_timeout_minutes * 60)
        self.log.info("restored into %s in %.1f s (-j%s, sections %s)", result["database"], result["restore_seconds"],
                      result["jobs"], ",".join(result["sections"]))
        return result


class CheckNewDatabaseOperator(RestoreStep):
    """pg_backup's verification checks on the new database against the backup's manifest; for a full recovery
    also the swap's preview for the approval (``pg_dataops.restore.full.check_restored``)."""

    template_fields: Sequence[str] = ("plan", "restored")
    ui_color = "#e8e0f8"

    def run_step(self, cfg: Config, context: Context) -> dict:
        from pg_dataops.restore import full

        self.waiting_for = f"the checks of {self.plan['new_database']}"
        conn = target_conn(cfg, self.plan["target"], database=self.plan["new_database"], purpose="new database")
        result = full.check_restored(conn, self.plan, required_tables=cfg.verify_required_tables)
        self.log.info("%s: %s tables, %s rows match the manifest; amcheck %s%s", result["database"],
                      result["tables_found"], result["rows_checked"], result["amcheck"],
                      f"; {result['note']}" if result["note"] else "")
        return result


class AppStepOperator(RestoreStep):
    """``restore.app_stop`` or ``restore.app_start`` (``step``): an HTTP call or a command
    (``pg_dataops.common.appsteps.run_required``); not configured: nothing to do, ``{"skipped": true}``.
    ``approval`` (the gate's output) given: runs only when approved."""

    template_fields: Sequence[str] = ("plan", "approval")
    approval: Any = None
    ui_color = "#f8e8d8"

    def __init__(self, *, step: str, gated: bool = False, **kwargs):
        super().__init__(**kwargs)
        if step not in ("app_stop", "app_start"):
            raise ValueError(f"step must be app_stop or app_start, got {step!r}")
        self.step, self.gated = step, gated

    def run_step(self, cfg: Config, context: Context) -> dict:
        from pg_dataops.common import appsteps
        from pg_dataops.common.errors import PermanentError

        if self.gated and not (self.approval or {}).get("approved"):
            raise PermanentError("the recovery was not approved: not touching the application")
        app_step = getattr(cfg.restore, self.step)
        self.waiting_for = f"restore.{self.step} ({app_step.describe() if app_step else 'none'})"
        result = appsteps.run_required(app_step, f"restore.{self.step}", bearer=app_step_bearer(app_step))
        self.log.info("restore.%s: %s", self.step, "not configured, nothing to do" if result["skipped"]
                      else appsteps.describe_outcome(result))
        return result


class SafetyDumpOperator(RestoreStep):
    """pg_dump -Fc of the target database as it is now, streamed to S3 under ``restore.safety_prefix`` (encrypted
    like every dump) with its .sha256 (``pg_dataops.restore.full.safety_dump``); ``keep`` false (the rehearsal):
    deleted again once timed."""

    template_fields: Sequence[str] = ("plan",)
    ui_color = "#f8e8d8"

    def __init__(self, *, keep: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.keep = keep

    def run_step(self, cfg: Config, context: Context) -> dict:
        from pg_dataops.restore import full

        self.waiting_for = f"pg_dump of {self.plan['database']} to {self.plan['safety_location']}"
        result = full.safety_dump(target_conn(cfg, self.plan["target"]), s3_client(cfg.s3_conn_id), cfg, self.plan,
                                  keep=self.keep, timeout=cfg.task_timeout_minutes * 60)
        if result["skipped"]:
            self.log.warning("no safety dump: %s", result["reason"])
        else:
            self.log.info("safety dump %s: %s bytes in %.1f s%s%s", result["location"], result["size"],
                          result["seconds"], ", age-encrypted" if result["encrypted"] else "",
                          " (deleted again: a rehearsal)" if result["deleted"] else "")
        return result


class SwapRecoveredOperator(RestoreStep):
    """Only when the gate approved: the new database takes production's name, production is kept as
    ``<db>_before_recovery_<stamp>`` (``pg_dataops.restore.full.swap``). ``approval``: the gate (its decision is
    read from XCom, so this is not a second direct downstream task of the gate)."""

    template_fields: Sequence[str] = ("plan",)
    ui_color = "#f8d8d8"
    waiting_for = "the sessions on the target's database to end, and the renames"

    def __init__(self, *, approval: Any, **kwargs):
        super().__init__(**kwargs)
        self.approval_id = task_ids(approval=approval)["approval"]

    def run_step(self, cfg: Config, context: Context) -> dict:
        from pg_dataops.airflow.approval import DECISION_KEY
        from pg_dataops.restore import full

        decision = self.xcom(context, self.approval_id, key=DECISION_KEY)
        result = full.swap(_server(cfg, self.plan), self.plan, decision)
        self.log.info("swapped: %s is the recovered copy; the previous database is kept as %s (approved by %s)",
                      result["production"], result["old_database"], result["approved_by"])
        return result


class AnalyzeDatabaseOperator(RestoreStep):
    """ANALYZE of the recovered database: production after the swap (``which="production"``), or the scratch
    database of a rehearsal (``which="new"``)."""

    template_fields: Sequence[str] = ("plan",)
    ui_color = "#e8e0f8"

    def __init__(self, *, which: str = "production", **kwargs):
        super().__init__(**kwargs)
        if which not in ("production", "new"):
            raise ValueError(f"which must be production or new, got {which!r}")
        self.which = which

    def run_step(self, cfg: Config, context: Context) -> dict:
        from pg_dataops.restore import full

        database = self.plan["new_database"] if self.which == "new" else None
        conn = target_conn(cfg, self.plan["target"], database=database, purpose="recovered database")
        self.waiting_for = f"ANALYZE of {conn.dbname}"
        result = full.analyze(conn)
        self.log.info("ANALYZE %s: %.1f s", result["database"], result["analyze_seconds"])
        return result


class HealthCheckOperator(RestoreStep):
    """``restore.health_check`` retried until it succeeds or ``restore.health_timeout_seconds`` passed
    (``pg_dataops.common.appsteps.wait_healthy``); not configured: ``{"skipped": true}``."""

    template_fields: Sequence[str] = ("plan",)
    ui_color = "#f8e8d8"

    def run_step(self, cfg: Config, context: Context) -> dict:
        from pg_dataops.common import appsteps

        step = cfg.restore.health_check
        self.waiting_for = f"restore.health_check ({step.describe() if step else 'none'})"
        result = appsteps.wait_healthy(step, bearer=app_step_bearer(step),
                                       deadline_seconds=cfg.restore.health_timeout_seconds)
        self.log.info("health check: %s", "not configured" if result["skipped"] else
                      f"ok after {result['attempts']} attempt(s): {appsteps.describe_outcome(result)}")
        return result


class CleanupRecoveryOperator(RestoreStep):
    """Teardown, whatever happened: removes the run's folder; drops the new (or scratch) database if it is still
    there under its own name and marked by this run: never production, never the kept database
    (``pg_dataops.restore.full.cleanup``)."""

    template_fields: Sequence[str] = ("plan",)
    ui_color = "#e0e0e0"

    def run_step(self, cfg: Config, context: Context) -> dict:
        from airflow.sdk.exceptions import AirflowSkipException

        from pg_dataops.restore import full

        if not self.plan:
            raise AirflowSkipException("validate planned nothing: nothing was made")
        result = full.cleanup(_server(cfg, self.plan), self.plan)
        self.log.info("cleanup: folder %s removed; new database %s", result["removed_dir"] or "(none)",
                      f"{result['dropped']} dropped" if result["dropped"] else "not there (swapped in, or never made)")
        return result


class ReportFullRecoveryOperator(RestoreStep):
    """ALL_DONE: the ``restore_logs`` row (kind full: SUCCESS, REFUSED, REJECTED or FAILED; the RTO from trigger
    to healthy; the phases; the safety dump; who triggered and approved) and the Slack summary with the rollback
    commands. ``steps``: {name: task} in run order, read by task id; ``approval``: the gate."""

    template_fields: Sequence[str] = ("plan",)

    def __init__(self, *, steps: dict[str, Any], approval: Any, **kwargs):
        kwargs.setdefault("trigger_rule", TriggerRule.ALL_DONE)
        super().__init__(**kwargs)
        self.step_ids = task_ids(**steps)
        self.approval_id = task_ids(approval=approval)["approval"]

    def run_step(self, cfg: Config, context: Context) -> dict:
        from pg_dataops.airflow.approval import DECISION_KEY
        from pg_dataops.restore import audit, full

        ti = context["ti"]
        results, errors = step_results(self, context, self.step_ids)
        approval = self.xcom(context, self.approval_id, key=DECISION_KEY) if results.get("check") else None
        params = dict(context["params"])
        row = full.full_report_row(
            plan=self.plan or None, results=results, error=audit.first_error(errors), approval=approval,
            target=(self.plan or {}).get("target") or str(params.get("target") or "?"), params=params,
            triggered_by=triggered_by(context), triggered_at=run_started(context),
            objective_seconds=cfg.rto_objective_seconds, dag_id=ti.dag_id, run_id=ti.run_id)
        pg = catalog_connection(cfg)
        try:
            row["id"] = audit.record(pg, row)
        finally:
            pg.close()
        text = full.full_report_text(row, self.plan or None)
        self.log.info("recorded restore_logs row %s (%s)\n%s", row["id"], row["status"], text)
        post_slack(cfg, context, text)
        return {**{k: v for k, v in row.items() if k != "details"}, "text": text}


class PlanRehearsalOperator(RestoreStep):
    """The rehearsal's plan: the newest backup of the target in S3, a scratch database on the target server,
    the identity and the disk checked first (``pg_dataops.restore.full.plan_rehearsal``)."""

    template_fields: Sequence[str] = ("target",)
    ui_color = "#e8e0f8"
    waiting_for = "the S3 listing of backups and the target server"

    def run_step(self, cfg: Config, context: Context) -> dict:
        from pg_dataops.common import databases
        from pg_dataops.restore import full

        conn = target_conn(cfg, self.target)
        client = s3_client(cfg.s3_conn_id)
        ti = context["ti"]
        plan = full.plan_rehearsal(
            cfg, target=self.target, database=conn.dbname, conn_id=cfg.target(self.target).conn_id,
            backup=full.latest_backup(client, cfg, self.target), identity=lambda: age_identity(cfg),
            database_exists=lambda name: databases.database_exists(conn, name), run_id=ti.run_id, dag_id=ti.dag_id,
            started_at=run_started(context))
        self.log.info("rehearsal of %s: %s into %s, then a timed safety dump of %s", self.target, plan["backup_key"],
                      plan["new_database"], plan["database"])
        return plan


class ReportRehearsalOperator(RestoreStep):
    """ALL_DONE: the ``restore_logs`` row (kind rehearsal) with the measured RTO (download + restore + checks +
    ANALYZE + safety dump) judged against the objective and the earlier rehearsals' trend; Slack report. An RTO
    above the objective fails this task (red run, page)."""

    template_fields: Sequence[str] = ("target", "plan")
    plan: Any = None

    def __init__(self, *, steps: dict[str, Any], **kwargs):
        kwargs.setdefault("trigger_rule", TriggerRule.ALL_DONE)
        super().__init__(**kwargs)
        self.step_ids = task_ids(**steps)

    def run_step(self, cfg: Config, context: Context) -> dict:
        import datetime as dt

        from pg_dataops.common.rto import RtoExceeded
        from pg_dataops.restore import audit, full

        ti = context["ti"]
        results, errors = step_results(self, context, self.step_ids)
        now = dt.datetime.now(dt.UTC)
        pg = catalog_connection(cfg)
        try:
            history = full.rehearsal_history(pg, self.target, now - full.HISTORY_WINDOW)
            row, verdict, text = full.rehearsal_outcome(
                plan=self.plan or None, results=results, error=audit.first_error(errors), target=self.target,
                history=history, objective_seconds=cfg.rto_objective_seconds, dag_id=ti.dag_id, run_id=ti.run_id,
                triggered_by=triggered_by(context), now=now)
            row["id"] = audit.record(pg, row)
        finally:
            pg.close()
        out = {**{k: v for k, v in row.items() if k != "details"}, "text": text}
        if verdict is None:
            self.log.error(text)  # the failed step alerted with its cause
            return out
        self.log.info(text)
        post_slack(cfg, context, text)
        if verdict.status == "exceeded":
            raise RtoExceeded(f"recovery rehearsal of {self.target}: {verdict.message}")
        return out


# ==== pg_table_restore (restore/table.py) ===================================================================
# The plan (validate's XCom) names the table as the form gave it, the backup or from_database, the mode, the
# run's staging schema and work folder. A refusal after validate (not in the archive, columns differ, replace
# of a referenced table without cascade) pushes XCom ``refused``: the report's row is REFUSED, not FAILED.


class _TableStep(RestoreStep):
    def run_step(self, cfg: Config, context: Context) -> Any:
        from pg_dataops.restore.request import RequestRefused

        try:
            return self.table_step(cfg, context)
        except RequestRefused:
            context["ti"].xcom_push(key="refused", value=True)
            raise

    def table_step(self, cfg: Config, context: Context) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError


class ValidateTableRestoreOperator(_TableStep):
    """Checks the form (table name, mode, backup or from_database, confirm) against S3 and the target server;
    nothing is created. Posts the start to Slack once the checks pass."""

    ui_color = "#e8e0f8"
    waiting_for = "the S3 listing of backups and the target server"

    def table_step(self, cfg: Config, context: Context) -> dict:
        from pg_dataops.restore import source, table  # lazy: boto3 and psycopg

        plan = table.plan_restore(
            cfg, dict(context["params"]), run_id=context["ti"].run_id,
            connect_target=lambda target: target_conn(cfg, target),
            find_backup=lambda target, date, key: source.find_backup(s3_client(cfg.s3_conn_id), cfg, target,
                                                                     backup_date=date, backup_key=key),
            prove_identity=table.prove_identity(cfg, lambda: age_identity(cfg)))
        text = table.start_text(plan, triggered_by(context))
        self.log.info(text)
        try:
            post_slack(cfg, context, text)
        except Exception as exc:  # noqa: BLE001 - the run goes on; the report posts the outcome
            self.log.warning("could not post the start to Slack: %s", exc)
        return plan


class StageTableOperator(_TableStep):
    """The archive (downloaded and proven, or pg_dump of the table from from_database), the table resolved in
    its table of contents, then its rows in this run's staging schema inside the target database."""

    template_fields: Sequence[str] = ("plan",)
    ui_color = "#e8e0f8"
    waiting_for = "the download, pg_restore and the COPY into the staging schema"

    def table_step(self, cfg: Config, context: Context) -> dict:
        from pg_dataops.restore import table  # lazy: boto3 and psycopg

        plan = self.plan
        staged = table.stage(
            cfg, plan, target_conn=target_conn(cfg, plan["target"]),
            fetch_archive=lambda: table.fetch_backup_archive(cfg, s3_client(cfg.s3_conn_id), plan,
                                                             lambda: age_identity(cfg)),
            source_conn=target_conn(cfg, plan["target"], database=plan["from_database"], purpose="from_database")
            if plan["from_database"] else None)
        self.log.info("staged %s rows of %s in %s", staged["backup_rows"], staged["table"], staged["staging_schema"])
        return staged


class PreviewTableRestoreOperator(_TableStep):
    """Counts current / backup / to insert / to replace / unchanged / to delete and the referencing tables;
    the approval's body. replace of a referenced table without cascade is refused here."""

    template_fields: Sequence[str] = ("plan", "staged")
    ui_color = "#e8e0f8"
    waiting_for = "the counts against the staging rows"

    def table_step(self, cfg: Config, context: Context) -> dict:
        from pg_dataops.restore import table  # lazy: psycopg

        result = table.preview(cfg, self.plan, self.staged, target_conn=target_conn(cfg, self.plan["target"]))
        self.log.info("preview:\n%s", result["markdown"])
        return result


class ApplyTableRestoreOperator(_TableStep):
    """Only after the approval: the safety dump to S3, then the mode in one transaction, checked before commit."""

    template_fields: Sequence[str] = ("plan", "staged", "previewed", "approval")
    ui_color = "#f8d8d8"
    waiting_for = "the safety dump and the apply transaction (locks on the table)"

    def table_step(self, cfg: Config, context: Context) -> dict:
        import datetime as dt

        from pg_dataops.common.errors import PermanentError
        from pg_dataops.restore import source, table  # lazy: boto3 and psycopg

        if not (self.approval or {}).get("approved"):
            raise PermanentError("the table restore was not approved: refusing to change the table")
        result = table.apply(cfg, s3_client(cfg.s3_conn_id), self.plan, self.staged, self.previewed,
                             target_conn=target_conn(cfg, self.plan["target"]),
                             stamp=source.stamp(dt.datetime.now(dt.UTC)))
        self.log.info("applied %s to %s: %s; after: %s", result["mode"], result["table"], result.get("applied"),
                      result.get("after"))
        return result


class CleanupTableRestoreOperator(RestoreStep):
    """Teardown, whatever happened: drops this run's staging schema and removes its work files."""

    template_fields: Sequence[str] = ("plan",)
    ui_color = "#e0e0e0"

    def run_step(self, cfg: Config, context: Context) -> dict:
        from airflow.sdk.exceptions import AirflowSkipException

        from pg_dataops.restore import table  # lazy: psycopg

        if not self.plan:
            raise AirflowSkipException("validate planned nothing: no staging schema was made")
        result = table.cleanup(self.plan, target_conn=target_conn(cfg, self.plan["target"]))
        self.log.info("staging schema %s dropped: %s; work files removed: %s", result["staging_schema"],
                      result["staging_dropped"], result["removed"])
        return result


class ReportTableRestoreOperator(RestoreStep):
    """Writes the restore_logs row (kind table; DRY_RUN / SUCCESS / REJECTED / FAILED / REFUSED) and posts the
    Slack summary; runs whatever happened (ALL_DONE). ``steps``: the run's steps in order; ``approval``: the gate;
    ``stage``: the setup task, read by id (a direct dependency on a setup must be ALL_SUCCESS)."""

    template_fields: Sequence[str] = ("plan", "previewed", "applied")

    def __init__(self, *, steps: Sequence[Any], approval: Any, stage: Any, **kwargs):
        kwargs.setdefault("trigger_rule", TriggerRule.ALL_DONE)
        super().__init__(**kwargs)
        self.step_ids = task_ids(**{f"steps[{i}]": step for i, step in enumerate(steps)})
        ids = task_ids(approval=approval, stage=stage)
        self.approval_id, self.stage_id = ids["approval"], ids["stage"]

    def run_step(self, cfg: Config, context: Context) -> dict:
        from pg_dataops.airflow.approval import DECISION_KEY
        from pg_dataops.restore import audit, table  # lazy: psycopg

        ti = context["ti"]
        ids = list(self.step_ids.values())
        error = audit.first_error((i, self.xcom(context, i, key="error")) for i in ids)
        refused = any(self.xcom(context, i, key="refused") for i in ids)
        decision = self.xcom(context, self.approval_id, key=DECISION_KEY)
        staged = self.xcom(context, self.stage_id)
        params = dict(context["params"])
        status = table.outcome(plan=self.plan, refused=refused, error=error, decision=decision, applied=self.applied)
        row = table.report_row(plan=self.plan, params=params, status=status, staged=staged,
                               previewed=self.previewed, applied=self.applied, decision=decision, error=error,
                               triggered_by=triggered_by(context), dag_id=ti.dag_id, run_id=ti.run_id,
                               target=str(params.get("target")))
        catalog = catalog_connection(cfg)
        try:
            row_id = audit.record(catalog, row)
        finally:
            catalog.close()
        text = table.slack_text(row, previewed=self.previewed, applied=self.applied)
        self.log.info("%s", text)
        post_slack(cfg, context, text)
        return {"status": status, "restore_log_id": row_id, "slack": text}



# ==== pg_user_data_restore (restore/user.py) ================================================================
# (section owned by the user-restore work)
# validate -> stage (setup) -> preview -> approve_upsert (gate) -> apply -> cleanup (teardown) -> report. The plan
# (validate's XCom) names everything later steps touch: the canonical user id, the tables parents first, the
# staging schema, the safety tables, the backup or from_database.


class ValidateUserRestoreOperator(RestoreStep):
    """Checks the form against the target database's catalog and S3 (``pg_dataops.restore.user.plan``): the
    user id as the key's type, the mapped tables and columns, the backup (identity proven) or from_database,
    confirm. Nothing is created; a refusal fails the run with the reason. Posts the start to Slack."""

    ui_color = "#e8e0f8"
    waiting_for = "the target database's catalog and the S3 listing"

    def run_step(self, cfg: Config, context: Context) -> dict:
        import datetime as dt

        from pg_dataops.common import databases
        from pg_dataops.restore import source, user  # lazy: boto3 and psycopg
        from pg_dataops.restore.request import RequestRefused

        params = dict(context["params"])
        target = str(params.get("target") or "")
        if target not in cfg.target_names:
            raise RequestRefused(f"target {target!r} is not a configured target ({', '.join(cfg.target_names)})")
        conn = target_conn(cfg, target)
        plan = user.plan(cfg, params, target=target, target_conn=conn, run_id=context["ti"].run_id,
                         now_stamp=source.stamp(dt.datetime.now(dt.UTC)), s3=lambda: s3_client(cfg.s3_conn_id),
                         identity=lambda: age_identity(cfg),
                         database_exists=lambda name: databases.database_exists(conn, name))
        self.log.info("plan: user %s in %s (%s) from %s, tables in order %s, %s", plan["user_id"], target,
                      plan["database"], user.describe_source(plan), ", ".join(t["table"] for t in plan["tables"]),
                      "dry run" if plan["dry_run"] else "apply after approval")
        post_slack(cfg, context, user.start_text(plan, triggered_by(context)))
        return plan


class StageUserRowsOperator(RestoreStep):
    """Setup: the user's rows of every mapped table into this run's staging schema inside the target database,
    from the backup (downloaded, proven, decrypted; streamed out of pg_restore, filtered) or from_database
    (COPY to COPY): ``pg_dataops.restore.user.stage``."""

    template_fields: Sequence[str] = ("plan",)
    ui_color = "#e8e0f8"
    waiting_for = "the backup's download and the staging of the user's rows"

    def run_step(self, cfg: Config, context: Context) -> dict:
        from pg_dataops.restore import user

        staged = user.stage(cfg, self.plan, target_conn=target_conn(cfg, self.plan["target"]),
                            s3=lambda: s3_client(cfg.s3_conn_id), identity=lambda: age_identity(cfg),
                            timeout=cfg.task_timeout_minutes * 60)
        self.log.info("staged in %s: %s", staged["staging_schema"],
                      ", ".join(f"{t} {c['rows']} rows" for t, c in staged["tables"].items()))
        return staged


class PreviewUserRestoreOperator(RestoreStep):
    """Counts per table what the upsert would insert, update and leave unchanged, and the user's rows not in the
    source (left alone); the approval's Markdown (``pg_dataops.restore.user.preview``)."""

    template_fields: Sequence[str] = ("plan", "staged")
    ui_color = "#e8e0f8"
    waiting_for = "the comparison of the staged rows with the current ones"

    def run_step(self, cfg: Config, context: Context) -> dict:
        from pg_dataops.restore import user

        result = user.preview(self.plan, self.staged, target_conn=target_conn(cfg, self.plan["target"]))
        self.log.info("preview:\n%s", result["markdown"])
        return result


class ApplyUserRestoreOperator(RestoreStep):
    """Only after the approval gate: in one transaction, the safety copies, the upserts parents first, the
    counts checked against the approved preview, the sequences (``pg_dataops.restore.user.apply``)."""

    template_fields: Sequence[str] = ("plan", "staged", "preview", "approval")
    ui_color = "#f8d8d8"
    waiting_for = "the upsert's transaction (locks on the user's rows)"

    def run_step(self, cfg: Config, context: Context) -> dict:
        from pg_dataops.common.errors import PermanentError
        from pg_dataops.restore import user

        if not (self.approval or {}).get("approved"):
            raise PermanentError("the upsert was not approved: refusing to write")
        result = user.apply(self.plan, self.staged, self.preview, target_conn=target_conn(cfg, self.plan["target"]))
        self.log.info("restored; previous rows kept in %s. Rollback:\n%s\nDrop the safety tables when done:\n%s",
                      result["safety_location"], "\n".join(result["rollback"]), result["drop"])
        return result


class CleanupUserRestoreOperator(RestoreStep):
    """Teardown, whatever happened: drops the staging schema and removes the download
    (``pg_dataops.restore.user.cleanup``). The safety tables stay."""

    template_fields: Sequence[str] = ("plan",)
    ui_color = "#e0e0e0"

    def run_step(self, cfg: Config, context: Context) -> dict:
        from airflow.sdk.exceptions import AirflowSkipException

        from pg_dataops.restore import user

        if not self.plan:
            raise AirflowSkipException("validate planned nothing: nothing was staged")
        result = user.cleanup(self.plan, target_conn=target_conn(cfg, self.plan["target"]))
        self.log.info("staging schema %s dropped: %s; download folder removed: %s", result["staging_schema"],
                      result["staging_dropped"], result["removed"])
        return result


class ReportUserRestoreOperator(RestoreStep):
    """Writes the ``restore_logs`` row (kind user; also a refused, rejected or failed run) and posts the Slack
    summary. ``steps``: the run's tasks in order; ``approval``: the gate (its ``decision`` XCom)."""

    template_fields: Sequence[str] = ("plan", "preview", "applied")

    def __init__(self, *, steps: Sequence[Any], approval: Any, **kwargs):
        kwargs.setdefault("trigger_rule", TriggerRule.ALL_DONE)
        super().__init__(**kwargs)
        self.step_ids = task_ids(**{f"steps[{i}]": step for i, step in enumerate(steps)})
        self.approval_id = task_ids(approval=approval)["approval"]

    def run_step(self, cfg: Config, context: Context) -> dict:
        import datetime as dt

        from pg_dataops.restore import audit, user

        ti = context["ti"]
        plan = self.plan or None
        errors = [(task_id, self.xcom(context, task_id, key="error")) for task_id in self.step_ids.values()]
        # The gate pushed a decision only when it was asked (not a dry run) and had a preview.
        approval = self.xcom(context, self.approval_id, key="decision") if plan and not plan["dry_run"] \
            and self.preview else None
        started = getattr(context["dag_run"], "start_date", None)
        seconds = (dt.datetime.now(dt.UTC) - started).total_seconds() if started else None
        params = dict(context["params"])
        row = user.log_row(plan_=plan, preview_=self.preview or None, applied=self.applied or None,
                           approval=approval, error=audit.first_error(errors), params=params,
                           target=(plan or {}).get("target") or str(params.get("target") or cfg.target_names[0]),
                           triggered_by=triggered_by(context), dag_id=ti.dag_id, run_id=ti.run_id, seconds=seconds)
        pg = catalog_connection(cfg)
        try:
            row["id"] = audit.record(pg, row)
        finally:
            pg.close()
        text = user.report_text(row, plan_=plan, preview_=self.preview or None)
        self.log.info("recorded restore_logs row %s (%s)\n%s", row["id"], row["status"], text)
        post_slack(cfg, context, text)
        return {k: v for k, v in row.items() if k != "details"} | {"text": text}
