"""pg_pitr_drill's decisions: what it recovers, what pg_verifybackup's output names, when replay fell short of
the archive's end, how the row and the verdict come out; and the RPO crash test's loss arithmetic."""

from __future__ import annotations

import datetime as dt
import os

import pytest
from pg_dataops.common import wal
from pg_dataops.common.config import load_config
from pg_dataops.common.rto import RtoVerdict
from pg_dataops.pitr import drill, inventory
from pg_dataops.pitr.drill import BackupVerificationFailed, DrillRefused, ReplayIncomplete

from tests.support.pitr_drill import measure_loss

UTC = dt.UTC
T0 = dt.datetime(2026, 11, 29, 18, 30, tzinfo=UTC)  # 2026-11-30 03:30 KST: the first base backup's end
RUN = "scheduled__2026-12-06T21:00:00+00:00"


@pytest.fixture
def cfg(tmp_path):
    return load_config(environ={"PGBACKUP_PITR_SCRATCH_ROOT": str(tmp_path / "scratch")})


def seg(n: int, tli: int = 1) -> wal.Segment:
    return wal.Segment(n, tli)


def base(stop: dt.datetime, start_seg: int, *, encrypted: bool = False) -> inventory.BaseBackup:
    bid = inventory.backup_id("glimpse", stop)
    doc = {"kind": "pg_base_backup", "version": 1, "target": "glimpse", "backup_id": bid, "timeline": 1,
           "start_lsn": "0/2000028", "stop_lsn": "0/2000100", "start_wal": seg(start_seg).name(),
           "stop_wal": seg(start_seg).name(), "start_time": (stop - dt.timedelta(minutes=1)).isoformat(),
           "stop_time": stop.isoformat(),
           "archive": {"key": f"k/{bid}/base.tar.zst", "size": 123456789, "sha256": "0" * 64},
           "backup_manifest": {"checksum": "x"}, "server_version_num": 150010,
           "encryption": {"format": "age", "recipients": ["age1xyz"]} if encrypted else None}
    return inventory.BaseBackup(bid, f"database/base/glimpse/{bid}/", doc)


def archived(n: int, uploaded: dt.datetime) -> wal.ArchivedWal:
    s = seg(n)
    return wal.ArchivedWal(f"database/wal/glimpse/wals/{s.name()[:16]}/{s.name()}.gz", s.name(), 100, uploaded, s)


def window(backups, segments) -> inventory.Window:
    newest = wal.newest_segment(segments)
    return inventory.Window("glimpse", backups, segments, backups[0].stop_time if backups else None,
                            newest.last_modified if newest else None)


def standard_window(skip: tuple[int, ...] = (), last: int = 20) -> inventory.Window:
    """Base backups ending at T0 (segment 2) and T0 + 1 day (10); segments 2..last, one every 3 hours."""
    segments = [archived(n, T0 + dt.timedelta(hours=3 * (n - 2))) for n in range(2, last + 1) if n not in skip]
    return window([base(T0, 2), base(T0 + dt.timedelta(days=1), 10)], segments)


def plan(cfg, w, target_time=None, identity=""):
    return drill.plan_drill(cfg, "glimpse", w, source_database="glimpse", target_time=target_time,
                            identity=lambda: identity, run_id=RUN)


# --- the plan -----------------------------------------------------------------------------------------


def test_the_weekly_drill_takes_the_newest_base_backup_to_the_end_of_the_archive(cfg):
    w = standard_window()
    p = plan(cfg, w)
    newest = w.backups[-1]
    assert p["base_backup"] == newest.backup_id and p["base_backup_doc"] == newest.doc
    assert p["target_time"] is None and p["target_action"] == "promote" and p["kind"] == "drill"
    assert p["wal_needed"] == {"from": seg(10).name(), "to": seg(20).name()}
    assert p["newest_segment"] == seg(20).name()
    assert p["newest_segment_uploaded"] == (T0 + dt.timedelta(hours=54)).isoformat()
    assert p["target_time_text"].startswith(f"the end of the archive (newest segment {seg(20).name()}, uploaded "
                                            "2026-12-02 09:30:00 KST (2026-12-02T00:30:00Z)")
    assert p["source_database"] == "glimpse" and p["encrypted"] is False
    assert p["bin_dir"] == "/usr/lib/postgresql/15/bin"
    assert p["scratch"]["root"] == f"{cfg.pitr.scratch_root}/scheduled__2026_12_06T21_00_00_00_00_glimpse"
    # Planning creates nothing.
    assert not os.path.exists(cfg.pitr.scratch_root)


