"""GFS retention: the planner on a 412-day synthetic history, its refusals, and the listing rules.

The expected survivors come from the policy's definition (tests.support.retention: dateutil for calendar
months, not the module's own arithmetic) and are spot-checked here against dates worked out by hand.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import replace

import boto3
import pytest
from moto import mock_aws
from pg_dataops.retention.apply import (
    RetentionDeleteFailed,
    apply_local,
    apply_s3,
    list_local_backups,
    list_s3_backups,
)
from pg_dataops.retention.plan import (
    BackupItem,
    RetentionRefused,
    check_clock,
    check_recent_backups,
    months_before,
    plan_retention,
)
from pg_dataops.retention.report import format_report

from tests.support.retention import (
    BUCKET,
    NOW,
    POLICY,
    PREFIX,
    SEOUL,
    SEOUL_NAME,
    SKEW,
    UTC,
    Spec,
    expected_survivors,
    history,
    write_local,
)


def item(spec: Spec, *, verified: bool = False, missing: tuple[str, ...] = (), problem: str | None = None,
         timestamp: dt.datetime | None = None) -> BackupItem:
    parts = {p: None if p in missing else spec.key + suffix
             for p, suffix in (("data", ""), ("checksum", ".sha256"), ("manifest", ".json"))}
    return BackupItem(
        target=spec.target, tier=spec.tier, file=spec.file, timestamp=timestamp or spec.snapshot,
        timestamp_source="manifest", verified=verified, location=f"s3://glimpse-backups/{PREFIX}",
        display=f"{spec.tier}/{spec.file}", problem=problem, **parts,
    )


def plan(items, now=NOW, fraction=1.0, **kw):
    return plan_retention(items, now, POLICY, max_delete_fraction=fraction, max_future_skew=SKEW, **kw)


def kept(p) -> set[str]:
    return {d.item.file for d in p.keep}


def deleted(p) -> set[str]:
    return {d.item.file for d in p.delete}


# --- the survivor set -----------------------------------------------------------------------------


def test_synthetic_history_exact_survivors():
    specs = history()
    assert len(specs) == 412
    assert {s.tier for s in specs} == {"daily", "weekly", "monthly"}
    p = plan([item(s) for s in specs])

    expected = expected_survivors(specs, NOW)
    assert kept(p) == expected
    assert deleted(p) == {s.file for s in specs} - expected
    # Worked out by hand for Tue 5 Jan 2027 03:00 KST: dailies after Sun 6 Dec 03:00 (Mon 7 Dec .. 5 Jan
    # without 4 Sundays and 1 Jan: 25), weeklies after Tue 13 Oct 03:00 (18 Oct .. 3 Jan without 1 Nov,
    # a monthly: 11), monthlies after 5 Jan 2026 03:00 (1 Feb 2026 .. 1 Jan 2027: 12).
    assert len(expected) == 25 + 11 + 12
    survivors = kept(p)
    for name in ("glimpse_daily_20261207_020000.dump", "glimpse_daily_20270105_020000.dump",
                 "glimpse_weekly_20261018_020000.dump", "glimpse_weekly_20261206_020000.dump",
                 "glimpse_monthly_20260201_020000.dump", "glimpse_monthly_20270101_020000.dump",
                 "glimpse_monthly_20261101_020000.dump"):  # 1 Nov 2026 is a Sunday: monthly wins
        assert name in survivors, name
    for name in ("glimpse_daily_20261205_020000.dump", "glimpse_daily_20251120_020000.dump",
                 "glimpse_weekly_20261011_020000.dump", "glimpse_monthly_20260101_020000.dump",
                 "glimpse_monthly_20251201_020000.dump"):
        assert name not in survivors, name
    # Every decision carries its reason.
    reasons = {d.item.file: d.reason for d in p.decisions}
    assert reasons["glimpse_daily_20261205_020000.dump"] == ("31.0 days old, older than 30 days "
                                                                  "(not after 2026-12-06 03:00 KST)")
    assert "within 12 months" in reasons["glimpse_monthly_20260201_020000.dump"]


def test_steady_state_next_day_deletes_only_what_aged_out():
    specs = history(end=NOW.date() + dt.timedelta(days=1))
    first = plan([item(s) for s in specs[:-1]])
    survivors = [item(s) for s in specs if s.file in kept(first) or s is specs[-1]]
    next_day = NOW + dt.timedelta(days=1)
    second = plan(survivors, now=next_day, fraction=0.5)
    assert kept(second) == expected_survivors(specs, next_day)
    # Wed 6 Jan: the daily of Mon 7 Dec ages out.
    assert deleted(second) == {"glimpse_daily_20261207_020000.dump"}


def test_boundary_is_strictly_after_the_cutoff():
    at_cutoff = Spec("glimpse", "daily", NOW - dt.timedelta(days=30), (NOW - dt.timedelta(days=30)).astimezone(UTC))
    after = replace(at_cutoff, local=at_cutoff.local + dt.timedelta(seconds=1),
                    snapshot=at_cutoff.snapshot + dt.timedelta(seconds=1))
    newest = Spec("glimpse", "daily", NOW - dt.timedelta(hours=1), (NOW - dt.timedelta(hours=1)).astimezone(UTC))
    p = plan([item(at_cutoff), item(after), item(newest)])
    assert deleted(p) == {at_cutoff.file}
    assert kept(p) == {after.file, newest.file}


def test_calendar_months():
    m = months_before
    assert m(dt.datetime(2027, 3, 31, 10, tzinfo=SEOUL), 1) == dt.datetime(2027, 2, 28, 10, tzinfo=SEOUL)
    assert m(dt.datetime(2028, 3, 31, 10, tzinfo=SEOUL), 1) == dt.datetime(2028, 2, 29, 10, tzinfo=SEOUL)
    assert m(dt.datetime(2027, 1, 15, 2, tzinfo=SEOUL), 12) == dt.datetime(2026, 1, 15, 2, tzinfo=SEOUL)
    assert m(dt.datetime(2027, 1, 15, 2, tzinfo=SEOUL), 13) == dt.datetime(2025, 12, 15, 2, tzinfo=SEOUL)
    # The calendar is Seoul's even when now is given in UTC: 31 Jan 16:00 UTC is already 1 Feb in Seoul.
    p = plan([item(s) for s in history(start=dt.date(2026, 1, 1), end=dt.date(2027, 2, 1))],
             now=dt.datetime(2027, 1, 31, 17, 30, tzinfo=UTC), timezone=SEOUL_NAME)
    assert p.cutoffs["monthly"] == dt.datetime(2026, 2, 1, 2, 30, tzinfo=SEOUL)
    assert "glimpse_monthly_20260201_020000.dump" in deleted(p)
    assert "glimpse_monthly_20260301_020000.dump" in kept(p)


# --- protection of the newest ---------------------------------------------------------------------


def weekly(weeks_ago: int, target: str = "glimpse") -> Spec:
    local = (NOW - dt.timedelta(weeks=weeks_ago)).replace(hour=2)
    return Spec(target, "weekly", local, local.astimezone(UTC))


def test_newest_verified_of_a_tier_is_kept_even_when_old():
    old, older, oldest = weekly(16), weekly(18), weekly(20)
    daily = Spec("glimpse", "daily", NOW - dt.timedelta(hours=1), (NOW - dt.timedelta(hours=1)).astimezone(UTC))
    p = plan([item(oldest, verified=True), item(older, verified=True), item(old), item(daily)])
    # Weekly backups stopped 16 weeks ago: the newest *verified* one stays, the unverified newer one goes.
    assert kept(p) == {older.file, daily.file}
    assert deleted(p) == {oldest.file, old.file}
    reason = next(d.reason for d in p.keep if d.item.file == older.file)
    assert reason.endswith("older than 12 weeks but the newest verified weekly backup of glimpse")


def test_newest_of_a_tier_is_kept_when_none_is_verified_per_target():
    specs = [weekly(16), weekly(18), weekly(20), weekly(30, "other"), weekly(40, "other")]
    p = plan([item(s) for s in specs])
    assert kept(p) == {specs[0].file, specs[3].file}
    assert "the newest weekly backup of other (none is verified)" in {d.reason.split(" but ")[-1] for d in p.keep}


def test_protection_ignores_orphans_and_unreadable_backups():
    good, orphan, unreadable = weekly(20), weekly(16), weekly(15)
    p = plan([item(good), item(orphan, missing=("manifest",)),
              item(unreadable, problem="manifest is not valid JSON (x)")])
    assert deleted(p) == set()  # the good one is the newest *judgeable* weekly, so it stays too
    assert {d.item.file for d in p.attention} == {orphan.file, unreadable.file}


# --- refusals -------------------------------------------------------------------------------------


def test_refuses_empty_listing():
    with pytest.raises(RetentionRefused, match="no backups found in s3://glimpse-backups/database"):
        plan([], source="s3://glimpse-backups/database")


def test_refuses_timestamps_from_the_future():
    specs = history(start=dt.date(2026, 12, 1))
    ahead = Spec("glimpse", "daily", NOW + dt.timedelta(hours=2), (NOW + dt.timedelta(hours=2)).astimezone(UTC))
    with pytest.raises(RetentionRefused, match=r"1 backup\(s\) .* dated more than 1:00:00 after now .*"
                                               r"glimpse_daily_20270105_050000.dump"):
        plan([item(s) for s in specs] + [item(ahead)])
    # Within the allowed skew it is just the newest backup.
    near = Spec("glimpse", "daily", NOW + dt.timedelta(minutes=30), (NOW + dt.timedelta(minutes=30)).astimezone(UTC))
    assert near.file in kept(plan([item(s) for s in specs] + [item(near)]))


def test_refuses_deleting_too_large_a_fraction_and_hands_back_the_plan():
    specs = history()
    with pytest.raises(RetentionRefused, match=r"would delete 364 of 412 backups .*\(88%\), more than "
                                               r"max_delete_fraction 50%") as exc:
        plan([item(s) for s in specs], fraction=0.5)
    assert len(exc.value.plan.delete) == 364  # a dry run can still show what it would have done


# --- other targets: not ours ----------------------------------------------------------------------


def test_other_targets_are_kept_as_not_ours_and_do_not_dilute_the_guard():
    ours = history(start=dt.date(2026, 9, 1))
    # A removed target (or another deployment sharing the prefix): a year of backups, all out of window.
    theirs = history(start=dt.date(2025, 11, 20), end=dt.date(2026, 9, 30), target="legacy")
    items = [item(s) for s in ours + theirs]
    p = plan(items, targets=["glimpse"])
    assert kept(p) == expected_survivors(ours, NOW) | {s.file for s in theirs}
    assert deleted(p) == {s.file for s in ours} - expected_survivors(ours, NOW)
    assert {d.item.file for d in p.not_ours} == {s.file for s in theirs}
    assert {d.reason for d in p.not_ours} == {"not ours: target legacy is not one of glimpse; kept"}
    assert len(p.judged) == len(ours) and p.targets == ("glimpse",)
    report = format_report(p).splitlines()
    assert report[0].endswith(f"{len(items)} backups, keep {len(p.keep)}, to delete {len(p.delete)}, "
                              f"{len(theirs)} not ours (legacy)")
    assert sum(line.startswith("NOT OURS       legacy ") for line in report) == len(theirs)

    # Without a target list everything is judged: legacy would be cut to its newest per tier.
    everything = plan(items)
    assert {s.file for s in theirs} - kept(everything) and not everything.not_ours

    # max_delete_fraction counts our backups only: 88% of glimpse's history is refused even beside
    # a thousand kept backups of another target (364 of 1,736 would be 21%).
    specs = history()
    crowd = [item(s) for s in history(start=dt.date(2024, 4, 1), end=dt.date(2027, 1, 4), target="crowd")]
    with pytest.raises(RetentionRefused, match=r"would delete 364 of 412 backups .*\(88%\)"):
        plan([item(s) for s in specs] + crowd, fraction=0.5, targets=["glimpse"])


def test_no_backup_of_our_targets_is_refused():
    theirs = [item(s) for s in history(start=dt.date(2026, 12, 1), target="legacy")]
    with pytest.raises(RetentionRefused, match=r"no backups found in s3://x/database for target\(s\) glimpse "
                                               r"\(only 36 backup\(s\) of other targets: legacy\)"):
        plan(theirs, targets=["glimpse"], source="s3://x/database")
    with pytest.raises(ValueError, match="targets: an empty list"):
        plan(theirs, targets=[])


def test_future_timestamps_of_other_targets_are_not_ours_to_judge():
    ours = [item(s) for s in history(start=dt.date(2026, 12, 20))]
    ahead = Spec("legacy", "daily", NOW + dt.timedelta(days=3), (NOW + dt.timedelta(days=3)).astimezone(UTC))
    p = plan([*ours, item(ahead)], targets=["glimpse"])
    assert ahead.file in {d.item.file for d in p.not_ours}
    with pytest.raises(RetentionRefused, match="dated more than 1:00:00 after now"):
        plan([*ours, item(ahead)], targets=["glimpse", "legacy"])


# --- run-wide guards: the clock, and a pipeline that stopped --------------------------------------


def test_clock_skew_against_the_storage_server():
    server = dt.datetime(2027, 1, 4, 18, 0, 0, tzinfo=UTC)
    check_clock(server + dt.timedelta(minutes=59), server, SKEW, server="S3")
    check_clock(server - dt.timedelta(minutes=60), server, SKEW, server="S3")
    with pytest.raises(RetentionRefused, match=r"^retention refused: this worker's clock \(2027-01-24 18:00:00 UTC\) "
                                               r"is 20.0 days ahead of the clock of S3 at http://s3 \(2027-01-04 18:00:00 UTC\), "
                                               r"more than retention.max_future_skew_minutes \(60\); every "):
        check_clock(server + dt.timedelta(days=20), server, SKEW, server="S3 at http://s3")
    with pytest.raises(RetentionRefused, match=r"is 90 minutes behind the clock of S3 "):
        check_clock(server - dt.timedelta(minutes=90), server, SKEW, server="S3")
    with pytest.raises(ValueError, match="timezone-aware"):
        check_clock(server.replace(tzinfo=None), server, SKEW, server="S3")


def test_a_fast_clock_would_prune_a_steady_state_history_under_the_fraction_guard():
    """The issue's case: the plan alone cannot tell a clock 20 days fast from 20 days passing."""
    specs = history()
    survivors = [item(s) for s in specs if s.file in expected_survivors(specs, NOW)]
    fast = plan(survivors, now=NOW + dt.timedelta(days=20), fraction=0.5)
    assert 0.4 < len(fast.delete) / len(survivors) < 0.5  # 43% of real history, under max_delete_fraction
    with pytest.raises(RetentionRefused, match="20.0 days ahead"):
        check_clock(NOW + dt.timedelta(days=20), NOW, SKEW, server="S3")


