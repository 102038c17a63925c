import datetime as dt

import pytest
from pg_dataops.common.naming import backup_basename, local_dir, resolve_tier, tier_for

UTC = dt.UTC
SEOUL = "Asia/Seoul"


@pytest.mark.parametrize(
    ("utc_moment", "expected"),
    [
        (dt.datetime(2026, 11, 24, 17, 0, tzinfo=UTC), "daily"),  # Wed 25 Nov 02:00 KST
        (dt.datetime(2026, 11, 28, 17, 0, tzinfo=UTC), "weekly"),  # Sun 29 Nov 02:00 KST
        (dt.datetime(2026, 11, 30, 17, 0, tzinfo=UTC), "monthly"),  # Tue 1 Dec 02:00 KST
        (dt.datetime(2026, 2, 28, 17, 0, tzinfo=UTC), "monthly"),  # Sun 1 Mar 02:00 KST: monthly wins
        (dt.datetime(2026, 11, 29, 16, 0, tzinfo=UTC), "daily"),  # Mon 30 Nov 01:00 KST (Sunday in UTC)
    ],
)
def test_tier_from_seoul_calendar(utc_moment, expected):
    assert tier_for(utc_moment, SEOUL) == expected


def test_time_zone_decides_the_day():
    # 30 Nov 16:00 UTC is 1 Dec in Seoul but still 30 Nov in UTC.
    moment = dt.datetime(2026, 11, 30, 16, 0, tzinfo=UTC)
    assert tier_for(moment, SEOUL) == "monthly"
    assert tier_for(moment, "UTC") == "daily"


def test_manual_override_and_validation():
    moment = dt.datetime(2026, 11, 24, 17, 0, tzinfo=UTC)
    assert resolve_tier("auto", moment, SEOUL) == "daily"
    assert resolve_tier(None, moment, SEOUL) == "daily"
    assert resolve_tier("monthly", moment, SEOUL) == "monthly"
    with pytest.raises(ValueError, match="tier"):
        resolve_tier("yearly", moment, SEOUL)
    with pytest.raises(ValueError):
        tier_for(dt.datetime(2026, 1, 1), SEOUL)


def test_names_follow_the_runbook():
    moment = dt.datetime(2024, 1, 30, 17, 0, 0, tzinfo=UTC)  # 2024-01-31 02:00 KST
    assert backup_basename("glimpse", "daily", moment, SEOUL) == "glimpse_daily_20240131_020000"
    assert local_dir("/backup/postgres/", "daily", moment, SEOUL) == "/backup/postgres/daily/2024/01"