def test_a_target_time_drills_from_the_newest_base_backup_before_it(cfg):
    w = standard_window()
    moment = T0 + dt.timedelta(hours=20)  # before the second base backup ended
    p = plan(cfg, w, moment)
    assert p["base_backup"] == w.backups[0].backup_id
    assert p["target_time"] == moment.isoformat()
    assert p["target_time_text"] == "2026-11-30 23:30:00 KST (2026-11-30T14:30:00Z)"
    assert p["wal_needed"]["from"] == seg(2).name() and p["wal_needed"]["to"] == seg(9).name()


def test_a_gap_after_the_newest_base_backup_is_refused_naming_it(cfg):
    with pytest.raises(DrillRefused, match=f"is missing from.*{seg(14).name()}..{seg(15).name()} \\(2 segments\\)"):
        plan(cfg, standard_window(skip=(14, 15)))


def test_a_gap_only_before_the_newest_base_backup_does_not_matter(cfg):
    p = plan(cfg, standard_window(skip=(5,)))
    assert p["wal_needed"]["from"] == seg(10).name()


def test_no_base_backup_or_no_wal_since_the_newest_is_refused(cfg):
    with pytest.raises(DrillRefused, match="nothing to drill: glimpse: no base backup yet"):
        plan(cfg, window([], [archived(3, T0)]))
    # The archive stops before the newest base backup started: nothing to replay from it.
    with pytest.raises(DrillRefused, match=f"holds nothing from the newest base backup .* starts at {seg(10).name()}"):
        plan(cfg, standard_window(last=8))


@pytest.mark.parametrize("moment", [T0 - dt.timedelta(seconds=1), T0 + dt.timedelta(days=5)])
def test_a_target_time_outside_the_window_is_refused(cfg, moment):
    with pytest.raises(DrillRefused, match="is outside the recoverable window glimpse: 2026-11-30 03:30:00 KST"):
        plan(cfg, standard_window(), moment)


@pytest.mark.parametrize(("value", "expected"), [
    (None, None), ("", None), ("  ", None),
    ("2026-12-01T14:29:59+09:00", dt.datetime(2026, 12, 1, 5, 29, 59, tzinfo=UTC)),
])
def test_the_target_time_param(value, expected):
    assert drill.parse_target_time(value) == expected


def test_a_target_time_without_zone_is_refused():
    with pytest.raises(DrillRefused, match="has no time zone"):
        drill.parse_target_time("2026-12-01 14:29:59")


def test_an_encrypted_base_backup_needs_an_identity_that_opens_it(cfg):
    w = standard_window()
    w.backups[-1] = base(T0 + dt.timedelta(days=1), 10, encrypted=True)
    with pytest.raises(Exception, match="age") as info:
        plan(cfg, w, identity="")
    assert "backup_age_identity" in str(info.value)


def test_missing_verify_tools_are_named(tmp_path):
    (tmp_path / "15" / "bin").mkdir(parents=True)
    with pytest.raises(DrillRefused, match=r"15/bin/pg_verifybackup is missing.*apt-get install postgresql-15"):
        drill.check_verify_tools(str(tmp_path / "15" / "bin"))


# --- pg_verifybackup ----------------------------------------------------------------------------------

# pg_verifybackup 15's output on a restored copy with a changed, a grown, an extra and a missing file.
VERIFY_OUTPUT = """\
pg_verifybackup: error: "base/5/1259_fsm" has size 24578 on disk but size 24576 in the manifest
pg_verifybackup: error: "base/5/99999" is present on disk but not in the manifest
pg_verifybackup: error: "base/5/1255_fsm" is present in the manifest but not on disk
pg_verifybackup: error: checksum mismatch for file "base/5/1247"
pg_waldump: error: could not find any WAL file
pg_verifybackup: error: WAL parsing failed for timeline 1
"""


def test_verify_problems_name_every_file_once():
    errors, files = drill.verify_problems(VERIFY_OUTPUT + 'pg_verifybackup: error: checksum mismatch for file '
                                                          '"base/5/1247"\n')
    assert files == ["base/5/1259_fsm", "base/5/99999", "base/5/1255_fsm", "base/5/1247"]
    assert errors[4] == "WAL parsing failed for timeline 1" and len(errors) == 6


