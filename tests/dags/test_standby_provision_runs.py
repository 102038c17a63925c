"""pg_standby_provision end to end with `airflow dags test` (two runs) against a fresh primary of its own.

(1) The configured standby is built: the run is green, the new server is in recovery and streams through its
slot (a row written on the primary appears on it), its postgresql.auto.conf has the WAL archive fallback
(restore_command) and its environment the S3 credentials that command needs, and Slack says where it is.
(2) A non-empty data directory given in the form is refused by validate: the run is red, nothing was created
(no slot on the primary, the directory as it was), PagerDuty is paged.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import devstack
import psycopg
import pytest
import yaml
from pg_dataops.common.localpg import postmaster_pid, stop_server

from tests.support.dr import new_primary, query

from .conftest import json_posts

pytestmark = pytest.mark.dagrun
DAG_ID = "pg_standby_provision"
REPO = Path(__file__).resolve().parents[2]
SLOT = "glimpse_standby"
PG_BIN = str(devstack.PG_BIN)


@pytest.fixture(scope="module")
def primary():
    """A primary of its own (not the session cluster: it gets a slot and a standby), with a table to replicate."""
    c = new_primary()
    try:
        c.createdb("glimpse")
        c.psql("-c", "CREATE TABLE notes (id int PRIMARY KEY, body text)", dbname="glimpse")
        yield c
    finally:
        c.stop()


def standby_config(tmp_path: Path, data_directory: Path) -> Path:
    """The repo's config with a standby for glimpse whose data directory is under tmp_path."""
    raw = yaml.safe_load((REPO / "include" / "config" / "pgbackup.yaml").read_text())
    raw["dr"]["standbys"] = {"glimpse": {"name": "glimpse-standby", "conn_id": "glimpse_standby_db", "slot": SLOT,
                                         "data_directory": str(data_directory)}}
    path = tmp_path / "pgbackup.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def connections(primary, port: int) -> dict:
    return {"glimpse_db": primary.airflow_conn("glimpse"),
            "glimpse_standby_db": json.dumps({"conn_type": "postgres", "host": "127.0.0.1", "port": port,
                                              "login": "postgres", "password": primary.password, "schema": "glimpse"})}


def on_standby(port: int, password: str, sql: str, params=None):
    with psycopg.connect(host="127.0.0.1", port=port, user="postgres", password=password, dbname="glimpse",
                         autocommit=True) as pg:
        return pg.execute(sql, params).fetchall()


def slots(primary) -> list[tuple]:
    return query(primary, "SELECT slot_name, active FROM pg_replication_slots ORDER BY slot_name")


