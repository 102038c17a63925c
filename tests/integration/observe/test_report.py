"""build_report against a real catalog with a synthetic 30-day history (Asia/Seoul days)."""

import datetime as dt
import json
import zoneinfo

import pytest
from pg_dataops.catalog import migrations
from pg_dataops.common import naming
from pg_dataops.common import pg as pgtools
from pg_dataops.observe import report
from pg_dataops.observe.monitor import Finding

from tests.support.catalog import add_backup, add_drill

SEOUL = zoneinfo.ZoneInfo("Asia/Seoul")
MiB, GiB = 1024**2, 1024**3
NOW = dt.datetime(2026, 11, 25, 9, 0, tzinfo=SEOUL)  # the 09:00 report
FIRST_DAY = dt.date(2026, 10, 27)  # 30 days ending on the report's day
FAILED_DAY = dt.date(2026, 11, 10)
WEEKLY_MIB = {dt.date(2026, 11, 8): 500, dt.date(2026, 11, 15): 600, dt.date(2026, 11, 22): 700}
WEEKLY_SECONDS = {dt.date(2026, 11, 8): 120, dt.date(2026, 11, 15): 120, dt.date(2026, 11, 22): 180}
RECIPIENTS = ("age1" + "q" * 58, "age1" + "p" * 58)  # the configured public keys (only counted)
STORAGE = {"daily": {"bytes": 30 * GiB, "objects": 30}, "weekly": {"bytes": 12 * GiB, "objects": 12},
           "monthly": {"bytes": int(1.5 * GiB), "objects": 1}}


@pytest.fixture(scope="module")
def pg(cluster):
    """The scheduled 02:00 runs of 30 days: the tier by the calendar, one failed daily, one verification gap."""
    cluster.createdb("report_t")
    conn = pgtools.connect(cluster.conn("report_t"), autocommit=True)
    migrations.ensure_schema(conn)
    for i in range(30):
        day = FIRST_DAY + dt.timedelta(days=i)
        when = dt.datetime.combine(day, dt.time(2, 0), tzinfo=SEOUL)
        tier = naming.tier_for(when, "Asia/Seoul")
        if tier == "daily" and day == FAILED_DAY:
            add_backup(conn, when, tier=tier, status="FAILED", error="dump: cannot reach PostgreSQL", step="dump",
                       verified=False)
        elif tier == "daily":  # sizes cycle through the eight bars; durations are flat
            add_backup(conn, when, tier=tier, size=(100 + 10 * (i % 8)) * MiB, duration=60,
                       verified=day != NOW.date())
        elif tier == "weekly":
            add_backup(conn, when, tier=tier, size=WEEKLY_MIB[day] * MiB, duration=WEEKLY_SECONDS[day])
        else:
            add_backup(conn, when, tier=tier, size=GiB, duration=300)
    # A manual run that failed last evening, inside the 24 h window.
    add_backup(conn, dt.datetime(2026, 11, 24, 21, 0, tzinfo=SEOUL), status="FAILED", step="upload",
               error="upload: bucket <glimpse-backups> missing & no retry", verified=False, run_id="manual__1")
    add_drill(conn, dt.datetime(2026, 11, 20, 3, 0, tzinfo=SEOUL), "SUCCESS", total_seconds=3720)
    yield conn
    conn.close()


def build(pg, **kw):
    args = {"rto_objective_seconds": 4 * 3600, "storage_by_tier": STORAGE, "timezone": "Asia/Seoul",
            "encryption_recipients": RECIPIENTS} | kw
    return report.build_report(pg, NOW, **args)


