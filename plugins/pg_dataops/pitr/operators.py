"""Thin operators of the PITR DAGs (pg_base_backup, pg_wal_archive_check, pg_pitr_restore, pg_pitr_drill):
fetch connections, call one core function of ``pg_dataops.pitr``, return its dict. boto3, psycopg and the
core modules are imported inside the methods, so parsing a DAG file stays fast."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import TriggerRule

from pg_dataops.airflow.base import (
    StepOperator,
    age_identity,
    aws_credentials,
    catalog_connection,
    pg_conn,
    post_slack,
    s3_client,
    task_ids,
)
from pg_dataops.common.config import Config

if TYPE_CHECKING:
    from airflow.sdk import Context


# ---- pg_base_backup and its retention (base backups) ------------------------------------------------


class BaseBackupOperator(StepOperator):
    """pg_basebackup of one PITR target, streamed through zstd (and age) into S3 while it is written
    (``pg_dataops.pitr.basebackup.take_base_backup``); returns the backup's manifest.json document.

    A failure pushes XCom ``phase`` (preflight, stream, upload, manifest) for the catalog row."""

    template_fields: Sequence[str] = ("target",)
    ui_color = "#d8f0e0"

    def run_step(self, cfg: Config, context: Context) -> dict:
        import os

        from pg_dataops.pitr import basebackup  # lazy: boto3 and psycopg

        target = cfg.pitr_target(self.target)
        conn = pg_conn(target.conn_id, target.database, f"base backup of {target.name}", cfg=cfg)
        client = s3_client(cfg.s3_conn_id)
        self.waiting_for = f"pg_basebackup of {conn.host}:{conn.port} streaming to S3 (target {target.name})"
        try:
            doc = basebackup.take_base_backup(cfg, target.name, conn, client, recipients=cfg.encryption.recipients,
                                              spool_dir=os.path.join(cfg.pitr.scratch_root, "base-spool"))
        except basebackup.BaseBackupFailed as exc:
            context["ti"].xcom_push(key="phase", value=exc.phase)
            raise
        self.log.info("base backup %s: %s bytes in %.1f s, WAL %s..%s", doc["backup_id"], doc["archive"]["size"],
                      doc["duration_seconds"], doc["start_wal"], doc["stop_wal"])
        return doc


class RecordBaseBackupOperator(StepOperator):
    """Writes the run's ``base_backups`` row, SUCCESS or FAILED with the step and its error; runs whatever
    happened upstream (trigger rule ALL_DONE), so failures are in the catalog too."""

    template_fields: Sequence[str] = ("target",)

    def __init__(self, *, base_backup: Any, **kwargs):
        kwargs.setdefault("trigger_rule", TriggerRule.ALL_DONE)
        super().__init__(**kwargs)
        self.step_ids = task_ids(base_backup=base_backup)

    def run_step(self, cfg: Config, context: Context) -> dict:
        from pg_dataops.pitr import basebackup  # lazy: psycopg

        ti = context["ti"]
        task_id = self.step_ids["base_backup"]
        doc = self.xcom(context, task_id)
        error = self.xcom(context, task_id, key="error")
        phase = self.xcom(context, task_id, key="phase") if error else None  # pushed only by a failure
        row = basebackup.catalog_row(target=self.target, doc=doc, error=error or None, phase=phase,
                                     bucket=cfg.bucket, dag_id=ti.dag_id, run_id=ti.run_id)
        return basebackup.record_outcome(lambda: catalog_connection(cfg), row)


class PrunePitrOperator(StepOperator):
    """PITR retention of one target after its successful base backup (``pg_dataops.pitr.retention``), then
    the run's Slack summary: what was made and what was pruned (best effort: a lost post is logged)."""

    template_fields: Sequence[str] = ("target", "backup", "dry_run")
    dry_run: Any = False
    ui_color = "#f8e8d8"

    def run_step(self, cfg: Config, context: Context) -> dict:
        from pg_dataops.common.guards import as_bool
        from pg_dataops.pitr import basebackup, retention  # lazy: boto3

        dry_run = as_bool(self.dry_run, "dry_run_retention")
        summary = retention.apply_pitr_retention(cfg, s3_client(cfg.s3_conn_id), self.target, dry_run=dry_run,
                                                 must_keep=self.backup["backup_id"])
        text = basebackup.success_text(self.backup, cfg.timezone, retention.slack_line(summary))
        try:
            post_slack(cfg, context, text)
        except Exception as exc:  # the backup and the pruning are done and logged; a lost post must not fail them
            self.log.warning("could not post the base backup summary to Slack: %s", exc)
        return {"retention": summary, "slack": text}



