"""The PITR retention planner: the window, the covering backup, the newest, incomplete folders, WAL protection
and the refusals."""

from __future__ import annotations

import datetime as dt

import pytest
from pg_dataops.common import wal
from pg_dataops.pitr import inventory
from pg_dataops.pitr.retention import (
    DELETE,
    KEEP,
    IncompleteFolder,
    archived_position,
    format_plan,
    plan_pitr_retention,
    slack_line,
    summarize,
)
from pg_dataops.retention.plan import RetentionError, RetentionRefused

NOW = dt.datetime(2026, 12, 10, 4, 0, tzinfo=dt.UTC)
SKEW = dt.timedelta(minutes=60)
PREFIX = "database/wal/glimpse/wals/"


def backup(day: int, start_seg: int, stop_seg: int | None = None, *, hour: int = 3) -> inventory.BaseBackup:
    """A base backup that ended on 2026-12-``day`` at ``hour``:30 UTC, its WAL from segment ``start_seg``."""
    stop = dt.datetime(2026, 12, 1, hour, 30, 20, tzinfo=dt.UTC) + dt.timedelta(days=day - 1)
    bid = inventory.backup_id("glimpse", stop - dt.timedelta(seconds=20))
    doc = {"start_time": (stop - dt.timedelta(seconds=20)).isoformat(), "stop_time": stop.isoformat(),
           "start_wal": wal.Segment(start_seg, 1).name(), "stop_wal": wal.Segment(stop_seg or start_seg, 1).name(),
           "archive": {"key": f"database/base/glimpse/{bid}/base.tar.zst", "size": 1, "sha256": "0" * 64}}
    return inventory.BaseBackup(bid, f"database/base/glimpse/{bid}/", doc)


def archived(name: str, size: int = 1000) -> wal.ArchivedWal:
    key = PREFIX + name[:16] + "/" + name + ".gz"
    seg = wal.Segment.parse(name) if wal.is_segment_name(name) else None
    return wal.ArchivedWal(key, name, size, NOW - dt.timedelta(days=1), seg)


def seg(n: int, tli: int = 1) -> str:
    return wal.Segment(n, tli).name()


def plan(backups, archive=(), incomplete=(), **kw):
    args = dict(window_days=7, max_delete_fraction=0.5, max_future_skew=SKEW)
    return plan_pitr_retention("glimpse", backups, list(incomplete), list(archive), NOW, **{**args, **kw})


def test_keeps_the_window_the_covering_backup_and_the_newest():
    # ended Dec 1, 2, 3 (3.5 h before the window start, Dec 3 04:00), 4 (inside), 9 (inside)
    backups = [backup(1, 10), backup(2, 20), backup(3, 30, 31), backup(4, 40), backup(9, 90)]
    archive = [archived(seg(n)) for n in range(5, 95)] + [archived("00000002.history")]
    p = plan(backups, archive)
    actions = {d.backup.backup_id: (d.action, d.reason) for d in p.backups}
    assert [bid for bid, (a, _) in actions.items() if a == DELETE] == [backups[0].backup_id, backups[1].backup_id]
    assert actions[backups[2].backup_id][1].startswith("the newest that ended before the window")
    assert actions[backups[3].backup_id] == (KEEP, "ended within the 7-day window")
    assert actions[backups[4].backup_id] == (KEEP, "the newest base backup")
    # WAL before the covering backup's start segment goes; from it on everything stays, history included.
    assert p.wal_keep_from == wal.Segment(30, 1)
    assert [w.name for w in p.wal_delete] == [seg(n) for n in range(5, 30)]
    assert {w.name for w in p.wal_kept} == {seg(n) for n in range(30, 95)} | {"00000002.history"}
    assert p.window_start == NOW - dt.timedelta(days=7)


def test_everything_inside_the_window_is_kept_and_no_wal_of_it_goes():
    backups = [backup(5, 50), backup(6, 60), backup(9, 90)]
    p = plan(backups, [archived(seg(n)) for n in range(40, 95)])
    assert p.delete == [] and len(p.keep) == 3
    assert [w.name for w in p.wal_delete] == [seg(n) for n in range(40, 50)]


def test_a_single_old_backup_is_kept_as_the_newest():
    p = plan([backup(1, 10)], [archived(seg(n)) for n in range(3, 12)])
    assert [d.reason for d in p.keep] == ["the newest base backup"]
    assert [w.name for w in p.wal_delete] == [seg(n) for n in range(3, 10)]


def test_backup_and_partial_files_go_with_their_segment_history_stays():
    files = [f"{seg(19)}.00000028.backup", f"{seg(20)}.00000028.backup", f"{seg(18)}.partial", "00000001.history",
             "unknown.txt"]
    archive = [archived(n) for n in files]
    assert archived_position(archive[0]) == wal.Segment(19, 1) and archived_position(archive[3]) is None
    p = plan([backup(2, 20)], archive)
    assert sorted(w.name for w in p.wal_delete) == sorted([files[0], files[2]])
    assert sorted(w.name for w in p.wal_kept) == sorted([files[1], files[3], files[4]])


