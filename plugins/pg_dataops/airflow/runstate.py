"""A DAG run is ``failed`` when any of its tasks failed: the final ``run_outcome`` task.

Airflow fails a run only when a *leaf* task failed. Our DAGs end in ALL_DONE steps (record, manifest)
and teardowns (drop the scratch database) that finish fine after an earlier failure, so a failed
backup would leave a green run. ``fail_run_on_any_failure(dag)`` adds one task downstream of every
other task, with trigger rule ONE_FAILED: skipped (run green) when nothing failed, else it fails and
names what failed, which makes the run red. It has no failure callback and no retries: the failed
task already alerted, once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow.sdk import BaseOperator, TriggerRule
from airflow.sdk.exceptions import AirflowFailException

from pg_dataops.airflow.notifiers import alert_run_failure

if TYPE_CHECKING:
    from airflow.sdk import DAG, Context

OUTCOME_TASK_ID = "run_outcome"


class RunOutcomeOperator(BaseOperator):
    """Fails (so the run is red) because an upstream task failed; never alerts itself."""

    ui_color = "#f4cccc"

    def __init__(self, **kwargs):
        kwargs.update(trigger_rule=TriggerRule.ONE_FAILED, retries=0, on_failure_callback=None,
                      on_retry_callback=None, on_success_callback=None)
        super().__init__(**kwargs)

    def execute(self, context: Context) -> None:
        failed = failed_tasks(context)
        what = ", ".join(failed) if failed else "an upstream task (see the grid)"
        raise AirflowFailException(f"this run failed: {what} failed (alerted by the failed task itself)")


def failed_tasks(context: Context) -> list[str]:
    """'task_id' or 'task_id[map_index]' of every task of this run that failed so far (not upstream_failed:
    those only follow from a failure listed here)."""
    ti = context["ti"]
    try:
        crumbs = list(ti.get_task_breadcrumbs(dag_id=ti.dag_id, run_id=ti.run_id))
    except Exception:  # the names only make the message better; the run fails either way
        return []
    names = []
    for c in crumbs:
        if c.get("state") == "failed" and c.get("task_id") != ti.task_id:
            index = c.get("map_index")
            names.append(c["task_id"] + (f"[{index}]" if index is not None and index >= 0 else ""))
    return sorted(names)


def fail_run_on_any_failure(dag: DAG) -> RunOutcomeOperator:
    """Call it last in the DAG file: adds ``run_outcome`` downstream of every task of ``dag``, and the
    DAG-level failure callback that alerts a run stopped by ``dagrun_timeout`` (its unfinished tasks are
    skipped by the scheduler, so no task alerts it)."""
    if not dag.on_failure_callback:
        dag.on_failure_callback = alert_run_failure
        dag.has_on_failure_callback = True
    # Not setups (Airflow requires ALL_SUCCESS after a setup): a failed setup fails its work tasks
    # (upstream_failed), which ONE_FAILED counts too.
    others = [t for t in dag.tasks if t.task_id != OUTCOME_TASK_ID and not t.is_setup]
    outcome = RunOutcomeOperator(task_id=OUTCOME_TASK_ID, dag=dag)
    for task in others:
        task >> outcome
    return outcome
