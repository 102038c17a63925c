"""A pg_backup run stopped by `dagrun_timeout` alerts, through the real scheduler path.

`airflow dags test` never enforces dagrun_timeout, so this starts a real Airflow (api-server, scheduler,
dag-processor; LocalExecutor on the test's SQLite metadata DB) with pg_backup's dagrun_timeout at one
minute and its lock wait at ten, while another session holds public.users ACCESS EXCLUSIVE: the dump
waits, the scheduler fails the run and skips its unfinished tasks, and the dag-processor runs the DAG-level
failure callback, which must page exactly once.
"""

from __future__ import annotations

import sqlite3
import time

import devstack
import psycopg
import pytest

from .conftest import catalog_rows, json_posts

pytestmark = pytest.mark.dagrun

RUN_FAILS_WITHIN = 240  # s from the trigger: the 1 min timeout plus scheduling on a loaded machine


def run_row(home, dag_id: str, run_id: str) -> tuple[str | None, dict[str, str | None]]:
    """(the run's state, {"task_id" or "task_id[map_index]": state}) from the metadata DB."""
    with sqlite3.connect(f"file:{home / 'airflow.db'}?mode=ro", uri=True) as con:
        row = con.execute("SELECT state FROM dag_run WHERE dag_id = ? AND run_id = ?", (dag_id, run_id)).fetchone()
        tis = con.execute("SELECT task_id, map_index, state FROM task_instance WHERE dag_id = ? AND run_id = ?",
                          (dag_id, run_id)).fetchall()
    return (row[0] if row else None,
            {t + (f"[{i}]" if i >= 0 else ""): s for t, i, s in tis})


def run_ids(home, dag_id: str) -> list[str]:
    with sqlite3.connect(f"file:{home / 'airflow.db'}?mode=ro", uri=True) as con:
        return [r for (r,) in con.execute("SELECT run_id FROM dag_run WHERE dag_id = ? ORDER BY id", (dag_id,))]


def lock_waiters(cluster) -> int:
    with psycopg.connect(host="127.0.0.1", port=cluster.port, user="postgres", password=cluster.password,
                         dbname="postgres", autocommit=True) as pg:
        return pg.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pg_dataops'"
                          " AND wait_event_type = 'Lock'").fetchone()[0]


def test_a_run_killed_by_dagrun_timeout_pages_once(dag_env, airflow_home, cluster, bucket, receiver, tmp_path):
    cluster.psql("-c", "DROP TABLE IF EXISTS backup_logs CASCADE", dbname="catalog")
    receiver.clear()
    env = dag_env(bucket=bucket, env={
        "PGBACKUP_DAGRUN_TIMEOUT_MINUTES": "1",
        "PGBACKUP_LOCK_WAIT_TIMEOUT_SECONDS": "600",  # the dump outwaits the run's time limit
        # Feb 29: no scheduled run is due when the DAG is unpaused (catchup=False would start one for
        # the latest 02:00), so the only run is the one triggered below.
        "PGBACKUP_SCHEDULE": "0 2 29 2 *",
    })
    started = time.monotonic()
    locker = psycopg.connect(host="127.0.0.1", port=cluster.port, user="postgres", password=cluster.password,
                             dbname="glimpse", application_name="test_lock_holder")
    airflow = devstack.AirflowServices(env)
    try:
        locker.execute("LOCK TABLE public.users IN ACCESS EXCLUSIVE MODE")  # held: psycopg opened a transaction
        airflow.start()
        dag = airflow.wait_for_dag("pg_backup")
        assert dag["is_paused"] is True  # nothing ran before the trigger
        up = time.monotonic()
        run_id = airflow.trigger("pg_backup")
        triggered = time.monotonic()

        def finished() -> bool:
            airflow.check_running()
            return run_row(airflow_home, "pg_backup", run_id)[0] in ("failed", "success")

        assert devstack.wait_for(finished, timeout=RUN_FAILS_WITHIN, interval=1), run_row(
            airflow_home, "pg_backup", run_id)
        ended = time.monotonic()
        state, tasks = run_row(airflow_home, "pg_backup", run_id)
        # Failed by the timeout, not by a task: the dump was still waiting for the lock and was skipped,
        # as was everything after it (record included, so no catalog row), and no task failed.
        assert state == "failed", tasks
        assert run_ids(airflow_home, "pg_backup") == [run_id]  # the triggered run was the only one
        assert tasks["back_up_target.dump[0]"] == "skipped", tasks
        assert tasks["back_up_target.record[0]"] == "skipped" and tasks["run_outcome"] == "skipped", tasks
        assert "failed" not in tasks.values(), tasks

        # The dag-processor runs the callback after the scheduler failed the run; the killed dump task
        # must not page as well: wait until both alerts are in and no task process is left, then count.
        assert devstack.wait_for(lambda: receiver.posts("/slack") and receiver.posts("/pagerduty"), timeout=90,
                                 interval=0.5), receiver.requests
        assert devstack.wait_for(lambda: not airflow.task_processes(), timeout=60, interval=0.5)
        alerted = time.monotonic()

        cause = ("the run exceeded its dagrun_timeout (0:01:00) and was stopped; it was still waiting for task "
                 "back_up_target.dump; its unfinished tasks were skipped and wrote no catalog row")
        (slack,) = json_posts(receiver, "/slack")
        text = slack["text"]
        assert text.startswith(":red_circle: *Database backup FAILED*"), text
        assert "DAG: `pg_backup`  task: `back_up_target.dump`" in text, text
        assert f"run: `{run_id}`" in text and run_id.startswith("manual__"), text
        assert f"error: {cause}" in text, text
        assert f"log: {airflow.url}/dags/pg_backup/runs/" in text, text  # the waiting task's log in this Airflow
        (event,) = json_posts(receiver, "/pagerduty")
        assert event["event_action"] == "trigger" and event["routing_key"] == "test-routing-key"
        assert event["dedup_key"] == f"pg_backup/{run_id}"
        assert event["payload"]["summary"] == (
            f"Database backup FAILED: pg_backup.back_up_target.dump in run {run_id}: {cause}")
        assert len(receiver.requests) == 2, receiver.requests
        assert catalog_rows(cluster) == []
        # The killed pg_dump's server session is not left queued for the lock (checked every 5 s).
        assert devstack.wait_for(lambda: lock_waiters(cluster) == 0, timeout=15), lock_waiters(cluster)
        print(f"\n[timing] airflow up {up - started:.0f} s, trigger -> run failed {ended - triggered:.0f} s, "
              f"-> alerts and no task left {alerted - ended:.0f} s")
    finally:
        locker.close()  # rolls back: the lock is released
        airflow.stop()
