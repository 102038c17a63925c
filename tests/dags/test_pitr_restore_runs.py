"""pg_pitr_restore end to end with `airflow dags test`: a bad DELETE and UPDATE undone to the second before them.

Rows are written, the moment noted with every table's digest, the damage committed and archived; the DAG,
triggered with conf like the form, recovers to the moment from S3 alone (base backup + WAL through the real
Barman tools), copies into glimpse_recovery, and swaps it in (approved in advance by ``confirm``): every
table of the database now called glimpse equals the state at the moment, the damaged one is kept under its
new name, the Slack report carries the commands, the catalog has the row, the scratch copy is gone.
A target after the archived WAL is refused by validate: a red run, nothing created.
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
from pathlib import Path

import psycopg
import pytest
from pg_dataops.pitr.basebackup import take_base_backup

from tests.support.pg import table_digests
from tests.support.pitr import TARGET, archiving_cluster, pitr_config, pitr_env, switch_and_wait
from tests.support.pitr_recover import damage, databases, note_moment, server_now, write_rows

from .conftest import json_posts

pytestmark = pytest.mark.dagrun


@pytest.fixture(scope="module")
def archived(s3, tmp_path_factory):
    """A bucket, a cluster archiving to it (autovacuum off: the only commits are the test's) and a base backup."""
    bucket = f"pr-{uuid.uuid4().hex[:12]}"
    s3.client().create_bucket(Bucket=bucket)
    root = tmp_path_factory.mktemp("pitr_restore")
    cluster = archiving_cluster(s3, bucket, archive_timeout=60, users=300, settings={"autovacuum": "off"})
    try:
        take_base_backup(pitr_config(bucket), TARGET, cluster.conn("glimpse"), s3.client(), recipients=(),
                         spool_dir=str(root / "spool"))
        yield {"cluster": cluster, "bucket": bucket, "scratch": root / "scratch"}
    finally:
        cluster.stop()


def run_restore(run_dag, archived, conf):
    return run_dag("pg_pitr_restore", bucket=archived["bucket"],
                   conns={"glimpse_db": archived["cluster"].airflow_conn("glimpse")},
                   env=pitr_env(archived["bucket"], PGBACKUP_PITR_SCRATCH_ROOT=str(archived["scratch"])), conf=conf)


def recoveries(cluster, run_id):
    with psycopg.connect(host="127.0.0.1", port=cluster.port, user="postgres", password=cluster.password,
                         dbname="catalog", row_factory=psycopg.rows.dict_row) as pg:
        if not pg.execute("SELECT to_regclass('public.pitr_recoveries') IS NOT NULL AS e").fetchone()["e"]:
            return []
        return pg.execute("SELECT * FROM pitr_recoveries WHERE run_id = %s ORDER BY id", (run_id,)).fetchall()


def scratch_left(archived) -> list[str]:
    root = archived["scratch"]
    return sorted(os.listdir(root)) if root.exists() else []


def test_the_dag_releases_the_scratch_copy_before_the_approval_and_always():
    """Shape: manual, the form's params, the gate directly before the swap only, teardown and report ALL_DONE."""
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(dag_folder=str(Path(__file__).resolve().parents[2] / "dags" / "pg_pitr_restore.py")).dags[
        "pg_pitr_restore"]
    assert type(dag.timetable).__name__ == "NullTimetable"  # manual only
    assert [t.task_id for t in dag.topological_sort()][:5] == ["validate", "restore_base", "recover", "check",
                                                               "copy_to_target"]
    assert set(dag.params.keys()) == {"target_time", "base_backup", "target_action", "database_name", "swap",
                                      "confirm", "approval_timeout_minutes", "target"}
    assert dag.params["swap"] is False and dag.params["database_name"] == "glimpse_recovery"
    assert "validate task's log" in dag.params.get_param("target_time").description
    gate, teardown, report = dag.get_task("approve_swap"), dag.get_task("teardown"), dag.get_task("report")
    assert gate.downstream_task_ids == {"swap", "run_outcome"} and gate.upstream_task_ids == {"copy_to_target"}
    assert teardown.is_teardown and teardown.trigger_rule == "all_done"
    assert teardown.upstream_task_ids == {"validate", "restore_base", "copy_to_target"}  # not the approval
    assert dag.get_task("restore_base").is_setup
    assert report.trigger_rule == "all_done" and {"swap", "teardown"} <= report.upstream_task_ids


def test_recovers_to_the_moment_and_swaps_with_confirm(run_dag, archived, cluster, receiver):
    c = archived["cluster"]
    write_rows(c, "dagrun")
    moment, at_moment = note_moment(c)
    damage(c)
    damaged = table_digests(c, "glimpse")
    switch_and_wait(c)
    before = databases(c)

    run = run_restore(run_dag, archived, {"target_time": moment.isoformat(), "swap": True, "confirm": "glimpse"})
    assert run.state == "success", run.output[-4000:]
    assert run.task_states == {**{t: "success" for t in ("validate", "restore_base", "recover", "check",
                                                        "copy_to_target", "approve_swap", "swap", "carry_catalog", "teardown",
                                                        "report")}, "run_outcome": "skipped"}
    assert "recoverable window of glimpse: " in run.output  # validate's first line

    # The database called glimpse is the recovered copy: every table as it was at the moment.
    assert table_digests(c, "glimpse") == at_moment
    kept = sorted(databases(c) - before)
    assert len(kept) == 1 and kept[0].startswith("glimpse_before_pitr_"), kept
    assert table_digests(c, kept[0]) == damaged
    assert "glimpse_recovery" not in databases(c)

    rows = recoveries(cluster, run.run_id)
    assert len(rows) == 1, rows
    r = rows[0]
    assert (r["kind"], r["target"], r["status"], r["error_message"]) == ("restore", "glimpse", "SUCCESS", None)
    assert (r["recovered_database"], r["swapped"], r["old_database"], r["approved_by"]) == (
        "glimpse_recovery", True, kept[0], "confirm param")
    assert r["target_time"] == moment.replace(microsecond=moment.microsecond) and r["reached_time"] <= moment
    assert r["stop_message"].startswith("recovery stopping before commit of transaction")
    assert r["total_seconds"] == r["restore_seconds"] + r["replay_seconds"] + r["check_seconds"] + r["copy_seconds"]
    assert r["base_backup_id"].startswith("glimpse_base_") and r["rto_objective_seconds"] == 4 * 3600

    slack = [p["text"] for p in json_posts(receiver, "/slack")]
    assert len(slack) == 1, slack
    text = slack[0]
    assert text.startswith(":white_check_mark: Point-in-time recovery of glimpse to ")
    assert (f"Swapped (swap approved by confirm param): glimpse is now the recovered copy; the previous database is "
            f"kept as {kept[0]}.") in text
    assert f'ALTER DATABASE "glimpse" RENAME TO "{kept[0]}";' in text  # what it did
    assert f'ALTER DATABASE "{kept[0]}" RENAME TO "glimpse";' in text  # the way back
    assert receiver.posts("/pagerduty") == []
    assert scratch_left(archived) == []

    # Put production back the way the report says (the rollback), for the next test.
    with psycopg.connect(host="127.0.0.1", port=c.port, user="postgres", password=c.password, dbname="postgres",
                         autocommit=True) as pg:
        pg.execute(f'ALTER DATABASE "glimpse" RENAME TO "glimpse_recovered_{uuid.uuid4().hex[:6]}"')
        pg.execute(f'ALTER DATABASE "{kept[0]}" RENAME TO "glimpse"')


def test_a_target_after_the_archive_is_refused_before_anything(run_dag, archived, cluster, receiver):
    c = archived["cluster"]
    before = databases(c)
    late = server_now(c) + dt.timedelta(hours=1)
    run = run_restore(run_dag, archived, {"target_time": late.isoformat()})
    assert run.state == "failed"
    states = run.task_states
    assert states["validate"] == "failed" and states["run_outcome"] == "failed"
    assert {states[t] for t in ("restore_base", "recover", "check", "copy_to_target")} == {"upstream_failed"}
    assert states["report"] == "success" and states["teardown"] in ("skipped", "success")
    assert databases(c) == before and scratch_left(archived) == []

    rows = recoveries(cluster, run.run_id)
    assert len(rows) == 1 and rows[0]["status"] == "REFUSED" and rows[0]["base_backup_id"] is None
    assert "is after the recoverable window glimpse: " in rows[0]["error_message"]
    texts = [p["text"] for p in json_posts(receiver, "/slack")]
    report = [t for t in texts if t.startswith(":x: Point-in-time recovery of glimpse")]
    assert len(report) == 1 and report[0].startswith(f":x: Point-in-time recovery of glimpse to {late.isoformat()} "
                                                     "refused before anything started: validate: target_time ")
    assert "is after the recoverable window glimpse: " in report[0]  # the window, named
    assert report[0].endswith("Nothing of glimpse was changed; no scratch copy was made.")
