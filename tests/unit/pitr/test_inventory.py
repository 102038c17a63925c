"""The base backup contract (manifest.json) and the recoverable window."""

import datetime as dt

import pytest
from pg_dataops.common import wal
from pg_dataops.pitr import inventory

T0 = dt.datetime(2026, 11, 30, 18, 30, tzinfo=dt.UTC)


def doc(bid: str, stop: dt.datetime, start_wal: str = "000000010000000000000002") -> dict:
    return {"kind": "pg_base_backup", "version": 1, "target": "glimpse", "backup_id": bid, "timeline": 1,
            "start_lsn": "0/2000028", "stop_lsn": "0/2000100", "start_wal": start_wal, "stop_wal": start_wal,
            "start_time": (stop - dt.timedelta(minutes=1)).isoformat(), "stop_time": stop.isoformat(),
            "archive": {"key": f"k/{bid}/base.tar.zst", "size": 1, "sha256": "0" * 64},
            "backup_manifest": {"checksum": "x"}, "server_version_num": 150010}


def backup(stop: dt.datetime) -> inventory.BaseBackup:
    bid = inventory.backup_id("glimpse", stop)
    return inventory.BaseBackup(bid, f"database/base/glimpse/{bid}/", doc(bid, stop))


def test_backup_ids_are_utc_and_parse_back():
    moment = dt.datetime(2026, 12, 1, 3, 30, 5, tzinfo=dt.timezone(dt.timedelta(hours=9)))
    bid = inventory.backup_id("glimpse", moment)
    assert bid == "glimpse_base_20261130T183005Z"
    assert inventory.parse_backup_id(bid) == ("glimpse", moment)
    assert inventory.parse_backup_id("glimpse_daily_20261130_020000.dump") is None


@pytest.mark.parametrize(("change", "message"), [
    ({"kind": "pg_dump"}, "not a pg_base_backup manifest"),
    ({"stop_lsn": None}, "missing stop_lsn"),
    ({"backup_id": "glimpse_base_20200101T000000Z"}, "manifest names glimpse/glimpse_base_20200101T000000Z"),
    ({"stop_time": "2026-11-30T18:30:00"}, "has no time zone"),
    ({"start_wal": "0/2000028"}, "is not a WAL segment name"),
    ({"archive": {"key": "k"}}, "archive must have key, size, sha256"),
])
def test_a_bad_manifest_is_named(change, message):
    bid = inventory.backup_id("glimpse", T0)
    d = doc(bid, T0)
    for k, v in change.items():
        if v is None:
            d.pop(k)
        else:
            d[k] = v
    with pytest.raises(ValueError, match=message):
        inventory.check_manifest(d, bid, "glimpse")


def test_window_runs_from_the_oldest_backup_end_to_the_newest_segment():
    b1, b2 = backup(T0), backup(T0 + dt.timedelta(days=1))
    newest = wal.ArchivedWal("k", "000000010000000000000009", 1, T0 + dt.timedelta(days=1, hours=5),
                             wal.Segment.parse("000000010000000000000009"))
    w = inventory.Window("glimpse", [b1, b2], [newest], b1.stop_time, newest.last_modified)
    assert w.contains(T0 + dt.timedelta(hours=3))
    assert not w.contains(T0 - dt.timedelta(seconds=1))
    assert not w.contains(T0 + dt.timedelta(days=1, hours=5, seconds=1))
    assert w.base_for(T0 + dt.timedelta(hours=23)) is b1
    assert w.base_for(T0 + dt.timedelta(days=1, hours=1)) is b2
    assert w.base_for(T0 - dt.timedelta(hours=1)) is None
    assert w.describe("Asia/Seoul") == ("glimpse: 2026-12-01 03:30:00 KST (2026-11-30T18:30:00Z) .. "
                                        "2026-12-02 08:30:00 KST (2026-12-01T23:30:00Z)")


def test_an_empty_window_says_what_to_do():
    w = inventory.Window("glimpse", [], [], None, None)
    assert "run pg_base_backup" in w.describe("UTC")
    assert not w.contains(T0)
