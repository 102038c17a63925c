"""
### pg_base_backup: physical base backups for point-in-time recovery

Daily (`pitr.base_backup_schedule`, 03:30 by default, after pg_backup's 02:00), one mapped task group per
PITR target (`pitr.targets`; default every target). Per target:

**base_backup**: `pg_basebackup -D - -Ft -X fetch -c fast` over the replication protocol from this
worker (no agent on the database host). Its tar stream (with the `backup_manifest` injected) is compressed
with zstd on the worker, encrypted with `encryption.recipients` (age) when set, hashed (SHA-256, whole and
per part) and uploaded part by part while it is written, to
`{prefix}/{pitr.base_prefix}/{target}/{backup_id}/base.tar.zst[.age]`; `manifest.json` (start/stop LSN and
WAL, timeline, the server's start/stop time, sizes, SHA-256, server version, system identifier, the
`backup_manifest`'s own checksum) is written last. Before anything starts it refuses, naming the cause: a
pg_basebackup client of another major version, user tablespaces, `wal_level` minimal, `archive_mode`
off, a role without REPLICATION, a missing bucket or an occupied folder.
**record_base_backup**: the `base_backups` catalog row, SUCCESS or FAILED with the step and why (runs
whatever happened). **prune_pitr** (only after a successful backup): keeps every base backup that ended
within `pitr.window_days` (7), the newest one before that (the window's start replays from it) and the
newest; deletes older ones, folders without manifest.json older than a day, and archived WAL before the
oldest kept backup's start segment (never WAL a kept backup needs). It refuses, deleting nothing, when
the listing is empty, a backup is from the future, this worker's clock is off S3's, or more than
`retention.max_delete_fraction` of the base backups would go. Then Slack gets what was made and pruned.

**Params**: `dry_run_retention` (default false): prune_pitr only reports (task log and XCom) what it would
delete. Any failed task alerts Slack and PagerDuty.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import Param, task_group
from pg_dataops.airflow.dag_defaults import standard_dag
from pg_dataops.common.config import load_config
from pg_dataops.pitr.operators import BaseBackupOperator, PrunePitrOperator, RecordBaseBackupOperator

CFG = load_config()

with standard_dag(
    "pg_base_backup",
    description="Daily pg_basebackup of every PITR target streamed to S3, with manifest, catalog and PITR retention",
    schedule=CFG.pitr.base_backup_schedule,
    cfg=CFG,
    dagrun_timeout=dt.timedelta(minutes=CFG.dagrun_timeout_minutes),
    render_template_as_native_obj=True,  # dry_run_retention reaches the operator as a bool
    params={
        "dry_run_retention": Param(
            False,
            type="boolean",
            title="Dry-run the PITR retention",
            description="Only report which base backups and WAL files the retention would delete (task log of "
                        "prune_pitr); the base backup itself is taken either way.",
        ),
    },
    tags=["backup", "postgres", "glimpse", "pitr"],
    doc_md=__doc__,
) as dag:

    @task_group
    def base_backup_target(target: str):
        base_backup = BaseBackupOperator(task_id="base_backup", target=target)
        record = RecordBaseBackupOperator(task_id="record_base_backup", target=target, base_backup=base_backup)
        prune = PrunePitrOperator(task_id="prune_pitr", target=target, backup=base_backup.output,
                                  dry_run="{{ params.dry_run_retention }}")
        # prune_pitr waits for the row and needs the backup itself to have succeeded (all_success on both).
        base_backup >> record >> prune

    base_backup_target.expand(target=[t.name for t in CFG.pitr_targets])
