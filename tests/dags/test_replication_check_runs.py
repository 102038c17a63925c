"""pg_replication_check end to end: `airflow dags test` against a fresh primary and a streaming standby built by
the provisioning code, Slack and PagerDuty captured by the receiver, alert state in the session cluster's catalog.
Three runs on one pair: replay paused behind writes (red run, PagerDuty trigger, Slack warnings); resumed and
caught up (green run, PagerDuty resolve under the same dedup_key, Slack "cleared"; an extra inactive slot warned);
the standby removed from the configuration (the single task says so and clears the slot's warning)."""

from __future__ import annotations

import re
import time
from pathlib import Path

import psycopg
import pytest
import yaml
from pg_dataops.catalog import migrations
from pg_dataops.common import pg as pgtools
from pg_dataops.common.formatting import fmt_bytes

from tests.support.dr import query, settle, streaming_pair

from .conftest import json_posts

pytestmark = pytest.mark.dagrun

REPO = Path(__file__).resolve().parents[2]
DAG_ID = "pg_replication_check"
SLOT = "glimpse_standby"
KEY = "pg_replication_check/glimpse/"
TASK = "check_standby.check_replication[0]"


def config(tmp_path: Path, *, standby: bool) -> Path:
    """The repo's config with low lag thresholds and, when ``standby``, dr.standbys.glimpse."""
    raw = yaml.safe_load((REPO / "include" / "config" / "pgbackup.yaml").read_text())
    raw["dr"].update(lag_warn_seconds=1, lag_page_seconds=2, lag_page_mb=1,
                     standbys={"glimpse": {"name": "glimpse-standby", "conn_id": "glimpse_standby_db", "slot": SLOT}}
                     if standby else {})
    path = tmp_path / ("with-standby.yaml" if standby else "no-standby.yaml")
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture
def pair():
    with streaming_pair(SLOT, tables=("CREATE TABLE notes (id int PRIMARY KEY, body text)",),
                        fast_replies=True) as servers:
        yield servers


@pytest.fixture
def catalog_pg(cluster):
    conn = pgtools.connect(cluster.conn("catalog"), autocommit=True)
    migrations.ensure_schema(conn)
    conn.execute("DELETE FROM monitor_alerts WHERE dedup_key LIKE 'pg_replication_check/%'")
    yield conn
    conn.execute("DELETE FROM monitor_alerts WHERE dedup_key LIKE 'pg_replication_check/%'")
    conn.close()


def alert_state(pg) -> dict[str, dict]:
    cur = pg.cursor(row_factory=psycopg.rows.dict_row)
    return {r["dedup_key"]: r for r in cur.execute(
        "SELECT * FROM monitor_alerts WHERE dedup_key LIKE 'pg_replication_check/%'")}


