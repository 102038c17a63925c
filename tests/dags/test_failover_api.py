"""The failover drill the Airflow way, end to end: a real Airflow (api-server, scheduler, dag-processor) whose
`glimpse_db` connection lives in its metadata DB, a primary and a streaming standby built by the provisioning
code. The primary is killed (SIGKILL); pg_failover, triggered through the REST API without `confirm`, waits in
Required Actions with the plan (primary down, what the standby has) as the approval's body; the approval is
answered through the REST API (what the UI's Approve button calls); the standby is promoted and the Airflow
connection now points at it, through Airflow's own REST API. pg_backup, triggered next with nothing else
changed, backs up the new primary: its dump holds a row written there after the failover."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import devstack
import psycopg
import pytest
import yaml

from tests.support.dr import kill_primary, query, streaming_pair, wait_caught_up
from tests.support.hitl import Run

pytestmark = pytest.mark.dagrun

REPO = Path(__file__).resolve().parents[2]
STANDBY = "glimpse-standby"


@pytest.fixture
def pair():
    with streaming_pair("glimpse_standby", demo_users=200) as servers:
        yield servers


def catalog_row(cluster, table: str, run_id: str) -> dict | None:
    with psycopg.connect(host="127.0.0.1", port=cluster.port, user="postgres", password=cluster.password,
                         dbname="catalog", row_factory=psycopg.rows.dict_row) as pg:
        if not pg.execute("SELECT to_regclass(%s) IS NOT NULL AS e", (f"public.{table}",)).fetchone()["e"]:
            return None
        return pg.execute(f"SELECT * FROM {table} WHERE run_id = %s ORDER BY id DESC LIMIT 1", (run_id,)).fetchone()


def test_failover_approved_in_required_actions_then_backups_follow(dag_env, cluster, bucket, tmp_path, pair,
                                                                  measured):
    primary, standby = pair
    port = devstack.free_port()
    raw = yaml.safe_load((REPO / "include" / "config" / "pgbackup.yaml").read_text())
    raw["dr"]["standbys"] = {"glimpse": {"name": STANDBY, "conn_id": "glimpse_standby_db", "slot": "glimpse_standby"}}
    raw["dr"]["failover"]["airflow_api_conn_id"] = "airflow_api"
    config = tmp_path / "pgbackup.yaml"
    config.write_text(yaml.safe_dump(raw))
    local_root = tmp_path / "backups"
    env = dag_env(bucket=bucket, local_root=local_root, env={"PGBACKUP_CONFIG": str(config)}, conns={
        "glimpse_db": None,  # in the metadata DB (below): only such a connection can be changed through the API
        "glimpse_standby_db": standby.airflow_conn("glimpse"),
        "airflow_api": json.dumps({"conn_type": "http", "host": f"http://127.0.0.1:{port}", "login": "admin",
                                   "password": "admin"})})
    airflow = devstack.AirflowServices(env, port=port)
    try:
        airflow.start()
        airflow.api("POST", "connections", {"connection_id": "glimpse_db", "conn_type": "postgres",
                                            "host": "127.0.0.1", "port": primary.port, "login": "postgres",
                                            "password": primary.password, "schema": "glimpse"})
        airflow.wait_for_dag("pg_failover")
        query(primary, "CREATE TABLE failover_marker (id int PRIMARY KEY, note text NOT NULL)", dbname="glimpse")
        query(primary, "INSERT INTO failover_marker SELECT g, 'before ' || g FROM generate_series(1, 1000) g",
              dbname="glimpse")
        wait_caught_up(primary, standby)
        kill_primary(primary)

        started = time.monotonic()
        run = Run(airflow, airflow.trigger("pg_failover", {"dry_run": False}), dag_id="pg_failover",
                  gate="approve_failover")
        run.wait_awaiting_input()
        assert standby.in_recovery() and run.task_state("promote") in (None, "none", "scheduled")
        pending = run.pending_approval()
        assert pending["subject"] == "Fail over to the standby?"
        body = pending["body"]
        assert f"* **Primary** 127.0.0.1:{primary.port}: **down**" in body, body
        assert f"* **Standby** 127.0.0.1:{standby.port}: in recovery, received " in body, body
        assert "* **Data lost by failing over now**: **unknown**: the primary does not answer" in body, body
        run.answer("Approve")
        assert run.wait_end() == "success", run.explain()
        approved = time.monotonic()
        assert not standby.in_recovery()
        conn = airflow.api("GET", "connections/glimpse_db")
        assert (conn["host"], conn["port"], conn["login"]) == ("127.0.0.1", standby.port, "postgres"), conn
        row = catalog_row(cluster, "failovers", run.run_id)
        assert row["status"] == "SUCCESS" and row["approved_by"] == "admin", row
        assert row["results"]["repoint"]["airflow_connection"]["changed"] is True
        vias = [w["via"] for w in row["results"]["verify"]["writes"]]
        assert vias[-1] == f"the Airflow connection glimpse_db (127.0.0.1:{standby.port})", vias

        # --- every DAG follows: the next backup is of the new primary ---------------------------------------
        standby.query("INSERT INTO failover_marker VALUES (1001, 'written on the new primary')", dbname="glimpse")
        airflow.wait_for_dag("pg_backup")
        backup = Run(airflow, airflow.trigger("pg_backup"), dag_id="pg_backup", gate="")
        assert backup.wait_end() == "success", backup.explain()
        logged = catalog_row(cluster, "backup_logs", backup.run_id)
        assert logged["status"] == "SUCCESS", logged
        dumps = sorted(local_root.rglob("*.dump"))  # the day's tiers (daily, and monthly on the 1st)
        assert dumps
        for dump in dumps:
            text = subprocess.run([str(devstack.PG_BIN / "pg_restore"), "--data-only", "--table", "failover_marker",
                                   "--file", "-", str(dump)], capture_output=True, text=True, check=True).stdout
            assert "1001\twritten on the new primary" in text and "1000\tbefore 1000" in text, dump
        measured(f"pg_failover drill (real scheduler): the run with its approval {approved - started:.0f} s; failover time in the catalog "
              f"{float(row['failover_seconds']):.1f} s (trigger to writable, including the wait for the approval); "
              f"backup of the new primary {time.monotonic() - approved:.0f} s")
    finally:
        airflow.stop()
