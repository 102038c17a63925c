"""
### pg_recovery_rehearsal: the monthly full recovery simulation, measured (runbook checklist)

Monthly (`restore.rehearsal_schedule`, default the 1st at 04:00 in the configured time zone); also manual,
no params. Per target, pg_full_recovery's steps without the application steps and the swap:
**plan** (the newest backup in S3, the identity, the disk, the target server) -> **download** (SHA-256,
`age -d`) -> **restore_new** (`pg_restore --jobs` into a scratch database `pgdataops_rehearsal_<target>_<stamp>`
on the target server, where a real recovery would restore) -> **check** (pg_backup's verification against the
manifest) -> **analyze** -> **safety_dump** (`pg_dump -Fc` of the target database to S3 as a recovery would
take it, timed, then deleted) -> **cleanup** (teardown, always: the scratch database dropped, the folder
removed) -> **report** (`restore_logs` row kind `rehearsal` with the measured RTO = download + restore +
checks + ANALYZE + safety dump, judged against `rto_objective_hours` and the earlier rehearsals' trend;
Slack. Above the objective the report fails: a red run and a page).
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import TriggerRule, chain, task_group
from pg_dataops.airflow.dag_defaults import standard_dag
from pg_dataops.common.config import load_config
from pg_dataops.restore.operators import (
    AnalyzeDatabaseOperator,
    CheckNewDatabaseOperator,
    CleanupRecoveryOperator,
    DownloadForRecoveryOperator,
    PlanRehearsalOperator,
    ReportRehearsalOperator,
    RestoreNewDatabaseOperator,
    SafetyDumpOperator,
)

CFG = load_config()

with standard_dag(
    "pg_recovery_rehearsal",
    description="Monthly full recovery simulation: newest backup into a scratch database, timed against the RTO",
    schedule=CFG.restore.rehearsal_schedule,
    cfg=CFG,
    dagrun_timeout=dt.timedelta(hours=CFG.rto_objective_hours * 2),
    tags=["backup", "postgres", "restore", "drill"],
    doc_md=__doc__,
) as dag:

    @task_group
    def rehearse(target: str):
        plan = PlanRehearsalOperator(task_id="plan", target=target)
        download = DownloadForRecoveryOperator(task_id="download", plan=plan.output)
        restore = RestoreNewDatabaseOperator(task_id="restore_new", plan=plan.output, downloaded=download.output)
        check = CheckNewDatabaseOperator(task_id="check", plan=plan.output, restored=restore.output)
        analyze = AnalyzeDatabaseOperator(task_id="analyze", which="new", plan=plan.output)
        safety = SafetyDumpOperator(task_id="safety_dump", keep=False, plan=plan.output)
        cleanup = CleanupRecoveryOperator(task_id="cleanup", plan=plan.output)
        report = ReportRehearsalOperator(
            task_id="report", target=target, plan=plan.output,
            steps={"plan": plan, "download": download, "restore": restore, "check": check, "analyze": analyze,
                   "safety_dump": safety, "cleanup": cleanup})
        chain(plan, download, restore, check, analyze, safety)
        safety >> cleanup.as_teardown(setups=download)
        cleanup.trigger_rule = TriggerRule.ALL_DONE
        cleanup >> report

    rehearse.expand(target=CFG.target_names)
