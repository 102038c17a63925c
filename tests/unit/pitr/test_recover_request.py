"""pg_pitr_restore's validation: the form's values, the window, the base backup, the WAL, the names."""

from __future__ import annotations

import datetime as dt

import pytest
from pg_dataops.common import wal
from pg_dataops.common.config import load_config
from pg_dataops.pitr import inventory, request, scratch
from pg_dataops.pitr.request import RecoveryRefused

UTC = dt.UTC
T0 = dt.datetime(2026, 11, 30, 18, 30, tzinfo=UTC)  # 2026-12-01 03:30 KST: the first base backup's end
KST = dt.timezone(dt.timedelta(hours=9))


@pytest.fixture
def cfg(tmp_path):
    return load_config(environ={"PGBACKUP_PITR_SCRATCH_ROOT": str(tmp_path / "scratch")})


def seg(n: int, tli: int = 1) -> wal.Segment:
    return wal.Segment(n, tli)


def base(stop: dt.datetime, start_seg: int, stop_seg: int | None = None) -> inventory.BaseBackup:
    bid = inventory.backup_id("glimpse", stop)
    doc = {"kind": "pg_base_backup", "version": 1, "target": "glimpse", "backup_id": bid, "timeline": 1,
           "start_lsn": "0/2000028", "stop_lsn": "0/2000100", "start_wal": seg(start_seg).name(),
           "stop_wal": seg(stop_seg or start_seg).name(), "start_time": (stop - dt.timedelta(minutes=1)).isoformat(),
           "stop_time": stop.isoformat(), "archive": {"key": f"k/{bid}/base.tar.zst", "size": 1, "sha256": "0" * 64},
           "backup_manifest": {"checksum": "x"}, "server_version_num": 150010, "encryption": None}
    return inventory.BaseBackup(bid, f"database/base/glimpse/{bid}/", doc)


def archived(n: int, uploaded: dt.datetime) -> wal.ArchivedWal:
    s = seg(n)
    return wal.ArchivedWal(f"database/wal/glimpse/wals/{s.name()[:16]}/{s.name()}.gz", s.name(), 100, uploaded, s)


def window(backups, segments) -> inventory.Window:
    newest = wal.newest_segment(segments)
    return inventory.Window("glimpse", backups, segments, backups[0].stop_time if backups else None,
                            newest.last_modified if newest else None)


def standard_window(skip: tuple[int, ...] = ()) -> inventory.Window:
    """Base backups ending at T0 (segments 2..2) and T0+1 h (10..10); one segment a minute-ish, 2..20."""
    segments = [archived(n, T0 + dt.timedelta(minutes=7 * (n - 2))) for n in range(2, 21) if n not in skip]
    return window([base(T0, 2), base(T0 + dt.timedelta(hours=1), 10)], segments)


def plan(cfg, w, target_time, *, existing=(), identity="", **params):
    req = request.parse_request(cfg, {"target_time": target_time, **params})
    return request.plan_recovery(cfg, req, window=w, source_database="glimpse",
                                 database_exists=lambda name: name in existing, identity=lambda: identity,
                                 run_id="manual__2026-12-01T05:00:00+00:00", conn_id="glimpse_db")


@pytest.mark.parametrize("text", ["2026-12-01T14:29:59", "2026-12-01 14:29:59", "2026-12-01"])
def test_a_time_without_zone_is_refused_naming_the_format(text):
    with pytest.raises(RecoveryRefused, match="has no time zone.*write it as ISO 8601 with a time zone, e.g. "
                                              r"2026-12-01T14:29:59\+09:00"):
        request.parse_target_time(text)


@pytest.mark.parametrize(("text", "expected"), [
    ("2026-12-01T14:29:59+09:00", dt.datetime(2026, 12, 1, 5, 29, 59, tzinfo=UTC)),
    ("2026-12-01 05:29:59.250Z", dt.datetime(2026, 12, 1, 5, 29, 59, 250000, tzinfo=UTC)),
    ("2026-12-01T05:29:00.000Z", dt.datetime(2026, 12, 1, 5, 29, tzinfo=UTC)),  # what the UI's date-time picker sends
])
def test_times_with_a_zone_parse(text, expected):
    assert request.parse_target_time(text) == expected


@pytest.mark.parametrize(("value", "message"), [
    ("", "target_time is empty"), ("yesterday", "'yesterday' is not a date-time"), (None, "target_time is empty")])
def test_malformed_times_are_refused(value, message):
    with pytest.raises(RecoveryRefused, match=message):
        request.parse_target_time(value)


