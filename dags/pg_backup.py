"""
### pg_backup: the scheduled logical backup (runbook 1.1, 2.1, 2.2)

Daily at 02:00 in the configured time zone (Asia/Seoul by default). Tier: `monthly` on the 1st,
`weekly` on Sunday, else `daily`, from the run's logical date (or `run_after` for a manual run); a
manual trigger may force it with the `tier` param. One mapped task group per configured target.

Per target: **dump** (pg_dump in one exported snapshot, SHA-256 taken while writing) ->
**checksum** (`.sha256` sidecar) -> **upload** (S3, no overwrite, size and checksum proven) ->
**manifest** (`.json` beside the dump) -> **record** (`backup_logs`, also for failures) ->
**notify** (Slack). Any failed task alerts Slack and PagerDuty.
"""

from __future__ import annotations

import datetime as dt

import pendulum
from airflow.sdk import DAG, Param, chain, task_group
from pg_dataops.config import load_config
from pg_dataops.notifiers import failure_callbacks
from pg_dataops.operators import (
    NotifyBackupOperator,
    PgDumpOperator,
    RecordBackupOperator,
    UploadBackupOperator,
    WriteChecksumOperator,
    WriteManifestOperator,
)
from pg_dataops.tiers import TIER_CHOICES

CFG = load_config()

with DAG(
    dag_id="pg_backup",
    description="Scheduled pg_dump of every target to S3, with checksum, manifest, catalog and alerts",
    schedule=CFG.schedule,
    start_date=pendulum.datetime(2026, 1, 1, tz=CFG.timezone),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=dt.timedelta(hours=6),
    default_args={
        "owner": CFG.owner,
        "retries": CFG.retries,
        "retry_delay": dt.timedelta(seconds=CFG.retry_delay_seconds),
        "retry_exponential_backoff": True,
        "max_retry_delay": dt.timedelta(hours=1),
        "on_failure_callback": failure_callbacks(CFG.slack_conn_id, CFG.pagerduty_conn_id),
    },
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
        # Next: verify (restore test) between upload and manifest, so the manifest records the proof.
        manifest = WriteManifestOperator(task_id="manifest", dump=dump.output, upload=upload.output)
        record = RecordBackupOperator(
            task_id="record", target=target, tier="{{ params.tier }}",
            step_task_ids=["dump", "checksum", "upload", "manifest"],
        )
        # Next: retention (GFS) after record, before notify.
        notify = NotifyBackupOperator(task_id="notify", manifest=manifest.output)
        chain(dump, checksum, upload, manifest, record, notify)

    back_up_target.expand(target=CFG.target_names)
