"""Thin operators of pg_restore_drill over ``pg_dataops.drill.core`` and ``pg_dataops.backup.verify``."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import TriggerRule

from pg_dataops.airflow.base import BackupStepOperator, airflow_connection, pg_conn, s3_client
from pg_dataops.common.config import Config
from pg_dataops.common.errors import PermanentError, VerificationFailed

if TYPE_CHECKING:
    from airflow.sdk import Context

# Parsed with the DAG file: boto3 and psycopg come in through drill, verify and pgtools, imported
# inside the methods to keep parsing fast.


class RtoExceeded(PermanentError):
    """The measured restore time is above the objective."""


def drill_dir(cfg: Config, run_id: str, target: str) -> str:
    safe = "".join(c if c.isalnum() else "_" for c in run_id)
    return os.path.join(cfg.local_root, ".drill", f"{target}_{safe}")


class FindLatestBackupOperator(BackupStepOperator):
    """The newest backup of the target in S3, with its manifest (a broken manifest fails the drill)."""

    template_fields: Sequence[str] = ("target",)

    def __init__(self, *, target: str, **kwargs):
        super().__init__(**kwargs)
        self.target = target

    def run_step(self, cfg: Config, context: Context) -> dict:
        from pg_dataops.drill import core as drill  # lazy: see the note at the top

        found = drill.latest_backup(s3_client(cfg.s3_conn_id), cfg.bucket, cfg.prefix, self.target, cfg.timezone)
        self.log.info("newest backup of %s: s3://%s/%s (%s)", self.target, cfg.bucket, found["key"],
                      found["manifest"]["timestamp"])
        return {**found, "target": self.target}


class DownloadBackupOperator(BackupStepOperator):
    """Downloads it from S3 while hashing; it must match its .sha256 and its manifest."""

    template_fields: Sequence[str] = ("latest",)

    def __init__(self, *, latest: Any, **kwargs):
        super().__init__(**kwargs)
        self.latest = latest

    def run_step(self, cfg: Config, context: Context) -> dict:
        from pg_dataops.drill import core as drill  # lazy: see the note at the top

        dest = drill_dir(cfg, context["ti"].run_id, self.latest["target"])
        self.waiting_for = f"the download of s3://{cfg.bucket}/{self.latest['key']}"
        got = drill.download_and_check(s3_client(cfg.s3_conn_id), cfg.bucket, self.latest["key"],
                                       self.latest["manifest"], dest)
        self.log.info("downloaded %s: %s bytes in %.1f s, SHA-256 matches", got["path"], got["size"],
                      got["download_seconds"])
        return {**got, "target": self.latest["target"]}


class RestoreDrillOperator(BackupStepOperator):
    """Restores with parallel jobs into the scratch database and runs the same checks as pg_backup."""

    template_fields: Sequence[str] = ("latest", "download", "scratch")

    def __init__(self, *, latest: Any, download: Any, scratch: Any, **kwargs):
        super().__init__(**kwargs)
        self.latest = latest
        self.download = download
        self.scratch = scratch

    def run_step(self, cfg: Config, context: Context) -> dict:
        from pg_dataops.backup import verify  # lazy: see the note at the top

        doc = self.latest["manifest"]
        self.waiting_for = f"the restore of {doc['file']} into {self.scratch['database']} and its checks"
        result = verify.verify_backup(
            pg_conn(self.scratch["conn_id"], None, "restore-test server", cfg=cfg), self.scratch["database"],
            self.download["path"], fmt=doc.get("format", "custom"), expected_counts=doc.get("table_counts", {}),
            backup_server_version_num=int(doc.get("server_version_num") or 0), jobs=cfg.restore_jobs,
            pg_bin_root=cfg.pg_bin_root, required_tables=cfg.verify_required_tables,
            timeout=cfg.task_timeout_minutes * 60,
        ).to_dict()
        if not result["verified"]:
            raise VerificationFailed(f"{doc['file']} restored but does not match its manifest: "
                                     + "; ".join(result["mismatches"][:5]))
        return result


class RecordDrillOperator(BackupStepOperator):
    """Records the drill (also a failed one) with the measured RTO, judges it, reports it.

    An RTO above the objective fails this task, which pages; a trend towards it is a Slack warning.
    """

    template_fields: Sequence[str] = ("target",)

    def __init__(self, *, target: str, **kwargs):
        kwargs.setdefault("trigger_rule", TriggerRule.ALL_DONE)
        super().__init__(**kwargs)
        self.target = target

    def run_step(self, cfg: Config, context: Context) -> dict:
        from pg_dataops.common import pg as pgtools
        from pg_dataops.drill import core as drill  # lazy: see the note at the top

        ti = context["ti"]
        latest, download = self.pull(context, "find_latest"), self.pull(context, "download")
        result = self.pull(context, "restore")
        error = next((e for e in (self.pull(context, s, key="error") for s in
                                  ("find_latest", "download", "create_drill_db", "restore")) if e), None)
        if download:
            drill._remove(download["path"])  # the downloaded copy is only for this drill
        doc = (latest or {}).get("manifest") or {}
        ok = bool(result and result.get("verified")) and error is None
        total = None
        if ok:
            total = round(download["download_seconds"] + result["restore_seconds"] + result["check_seconds"], 3)
        row = {
            "target": self.target, "backup_type": doc.get("type"), "backup_file": doc.get("file"),
            "s3_key": (latest or {}).get("key"), "backup_timestamp": doc.get("timestamp"),
            "size_bytes": doc.get("size"), "download_seconds": (download or {}).get("download_seconds"),
            "restore_seconds": (result or {}).get("restore_seconds"), "check_seconds": (result or {}).get("check_seconds"),
            "total_seconds": total, "rto_objective_seconds": cfg.rto_objective_seconds,
            "status": "SUCCESS" if ok else "FAILED", "error_message": None if ok else (error or "a drill step failed"),
            "dag_id": ti.dag_id, "run_id": ti.run_id,
        }
        now = dt.datetime.now(dt.UTC)
        pg = pgtools.connect(pg_conn(cfg.catalog_conn_id, None, "backup catalog", cfg=cfg), autocommit=True)
        try:
            history = drill.drill_history(pg, self.target, now - dt.timedelta(days=180)) if ok else []
            row_id = drill.record_drill(pg, row)
        finally:
            pg.close()
        if not ok:
            self.log.error("drill of %s failed and was recorded (row %s): %s", self.target, row_id, row["error_message"])
            return {**row, "id": row_id}
        verdict = drill.assess_rto(total, cfg.rto_objective_seconds, history, now)
        text = (f"{':warning:' if verdict.status != 'ok' else ':white_check_mark:'} Restore drill of {self.target}: "
                f"{doc['file']} from S3, {doc['size'] / 1e6:,.1f} MB, {result['tables_found']} tables and "
                f"{result['rows_checked']:,} rows match its manifest, amcheck {result['amcheck']}\n"
                f"download {drill.fmt_seconds(download['download_seconds'])} + restore "
                f"{drill.fmt_seconds(result['restore_seconds'])} (-j{cfg.restore_jobs}) + checks "
                f"{drill.fmt_seconds(result['check_seconds'])}\n{verdict.message}")
        self.log.info(text)
        if verdict.status == "exceeded":
            raise RtoExceeded(f"restore drill of {self.target}: {verdict.message}")
        from airflow.providers.slack.notifications.slack_webhook import SlackWebhookNotifier

        airflow_connection(cfg.slack_conn_id, "Slack notifications")
        SlackWebhookNotifier(slack_webhook_conn_id=cfg.slack_conn_id, text=text).notify(context)
        return {**row, "id": row_id, "verdict": verdict.status, "message": verdict.message}
