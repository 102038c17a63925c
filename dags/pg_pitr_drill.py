"""
### pg_pitr_drill: the weekly point-in-time recovery drill (proof and measured recovery time)

Weekly (`pitr.drill_schedule`, Sunday 06:00 in the configured time zone, after the restore drill); also
manual. Per PITR target, from S3 alone (the target server is not contacted):
**plan** (the newest base backup and the WAL from its start to the end of the archive, without a gap; the
worker's server binaries, `pg_verifybackup`, disk; nothing is created before it passes) -> **restore_base**
(the base backup streamed from S3: SHA-256, `age -d`, `zstd -d`, `tar -x` into `pitr.scratch_root`) ->
**verify_backup** (`pg_verifybackup` of the restored copy against the backup's own `backup_manifest`,
before the server starts: every file's size and checksum, and the backup's WAL; a mismatch fails the
drill naming the files) -> **recover** (a scratch PostgreSQL, socket only, replays the archived WAL with
`barman-cloud-wal-restore` to the end of the archive, `recovery_target_timeline = latest`, and is
promoted; it must reach the newest segment that was in S3, else the drill fails naming the segment it
could not restore) -> **check** (every table of the target's database counted; users, matches, messages)
-> **teardown** (the scratch server stopped and its folder removed, always) -> **record_drill** (a
`pitr_recoveries` row of kind `drill` with restore, verify, replay and check times and their total next to
the RTO objective, `rto_objective_hours`; Slack report; the task fails, and so pages, when the total
exceeds the objective; a trend reaching it within 90 days is a warning).

Param `target_time` (optional, a date-time with its time zone): drill a recovery to that moment instead,
from the newest base backup that ended before it. Any failed task alerts Slack and PagerDuty.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import Param, TriggerRule, chain, task_group
from pg_dataops.airflow.dag_defaults import standard_dag
from pg_dataops.common.config import load_config
from pg_dataops.pitr.operators import (
    CheckRecoveredOperator,
    DrillRecoverOperator,
    PlanDrillOperator,
    RecordPitrDrillOperator,
    RestoreBaseBackupOperator,
    TeardownRecoveryOperator,
    VerifyBaseBackupOperator,
)

CFG = load_config()

with standard_dag(
    "pg_pitr_drill",
    description="Weekly PITR drill: newest base backup + archived WAL into a scratch instance, verified, timed",
    schedule=CFG.pitr.drill_schedule,
    cfg=CFG,
    dagrun_timeout=dt.timedelta(hours=CFG.rto_objective_hours * 2),
    tags=["backup", "postgres", "restore", "drill", "pitr"],
    doc_md=__doc__,
    params={
        "target_time": Param(None, type=["null", "string"], title="Target time (optional)",
                             description="Empty: recover to the end of the WAL archive (the weekly drill). "
                                         "Otherwise a moment with its time zone, e.g. 2026-12-01T14:29:59+09:00, "
                                         "inside the recoverable window (the plan task's log shows it)."),
    },
) as dag:

    @task_group
    def drill_target(target: str):
        plan = PlanDrillOperator(task_id="plan", target=target)
        restore = RestoreBaseBackupOperator(task_id="restore_base", plan=plan.output)
        verify = VerifyBaseBackupOperator(task_id="verify_backup", plan=plan.output, restored=restore.output)
        recover = DrillRecoverOperator(task_id="recover", plan=plan.output, verified=verify.output)
        check = CheckRecoveredOperator(task_id="check", plan=plan.output, recovered=recover.output)
        teardown = TeardownRecoveryOperator(task_id="teardown", plan=plan.output)
        record = RecordPitrDrillOperator(task_id="record_drill", target=target, plan=plan, restore=restore,
                                         verify=verify, recover=recover, check=check, teardown=teardown)
        chain(plan, restore, verify, recover, check)
        # Teardown after the checks, and also when a step failed (a failed restore leaves files too).
        check >> teardown.as_teardown(setups=restore)
        teardown.trigger_rule = TriggerRule.ALL_DONE
        teardown >> record

    drill_target.expand(target=[t.name for t in CFG.pitr_targets])