def test_request_defaults_and_shape_checks(cfg):
    r = request.parse_request(cfg, {"target_time": "2026-12-01T14:29:59+09:00", "base_backup": None, "swap": "False"})
    assert (r.target, r.target_action, r.database_name, r.swap, r.confirm, r.base_backup) == (
        "glimpse", "promote", "glimpse_recovery", False, "", None)
    for params, message in [
        ({"target": "billing"}, r"target 'billing' has no WAL archiving configured \(PITR targets: glimpse\)"),
        ({"target_action": "shutdown"}, "target_action must be one of promote, pause"),
        ({"database_name": "Glimpse-Recovery"}, "database_name 'Glimpse-Recovery' must be 1 to 63 lower-case"),
        ({"database_name": "x; DROP DATABASE glimpse"}, "must be 1 to 63 lower-case"),
        ({"database_name": "a" * 64}, "must be 1 to 63"),
        ({"swap": "maybe"}, "swap must be true or false"),
    ]:
        with pytest.raises(RecoveryRefused, match=message):
            request.parse_request(cfg, {"target_time": "2026-12-01T14:29:59+09:00", **params})


def test_the_plan_takes_the_newest_base_backup_that_ended_before_the_target(cfg):
    w = standard_window()
    p = plan(cfg, w, (T0 + dt.timedelta(hours=1, minutes=30)).isoformat())
    assert p["base_backup"] == "glimpse_base_20261130T193000Z"
    assert p["wal_needed"] == {"from": seg(10).name(), "to": seg(15).name()}  # 15 uploaded at +91 min
    assert p["target_time"] == "2026-11-30T20:00:00+00:00"
    assert p["target_time_text"] == "2026-12-01 05:00:00 KST (2026-11-30T20:00:00Z)"
    assert p["bin_dir"] == "/usr/lib/postgresql/15/bin" and p["encrypted"] is False
    assert p["scratch"]["root"].endswith("/scratch/manual__2026_12_01T05_00_00_00_00_glimpse")
    assert p["window"]["text"].startswith("glimpse: 2026-12-01 03:30:00 KST (2026-11-30T18:30:00Z) .. "
                                          "2026-12-01 05:36:00 KST (2026-11-30T20:36:00Z) (2 base backups")
    # Between the two backups: the older one.
    assert plan(cfg, w, (T0 + dt.timedelta(minutes=59)).isoformat())["base_backup"] == "glimpse_base_20261130T183000Z"


def test_targets_outside_the_window_are_refused_naming_it(cfg):
    w = standard_window()
    with pytest.raises(RecoveryRefused) as early:
        plan(cfg, w, (T0 - dt.timedelta(seconds=1)).astimezone(KST).isoformat())
    assert str(early.value) == (
        "target_time 2026-12-01 03:29:59 KST (2026-11-30T18:29:59Z) is before the recoverable window glimpse: "
        "2026-12-01 03:30:00 KST (2026-11-30T18:30:00Z) .. 2026-12-01 05:36:00 KST (2026-11-30T20:36:00Z) (2 base "
        "backups, oldest glimpse_base_20261130T183000Z, newest glimpse_base_20261130T193000Z; newest WAL segment "
        "000000010000000000000014): the oldest base backup, glimpse_base_20261130T183000Z, became consistent at "
        "2026-12-01 03:30:00 KST (2026-11-30T18:30:00Z)")
    with pytest.raises(RecoveryRefused, match=r"is after the recoverable window glimpse: .* the newest archived WAL "
                                              r"was uploaded at 2026-12-01 05:36:00 KST"):
        plan(cfg, w, "2026-12-01T05:36:01+09:00")
    with pytest.raises(RecoveryRefused, match="nothing to recover to yet: glimpse: no base backup yet"):
        plan(cfg, window([], []), "2026-12-01T05:36:01+09:00")


def test_a_wal_gap_between_the_backup_and_the_target_is_named(cfg):
    w = standard_window(skip=(12, 13))
    with pytest.raises(RecoveryRefused, match=r"is missing from s3://.../glimpse/wals/: 00000001000000000000000C.."
                                              r"00000001000000000000000D \(2 segments\) \(needed: "
                                              r"00000001000000000000000A .. 00000001000000000000000F\)"):
        plan(cfg, w, (T0 + dt.timedelta(hours=1, minutes=30)).isoformat())
    # A target whose WAL would be in the missing segment (uploaded after it) is refused too ...
    with pytest.raises(RecoveryRefused, match="00000001000000000000000C..00000001000000000000000D"):
        plan(cfg, w, (T0 + dt.timedelta(hours=1, minutes=5)).isoformat())
    # ... a target before the gap needs none of it.
    assert plan(cfg, w, (T0 + dt.timedelta(hours=1, minutes=2)).isoformat())["wal_needed"]["to"] == seg(11).name()


def test_an_asked_base_backup_must_exist_and_end_before_the_target(cfg):
    w = standard_window()
    moment = (T0 + dt.timedelta(minutes=30)).isoformat()
    with pytest.raises(RecoveryRefused, match="base_backup 'glimpse_base_20260101T000000Z' is not a complete base "
                                              "backup of glimpse in S3; the ones that exist: "
                                              "glimpse_base_20261130T183000Z, glimpse_base_20261130T193000Z"):
        plan(cfg, w, moment, base_backup="glimpse_base_20260101T000000Z")
    with pytest.raises(RecoveryRefused, match="base_backup glimpse_base_20261130T193000Z ended at .* after the target"
                                              ".* ones that ended before the target: glimpse_base_20261130T183000Z"):
        plan(cfg, w, moment, base_backup="glimpse_base_20261130T193000Z")
    late = (T0 + dt.timedelta(hours=1, minutes=30)).isoformat()
    assert plan(cfg, w, late, base_backup="glimpse_base_20261130T183000Z")["wal_needed"]["from"] == seg(2).name()


