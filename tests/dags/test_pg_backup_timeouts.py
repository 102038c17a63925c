"""Time limits, through real pg_backup runs: a table locked by another session fails the backup after
`lock_wait_timeout_seconds` (not after dagrun_timeout), names the table in the alerts and the catalog,
and leaves the DAG run failed."""

from __future__ import annotations

import time

import devstack
import psycopg
import pytest

from .conftest import catalog_rows, files_under, json_posts
from .test_pg_backup_failures import assert_alerted, assert_no_s3_leftovers, assert_recorded_failed

pytestmark = pytest.mark.dagrun


@pytest.fixture
def users_locked(cluster):
    """Another session holding ACCESS EXCLUSIVE on glimpse's public.users for the whole test."""
    pg = psycopg.connect(host="127.0.0.1", port=cluster.port, user="postgres", password=cluster.password,
                         dbname="glimpse", application_name="test_lock_holder")
    pg.execute("LOCK TABLE public.users IN ACCESS EXCLUSIVE MODE")  # psycopg opened a transaction: held
    try:
        yield pg
    finally:
        pg.rollback()
        pg.close()


def test_locked_table_fails_the_backup_after_the_lock_wait(run_pg_backup, cluster, s3, bucket, receiver,
                                                             users_locked):
    started = time.monotonic()
    run = run_pg_backup(bucket=bucket, env={"PGBACKUP_LOCK_WAIT_TIMEOUT_SECONDS": "5"}, timeout=180)
    elapsed = time.monotonic() - started

    # The run is red in the metadata DB; only the dump failed, the ALL_DONE record step ran, nothing
    # was pruned, and the final run_outcome task is what turned the run red.
    assert run.state == "failed", run.output[-3000:]
    states = run.task_states
    assert states["back_up_target.dump[0]"] == "failed"
    assert states["back_up_target.record[0]"] == "success"
    assert states["back_up_target.notify[0]"] == "skipped"
    assert states["retention"] == "skipped"  # behind the skipped notify: nothing pruned
    assert states["run_outcome"] == "failed"
    # It waited for the lock (5 s), then failed at once: the whole `airflow dags test` (about 15 s of it
    # start-up and the other tasks) is well under a minute, not the 6 h dagrun_timeout.
    dump_seconds = run.task_instances["back_up_target.dump[0]"]["duration"]
    assert 5 <= dump_seconds < 20, dump_seconds
    assert elapsed < 60, elapsed

    cause = "pg_dump could not lock table public.users within lock_wait_timeout_seconds (5 s)"
    assert_alerted(run, receiver, cause, "dump")  # exactly one Slack post and one PagerDuty event
    (event,) = json_posts(receiver, "/pagerduty")
    assert "LOCK TABLE public.users IN ACCESS SHARE MODE" in event["payload"]["summary"]
    assert_recorded_failed(cluster, cause, "dump")
    (row,) = catalog_rows(cluster)
    assert row["error_message"].startswith(f"back_up_target.dump: {cause}: another session holds a conflicting lock")
    assert row["run_id"] == run.run_id
    assert files_under(run.local_root) == []
    assert_no_s3_leftovers(s3, bucket)


def test_task_timeout_fails_the_dump_naming_what_it_waited_for(run_pg_backup, cluster, s3, bucket, receiver,
                                                                users_locked):
    """pg_dump waits for the lock (lock_wait_timeout_seconds 600) longer than the task may run (1 min):
    the task's execution_timeout stops it, kills pg_dump, and says what it was waiting for."""
    run = run_pg_backup(bucket=bucket, env={"PGBACKUP_TASK_TIMEOUT_MINUTES": "1"}, timeout=240)

    assert run.state == "failed", run.output[-3000:]
    states = run.task_states
    assert states["back_up_target.dump[0]"] == "failed" and states["back_up_target.record[0]"] == "success"
    assert states["run_outcome"] == "failed"
    dump_seconds = run.task_instances["back_up_target.dump[0]"]["duration"]
    assert 60 <= dump_seconds < 90, dump_seconds

    cause = ("timed out after 1 min waiting for pg_dump of database 'glimpse' (target glimpse) "
             "(execution_timeout: config task_timeout_minutes)")
    assert_alerted(run, receiver, cause, "dump")
    assert json_posts(receiver, "/slack")[0]["text"].count("AirflowTaskTimeout") == 1
    assert_recorded_failed(cluster, cause, "dump")
    assert catalog_rows(cluster)[0]["error_message"] == f"back_up_target.dump: {cause}"
    # pg_dump was killed with the task, and its server session, queued for the lock, ends too (the
    # server checks for a gone client every 5 s) instead of waiting out the 600 s lock wait.
    with psycopg.connect(host="127.0.0.1", port=cluster.port, user="postgres", password=cluster.password,
                         dbname="postgres", autocommit=True) as pg:
        def lock_waiters() -> int:
            return pg.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pg_dataops'"
                              " AND wait_event_type = 'Lock'").fetchone()[0]

        assert devstack.wait_for(lambda: lock_waiters() == 0, timeout=15), lock_waiters()
    assert files_under(run.local_root) == []
    assert_no_s3_leftovers(s3, bucket)
