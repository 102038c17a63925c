"""`fail_run_on_any_failure`: the run's state in the metadata DB says whether any task failed.

Scenario DAGs shaped like ours (setup -> work -> teardown, an ALL_DONE record step, a final notify)
run with `dag.test()` in one Airflow process against a private metadata DB; each scenario's run state
and task states are then read from that DB. The DAG-level callback for a run stopped by
`dagrun_timeout` is called the way the dag-processor calls it (`airflow dags test` never enforces
dagrun_timeout, only the scheduler does), with the real Slack/PagerDuty receiver.
"""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import devstack
import pytest

from .conftest import json_posts

SCENARIO_DAGS = textwrap.dedent('''
    import pendulum
    from airflow.sdk import DAG, TriggerRule, setup, task, teardown
    from airflow.sdk.exceptions import AirflowSkipException
    from pg_dataops.airflow.runstate import fail_run_on_any_failure

    def build(dag_id, fail):
        with DAG(dag_id, schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False) as dag:
            @setup
            def create_db():
                if fail == "setup":
                    raise RuntimeError("setup failed")

            @task
            def work():
                if fail == "work":
                    raise RuntimeError("work failed")

            @teardown
            def drop_db():
                if fail == "teardown":
                    raise RuntimeError("teardown failed")

            @task(trigger_rule=TriggerRule.ALL_DONE)
            def record():
                pass

            @task
            def notify():
                if fail == "skip_leaf":
                    raise AirflowSkipException("nothing to post")

            s, w = create_db(), work()
            s >> w >> drop_db().as_teardown(setups=s)
            w >> record() >> notify()
        fail_run_on_any_failure(dag)
        return dag

    for name in ("none", "work", "setup", "teardown", "skip_leaf"):
        globals()["dag_" + name] = build("runstate_" + name, name)
''')

RUNNER = textwrap.dedent('''
    import runpy, sys
    ns = runpy.run_path(sys.argv[1])
    for dag_id in sys.argv[2:]:
        ns["dag_" + dag_id.removeprefix("runstate_")].test()
''')


