"""The restore forms' common params: refused with the cause before anything is touched."""

import datetime as dt

import pytest
from pg_dataops.restore import request, source
from pg_dataops.restore.request import RequestRefused


@pytest.mark.parametrize(("params", "expected"), [
    ({"backup_date": "20261130"}, {"backup_date": "2026-11-30", "backup_key": None, "from_database": None}),
    ({"backup_key": "database/daily/glimpse_daily_20261130_020000.dump"},
     {"backup_date": None, "backup_key": "database/daily/glimpse_daily_20261130_020000.dump", "from_database": None}),
    ({"from_database": "glimpse_recovery", "backup_date": ""},
     {"backup_date": None, "backup_key": None, "from_database": "glimpse_recovery"}),
])
def test_one_source_is_chosen(params, expected):
    assert request.parse_backup_choice(params, allow_from_database=True) == expected


@pytest.mark.parametrize(("params", "message"), [
    ({}, "no backup chosen: set backup_date (YYYYMMDD), backup_key or from_database"),
    ({"backup_date": "2026-11-30"}, "backup_date '2026-11-30' is not a date as YYYYMMDD"),
    ({"backup_date": "20261131"}, "backup_date '20261131' is not a calendar date"),
    ({"backup_date": "20261130; DROP TABLE x"}, "is not a date as YYYYMMDD"),
    ({"backup_key": "database/daily/x.dump; rm -rf /"}, "is not an S3 key of a backup"),
    ({"backup_key": "database/../secrets"}, "is not an S3 key of a backup"),
    ({"from_database": "glimpse_recovery", "backup_date": "20261130"}, "either from_database or backup_date"),
    ({"from_database": '"; --'}, "from_database '\"; --' is not a database name"),
    ({"from_database": "Glimpse Recovery"}, "is not a database name"),
])
def test_bad_choices_are_refused_naming_the_cause(params, message):
    with pytest.raises(RequestRefused) as err:
        request.parse_backup_choice(params, allow_from_database=True)
    assert message in str(err.value)


def test_full_recovery_takes_no_from_database():
    with pytest.raises(RequestRefused, match=r"set backup_date \(YYYYMMDD\), backup_key$"):
        request.parse_backup_choice({"from_database": "glimpse_recovery"}, allow_from_database=False)


def test_from_database_must_exist_and_not_be_the_target():
    with pytest.raises(RequestRefused, match="is the target database itself"):
        request.check_from_database("glimpse", target_database="glimpse", exists=lambda n: True)
    with pytest.raises(RequestRefused, match="'glimpse_recovery' does not exist"):
        request.check_from_database("glimpse_recovery", target_database="glimpse", exists=lambda n: False)
    request.check_from_database("glimpse_recovery", target_database="glimpse", exists=lambda n: True)


def test_confirm_is_empty_or_the_database_name():
    request.check_confirm("", "glimpse")
    request.check_confirm("glimpse", "glimpse")
    with pytest.raises(RequestRefused, match="confirm 'glimpse_prod' does not match the target database 'glimpse'"):
        request.check_confirm("glimpse_prod", "glimpse")


def test_jobs_and_sections():
    assert request.parse_jobs(None, 2) == 2 and request.parse_jobs("4", 2) == 4
    with pytest.raises(RequestRefused, match="parallel_jobs 0 is outside 1..32"):
        request.parse_jobs(0, 2)
    assert request.parse_sections([]) == ["pre-data", "data", "post-data"]
    assert request.parse_sections(["post-data", "pre-data"]) == ["pre-data", "post-data"]
    with pytest.raises(RequestRefused, match="'schema' not one of pre-data, data, post-data"):
        request.parse_sections(["schema"])


def backups(*specs):
    out = []
    for key, moment, local_date in specs:
        out.append({"key": key, "tier": "daily", "moment": moment, "local_date": local_date, "size": 1})
    return out


UTC = dt.UTC
B1 = ("database/daily/glimpse_daily_20261129_020000.dump", dt.datetime(2026, 11, 28, 17, tzinfo=UTC), "2026-11-29")
B2 = ("database/daily/glimpse_daily_20261130_020000.dump", dt.datetime(2026, 11, 29, 17, tzinfo=UTC), "2026-11-30")
B3 = ("database/daily/glimpse_daily_20261130_140000.dump", dt.datetime(2026, 11, 30, 5, tzinfo=UTC), "2026-11-30")


def test_the_date_picks_its_one_backup_or_names_what_exists():
    found = backups(B1, B2, B3)
    assert source.choose_backup(found, target="glimpse", backup_date="2026-11-29", backup_key=None)["key"] == B1[0]
    with pytest.raises(RequestRefused) as err:
        source.choose_backup(found, target="glimpse", backup_date="2026-11-27", backup_key=None)
    assert str(err.value) == "no backup of 'glimpse' on 2026-11-27; backups exist on: 2026-11-29, 2026-11-30"
    with pytest.raises(RequestRefused) as err:
        source.choose_backup(found, target="glimpse", backup_date="2026-11-30", backup_key=None)
    assert "2 backups of 'glimpse' on 2026-11-30: choose one as backup_key: " in str(err.value)
    assert B2[0] in str(err.value) and B3[0] in str(err.value)
    assert source.choose_backup(found, target="glimpse", backup_date="2026-11-30",
                                backup_key="glimpse_daily_20261130_140000.dump")["key"] == B3[0]


def test_a_key_must_be_one_of_the_targets_backups():
    found = backups(B1, B2)
    assert source.choose_backup(found, target="glimpse", backup_date=None, backup_key=B2[0])["key"] == B2[0]
    with pytest.raises(RequestRefused, match="backup_key 'database/daily/other.dump' is not a backup of 'glimpse'"):
        source.choose_backup(found, target="glimpse", backup_date=None, backup_key="database/daily/other.dump")
    with pytest.raises(RequestRefused, match="is from 2026-11-30, not 2026-11-29"):
        source.choose_backup(found, target="glimpse", backup_date="2026-11-29", backup_key=B2[0])
    with pytest.raises(RequestRefused, match="there is no backup of 'glimpse' in S3"):
        source.choose_backup([], target="glimpse", backup_date="2026-11-29", backup_key=None)