def test_refuses_when_the_newest_verified_backup_is_too_old():
    max_age = dt.timedelta(hours=24)
    specs = history(start=dt.date(2026, 12, 1), end=dt.date(2027, 1, 3))  # the last two nights are missing
    items = [item(s, verified=True) for s in specs]
    with pytest.raises(RetentionRefused) as exc:
        check_recent_backups(items, NOW, ["glimpse"], max_age, source="s3://b/database", timezone=SEOUL_NAME)
    assert str(exc.value) == (
        "retention refused: the newest verified backup of glimpse is 2.0 days old (weekly/glimpse_weekly_20270103_"
        "020000.dump, 2027-01-03 02:00 KST), older than monitor_max_backup_age_hours (24). A pipeline that "
        "stopped producing verified backups is no time to prune: nothing is deleted until a fresh backup of every "
        "target is verified")

    # Fresh but unverified backups do not count, nor orphans; another target's age is not ours to judge.
    last_night = Spec("glimpse", "daily", NOW - dt.timedelta(hours=1), (NOW - dt.timedelta(hours=1)).astimezone(UTC))
    orphan = item(last_night, verified=True, missing=("data",))
    old_legacy = item(Spec("legacy", "daily", NOW - dt.timedelta(days=90), (NOW - dt.timedelta(days=90)).astimezone(UTC)),
                      verified=True)
    with pytest.raises(RetentionRefused, match="the newest verified backup of glimpse is 2.0 days old"):
        check_recent_backups([*items, item(last_night), orphan, old_legacy], NOW, ["glimpse"], max_age,
                             source="s3://b/database")
    newest = check_recent_backups([*items, item(last_night, verified=True), old_legacy], NOW, ["glimpse"],
                                  max_age, source="s3://b/database")
    assert newest["glimpse"].file == last_night.file

    # Every target is checked, and one with no verified backup at all is named too.
    with pytest.raises(RetentionRefused, match=r"glimpse is 2.0 days old .*; second has no verified backup in "
                                               r"s3://b/database\. A pipeline"):
        check_recent_backups(items, NOW, ["second", "glimpse"], max_age, source="s3://b/database")


