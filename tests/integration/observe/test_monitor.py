"""monitor.evaluate against a real catalog (PostgreSQL 15) and the real disk of tmp_path."""

import datetime as dt
import json
import shutil
from collections import namedtuple

import psycopg
import pytest
from pg_dataops.catalog import migrations
from pg_dataops.common import pg as pgtools
from pg_dataops.common.formatting import fmt_bytes
from pg_dataops.observe import monitor
from pg_dataops.observe.monitor import MonitorSettings

from tests.support.catalog import add_backup

UTC = dt.UTC
MiB = 1024 * 1024
NOW = dt.datetime(2026, 11, 25, 3, 0, tzinfo=UTC)  # a Wednesday
SETTINGS = MonitorSettings(targets=("glimpse",))


@pytest.fixture(scope="module")
def catalog_db(cluster):
    cluster.createdb("monitor_t")
    return cluster.conn("monitor_t")


@pytest.fixture
def pg(catalog_db):
    conn = pgtools.connect(catalog_db, autocommit=True)
    migrations.ensure_schema(conn)
    conn.execute("TRUNCATE backup_logs, restore_drills RESTART IDENTITY")
    yield conn
    conn.close()


def run(pg, tmp_path, settings=SETTINGS):
    findings = monitor.evaluate(pg, NOW, settings, str(tmp_path))
    return {f.dedup_key: f for f in findings}


def age_key(target="glimpse"):
    return f"pg_backup_monitor/last_daily_backup_age/{target}"


def test_no_backup_at_all_pages(pg, tmp_path):
    found = run(pg, tmp_path)
    f = found[age_key()]
    assert (f.check, f.target, f.ok, f.severity) == ("last_daily_backup_age", "glimpse", False, "page")
    assert f.message == "no successful backup of glimpse is recorded in backup_logs (threshold 24 h)"
    # The other rules have nothing to complain about, and say so under their own keys.
    assert sorted(found) == sorted([
        age_key(),
        "pg_backup_monitor/backup_size_deviation/glimpse",
        "pg_backup_monitor/upload_missing/glimpse",
        "pg_backup_monitor/verification_missing/glimpse",
        "pg_backup_monitor/not_encrypted/glimpse",
        f"pg_backup_monitor/local_free_space/{tmp_path}",
    ])
    enc = found["pg_backup_monitor/not_encrypted/glimpse"]
    assert (enc.ok, enc.severity, enc.message) == (True, "warn", "no successful backup of glimpse to check for "
                                                                 "client-side encryption")
    json.dumps([x.to_dict() for x in found.values()])  # XCom-safe


def test_no_target_configured_and_empty_catalog_still_pages(pg, tmp_path):
    found = run(pg, tmp_path, MonitorSettings())
    f = found["pg_backup_monitor/last_daily_backup_age/*"]
    assert not f.ok and f.severity == "page"
    assert f.message == ("no successful backup of any target is recorded in backup_logs and no target is "
                         "configured (threshold 24 h)")


def test_targets_default_to_those_in_the_catalog(pg, tmp_path):
    add_backup(pg, NOW - dt.timedelta(hours=2), target="other")
    found = run(pg, tmp_path, MonitorSettings())
    assert found[age_key("other")].ok
    assert age_key("glimpse") not in found


def test_stale_backup_pages_then_clears_with_a_weekly_run(pg, tmp_path):
    add_backup(pg, NOW - dt.timedelta(hours=27, minutes=18))  # 27.3 h before NOW
    f = run(pg, tmp_path)[age_key()]
    assert (f.ok, f.severity) == (False, "page")
    assert f.message == "last successful backup of glimpse (daily, 2026-11-23 23:42 UTC) is 27.3 h old (threshold 24 h)"
    assert f.details["age_hours"] == 27.3

    # Sunday's run is weekly; it is a full backup and counts (the runbook's daily-only filter would page).
    add_backup(pg, NOW - dt.timedelta(hours=1), tier="weekly")
    f = run(pg, tmp_path)[age_key()]
    assert (f.ok, f.severity, f.dedup_key) == (True, "page", age_key())
    assert f.message == "last successful backup of glimpse (weekly, 2026-11-25 02:00 UTC) is 1.0 h old (threshold 24 h)"