def drop_slot(primary, timeout: float = 30) -> None:
    """Once the stopped standby's WAL sender is gone (an active slot cannot be dropped)."""
    deadline = time.monotonic() + timeout
    while slots(primary) and time.monotonic() < deadline:
        query(primary, "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                       "WHERE slot_name = %s AND NOT active", params=(SLOT,))
        time.sleep(0.2)
    assert slots(primary) == [], "the test's slot could not be dropped"


def test_the_configured_standby_is_built_streams_and_is_reported(run_dag, primary, bucket, s3, receiver, tmp_path):
    data = tmp_path / "standby" / "data"
    port = devstack.free_port()
    try:
        run = run_dag(DAG_ID, bucket=bucket, conns=connections(primary, port),
                      env={"PGBACKUP_CONFIG": str(standby_config(tmp_path, data))})
        assert run.state == "success", run.output[-4000:]
        assert run.task_states == {"validate": "success", "provision": "success", "report": "success",
                                   "run_outcome": "skipped"}

        # A hot standby of this primary, streaming through its slot, named by it on the primary.
        assert on_standby(port, primary.password, "SELECT pg_is_in_recovery()") == [(True,)]
        (status, slot_name), = on_standby(port, primary.password, "SELECT status, slot_name FROM pg_stat_wal_receiver")
        assert (status, slot_name) == ("streaming", SLOT)
        assert query(primary, "SELECT application_name, state FROM pg_stat_replication") == [(SLOT, "streaming")]
        assert slots(primary) == [(SLOT, True)]
        query(primary, "INSERT INTO notes VALUES (1, 'written on the primary after the standby was built')",
              dbname="glimpse")
        deadline = time.monotonic() + 30
        while (rows := on_standby(port, primary.password, "SELECT id, body FROM notes")) == [] and (
                time.monotonic() < deadline):
            time.sleep(0.1)
        assert rows == [(1, "written on the primary after the standby was built")]

        # The WAL archive fallback: Barman's restore from this run's bucket through the S3 connection's endpoint,
        # the credentials in the server's environment (never in the conf).
        auto = (data / "postgresql.auto.conf").read_text()
        assert (f"restore_command = '/opt/pg-dataops/wal-tools/bin/barman-cloud-wal-restore --cloud-provider aws-s3 "
                f"--endpoint-url {s3.endpoint} s3://{bucket}/database/wal glimpse %f %p'\n") in auto
        assert f"port = {port}\nhot_standby = on\n" in auto and f"primary_slot_name = '{SLOT}'" in auto
        assert s3.secret_key not in auto
        # It ran at start-up and reached the (empty) archive: Barman's answer for the next timeline's history.
        log = (data / "pg_dataops-standby.log").read_text()
        assert "ERROR: WAL file 00000002.history for server glimpse does not exist" in log
        environ = Path(f"/proc/{postmaster_pid(data)}/environ").read_bytes().split(b"\0")
        assert f"AWS_ACCESS_KEY_ID={s3.access_key}".encode() in environ
        assert f"AWS_SECRET_ACCESS_KEY={s3.secret_key}".encode() in environ

        (text,) = [p["text"] for p in json_posts(receiver, "/slack")]
        assert re.fullmatch(
            rf":white_check_mark: Standby of glimpse built: Standby glimpse-standby is streaming from the primary "
            rf"through slot {SLOT} \(data directory {re.escape(str(data))}, built in \d+ s, base backup \d+ s\)\. "
            rf"Replayed up to [0-9A-F]+/[0-9A-F]+(, \d+ bytes behind)?; restore_command from the WAL archive as the "
            rf"fallback\. Connection glimpse_standby_db \(postgres@127\.0\.0\.1:{port}/glimpse\)\.", text), text
        assert receiver.posts("/pagerduty") == []
    finally:
        stop_server(data, PG_BIN, mode="immediate")
        drop_slot(primary)


def test_a_non_empty_data_directory_is_refused_before_anything_is_created(run_dag, primary, bucket, receiver,
                                                                          tmp_path):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("somebody's files\n")
    port = devstack.free_port()
    run = run_dag(DAG_ID, bucket=bucket, conns=connections(primary, port), conf={"data_directory": str(taken)},
                  env={"PGBACKUP_CONFIG": str(standby_config(tmp_path, tmp_path / "configured"))})
    assert run.state == "failed", run.output[-4000:]
    assert run.task_states == {"validate": "failed", "provision": "upstream_failed", "report": "upstream_failed",
                               "run_outcome": "failed"}

    assert slots(primary) == []
    assert [(p.name, p.read_text()) for p in taken.iterdir()] == [("notes.txt", "somebody's files\n")]
    assert not (tmp_path / "configured").exists()
    cause = (f"{taken} is not empty: refusing to overwrite it. Stop and move that server aside first, or choose an "
             "empty directory")
    (event,) = json_posts(receiver, "/pagerduty")
    assert event["event_action"] == "trigger" and event["dedup_key"] == f"{DAG_ID}/{run.run_id}"
    assert event["payload"]["summary"] == (
        f"Standby provisioning FAILED: {DAG_ID}.validate[glimpse] in run {run.run_id}: AirflowFailException: "
        f"{cause}")
    (slack,) = [p["text"] for p in json_posts(receiver, "/slack")]
    assert slack.startswith(":red_circle: *Standby provisioning FAILED*") and cause in slack
