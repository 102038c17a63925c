import datetime as dt

from pg_dataops.drill.core import assess_rto, fmt_seconds

NOW = dt.datetime(2026, 11, 29, 5, tzinfo=dt.UTC)
HOUR = 3600.0


def weeks_ago(n):
    return NOW - dt.timedelta(weeks=n)


def test_exceeded():
    v = assess_rto(5 * HOUR, 4 * HOUR, [], NOW)
    assert v.status == "exceeded"
    assert v.message == "measured RTO 5.00 h exceeds the objective 4.00 h (125%)"


def test_flat_history_is_ok():
    hist = [(weeks_ago(n), 1 * HOUR) for n in range(1, 9)]
    v = assess_rto(1 * HOUR, 4 * HOUR, hist, NOW)
    assert v.status == "ok" and v.message == "measured RTO 60.0 min is within the objective 4.00 h (25.0%)"


def test_growing_trend_warns_before_the_objective_is_hit():
    # +0.3 h a week: 2.0 h now, the objective (4 h) in about 47 days.
    hist = [(weeks_ago(n), (2.0 - 0.3 * n) * HOUR) for n in range(1, 6)]
    v = assess_rto(2.0 * HOUR, 4 * HOUR, hist, NOW)
    assert v.status == "trend"
    assert "reaches the objective in about 47 days" in v.message
    assert v.projected_seconds > 4 * HOUR


def test_slow_growth_far_from_objective_is_ok():
    hist = [(weeks_ago(n), (600 - 5 * n)) for n in range(1, 6)]
    assert assess_rto(600, 4 * HOUR, hist, NOW).status == "ok"


def test_too_few_points_no_trend():
    hist = [(weeks_ago(1), 1.0 * HOUR), (weeks_ago(2), 0.2 * HOUR)]
    assert assess_rto(3.9 * HOUR, 4 * HOUR, hist, NOW).status == "ok"


def test_fmt_seconds():
    assert [fmt_seconds(x) for x in (12.34, 600, 9000)] == ["12.3 s", "10.0 min", "2.50 h"]