def test_age_message_names_a_newer_failed_attempt_in_the_local_zone(pg, tmp_path):
    add_backup(pg, NOW - dt.timedelta(hours=30))
    add_backup(pg, NOW - dt.timedelta(hours=1), status="FAILED", error="dump: cannot reach PostgreSQL at db:5432",
        step="dump", uploaded=False, verified=False)
    settings = MonitorSettings(targets=("glimpse",), max_backup_age_hours=25.5, timezone="Asia/Seoul")
    f = run(pg, tmp_path, settings)[age_key()]
    assert not f.ok
    assert f.message == (
        "last successful backup of glimpse (daily, 2026-11-24 06:00 KST) is 30.0 h old (threshold 25.5 h); "
        "latest attempt (daily, 2026-11-25 11:00 KST) FAILED in dump: dump: cannot reach PostgreSQL at db:5432"
    )


def test_size_deviation_warns_then_clears(pg, tmp_path):
    # Eight older daily backups: only the newest seven count, so the 1000 MiB one must not move the median.
    history = [1000, 100, 102, 98, 101, 99, 100, 103]
    for i, size in enumerate(history):
        add_backup(pg, dt.datetime(2026, 11, 16 + i, 2, tzinfo=UTC), size=size * MiB)
    add_backup(pg, dt.datetime(2026, 11, 22, 2, tzinfo=UTC), tier="weekly", size=5000 * MiB)  # another tier
    late = dt.datetime(2026, 11, 25, 2, tzinfo=UTC)
    add_backup(pg, late, size=160 * MiB, run_id="r-late")
    f = run(pg, tmp_path)["pg_backup_monitor/backup_size_deviation/glimpse"]
    assert (f.ok, f.severity) == (False, "warn")
    assert f.message == (
        "daily backup of glimpse at 2026-11-25 02:00 UTC is 160.0 MiB, +60.0% vs the median 100.0 MiB "
        "of the previous 7 daily backups (threshold ±50%)"
    )
    assert f.details["compared"][0]["deviation_pct"] == 60.0

    add_backup(pg, late, size=51 * MiB, run_id="r-late")  # -49%: inside the threshold
    f = run(pg, tmp_path)["pg_backup_monitor/backup_size_deviation/glimpse"]
    assert (f.ok, f.dedup_key) == (True, "pg_backup_monitor/backup_size_deviation/glimpse")
    assert f.message == (
        "no size deviation among 1 compared backup of glimpse in the last 24 h "
        "(threshold ±50% of the median of up to 7 previous of the same tier)"
    )


def test_size_rule_skips_a_tier_with_fewer_than_three_previous(pg, tmp_path):
    add_backup(pg, dt.datetime(2026, 11, 22, 2, tzinfo=UTC), size=100 * MiB)
    add_backup(pg, dt.datetime(2026, 11, 23, 2, tzinfo=UTC), size=100 * MiB)
    add_backup(pg, dt.datetime(2026, 11, 25, 2, tzinfo=UTC), size=900 * MiB)
    f = run(pg, tmp_path)["pg_backup_monitor/backup_size_deviation/glimpse"]
    assert f.ok
    assert f.message == (
        "no size deviation among 0 compared backups of glimpse in the last 24 h "
        "(threshold ±50% of the median of up to 7 previous of the same tier); "
        "1 backup not compared (fewer than 3 previous of the same tier)"
    )