def test_report_text_for_a_30_day_history(pg):
    findings = [
        Finding("last_daily_backup_age", "glimpse", True, "page", "fine", "pg_backup_monitor/x/glimpse"),
        Finding("local_free_space", "/backup", False, "warn",
                "free space under /backup is 3.5 GiB, 3.5% of 100.0 GiB (threshold: at least 20.0 GiB free)",
                "pg_backup_monitor/local_free_space//backup"),
    ]
    r = build(pg, findings=findings)
    assert r.text.splitlines() == [
        "*PostgreSQL backup report*: 2026-11-25 09:00 KST",
        "*Last 24 h*: 1 succeeded, 1 failed",
        "• daily: 1 succeeded, 1 failed",
        "• weekly: 0 succeeded, 0 failed",
        "• monthly: 0 succeeded, 0 failed",
        # Slack would turn <...> into a link: escaped.
        ":x: glimpse daily 2026-11-24 21:00 KST: FAILED in upload: upload: bucket &lt;glimpse-backups&gt; missing "
        "&amp; no retry",
        ":white_check_mark: glimpse daily 2026-11-25 02:00 KST: 150.0 MiB in 1 min, uploaded, not verified",
        "*Verification*: 0 of 1 successful backups verified; not verified: glimpse daily 2026-11-25 02:00 KST",
        "*Encryption*: age, 2 recipients: 1 of 1 successful backups client-side encrypted",
        "*RTO* (objective 4 h): glimpse: 1 h 2 min measured 2026-11-20 03:00 KST (daily backup) :white_check_mark:",
        "*Storage (S3)*: daily 30.0 GiB in 30 objects · weekly 12.0 GiB in 12 objects · "
        "monthly 1.5 GiB in 1 object · total 43.5 GiB",
        "*Overdue*:",
        ":warning: free space under /backup is 3.5 GiB, 3.5% of 100.0 GiB (threshold: at least 20.0 GiB free)",
        "*30-day trend* (one column per day, 2026-10-27 to 2026-11-25, blank: no successful backup that day)",
        "```",
        # Columns are days: the daily line is blank on the 1st (monthly), on Sundays (weekly) and on the
        # failed 10 November.
        "glimpse daily    size ▁▂▃▄▅ ▇█▁▂▃▄ ▆ █▁▂▃ ▅▆▇█▁▂ ▄▅▆ 100.0 MiB–170.0 MiB"
        "  duration ▄▄▄▄▄ ▄▄▄▄▄▄ ▄ ▄▄▄▄ ▄▄▄▄▄▄ ▄▄▄ 1 min",
        "glimpse weekly   size             ▁      ▅      █    500.0 MiB–700.0 MiB"
        "  duration             ▁      ▁      █    2 min–3 min",
        "glimpse monthly  size      ▄                         1.0 GiB            "
        "  duration      ▄                         5 min",
        "```",
    ]


def test_report_data_is_json_safe_and_carries_the_numbers(pg):
    data = build(pg, findings=[]).data
    json.dumps(data)
    assert data["last_window"]["tiers"]["daily"] == {"succeeded": 1, "failed": 1, "size_bytes": 150 * MiB,
                                                     "duration_seconds": 60.0}
    assert data["verification"]["verified"] == 0 and data["verification"]["successful"] == 1
    assert data["rto"]["targets"]["glimpse"]["measured_seconds"] == 3720.0
    assert data["rto"]["targets"]["glimpse"]["within_objective"] is True
    assert data["storage"]["total_bytes"] == int(43.5 * GiB)
    assert data["overdue"] == []
    daily = next(s for s in data["trend"]["series"] if s["tier"] == "daily")
    assert len(daily["size_bytes"]) == 30 and daily["size_bytes"][0] == 100 * MiB
    assert daily["size_bytes"][14] is None  # 10 November failed
    assert data["trend"]["days"][0] == "2026-10-27" and data["trend"]["days"][-1] == "2026-11-25"


def test_overdue_and_storage_when_not_given(pg):
    text = build(pg, storage_by_tier=None, findings=[
        Finding("last_daily_backup_age", "glimpse", False, "page", "last successful backup of glimpse is old",
                "k"),
    ]).text
    assert "*Storage (S3)*: not listed" in text.splitlines()
    assert "\n*Overdue*:\n:rotating_light: last successful backup of glimpse is old\n" in text
    assert "*Overdue*: not checked (no monitor findings given)" in build(pg).text.splitlines()
    assert "*Overdue*: nothing (all 0 checks pass)" in build(pg, findings=[]).text.splitlines()


