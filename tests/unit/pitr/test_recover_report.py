"""pg_pitr_restore's switch-over commands, swap preview, catalog row and Slack report."""

from __future__ import annotations

import datetime as dt

import pytest
from pg_dataops.pitr import copy, recoveries

PLAN = {"target": "glimpse", "target_time": "2026-12-01T05:29:59+00:00", "source_database": "glimpse",
        "source_exists": True, "target_time_text": "2026-12-01 14:29:59 KST (2026-12-01T05:29:59Z)",
        "base_backup": "glimpse_base_20261130T183000Z", "database_name": "glimpse_recovery", "swap": False}
RESTORED = {"restore_seconds": 12.5}
RECOVERED = {"state": "promoted", "replay_seconds": 30.25, "reached_time": "2026-12-01T05:29:58.1+00:00",
             "stop_message": "recovery stopping before commit of transaction 748, time 2026-12-01 05:30:02+00",
             "archive_ends_before_target": False, "last_restored_segment": "000000010000000000000009"}
CHECKED = {"tables": 7, "rows": 50123, "runbook": {"users": 3000, "matches": 1200, "messages": 9000},
           "check_seconds": 1.25}
NOW = dt.datetime(2026, 12, 1, 6, tzinfo=dt.UTC)


def copied(old="glimpse_before_pitr_20261201_150000", **plan):
    c = {"database": "glimpse_recovery", "tables": 7, "rows": 50123, "copy_seconds": 20.0, "warnings": []}
    c.update(copy.preview({**PLAN, **plan}, CHECKED, c, old))
    return c


def test_switch_over_commands_quote_every_name():
    assert copy.switch_over_commands("glimpse", "glimpse_recovery", "glimpse_before_pitr_20261201_150000") == [
        'ALTER DATABASE "glimpse" WITH ALLOW_CONNECTIONS false;',
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = 'glimpse';",
        'ALTER DATABASE "glimpse" RENAME TO "glimpse_before_pitr_20261201_150000";',
        'ALTER DATABASE "glimpse_recovery" RENAME TO "glimpse";',
        'ALTER DATABASE "glimpse_before_pitr_20261201_150000" WITH ALLOW_CONNECTIONS true;',
    ]
    odd = copy.switch_over_commands("Prod's \"db\"", "rec", "old")
    assert odd[1].endswith("datname = 'Prod''s \"db\"';") and odd[2] == 'ALTER DATABASE "Prod\'s ""db""" RENAME TO "old";'
    assert copy.switch_over_commands("glimpse", "glimpse_recovery", "x", production_exists=False) == [
        'ALTER DATABASE "glimpse_recovery" RENAME TO "glimpse";']
    assert copy.rollback_commands("glimpse", "glimpse_recovery", "old")[1:] == [
        'ALTER DATABASE "glimpse" RENAME TO "glimpse_recovery";', 'ALTER DATABASE "old" RENAME TO "glimpse";']


def test_the_preview_says_what_the_swap_changes():
    c = copied()
    assert c["expected_confirm"] == "glimpse" and c["old_database"] == "glimpse_before_pitr_20261201_150000"
    md = c["markdown"]
    assert md.startswith("### Swap glimpse_recovery into place as glimpse\n")
    assert "**glimpse_recovery** (the recovered copy: 7 tables, 50,123 rows; users 3,000, matches 1,200, messages " \
           "9,000) is renamed to **glimpse**" in md
    assert "**glimpse** (the current database) is renamed to **glimpse_before_pitr_20261201_150000** and kept" in md
    assert 'ALTER DATABASE "glimpse_recovery" RENAME TO "glimpse";' in md and "To roll back afterwards:" in md
    gone = copied(source_exists=False)
    assert gone["old_database"] is None and gone["rollback"] == [] and "there is no database **glimpse** now" in gone[
        "markdown"]


def test_compare_counts_names_every_difference():
    assert copy.compare_counts({"public.a": 1, "public.b": 2}, {"public.a": 1, "public.b": 2}) == []
    assert copy.compare_counts({"public.a": 1, "public.b": 2}, {"public.a": 0, "public.c": 5}) == [
        "table public.a: 0 rows in the copy, 1 recovered", "table public.b is missing from the copy",
        "table public.c is in the copy but not in the recovered database"]


def row(**kw):
    args = {"kind": "restore", "target": "glimpse", "plan": PLAN, "restored": RESTORED, "recovered": RECOVERED,
            "checked": CHECKED, "copied": copied(), "swapped": None, "approval": None, "error": None,
            "objective_seconds": 14400.0, "dag_id": "pg_pitr_restore", "run_id": "manual__1"}
    args.update(kw)
    return recoveries.recovery_row(**args)


