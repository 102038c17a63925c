"""What the monitor alerts, and when: pages while failing and one resolve; Slack only on state changes."""

from __future__ import annotations

from pg_dataops.observe.alerts import plan_alerts
from pg_dataops.observe.monitor import Finding

AGE_KEY = "pg_backup_monitor/last_daily_backup_age/glimpse"
SIZE_KEY = "pg_backup_monitor/backup_size_deviation/glimpse"

def finding(key: str, ok: bool, severity: str, message: str = "m") -> Finding:
    check, target = key.split("/")[1:3]
    return Finding(check, target, ok, severity, message, key)


def test_plan_pages_every_failing_run_and_resolves_only_a_failing_key():
    page_failing = finding(AGE_KEY, False, "page")
    assert [s.send for s in plan_alerts([page_failing], {})] == ["pagerduty_trigger"]
    assert [s.send for s in plan_alerts([page_failing], {AGE_KEY: {"failing": True}})] == ["pagerduty_trigger"]
    page_ok = finding(AGE_KEY, True, "page")
    assert [s.send for s in plan_alerts([page_ok], {AGE_KEY: {"failing": True}})] == ["pagerduty_resolve"]
    assert [s.send for s in plan_alerts([page_ok], {AGE_KEY: {"failing": False}})] == [None]
    assert [s.send for s in plan_alerts([page_ok], {})] == [None]  # never failed: no resolve of nothing


def test_plan_posts_warnings_on_state_changes_only():
    warn_failing, warn_ok = finding(SIZE_KEY, False, "warn", "a <b> & c"), finding(SIZE_KEY, True, "warn", "fine")
    [step] = plan_alerts([warn_failing], {})
    assert (step.send, step.failing, step.text) == ("slack", True, ":warning: *PostgreSQL backups*: a &lt;b&gt; &amp; c")
    assert [s.send for s in plan_alerts([warn_failing], {SIZE_KEY: {"failing": True}})] == [None]
    [step] = plan_alerts([warn_ok], {SIZE_KEY: {"failing": True}})
    assert (step.send, step.failing, step.text) == ("slack", False, ":white_check_mark: cleared: fine")
    assert [s.send for s in plan_alerts([warn_ok], {})] == [None]


def test_plan_clears_and_forgets_keys_no_check_produces_any_more():
    gone_page = "pg_backup_monitor/last_daily_backup_age/old"
    gone_warn = "pg_backup_monitor/local_free_space//old/root"
    gone_ok = "pg_backup_monitor/upload_missing/old"
    state = {gone_page: {"failing": True, "severity": "page", "message": "stale"},
             gone_warn: {"failing": True, "severity": "warn", "message": "disk full"},
             gone_ok: {"failing": False, "severity": "warn", "message": "fine"}}
    steps = {s.dedup_key: s for s in plan_alerts([], state)}
    assert (steps[gone_page].send, steps[gone_page].forget) == ("pagerduty_resolve", True)
    assert steps[gone_page].text == f"cleared: {gone_page} is no longer checked (its target or local_root left the " \
                                    "configuration)"
    assert (steps[gone_warn].send, steps[gone_warn].forget) == ("slack", True)
    assert steps[gone_warn].text.endswith("; it last said: disk full")
    assert (steps[gone_ok].send, steps[gone_ok].forget) == (None, True)
