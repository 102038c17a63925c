"""Thin Airflow operators of pg_backup over ``pg_dataops.backup.steps.steps``: fetch connections, call a core step,
return its dict. The shared base (``BackupStepOperator``, connections, permanent errors) is ``pg_dataops.airflow.base``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import TriggerRule
from airflow.sdk.exceptions import (
    AirflowSkipException,
)

from pg_dataops.common import naming
from pg_dataops.common.config import Config, ConfigError
from pg_dataops.common.errors import (
    BackupError,
    DatabaseUnreachable,
    VerificationFailed,
    redact,
)

if TYPE_CHECKING:
    from airflow.sdk import Context


# The DAG files import this module at parse time: boto3 and psycopg (via steps, s3, verify, pg) are
# imported inside the methods that use them, to keep parsing fast.
from pg_dataops.airflow.base import PERMANENT, BackupStepOperator, airflow_connection, pg_conn, run_moment, s3_client


class PgDumpOperator(BackupStepOperator):
    """pg_dump of one target into the local backup tree, hashed while written."""

    template_fields: Sequence[str] = ("target", "tier")

    def __init__(self, *, target: str, tier: str = "auto", **kwargs):
        super().__init__(**kwargs)
        self.target = target
        self.tier = tier

    def run_step(self, cfg: Config, context: Context) -> dict:
        from pg_dataops.backup import steps  # lazy: see the note at the top

        target = cfg.target(self.target)
        moment = run_moment(context)
        tier = naming.resolve_tier(self.tier, moment, cfg.timezone)
        conn = pg_conn(target.conn_id, target.database, f"target {target.name}", require_database=True, cfg=cfg)
        client = s3_client(cfg.s3_conn_id)  # also without streaming: to abort a killed run's multipart uploads
        self.waiting_for = f"pg_dump of database {conn.dbname!r} (target {target.name})"
        result = steps.dump_step(cfg, target, conn, tier, moment, client,
                                  run_marker=f"{context['ti'].dag_id}/{context['ti'].run_id}")
        self.log.info("dumped %s: %s bytes, sha256 %s", result["file"], result["size"], result["sha256"])
        return result


class WriteChecksumOperator(BackupStepOperator):
    """Writes the .sha256 sidecar (sha256sum -c format) from the digest taken while dumping."""

    template_fields: Sequence[str] = ("dump",)

    def __init__(self, *, dump: Any, **kwargs):
        super().__init__(**kwargs)
        self.dump = dump

    def run_step(self, cfg: Config, context: Context) -> dict:
        from pg_dataops.backup import steps  # lazy: see the note at the top

        return steps.checksum_step(self.dump)


class UploadBackupOperator(BackupStepOperator):
    """Uploads the dump and its .sha256 to S3 (no overwrite), then proves size and checksum."""

    template_fields: Sequence[str] = ("dump", "checksum")

    def __init__(self, *, dump: Any, checksum: Any, **kwargs):
        super().__init__(**kwargs)
        self.dump = dump
        self.checksum = checksum

    def run_step(self, cfg: Config, context: Context) -> dict:
        from pg_dataops.backup import steps  # lazy: see the note at the top

        result = steps.upload_step(s3_client(cfg.s3_conn_id), cfg, self.dump, self.checksum)
        self.log.info("uploaded s3://%s/%s (%s)", result["bucket"], result["key"], result["checksum_verified"])
        return result


class WriteManifestOperator(BackupStepOperator):
    """Writes the self-describing .json manifest locally and beside the dump in S3.

    Runs once the upload is done whatever the verification said (trigger rule ALL_DONE), so every
    object in S3 is described, with ``verified`` false and the reason when the check failed.
    """

    def __init__(self, **kwargs):
        kwargs.setdefault("trigger_rule", TriggerRule.ALL_DONE)
        super().__init__(**kwargs)

    def run_step(self, cfg: Config, context: Context) -> dict:
        from pg_dataops.backup import steps  # lazy: see the note at the top

        dump, upload = self.pull(context, "dump"), self.pull(context, "upload")
        if not isinstance(dump, dict) or not isinstance(upload, dict):
            raise AirflowSkipException("nothing was uploaded: no manifest to write")
        self.dump = dump  # for alerts
        verification = self.pull(context, "verify", key="verification") or {
            "verified": False, "error": self.pull(context, "verify", key="error") or "verification did not run"}
        ti = context["ti"]
        return steps.manifest_step(s3_client(cfg.s3_conn_id), cfg, dump, upload, verification, ti.dag_id, ti.run_id)


class CreateScratchDatabaseOperator(BackupStepOperator):
    """Setup: an empty, uniquely named database for a restore test on the restore-test server."""

    template_fields: Sequence[str] = ("target", "kind")

    def __init__(self, *, target: Any, kind: str = "verify", **kwargs):
        super().__init__(**kwargs)
        self.target = target
        self.kind = kind

    def run_step(self, cfg: Config, context: Context) -> dict:
        from pg_dataops.backup import verify  # lazy: see the note at the top

        name = self.target["target"] if isinstance(self.target, dict) else self.target
        target = cfg.target(name)
        conn_id = cfg.verify_conn_for(target)
        db = verify.temp_database_name(self.kind, target.name)
        verify.create_database(pg_conn(conn_id, None, "restore-test server"), db)
        self.log.info("created scratch database %s on %s", db, conn_id)
        return {"conn_id": conn_id, "database": db, "target": target.name}


class DropScratchDatabaseOperator(BackupStepOperator):
    """Teardown: drops the scratch database, also when the restore or the checks failed."""

    template_fields: Sequence[str] = ("scratch",)

    def __init__(self, *, scratch: Any, **kwargs):
        super().__init__(**kwargs)
        self.scratch = scratch

    def run_step(self, cfg: Config, context: Context) -> dict:
        from pg_dataops.backup import verify  # lazy: see the note at the top

        verify.drop_database(pg_conn(self.scratch["conn_id"], None, "restore-test server"), self.scratch["database"])
        self.log.info("dropped scratch database %s", self.scratch["database"])
        return {"dropped": self.scratch["database"]}


class VerifyBackupOperator(BackupStepOperator):
    """Restores the backup just made into the scratch database and checks it against its snapshot.

    A failure of the restore-test server (not of the dump) is retried; its verdict goes into the
    manifest at once, so the object is described while the retry waits, and the manifest keeps it
    in ``verifications`` when a later attempt passes.
    """

    template_fields: Sequence[str] = ("dump", "scratch")

    def __init__(self, *, dump: Any, scratch: Any, **kwargs):
        super().__init__(**kwargs)
        self.dump = dump
        self.scratch = scratch

    def run_step(self, cfg: Config, context: Context) -> dict:
        from pg_dataops.backup import verify  # lazy: see the note at the top

        ti = context["ti"]
        try:
            result = verify.verify_backup(
                pg_conn(self.scratch["conn_id"], None, "restore-test server", cfg=cfg), self.scratch["database"],
                self.dump["path"], fmt=self.dump["format"], expected_counts=self.dump["table_counts"],
                backup_server_version_num=self.dump["server_version_num"], jobs=cfg.restore_jobs,
                pg_bin_root=cfg.pg_bin_root, required_tables=cfg.verify_required_tables,
                timeout=cfg.task_timeout_minutes * 60,
            ).to_dict()
        except (BackupError, ConfigError) as exc:
            verdict = {"verified": False, "error": redact(str(exc)), "transient": not isinstance(exc, PERMANENT),
                       "checked_at": dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z"),
                       "try_number": ti.try_number}
            ti.xcom_push(key="verification", value=verdict)
            if verdict["transient"]:
                self._record_verdict(cfg, context, verdict)
            raise
        ti.xcom_push(key="verification", value=result)
        if not result["verified"]:
            raise VerificationFailed(
                f"{self.dump['file']} failed verification: " + "; ".join(result["mismatches"][:5])
                + (f" (+{len(result['mismatches']) - 5} more)" if len(result["mismatches"]) > 5 else "")
            )
        self.log.info("verified %s: %s tables, %s rows, amcheck %s, restore %.1f s", self.dump["file"],
                      result["tables_found"], result["rows_checked"], result["amcheck"], result["restore_seconds"])
        return result

    def _record_verdict(self, cfg: Config, context: Context, verdict: dict) -> None:
        """The failed verdict into the manifest now; best effort, the verification's error is what counts."""
        from pg_dataops.backup import steps  # lazy: see the note at the top

        upload = self.pull(context, "upload")
        if not isinstance(upload, dict):
            return
        ti = context["ti"]
        try:
            steps.manifest_step(s3_client(cfg.s3_conn_id), cfg, self.dump, upload, verdict, ti.dag_id, ti.run_id)
            self.log.info("recorded the failed verification (try %s) in the manifest", ti.try_number)
        except (BackupError, ConfigError) as exc:
            self.log.warning("could not record the failed verification in the manifest: %s", exc)