# ---- pg_wal_archive_check (archive check) ------------------------------------------------------------


class WalArchiveCheckOperator(StepOperator):
    """Checks one target's WAL archive (``pg_dataops.pitr.archive_check``): pg_stat_archiver, the .ready
    backlog, the newest segment's age against the RPO, gaps since the oldest base backup, and
    ``barman-cloud-check-wal-archive``. Pages (PagerDuty) and warns (Slack) on changes, resolves under the
    same dedup_key; fails when a page-level check fails."""

    template_fields: Sequence[str] = ("target",)
    ui_color = "#f8e8d8"
    waiting_for = "the target server, S3 or barman-cloud-check-wal-archive"

    def run_step(self, cfg: Config, context: Context) -> dict:
        import datetime as dt

        from pg_dataops.airflow.notifiers import send_pagerduty
        from pg_dataops.pitr import archive_check  # lazy: boto3 and psycopg

        target = cfg.pitr_target(self.target)
        server = pg_conn(target.conn_id, target.database, f"WAL archive check of {target.name}", cfg=cfg)
        credentials = aws_credentials(cfg.s3_conn_id)
        client = s3_client(cfg.s3_conn_id)
        now = dt.datetime.now(dt.UTC)  # the wall clock: how old the archive is now, not at the logical date
        catalog = catalog_connection(cfg)
        try:
            return archive_check.check_and_alert(
                server, client, cfg, target.name, now, credentials=credentials, catalog=catalog,
                slack=lambda text: post_slack(cfg, context, text),
                pagerduty=lambda event: send_pagerduty(cfg, event),
            )
        finally:
            catalog.close()


# ---- pg_pitr_restore and pg_pitr_drill (recovery) ----------------------------------------------------
# The recovery's plan (validate's XCom) names everything later steps touch: the base backup, the scratch
# folders (``scratch``), the server binaries, the new database. The scratch server started by ``recover``
# keeps running (its own process group) until ``teardown``; ``check`` and ``copy_to_target`` reach it over
# its socket in the run folder. The age identity and the S3 credentials never enter XCom.


class _RecoveryStep(StepOperator):
    """A pg_pitr_restore step: its alerts name the plan's target."""

    @property
    def backup_target(self) -> str | None:
        plan = getattr(self, "plan", None)
        if isinstance(plan, dict) and isinstance(plan.get("target"), str):
            return plan["target"]
        return super().backup_target


def _layout(plan: dict):
    from pg_dataops.pitr import scratch

    return scratch.ScratchLayout.from_dict(plan["scratch"])


def _scratch_conn(plan: dict, recovered: dict):
    """The recovered database on the running scratch server, over its socket."""
    from pg_dataops.pitr import recover

    return recover.instance(_layout(plan), plan["bin_dir"], recovered["port"]).conn(plan["source_database"])


class ValidateRecoveryOperator(StepOperator):
    """Checks the trigger form's params against S3, the worker and the target server before anything starts
    (``pg_dataops.pitr.request``); logs the recoverable window first. Returns the plan; a refusal fails the
    run with the reason and the window, with nothing created."""

    ui_color = "#e8e0f8"
    waiting_for = "the S3 listings of base backups and WAL, and the target server"

    def run_step(self, cfg: Config, context: Context) -> dict:
        from pg_dataops.pitr import copy, inventory, request  # lazy: boto3 and psycopg

        params = dict(context["params"])
        target = request.resolve_target(cfg, params.get("target"))
        window = inventory.recoverable_window(s3_client(cfg.s3_conn_id), cfg, target)
        text = request.describe_window(window, cfg.timezone)
        context["ti"].xcom_push(key="window", value=text)
        self.log.info("recoverable window of %s", text)
        req = request.parse_request(cfg, {**params, "target": target})
        t = cfg.target(target)
        source = pg_conn(t.conn_id, t.database, f"target database of {target}", require_database=True, cfg=cfg)
        plan = request.plan_recovery(cfg, req, window=window, source_database=source.dbname,
                                     database_exists=lambda name: copy.database_exists(source, name),
                                     identity=lambda: age_identity(cfg), run_id=context["ti"].run_id,
                                     conn_id=t.conn_id)
        self.log.info("plan: %s to %s from base backup %s (WAL %s .. %s), into database %s%s", target,
                      plan["target_time_text"], plan["base_backup"], plan["wal_needed"]["from"],
                      plan["wal_needed"]["to"], plan["database_name"], ", then swap" if plan["swap"] else "")
        if plan["scratch_others"]:
            self.log.warning("other folders under pitr.scratch_root (a running drill, or runs killed before their "
                             "teardown: remove those by hand): %s", ", ".join(plan["scratch_others"]))
        return plan


