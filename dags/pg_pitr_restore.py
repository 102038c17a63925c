"""
### pg_pitr_restore: point-in-time recovery from S3 (base backup + archived WAL), from the trigger form

Manual only. Recovers a PITR target's database **as it was at `target_time`** into a new database on
the target server (`glimpse_recovery` by default) without touching the target's own database; with
`swap` it then renames the two, keeping the old one as `<name>_before_pitr_<stamp>`.

**Before triggering, read the recoverable window**: the first line of the `validate` task's log, the
Slack report of every run (also a refused one), and the `pg_wal_archive_check` DAG and its Slack
messages. A target before the oldest base backup's end or after the newest archived WAL is refused,
naming the window; so is a gap in the WAL, an unknown `base_backup`, an existing `database_name`.

Tasks: **validate** (params, window, base backup, WAL continuity, age identity, worker tools and disk,
target server; nothing is created before it passes) -> **restore_base** (the base backup streamed from S3:
SHA-256, `age -d`, `zstd -d`, `tar -x` into `pitr.scratch_root`; no plaintext file besides the data
directory) -> **recover** (a scratch PostgreSQL on the worker, socket only, `recovery.signal` +
`restore_command` = `barman-cloud-wal-restore --parallel`, `recovery_target_time`, `archive_mode=off`;
waits until promoted or paused; if the archive ends before the target, recovers to its end and says so)
-> **check** (every table counted; users, matches, messages) -> **copy_to_target** (`CREATE DATABASE`,
`pg_dump -Fc | pg_restore --exit-on-error`, counts compared; dropped on failure) -> **approve_swap**
(only with `swap`: waits in *Required Actions* with the preview, rejected after
`approval_timeout_minutes`; `confirm` = the database's name approves in advance) -> **swap** ->
**carry_catalog** (when the catalog lives in the target's database: its rows copied from the kept database) ->
**teardown** (scratch server stopped and removed, always) -> **report** (`pitr_recoveries` row, Slack
with the switch-over commands or the swap done).
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import Param, TriggerRule, chain
from pg_dataops.airflow.approval import ApprovalGateOperator
from pg_dataops.airflow.dag_defaults import standard_dag
from pg_dataops.catalog.operators import CarryCatalogOperator
from pg_dataops.common.config import load_config
from pg_dataops.pitr.operators import (
    CheckRecoveredOperator,
    CopyToTargetOperator,
    RecoverOperator,
    ReportRecoveryOperator,
    RestoreBaseBackupOperator,
    SwapDatabasesOperator,
    TeardownRecoveryOperator,
    ValidateRecoveryOperator,
)

CFG = load_config()
PITR_TARGETS = [t.name for t in CFG.pitr_targets]

TARGET_TIME_HELP = (
    "The moment to recover to, with its time zone: ISO 8601 such as 2026-12-01T14:29:59+09:00, "
    "2026-12-01 14:29:59+09:00 or 2026-12-01T05:29:59Z (seconds count: recover to the second before the "
    "damage). It must lie in the recoverable window, which this form cannot read (no I/O while the DAG "
    "is parsed): it is the first line of the validate task's log and of the Slack report of every run "
    "(a refused one too), and pg_wal_archive_check reports the archive's newest segment. Times are shown "
    f"in {CFG.timezone} and UTC."
)

with standard_dag(
    "pg_pitr_restore",
    description="Point-in-time recovery from S3 into a new database on the target server; optional approved swap",
    schedule=None,
    cfg=CFG,
    dagrun_timeout=dt.timedelta(hours=CFG.rto_objective_hours * 2),
    tags=["backup", "postgres", "restore", "pitr"],
    doc_md=__doc__,
    params={
        # A default (empty, refused by validate) rather than none: Airflow validates the params again, without
        # the run's conf, when it builds the context of a DAG-level failure callback.
        "target_time": Param("", type="string", title="Target time (with time zone)",
                             description=TARGET_TIME_HELP, examples=["2026-12-01T14:29:59+09:00"]),
        "base_backup": Param(None, type=["null", "string"], title="Base backup (optional)",
                             description="A backup_id such as glimpse_base_20261201T033000Z; empty: the newest "
                                         "that ended at or before the target (the shortest replay)."),
        "target_action": Param("promote", enum=["promote", "pause"], title="At the target",
                               values_display={"promote": "promote (a normal read-write copy)",
                                               "pause": "pause (read-only, recovery paused at the target)"}),
        "database_name": Param(CFG.pitr.recovery_database, type="string", pattern=r"^[a-z_][a-z0-9_]{0,62}$",
                               title="New database on the target server",
                               description="Where the recovered database goes; it must not exist. The target's "
                                           "own database is never written."),
        "swap": Param(False, type="boolean", title="Swap it in afterwards",
                      description="After an approval: rename the target's database to "
                                  "<name>_before_pitr_<stamp> (kept) and the recovered copy to its name. Off: "
                                  "the report gives the exact commands to do it by hand."),
        "confirm": Param(None, type=["null", "string"], title="Confirm the swap in advance",
                         description="The target database's name approves the swap without waiting (for runs "
                                     "from the REST API or airflow dags trigger -c). Empty: approve in the UI "
                                     "(Required Actions)."),
        "approval_timeout_minutes": Param(60, type="integer", minimum=1, maximum=10080,
                                          title="Approval timeout (minutes)",
                                          description="Nobody approving within this time rejects the swap."),
        "target": Param(PITR_TARGETS[0] if PITR_TARGETS else None, enum=PITR_TARGETS or [None],
                        title="PITR target"),
    },
) as dag:
    validate = ValidateRecoveryOperator(task_id="validate")
    restore = RestoreBaseBackupOperator(task_id="restore_base", plan=validate.output)
    recover = RecoverOperator(task_id="recover", plan=validate.output, restored=restore.output)
    check = CheckRecoveredOperator(task_id="check", plan=validate.output, recovered=recover.output)
    copy = CopyToTargetOperator(task_id="copy_to_target", plan=validate.output, recovered=recover.output,
                                checked=check.output)
    approve = ApprovalGateOperator(
        task_id="approve_swap", subject="Swap the recovered database into place?", preview=copy.output,
        requested="{{ params.swap }}", confirm="{{ params.confirm or '' }}",
        approval_timeout_minutes="{{ params.approval_timeout_minutes }}")
    swap = SwapDatabasesOperator(task_id="swap", plan=validate.output, copied=copy.output, approval=approve.output)
    carry = CarryCatalogOperator(task_id="carry_catalog", target="{{ params.target }}", swapped=swap.output)
    teardown = TeardownRecoveryOperator(task_id="teardown", plan=validate.output)
    report = ReportRecoveryOperator(
        task_id="report", plan=validate.output, recovered=recover.output, checked=check.output,
        copied=copy.output, swapped=swap.output, approval=approve, validate=validate, restore=restore,
        steps=[validate, restore, recover, check, copy, swap, carry, teardown])

    chain(validate, restore, recover, check, copy, approve, swap, carry, report)
    # The scratch server is not needed after the copy: released before a possibly long approval wait. A
    # teardown runs ALL_DONE here (not only after a successful setup): a failed restore leaves files too.
    copy >> teardown.as_teardown(setups=restore)
    teardown.trigger_rule = TriggerRule.ALL_DONE
    teardown >> report