class RecordBackupOperator(BackupStepOperator):
    """Writes the run's backup_logs row, SUCCESS or FAILED with the failing step's error.

    Runs whatever happened upstream (trigger rule ALL_DONE), so failures are in the catalog too.
    """

    template_fields: Sequence[str] = ("target", "tier")

    def __init__(self, *, target: str, tier: str = "auto", step_task_ids: Sequence[str], **kwargs):
        kwargs.setdefault("trigger_rule", TriggerRule.ALL_DONE)
        super().__init__(**kwargs)
        self.target = target
        self.tier = tier
        self.step_task_ids = list(step_task_ids)

    def _pull(self, ti, task_id: str, key: str = "return_value"):
        return ti.xcom_pull(task_ids=task_id, key=key, map_indexes=ti.map_index)

    def run_step(self, cfg: Config, context: Context) -> dict:
        from pg_dataops.backup import steps  # lazy: see the note at the top

        ti = context["ti"]
        prefix = f"{self.task_group.group_id}." if self.task_group and self.task_group.group_id else ""
        ids = {name: prefix + name for name in self.step_task_ids}
        results = {name: self._pull(ti, tid) for name, tid in ids.items()}
        error, failed_step = None, None
        for name, tid in ids.items():
            err = self._pull(ti, tid, key="error")
            if err:
                error, failed_step = err, name
                break
        if error is None and results.get("manifest") is None:
            failed_step = next((n for n in self.step_task_ids if results.get(n) is None), None)
            error = f"step {failed_step} did not complete (see its log)"
        moment = run_moment(context)
        try:
            tier = naming.resolve_tier(self.tier, moment, cfg.timezone)
        except ValueError:
            tier = None
        row = steps.catalog_row(
            target=self.target, tier=(results.get("dump") or {}).get("tier", tier), moment=moment,
            dump=results.get("dump"), upload=results.get("upload"), doc=results.get("manifest"),
            error=error, failed_step=failed_step, bucket=cfg.bucket, dag_id=ti.dag_id, run_id=ti.run_id,
        )
        try:
            pg = _connect_catalog(cfg)
            try:
                row_id = steps.record_step(pg, row)
            finally:
                pg.close()
        except (BackupError, DatabaseUnreachable) as exc:
            if row["status"] == "FAILED":
                # The failure itself was already alerted by the failing task; losing its catalog row
                # (often: the catalog is the database that is down) must not raise a second page.
                self.log.error("could not record the failed backup in the catalog: %s", exc)
                return {**row, "recorded": False}
            raise
        self.log.info("backup_logs row %s: %s %s", row_id, row["status"], row["error_message"] or "")
        return {**row, "recorded": True, "id": row_id}


def _connect_catalog(cfg: Config):
    from pg_dataops.common import pg as pgtools

    return pgtools.connect(pg_conn(cfg.catalog_conn_id, None, "backup catalog"), autocommit=True)


class NotifyBackupOperator(BackupStepOperator):
    """Posts the success summary to Slack (failures are posted by the failure callbacks)."""

    def run_step(self, cfg: Config, context: Context) -> dict:
        from airflow.providers.slack.notifications.slack_webhook import SlackWebhookNotifier

        from pg_dataops.backup import steps  # lazy: see the note at the top

        doc = self.pull(context, "manifest")
        if not isinstance(doc, dict) or not doc.get("verified"):
            raise AirflowSkipException("the backup is not verified: its failure was alerted, no success to post")
        self.manifest = doc
        text = steps.success_text(doc)
        airflow_connection(cfg.slack_conn_id, "Slack notifications")
        SlackWebhookNotifier(
            slack_webhook_conn_id=cfg.slack_conn_id,
            text=text,
            attachments=[{"color": "#36a64f", "title": "Database Backup SUCCESS", "text": text,
                          "footer": "Glimpse Backup System"}],
        ).notify(context)
        return {"text": text}