class RestoreBaseBackupOperator(_RecoveryStep):
    """Setup: streams the plan's base backup from S3 into the scratch data directory (SHA-256 checked,
    ``age -d`` when encrypted, zstd, tar as the scratch owner): ``pg_dataops.pitr.scratch``."""

    template_fields: Sequence[str] = ("plan",)
    ui_color = "#e8e0f8"

    def run_step(self, cfg: Config, context: Context) -> dict:
        from pg_dataops.pitr import scratch  # lazy: boto3

        plan = self.plan
        doc = plan["base_backup_doc"]
        layout = _layout(plan)
        identity = scratch.prove_identity(doc, lambda: age_identity(cfg), cfg.encryption.identity_conn_id)
        self.waiting_for = f"base backup {plan['base_backup']} from S3 into {layout.data}"
        result = scratch.restore_base_backup(s3_client(cfg.s3_conn_id), cfg.bucket, doc, layout, identity=identity,
                                             timeout=cfg.task_timeout_minutes * 60, bin_dir=plan["bin_dir"])
        self.log.info("restored %s into %s: %s bytes in %.1f s, SHA-256 matches the manifest", result["key"],
                      result["data"], result["bytes"], result["restore_seconds"])
        return result


class RecoverOperator(_RecoveryStep):
    """Starts the scratch server with recovery.signal and replays archived WAL to the target time (or to the
    end of the archive, when it ends before the target): ``pg_dataops.pitr.recover.replay``. The server
    stays up, promoted or paused, for the checks and the copy."""

    template_fields: Sequence[str] = ("plan", "restored")
    ui_color = "#e8e0f8"

    def run_step(self, cfg: Config, context: Context) -> dict:
        import datetime as dt

        from pg_dataops.common import wal
        from pg_dataops.pitr import recover  # lazy: psycopg

        plan = self.plan
        layout = _layout(plan)
        credentials = aws_credentials(cfg.s3_conn_id)
        client = s3_client(cfg.s3_conn_id)
        self.waiting_for = f"WAL replay to {plan['target_time_text']} (pitr.recovery_timeout_minutes)"
        result = recover.replay(
            layout, bin_dir=plan["bin_dir"],
            restore_command_line=recover.restore_command(cfg, plan["target"], layout,
                                                         endpoint_url=credentials["endpoint_url"]),
            target_time=dt.datetime.fromisoformat(plan["target_time"]), target_action=plan["target_action"],
            env=wal.aws_env(credentials), timeout_seconds=cfg.pitr.recovery_timeout_minutes * 60,
            list_archive=lambda: wal.list_archive(client, cfg.bucket, wal.archive_prefix(cfg, plan["target"])),
        )
        if result["archive_ends_before_target"]:
            self.log.warning("the WAL archive ends before the target %s: recovered to its end (last restored segment "
                             "%s, last commit %s)", plan["target_time_text"], result["last_restored_segment"],
                             result["reached_time"])
        self.log.info("recovery %s in %.1f s: %s; last replayed commit %s", result["state"], result["replay_seconds"],
                      result["stop_message"] or "no stop record", result["reached_time"])
        return result


class CheckRecoveredOperator(_RecoveryStep):
    """Counts every table of the recovered database on the scratch server, and the runbook's users, matches
    and messages (``pg_dataops.pitr.copy.check_recovered``)."""

    template_fields: Sequence[str] = ("plan", "recovered")
    ui_color = "#e8e0f8"
    waiting_for = "the row counts of the recovered database"

    def run_step(self, cfg: Config, context: Context) -> dict:
        from pg_dataops.pitr import copy  # lazy: psycopg

        result = copy.check_recovered(_scratch_conn(self.plan, self.recovered))
        self.log.info("recovered %s: %s tables, %s rows; %s", result["database"], result["tables"], result["rows"],
                      result["runbook"])
        return result