def test_a_late_cleared_run_counts_as_fresh_by_its_manifest(tmp_path):
    # Named for a logical date five days back, taken last night: flagged for retention, but it is
    # evidence that the pipeline produces verified backups.
    cleared = Spec("glimpse", "daily", NOW - dt.timedelta(days=5), (NOW - dt.timedelta(hours=2)).astimezone(UTC))
    write_local(tmp_path, cleared, verified=True)
    (i,) = list_local_backups(str(tmp_path), SEOUL_NAME)
    assert i.time_conflict and i.verified
    newest = check_recent_backups([i], NOW, ["glimpse"], dt.timedelta(hours=24), source=str(tmp_path))
    assert newest == {"glimpse": i}


def test_bad_arguments():
    with pytest.raises(ValueError, match="timezone-aware"):
        plan([item(weekly(1))], now=NOW.replace(tzinfo=None))
    with pytest.raises(ValueError, match="max_delete_fraction"):
        plan([item(weekly(1))], fraction=1.5)


# --- listings: timestamps, manifests, orphans (local tree; S3 in-process with moto) ------------------


def test_local_listing_uses_the_manifest_not_mtime(tmp_path):
    root = tmp_path / "backups"
    old = Spec("glimpse", "daily", dt.datetime(2026, 10, 1, 2, tzinfo=SEOUL), dt.datetime(2026, 9, 30, 17, tzinfo=UTC))
    new = Spec("glimpse", "daily", dt.datetime(2027, 1, 4, 2, tzinfo=SEOUL), dt.datetime(2027, 1, 3, 17, tzinfo=UTC))
    for s in (old, new):
        path = write_local(root, s)
        for suffix in ("", ".sha256", ".json"):
            # mtimes say the opposite of the truth: the old one was touched now, the new one in 2001.
            t = dt.datetime(2001, 1, 1, tzinfo=UTC) if s is new else NOW
            os.utime(path + suffix, (t.timestamp(), t.timestamp()))
    items = list_local_backups(str(root), SEOUL_NAME)
    assert [(i.file, i.timestamp, i.timestamp_source) for i in items] == [
        (old.file, old.snapshot, "manifest"), (new.file, new.snapshot, "manifest")]
    p = plan(items)
    assert deleted(p) == {old.file} and kept(p) == {new.file}