def test_a_missing_backup_manifest_fails_before_running_the_tool(tmp_path):
    from pg_dataops.pitr import scratch

    layout = scratch.ScratchLayout(tmp_path)
    layout.data.mkdir()
    with pytest.raises(BackupVerificationFailed, match="base backup b1 has no backup_manifest"):
        drill.verify_restored(layout, "/usr/lib/postgresql/15/bin", doc={"backup_id": "b1"})


# --- replay to the end of the archive -----------------------------------------------------------------

LOG = """\
LOG:  starting point-in-time recovery to earliest consistent point
LOG:  restored log file "00000001000000000000000A" from archive
LOG:  restored log file "00000002.history" from archive
LOG:  restored log file "00000001000000000000000B" from archive
LOG:  restored log file "00000001000000000000000B" from archive
LOG:  restored log file "00000001000000000000000C" from archive
"""


def test_restored_segments_are_segments_once_each_in_order():
    assert drill.restored_segments(LOG) == [seg(10).name(), seg(11).name(), seg(12).name()]


def test_replay_must_reach_the_newest_segment_the_plan_saw():
    p = {"target_time": None, "newest_segment": seg(12).name(), "wal_needed": {"from": seg(10).name()}}
    drill.check_reached_end(p, {"last_restored_segment": seg(12).name()})
    drill.check_reached_end(p, {"last_restored_segment": seg(13).name()})  # archived since the plan: fine
    with pytest.raises(ReplayIncomplete, match=f"replay ended after segment {seg(11).name()}, but the archive held "
                                               f"segments up to {seg(12).name()}.*segment {seg(12).name()} could "
                                               "not be restored"):
        drill.check_reached_end(p, {"last_restored_segment": seg(11).name()})
    with pytest.raises(ReplayIncomplete, match=f"no segment restored from S3.*segment {seg(10).name()} could not"):
        drill.check_reached_end(p, {"last_restored_segment": None})
    # To a target time, stopping early is the point.
    drill.check_reached_end({**p, "target_time": T0.isoformat()}, {"last_restored_segment": seg(10).name()})


# --- the outcome --------------------------------------------------------------------------------------

PLAN = {"target": "glimpse", "base_backup": "glimpse_base_20261206T183000Z", "target_time": None,
        "target_time_text": "the end of the archive (newest segment 000000010000000000000014, uploaded ...)",
        "encrypted": True, "base_backup_doc": {"archive": {"size": 123456789}}, "newest_segment": seg(20).name(),
        "window": {"text": "glimpse: ..."}}
RESTORED = {"restore_seconds": 12.5}
VERIFIED = {"verified": True, "verify_seconds": 2.25, "files": 1234, "message": "backup successfully verified"}
RECOVERED = {"replay_seconds": 30.0, "reached_time": "2026-12-06T20:59:58+00:00", "segments_restored": 11,
             "last_restored_segment": seg(20).name(), "stop_message": None, "archive_ends_before_target": False}
CHECKED = {"check_seconds": 1.25, "database": "glimpse", "tables": 7, "rows": 123456,
           "runbook": {"users": 4000, "matches": 9000, "messages": 50000}, "counts": {"public.users": 4000}}


def row(**kw):
    args = {"target": "glimpse", "plan": PLAN, "restored": RESTORED, "verified": VERIFIED, "recovered": RECOVERED,
            "checked": CHECKED, "error": None, "objective_seconds": 14400.0, "dag_id": "pg_pitr_drill",
            "run_id": RUN, **kw}
    return drill.drill_row(**args)


def test_a_successful_drill_row_times_restore_verify_replay_and_checks():
    r = row()
    assert (r["kind"], r["status"], r["error_message"]) == ("drill", "SUCCESS", None)
    assert (r["restore_seconds"], r["replay_seconds"], r["check_seconds"], r["copy_seconds"]) == (12.5, 30.0, 1.25, None)
    assert r["verify_seconds"] == 2.25
    assert r["total_seconds"] == 46.0  # 12.5 + 2.25 + 30 + 1.25
    assert r["target_time"] is None and r["base_backup_id"] == PLAN["base_backup"]
    assert r["recovered_database"] is None and r["swapped"] is None


