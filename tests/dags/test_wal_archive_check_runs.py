"""pg_wal_archive_check end to end: `airflow dags test` against a real archiving cluster and moto, with Slack and
PagerDuty captured by the receiver. Two runs: archiving broken (red run, PagerDuty trigger, Slack warning), then
repaired (green run, PagerDuty resolve under the same dedup_key, Slack "cleared")."""

from __future__ import annotations

import psycopg
import pytest
from pg_dataops.catalog import migrations
from pg_dataops.common import pg as pgtools
from pg_dataops.pitr import archive_check as ac

from tests.support.pitr import archiving_cluster, pitr_env
from tests.support.pitr_archive import break_archiving, repair_archiving, switch_segments, wait_caught_up, wait_failing

from .conftest import json_posts

KEY = "pg_wal_archive_check/glimpse/archiving_failing"
BACKLOG_KEY = "pg_wal_archive_check/glimpse/ready_backlog"
BEHIND_KEY = "pg_wal_archive_check/glimpse/segments_behind"
TASK = "check_target.check_archive[0]"


@pytest.fixture
def catalog_pg(cluster):
    conn = pgtools.connect(cluster.conn("catalog"), autocommit=True)
    migrations.ensure_schema(conn)
    conn.execute("DELETE FROM monitor_alerts WHERE dedup_key LIKE 'pg_wal_archive_check/%'")
    yield conn
    conn.close()


def alert_state(pg) -> dict[str, dict]:
    cur = pg.cursor(row_factory=psycopg.rows.dict_row)
    return {r["dedup_key"]: r for r in cur.execute(
        "SELECT * FROM monitor_alerts WHERE dedup_key LIKE 'pg_wal_archive_check/%'")}


@pytest.mark.dagrun
def test_broken_archiving_pages_and_warns_then_resolves_once_repaired(run_dag, s3, bucket, receiver, catalog_pg):
    target = archiving_cluster(s3, bucket)
    try:
        names = switch_segments(target, 2)
        wait_caught_up(target, names[-1])
        break_archiving(target, bucket)
        stuck = switch_segments(target, ac.BACKLOG_WARN + 1)
        failed = wait_failing(target)
        assert failed["last_failed_wal"] == stuck[0]
        conns = {"glimpse_db": target.airflow_conn("glimpse")}

        run = run_dag("pg_wal_archive_check", "2026-12-01T12:05:00+09:00", bucket=bucket, conns=conns,
                      env=pitr_env(bucket))
        assert run.state == "failed", run.output[-4000:]
        assert run.task_states == {TASK: "failed", "run_outcome": "failed"}
        pd = json_posts(receiver, "/pagerduty")
        mine = [e for e in pd if e["dedup_key"] == KEY]
        assert len(mine) == 1, pd
        event = mine[0]
        assert (event["event_action"], event["routing_key"]) == ("trigger", "test-routing-key")
        payload = event["payload"]
        assert payload["summary"].startswith(
            f"WAL archive check: WAL archiving of glimpse is failing: archive_command failed for {stuck[0]} at ")
        assert (payload["severity"], payload["source"], payload["component"], payload["group"]) == (
            "critical", "pg_dataops", "glimpse", "pg_wal_archive_check")
        details = payload["custom_details"]
        assert details["check"] == "archiving_failing" and details["last_failed_wal"] == stuck[0]
        assert details["failed_count"] >= 1
        # The failed task's own alert (one incident per run) comes on top; nothing else is paged.
        others = [e for e in pd if e["dedup_key"] != KEY]
        assert [e["payload"]["group"] for e in others] == ["pg_wal_archive_check"], others
        assert "check_archive" in others[0]["payload"]["summary"]
        texts = [p["text"] for p in json_posts(receiver, "/slack")]
        backlog = [t for t in texts if t.startswith(":warning: *PostgreSQL WAL archive*: ")]
        assert backlog == [
            f":warning: *PostgreSQL WAL archive*: {ac.BACKLOG_WARN + 1} WAL file(s) of glimpse wait to be archived "
            f"(.ready; warning at {ac.BACKLOG_WARN}), the oldest {stuck[0]} since " + backlog[0].split(" since ")[1],
            ":warning: *PostgreSQL WAL archive*: glimpse writes "
            + backlog[1].split(" writes ")[1]]
        assert f": {ac.BACKLOG_WARN + 1} complete segment(s) after the newest in S3 ({names[-1]}; " in backlog[1]
        assert len(texts) == 3, texts  # the two warnings and the failed task's alert
        state = alert_state(catalog_pg)
        assert state[KEY]["failing"] is True and state[BACKLOG_KEY]["failing"] is True
        assert state[BEHIND_KEY]["failing"] is True and len(state) == len(ac.CHECKS)

        repair_archiving(target)
        wait_caught_up(target, stuck[-1])
        run = run_dag("pg_wal_archive_check", "2026-12-01T13:05:00+09:00", bucket=bucket, conns=conns,
                      env=pitr_env(bucket))
        assert run.state == "success", run.output[-4000:]
        assert run.task_states == {TASK: "success", "run_outcome": "skipped"}
        pd = json_posts(receiver, "/pagerduty")
        assert [(e["event_action"], e["dedup_key"]) for e in pd] == [("resolve", KEY)], pd
        assert pd[0]["payload"]["summary"].startswith(
            f"cleared: WAL archiving of glimpse works: last archived {stuck[-1]} at ")
        texts = sorted(p["text"] for p in json_posts(receiver, "/slack"))
        assert texts == [
            ":white_check_mark: cleared: 0 WAL file(s) of glimpse wait to be archived (.ready; warning at "
            f"{ac.BACKLOG_WARN})",
            texts[1],
        ] and texts[1].startswith(":white_check_mark: cleared: glimpse writes ") and texts[1].endswith(
            f": 0 complete segment(s) after the newest in S3 ({stuck[-1]}; warning at {ac.BACKLOG_WARN})")
        assert not any(row["failing"] for row in alert_state(catalog_pg).values())
    finally:
        target.stop()
