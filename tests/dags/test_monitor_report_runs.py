"""pg_backup_monitor and pg_backup_report end to end: `airflow dags test` against the session's real
PostgreSQL catalog and moto S3, with Slack and PagerDuty captured by the receiver.

The catalog is seeded with synthetic backup_logs rows relative to the wall clock, since both DAGs
judge "now", not the logical date.
"""

from __future__ import annotations

import datetime as dt
import json
import re

import devstack
import psycopg
import pytest
from pg_dataops.catalog import migrations
from pg_dataops.common import pg as pgtools

from tests.support.catalog import add_backup

from .conftest import DagRunOutput as DagRun
from .conftest import json_posts

MiB = 1024 * 1024
AGE_KEY = "pg_backup_monitor/last_daily_backup_age/glimpse"
SIZE_KEY = "pg_backup_monitor/backup_size_deviation/glimpse"
ENC_KEY = "pg_backup_monitor/not_encrypted/glimpse"
RECIPIENTS = ("age1" + "q" * 58, "age1" + "p" * 58)  # well-formed public keys: the config only lists them


@pytest.fixture
def catalog_pg(cluster):
    """The catalog database, emptied: no backup_logs, restore_drills or alert state from other tests."""
    conn = pgtools.connect(cluster.conn("catalog"), autocommit=True)
    conn.execute("DROP TABLE IF EXISTS backup_logs, restore_drills, monitor_alerts CASCADE")
    migrations.ensure_schema(conn)
    yield conn
    conn.close()


@pytest.fixture
def run_observe(run_dag, catalog_pg, bucket):
    """run_observe(dag_id, logical_date, conns=..., env=...): conftest's run_dag on an emptied catalog."""

    def run(dag_id: str, logical_date: str, *, conns: dict | None = None, env: dict | None = None) -> DagRun:
        # The test machine's free space is not what these runs are about.
        return run_dag(dag_id, logical_date, bucket=bucket, conns=conns,
                       env={"PGBACKUP_MONITOR_MIN_FREE_GB": "0", **(env or {})})

    return run


def alert_state(pg) -> dict[str, dict]:
    cur = pg.cursor(row_factory=psycopg.rows.dict_row)
    return {r["dedup_key"]: r for r in cur.execute("SELECT * FROM monitor_alerts")}


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# --- end to end ------------------------------------------------------------------------------------


@pytest.mark.dagrun
def test_stale_backup_pages_once_then_resolves_once(run_observe, catalog_pg, receiver):
    add_backup(catalog_pg, utcnow() - dt.timedelta(hours=30))

    run = run_observe("pg_backup_monitor", "2026-11-25T10:00:00+09:00")
    assert run.succeeded, run.output[-4000:]
    assert json_posts(receiver, "/slack") == []
    pd = json_posts(receiver, "/pagerduty")
    assert len(pd) == 1, pd
    event = pd[0]
    assert (event["event_action"], event["dedup_key"], event["routing_key"]) == ("trigger", AGE_KEY, "test-routing-key")
    payload = event["payload"]
    assert re.fullmatch(r"Backup monitor: last successful backup of glimpse \(daily, \d{4}-\d\d-\d\d \d\d:\d\d KST\) "
                        r"is 30\.\d h old \(threshold 24 h\)", payload["summary"]), payload["summary"]
    assert (payload["severity"], payload["source"], payload["component"]) == ("critical", "pg_dataops", "glimpse")
    details = payload["custom_details"]
    assert details["check"] == "last_daily_backup_age" and details["threshold_hours"] == 24
    assert 30 <= details["age_hours"] < 30.5
    assert alert_state(catalog_pg)[AGE_KEY]["failing"] is True

    # The backup is made: the same key is resolved, once, and nothing is triggered.
    add_backup(catalog_pg, utcnow() - dt.timedelta(hours=1))
    run = run_observe("pg_backup_monitor", "2026-11-25T11:00:00+09:00")
    assert run.succeeded, run.output[-4000:]
    pd = json_posts(receiver, "/pagerduty")
    assert [(e["event_action"], e["dedup_key"]) for e in pd] == [("resolve", AGE_KEY)], pd
    assert pd[0]["payload"]["summary"].startswith("cleared: last successful backup of glimpse (daily, ")
    assert pd[0]["payload"]["summary"].endswith(" is 1.0 h old (threshold 24 h)")
    assert json_posts(receiver, "/slack") == []
    state = alert_state(catalog_pg)[AGE_KEY]
    assert state["failing"] is False and state["changed_at"] == state["last_seen_at"]

    # Still fine an hour later: no second resolve.
    run = run_observe("pg_backup_monitor", "2026-11-25T12:00:00+09:00")
    assert run.succeeded, run.output[-4000:]
    assert receiver.requests == []