class CopyToTargetOperator(_RecoveryStep):
    """Creates the new database on the target server (never an existing one) and pipes ``pg_dump -Fc -Z0``
    from the scratch server into ``pg_restore --exit-on-error``; the copy's counts must equal the recovered
    ones, else it is dropped. Returns the copy with the swap's preview (names, commands, approval body)."""

    template_fields: Sequence[str] = ("plan", "recovered", "checked")
    ui_color = "#e8e0f8"

    def run_step(self, cfg: Config, context: Context) -> dict:
        import datetime as dt

        from pg_dataops.pitr import copy, request  # lazy: psycopg

        plan = self.plan
        ti = context["ti"]
        admin = pg_conn(plan["conn_id"], copy.MAINTENANCE_DATABASE, f"target server of {plan['target']}", cfg=cfg)
        self.waiting_for = f"pg_dump | pg_restore of the recovered database into {plan['database_name']}"
        result = copy.copy_database(
            _scratch_conn(plan, self.recovered), admin, plan["database_name"], expected=self.checked["counts"],
            marker=copy.run_marker(ti.dag_id, ti.run_id, plan["target"], plan["target_time"]),
            protected=(plan["source_database"],), pg_bin_root=cfg.pg_bin_root, timeout=cfg.task_timeout_minutes * 60)
        old = request.old_database_name(plan["source_database"], dt.datetime.now(dt.UTC), cfg.timezone)
        result.update(copy.preview(plan, self.checked, result, old))
        for warning in result["warnings"]:
            self.log.warning(warning)
        self.log.info("copied into %s in %.1f s: %s tables, %s rows, counts match; switch-over:\n%s",
                      result["database"], result["copy_seconds"], result["tables"], result["rows"],
                      "\n".join(result["commands"]))
        return result


class SwapDatabasesOperator(_RecoveryStep):
    """Only after the approval gate: renames the target's database to ``<name>_before_pitr_<stamp>`` (kept)
    and the recovered copy to its name, in one step (``pg_dataops.pitr.copy.swap_databases``)."""

    template_fields: Sequence[str] = ("plan", "copied", "approval")
    ui_color = "#f8d8d8"
    waiting_for = "the sessions on the target's database to end, and the renames"

    def run_step(self, cfg: Config, context: Context) -> dict:
        from pg_dataops.common.errors import PermanentError
        from pg_dataops.pitr import copy  # lazy: psycopg

        plan = self.plan
        if not (self.approval or {}).get("approved"):
            raise PermanentError("the swap was not approved: refusing to rename databases")
        admin = pg_conn(plan["conn_id"], copy.MAINTENANCE_DATABASE, f"target server of {plan['target']}", cfg=cfg)
        ti = context["ti"]
        result = copy.swap_databases(admin, production=plan["source_database"], recovered=self.copied["database"],
                                     old=self.copied["old_database"],
                                     marker=copy.run_marker(ti.dag_id, ti.run_id, plan["target"], plan["target_time"]))
        self.log.info("swapped: %s is now the recovered copy; the previous database is kept as %s",
                      result["production"], result["old_database"])
        return {**result, "approved_by": self.approval.get("responded_by")}


class TeardownRecoveryOperator(_RecoveryStep):
    """Teardown, whatever happened: stops the scratch server and removes its folder
    (``pg_dataops.pitr.scratch.remove_scratch``)."""

    template_fields: Sequence[str] = ("plan",)
    ui_color = "#e0e0e0"

    def run_step(self, cfg: Config, context: Context) -> dict:
        from airflow.sdk.exceptions import AirflowSkipException

        from pg_dataops.pitr import scratch

        if not self.plan:
            raise AirflowSkipException("validate planned nothing: no scratch copy was made")
        result = scratch.remove_scratch(_layout(self.plan), self.plan["bin_dir"])
        self.log.info("scratch copy %s: server stopped %s, removed %s", result["root"], result["server_stopped"],
                      result["removed"])
        return result