def seconds_text(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"


def test_paused_replay_pages_then_resolves_and_an_unconfigured_standby_is_cleared(run_dag, receiver, catalog_pg,
                                                                                   pair, tmp_path):
    primary, standby = pair
    conns = {"glimpse_db": primary.airflow_conn("glimpse"), "glimpse_standby_db": standby.airflow_conn("postgres")}
    env = {"PGBACKUP_CONFIG": str(config(tmp_path, standby=True))}

    # 1. replay paused while the primary writes: red run, paged and warned
    settle(primary, standby)
    standby.query("SELECT pg_wal_replay_pause()")
    try:
        (replayed_lsn,), = standby.query("SELECT pg_last_wal_replay_lsn()::text")
        query(primary, "INSERT INTO notes SELECT g, repeat('x', 1000) FROM generate_series(1, 3000) g", dbname="glimpse")
        (written,), = query(primary, "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s::pg_lsn)::bigint",
                            params=(replayed_lsn,))
        time.sleep(2.5)  # past lag_page_seconds, whatever `airflow dags test` takes to start
        run = run_dag(DAG_ID, "2026-12-01T12:05:00+09:00", bucket="unused", conns=conns, env=env)
    finally:
        standby.query("SELECT pg_wal_replay_resume()")
    assert run.state == "failed", run.output[-4000:]
    assert run.task_states == {TASK: "failed", "run_outcome": "failed"}
    pd = json_posts(receiver, "/pagerduty")
    mine = [e for e in pd if e["dedup_key"].startswith(KEY)]
    assert [(e["event_action"], e["dedup_key"]) for e in mine] == [("trigger", KEY + "replay_lag")], pd
    event = mine[0]
    assert event["routing_key"] == "test-routing-key"
    payload, lag = event["payload"], event["payload"]["custom_details"]
    assert (payload["severity"], payload["source"], payload["component"], payload["group"]) == (
        "critical", "pg_dataops", "glimpse", "pg_replication_check")
    assert lag["check"] == "replay_lag" and lag["seconds"] > 2 and lag["bytes"] >= written > 1024 * 1024
    shown = seconds_text(lag["seconds"])
    assert payload["summary"] == (
        f"Replication check: standby glimpse-standby replay is {shown} behind the primary, {fmt_bytes(lag['bytes'])} "
        "of WAL not replayed (page above 2 s or 1 MB)")
    # The failed task's own alert (one incident per run) comes on top; nothing else is paged.
    others = [e for e in pd if not e["dedup_key"].startswith(KEY)]
    assert len(others) == 1 and "check_replication" in others[0]["payload"]["summary"], others
    texts = [p["text"] for p in json_posts(receiver, "/slack")]
    warnings = [t for t in texts if t.startswith(":warning: *PostgreSQL replication*: ")]
    assert warnings == [
        f":warning: *PostgreSQL replication*: standby glimpse-standby replay is {shown} behind the primary "
        "(warning above 1 s)",
        ":warning: *PostgreSQL replication*: standby glimpse-standby: WAL replay is paused (pg_wal_replay_pause()); "
        "it falls behind the primary until SELECT pg_wal_replay_resume() on it",
    ]
    assert len(texts) == 3, texts  # the two warnings and the failed task's alert
    state = alert_state(catalog_pg)
    assert {k for k, r in state.items() if r["failing"]} == {KEY + "replay_lag", KEY + "lag_warning",
                                                            KEY + "replay_paused"}
    assert len(state) == 7  # five checks and the standby's slot's two

    # 2. resumed and caught up (and an unused slot left behind): green run, resolved under the same dedup_key
    query(primary, "SELECT pg_create_physical_replication_slot('forgotten_slot', true)")
    settle(primary, standby)
    run = run_dag(DAG_ID, "2026-12-01T12:10:00+09:00", bucket="unused", conns=conns, env=env)
    assert run.state == "success", run.output[-4000:]
    assert run.task_states == {TASK: "success", "run_outcome": "skipped"}
    pd = json_posts(receiver, "/pagerduty")
    assert [(e["event_action"], e["dedup_key"]) for e in pd] == [("resolve", KEY + "replay_lag")], pd
    assert pd[0]["payload"]["summary"] == (
        "cleared: standby glimpse-standby replay is 0.0 s behind the primary, 0 B of WAL not replayed (page above "
        "2 s or 1 MB)")
    texts = sorted(p["text"] for p in json_posts(receiver, "/slack"))
    assert texts[:2] == [
        ":warning: *PostgreSQL replication*: replication slot forgotten_slot on primary glimpse is inactive: nothing "
        "streams from it, and the WAL it holds " + texts[0].split(" and the WAL it holds ")[1],
        ":white_check_mark: cleared: standby glimpse-standby replay is 0.0 s behind the primary (warning above 1 s)",
    ] and re.search(r"holds \(\d+(\.\d)? (B|KiB|MiB)\) grows until it is used again or dropped; the disk fills$",
                    texts[0])
    assert texts[2:] == [":white_check_mark: cleared: standby glimpse-standby: WAL replay is not paused"]
    state = alert_state(catalog_pg)
    assert {k for k, r in state.items() if r["failing"]} == {KEY + "slot_inactive/forgotten_slot"}
    slot_warning = state[KEY + "slot_inactive/forgotten_slot"]["message"]

    # 3. the standby removed from dr.standbys: the single task says so, and clears what the target left failing
    run = run_dag(DAG_ID, "2026-12-01T12:15:00+09:00", bucket="unused", conns=conns,
                  env={"PGBACKUP_CONFIG": str(config(tmp_path, standby=False))})
    assert run.state == "success", run.output[-4000:]
    assert run.task_states == {"check_replication": "success", "run_outcome": "skipped"}
    assert json_posts(receiver, "/pagerduty") == []
    assert [p["text"] for p in json_posts(receiver, "/slack")] == [
        f":white_check_mark: cleared: {KEY}slot_inactive/forgotten_slot is no longer checked (glimpse has no standby "
        f"in dr.standbys any more); it last said: {slot_warning}"]
    assert alert_state(catalog_pg) == {}  # every key of the target forgotten
