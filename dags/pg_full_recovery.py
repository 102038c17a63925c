"""
### pg_full_recovery: the whole database back from a backup in S3, swapped in after an approval (runbook 1.2)

Manual only. Use it when the database as a whole is lost or wrong (a bad migration, mass deletion, a
dropped table you cannot take from one table's restore). For one table use `pg_table_restore`, for one
user's data `pg_user_data_restore`, for "as of 14:29" `pg_pitr_restore`.

Tasks: **validate** (the form's params, the backup for `backup_date` (config time zone) or `backup_key`:
an error names what exists; custom or directory format only; the restore identity opens an encrypted
backup; free disk; the target server reachable; the new names free; `confirm` is empty or the database's
name. Nothing is made before it passes; then Slack "started") -> **download** (SHA-256 against `.sha256`
and the manifest, `age -d`) -> **restore_new** (`CREATE DATABASE <db>_recovering_<stamp>`, `pg_restore
--jobs --no-owner --no-privileges [--section ...]`; dropped again if it fails) -> **check** (pg_backup's
verification against the manifest: tables, row counts, required tables, amcheck; builds the preview) ->
**approve_swap** (waits in *Required Actions* with the preview: backup, counts, names, safety dump key,
app steps, rollback SQL; `confirm` = the database's name approves in advance; rejected after
`approval_timeout_minutes`) -> **stop_app** (`restore.app_stop`, or nothing) -> **safety_dump**
(`pg_dump -Fc` of the current database to S3 `{prefix}/{safety_prefix}/{target}/<db>_before_recovery_<stamp>.dump[.age]`,
encrypted like every dump) -> **swap** (one transaction: `<db>` -> `<db>_before_recovery_<stamp>`, kept;
the new database -> `<db>`) -> **carry_catalog** (when the catalog lives in the target's database, as
the runbook keeps it: its rows since the backup are copied from the kept database into the new one) -> **analyze** -> **start_app** (`restore.app_start`) -> **health_check**
(`restore.health_check`, retried up to `restore.health_timeout_seconds`) -> **cleanup** (teardown, always:
the run's folder; the new database dropped if it was not swapped in; never production or the kept one) ->
**report** (always: `restore_logs` row kind `full` with the RTO from trigger to healthy; Slack with the
rollback commands).

Why this order (not the runbook's stop-dump-drop-restore): the restore and its checks run while the
application still serves from the old database, so a failed restore changes nothing and the downtime is only
the safety dump and the swap; the safety dump, taken right before the swap, is the freshest copy of what the
swap replaces. The runbook's `dropdb` before the restore is gone: the old database is kept under its new name.
"""

from __future__ import annotations

from airflow.sdk import Param, TriggerRule, chain
from pg_dataops.airflow.approval import ApprovalGateOperator
from pg_dataops.airflow.dag_defaults import standard_dag
from pg_dataops.airflow.forms import approval_params, backup_params, restore_dagrun_timeout, target_param
from pg_dataops.catalog.operators import CarryCatalogOperator
from pg_dataops.common.config import load_config
from pg_dataops.restore.operators import (
    AnalyzeDatabaseOperator,
    AppStepOperator,
    CheckNewDatabaseOperator,
    CleanupRecoveryOperator,
    DownloadForRecoveryOperator,
    HealthCheckOperator,
    ReportFullRecoveryOperator,
    RestoreNewDatabaseOperator,
    SafetyDumpOperator,
    SwapRecoveredOperator,
    ValidateFullRecoveryOperator,
)

CFG = load_config()
SECTIONS = ["pre-data", "data", "post-data"]

with standard_dag(
    "pg_full_recovery",
    description="Full recovery from a backup in S3 into a new database, swapped in after an approval",
    schedule=None,
    cfg=CFG,
    dagrun_timeout=restore_dagrun_timeout(CFG),
    tags=["backup", "postgres", "restore"],
    doc_md=__doc__,
    params={
        **target_param(CFG, "Which configured database to recover. Its current state is kept, renamed."),
        **backup_params(CFG, from_database=False),
        "parallel_jobs": Param(CFG.restore_jobs, type="integer", minimum=1, maximum=32, title="Parallel jobs",
                               description="pg_restore --jobs: more is faster on a server with free CPUs."),
        "sections": Param(SECTIONS, type="array", items={"type": "string", "enum": SECTIONS},
                          title="Sections to restore",
                          description="All three (the default) for a real recovery. pre-data: tables; data: "
                                      "rows; post-data: indexes, constraints, triggers. pre-data is required "
                                      "(the new database is empty); without data only the tables' existence "
                                      "is checked."),
        "owners_and_privileges": Param(False, type="boolean", title="Keep owners and GRANTs",
                                       description="Off (default): pg_restore --no-owner --no-privileges, every "
                                                   "object owned by the Airflow connection's user (works when the "
                                                   "roles differ). On: owners and GRANTs as in the backup (the "
                                                   "roles must exist on the server; a superuser connection): what "
                                                   "an application connecting as its own role needs."),
        **approval_params(CFG, step="the swap (rejected: production stays as it is, the new database is dropped)"),
    },
) as dag:
    validate = ValidateFullRecoveryOperator(task_id="validate")
    download = DownloadForRecoveryOperator(task_id="download", plan=validate.output)
    restore = RestoreNewDatabaseOperator(task_id="restore_new", plan=validate.output, downloaded=download.output)
    check = CheckNewDatabaseOperator(task_id="check", plan=validate.output, restored=restore.output)
    approve = ApprovalGateOperator(
        task_id="approve_swap", subject="Swap the recovered database into place?", preview=check.output,
        confirm="{{ params.confirm or '' }}", approval_timeout_minutes="{{ params.approval_timeout_minutes }}")
    stop_app = AppStepOperator(task_id="stop_app", step="app_stop", gated=True, plan=validate.output,
                               approval=approve.output)
    safety = SafetyDumpOperator(task_id="safety_dump", plan=validate.output)
    swap = SwapRecoveredOperator(task_id="swap", plan=validate.output, approval=approve)
    carry = CarryCatalogOperator(task_id="carry_catalog", target="{{ params.target }}", swapped=swap.output)
    analyze = AnalyzeDatabaseOperator(task_id="analyze", plan=validate.output)
    start_app = AppStepOperator(task_id="start_app", step="app_start", plan=validate.output)
    health = HealthCheckOperator(task_id="health_check", plan=validate.output)
    cleanup = CleanupRecoveryOperator(task_id="cleanup", plan=validate.output)
    report = ReportFullRecoveryOperator(
        task_id="report", plan=validate.output, approval=approve,
        steps={"validate": validate, "download": download, "restore": restore, "check": check,
               "app_stop": stop_app, "safety_dump": safety, "swap": swap, "carry_catalog": carry, "analyze": analyze,
               "app_start": start_app, "health_check": health, "cleanup": cleanup})

    chain(validate, download, restore, check, approve, stop_app, safety, swap, carry, analyze, start_app, health)
    # The work folder (download) is the setup; the teardown runs whatever happened (ALL_DONE, also when the
    # download itself failed half way) and before the report, which says what it dropped.
    health >> cleanup.as_teardown(setups=download)
    cleanup.trigger_rule = TriggerRule.ALL_DONE
    cleanup >> report
