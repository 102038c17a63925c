"""GFS retention against moto's S3 server (real HTTP) and a local tree: 412 days of backups, applied.

Every object is uploaded during the test, so S3's LastModified (and every file's mtime) says "now";
only the manifests carry the backups' real dates.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from concurrent.futures import ThreadPoolExecutor

import pytest
from pg_dataops.common.config import load_config
from pg_dataops.common.errors import PermanentError
from pg_dataops.retention.apply import (
    apply_local,
    apply_retention,
    apply_s3,
    list_local_backups,
    list_s3_backups,
    s3_server_time,
)
from pg_dataops.retention.plan import (
    RetentionError,
    RetentionParamError,
    RetentionRefused,
    check_clock,
    check_recent_backups,
    plan_retention,
)
from pg_dataops.retention.report import format_report

from tests.support.retention import (
    NOT_BACKUPS,
    NOW,
    POLICY,
    PREFIX,
    SEOUL_NAME,
    SKEW,
    SUFFIXES,
    all_keys,
    expected_survivors,
    history,
    recent_history,
    upload,
    write_tree,
)

pytestmark = pytest.mark.integration


def plan(items, fraction=1.0):
    # 1.0: the first cleanup of a year's backlog deletes most of it (see the refusal test).
    return plan_retention(items, NOW, POLICY, max_delete_fraction=fraction, max_future_skew=SKEW,
                          timezone=SEOUL_NAME)


@pytest.fixture
def s3_history(s3, bucket):
    client = s3.client()
    specs = history()
    uploads = [(s.key + suffix, body) for s in specs for suffix, body in zip(SUFFIXES, s.parts().values(), strict=True)]
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(lambda kb: client.put_object(Bucket=bucket, Key=kb[0], Body=kb[1]), uploads))
    # Not backups: another folder under the prefix, and a stray file in a tier folder.
    client.put_object(Bucket=bucket, Key=f"{PREFIX}/wal/000000010000000000000001", Body=b"wal")
    client.put_object(Bucket=bucket, Key=f"{PREFIX}/daily/README.txt", Body=b"hands off")
    return client, specs


def test_s3_refusal_dry_run_and_apply_leave_exactly_the_survivors(s3_history, bucket):
    # One history for all three: writing 1,238 objects to moto is most of this test's time.
    client, specs = s3_history
    before = all_keys(client, bucket)
    assert len(before) == 412 * 3 + 2  # more than one listing page (1000 keys)

    items = list_s3_backups(client, bucket, PREFIX, SEOUL_NAME)
    assert len(items) == 412 and all(i.complete and i.timestamp_source == "manifest" for i in items)
    # Refusals delete nothing: the backlog is too large a share for the steady-state guard, and a wrong
    # prefix lists nothing.
    with pytest.raises(RetentionRefused, match="would delete 364 of 412"):
        plan(items, fraction=0.5)
    with pytest.raises(RetentionRefused, match="no backups found in s3://.*/elsewhere"):
        plan_retention(list_s3_backups(client, bucket, "elsewhere", SEOUL_NAME), NOW, POLICY,
                       max_delete_fraction=0.5, max_future_skew=SKEW, source=f"s3://{bucket}/elsewhere")
    assert all_keys(client, bucket) == before

    p = plan(items)
    survivors = expected_survivors(specs, NOW)
    assert {d.item.file for d in p.keep} == survivors

    dry = apply_s3(client, bucket, p, dry_run=True)
    assert all_keys(client, bucket) == before
    assert dry.deleted == {} and len(dry.would_delete) == len(p.delete) == 412 - 48

    applied = apply_s3(client, bucket, p, dry_run=False)
    after = all_keys(client, bucket)
    kept_keys = {s.key + x for s in specs if s.file in survivors for x in SUFFIXES}
    assert after == kept_keys | {f"{PREFIX}/wal/000000010000000000000001", f"{PREFIX}/daily/README.txt"}
    # Each deleted backup lost its three parts together, and the result says exactly that.
    gone = {s.key for s in specs if s.file not in survivors}
    assert set(applied.deleted_paths) == before - after == {k + x for k in gone for x in SUFFIXES}
    assert all(len(parts) == 3 for parts in applied.deleted.values())

    report = format_report(p, applied)
    lines = report.splitlines()
    assert lines[0].endswith("(applied): 412 backups, keep 48, deleted 364")
    assert sum(line.startswith("DELETED ") for line in lines) == 364
    assert sum(line.startswith("KEEP ") for line in lines) == 48

    # A second run finds nothing more to delete, and the steady-state guard no longer objects.
    again = plan_retention(list_s3_backups(client, bucket, PREFIX, SEOUL_NAME), NOW, POLICY,
                           max_delete_fraction=0.5, max_future_skew=SKEW, timezone=SEOUL_NAME)
    assert again.delete == [] and len(again.keep) == 48


def test_local_tree_dry_run_then_apply(tmp_path):
    root = tmp_path / "postgres"
    specs = history()
    ancient = dt.datetime(2001, 1, 1).timestamp()
    for s in specs:
        path = root / s.local_rel
        path.parent.mkdir(parents=True, exist_ok=True)
        for suffix, body in zip(SUFFIXES, s.parts().values(), strict=True):
            part = path.with_name(path.name + suffix)
            part.write_bytes(body)
            os.utime(part, (ancient, ancient))  # mtimes are meaningless: survivors look 26 years old
    snapshot = lambda: {str(p.relative_to(root)) for p in root.rglob("*")}  # noqa: E731
    before = snapshot()

    p = plan(list_local_backups(str(root), SEOUL_NAME))
    survivors = expected_survivors(specs, NOW)
    assert {d.item.file for d in p.keep} == survivors

    dry = apply_local(p, dry_run=True)
    assert snapshot() == before and dry.deleted == {} and dry.removed_dirs == []

    applied = apply_local(p, dry_run=False)
    files = {x for x in snapshot() if (root / x).is_file()}
    assert files == {s.local_rel + x for s in specs if s.file in survivors for x in SUFFIXES}
    assert sorted(applied.deleted_paths) == sorted(
        str(root / s.local_rel) + x for s in specs if s.file not in survivors for x in SUFFIXES)
    # Month and year directories left empty are gone; the tier directories stay.
    dirs = {x for x in snapshot() if (root / x).is_dir()}
    assert dirs == {"daily", "weekly", "monthly", "daily/2026", "daily/2026/12", "daily/2027", "daily/2027/01",
                    "weekly/2026", "weekly/2026/10", "weekly/2026/11", "weekly/2026/12", "weekly/2027",
                    "weekly/2027/01", "monthly/2026", "monthly/2027", "monthly/2027/01"} | {
                    f"monthly/2026/{m:02d}" for m in range(2, 13)}
    assert str(root / "daily/2025/11") in applied.removed_dirs and str(root / "daily/2025") in applied.removed_dirs


def test_s3_server_clock_is_read_from_its_date_header(s3, bucket):
    client = s3.client()
    before = dt.datetime.now(dt.UTC).replace(microsecond=0)
    server = s3_server_time(client, bucket)
    after = dt.datetime.now(dt.UTC)
    # moto's Date is its real clock, at one-second resolution.
    assert before <= server <= after and server.tzinfo is not None
    check_clock(after, server, SKEW, server="S3")
    # This worker 20 days fast (the case), or 61 minutes slow: refused either way.
    with pytest.raises(RetentionRefused, match=rf"is 20.0 days ahead of the clock of S3 at {s3.endpoint} "):
        check_clock(after + dt.timedelta(days=20), server, SKEW, server=f"S3 at {s3.endpoint}")
    with pytest.raises(RetentionRefused, match="is 61 minutes behind"):
        check_clock(server - dt.timedelta(minutes=61), server, SKEW, server="S3")
    with pytest.raises(RetentionError, match=r"cannot reach s3://no-such-bucket-here to read its clock: 404"):
        s3_server_time(client, "no-such-bucket-here")


def test_s3_other_targets_and_contradicting_manifests_are_kept(s3, bucket):
    """Applied in S3 with only glimpse's backups judged: a removed target's and a flagged one stay."""
    client = s3.client()
    ours = history(start=dt.date(2026, 10, 1))
    legacy = history(start=dt.date(2026, 1, 1), end=dt.date(2026, 8, 31), target="legacy")
    # Named for 3 Oct, its manifest says it was taken on 20 Oct: kept and flagged, not judged.
    cleared = ours[2]
    assert cleared.file == "glimpse_daily_20261003_020000.dump"
    uploads = [(s.key + suffix, body) for s in ours + legacy if s is not cleared
               for suffix, body in zip(SUFFIXES, s.parts(verified=True).values(), strict=True)]
    late_doc = {**cleared.manifest(verified=True), "timestamp": "2026-10-20T05:00:00Z"}
    uploads += [(cleared.key, b"PGDMP\x00"), (cleared.key + ".sha256", b"x"),
                (cleared.key + ".json", json.dumps(late_doc).encode())]
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(lambda kb: client.put_object(Bucket=bucket, Key=kb[0], Body=kb[1]), uploads))
    before = all_keys(client, bucket)

    items = list_s3_backups(client, bucket, PREFIX, SEOUL_NAME)
    newest = check_recent_backups(items, NOW, ["glimpse"], dt.timedelta(hours=24), source=f"s3://{bucket}/{PREFIX}")
    assert newest["glimpse"].file == "glimpse_daily_20270105_020000.dump"
    p = plan_retention(items, NOW, POLICY, max_delete_fraction=0.9, max_future_skew=SKEW, timezone=SEOUL_NAME,
                       source=f"s3://{bucket}/{PREFIX}", targets=["glimpse"])
    applied = apply_s3(client, bucket, p, dry_run=False)

    survivors = expected_survivors(ours, NOW) | {cleared.file}
    gone = {s.key + x for s in ours if s.file not in survivors for x in SUFFIXES}
    assert gone and set(applied.deleted_paths) == gone
    assert all_keys(client, bucket) == before - gone
    assert {s.key + x for s in legacy for x in SUFFIXES} <= all_keys(client, bucket)
    (flagged,) = p.attention
    assert flagged.item.file == cleared.file and flagged.reason == (
        "manifest timestamp 2026-10-20 05:00 UTC is 17.5 days after the time in its file name (2026-10-02 17:00 UTC); "
        "kept, check it")
    report = format_report(p, applied).splitlines()
    assert report[0].endswith(f"keep {len(p.keep)}, deleted {len(gone) // 3}, 1 need attention, "
                              f"{len(legacy)} not ours (legacy)")


def test_one_run_refuses_then_reports_then_applies_without_airflow(s3, bucket, tmp_path):
    """apply_retention, the task's whole run: the refusal and dry-run policy, the XCom summary and the Slack text."""
    client = s3.client()
    specs, now = recent_history(120)  # the run plans against the wall clock
    upload(client, bucket, specs)
    root = tmp_path / "backups"
    write_tree(root, specs)
    cfg = load_config(environ={"PGBACKUP_BUCKET": bucket, "PGBACKUP_LOCAL_ROOT": str(root)})
    before, local_before = all_keys(client, bucket), sorted(root.rglob("*"))
    survivors = expected_survivors(specs, now)
    gone = [s for s in specs if s.file not in survivors]
    assert len(gone) > cfg.retention.max_delete_fraction * len(specs)
    needed = -(-len(gone) * 100 // len(specs)) / 100

    # A real run over max_delete_fraction: one permanent refusal naming both listings, nothing deleted.
    with pytest.raises(RetentionRefused, match=rf"^retention refused: the plan would delete {len(gone)} of "
                                               rf"{len(specs)} backups in s3://{bucket}/database .* max_delete_fraction "
                                               rf"{needed} or more lets it through\); retention refused: .* in {re.escape(str(root))} "
                                               r".*; nothing was deleted$") as exc:
        apply_retention(cfg, client, dry_run=False)
    assert isinstance(exc.value, PermanentError) and exc.value.plan is None
    assert all_keys(client, bucket) == before and sorted(root.rglob("*")) == local_before

    # The same as a dry run succeeds and says what a real run needs.
    dry = apply_retention(cfg, client, dry_run="true")
    assert all_keys(client, bucket) == before and sorted(root.rglob("*")) == local_before
    assert dry.summary["dry_run"] is True and dry.summary["targets_from"] == "config"
    assert dry.summary["s3"]["would_delete"] == dry.summary["local"]["would_delete"] == len(gone)
    assert dry.summary["s3"]["minimum_max_delete_fraction"] == needed
    lines = dry.slack_text.splitlines()
    assert lines[0] == ":wastebasket: Backup retention (DRY RUN, nothing deleted)"
    assert lines[2] == lines[4] == f"a real run would be refused: needs max_delete_fraction >= {needed}"
    assert lines[-1].startswith("policy: daily 30 days")

    applied = apply_retention(cfg, client, dry_run=False, max_delete_fraction="1.0")
    assert all_keys(client, bucket) == {s.key + x for s in specs if s.file in survivors for x in SUFFIXES} | set(
        NOT_BACKUPS)
    assert applied.summary["s3"]["deleted"] == applied.summary["local"]["deleted"] == len(gone)
    assert applied.summary["max_delete_fraction"] == 1.0 and applied.summary["s3"]["refused"] is None

    # Bad params fail before anything is read.
    with pytest.raises(RetentionParamError, match="max_delete_fraction"):
        apply_retention(cfg, client, dry_run=False, max_delete_fraction=2)