def test_manifest_timestamp_wins_over_the_name_and_the_name_is_the_fallback(tmp_path):
    root = tmp_path / "backups"
    # Finished late the same night: the name is the logical date, the snapshot 17 hours on. Both are
    # long out of the daily window, so the manifest's time is what deletes it.
    late = Spec("glimpse", "daily", dt.datetime(2026, 10, 21, 2, tzinfo=SEOUL), dt.datetime(2026, 10, 21, 10, tzinfo=UTC))
    write_local(root, late)
    no_ts = Spec("glimpse", "daily", dt.datetime(2026, 12, 30, 2, tzinfo=SEOUL), dt.datetime(2026, 12, 29, 17, tzinfo=UTC))
    doc = no_ts.manifest()
    del doc["timestamp"]
    write_local(root, no_ts, manifest=json.dumps(doc).encode())
    naive = Spec("glimpse", "daily", dt.datetime(2026, 12, 31, 2, tzinfo=SEOUL), dt.datetime(2026, 12, 30, 17, tzinfo=UTC))
    write_local(root, naive, manifest=json.dumps({**naive.manifest(), "timestamp": "2026-12-30T17:00:00"}).encode())

    items = {i.file: i for i in list_local_backups(str(root), SEOUL_NAME)}
    assert items[late.file].timestamp == late.snapshot and items[late.file].timestamp_source == "manifest"
    assert items[late.file].time_conflict is None
    # The name's 02:00 is Seoul time: 17:00 UTC the day before.
    assert items[no_ts.file].timestamp == dt.datetime(2026, 12, 29, 17, tzinfo=UTC)
    assert items[no_ts.file].timestamp_source == "file name (manifest has no timestamp)"
    assert items[naive.file].timestamp_source.startswith("file name (manifest timestamp '2026-12-30T17:00:00' is not")
    p = plan(list(items.values()))
    assert deleted(p) == {late.file}
    assert next(d.reason for d in p.delete).startswith("75.3 days old, older than 30 days")  # by the name: 75.0


