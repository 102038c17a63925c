"""The archive check's rules on synthetic facts: every finding, with the segments and times it names."""

from __future__ import annotations

import datetime as dt
import json
import subprocess

import pytest
from pg_dataops.common import alerting as alerts
from pg_dataops.common import wal
from pg_dataops.common.config import load_config
from pg_dataops.common.errors import MASK
from pg_dataops.observe.alerts import MONITOR
from pg_dataops.pitr import archive_check as ac

UTC = dt.UTC
NOW = dt.datetime(2026, 12, 1, 3, 0, tzinfo=UTC)  # 12:00 KST
CFG = load_config(environ={})  # Asia/Seoul, RPO 60 min, archive_timeout 60 s
SEG = wal.SEGMENT_SIZE
URL = "s3://glimpse-backups/database/wal/glimpse/wals/"


def seg(n: int, tli: int = 1) -> wal.Segment:
    return wal.Segment(n, tli)


def archived(n: int, minutes_ago: float, tli: int = 1) -> wal.ArchivedWal:
    name = seg(n, tli).name()
    return wal.ArchivedWal(f"database/wal/glimpse/wals/{name[:16]}/{name}.gz", name, 4_000_000,
                           NOW - dt.timedelta(minutes=minutes_ago), seg(n, tli))


def history(tli: int, minutes_ago: float = 1) -> wal.ArchivedWal:
    return wal.ArchivedWal(f"database/wal/glimpse/wals/{tli:08X}.history.gz", f"{tli:08X}.history", 50,
                           NOW - dt.timedelta(minutes=minutes_ago), None)


def lsn_at(segno: int, offset: int = 0) -> str:
    return wal.format_lsn(segno * SEG + offset)


def server(**kw) -> ac.ServerFacts:
    base = dict(archived_count=9, last_archived_wal=seg(9).name(), last_archived_time=NOW - dt.timedelta(minutes=1),
                failed_count=0, stats_reset=NOW - dt.timedelta(days=1), current_lsn=lsn_at(10, 0x2000), timeline=1,
                archive_timeout_seconds=60, ready=0)
    return ac.ServerFacts(**{**base, **kw})


def barman(returncode: int | None = 0, output: str = "", timeline: int = 2) -> ac.BarmanResult:
    return ac.BarmanResult(("barman-cloud-check-wal-archive", "--timeline", str(timeline)), timeline, returncode,
                           output)


BASE = ("glimpse_base_20261201T003000Z", wal.Segment(3, 1))  # the oldest kept base backup starts in segment 3


def facts(archive=None, srv=None, base=BASE, bm=None) -> ac.ArchiveFacts:
    archive = [archived(n, 10 - n) for n in range(3, 10)] if archive is None else archive
    return ac.ArchiveFacts("glimpse", URL, srv or server(), tuple(archive), base, bm or barman())


def findings(f: ac.ArchiveFacts, cfg=CFG, now=NOW) -> dict[str, ac.Finding]:
    out = {x.check: x for x in ac.evaluate(f, cfg, now)}
    assert list(out) == list(ac.CHECKS)  # every check, every time: a vanished key would be "cleared"
    for x in out.values():
        assert x.dedup_key == f"pg_wal_archive_check/glimpse/{x.check}" and x.target == "glimpse"
        json.dumps(x.to_dict())  # XCom- and PagerDuty-safe
    return out


def test_a_healthy_archive_passes_every_check_and_says_so():
    out = findings(facts())
    assert [x.check for x in out.values() if not x.ok] == []
    assert {x.check: x.severity for x in out.values()} == {
        "archiving_failing": "page", "rpo_at_risk": "page", "wal_gaps": "page", "higher_timeline": "page",
        "archive_age": "warn", "ready_backlog": "warn", "segments_behind": "warn"}
    assert out["archiving_failing"].message == (
        "WAL archiving of glimpse works: last archived 000000010000000000000009 at 2026-12-01 11:59 KST")
    assert out["rpo_at_risk"].message == (
        "the newest WAL segment of glimpse in S3 (000000010000000000000009, uploaded 2026-12-01 11:59 KST) is "
        "1.0 min old (RPO 60 min)")
    assert out["wal_gaps"].message == (
        "WAL archive of glimpse is continuous from 000000010000000000000003 (start of base backup "
        "glimpse_base_20261201T003000Z) to 000000010000000000000009 (7 segments)")
    assert out["higher_timeline"].message == (
        "barman-cloud-check-wal-archive --timeline 2: no WAL of a timeline above 1 (the server's) in the archive "
        "of glimpse")
    assert out["ready_backlog"].message == "0 WAL file(s) of glimpse wait to be archived (.ready; warning at 8)"
    assert out["segments_behind"].message == (
        "glimpse writes 00000001000000000000000A: 0 complete segment(s) after the newest in S3 "
        "(000000010000000000000009; warning at 8)")