@pytest.mark.dagrun
def test_size_deviation_posts_to_slack_once_and_once_when_cleared(run_observe, catalog_pg, receiver):
    now = utcnow()
    for days in (4, 3, 2):
        add_backup(catalog_pg, now - dt.timedelta(days=days), size=100 * MiB)
    newest = add_backup(catalog_pg, now - dt.timedelta(hours=1), size=300 * MiB)

    run = run_observe("pg_backup_monitor", "2026-11-25T10:00:00+09:00")
    assert run.succeeded, run.output[-4000:]
    assert json_posts(receiver, "/pagerduty") == []  # the backup is fresh: nothing to page or resolve
    slack = json_posts(receiver, "/slack")
    assert len(slack) == 1, slack
    text = slack[0]["text"]
    assert text.startswith(":warning: *PostgreSQL backups*: daily backup of glimpse at ")
    assert text.endswith(" is 300.0 MiB, +200.0% vs the median 100.0 MiB of the previous 3 daily backups "
                         "(threshold ±50%)"), text
    assert alert_state(catalog_pg)[SIZE_KEY]["failing"] is True

    # Nothing changed: nothing is posted again.
    run = run_observe("pg_backup_monitor", "2026-11-25T11:00:00+09:00")
    assert run.succeeded, run.output[-4000:]
    assert receiver.requests == []

    # The size is back within the threshold: one short "cleared" line.
    catalog_pg.execute("UPDATE backup_logs SET file_size_bytes = %s WHERE id = %s", (110 * MiB, newest))
    run = run_observe("pg_backup_monitor", "2026-11-25T12:00:00+09:00")
    assert run.succeeded, run.output[-4000:]
    assert json_posts(receiver, "/pagerduty") == []
    assert [p["text"] for p in json_posts(receiver, "/slack")] == [
        ":white_check_mark: cleared: no size deviation among 1 compared backup of glimpse in the last 24 h "
        "(threshold ±50% of the median of up to 7 previous of the same tier)"
    ]
    assert alert_state(catalog_pg)[SIZE_KEY]["failing"] is False


@pytest.mark.dagrun
def test_an_unencrypted_backup_warns_once_and_clears_when_an_encrypted_one_succeeds(run_observe, catalog_pg,
                                                                                    receiver):
    add_backup(catalog_pg, utcnow() - dt.timedelta(hours=2), encrypted=False)

    run = run_observe("pg_backup_monitor", "2026-11-25T10:00:00+09:00")
    assert run.succeeded, run.output[-4000:]
    assert json_posts(receiver, "/pagerduty") == []
    slack = [p["text"] for p in json_posts(receiver, "/slack")]
    assert len(slack) == 1, slack
    assert re.fullmatch(r":warning: \*PostgreSQL backups\*: the newest backup of glimpse \(daily, "
                        r"\d{4}-\d\d-\d\d \d\d:\d\d KST\) is not client-side encrypted "
                        r"\(encryption\.recipients is empty\)", slack[0]), slack[0]
    assert alert_state(catalog_pg)[ENC_KEY]["failing"] is True

    add_backup(catalog_pg, utcnow() - dt.timedelta(hours=1), encrypted=True)
    run = run_observe("pg_backup_monitor", "2026-11-25T11:00:00+09:00",
                      env={"PGBACKUP_ENCRYPTION_RECIPIENTS": RECIPIENTS[0]})
    assert run.succeeded, run.output[-4000:]
    slack = [p["text"] for p in json_posts(receiver, "/slack")]
    assert len(slack) == 1 and re.fullmatch(
        r":white_check_mark: cleared: the newest backup of glimpse \(daily, \d{4}-\d\d-\d\d \d\d:\d\d KST\) "
        r"is client-side encrypted \(age\)", slack[0]), slack
    assert json_posts(receiver, "/pagerduty") == []
    assert alert_state(catalog_pg)[ENC_KEY]["failing"] is False


@pytest.mark.dagrun
def test_undelivered_warning_is_sent_by_the_next_run(run_observe, catalog_pg, receiver):
    now = utcnow()
    for days in (4, 3, 2):
        add_backup(catalog_pg, now - dt.timedelta(days=days), size=100 * MiB)
    add_backup(catalog_pg, now - dt.timedelta(hours=1), size=20 * MiB)
    dead_slack = json.dumps({"conn_type": "slackwebhook", "schema": "http",
                             "host": f"127.0.0.1:{devstack.free_port()}/slack", "password": "T000/B000/DEAD"})

    run = run_observe("pg_backup_monitor", "2026-11-25T10:00:00+09:00", conns={"slack_backup": dead_slack})
    assert run.failed, run.output[-4000:]
    # The task failed loudly (PagerDuty through the failure callback, without the webhook token) ...
    pd = json_posts(receiver, "/pagerduty")
    assert len(pd) == 1 and pd[0]["dedup_key"] == f"pg_backup_monitor/{run.run_id}", pd
    assert run.task_states == {"check_and_alert": "failed", "run_outcome": "failed"}
    assert f"AlertDeliveryFailed: 1 alert(s) not delivered: slack for {SIZE_KEY}" in pd[0]["payload"]["summary"]
    assert "T000/B000/DEAD" not in json.dumps(receiver.requests)
    # ... and kept the old state, so the warning is not lost.
    assert SIZE_KEY not in alert_state(catalog_pg)

    run = run_observe("pg_backup_monitor", "2026-11-25T11:00:00+09:00")
    assert run.succeeded, run.output[-4000:]
    slack = json_posts(receiver, "/slack")
    assert len(slack) == 1 and "20.0 MiB, -80.0% vs the median 100.0 MiB" in slack[0]["text"], slack
    assert alert_state(catalog_pg)[SIZE_KEY]["failing"] is True