def test_database_names_are_checked_against_the_target_server(cfg):
    w = standard_window()
    moment = (T0 + dt.timedelta(minutes=30)).isoformat()
    with pytest.raises(RecoveryRefused, match="database 'glimpse_recovery' already exists on the target server"):
        plan(cfg, w, moment, existing={"glimpse", "glimpse_recovery"})
    with pytest.raises(RecoveryRefused, match="database_name 'glimpse' is the target's own database"):
        plan(cfg, w, moment, database_name="glimpse")
    with pytest.raises(RecoveryRefused, match="confirm 'glimpse_prod' does not match the database the swap replaces, "
                                              "'glimpse'"):
        plan(cfg, w, moment, swap=True, confirm="glimpse_prod", existing={"glimpse"})
    p = plan(cfg, w, moment, swap=True, confirm="glimpse", existing={"glimpse"}, database_name="pitr_0900")
    assert (p["swap"], p["confirm"], p["database_name"], p["source_exists"]) == (True, "glimpse", "pitr_0900", True)
    # The damage was a dropped database: recovering it is allowed; there is nothing to keep.
    assert plan(cfg, w, moment)["source_exists"] is False


def test_an_encrypted_base_backup_needs_a_matching_identity_before_anything(cfg, tmp_path):
    from pg_dataops.common import age

    from tests.support import age_keys

    pair, other = age_keys.keypair(tmp_path, "a"), age_keys.keypair(tmp_path, "b")
    w = standard_window()
    for b in w.backups:
        b.doc["encryption"] = {"format": "age", "recipients": [pair.recipient]}
    moment = (T0 + dt.timedelta(minutes=30)).isoformat()
    with pytest.raises(age.IdentityMismatch, match="cannot decrypt base backup glimpse_base_20261130T183000Z: it was "
                                                   "encrypted for age1"):
        plan(cfg, w, moment, identity=other.identity)
    with pytest.raises(age.IdentityMismatch, match="has no age identity in its password field"):
        plan(cfg, w, moment, identity="")
    p = plan(cfg, w, moment, identity=pair.identity)
    assert p["encrypted"] is True and pair.identity not in repr(p)


def test_the_worker_must_have_the_tools(cfg, tmp_path):
    w = standard_window()
    moment = (T0 + dt.timedelta(minutes=30)).isoformat()
    no_bin = load_config(environ={"PGBACKUP_PG_BIN_ROOT": str(tmp_path), "PGBACKUP_PITR_SCRATCH_ROOT": str(tmp_path)})
    with pytest.raises(scratch.ToolMissing, match=r"/15/bin/postgres is missing: recovering a PostgreSQL 15 base "
                                                  r"backup needs the PostgreSQL 15 server binaries on the worker \("
                                                  r"Debian: apt-get install postgresql-15"):
        plan(no_bin, w, moment)
    no_tools = load_config(environ={"PGBACKUP_PITR_WAL_TOOLS_BIN": str(tmp_path),
                                    "PGBACKUP_PITR_SCRATCH_ROOT": str(tmp_path)})
    with pytest.raises(RecoveryRefused, match="barman-cloud-wal-restore is missing: restore_command needs Barman"):
        plan(no_tools, w, moment)
    w.backups[0].doc["archive"]["tar_size"] = 10**15  # a petabyte: no worker has that free
    from pg_dataops.common.errors import DiskFull

    with pytest.raises(DiskFull, match="the unpacked base backup glimpse_base_20261130T183000Z needs about"):
        plan(cfg, w, moment)


def test_old_database_name_is_stamped_in_the_configured_zone_and_fits():
    moment = dt.datetime(2026, 12, 1, 5, 29, 59, tzinfo=UTC)
    assert request.old_database_name("glimpse", moment, "Asia/Seoul") == "glimpse_before_pitr_20261201_142959"
    long = request.old_database_name("x" * 63, moment, "Asia/Seoul")
    assert len(long) == 63 and long.endswith("_before_pitr_20261201_142959")


def test_other_scratch_folders_are_named_not_touched(cfg, tmp_path):
    (tmp_path / "scratch" / "manual__killed_glimpse" / "data").mkdir(parents=True)
    p = plan(cfg, standard_window(), (T0 + dt.timedelta(minutes=30)).isoformat())
    assert p["scratch_others"] == [str(tmp_path / "scratch" / "manual__killed_glimpse")]
    assert (tmp_path / "scratch" / "manual__killed_glimpse" / "data").is_dir()