def test_manifest_timestamp_a_day_away_from_the_name_is_kept_and_flagged(tmp_path):
    root = tmp_path / "backups"
    # A run cleared five weeks late (named for its logical date, its snapshot recent), and a manifest
    # claiming a time months before its name: which one dates the backup is unknown.
    rerun = Spec("glimpse", "daily", dt.datetime(2026, 10, 20, 2, tzinfo=SEOUL), dt.datetime(2026, 11, 28, 5, tzinfo=UTC))
    backdated = Spec("glimpse", "weekly", dt.datetime(2026, 12, 27, 2, tzinfo=SEOUL),
                     dt.datetime(2026, 9, 1, 0, 30, tzinfo=UTC))
    just_over = Spec("glimpse", "daily", dt.datetime(2026, 10, 22, 2, tzinfo=SEOUL),
                     dt.datetime(2026, 10, 22, 17, 0, 1, tzinfo=UTC))  # a day and a second after 21 Oct 17:00 UTC
    newest = Spec("glimpse", "daily", dt.datetime(2027, 1, 5, 2, tzinfo=SEOUL), dt.datetime(2027, 1, 4, 17, tzinfo=UTC))
    for s in (rerun, backdated, just_over, newest):
        write_local(root, s, verified=True)

    items = {i.file: i for i in list_local_backups(str(root), SEOUL_NAME)}
    assert items[rerun.file].time_conflict == ("manifest timestamp 2026-11-28 05:00 UTC is 39.5 days after the time "
                                               "in its file name (2026-10-19 17:00 UTC)")
    assert items[backdated.file].time_conflict == ("manifest timestamp 2026-09-01 00:30 UTC is 116.7 days before "
                                                   "the time in its file name (2026-12-26 17:00 UTC)")
    assert items[just_over.file].time_conflict.startswith("manifest timestamp 2026-10-22 17:00 UTC is 1.0 days after")
    assert items[newest.file].time_conflict is None
    p = plan(list(items.values()))
    # All three would be out of their windows by either time; none is deleted, each says why.
    assert deleted(p) == set() and kept(p) == {rerun.file, backdated.file, just_over.file, newest.file}
    reasons = {d.item.file: d.reason for d in p.attention}
    assert set(reasons) == {rerun.file, backdated.file, just_over.file}
    assert reasons[rerun.file] == items[rerun.file].time_conflict + "; kept, check it"
    report = format_report(p)
    assert f"KEEP!          glimpse weekly  2026-09-01 09:30 KST  weekly/2026/12/{backdated.file}  manifest timestamp" \
        in report
    assert report.splitlines()[0].endswith("4 backups, keep 4, to delete 0, 3 need attention")
    # A flagged backup protects nothing: the newest judgeable daily is still the one protected.
    assert "newest verified daily" not in reasons[rerun.file]