def test_a_newer_failed_drill_and_an_rto_over_the_objective(pg):
    add_drill(pg, dt.datetime(2026, 11, 22, 3, 0, tzinfo=SEOUL), "FAILED", error="pg_restore: error: out of memory")
    try:
        lines = build(pg, rto_objective_seconds=3600).text.splitlines()
    finally:
        pg.execute("DELETE FROM restore_drills WHERE status = 'FAILED'")
    assert ("*RTO* (objective 1 h): glimpse: last drill 2026-11-22 03:00 KST FAILED: pg_restore: error: out of memory; "
            "1 h 2 min measured 2026-11-20 03:00 KST (daily backup), over the objective :warning:") in lines


def test_bad_storage_entry_names_the_tier(pg):
    with pytest.raises(ValueError, match=r"storage_by_tier\['weekly'\]: expected"):
        build(pg, storage_by_tier={"weekly": {"size": 1}})


def test_empty_catalog(cluster):
    cluster.createdb("report_empty")
    with pgtools.connect(cluster.conn("report_empty")) as pg:
        lines = report.build_report(pg, NOW, rto_objective_seconds=14400, storage_by_tier={}).text.splitlines()
    assert lines == [
        "*PostgreSQL backup report*: 2026-11-25 00:00 UTC",
        "*Last 24 h*: 0 succeeded, 0 failed",
        "• daily: 0 succeeded, 0 failed",
        "• weekly: 0 succeeded, 0 failed",
        "• monthly: 0 succeeded, 0 failed",
        "*Verification*: no successful backup in the window to verify",
        "*Encryption*: no successful backup in the window (encryption.recipients is empty)",
        "*RTO* (objective 4 h): no restore drill recorded :warning:",
        "*Storage (S3)*: total 0 B",
        "*Overdue*: not checked (no monitor findings given)",
        "*30-day trend* (one column per day, 2026-10-27 to 2026-11-25, blank: no successful backup that day): "
        "no successful backup",
    ]


def encryption_line(lines):
    (line,) = [x for x in lines if x.startswith("*Encryption*")]
    return line


def test_the_encryption_line_says_when_backups_were_not_client_side_encrypted(pg):
    newest = dt.datetime(2026, 11, 25, 2, 0, tzinfo=SEOUL)
    pg.execute("UPDATE backup_logs SET encrypted = false WHERE backup_date = %s", (newest,))
    try:
        off = build(pg, encryption_recipients=())
        assert encryption_line(off.text.splitlines()) == (
            "*Encryption*: :warning: NOT client-side encrypted (S3 SSE only): 1 of 1 successful backups "
            "(encryption.recipients is empty)")
        assert off.data["encryption"] == {"recipients": 0, "successful": 1, "encrypted": 0, "not_encrypted": [
            {"target": "glimpse", "tier": "daily", "backup_date": newest.astimezone(dt.UTC).isoformat()}]}
        # A manual encrypted run after the plaintext one: mixed, and the plaintext one is named.
        add_backup(pg, dt.datetime(2026, 11, 25, 4, 0, tzinfo=SEOUL), run_id="manual__enc", encrypted=True)
        mixed = build(pg, encryption_recipients=RECIPIENTS[:1])
        assert encryption_line(mixed.text.splitlines()) == (
            "*Encryption*: :warning: 1 of 2 successful backups client-side encrypted (age, 1 recipient); NOT "
            "client-side encrypted (S3 SSE only): glimpse daily 2026-11-25 02:00 KST")
        # NULL (a row from before the column) is not encrypted either.
        pg.execute("UPDATE backup_logs SET encrypted = NULL WHERE backup_date = %s", (newest,))
        assert build(pg).data["encryption"]["encrypted"] == 1
    finally:
        pg.execute("DELETE FROM backup_logs WHERE run_id = 'manual__enc'")
        pg.execute("UPDATE backup_logs SET encrypted = true WHERE backup_date = %s", (newest,))
    turned_off = build(pg, encryption_recipients=())
    assert encryption_line(turned_off.text.splitlines()) == (
        "*Encryption*: age: 1 of 1 successful backups client-side encrypted, but encryption.recipients is empty "
        "now: the next ones will NOT be")