@pytest.mark.dagrun
def test_report_posts_tiers_trend_and_s3_storage(run_observe, catalog_pg, receiver, s3, bucket):
    now = utcnow()
    # Eight days of dailies, growing by 1 MiB and 1 s a day: the trend is the full bar ramp.
    for i, days in enumerate(range(7, -1, -1)):
        add_backup(catalog_pg, now - dt.timedelta(days=days, minutes=1), size=(100 + i) * MiB, duration=60 + i)
    add_backup(catalog_pg, now - dt.timedelta(hours=3), tier="weekly", size=500 * MiB, duration=120)
    add_backup(catalog_pg, now - dt.timedelta(hours=2), status="FAILED", step="upload",
                  error="upload: S3 bucket <glimpse-backups> missing & no retry")
    c = s3.client()
    for key, size in (("database/daily/a.dump", 1000), ("database/daily/a.dump.sha256", 2000),
                      ("database/weekly/b.dump", 4096), ("database/elsewhere/c.dump", 50_000),
                      ("other/daily/d.dump", 70_000)):
        c.put_object(Bucket=bucket, Key=key, Body=b"x" * size)

    run = run_observe("pg_backup_report", "2026-11-25T09:00:00+09:00",
                      env={"PGBACKUP_ENCRYPTION_RECIPIENTS": ",".join(RECIPIENTS)})
    assert run.succeeded, run.output[-4000:]
    assert json_posts(receiver, "/pagerduty") == []
    slack = json_posts(receiver, "/slack")
    assert len(slack) == 1, slack
    lines = slack[0]["text"].splitlines()
    assert re.fullmatch(r"\*PostgreSQL backup report\*: \d{4}-\d\d-\d\d \d\d:\d\d KST", lines[0]), lines[0]
    # Per-tier counts of the last 24 h (the newest daily, the weekly, the failed daily).
    assert lines[1:5] == ["*Last 24 h*: 2 succeeded, 1 failed", "• daily: 1 succeeded, 1 failed",
                          "• weekly: 1 succeeded, 0 failed", "• monthly: 0 succeeded, 0 failed"]
    assert any(line.startswith(":x: glimpse daily ") and line.endswith(
        ": FAILED in upload: upload: S3 bucket &lt;glimpse-backups&gt; missing &amp; no retry") for line in lines)
    # Storage per tier: only {prefix}/{tier}/ counts.
    assert "*Storage (S3)*: daily 2.9 KiB in 2 objects · weekly 4.0 KiB in 1 object · monthly 0 B in 0 objects " \
           "· total 6.9 KiB" in lines
    assert "*Overdue*: nothing (all 6 checks pass)" in lines
    assert "*Encryption*: age, 2 recipients: 2 of 2 successful backups client-side encrypted" in lines
    # The sparkline lines of the 30-day trend.
    daily = next(line for line in lines if line.startswith("glimpse daily "))
    assert re.search(r"size +▁▂▃▄▅▆▇█ *100\.0 MiB–107\.0 MiB +duration +▁▂▃▄▅▆▇█ *1 min–1 min 7 s$", daily), daily
    weekly = next(line for line in lines if line.startswith("glimpse weekly"))
    assert re.search(r"size +▄ *500\.0 MiB +duration +▄ *2 min$", weekly), weekly
    assert "glimpse monthly  no successful backup" in lines


@pytest.mark.dagrun
def test_report_with_a_missing_bucket_fails_and_alerts(run_observe, catalog_pg, receiver):
    run = run_observe("pg_backup_report", "2026-11-25T09:00:00+09:00", env={"PGBACKUP_BUCKET": "glimpse-no-such-bucket"})
    assert run.failed, run.output[-4000:]
    cause = "S3 bucket 'glimpse-no-such-bucket' does not exist"
    slack = json_posts(receiver, "/slack")
    assert len(slack) == 1 and slack[0]["text"].startswith(":red_circle: *Backup report FAILED*")
    assert "task: `post_report`" in slack[0]["text"] and cause in slack[0]["text"]
    pd = json_posts(receiver, "/pagerduty")
    assert len(pd) == 1 and pd[0]["dedup_key"] == f"pg_backup_report/{run.run_id}"
    assert cause in pd[0]["payload"]["summary"]
    assert run.task_states == {"post_report": "failed", "run_outcome": "failed"}
