import datetime as dt

import pytest
from pg_dataops.drill import rto
from pg_dataops.drill.rto import RtoExceeded, assess_rto, drill_row, drill_text

NOW = dt.datetime(2026, 11, 29, 5, tzinfo=dt.UTC)
HOUR = 3600.0


def weeks_ago(n):
    return NOW - dt.timedelta(weeks=n)


def test_exceeded():
    v = assess_rto(5 * HOUR, 4 * HOUR, [], NOW)
    assert v.status == "exceeded"
    assert v.message == "measured RTO 5 h exceeds the objective 4 h (125%)"


def test_flat_history_is_ok():
    hist = [(weeks_ago(n), 1 * HOUR) for n in range(1, 9)]
    v = assess_rto(1 * HOUR, 4 * HOUR, hist, NOW)
    assert v.status == "ok" and v.message == "measured RTO 1 h is within the objective 4 h (25.0%)"


def test_growing_trend_warns_before_the_objective_is_hit():
    # +0.3 h a week: 2.0 h now, the objective (4 h) in about 47 days.
    hist = [(weeks_ago(n), (2.0 - 0.3 * n) * HOUR) for n in range(1, 6)]
    v = assess_rto(2.0 * HOUR, 4 * HOUR, hist, NOW)
    assert v.status == "trend"
    assert "reaches the objective in about 47 days" in v.message
    assert v.message == ("measured RTO 2 h is within the objective 4 h (50%), but growing 2 min 34 s per day: "
                         "it reaches the objective in about 47 days")
    assert v.projected_seconds > 4 * HOUR


def test_slow_growth_far_from_objective_is_ok():
    hist = [(weeks_ago(n), (600 - 5 * n)) for n in range(1, 6)]
    assert assess_rto(600, 4 * HOUR, hist, NOW).status == "ok"


def test_too_few_points_no_trend():
    hist = [(weeks_ago(1), 1.0 * HOUR), (weeks_ago(2), 0.2 * HOUR)]
    assert assess_rto(3.9 * HOUR, 4 * HOUR, hist, NOW).status == "ok"


def test_drills_all_at_one_moment_draw_no_trend():
    hist = [(NOW, 1.0 * HOUR), (NOW, 0.2 * HOUR), (NOW, 2.0 * HOUR)]
    assert assess_rto(3.0 * HOUR, 4 * HOUR, hist, NOW).status == "ok"


DOC = {"file": "glimpse_daily_20261125_020000.dump", "size": 123_456_789, "type": "daily",
       "timestamp": "2026-11-24T17:00:00+00:00"}
LATEST = {"key": "database/daily/glimpse_daily_20261125_020000.dump", "manifest": DOC, "target": "glimpse"}
DOWNLOAD = {"path": "/x/glimpse_daily_20261125_020000.dump", "download_seconds": 12.34}
RESTORE = {"verified": True, "restore_seconds": 600.0, "check_seconds": 9000.0, "tables_found": 12,
           "rows_checked": 1234567, "amcheck": "passed"}


def test_drill_text_prints_durations_one_way():
    verdict = assess_rto(9612.34, 4 * HOUR, [], NOW)
    assert drill_text("glimpse", DOC, DOWNLOAD, RESTORE, 4, verdict) == (
        ":white_check_mark: Restore drill of glimpse: glimpse_daily_20261125_020000.dump from S3, 123.5 MB, "
        "12 tables and 1,234,567 rows match its manifest, amcheck passed\n"
        "download 12.3 s + restore 10 min (-j4) + checks 2 h 30 min\n"
        "measured RTO 2 h 40 min is within the objective 4 h (66.8%)"
    )
    trend = rto.RtoVerdict("trend", "growing")
    assert drill_text("glimpse", DOC, DOWNLOAD, RESTORE, 4, trend).startswith(":warning: Restore drill of glimpse:")