def test_upload_and_verification_missing_warn_then_clear(pg, tmp_path):
    when = dt.datetime(2026, 11, 25, 2, tzinfo=UTC)
    add_backup(pg, when, uploaded=False, verified=False, run_id="r1")
    add_backup(pg, when - dt.timedelta(hours=1), status="FAILED", error="boom", step="dump", run_id="r0",
        uploaded=False, verified=False)  # failures are not this rule's business
    found = run(pg, tmp_path)
    up = found["pg_backup_monitor/upload_missing/glimpse"]
    ver = found["pg_backup_monitor/verification_missing/glimpse"]
    assert (up.ok, up.severity, ver.ok, ver.severity) == (False, "warn", False, "warn")
    assert up.message == ("upload missing for 1 of 1 successful backup of glimpse in the last 24 h (threshold 0): "
                          "glimpse_daily_20261125_020000.dump.age (2026-11-25 02:00 UTC)")
    assert ver.message == ("verification missing for 1 of 1 successful backup of glimpse in the last 24 h "
                           "(threshold 0): glimpse_daily_20261125_020000.dump.age (2026-11-25 02:00 UTC)")

    add_backup(pg, when, uploaded=True, verified=True, run_id="r1")
    found = run(pg, tmp_path)
    up = found["pg_backup_monitor/upload_missing/glimpse"]
    ver = found["pg_backup_monitor/verification_missing/glimpse"]
    assert (up.ok, ver.ok) == (True, True)
    assert up.message == "upload missing for 0 of 1 successful backup of glimpse in the last 24 h (threshold 0)"
    assert ver.message == "verification missing for 0 of 1 successful backup of glimpse in the last 24 h (threshold 0)"