def test_runbook_manifest_with_raw_newline_is_read(tmp_path):
    root = tmp_path / "backups"
    s = Spec("glimpse", "daily", dt.datetime(2026, 10, 6, 2, tzinfo=SEOUL), dt.datetime(2026, 10, 5, 17, 9, tzinfo=UTC))
    # What backup-database.sh's echo wrote: du -h size, psql -t's leading space and newline inside a string.
    legacy = (f'{{\n  "timestamp": "2026-10-05T17:09:00Z",\n  "type": "daily",\n  "file": "{s.file}",\n'
              f'  "size": "1.2G",\n  "checksum": "{"0" * 64}",\n'
              '  "db_version": " PostgreSQL 15.4 on x86_64-pc-linux-gnu\n"\n}').encode()
    write_local(root, s, manifest=legacy)
    (i,) = list_local_backups(str(root), SEOUL_NAME)
    assert i.problem is None and i.timestamp == s.snapshot and i.timestamp_source == "manifest"


def test_unparseable_manifest_and_incomplete_parts_are_kept_and_reported(tmp_path):
    root = tmp_path / "backups"
    base = dt.datetime(2026, 6, 2, 2, tzinfo=SEOUL)  # all far outside the daily window
    specs = [Spec("glimpse", "daily", base + dt.timedelta(days=n), (base + dt.timedelta(days=n)).astimezone(UTC))
             for n in range(6)]
    bad_json, no_manifest, only_sidecars, wrong_file, good_old, newest = specs
    write_local(root, bad_json, manifest=b'{"timestamp": "2026-06-01T17:00:01Z", "type": "da')
    write_local(root, no_manifest, parts=("", ".sha256"))
    write_local(root, only_sidecars, parts=(".sha256", ".json"))
    write_local(root, wrong_file, manifest=json.dumps({**wrong_file.manifest(), "file": "other.dump"}).encode())
    write_local(root, good_old)
    write_local(root, newest)
    (root / "daily/2026/06/glimpse_daily_20260610_020000.dump.partial").write_bytes(b"being written")
    (root / "daily/2026/06/notes.txt").write_text("not a backup")

    items = list_local_backups(str(root), SEOUL_NAME)
    assert len(items) == 6  # the .partial and notes.txt are not backups
    p = plan(items, now=dt.datetime(2027, 1, 5, 3, tzinfo=SEOUL))
    assert deleted(p) == {good_old.file}
    assert kept(p) == {bad_json.file, no_manifest.file, only_sidecars.file, wrong_file.file, newest.file}
    reasons = {d.item.file: d.reason for d in p.attention}
    assert reasons[bad_json.file].startswith("manifest is not valid JSON (")
    assert reasons[no_manifest.file] == "orphan: missing .json; kept, check it"
    assert reasons[only_sidecars.file] == "orphan: missing dump; kept, check it"
    assert reasons[wrong_file.file].startswith("manifest says file 'other.dump', not ")

    report = format_report(p)
    assert report.splitlines()[0].endswith("6 backups, keep 5, to delete 1, 4 need attention")
    assert f"KEEP!          glimpse daily   2026-06-02 02:00 KST  daily/2026/06/{bad_json.file}  manifest is not" in report

    result = apply_local(p, dry_run=False)
    assert result.deleted == {f"daily/2026/06/{good_old.file}": [str(root / good_old.local_rel) + s
                                                                for s in ("", ".sha256", ".json")]}
    left = sorted(f.name for f in (root / "daily/2026/06").iterdir())
    assert good_old.file not in " ".join(left) and len(left) == 3 + 2 + 2 + 3 + 3 + 2


