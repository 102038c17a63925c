"""
### pg_restore_drill: the weekly restore test and full-recovery simulation (runbook checklists)

Weekly (Sunday 05:00, after the 02:00 backup, in the configured time zone); also manual. Per
target: **find_latest** (the newest backup in S3, not the local copy; a broken manifest fails the
drill) -> **download** (hashed while streaming; must match its `.sha256` and its manifest) ->
**restore** (`pg_restore --jobs` into a scratch database created by a setup task and always
dropped by a teardown; the same checks as pg_backup's verify) -> **record_drill** (`restore_drills`
row with the measured RTO = download + restore + checks, next to the 4-hour objective; Slack report;
fails, and so pages, when the RTO is exceeded; warns when its trend reaches the objective within
90 days). Any failed task alerts Slack and PagerDuty.

An encrypted backup (`.dump.age`, its manifest's `encryption`) needs the age identity in the
connection `encryption.identity_conn_id` (`backup_age_identity`): **download** first proves that it
opens one of the backup's recipients (a missing or wrong key fails there, naming the connection and
the recipients, before any transfer); **restore** decrypts into the drill's folder (`age -d`; the
time counts in `restore_seconds`, so in the RTO) and removes the plaintext afterwards, whatever
happened; **record_drill** removes the download and any plaintext left.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import chain, task_group
from pg_dataops.airflow.dag_defaults import standard_dag
from pg_dataops.backup.operators import CreateScratchDatabaseOperator, DropScratchDatabaseOperator
from pg_dataops.common.config import load_config
from pg_dataops.drill.operators import (
    DownloadBackupOperator,
    FindLatestBackupOperator,
    RecordDrillOperator,
    RestoreDrillOperator,
)

CFG = load_config()

with standard_dag(
    "pg_restore_drill",
    description="Weekly restore of the newest backup from S3 into a scratch database: proof and measured RTO",
    schedule=CFG.drill_schedule,
    cfg=CFG,
    dagrun_timeout=dt.timedelta(hours=CFG.rto_objective_hours * 2),
    tags=["backup", "postgres", "restore", "drill"],
    doc_md=__doc__,
) as dag:

    @task_group
    def drill_target(target: str):
        latest = FindLatestBackupOperator(task_id="find_latest", target=target)
        download = DownloadBackupOperator(task_id="download", latest=latest.output)
        drill_db = CreateScratchDatabaseOperator(task_id="create_drill_db", target=target, kind="drill")
        restore = RestoreDrillOperator(task_id="restore", latest=latest.output, download=download.output,
                                       scratch=drill_db.output)
        drop_drill_db = DropScratchDatabaseOperator(task_id="drop_drill_db", scratch=drill_db.output)
        record = RecordDrillOperator(task_id="record_drill", target=target, latest=latest.output,
                                     download=download.output, restore=restore.output,
                                     steps=[latest, download, drill_db, restore])
        chain(latest, download, drill_db, restore, record)
        restore >> drop_drill_db.as_teardown(setups=drill_db)

    drill_target.expand(target=CFG.target_names)