def test_free_space_against_the_real_disk(pg, tmp_path):
    free = shutil.disk_usage(tmp_path).free
    key = f"pg_backup_monitor/local_free_space/{tmp_path}"

    f = run(pg, tmp_path, MonitorSettings(targets=("glimpse",), min_free_bytes=free * 2, min_free_pct=None))[key]
    assert (f.ok, f.severity, f.target) == (False, "warn", str(tmp_path))
    assert f.message.startswith(f"free space under {tmp_path} is ")
    assert f.message.endswith(f"(threshold: at least {fmt_bytes(free * 2)} free)")

    f = run(pg, tmp_path, MonitorSettings(targets=("glimpse",), min_free_bytes=free // 2, min_free_pct=None))[key]
    assert (f.ok, f.dedup_key) == (True, key)
    assert f.details["exists"] is True and f.details["checked_path"] == str(tmp_path)


def test_free_space_of_a_missing_local_root_checks_its_parent(tmp_path):
    root = tmp_path / "backup" / "postgres"
    f = monitor.check_free_space(str(root), MonitorSettings(min_free_bytes=0))
    assert f.ok and f.dedup_key == f"pg_backup_monitor/local_free_space/{root}"
    assert f.message.startswith(f"local_root {root} does not exist; free space under its nearest existing "
                                f"parent {tmp_path} is ")
    assert f.details["exists"] is False


def test_free_space_message_is_exact(monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(monitor.shutil, "disk_usage", lambda path: usage(100 * 1024**3, 0, int(3.5 * 1024**3)))
    f = monitor.check_free_space("/", MonitorSettings(min_free_pct=10, min_free_bytes=5 * 1024**3))
    assert not f.ok
    assert f.message == "free space under / is 3.5 GiB, 3.5% of 100.0 GiB (threshold: at least 10% and 5.0 GiB free)"


def test_evaluate_leaves_no_open_transaction(catalog_db, tmp_path):
    with pgtools.connect(catalog_db) as pg:  # not autocommit, as an operator might pass it
        monitor.evaluate(pg, NOW, SETTINGS, str(tmp_path))
        assert pg.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


@pytest.mark.parametrize("kwargs, message", [
    ({"max_backup_age_hours": 0}, "MonitorSettings.max_backup_age_hours: must be positive, got 0"),
    ({"min_free_bytes": None}, "MonitorSettings: set min_free_bytes or min_free_pct (or both)"),
    ({"min_free_pct": 150}, "MonitorSettings.min_free_pct: must be within 0..100, got 150"),
    ({"size_min_previous": 9}, "MonitorSettings.size_min_previous: must be within 1..size_window (7), got 9"),
    ({"targets": "glimpse"}, "MonitorSettings.targets: a tuple of target names, not a string"),
    ({"timezone": "Mars/Base"}, "MonitorSettings.timezone: unknown time zone 'Mars/Base'"),
])
def test_settings_name_the_bad_field(kwargs, message):
    with pytest.raises(ValueError) as exc:
        MonitorSettings(**kwargs)
    assert str(exc.value) == message


def test_naive_now_is_refused(pg, tmp_path):
    with pytest.raises(ValueError, match="timezone-aware"):
        monitor.evaluate(pg, NOW.replace(tzinfo=None), SETTINGS, str(tmp_path))


# --- client-side encryption --------------------------------------------------------------------------

ENC_KEY = "pg_backup_monitor/not_encrypted/glimpse"


def test_an_unencrypted_newest_backup_warns_until_an_encrypted_one_succeeds(pg, tmp_path):
    """The catalog's own rows: an old encrypted backup does not excuse a newer plaintext one; NULL (a row from
    before the column) is not encrypted; a newer FAILED attempt changes nothing; an encrypted success clears."""
    add_backup(pg, dt.datetime(2026, 11, 23, 2, tzinfo=UTC), encrypted=True, run_id="r1")
    add_backup(pg, dt.datetime(2026, 11, 24, 2, tzinfo=UTC), encrypted=False, run_id="r2")
    f = run(pg, tmp_path)[ENC_KEY]
    assert (f.check, f.target, f.ok, f.severity) == ("not_encrypted", "glimpse", False, "warn")
    assert f.message == ("the newest backup of glimpse (daily, 2026-11-24 02:00 UTC) is not client-side encrypted "
                         "(encryption.recipients is empty)")
    assert f.details == {"recipients_configured": 0, "encrypted": False, "last_success": "2026-11-24T02:00:00+00:00",
                         "last_success_file": "glimpse_daily_20261124_020000.dump"}

    pg.execute("UPDATE backup_logs SET encrypted = NULL WHERE run_id = 'r2'")  # a row from before the column
    seoul = MonitorSettings(targets=("glimpse",), timezone="Asia/Seoul",
                            encryption_recipients=("age1" + "q" * 58, "age1" + "p" * 58))
    f = run(pg, tmp_path, seoul)[ENC_KEY]
    assert not f.ok and f.message == ("the newest backup of glimpse (daily, 2026-11-24 11:00 KST) is not client-side "
                                      "encrypted (encryption.recipients is set: the next backup will be)")

    add_backup(pg, dt.datetime(2026, 11, 25, 1, tzinfo=UTC), status="FAILED", error="dump: boom", step="dump",
               run_id="r3")
    assert run(pg, tmp_path)[ENC_KEY].ok is False

    add_backup(pg, dt.datetime(2026, 11, 25, 2, tzinfo=UTC), tier="weekly", encrypted=True, run_id="r4")
    f = run(pg, tmp_path)[ENC_KEY]
    assert f.ok and f.message == ("the newest backup of glimpse (weekly, 2026-11-25 02:00 UTC) is client-side "
                                  "encrypted (age)")


def test_the_encryption_warning_is_posted_once_and_cleared_once(pg, tmp_path):
    from pg_dataops.observe import alerts

    add_backup(pg, dt.datetime(2026, 11, 25, 2, tzinfo=UTC), encrypted=False, run_id="p1")
    pg.execute("TRUNCATE monitor_alerts")
    posted = []

    def check():
        alerts.check_and_alert(pg, NOW, SETTINGS, str(tmp_path), slack=posted.append,
                               pagerduty=lambda event: pytest.fail(f"nothing pages here: {event}"))

    check()
    assert posted == [":warning: *PostgreSQL backups*: the newest backup of glimpse (daily, 2026-11-25 02:00 UTC) is "
                      "not client-side encrypted (encryption.recipients is empty)"]
    check()  # unchanged: not posted again
    assert len(posted) == 1
    add_backup(pg, dt.datetime(2026, 11, 25, 2, 30, tzinfo=UTC), encrypted=True, run_id="p2")
    check()
    assert posted[1:] == [":white_check_mark: cleared: the newest backup of glimpse (daily, 2026-11-25 02:30 UTC) is "
                          "client-side encrypted (age)"]
    state = pg.execute("SELECT failing FROM monitor_alerts WHERE dedup_key = %s", (ENC_KEY,)).fetchone()
    assert state == (False,)
