"""
### pg_table_restore: one table back as it was in a backup, or in an already recovered database

Manual only. For "someone deleted / overwrote rows of one table": restores just that table's rows into a
staging schema inside the target database, shows what would change, and (after an approval) applies it in
one transaction. For "this table as of 14:29", first run `pg_pitr_restore` (it makes `glimpse_recovery`),
then this DAG with `from_database` = that database.

Modes: **dry_run** (default: counts only, nothing changes), **replace** (the table becomes exactly the
backup's rows: DELETE rows not in the backup, UPDATE changed rows in every column, INSERT missing rows; a
dropped table is re-created with its indexes, constraints and sequences), **merge_missing** (only INSERT
rows whose primary key is missing). `replace` refuses when other tables reference the table unless
`cascade` is set; the preview names those tables and what happens to their rows. Never `TRUNCATE ... CASCADE`.

Tasks: **validate** (params, the backup in S3 or `from_database`, the confirm; nothing created) ->
**stage** (download + SHA-256 + decrypt, or `pg_dump -Fc` of the table from `from_database`; the table
must be in the archive; staging schema `<staging_schema>_<run hash>`) -> **preview** (current / backup /
to insert / to replace / unchanged / to delete, referencing tables) -> **approve_apply** (waits in Required
Actions, skipped for dry_run; `confirm` = the database's name approves in advance) -> **apply** (safety dump
of the table to S3 `{prefix}/safety/{target}/..._before_table_restore_<stamp>.dump`, then one transaction,
re-counted before commit) -> **cleanup** (staging schema and work files, always) -> **report**
(`restore_logs` row kind table, Slack).
"""

from __future__ import annotations

from airflow.sdk import Param, TriggerRule, chain
from pg_dataops.airflow.approval import ApprovalGateOperator
from pg_dataops.airflow.dag_defaults import standard_dag
from pg_dataops.airflow.forms import approval_params, backup_params, restore_dagrun_timeout, target_param
from pg_dataops.common.config import load_config
from pg_dataops.restore.operators import (
    ApplyTableRestoreOperator,
    CleanupTableRestoreOperator,
    PreviewTableRestoreOperator,
    ReportTableRestoreOperator,
    StageTableOperator,
    ValidateTableRestoreOperator,
)

CFG = load_config()

with standard_dag(
    "pg_table_restore",
    description="Restore one table from a backup (or a recovered database): dry run, replace or merge_missing",
    schedule=None,
    cfg=CFG,
    dagrun_timeout=restore_dagrun_timeout(CFG),
    tags=["backup", "postgres", "restore"],
    doc_md=__doc__,
    params={
        **target_param(CFG, "Whose database gets the table back (the target's connection database)."),
        "table": Param("", type="string", title="Table",
                       description="The table to restore: table or schema.table (e.g. likes or public.likes). "
                                   "It must be in the backup; a wrong name is refused with near matches."),
        **backup_params(CFG, from_database=True),
        "mode": Param("dry_run", enum=["dry_run", "replace", "merge_missing"], title="Mode",
                      values_display={"dry_run": "dry_run: only count what would change (nothing changes)",
                                      "replace": "replace: make the table exactly the backup's rows",
                                      "merge_missing": "merge_missing: only add rows that are missing"}),
        "cascade": Param(False, type="boolean", title="Cascade to referencing tables",
                         description="replace only: allow it although other tables reference this one; their "
                                     "rows that point at deleted rows follow their ON DELETE rule, and NO ACTION "
                                     "/ RESTRICT ones are deleted first. Read the dry run's list before."),
        **approval_params(CFG, step="the apply"),
    },
) as dag:
    validate = ValidateTableRestoreOperator(task_id="validate")
    stage = StageTableOperator(task_id="stage", plan=validate.output)
    preview = PreviewTableRestoreOperator(task_id="preview", plan=validate.output, staged=stage.output)
    approve = ApprovalGateOperator(
        task_id="approve_apply", subject="Apply the table restore?", preview=preview.output,
        requested="{{ params.mode != 'dry_run' }}", confirm="{{ params.confirm or '' }}",
        approval_timeout_minutes="{{ params.approval_timeout_minutes }}")
    apply = ApplyTableRestoreOperator(task_id="apply", plan=validate.output, staged=stage.output,
                                      previewed=preview.output, approval=approve.output)
    cleanup = CleanupTableRestoreOperator(task_id="cleanup", plan=validate.output)
    report = ReportTableRestoreOperator(task_id="report", plan=validate.output, previewed=preview.output,
                                        applied=apply.output, approval=approve, stage=stage,
                                        steps=[validate, stage, preview, apply, cleanup])

    chain(validate, stage, preview, approve, apply, cleanup, report)
    # The staging schema goes whatever happened (a failed stage may have created it): ALL_DONE, not only
    # after a successful setup.
    cleanup.as_teardown(setups=stage)
    cleanup.trigger_rule = TriggerRule.ALL_DONE
