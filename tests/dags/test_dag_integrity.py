"""Every DAG parses, imports fast, and carries the settings operators rely on."""

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import devstack
import pytest
from pg_dataops.airflow.runstate import OUTCOME_TASK_ID

REPO = Path(__file__).resolve().parents[2]
DAG_FILES = sorted(p for p in (REPO / "dags").glob("*.py") if not p.name.startswith("_"))


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(REPO / "dags"))


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}
    assert "pg_backup" in dagbag.dags


def test_every_dag_has_owner_tags_retries_time_limits_and_docs(dagbag):
    from pg_dataops.common.config import load_config

    cfg = load_config()
    # Tighter than the config's limit: the hourly monitor and the daily report are small jobs.
    own_limits = {"pg_backup_monitor": dt.timedelta(minutes=10), "pg_backup_report": dt.timedelta(minutes=30),
                  "pg_wal_archive_check": dt.timedelta(minutes=10), "pg_failover": dt.timedelta(minutes=30),
                  "pg_replication_check": dt.timedelta(minutes=2)}
    # A failover step is not retried after 5 minutes: someone reads why it failed and runs the DAG again (every
    # step is idempotent).
    own_retries = {"pg_failover": 0}
    assert cfg.retries == 2 and cfg.task_timeout_minutes == 240
    for dag_id, dag in dagbag.dags.items():
        assert dag.tags, dag_id
        assert dag.doc_md, dag_id
        assert dag.max_active_runs == 1, dag_id
        assert dag.dagrun_timeout is not None and dag.dagrun_timeout >= dt.timedelta(minutes=55), dag_id
        for t in dag.tasks:
            if t.task_id == OUTCOME_TASK_ID:
                continue  # its own rules: test_every_failure_makes_the_run_failed
            assert t.owner and t.owner != "airflow", (dag_id, t.task_id)
            assert t.retries == own_retries.get(dag_id, cfg.retries), (dag_id, t.task_id)
            assert t.execution_timeout == own_limits.get(dag_id, dt.timedelta(minutes=cfg.task_timeout_minutes)), (
                dag_id, t.task_id)
            assert [type(c).__name__ for c in t.on_failure_callback] == [
                "BackupFailureSlackNotifier", "BackupPagerdutyNotifier"], (dag_id, t.task_id)


def test_every_failure_makes_the_run_failed(dagbag):
    """run_outcome (ONE_FAILED, no retries, no alert of its own) is downstream of every task but setups
    (a failed setup fails its work tasks, which run_outcome sees), and the DAG-level failure callback
    alerts runs stopped by dagrun_timeout."""
    from pg_dataops.airflow.notifiers import alert_run_failure

    for dag_id, dag in dagbag.dags.items():
        outcome = dag.get_task(OUTCOME_TASK_ID)
        assert outcome.trigger_rule == "one_failed" and outcome.retries == 0, dag_id
        assert not outcome.on_failure_callback and not outcome.downstream_task_ids, dag_id
        assert outcome.upstream_task_ids == {t.task_id for t in dag.tasks
                                             if t.task_id != OUTCOME_TASK_ID and not t.is_setup}, dag_id
        setups = [t for t in dag.tasks if t.is_setup]
        for setup in setups:  # every setup's failure reaches run_outcome through a work task
            assert any(not d.is_teardown for d in setup.downstream_list), (dag_id, setup.task_id)
        assert dag.on_failure_callback is alert_run_failure and dag.has_on_failure_callback, dag_id
    assert dagbag.dags["pg_backup"].get_task("back_up_target.drop_verify_db").task_id in (
        dagbag.dags["pg_backup"].get_task(OUTCOME_TASK_ID).upstream_task_ids)


def test_pg_backup_shape(dagbag):
    dag = dagbag.dags["pg_backup"]
    assert dag.timezone.name == "Asia/Seoul"
    assert dag.timetable.expression == "0 2 * * *"
    assert dag.catchup is False
    ids = [t.task_id for t in dag.topological_sort()]
    assert ids == [f"back_up_target.{n}" for n in (
        "dump", "checksum", "upload", "create_verify_db", "verify", "drop_verify_db", "manifest", "record", "notify"
    )] + ["retention", OUTCOME_TASK_ID]
    assert dag.get_task("retention").dry_run is False
    assert dag.get_task("back_up_target.drop_verify_db").is_teardown
    assert dag.get_task("back_up_target.create_verify_db").is_setup
    assert dag.get_task("back_up_target.manifest").trigger_rule == "all_done"
    dump = dag.get_task("back_up_target.dump")
    assert dump.retries == 2 and dump.retry_exponential_backoff
    assert dag.get_task("back_up_target.record").trigger_rule == "all_done"
    assert dag.params["tier"] == "auto"