def test_archive_command_failing_now_pages_naming_the_segment_and_times():
    srv = server(failed_count=14, last_failed_wal=seg(10).name(), last_failed_time=NOW - dt.timedelta(seconds=30),
                 last_archived_time=NOW - dt.timedelta(minutes=20))
    f = findings(facts(srv=srv))["archiving_failing"]
    assert (f.ok, f.severity) == (False, "page")
    assert f.message == (
        "WAL archiving of glimpse is failing: archive_command failed for 00000001000000000000000A at "
        "2026-12-01 11:59 KST, after the last success (000000010000000000000009 at 2026-12-01 11:40 KST); "
        "14 failed attempts since 2026-11-30 12:00 KST (pg_stat_archiver; the reason is in the server log)")
    assert f.details["failed_count"] == 14 and f.details["last_failed_wal"] == "00000001000000000000000A"


def test_failing_before_any_success_pages_and_old_failures_do_not():
    never = server(last_archived_wal=None, last_archived_time=None, archived_count=0, failed_count=3,
                   last_failed_wal=seg(1).name(), last_failed_time=NOW - dt.timedelta(minutes=2))
    f = findings(facts(srv=never))["archiving_failing"]
    assert not f.ok and "after the last success (none since 2026-11-30 12:00 KST)" in f.message
    recovered = server(failed_count=3, last_failed_wal=seg(7).name(), last_failed_time=NOW - dt.timedelta(minutes=30))
    f = findings(facts(srv=recovered))["archiving_failing"]
    assert f.ok and f.message.endswith(
        "; 3 failed attempts since 2026-11-30 12:00 KST, the last for 000000010000000000000007 at 2026-12-01 11:30 KST")
    fresh = server(last_archived_wal=None, last_archived_time=None, archived_count=0)
    f = findings(facts(srv=fresh))["archiving_failing"]
    assert f.ok and f.message == ("WAL archiving of glimpse: nothing archived or failed yet since 2026-11-30 12:00 "
                                  "KST (pg_stat_archiver)")


def test_archive_mode_off_pages():
    f = findings(facts(srv=server(archive_mode="off")))["archiving_failing"]
    assert not f.ok and f.message.startswith("WAL archiving of glimpse is off (archive_mode = off): no WAL reaches S3")


def test_rpo_at_risk_when_the_newest_segment_is_older_than_the_rpo_and_wal_waits():
    archive = [archived(n, 120 - n) for n in range(3, 10)]  # newest (9) uploaded 111 min ago
    srv = server(current_lsn=lsn_at(13, 0x500))  # 3 complete segments (10, 11, 12) not in S3
    out = findings(facts(archive, srv))
    f = out["rpo_at_risk"]
    assert (f.ok, f.severity) == (False, "page")
    assert f.message == (
        "RPO at risk: the newest WAL segment of glimpse in S3 (000000010000000000000009, uploaded 2026-12-01 "
        "10:09 KST) is 111.0 min old, above the RPO of 60 min; the server writes 00000001000000000000000D, "
        "3 complete segment(s) after it")
    assert f.details["age_minutes"] == 111.0 and f.details["unarchived_bytes"] == 3 * SEG + 0x500
    age = out["archive_age"]
    assert (age.ok, age.severity) == (False, "warn")
    assert age.message.startswith("WAL archiving lags: the newest WAL segment of glimpse in S3 "
                                  "(000000010000000000000009, uploaded 2026-12-01 10:09 KST) is 111.0 min old "
                                  "(warning above 2 x archive_timeout (60 s) + 60 s = 3 min)")


def test_an_idle_server_is_not_at_risk_however_old_its_last_segment():
    archive = [archived(n, 300 - n) for n in range(3, 10)]
    idle = server(current_lsn=lsn_at(10))  # exactly the boundary after segment 9: nothing written since
    out = findings(facts(archive, idle))
    assert out["rpo_at_risk"].ok and out["archive_age"].ok
    assert out["rpo_at_risk"].message.endswith(
        "is 291.0 min old (RPO 60 min); the server has written no WAL since (idle): nothing is waiting to be archived")
    # One record after the boundary: now it counts.
    busy = server(current_lsn=lsn_at(10, 0x28 + 1))
    assert not findings(facts(archive, busy))["rpo_at_risk"].ok


