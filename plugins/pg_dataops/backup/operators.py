"""Thin Airflow operators of pg_backup over ``pg_dataops.backup.steps``: fetch connections, call a core step,
return its dict. The shared base (``StepOperator``, connections, permanent errors) is ``pg_dataops.airflow.base``.

Results of earlier steps arrive as XComArgs (``dump.output``) in template fields; a step that needs
another task's ``error`` (or the result of a task that may not have run, without depending on it)
is given that task in the DAG file and keeps its id (``base.task_ids``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import TriggerRule
from airflow.sdk.exceptions import AirflowSkipException

from pg_dataops.airflow.base import (
    PERMANENT,
    StepOperator,
    age_identity,
    catalog_connection,
    pg_conn,
    post_slack,
    run_moment,
    s3_client,
    task_ids,
)
from pg_dataops.common import naming
from pg_dataops.common.config import Config, ConfigError
from pg_dataops.common.errors import BackupError

if TYPE_CHECKING:
    from airflow.sdk import Context

# The DAG files import this module at parse time: boto3 and psycopg (via steps, s3, verify, pg) are
# imported inside the methods that use them, to keep parsing fast.


class PgDumpOperator(StepOperator):
    """pg_dump of one target into the local backup tree, hashed while written."""

    template_fields: Sequence[str] = ("target", "tier")
    tier: str = "auto"

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


class WriteChecksumOperator(StepOperator):
    """Writes the .sha256 sidecar (sha256sum -c format) from the digest taken while dumping."""

    template_fields: Sequence[str] = ("dump",)

    def run_step(self, cfg: Config, context: Context) -> dict:
        from pg_dataops.backup import steps  # lazy: see the note at the top

        return steps.checksum_step(self.dump)


class UploadBackupOperator(StepOperator):
    """Uploads the dump and its .sha256 to S3 (no overwrite), then proves size and checksum."""

    template_fields: Sequence[str] = ("dump", "checksum")

    def run_step(self, cfg: Config, context: Context) -> dict:
        from pg_dataops.backup import steps  # lazy: see the note at the top

        result = steps.upload_step(s3_client(cfg.s3_conn_id), cfg, self.dump, self.checksum)
        self.log.info("uploaded s3://%s/%s (%s)", result["bucket"], result["key"], result["checksum_verified"])
        return result


class WriteManifestOperator(StepOperator):
    """Writes the self-describing .json manifest locally and beside the dump in S3.

    Runs once the upload is done whatever the verification said (trigger rule ALL_DONE), so every
    object in S3 is described, with ``verified`` false and the reason when the check failed.
    ``verify``: the verify task, whose ``verification`` and ``error`` XComs give the verdict.
    """

    template_fields: Sequence[str] = ("dump", "upload")

    def __init__(self, *, verify: Any, **kwargs):
        kwargs.setdefault("trigger_rule", TriggerRule.ALL_DONE)
        super().__init__(**kwargs)
        self.step_ids = task_ids(verify=verify)

    def run_step(self, cfg: Config, context: Context) -> dict:
        from pg_dataops.backup import steps  # lazy: see the note at the top

        if not isinstance(self.dump, dict) or not isinstance(self.upload, dict):
            raise AirflowSkipException("nothing was uploaded: no manifest to write")
        verify_id = self.step_ids["verify"]
        verdict = steps.manifest_verdict(self.xcom(context, verify_id, key="verification"),
                                         self.xcom(context, verify_id, key="error"))
        ti = context["ti"]
        return steps.manifest_step(s3_client(cfg.s3_conn_id), cfg, self.dump, self.upload, verdict, ti.dag_id,
                                   ti.run_id)


class CreateScratchDatabaseOperator(StepOperator):
    """Setup: an empty, uniquely named database for a restore test on the restore-test server."""

    template_fields: Sequence[str] = ("target", "kind")
    kind: str = "verify"

    def run_step(self, cfg: Config, context: Context) -> dict:
        from pg_dataops.backup import verify  # lazy: see the note at the top

        name = self.target["target"] if isinstance(self.target, dict) else self.target
        target = cfg.target(name)
        conn_id = cfg.verify_conn_for(target)
        db = verify.temp_database_name(self.kind, target.name)
        verify.create_database(pg_conn(conn_id, None, "restore-test server"), db)
        self.log.info("created scratch database %s on %s", db, conn_id)
        return {"conn_id": conn_id, "database": db, "target": target.name}


class DropScratchDatabaseOperator(StepOperator):
    """Teardown: drops the scratch database and removes its scratch directory (an encrypted backup's
    plaintext), also when the restore or the checks failed."""

    template_fields: Sequence[str] = ("scratch",)

    def run_step(self, cfg: Config, context: Context) -> dict:
        from pg_dataops.backup import steps  # lazy: see the note at the top

        result = steps.drop_scratch_step(pg_conn(self.scratch["conn_id"], None, "restore-test server"),
                                         self.scratch["database"], cfg)
        self.log.info("dropped scratch database %s", self.scratch["database"])
        return result


class VerifyBackupOperator(StepOperator):
    """Restores the backup just made into the scratch database and checks it against its snapshot.

    A failure of the restore-test server (not of the dump) is retried; its verdict goes into the
    manifest at once, so the object is described while the retry waits, and the manifest keeps it
    in ``verifications`` when a later attempt passes. An encrypted dump is decrypted with the identity
    of ``encryption.identity_conn_id``, read only when the dump is encrypted.
    """

    template_fields: Sequence[str] = ("dump", "scratch", "upload")

    def run_step(self, cfg: Config, context: Context) -> dict:
        from pg_dataops.backup import steps  # lazy: see the note at the top

        ti = context["ti"]
        admin = pg_conn(self.scratch["conn_id"], None, "restore-test server", cfg=cfg)
        try:
            result = steps.verify_step(admin, self.scratch["database"], self.dump, cfg,
                                       read_identity=lambda: age_identity(cfg))
        except (BackupError, ConfigError) as exc:
            verdict = steps.failed_verdict(str(exc), transient=not isinstance(exc, PERMANENT),
                                           try_number=ti.try_number)
            ti.xcom_push(key="verification", value=verdict)
            if verdict["transient"]:
                steps.record_interim_verdict(lambda: s3_client(cfg.s3_conn_id), cfg, self.dump, self.upload,
                                             verdict, ti.dag_id, ti.run_id)
            raise
        ti.xcom_push(key="verification", value=result)
        steps.require_verified(self.dump, result)
        self.log.info("verified %s: %s tables, %s rows, amcheck %s, restore %.1f s", self.dump["file"],
                      result["tables_found"], result["rows_checked"], result["amcheck"], result["restore_seconds"])
        return result


class RecordBackupOperator(StepOperator):
    """Writes the run's backup_logs row, SUCCESS or FAILED with the failing step's error.

    Runs whatever happened upstream (trigger rule ALL_DONE), so failures are in the catalog too.
    ``steps``: ``{step name: task}`` in run order, the name as the catalog's ``failed_step`` says it.
    """

    template_fields: Sequence[str] = ("target", "tier")
    tier: str = "auto"

    def __init__(self, *, steps: Mapping[str, Any], **kwargs):
        kwargs.setdefault("trigger_rule", TriggerRule.ALL_DONE)
        super().__init__(**kwargs)
        self.step_ids = task_ids(**steps)

    def run_step(self, cfg: Config, context: Context) -> dict:
        from pg_dataops.backup import steps  # lazy: see the note at the top

        ti = context["ti"]
        results = {name: self.xcom(context, task_id) for name, task_id in self.step_ids.items()}
        errors = {name: self.xcom(context, task_id, key="error") for name, task_id in self.step_ids.items()}
        row = steps.outcome_row(target=self.target, tier_param=self.tier, moment=run_moment(context), cfg=cfg,
                                results=results, errors=errors, order=list(self.step_ids), dag_id=ti.dag_id,
                                run_id=ti.run_id)
        return steps.record_outcome(lambda: catalog_connection(cfg), row)


class NotifyBackupOperator(StepOperator):
    """Posts the success summary to Slack (failures are posted by the failure callbacks).

    ``manifest``: the manifest task, read by id rather than as an XComArg: a dependency on it would
    change this task's state (upstream_failed instead of skipped) when the manifest fails.
    """

    def __init__(self, *, manifest: Any, **kwargs):
        super().__init__(**kwargs)
        self.step_ids = task_ids(manifest=manifest)

    def run_step(self, cfg: Config, context: Context) -> dict:
        from pg_dataops.backup import steps  # lazy: see the note at the top

        doc = self.xcom(context, self.step_ids["manifest"])
        if not isinstance(doc, dict) or not doc.get("verified"):
            raise AirflowSkipException("the backup is not verified: its failure was alerted, no success to post")
        self.manifest = doc  # for alerts
        text = steps.success_text(doc)
        post_slack(cfg, context, text, attachments=steps.success_attachments(text))
        return {"text": text}