class ReportRecoveryOperator(_RecoveryStep):
    """Records the recovery in ``pitr_recoveries`` (also a failed or refused one, with its cause) and posts
    the report to Slack: what it recovered to, the counts, the time of each phase, the switch-over commands
    or the swap done and who approved it. ``steps``: the recovery's tasks in order; ``approval``: the gate;
    ``validate``: the task whose ``window`` XCom the report quotes; ``restore``: the setup task (read by id:
    a direct dependency on a setup must be ALL_SUCCESS, and this step runs ALL_DONE)."""

    template_fields: Sequence[str] = ("plan", "recovered", "checked", "copied", "swapped")

    def __init__(self, *, steps: Sequence[Any], approval: Any, validate: Any, restore: Any, kind: str = "restore",
                 **kwargs):
        kwargs.setdefault("trigger_rule", TriggerRule.ALL_DONE)
        super().__init__(**kwargs)
        self.step_ids = task_ids(**{f"steps[{i}]": step for i, step in enumerate(steps)})
        ids = task_ids(approval=approval, validate=validate, restore=restore)
        self.approval_id, self.validate_id, self.restore_id = ids["approval"], ids["validate"], ids["restore"]
        self.kind = kind

    def run_step(self, cfg: Config, context: Context) -> dict:
        from pg_dataops.pitr import recoveries  # lazy: psycopg

        ti = context["ti"]
        plan = self.plan or {}
        errors = [(task_id, self.xcom(context, task_id, key="error")) for task_id in self.step_ids.values()]
        # Only what ran pushed anything (a lookup of a missing XCom logs at error level and misleads).
        approval = self.xcom(context, self.approval_id, key="decision") if plan.get("swap") and self.copied else None
        restored = self.xcom(context, self.restore_id) if dict(errors).get(self.restore_id) == "" else None
        target = plan.get("target") or (context["params"].get("target") or (cfg.pitr_targets[0].name
                                                                            if cfg.pitr_targets else "?"))
        copied = self.copied or {}
        row = recoveries.recovery_row(
            kind=self.kind, target=target, plan=self.plan, restored=restored, recovered=self.recovered,
            checked=self.checked, copied=self.copied, swapped=self.swapped, approval=approval,
            error=recoveries.first_error(errors), objective_seconds=cfg.rto_objective_seconds, dag_id=ti.dag_id,
            run_id=ti.run_id,
            details={"window": self.xcom(context, self.validate_id, key="window"),
                     "runbook_counts": (self.checked or {}).get("runbook"), "commands": copied.get("commands"),
                     "rollback": copied.get("rollback"), "approval": approval,
                     "warnings": copied.get("warnings")})
        pg = catalog_connection(cfg)
        try:
            row["id"] = recoveries.record(pg, row)
        finally:
            pg.close()
        text = recoveries.report_text(row, plan=self.plan, recovered=self.recovered, checked=self.checked,
                                      copied=self.copied, swapped=self.swapped, approval=approval,
                                      window_text=row["details"]["window"],
                                      asked_time=str(context["params"].get("target_time") or "") or None)
        self.log.info("recorded pitr_recoveries row %s (%s)\n%s", row["id"], row["status"], text)
        post_slack(cfg, context, text)
        return {**{k: v for k, v in row.items() if k != "details"}, "text": text}


# ---- pg_pitr_drill (weekly PITR drill) ----------------------------------------------------------------
# The drill's plan has pg_pitr_restore's keys (base_backup_doc, scratch, bin_dir, source_database, target), so
# its restore_base, check and teardown tasks are RestoreBaseBackupOperator, CheckRecoveredOperator and
# TeardownRecoveryOperator above; these three are the drill's own steps (``pg_dataops.pitr.drill``).


class PlanDrillOperator(StepOperator):
    """The drill's plan from S3 alone (``pg_dataops.pitr.drill.plan_drill``): the newest base backup and the WAL
    to the end of the archive (or the ``target_time`` param), the worker's tools and disk. Nothing is created
    before it passes; the target server is not contacted (the drill needs nothing but S3)."""

    template_fields: Sequence[str] = ("target",)
    ui_color = "#e8e0f8"
    waiting_for = "the S3 listings of base backups and WAL"

    def run_step(self, cfg: Config, context: Context) -> dict:
        from pg_dataops.pitr import drill, inventory  # lazy: boto3

        target = cfg.pitr_target(self.target)
        target_time = drill.parse_target_time(context["params"].get("target_time"))
        window = inventory.recoverable_window(s3_client(cfg.s3_conn_id), cfg, target.name)
        # Only the database's name: pg_conn reads the connection and does not connect.
        database = pg_conn(target.conn_id, target.database, f"database of {target.name}", require_database=True,
                           cfg=cfg).dbname
        plan = drill.plan_drill(cfg, target.name, window, source_database=database, target_time=target_time,
                                identity=lambda: age_identity(cfg), run_id=context["ti"].run_id)
        self.log.info("recoverable window of %s; drill: base backup %s (WAL %s .. %s) to %s, counting %s",
                      plan["window"]["text"], plan["base_backup"], plan["wal_needed"]["from"],
                      plan["wal_needed"]["to"], plan["target_time_text"], database)
        return plan