def test_a_standby_is_judged_by_age_alone():
    archive = [archived(n, 120 - n) for n in range(3, 10)]
    standby = server(in_recovery=True, current_lsn=None)
    out = findings(facts(archive, standby))
    assert not out["rpo_at_risk"].ok and out["rpo_at_risk"].message.endswith(
        "the server's position is unknown (in recovery)")
    assert out["segments_behind"].ok and out["segments_behind"].message == (
        "glimpse is in recovery: no current WAL position to compare with S3")


def test_an_empty_archive_pages():
    out = findings(facts([], base=None))
    assert not out["rpo_at_risk"].ok and out["rpo_at_risk"].message == (
        f"no WAL segment of glimpse in {URL}: nothing to recover with (RPO 60 min)")
    assert not out["archive_age"].ok
    assert out["wal_gaps"].ok and out["wal_gaps"].message.startswith("no WAL of glimpse archived yet and no base")
    with_base = findings(facts([]))["wal_gaps"]
    assert not with_base.ok and with_base.message == (
        "WAL archive of glimpse is missing 1 segment(s) from 000000010000000000000003 (start of base backup "
        "glimpse_base_20261201T003000Z) on (nothing archived from there): 000000010000000000000003; recovery from "
        "there cannot start")


def test_lag_warning_between_twice_archive_timeout_and_the_rpo():
    archive = [archived(n, 20 - n) for n in range(3, 10)]  # newest 11 min old
    out = findings(facts(archive))
    assert out["rpo_at_risk"].ok and not out["archive_age"].ok
    assert out["archive_age"].details["warn_seconds"] == 180
    fresh = [archived(n, 11.5 - n) for n in range(3, 10)]  # newest 2.5 min old: below 3 min
    assert findings(facts(fresh))["archive_age"].ok
    # archive_timeout = 0 on the server: no lag rule, and the message says why.
    no_timeout = findings(facts(archive, server(archive_timeout_seconds=0)))["archive_age"]
    assert no_timeout.ok and "archive_timeout is 0 on the server" in no_timeout.message


def test_gaps_are_named_from_the_oldest_base_backup_start():
    archive = [archived(n, 10) for n in (3, 4, 6, 9, 10)]
    f = findings(facts(archive, server(current_lsn=lsn_at(11, 8))))["wal_gaps"]
    assert (f.ok, f.severity) == (False, "page")
    assert f.message == (
        "WAL archive of glimpse is missing 3 segment(s) from 000000010000000000000003 (start of base backup "
        "glimpse_base_20261201T003000Z) to 00000001000000000000000A: 000000010000000000000005, "
        "000000010000000000000007..000000010000000000000008 (2 segments); recovery from there stops at "
        "000000010000000000000004")
    assert f.details["gaps"] == [
        {"first": "000000010000000000000005", "last": "000000010000000000000005", "count": 1},
        {"first": "000000010000000000000007", "last": "000000010000000000000008", "count": 2}]


def test_wal_deleted_under_the_oldest_base_backup_is_a_gap_at_the_start():
    archive = [archived(n, 10) for n in (5, 6, 7)]
    f = findings(facts(archive, base=("glimpse_base_20261130T033000Z", seg(2))))["wal_gaps"]
    assert not f.ok and f.message.endswith(
        ": 000000010000000000000002..000000010000000000000004 (3 segments); recovery from there cannot start")


def test_without_a_base_backup_continuity_starts_at_the_oldest_segment():
    archive = [archived(n, 10) for n in (5, 6, 8)]
    f = findings(facts(archive, base=None))["wal_gaps"]
    assert not f.ok and f.message == (
        "WAL archive of glimpse is missing 1 segment(s) from 000000010000000000000005 (the oldest archived; no "
        "base backup yet) to 000000010000000000000008: 000000010000000000000007; recovery from there stops at "
        "000000010000000000000006")


def test_many_gaps_are_counted_after_the_first_ten():
    archive = [archived(n, 10) for n in range(3, 60, 2)]
    f = findings(facts(archive))["wal_gaps"]
    assert not f.ok and f.message.count("00000001000000000000") == 1 + 1 + 10 + 1
    assert " and 18 more gap(s); " in f.message