@pytest.fixture(scope="module")
def scenario_runs(tmp_path_factory, _migrated_airflow):
    """{dag_id: (run state, {task_id: state})} after one dag.test() of each scenario."""
    import shutil

    home = tmp_path_factory.mktemp("runstate-home")
    shutil.copy(_migrated_airflow / "airflow.db", home / "airflow.db")
    dags = tmp_path_factory.mktemp("runstate-dags")
    dag_file = dags / "runstate_scenarios.py"
    dag_file.write_text(SCENARIO_DAGS)
    env = devstack.airflow_env(home, conns={})
    env["AIRFLOW__CORE__DAGS_FOLDER"] = str(dags)
    dag_ids = [f"runstate_{n}" for n in ("none", "work", "setup", "teardown", "skip_leaf")]
    proc = subprocess.run([sys.executable, "-c", RUNNER, str(dag_file), *dag_ids], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = {}
    with sqlite3.connect(home / "airflow.db") as db:
        for dag_id in dag_ids:
            run_id, state = db.execute("SELECT run_id, state FROM dag_run WHERE dag_id = ?", (dag_id,)).fetchone()
            tasks = dict(db.execute("SELECT task_id, state FROM task_instance WHERE dag_id = ? AND run_id = ?",
                                    (dag_id, run_id)).fetchall())
            out[dag_id] = (state, tasks)
    return out


def test_nothing_failed_is_a_green_run(scenario_runs):
    state, tasks = scenario_runs["runstate_none"]
    assert state == "success"
    assert tasks == {"create_db": "success", "work": "success", "drop_db": "success", "record": "success",
                     "notify": "success", "run_outcome": "skipped"}


def test_a_failed_task_behind_all_done_steps_is_a_red_run(scenario_runs):
    """The issue's case: work failed, the ALL_DONE record ran, notify was skipped: no leaf failed."""
    state, tasks = scenario_runs["runstate_work"]
    assert state == "failed"
    assert tasks == {"create_db": "success", "work": "failed", "drop_db": "success", "record": "success",
                     "notify": "success", "run_outcome": "failed"}


def test_a_failed_setup_is_a_red_run(scenario_runs):
    state, tasks = scenario_runs["runstate_setup"]
    assert state == "failed"
    assert tasks["create_db"] == "failed" and tasks["work"] == "upstream_failed"
    assert tasks["run_outcome"] == "failed"


def test_a_failed_teardown_is_a_red_run(scenario_runs):
    """Airflow ignores a teardown's failure for the run state; run_outcome does not."""
    state, tasks = scenario_runs["runstate_teardown"]
    assert state == "failed"
    assert tasks["drop_db"] == "failed" and tasks["record"] == "success" and tasks["notify"] == "success"
    assert tasks["run_outcome"] == "failed"


def test_a_skipped_leaf_is_still_a_green_run(scenario_runs):
    state, tasks = scenario_runs["runstate_skip_leaf"]
    assert state == "success"
    assert tasks["notify"] == "skipped" and tasks["run_outcome"] == "skipped"


# --- dagrun_timeout ---------------------------------------------------------------------------------


@pytest.fixture
def alert_conns(monkeypatch, receiver):
    for key in list(os.environ):
        if key.startswith("PGBACKUP_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("AIRFLOW_CONN_SLACK_BACKUP", receiver.slack_conn())
    monkeypatch.setenv("AIRFLOW_CONN_PAGERDUTY_BACKUP", receiver.pagerduty_conn())
    receiver.clear()
    return receiver


def pg_backup_dag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(devstack.REPO / "dags" / "pg_backup.py")).dags["pg_backup"]


def test_a_run_stopped_by_dagrun_timeout_alerts_slack_and_pagerduty(alert_conns):
    """The context the dag-processor builds for the scheduler's timed_out callback, with the unfinished
    task it passes as last_ti."""
    dag = pg_backup_dag()
    assert dag.dagrun_timeout == dt.timedelta(hours=6) and dag.on_failure_callback is not None
    ti = SimpleNamespace(task_id="back_up_target.dump", map_index=0, log_url="http://localhost:8080/log")
    dag.on_failure_callback({"dag": dag, "run_id": "scheduled__2026-11-25T02:00:00+09:00", "reason": "timed_out",
                             "ti": ti})

    cause = ("the run exceeded its dagrun_timeout (6:00:00) and was stopped; it was still waiting for task "
             "back_up_target.dump; its unfinished tasks were skipped and wrote no catalog row")
    (slack,) = json_posts(alert_conns, "/slack")
    assert slack["text"].startswith(":red_circle: *Database backup FAILED*")
    assert "task: `back_up_target.dump`" in slack["text"] and cause in slack["text"]
    assert "run: `scheduled__2026-11-25T02:00:00+09:00`" in slack["text"]
    (event,) = json_posts(alert_conns, "/pagerduty")
    assert event["event_action"] == "trigger" and event["routing_key"] == "test-routing-key"
    assert event["dedup_key"] == "pg_backup/scheduled__2026-11-25T02:00:00+09:00"
    assert event["payload"]["summary"] == (
        f"Database backup FAILED: pg_backup.back_up_target.dump in run scheduled__2026-11-25T02:00:00+09:00: {cause}")


def test_the_run_callback_stays_silent_for_task_failures(alert_conns):
    """A failed task alerted already: the DAG-level callback (run by dag.test and the scheduler with
    reason task_failure) must not page a second time. With only dag and run_id (a context without a
    task), a timeout still alerts."""
    dag = pg_backup_dag()
    dag.on_failure_callback({"dag": dag, "run_id": "manual__1", "reason": "task_failure"})
    assert alert_conns.requests == []
    dag.on_failure_callback({"dag": dag, "run_id": "manual__2", "reason": "timed_out"})
    (event,) = json_posts(alert_conns, "/pagerduty")
    assert event["payload"]["summary"] == (
        "Database backup FAILED: pg_backup.(dag run) in run manual__2: the run exceeded its dagrun_timeout "
        "(6:00:00) and was stopped; its unfinished tasks were skipped and wrote no catalog row")