def test_a_successful_recovery_row_and_report():
    r = row()
    assert (r["status"], r["error_message"], r["total_seconds"]) == ("SUCCESS", None, 64.0)
    assert (r["base_backup_id"], r["recovered_database"], r["swapped"], r["old_database"], r["approved_by"]) == (
        "glimpse_base_20261130T183000Z", "glimpse_recovery", False, None, None)
    text = recoveries.report_text(r, plan=PLAN, recovered=RECOVERED, checked=CHECKED, copied=copied(), swapped=None,
                                  approval=None, window_text="glimpse: a .. b", now=NOW)
    lines = text.splitlines()
    assert lines[0] == (":white_check_mark: Point-in-time recovery of glimpse to 2026-12-01 14:29:59 KST "
                        "(2026-12-01T05:29:59Z): glimpse_recovery is ready on the target server")
    assert "recovery stopping before commit of transaction 748" in lines[1]
    assert lines[2].startswith("7 tables, 50,123 rows (users 3,000, matches 1,200, messages 9,000)")
    assert lines[3] == ("restore 12.5 s + replay 30.2 s + check 1.2 s + copy 20.0 s = 1 min 4 s (measured RTO 1 min 4 s "
                        "is within the objective 4 h (0.4%))")
    assert "Not swapped (swap not requested). To switch over (psql as a superuser, database postgres):" in text
    assert 'ALTER DATABASE "glimpse" RENAME TO "glimpse_before_pitr_20261201_150000";' in text


def test_a_swapped_recovery_names_the_kept_database_and_the_approver():
    approval = {"approved": True, "responded_by": "confirm param", "decision": "approved"}
    swapped = {"swapped": True, "old_database": "glimpse_before_pitr_20261201_150000"}
    r = row(swapped=swapped, approval=approval, plan={**PLAN, "swap": True})
    assert (r["swapped"], r["old_database"], r["approved_by"]) == (True, "glimpse_before_pitr_20261201_150000",
                                                                   "confirm param")
    text = recoveries.report_text(r, plan={**PLAN, "swap": True}, recovered=RECOVERED, checked=CHECKED,
                                  copied=copied(), swapped=swapped, approval=approval, window_text=None, now=NOW)
    assert ("Swapped (swap approved by confirm param): glimpse is now the recovered copy; the previous database is "
            "kept as glimpse_before_pitr_20261201_150000.") in text
    assert 'ALTER DATABASE "glimpse_before_pitr_20261201_150000" RENAME TO "glimpse";' in text  # the rollback


@pytest.mark.parametrize(("approval", "said"), [
    ({"approved": False, "responded_by": "alice", "timed_out": False}, "swap rejected by alice"),
    ({"approved": False, "responded_by": "nobody (timeout)", "timed_out": True},
     "swap rejected: nobody answered the approval in time (approval_timeout_minutes)"),
    (None, "swap not approved (the approval step did not answer)"),
])
def test_a_rejected_swap_is_said(approval, said):
    r = row(approval=approval, plan={**PLAN, "swap": True})
    assert r["status"] == "SUCCESS" and r["swapped"] is False and r["approved_by"] is None
    text = recoveries.report_text(r, plan={**PLAN, "swap": True}, recovered=RECOVERED, checked=CHECKED,
                                  copied=copied(), swapped=None, approval=approval, window_text=None, now=NOW)
    assert f"Not swapped ({said})" in text


def test_failed_and_refused_recoveries_are_recorded_with_the_cause():
    failed = row(copied=None, error=("recover", "recover: WAL segment 000000010000000000000006 is missing"))
    assert (failed["status"], failed["total_seconds"]) == ("FAILED", None)
    assert failed["error_message"] == "recover: WAL segment 000000010000000000000006 is missing"
    assert row(error=("check", "boom"))["error_message"] == "check: boom"
    text = recoveries.report_text(failed, plan=PLAN, recovered=None, checked=None, copied=None, swapped=None,
                                  approval=None, window_text="glimpse: a .. b")
    assert text.splitlines() == [
        ":x: Point-in-time recovery of glimpse to 2026-12-01 14:29:59 KST (2026-12-01T05:29:59Z) failed: recover: "
        "WAL segment 000000010000000000000006 is missing",
        "Recoverable window: glimpse: a .. b",
        "Nothing of glimpse was changed; the scratch copy on the worker was removed."]
    refused = row(plan=None, restored=None, recovered=None, checked=None, copied=None,
                  error=("validate", "validate: target_time ... is after the recoverable window glimpse: a .. b"))
    assert refused["status"] == "REFUSED" and refused["base_backup_id"] is None
    assert recoveries.report_text(refused, plan=None, recovered=None, checked=None, copied=None, swapped=None,
                                  approval=None, window_text="glimpse: a .. b", asked_time="2026-12-01T15:00:00+09:00"
                                  ).splitlines() == [
        ":x: Point-in-time recovery of glimpse to 2026-12-01T15:00:00+09:00 refused before anything started: validate: "
        "target_time ... is after the recoverable window glimpse: a .. b",
        "Nothing of glimpse was changed; no scratch copy was made."]
    with pytest.raises(ValueError, match="kind must be one of"):
        row(kind="other")


def test_a_drill_row_needs_no_copy():
    r = row(kind="drill", copied=None, swapped=None)
    assert (r["status"], r["swapped"], r["total_seconds"]) == ("SUCCESS", None, 44.0)