class VerifyBaseBackupOperator(StepOperator):
    """``pg_verifybackup`` of the restored copy against its ``backup_manifest`` before the server starts: every
    file's size and checksum and the backup's WAL (``pg_dataops.pitr.drill.verify_restored``)."""

    template_fields: Sequence[str] = ("plan", "restored")
    ui_color = "#e8e0f8"

    def run_step(self, cfg: Config, context: Context) -> dict:
        from pg_dataops.pitr import drill, scratch

        layout = scratch.ScratchLayout.from_dict(self.plan["scratch"])
        self.waiting_for = f"pg_verifybackup of {layout.data}"
        result = drill.verify_restored(layout, self.plan["bin_dir"], timeout=cfg.task_timeout_minutes * 60,
                                       doc=self.plan["base_backup_doc"])
        self.log.info("pg_verifybackup: %s files and the backup's WAL match backup_manifest (%.1f s): %s",
                      result["files"], result["verify_seconds"], result["message"])
        return result


class DrillRecoverOperator(StepOperator):
    """Replays archived WAL on the verified copy to the end of the archive (promoted), or to ``target_time``,
    and checks that the newest segment in S3 was reached (``pg_dataops.pitr.drill.replay``)."""

    template_fields: Sequence[str] = ("plan", "verified")
    ui_color = "#e8e0f8"

    def run_step(self, cfg: Config, context: Context) -> dict:
        from pg_dataops.common import wal
        from pg_dataops.pitr import drill  # lazy: psycopg

        plan = self.plan
        credentials = aws_credentials(cfg.s3_conn_id)
        client = s3_client(cfg.s3_conn_id)
        self.waiting_for = f"WAL replay to {plan['target_time_text']} (pitr.recovery_timeout_minutes)"
        result = drill.replay(
            cfg, plan, env=wal.aws_env(credentials), endpoint_url=credentials["endpoint_url"],
            list_archive=lambda: wal.list_archive(client, cfg.bucket, wal.archive_prefix(cfg, plan["target"])),
            timeout_seconds=cfg.pitr.recovery_timeout_minutes * 60)
        self.log.info("recovery %s in %.1f s: %s segment(s) restored from S3 (%s .. %s); last replayed commit %s",
                      result["state"], result["replay_seconds"], result["segments_restored"],
                      result["first_restored_segment"], result["last_restored_segment"], result["reached_time"])
        return result


class RecordPitrDrillOperator(StepOperator):
    """Records the drill in ``pitr_recoveries`` (kind ``drill``; a failed or refused one too, with its cause),
    judges restore + verify + replay + checks against the RTO objective and the earlier drills' trend, and
    posts the Slack report. An exceeded RTO fails this task (the run goes red and pages).

    The steps are given as tasks and read by task id (their results and ``error`` XComs): this step runs
    ALL_DONE, and a task directly downstream of a setup (``restore_base``) must be ALL_SUCCESS."""

    template_fields: Sequence[str] = ("target",)
    STEPS = ("plan", "restore", "verify", "recover", "check", "teardown")

    def __init__(self, *, plan: Any, restore: Any, verify: Any, recover: Any, check: Any, teardown: Any, **kwargs):
        kwargs.setdefault("trigger_rule", TriggerRule.ALL_DONE)
        super().__init__(**kwargs)
        self.step_ids = task_ids(plan=plan, restore=restore, verify=verify, recover=recover, check=check,
                                 teardown=teardown)

    def run_step(self, cfg: Config, context: Context) -> dict:
        from pg_dataops.pitr import drill  # lazy: psycopg

        ti = context["ti"]
        got = {name: self.xcom(context, task_id) for name, task_id in self.step_ids.items()}
        pg = catalog_connection(cfg)
        try:
            outcome = drill.record_drill(
                pg, target=self.target, plan=got["plan"], restored=got["restore"], verified=got["verify"],
                recovered=got["recover"], checked=got["check"],
                step_errors=[(task_id, self.xcom(context, task_id, key="error")) for task_id in self.step_ids.values()],
                objective_seconds=cfg.rto_objective_seconds, timezone=cfg.timezone, dag_id=ti.dag_id,
                run_id=ti.run_id)
        finally:
            pg.close()
        if outcome.verdict is None:
            self.log.error(outcome.text)  # the failed step's own alert names the cause
            return {**outcome.result, "text": outcome.text}
        self.log.info(outcome.text)
        post_slack(cfg, context, outcome.text)
        outcome.raise_if_exceeded()
        return {**outcome.result, "text": outcome.text}