def test_dry_run_deletes_nothing_locally(tmp_path):
    root = tmp_path / "backups"
    specs = history(start=dt.date(2026, 9, 1))
    for s in specs:
        write_local(root, s)
    before = sorted(str(p) for p in root.rglob("*"))
    p = plan(list_local_backups(str(root), SEOUL_NAME))
    result = apply_local(p, dry_run=True)
    assert sorted(str(p) for p in root.rglob("*")) == before
    assert result.deleted == {} and len(result.would_delete) == len(p.delete) > 0
    assert "DRY RUN, nothing deleted" in format_report(p, result).splitlines()[0]
    assert sum(line.startswith("WOULD DELETE") for line in format_report(p, result).splitlines()) == len(p.delete)


@pytest.fixture
def moto_s3(monkeypatch):
    for name, value in (("AWS_ACCESS_KEY_ID", "x"), ("AWS_SECRET_ACCESS_KEY", "x"), ("AWS_DEFAULT_REGION", "us-east-1")):
        monkeypatch.setenv(name, value)
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        yield client


def put(client, spec: Spec, manifest: bytes | None = None, suffixes=("", ".sha256", ".json")):
    bodies = spec.parts()
    if manifest is not None:
        bodies[".json"] = manifest
    for suffix in suffixes:
        client.put_object(Bucket=BUCKET, Key=spec.key + suffix, Body=bodies[suffix])


def test_s3_ages_come_from_manifests_not_last_modified(moto_s3):
    specs = history(start=dt.date(2026, 8, 1))
    for s in specs:
        put(moto_s3, s)
    moto_s3.put_object(Bucket=BUCKET, Key="database/wal/000000010000000000000001", Body=b"x")  # not a tier: untouched
    last_modified = {o["LastModified"].date() for o in moto_s3.list_objects_v2(Bucket=BUCKET)["Contents"]}
    assert min(last_modified) >= dt.date.today() - dt.timedelta(days=1)  # every object is "new" to S3

    items = list_s3_backups(moto_s3, BUCKET, PREFIX, SEOUL_NAME)
    assert {i.file for i in items} == {s.file for s in specs}
    assert all(i.timestamp_source == "manifest" and i.complete for i in items)
    p = plan(items)
    assert kept(p) == expected_survivors(specs, NOW)
    result = apply_s3(moto_s3, BUCKET, p, dry_run=False)
    assert sorted(result.deleted_paths) == sorted(k for d in p.delete for k in d.item.paths)
    left = {o["Key"] for o in moto_s3.list_objects_v2(Bucket=BUCKET)["Contents"]}
    assert left == {s.key + x for s in specs if s.file in kept(p) for x in ("", ".sha256", ".json")} | {
        "database/wal/000000010000000000000001"}


def test_s3_unparseable_manifest_is_kept_and_reported(moto_s3):
    old = Spec("glimpse", "daily", dt.datetime(2026, 3, 3, 2, tzinfo=SEOUL), dt.datetime(2026, 3, 2, 17, tzinfo=UTC))
    newest = Spec("glimpse", "daily", dt.datetime(2027, 1, 5, 2, tzinfo=SEOUL), dt.datetime(2027, 1, 4, 17, tzinfo=UTC))
    orphan = Spec("glimpse", "daily", dt.datetime(2026, 3, 4, 2, tzinfo=SEOUL), dt.datetime(2026, 3, 3, 17, tzinfo=UTC))
    put(moto_s3, old, manifest=b"\x00garbage")
    put(moto_s3, orphan, suffixes=("", ".sha256"))
    put(moto_s3, newest)
    items = list_s3_backups(moto_s3, BUCKET, PREFIX, SEOUL_NAME)
    p = plan(items)
    assert deleted(p) == set()
    report = format_report(p, apply_s3(moto_s3, BUCKET, p, dry_run=False))
    assert f"daily/{old.file}  manifest is not valid JSON" in report
    assert f"daily/{orphan.file}  orphan: missing .json; kept, check it" in report
    assert len(moto_s3.list_objects_v2(Bucket=BUCKET)["Contents"]) == 8


class DenyingClient:
    """delete_objects answers like S3 does when a policy denies one key: HTTP 200 with Errors."""

    def __init__(self, deny: str):
        self.deny, self.calls = deny, []

    def delete_objects(self, Bucket, Delete):  # noqa: N803 - boto3's parameter names
        keys = [o["Key"] for o in Delete["Objects"]]
        self.calls.append(keys)
        return {"Deleted": [{"Key": k} for k in keys if k != self.deny],
                "Errors": [{"Key": k, "Code": "AccessDenied", "Message": "Access Denied"} for k in keys if k == self.deny]}


