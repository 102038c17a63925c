"""
### pg_backup: the scheduled logical backup (runbook 1.1, 2.1, 2.2)

Daily at 02:00 in the configured time zone (Asia/Seoul by default). Tier: `monthly` on the 1st,
`weekly` on Sunday, else `daily`, from the run's logical date (or `run_after` for a manual run); a
manual trigger may force it with the `tier` param. One mapped task group per configured target.

Per target: **dump** (pg_dump in one exported snapshot, SHA-256 taken while writing) ->
**checksum** (`.sha256` sidecar) -> **upload** (S3, no overwrite, size and checksum proven) ->
**verify** (restore into a scratch database, every table checked against the dump's snapshot,
amcheck; the scratch database is dropped by a teardown) -> **manifest** (`.json` beside the dump,
with the verdict) -> **record** (`backup_logs`, also for failures) -> **notify** (Slack).
Then **retention** (GFS, the same task as DAG pg_backup_retention) once all targets are done.
Any failed task alerts Slack and PagerDuty; a failed verification is a failed backup.

With `encryption.recipients` (age public keys), the dump is encrypted as pg_dump writes it
(`glimpse_daily_....dump.age`; the `.sha256` is of the encrypted object, the manifest records the
recipients) and **verify** decrypts it with the identity in the connection `encryption.identity_conn_id`
(a missing or wrong key fails the verification before any restore). Without recipients every run logs a
warning that the backup is not client-side encrypted.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import Param, chain, task_group
from pg_dataops.airflow.dag_defaults import standard_dag
from pg_dataops.backup.operators import (
    CreateScratchDatabaseOperator,
    DropScratchDatabaseOperator,
    NotifyBackupOperator,
    PgDumpOperator,
    RecordBackupOperator,
    UploadBackupOperator,
    VerifyBackupOperator,
    WriteChecksumOperator,
    WriteManifestOperator,
)
from pg_dataops.common.config import load_config
from pg_dataops.common.naming import TIER_CHOICES
from pg_dataops.retention.operators import ApplyRetentionOperator

CFG = load_config()

with standard_dag(
    "pg_backup",
    description="Scheduled pg_dump of every target to S3, with checksum, manifest, catalog and alerts",
    schedule=CFG.schedule,
    cfg=CFG,
    dagrun_timeout=dt.timedelta(minutes=CFG.dagrun_timeout_minutes),
    params={
        "tier": Param(
            "auto",
            enum=list(TIER_CHOICES),
            title="Backup tier",
            description="auto: monthly on the 1st, weekly on Sunday, else daily (in the configured time zone).",
        ),
    },
    tags=["backup", "postgres", "glimpse"],
    doc_md=__doc__,
) as dag:

    @task_group
    def back_up_target(target: str):
        dump = PgDumpOperator(task_id="dump", target=target, tier="{{ params.tier }}")
        checksum = WriteChecksumOperator(task_id="checksum", dump=dump.output)
        upload = UploadBackupOperator(task_id="upload", dump=dump.output, checksum=checksum.output)
        verify_db = CreateScratchDatabaseOperator(task_id="create_verify_db", target=target)
        verify = VerifyBackupOperator(task_id="verify", dump=dump.output, scratch=verify_db.output,
                                      upload=upload.output)
        drop_verify_db = DropScratchDatabaseOperator(task_id="drop_verify_db", scratch=verify_db.output)
        manifest = WriteManifestOperator(task_id="manifest", dump=dump.output, upload=upload.output, verify=verify)
        record = RecordBackupOperator(
            task_id="record", target=target, tier="{{ params.tier }}",
            steps={"dump": dump, "checksum": checksum, "upload": upload, "verify": verify, "manifest": manifest},
        )
        notify = NotifyBackupOperator(task_id="notify", manifest=manifest)
        chain(dump, checksum, upload, verify_db, verify, manifest, record, notify)
        # The scratch database is dropped whatever happened to the restore test.
        verify >> drop_verify_db.as_teardown(setups=verify_db)

    # GFS retention once every target's backup is done and verified (a failed target skips it:
    # nothing is pruned on a day that did not produce a proven backup).
    retention = ApplyRetentionOperator(task_id="retention", dry_run=False, notify=False)
    back_up_target.expand(target=CFG.target_names) >> retention