def test_failed_refused_and_unverified_drills():
    failed = row(error=("glimpse.verify_backup", "pg_verifybackup: ... checksum mismatch for file \"base/5/1247\""),
                 verified=None, recovered=None, checked=None)
    assert failed["status"] == "FAILED" and failed["total_seconds"] is None
    assert failed["error_message"].startswith("glimpse.verify_backup: pg_verifybackup") and "base/5/1247" in \
        failed["error_message"]
    refused = row(plan=None, restored=None, verified=None, recovered=None, checked=None,
                  error=("plan", "nothing to drill"))
    assert refused["status"] == "REFUSED" and refused["error_message"] == "plan: nothing to drill"
    unverified = row(verified={"verify_seconds": 1.0})
    assert unverified["status"] == "FAILED" and "pg_verifybackup" in unverified["error_message"]


def test_the_slack_text_says_what_was_proven_and_where_the_time_went():
    r = row()
    text = drill.drill_text(r, plan=PLAN, restored=RESTORED, verified=VERIFIED, recovered=RECOVERED, checked=CHECKED,
                            verdict=RtoVerdict("ok", "measured RTO 46.0 s is within the objective 4 h (0.3%)"),
                            timezone="Asia/Seoul")
    assert text.startswith(":white_check_mark: PITR drill of glimpse: base backup glimpse_base_20261206T183000Z "
                           "(117.7 MiB, age-encrypted) + 11 WAL segment(s) from S3, replayed to the end of the archive")
    assert "last replayed commit 2026-12-07 05:59:58 KST (2026-12-06T20:59:58Z)" in text
    assert "pg_verifybackup: 1,234 files and the backup's WAL match its backup_manifest; 7 tables, 123,456 rows in " \
           "glimpse (users 4,000, matches 9,000, messages 50,000)" in text
    assert "restore 12.5 s + verify 2.2 s + replay 30.0 s + checks 1.2 s = 46.0 s; measured RTO 46.0 s is within" in text


def test_an_exceeded_rto_raises_a_trend_only_warns():
    r = {**row(), "id": 7}
    exceeded = drill.DrillOutcome(r, RtoVerdict("exceeded", "measured RTO 5 h exceeds the objective 4 h (125%)"), "t",
                                  what="PITR drill")
    with pytest.raises(drill.RtoExceeded, match="PITR drill of glimpse: measured RTO 5 h exceeds the objective"):
        exceeded.raise_if_exceeded()
    drill.DrillOutcome(r, RtoVerdict("trend", "growing"), "t").raise_if_exceeded()
    drill.DrillOutcome(r, None, "failed").raise_if_exceeded()
    assert exceeded.result["verify_seconds"] == 2.25 and exceeded.result["verdict"] == "exceeded"
    assert "details" not in exceeded.result


# --- the RPO crash test's arithmetic ------------------------------------------------------------------


def test_measure_loss_counts_the_tail_lost_and_its_time_span():
    start = dt.datetime(2026, 12, 1, 5, 0, 0, tzinfo=UTC)
    committed = [(n, start + dt.timedelta(seconds=n * 0.5)) for n in range(1, 41)]  # 0.5 s .. 20 s
    kill = start + dt.timedelta(seconds=20.2)
    committed.append((41, kill + dt.timedelta(seconds=0.05)))  # its COMMIT returned after the kill
    loss = measure_loss(committed, set(range(1, 31)) | {41, 42}, kill, start_time=start)
    assert loss["committed_before_kill"] == 40 and loss["recovered"] == 30
    assert loss["lost_ids"] == list(range(31, 41))
    assert loss["lost_span_seconds"] == pytest.approx(4.7)  # first lost at 15.5 s
    assert loss["loss_window_seconds"] == pytest.approx(5.2)  # last recovered at 15.0 s
    assert loss["committed_after_kill"] == 1 and loss["recovered_unconfirmed"] == 1  # 42: in flight, never confirmed
    assert loss["holes"] == []


def test_measure_loss_finds_holes_and_a_total_loss():
    start = dt.datetime(2026, 12, 1, 5, 0, 0, tzinfo=UTC)
    committed = [(n, start + dt.timedelta(seconds=n)) for n in range(1, 11)]
    kill = start + dt.timedelta(seconds=11)
    assert measure_loss(committed, {1, 2, 4, 5}, kill, start_time=start)["holes"] == [3]
    nothing = measure_loss(committed, set(), kill, start_time=start)
    assert nothing["lost_ids"] == list(range(1, 11)) and nothing["loss_window_seconds"] == 11.0
