"""Thin operators of pg_restore_drill over ``pg_dataops.drill.fetch``, ``pg_dataops.backup.verify`` and
``pg_dataops.drill.rto``: fetch connections, call one core function, return its dict."""

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

# Parsed with the DAG file: boto3 and psycopg come in through fetch, restore and rto, imported
# inside the methods to keep parsing fast. The age identity (an encrypted backup's key) is read by
# download and restore only, and only when the manifest says the backup is encrypted: it is passed as
# a reader, never returned or pushed to XCom.


class FindLatestBackupOperator(StepOperator):
    """The newest backup of the target in S3, with its manifest (a broken manifest fails the drill)."""

    template_fields: Sequence[str] = ("target",)

    def run_step(self, cfg: Config, context: Context) -> dict:
        from pg_dataops.drill import fetch  # lazy: see the note at the top

        found = fetch.latest_backup(s3_client(cfg.s3_conn_id), cfg.bucket, cfg.prefix, self.target, cfg.timezone)
        self.log.info("newest backup of %s: s3://%s/%s (%s)", self.target, cfg.bucket, found["key"],
                      found["manifest"]["timestamp"])
        return {**found, "target": self.target}


class DownloadBackupOperator(StepOperator):
    """Downloads it from S3 while hashing; it must match its .sha256 and its manifest. An encrypted backup
    is downloaded only once the identity connection is proven to open it."""

    template_fields: Sequence[str] = ("latest",)

    def run_step(self, cfg: Config, context: Context) -> dict:
        from pg_dataops.drill import fetch  # lazy: see the note at the top

        dest = fetch.drill_dir(cfg.local_root, context["ti"].run_id, self.latest["target"])
        self.waiting_for = f"the download of s3://{cfg.bucket}/{self.latest['key']}"
        got = fetch.fetch_backup(s3_client(cfg.s3_conn_id), cfg.bucket, self.latest["key"], self.latest["manifest"],
                                 dest, identity=lambda: age_identity(cfg),
                                 identity_conn_id=cfg.encryption.identity_conn_id)
        self.log.info("downloaded %s: %s bytes in %.1f s, SHA-256 matches", got["path"], got["size"],
                      got["download_seconds"])
        return {**got, "target": self.latest["target"]}


class RestoreDrillOperator(StepOperator):
    """Restores with parallel jobs into the scratch database and runs the same checks as pg_backup; an
    encrypted download is decrypted into the drill's folder first and the plaintext removed afterwards."""

    template_fields: Sequence[str] = ("latest", "download", "scratch")

    def run_step(self, cfg: Config, context: Context) -> dict:
        from pg_dataops.drill import restore  # lazy: see the note at the top

        doc = self.latest["manifest"]
        self.waiting_for = f"the restore of {doc['file']} into {self.scratch['database']} and its checks"
        return restore.restore_drill(
            pg_conn(self.scratch["conn_id"], None, "restore-test server", cfg=cfg), self.scratch["database"],
            self.download["path"], doc, identity=lambda: age_identity(cfg),
            identity_conn_id=cfg.encryption.identity_conn_id, jobs=cfg.restore_jobs, pg_bin_root=cfg.pg_bin_root,
            required_tables=cfg.verify_required_tables, timeout=cfg.task_timeout_minutes * 60,
        )


class RecordDrillOperator(StepOperator):
    """Records the drill (also a failed one) with the measured RTO, judges it, reports it.

    An RTO above the objective fails this task, which pages; a trend towards it is a Slack warning.
    ``latest``, ``download`` and ``restore`` are the steps' outputs (None where a step returned nothing);
    ``steps`` are the drill's tasks in order, whose ``error`` XComs name the cause of a failed drill.
    """

    template_fields: Sequence[str] = ("target", "latest", "download", "restore")

    def __init__(self, *, steps: Sequence[Any], **kwargs):
        kwargs.setdefault("trigger_rule", TriggerRule.ALL_DONE)
        super().__init__(**kwargs)
        self.step_ids = list(task_ids(**{f"steps[{i}]": step for i, step in enumerate(steps)}).values())

    def run_step(self, cfg: Config, context: Context) -> dict:
        from pg_dataops.drill import fetch, rto  # lazy: see the note at the top

        if self.download:
            # The downloaded copy (and an encrypted one's plaintext) is only for this drill.
            fetch.remove_download(self.download["path"])
        ti = context["ti"]
        pg = catalog_connection(cfg)
        try:
            outcome = rto.record_drill_outcome(
                pg, target=self.target, latest=self.latest, download=self.download, restore=self.restore,
                step_errors=[self.xcom(context, task_id, key="error") for task_id in self.step_ids],
                objective_seconds=cfg.rto_objective_seconds, restore_jobs=cfg.restore_jobs,
                dag_id=ti.dag_id, run_id=ti.run_id,
            )
        finally:
            pg.close()
        if outcome.verdict is None:
            self.log.error(outcome.text)
            return outcome.result
        self.log.info(outcome.text)
        outcome.raise_if_exceeded()
        post_slack(cfg, context, outcome.text)
        return outcome.result