# What parsing a DAG file must not pull in: each costs 0.1-0.5 s per parse, and the dag-processor parses
# every file every few minutes. They are imported when a task runs. `make bench` times each file.
HEAVY_AT_PARSE = ("psycopg", "boto3", "botocore", "airflow.providers.slack", "airflow.providers.pagerduty",
                  "airflow.providers.amazon", "aiohttp", "requests", "slack_sdk")
# Issue 12 asks pg_rds_snapshot for the amazon provider's RDS operators and sensor, which the DAG file must
# instantiate; importing them loads boto3 (about 0.1 s). Only that file, only those packages.
PROVIDER_OPERATORS_AT_PARSE = {"pg_rds_snapshot.py": ("airflow.providers.amazon", "boto3", "botocore", "requests")}


@pytest.mark.parametrize("dag_file", DAG_FILES, ids=lambda p: p.name)
def test_dag_file_parses_without_heavy_imports(dag_file):
    """A fresh interpreter imports airflow.sdk, then the DAG file: none of HEAVY_AT_PARSE may be loaded by it."""
    code = (
        "import json, runpy, sys, airflow.sdk\n"
        "before = set(sys.modules)\n"
        f"runpy.run_path({str(dag_file)!r})\n"
        "print(json.dumps(sorted(set(sys.modules) - before)))\n"
    )
    env = devstack.airflow_env("/tmp/unused-airflow-home", conns={})
    env["PYTHONPATH"] = str(REPO / "plugins")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert any(m.startswith("pg_dataops.") for m in loaded), loaded  # the probe sees the file's own imports
    allowed = PROVIDER_OPERATORS_AT_PARSE.get(dag_file.name, ())
    heavy = sorted(m for m in loaded if (m.split(".")[0] in HEAVY_AT_PARSE or m.startswith(HEAVY_AT_PARSE))
                   and not (m.split(".")[0] in allowed or m.startswith(allowed)))
    assert heavy == [], f"{dag_file.name} imports {heavy[:8]} at parse time"


def test_invalid_config_fails_parsing_with_the_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text((REPO / "include/config/pgbackup.yaml").read_text().replace("dump_format: custom", "dump_format: zip"))
    from airflow.dag_processing.dagbag import DagBag

    old = os.environ.get("PGBACKUP_CONFIG")
    os.environ["PGBACKUP_CONFIG"] = str(bad)
    try:
        bag = DagBag(dag_folder=str(REPO / "dags" / "pg_backup.py"))
    finally:
        if old is None:
            del os.environ["PGBACKUP_CONFIG"]
        else:
            os.environ["PGBACKUP_CONFIG"] = old
    errors = list(bag.import_errors.values())
    assert len(errors) == 1 and "dump_format: 'zip' is not one of custom, directory, plain" in errors[0]


def test_schedules_and_manual_dags(dagbag):
    sched = {dag_id: getattr(dag.timetable, "expression", None) for dag_id, dag in dagbag.dags.items()}
    assert sched == {
        "pg_backup": "0 2 * * *",
        "pg_restore_drill": "0 5 * * 0",
        "pg_backup_monitor": "0 * * * *",
        "pg_backup_report": "0 9 * * *",
        "pg_backup_retention": None,
        "pg_backup_catalog_rebuild": None,
        "pg_base_backup": "30 3 * * *",
        "pg_wal_archive_check": "5 * * * *",
        "pg_pitr_restore": None,
        "pg_pitr_drill": "0 6 * * 0",
        "pg_full_recovery": None,
        "pg_recovery_rehearsal": "0 4 1 * *",
        "pg_table_restore": None,
        "pg_user_data_restore": None,
        "pg_rds_snapshot": None,  # dr.rds_instance_id is null by default: not on RDS
        "pg_failover": None,  # manual only, never on a schedule
        "pg_standby_provision": None,  # manual only: builds a standby on request
        "pg_replication_check": None,  # no dr.standbys by default: nothing to check
    }
    retention = dagbag.dags["pg_backup_retention"]
    assert retention.params["dry_run"] is True and retention.params["max_delete_fraction"] is None
    base = dagbag.dags["pg_base_backup"]
    assert base.params["dry_run_retention"] is False
    assert base.get_task("base_backup_target.record_base_backup").trigger_rule == "all_done"
    assert base.get_task("base_backup_target.prune_pitr").upstream_task_ids == {
        "base_backup_target.base_backup", "base_backup_target.record_base_backup"}
    drill = dagbag.dags["pg_restore_drill"]
    assert drill.get_task("drill_target.drop_drill_db").is_teardown
    assert drill.get_task("drill_target.record_drill").trigger_rule == "all_done"