def test_a_timeline_switch_continues_the_sequence():
    archive = [archived(3, 10), archived(4, 10), history(2), archived(5, 5, tli=2), archived(6, 4, tli=2)]
    out = findings(facts(archive, server(timeline=2, current_lsn=lsn_at(7, 100)), bm=barman(timeline=3)))
    assert out["wal_gaps"].ok and out["wal_gaps"].message.endswith("to 000000020000000000000006 (4 segments)")


def test_a_higher_timeline_in_the_archive_pages_naming_its_files():
    output = ("ERROR: WAL archive check failed for server glimpse: Found 2 files in WAL archive equal to or newer "
              "than timeline 2")
    archive = [*(archived(n, 10) for n in range(3, 10)), history(2), archived(9, 1, tli=2)]
    f = findings(facts(archive, bm=barman(1, output)))["higher_timeline"]
    assert (f.ok, f.severity) == (False, "page")
    assert f.message == (
        f"barman-cloud-check-wal-archive --timeline 2 failed for glimpse (exit 1): {output}; in {URL} above "
        "timeline 1: 00000002.history, 000000020000000000000009. Another server (a promoted copy or a restored "
        "clone?) archives into this place: stop its archiving or give it its own pitr target, or recovery will "
        "follow its timeline")
    assert f.details["higher_timeline_files"] == ["00000002.history", "000000020000000000000009"]
    broken = findings(facts(bm=barman(None, "/x/barman-cloud-check-wal-archive not found: install ...")))
    assert not broken["higher_timeline"].ok and broken["higher_timeline"].message == (
        "barman-cloud-check-wal-archive --timeline 2 could not run for glimpse: /x/barman-cloud-check-wal-archive "
        "not found: install ...")


def test_ready_backlog_warns_and_a_missing_privilege_names_the_role():
    srv = server(ready=9, oldest_ready=seg(10).name(), oldest_ready_since=NOW - dt.timedelta(minutes=42))
    f = findings(facts(srv=srv))["ready_backlog"]
    assert (f.ok, f.severity) == (False, "warn")
    assert f.message == ("9 WAL file(s) of glimpse wait to be archived (.ready; warning at 8), the oldest "
                         "00000001000000000000000A since 2026-12-01 11:18 KST")
    assert findings(facts(srv=server(ready=7, oldest_ready=seg(10).name(), oldest_ready_since=NOW)))[
        "ready_backlog"].ok
    denied = server(ready=None, role="checker", ready_error="permission denied for function pg_ls_archive_statusdir")
    f = findings(facts(srv=denied))["ready_backlog"]
    assert not f.ok and f.message == (
        "cannot read the .ready backlog of glimpse: pg_ls_archive_statusdir() needs superuser or the pg_monitor role "
        "(GRANT pg_monitor TO checker); the server said: permission denied for function pg_ls_archive_statusdir")


def test_segments_behind_warns_when_the_server_is_far_ahead_of_s3():
    f = findings(facts(srv=server(current_lsn=lsn_at(18, 1))))["segments_behind"]
    assert (f.ok, f.severity) == (False, "warn")
    assert f.message == ("glimpse writes 000000010000000000000012: 8 complete segment(s) after the newest in S3 "
                         "(000000010000000000000009; warning at 8)")
    assert findings(facts(srv=server(current_lsn=lsn_at(17, 1))))["segments_behind"].ok


def test_facts_summary_is_json_safe():
    summary = facts([*(archived(n, 10) for n in range(3, 10)), history(2)]).to_dict()
    json.dumps(summary)
    assert (summary["archived_segments"], summary["oldest_segment"], summary["newest_segment"]) == (
        7, "000000010000000000000003", "000000010000000000000009")
    assert summary["history_files"] == ["00000002.history"]
    assert summary["base_backup"] == {"backup_id": "glimpse_base_20261201T003000Z",
                                      "start_segment": "000000010000000000000003"}


def test_settings_in_server_units():
    assert [ac._seconds(v) for v in ("1min", "60s", "0", "2h", "500ms")] == [60, 60, 0, 7200, 0]


# --- alerts: the monitor's machinery under our own keys ----------------------------------------------