def test_s3_delete_errors_stop_and_say_exactly_what_was_deleted():
    specs = history(start=dt.date(2026, 9, 1), end=dt.date(2026, 9, 10))
    p = plan([item(s) for s in specs] + [item(Spec("glimpse", "daily", NOW, NOW.astimezone(UTC)))])
    first, second = p.delete[0].item, p.delete[1].item
    client = DenyingClient(deny=second.data)
    with pytest.raises(RetentionDeleteFailed, match=f"{second.data}: AccessDenied Access Denied") as exc:
        apply_s3(client, BUCKET, p, dry_run=False)
    assert client.calls == [first.paths, second.paths]  # one request per backup, then it stopped
    assert exc.value.result.deleted == {first.display: first.paths, second.display: second.paths[1:]}
    report = format_report(p, exc.value.result)
    assert "PARTLY DELETED" in report and report.count("NOT DELETED") == len(p.delete) - 2


# --- encrypted (.age) backups ---------------------------------------------------------------------

SWITCH = dt.date(2026, 10, 15)  # encryption.recipients set: from this day on, every backup is .dump.age


def test_encrypted_and_plaintext_backups_are_judged_alike_locally(tmp_path):
    root = tmp_path / "backups"
    specs = history(start=dt.date(2026, 6, 1), encrypted_from=SWITCH)
    assert {s.ext for s in specs} == {".dump", ".dump.age"}
    for s in specs:
        write_local(root, s, verified=True)
    lone = Spec("glimpse", "daily", dt.datetime(2026, 6, 20, 2, tzinfo=SEOUL), dt.datetime(2026, 6, 19, 17, tzinfo=UTC),
                ext=".dump.age")
    write_local(root, lone, parts=(".sha256",))  # a lone sidecar of an encrypted dump: an orphan, kept

    items = list_local_backups(str(root), SEOUL_NAME)
    by_file = {i.file: i for i in items}
    assert set(by_file) == {s.file for s in specs} | {lone.file}
    enc = next(s for s in specs if s.encrypted and s.tier == "daily")
    assert by_file[enc.file].complete and by_file[enc.file].timestamp == enc.snapshot
    assert by_file[enc.file].paths == [str(root / enc.local_rel) + x for x in ("", ".sha256", ".json")]

    p = plan(items)
    assert kept(p) == expected_survivors(specs, NOW) | {lone.file}
    assert any(f.endswith(".dump.age") for f in deleted(p)) and any(f.endswith(".dump") for f in deleted(p))
    (orphan,) = p.attention
    assert orphan.item.file == lone.file and orphan.reason == "orphan: missing dump, .json; kept, check it"

    result = apply_local(p, dry_run=False)
    left = sorted(str(f.relative_to(root)) for f in root.rglob("*") if f.is_file())
    assert left == sorted([s.local_rel + x for s in specs if s.file in kept(p) for x in ("", ".sha256", ".json")]
                          + [lone.local_rel + ".sha256"])
    assert sorted(result.deleted_paths) == sorted(k for d in p.delete for k in d.item.paths)


def test_encrypted_backups_in_s3_go_with_their_sidecars(moto_s3):
    specs = history(start=dt.date(2026, 8, 1), encrypted_from=SWITCH)
    for s in specs:
        put(moto_s3, s)
    items = list_s3_backups(moto_s3, BUCKET, PREFIX, SEOUL_NAME)
    assert {i.file for i in items} == {s.file for s in specs} and all(i.complete for i in items)
    p = plan(items)
    assert kept(p) == expected_survivors(specs, NOW)
    gone = [d for d in p.delete if d.item.file.endswith(".dump.age")]
    assert gone and gone[0].item.paths == [gone[0].item.data, gone[0].item.data + ".sha256",
                                           gone[0].item.data + ".json"]
    apply_s3(moto_s3, BUCKET, p, dry_run=False)
    left = {o["Key"] for o in moto_s3.list_objects_v2(Bucket=BUCKET)["Contents"]}
    assert left == {s.key + x for s in specs if s.file in kept(p) for x in ("", ".sha256", ".json")}


def test_a_plaintext_and_an_encrypted_backup_of_the_same_moment_are_two_backups(tmp_path):
    root = tmp_path / "backups"
    local = dt.datetime(2026, 6, 2, 2, tzinfo=SEOUL)
    plain = Spec("glimpse", "daily", local, local.astimezone(UTC))
    sealed = replace(plain, ext=".dump.age")
    newest = Spec("glimpse", "daily", dt.datetime(2027, 1, 5, 2, tzinfo=SEOUL), dt.datetime(2027, 1, 4, 17, tzinfo=UTC),
                  ext=".dump.age")
    for s in (plain, sealed, newest):
        write_local(root, s, verified=True)
    p = plan(list_local_backups(str(root), SEOUL_NAME))
    assert deleted(p) == {plain.file, sealed.file} and kept(p) == {newest.file}
    assert {d.item.file: len(d.item.paths) for d in p.delete} == {plain.file: 3, sealed.file: 3}
