"""
### pg_failover: promote the standby when the primary is lost (runbook 2.2)

Manual only. Trigger it from the Airflow UI (Trigger DAG with the form) or the REST API. **dry_run is on by
default**: the first run only checks both servers and shows the plan.

**validate** (refuses before anything changes: the primary answers a query and is not in recovery -> refused
unless `force`; the standby `dr.standbys.<target>` must answer and be a copy of the primary (same system
identifier); a `confirm` other than the standby's name. The plan shows the primary's state, what the standby
received and replayed, and the data a failover now would lose: exact while the primary answers, else "whatever
the primary committed after the standby's last message from it") -> **approve_failover** (Required Actions,
the plan as its body; `confirm` = the standby's name approves in advance; skipped by a dry run) ->
**fence** (`dr.failover.fence`: a command or HTTP call that stops the old primary taking writes) ->
**promote** (`pg_promote(wait => true)` on the standby, then a write: a transaction id is assigned) ->
**repoint** (the env file's `DB_HOST`/`DB_PORT` lines, a copy of the file kept, as the runbook's `sed`; the
target's Airflow connection through the REST API, so every DAG, backups included, follows) -> **restart_app**
(`dr.failover.app_restart`) -> **update_dns** (UPSERT of `dr.failover.route53`'s record through boto3) ->
**verify** (a write through the new primary, through the DNS record's target and through the Airflow
connection as it now reads; the env file's lines) -> **report** (whatever happened: the `failovers` catalog
row, Slack with every step's state and duration and the failover time, PagerDuty on success: production moved).

Every step is idempotent: a run that failed midway is finished by running the DAG again with the same params
(an already promoted standby is only checked, an env file or record already pointing at it is left alone).
Steps have no retries: the rerun is the retry, after someone read why it failed.

Afterwards the old primary must not come back as a primary: rebuild it as a standby of the new one
(`pg_rewind`, or `pg_standby_provision` into an empty directory), and update `dr.standbys`.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import Param, TriggerRule, chain
from pg_dataops.airflow.approval import ApprovalGateOperator
from pg_dataops.airflow.dag_defaults import standard_dag
from pg_dataops.airflow.forms import APPROVAL_MAX_MINUTES, target_param
from pg_dataops.common.config import load_config
from pg_dataops.dr.operators import (
    FailoverAppStepOperator,
    PromoteStandbyOperator,
    RepointApplicationOperator,
    ReportFailoverOperator,
    UpdateDnsOperator,
    ValidateFailoverOperator,
    VerifyFailoverOperator,
)

CFG = load_config()

with standard_dag(
    "pg_failover",
    description="Promote a target's streaming standby when the primary is lost: checks, approval, promote, repoint",
    schedule=None,
    cfg=CFG,
    dagrun_timeout=dt.timedelta(hours=CFG.rto_objective_hours, minutes=APPROVAL_MAX_MINUTES),
    tags=["dr", "failover", "postgres"],
    doc_md=__doc__,
    task_defaults=dict(retries=0, execution_timeout=dt.timedelta(minutes=30)),
    params={
        **target_param(CFG, "Whose primary is lost: its standby (dr.standbys) becomes the primary."),
        "dry_run": Param(True, type="boolean", title="Dry run",
                         description="On (default): check both servers and show the plan, change nothing. Off: "
                                     "fail over after the approval."),
        "force": Param(False, type="boolean", title="Force (primary still healthy)",
                       description="Fail over although the primary answers: a planned switchover. Without it a "
                                   "healthy primary is refused (two primaries would take writes)."),
        "confirm": Param(None, type=["null", "string"], title="Confirm in advance",
                         description="The standby's name (dr.standbys.<target>.name) approves without waiting "
                                     "(runs from the REST API or airflow dags trigger -c). Empty: approve in the "
                                     "UI (Required Actions). Anything else is refused before any check."),
        "approval_timeout_minutes": Param(CFG.restore.approval_timeout_minutes, type="integer", minimum=1,
                                          maximum=APPROVAL_MAX_MINUTES, title="Approval timeout (minutes)",
                                          description="Nobody approving within this time rejects the failover."),
    },
) as dag:
    validate = ValidateFailoverOperator(task_id="validate", target="{{ params.target }}",
                                        force="{{ params.force }}", dry_run="{{ params.dry_run }}",
                                        confirm="{{ params.confirm or '' }}")
    approve = ApprovalGateOperator(
        task_id="approve_failover", subject="Fail over to the standby?", preview=validate.output,
        requested="{{ not params.dry_run }}", confirm="{{ params.confirm or '' }}",
        approval_timeout_minutes="{{ params.approval_timeout_minutes }}")
    fence = FailoverAppStepOperator(task_id="fence", step="fence", plan=validate.output)
    promote = PromoteStandbyOperator(task_id="promote", plan=validate.output)
    repoint = RepointApplicationOperator(task_id="repoint", plan=validate.output)
    restart = FailoverAppStepOperator(task_id="restart_app", step="app_restart", plan=validate.output)
    dns = UpdateDnsOperator(task_id="update_dns", plan=validate.output)
    verify = VerifyFailoverOperator(task_id="verify", plan=validate.output, promoted=promote.output)
    report = ReportFailoverOperator(
        task_id="report", plan=validate.output, approval=approve,
        steps={"validate": validate, "fence": fence, "promote": promote, "repoint": repoint,
               "restart_app": restart, "dns": dns, "verify": verify})

    chain(validate, approve, fence, promote, repoint, restart, dns, verify, report)
    report.trigger_rule = TriggerRule.ALL_DONE