def test_other_timelines_are_judged_by_position():
    archive = [archived(seg(25, 1)), archived(seg(25, 2)), archived(seg(35, 1)), archived(seg(35, 2))]
    p = plan([backup(9, 30)], archive)
    assert [w.name for w in p.wal_delete] == [seg(25, 1), seg(25, 2)]


def test_incomplete_folders_older_than_a_day_go_young_and_unreadable_ones_stay():
    old = IncompleteFolder("database/base/glimpse/glimpse_base_20261201T033000Z/",
                           ("database/base/glimpse/glimpse_base_20261201T033000Z/base.tar.zst",),
                           NOW - dt.timedelta(days=2), False)
    young = IncompleteFolder("database/base/glimpse/glimpse_base_20261210T033000Z/", ("x",),
                             NOW - dt.timedelta(minutes=20), False)
    unreadable = IncompleteFolder("database/base/glimpse/glimpse_base_20261202T033000Z/",
                                  ("m/manifest.json",), NOW - dt.timedelta(days=8), True)
    p = plan([backup(9, 90)], incomplete=[old, young, unreadable])
    decided = {d.folder.folder: (d.action, d.reason) for d in p.folders}
    assert decided[old.folder] == (DELETE, "incomplete (no manifest.json): left by a failed or killed run")
    assert decided[young.folder][0] == KEEP and "maybe a backup still running" in decided[young.folder][1]
    assert decided[unreadable.folder][0] == KEEP and "cannot be read" in decided[unreadable.folder][1]
    assert [d.folder for d in p.folders_to_delete] == [old]


def test_refuses_an_empty_listing():
    with pytest.raises(RetentionRefused, match="no complete base backup of glimpse listed in S3"):
        plan([], [archived(seg(1))])


def test_refuses_a_backup_from_the_future():
    future = backup(12, 120)  # ended Dec 12, two days after NOW
    with pytest.raises(RetentionRefused, match=f"base backup {future.backup_id} of glimpse ended at .* after now"):
        plan([backup(9, 90), future])
    plan([backup(9, 90), backup(10, 100, hour=4)])  # 30 min ahead: within the skew


def test_refuses_when_the_backup_just_made_is_not_listed():
    with pytest.raises(RetentionRefused, match="the base backup just made, glimpse_base_20261210T033000Z, is not"):
        plan([backup(9, 90)], must_keep="glimpse_base_20261210T033000Z")
    plan([backup(9, 90)], must_keep=backup(9, 90).backup_id)


def test_refuses_too_large_a_fraction_but_a_dry_run_reports_it():
    # Dec 1 (twice) go, Dec 2 covers the window's start, Dec 4 is inside: 2 of 4 deleted is 50 %.
    backups = [backup(1, 10), backup(1, 12, hour=6), backup(2, 20), backup(4, 40)]
    assert len(plan(backups).delete) == 2  # 0.5 is not more than max_delete_fraction 0.5
    with pytest.raises(RetentionRefused, match=r"would delete 2 of 4 base backups of glimpse \(50%\), more than "
                                               r"retention.max_delete_fraction \(0.4\)"):
        plan(backups, max_delete_fraction=0.4)
    p = plan(backups, max_delete_fraction=0.4, dry_run=True)
    assert p.refusal and len(p.delete) == 2
    assert "a real run would be refused" in format_plan(p, dry_run=True)


def test_never_deletes_wal_a_kept_backup_needs():
    """The guard holds even when it is handed a plan that would: an assertion of the planner's own rule."""
    from pg_dataops.pitr import retention

    kept = [backup(9, 90)]
    with pytest.raises(RetentionError, match=f"would delete {PREFIX}.*{seg(95)}.gz, which base backup"):
        retention._check_kept_backups_keep_their_wal(kept, [archived(seg(95))])
    retention._check_kept_backups_keep_their_wal(kept, [archived(seg(89))])


def test_summary_report_and_slack_line():
    backups = [backup(1, 10), backup(3, 30), backup(9, 90)]
    p = plan(backups, [archived(seg(n)) for n in range(8, 12)])
    s = summarize(p, False, NOW, [backups[0].backup_id], [], [w.key for w in p.wal_delete])
    assert s["delete"] == {backups[0].backup_id: "ended before the 7-day window, and a newer one "
                                                 f"({backups[1].backup_id}) covers its start"}
    assert s["wal_keep_from"] == seg(30) and s["wal_delete_count"] == 4 and s["wal_delete_range"] == [seg(8), seg(11)]
    assert slack_line(s) == f"retention: kept 2 base backup(s), pruned 1 base backup(s) and 4 WAL file(s) before {seg(30)}"
    report = format_plan(p, dry_run=False, timezone="Asia/Seoul")
    assert f"DELETE {backups[0].backup_id} (ended 2026-12-01 12:30:20 KST" in report
    assert f"WAL: 4 file(s) before {seg(30)} to delete" in report
    dry = summarize(p, True, NOW, [], [], [])
    assert slack_line(dry).startswith("retention: kept 2 base backup(s), would prune 1 base backup(s) and 4 WAL")