def test_pages_and_warnings_go_out_under_the_archive_checks_own_keys_and_texts():
    srv = server(failed_count=1, last_failed_wal=seg(10).name(), last_failed_time=NOW,
                 ready=9, oldest_ready=seg(10).name(), oldest_ready_since=NOW)
    found = list(findings(facts(srv=srv)).values())
    source = ac.alert_source("glimpse")
    steps = {s.dedup_key: s for s in alerts.plan_alerts(found, {}, source)}
    page = steps["pg_wal_archive_check/glimpse/archiving_failing"]
    assert page.send == "pagerduty_trigger" and page.text.startswith("WAL archive check: WAL archiving of glimpse "
                                                                     "is failing: archive_command failed for ")
    event = page.pagerduty_event()
    assert (event["action"], event["dedup_key"], event["group"], event["component"]) == (
        "trigger", "pg_wal_archive_check/glimpse/archiving_failing", "pg_wal_archive_check", "glimpse")
    warn = steps["pg_wal_archive_check/glimpse/ready_backlog"]
    assert warn.send == "slack" and warn.text.startswith(":warning: *PostgreSQL WAL archive*: 9 WAL file(s) of glimpse")
    assert [s.send for k, s in steps.items() if k not in (page.dedup_key, warn.dedup_key)] == [None] * 5
    # Cleared: the same key resolves, once.
    state = {page.dedup_key: {"failing": True, "severity": "page"}, warn.dedup_key: {"failing": True}}
    healthy = {s.dedup_key: s for s in alerts.plan_alerts(list(findings(facts()).values()), state, source)}
    assert healthy[page.dedup_key].send == "pagerduty_resolve"
    assert healthy[page.dedup_key].pagerduty_event()["dedup_key"] == page.dedup_key
    assert healthy[warn.dedup_key].text == (":white_check_mark: cleared: 0 WAL file(s) of glimpse wait to be "
                                            "archived (.ready; warning at 8)")


def test_check_and_alert_sends_first_then_fails_on_a_page(monkeypatch):
    srv = server(failed_count=1, last_failed_wal=seg(10).name(), last_failed_time=NOW)
    bad = ac.ArchiveCheck(facts(srv=srv))
    bad.findings = ac.evaluate(bad.facts, CFG, NOW)
    calls = []
    monkeypatch.setattr(ac, "check_archive", lambda *a, **k: bad)
    monkeypatch.setattr(alerts, "deliver", lambda pg, found, now, **kw: calls.append(
        (kw["source"].key_prefix, [f.check for f in found if not f.ok])) or {"sent": []})
    with pytest.raises(ac.ArchiveCheckFailed, match=r"^WAL archive check of glimpse: \[archiving_failing\] WAL "
                                                    r"archiving of glimpse is failing"):
        ac.check_and_alert(None, None, CFG, "glimpse", NOW, credentials={}, catalog=None, slack=print,
                           pagerduty=print)
    assert calls == [("pg_wal_archive_check/glimpse/", ["archiving_failing"])]
    good = ac.ArchiveCheck(facts())
    good.findings = ac.evaluate(good.facts, CFG, NOW)
    monkeypatch.setattr(ac, "check_archive", lambda *a, **k: good)
    out = ac.check_and_alert(None, None, CFG, "glimpse", NOW, credentials={}, catalog=None, slack=print,
                             pagerduty=print)
    json.dumps(out)
    assert out["facts"]["newest_segment"] == "000000010000000000000009" and len(out["findings"]) == 7


def test_warnings_alone_do_not_fail_the_run(monkeypatch):
    warn_only = ac.ArchiveCheck(facts(srv=server(ready=20, oldest_ready=seg(10).name(), oldest_ready_since=NOW)))
    warn_only.findings = ac.evaluate(warn_only.facts, CFG, NOW)
    monkeypatch.setattr(ac, "check_archive", lambda *a, **k: warn_only)
    monkeypatch.setattr(alerts, "deliver", lambda *a, **k: {"sent": [{"dedup_key": "k", "send": "slack"}]})
    out = ac.check_and_alert(None, None, CFG, "glimpse", NOW, credentials={}, catalog=None, slack=print,
                             pagerduty=print)
    assert [f["check"] for f in out["findings"] if not f["ok"]] == ["ready_backlog"]


# --- the Barman tool: credentials in its environment only ---------------------------------------------


CREDS = {"access_key": "AKIATESTKEY", "secret_key": "s3cr3t-value-long-enough", "token": None,
         "region": "eu-west-1", "endpoint_url": "http://minio:9000"}


