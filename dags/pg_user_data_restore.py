"""
### pg_user_data_restore: one user's rows back from a backup or a recovered database, from the trigger form

Manual only (the runbook's section 3.2, `restore-user-data.sh`). For a user whose account, messages, likes
or matches were deleted or overwritten by mistake. Which tables and columns belong to a user is the
config's `restore.user_tables` (default: users, user_profiles, user_preferences by `id`; likes by
`from_user_id`/`to_user_id`; matches by `user1_id`/`user2_id`; messages by `sender_id`/`receiver_id`;
user_groups by `user_id`). **Run it as a dry run first** (the default): it shows per table how many rows
would be inserted, updated and left unchanged, and changes nothing.

Tasks: **validate** (the user id as the key column's type, e.g. a UUID; the mapped tables and columns
in the target database; the backup for `backup_date`/`backup_key`, an encrypted one's identity proven, or
`from_database` on the same server; `confirm`; nothing is created before it passes; Slack: started) ->
**stage** (the user's rows into a staging schema `<restore.staging_schema>_<run>` inside the target
database: streamed out of the backup keeping only that user's rows, or copied from `from_database`) ->
**preview** (counts per table: inserted, updated, unchanged, and the user's current rows not in the
source, which are left alone) -> **approve_upsert** (not in a dry run: waits in *Required Actions* with
the preview, rejected after `approval_timeout_minutes`; `confirm` = the database's name approves in
advance) -> **apply** (one transaction, parents first: the rows it changes copied to
`<restore.safety_schema>.<table>_<stamp>_<run>` (kept), then an upsert of all columns on the primary key,
counts checked against the approved preview, sequences moved past the restored ids) -> **cleanup**
(staging schema dropped, download removed, always) -> **report** (`restore_logs` row, kind `user`, with
the counts, the safety tables, the rollback and drop commands; Slack summary).
"""

from __future__ import annotations

from airflow.sdk import Param, TriggerRule, chain
from pg_dataops.airflow.approval import ApprovalGateOperator
from pg_dataops.airflow.dag_defaults import standard_dag
from pg_dataops.airflow.forms import approval_params, backup_params, restore_dagrun_timeout, target_param
from pg_dataops.common.config import load_config
from pg_dataops.restore.operators import (
    ApplyUserRestoreOperator,
    CleanupUserRestoreOperator,
    PreviewUserRestoreOperator,
    ReportUserRestoreOperator,
    StageUserRowsOperator,
    ValidateUserRestoreOperator,
)

CFG = load_config()

with standard_dag(
    "pg_user_data_restore",
    description="One user's rows (every mapped table, all columns) from a backup or a recovered database; "
                "dry run first, approved upsert",
    schedule=None,
    cfg=CFG,
    dagrun_timeout=restore_dagrun_timeout(CFG),
    tags=["backup", "postgres", "restore", "user"],
    doc_md=__doc__,
    params={
        **target_param(CFG, "The configured target whose database gets the user's rows back."),
        "user_id": Param("", type="string", title="User id",
                         description=f"The id of the user whose rows to restore, as in {CFG.restore.user_key} "
                                     "(a UUID such as 6f1c2a4e-8d3b-4c7a-9e2f-0a1b2c3d4e5f). Anything else is "
                                     "refused before any change."),
        **backup_params(CFG, from_database=True),
        "dry_run": Param(True, type="boolean", title="Dry run (change nothing)",
                         description="On (default): only report per table how many rows would be inserted, "
                                     "updated and left unchanged. Off: write them after an approval."),
        **approval_params(CFG, step="the upsert"),
    },
) as dag:
    validate = ValidateUserRestoreOperator(task_id="validate")
    stage = StageUserRowsOperator(task_id="stage", plan=validate.output)
    preview = PreviewUserRestoreOperator(task_id="preview", plan=validate.output, staged=stage.output)
    approve = ApprovalGateOperator(
        task_id="approve_upsert", subject="Write the user's rows back (upsert)?", preview=preview.output,
        requested="{{ not params.dry_run }}", confirm="{{ params.confirm or '' }}",
        approval_timeout_minutes="{{ params.approval_timeout_minutes }}")
    apply = ApplyUserRestoreOperator(task_id="apply", plan=validate.output, staged=stage.output,
                                     preview=preview.output, approval=approve.output)
    cleanup = CleanupUserRestoreOperator(task_id="cleanup", plan=validate.output)
    report = ReportUserRestoreOperator(task_id="report", plan=validate.output, preview=preview.output,
                                       applied=apply.output, approval=approve,
                                       steps=[validate, stage, preview, apply, cleanup])

    chain(validate, stage, preview, approve, apply, report)
    apply >> cleanup.as_teardown(setups=stage)
    cleanup.trigger_rule = TriggerRule.ALL_DONE  # also after a failed stage: a half-made staging schema
    cleanup >> report
