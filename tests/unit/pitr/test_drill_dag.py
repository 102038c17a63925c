"""pg_pitr_drill's wiring: the steps in order, the teardown that always runs, the record step that sees every
outcome, the weekly schedule and the optional target_time."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
GROUP = "drill_target"


@pytest.fixture(scope="module")
def dag():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags" / "pg_pitr_drill.py"))
    assert bag.import_errors == {}
    return bag.dags["pg_pitr_drill"]


def task(dag, name):
    return dag.get_task(f"{GROUP}.{name}")


def test_steps_in_order(dag):
    upstream = {name: task(dag, name).upstream_task_ids for name in
                ("plan", "restore_base", "verify_backup", "recover", "check", "teardown", "record_drill")}
    g = f"{GROUP}."
    assert upstream["plan"] == set()
    assert upstream["restore_base"] == {g + "plan"}
    assert upstream["verify_backup"] == {g + "plan", g + "restore_base"}
    assert upstream["recover"] == {g + "plan", g + "verify_backup"}
    assert upstream["check"] == {g + "plan", g + "recover"}
    assert upstream["teardown"] == {g + "plan", g + "check", g + "restore_base"}
    assert upstream["record_drill"] == {g + "teardown"}


def test_teardown_always_runs_and_the_record_sees_every_outcome(dag):
    teardown = task(dag, "teardown")
    assert teardown.is_teardown and teardown.trigger_rule == "all_done"
    assert task(dag, "restore_base").is_setup
    assert task(dag, "record_drill").trigger_rule == "all_done"
    assert task(dag, "record_drill").step_ids == {
        name: f"{GROUP}.{tid}" for name, tid in (("plan", "plan"), ("restore", "restore_base"),
                                                 ("verify", "verify_backup"), ("recover", "recover"),
                                                 ("check", "check"), ("teardown", "teardown"))}


def test_weekly_after_the_restore_drill_and_manual_with_an_optional_target_time(dag):
    assert dag.timetable.expression == "0 6 * * 0"
    assert dag.params["target_time"] is None
    assert dag.params.get_param("target_time").schema["type"] == ["null", "string"]
    assert "pitr" in dag.tags and dag.doc_md