def test_barman_check_gets_credentials_in_its_environment_never_in_argv(monkeypatch):
    monkeypatch.setenv("AWS_PROFILE", "ambient")  # the worker's own AWS settings must not leak in
    monkeypatch.setenv("AIRFLOW_CONN_GLIMPSE_DB", '{"password": "db-secret"}')  # nor its other secrets
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy:3128")  # what it needs to reach S3 is kept
    seen = {}

    def fake_run(argv, **kw):
        seen.update(argv=argv, **kw)
        return subprocess.CompletedProcess(argv, 1, "", "2026-12-01 INFO start\nERROR: it said s3cr3t-value-long-enough "
                                                        "no\n")

    result = ac.run_barman_check(CFG, "glimpse", 3, CREDS, run=fake_run)
    assert seen["argv"] == ["/opt/pg-dataops/wal-tools/bin/barman-cloud-check-wal-archive", "--cloud-provider",
                            "aws-s3", "--endpoint-url", "http://minio:9000", "--timeline", "3",
                            "s3://glimpse-backups/database/wal", "glimpse"]
    assert not any("s3cr3t" in a or "AKIA" in a for a in seen["argv"])
    env = seen["env"]
    assert (env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"], env["AWS_DEFAULT_REGION"]) == (
        "AKIATESTKEY", "s3cr3t-value-long-enough", "eu-west-1")
    assert "AWS_PROFILE" not in env and "AWS_SESSION_TOKEN" not in env and "AIRFLOW_CONN_GLIMPSE_DB" not in env
    assert env["HTTPS_PROXY"] == "http://proxy:3128" and env["PATH"]
    assert (result.returncode, result.timeline) == (1, 3)
    assert result.output == f"2026-12-01 INFO start / ERROR: it said {MASK} no"


def test_barman_check_that_cannot_run_says_why():
    def missing(argv, **kw):
        raise FileNotFoundError(argv[0])

    result = ac.run_barman_check(CFG, "glimpse", 2, CREDS, run=missing)
    assert result.returncode is None and result.output.startswith(
        "/opt/pg-dataops/wal-tools/bin/barman-cloud-check-wal-archive not found: install the WAL tools")

    def slow(argv, **kw):
        raise subprocess.TimeoutExpired(argv, kw["timeout"])

    assert ac.run_barman_check(CFG, "glimpse", 2, CREDS, run=slow).output == "no answer within 300 s"


def test_the_monitor_and_the_archive_check_never_clear_each_others_keys(monkeypatch):
    """Both keep their state in monitor_alerts; each source plans, records and forgets only its own keys."""
    from pg_dataops.catalog import monitor_alerts

    rows = {
        "pg_backup_monitor/last_daily_backup_age/glimpse": {"failing": True, "severity": "page", "message": "old"},
        "pg_wal_archive_check/glimpse/archiving_failing": {"failing": True, "severity": "page", "message": "x"},
        "pg_wal_archive_check/other/ready_backlog": {"failing": True, "severity": "warn", "message": "y"},
    }
    recorded, forgotten, sent = [], [], []
    monkeypatch.setattr(monitor_alerts, "load_state", lambda pg: dict(rows))
    monkeypatch.setattr(monitor_alerts, "record", lambda pg, key, **kw: recorded.append(key))
    monkeypatch.setattr(monitor_alerts, "forget", lambda pg, key: forgotten.append(key))

    # The monitor with no finding at all: only its own key is "no longer checked".
    alerts.deliver(None, [], NOW, slack=sent.append, pagerduty=sent.append, source=MONITOR)
    assert forgotten == ["pg_backup_monitor/last_daily_backup_age/glimpse"] and recorded == []
    assert [e["dedup_key"] for e in sent] == ["pg_backup_monitor/last_daily_backup_age/glimpse"]

    # glimpse's archive check: its seven keys, nothing of the monitor's nor of target "other".
    forgotten.clear()
    sent.clear()
    out = alerts.deliver(None, ac.evaluate(facts(), CFG, NOW), NOW, slack=sent.append, pagerduty=sent.append,
                         source=ac.alert_source("glimpse"))
    assert sorted(recorded) == sorted(ac.dedup_key("glimpse", c) for c in ac.CHECKS) and forgotten == []
    assert out["sent"] == [{"dedup_key": "pg_wal_archive_check/glimpse/archiving_failing",
                            "send": "pagerduty_resolve"}]
    assert sent[0]["action"] == "resolve" and sent[0]["group"] == "pg_wal_archive_check"