def test_a_successful_drill_row_has_the_measured_rto():
    row = drill_row(target="glimpse", latest=LATEST, download=DOWNLOAD, restore=RESTORE, error=None,
                    objective_seconds=4 * HOUR, dag_id="pg_restore_drill", run_id="r")
    assert row == {
        "target": "glimpse", "backup_type": "daily", "backup_file": DOC["file"], "s3_key": LATEST["key"],
        "backup_timestamp": DOC["timestamp"], "size_bytes": DOC["size"], "download_seconds": 12.34,
        "restore_seconds": 600.0, "check_seconds": 9000.0, "total_seconds": 9612.34,
        "rto_objective_seconds": 4 * HOUR, "status": "SUCCESS", "error_message": None,
        "dag_id": "pg_restore_drill", "run_id": "r",
    }


def test_a_failed_drill_row_has_the_cause_and_no_rto():
    row = drill_row(target="glimpse", latest=LATEST, download=None, restore=None, error="download: is corrupt",
                    objective_seconds=4 * HOUR, dag_id="d", run_id="r")
    assert (row["status"], row["error_message"], row["total_seconds"]) == ("FAILED", "download: is corrupt", None)
    assert (row["s3_key"], row["download_seconds"], row["restore_seconds"]) == (LATEST["key"], None, None)
    nothing = drill_row(target="glimpse", latest=None, download=None, restore=None, error=None,
                        objective_seconds=4 * HOUR, dag_id="d", run_id="r")
    assert (nothing["status"], nothing["error_message"], nothing["backup_file"]) == ("FAILED", "a drill step failed",
                                                                                      None)


@pytest.fixture
def catalog(monkeypatch):
    """restore_drills without a database: the rows recorded, and a fixed history."""
    recorded, history = [], []
    monkeypatch.setattr(rto.restore_drills, "record", lambda pg, row: recorded.append(dict(row)) or 7)
    monkeypatch.setattr(rto.restore_drills, "rto_history", lambda pg, target, since: list(history))
    return recorded, history


def outcome(**overrides):
    args = {"target": "glimpse", "latest": LATEST, "download": DOWNLOAD, "restore": RESTORE,
            "step_errors": ["", "", None, ""], "objective_seconds": 4 * HOUR, "restore_jobs": 2,
            "dag_id": "pg_restore_drill", "run_id": "r", "now": NOW}
    return rto.record_drill_outcome(object(), **{**args, **overrides})


def test_a_failed_drill_is_recorded_with_the_first_steps_error(catalog):
    recorded, _ = catalog
    got = outcome(restore=None, step_errors=["", "download: is corrupt", None, "restore: later"])
    assert got.verdict is None and recorded[0]["status"] == "FAILED"
    assert got.result == {**recorded[0], "id": 7}
    assert got.text == "drill of glimpse failed and was recorded (row 7): download: is corrupt"
    got.raise_if_exceeded()  # a failed drill pages through its failed step, not here


def test_a_drill_over_the_objective_is_recorded_then_fails(catalog):
    recorded, _ = catalog
    slow = {**RESTORE, "check_seconds": 5 * HOUR}
    got = outcome(restore=slow)
    assert recorded[0]["status"] == "SUCCESS" and got.verdict.status == "exceeded"
    with pytest.raises(RtoExceeded, match="restore drill of glimpse: measured RTO 5 h 10 min exceeds the objective"):
        got.raise_if_exceeded()


def test_a_drill_within_the_objective_reports_its_trend(catalog):
    recorded, history = catalog
    history += [(weeks_ago(n), (2.0 - 0.3 * n) * HOUR) for n in range(1, 6)]
    got = outcome(restore={**RESTORE, "check_seconds": 2 * HOUR - 612.34})
    assert got.verdict.status == "trend" and got.text.startswith(":warning: Restore drill of glimpse:")
    assert got.result == {**recorded[0], "id": 7, "verdict": "trend", "message": got.verdict.message}
    assert got.text.endswith(got.verdict.message)
    got.raise_if_exceeded()
