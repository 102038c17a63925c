"""pg_backup_retention end to end with `airflow dags test`: a synthetic history in moto's S3 and a local tree.

The task plans against the wall clock, so the history is laid out relative to it, with every backup
at a time of day twelve hours away from now: no cutoff falls anywhere near a backup while the test runs.
Every run is judged by its state in the metadata DB, and by what is left in S3 and on disk.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import sqlite3
from pathlib import Path

import pytest
from faultproxy import S3Proxy

from tests.support.retention import (
    NOT_BACKUPS,
    SUFFIXES,
    all_keys,
    expected_survivors,
    recent_history,
    upload,
    write_tree,
)

from .conftest import BackupRun, files_under, json_posts

pytestmark = pytest.mark.dagrun

DAG_ID = "pg_backup_retention"


def last_xcom(airflow_home: Path) -> dict | None:
    """The apply_retention task's return value in the latest run (None if it returned nothing)."""
    with sqlite3.connect(Path(airflow_home) / "airflow.db") as db:
        (run_id,) = db.execute("SELECT run_id FROM dag_run WHERE dag_id = ? ORDER BY id DESC LIMIT 1",
                               (DAG_ID,)).fetchone()
        row = db.execute("SELECT value FROM xcom WHERE dag_id = ? AND run_id = ? AND task_id = 'apply_retention' "
                         "AND key = 'return_value'", (DAG_ID, run_id)).fetchone()
    if row is None:
        return None
    value = json.loads(row[0])
    return json.loads(value) if isinstance(value, str) else value


@pytest.fixture
def run_retention(run_dag, s3):
    def run(*, bucket: str, local_root: Path, conf: dict | None = None, s3_endpoint: str | None = None) -> BackupRun:
        return run_dag(DAG_ID, bucket=bucket, local_root=local_root, conf=conf,
                       conns={"backup_s3": s3.airflow_conn(s3_endpoint)})

    return run


def assert_alerted(receiver, cause: str):
    """One Slack post and one PagerDuty trigger for the failed task, each carrying ``cause`` (a regex)."""
    (slack,) = json_posts(receiver, "/slack")
    text = slack["text"]
    assert f"DAG: `{DAG_ID}`  task: `apply_retention`" in text and re.search(cause, text), text
    assert "nothing was deleted" in text
    (event,) = json_posts(receiver, "/pagerduty")
    assert event["routing_key"] == "test-routing-key" and event["event_action"] == "trigger"
    assert re.fullmatch(rf"{DAG_ID}/manual__[^/]+", event["dedup_key"]), event["dedup_key"]
    assert event["payload"]["summary"].startswith(f"Backup retention FAILED: {DAG_ID}.apply_retention in run ")
    assert re.search(cause, event["payload"]["summary"]), event["payload"]["summary"]


def test_dry_run_then_refused_then_applied(run_retention, airflow_home, s3, bucket, receiver, tmp_path):
    specs, now = recent_history(120)
    # Another deployment's backups under the same prefix: not ours, kept whatever their age.
    theirs, _ = recent_history(120, target="legacy")
    # A backup long out of its window whose manifest claims a time 40 days after its name: kept, flagged.
    flagged = specs[5]
    late = {flagged.file: json.dumps({**flagged.manifest(verified=True), "timestamp": (
        flagged.snapshot + dt.timedelta(days=40)).isoformat()}).encode()}
    client = s3.client()
    upload(client, bucket, specs + theirs, late)
    root = tmp_path / "backups"
    write_tree(root, specs + theirs, late)
    s3_before, local_before = all_keys(client, bucket), files_under(root)

    survivors = expected_survivors(specs, now) | {flagged.file}
    gone = [s for s in specs if s.file not in survivors]
    s3_gone = {s.key + x for s in gone for x in SUFFIXES}
    local_gone = {str(root / s.local_rel) + x for s in gone for x in SUFFIXES}
    # A backlog larger than the steady-state guard (max_delete_fraction 0.5) lets through; counted over
    # glimpse's backups only, however many of another target's sit beside them.
    assert len(gone) > 0.5 * len(specs) and len(survivors) >= 30 and len(gone) < 0.5 * len(specs + theirs)
    needed = -(-len(gone) * 100 // len(specs)) / 100  # rounded up to two decimals
    refusal = (f"retention refused: the plan would delete {len(gone)} of {len(specs)} backups in "
               f"s3://{bucket}/database")

    # 1. Dry run: nothing deleted; the log, the XCom and Slack say what a real run would delete and need.
    run = run_retention(bucket=bucket, local_root=root, conf={"dry_run": True})
    assert run.state == "success", run.output[-3000:]
    assert all_keys(client, bucket) == s3_before and files_under(root) == local_before
    x = last_xcom(airflow_home)
    assert x["dry_run"] is True and x["max_delete_fraction"] == 0.5
    assert x["targets"] == ["glimpse"] and x["targets_from"] == "config"
    newest = max(specs, key=lambda s: s.snapshot)
    assert x["newest_verified"] == {"glimpse": f"{newest.tier}/{newest.file}"}
    assert x["s3"]["backups"] == len(specs) and x["s3"]["kept"] == len(survivors)
    assert x["s3"]["deleted"] == 0 and x["s3"]["deleted_keys"] == []
    assert x["s3"]["would_delete"] == len(gone) and set(x["s3"]["would_delete_keys"]) == s3_gone
    assert x["s3"]["refused"].startswith(refusal) and x["s3"]["minimum_max_delete_fraction"] == needed
    assert sorted(x["s3"]["not_ours"]) == sorted(f"{s.tier}/{s.file}" for s in theirs)
    assert sorted(x["local"]["not_ours"]) == sorted(f"{s.tier}/{s.local:%Y/%m}/{s.file}" for s in theirs)
    (attention,) = x["s3"]["attention"]
    assert attention.startswith(f"{flagged.tier}/{flagged.file}: manifest timestamp ") and \
        attention.endswith(" is 40.0 days after the time in its file name "
                           f"({flagged.snapshot:%Y-%m-%d %H:%M} UTC); kept, check it")
    assert set(x["local"]["would_delete_keys"]) == local_gone and x["local"]["deleted_keys"] == []
    assert "DRY RUN, nothing deleted" in run.output
    assert run.output.count("WOULD DELETE ") == 2 * len(gone)  # one report line per backup, S3 and local
    assert run.output.count("NOT OURS       legacy ") == 2 * len(theirs)
    (slack,) = json_posts(receiver, "/slack")
    lines = slack["text"].splitlines()
    assert lines[0] == ":wastebasket: Backup retention (DRY RUN, nothing deleted)"
    assert lines[1].startswith(f"Retention of s3://{bucket}/database at ")
    assert lines[1].endswith(f"(DRY RUN, nothing deleted): {len(specs) + len(theirs)} backups, "
                             f"keep {len(survivors) + len(theirs)}, would delete {len(gone)}, 1 need attention, "
                             f"{len(theirs)} not ours (legacy)")
    assert lines[2] == f"a real run would be refused: needs max_delete_fraction >= {needed}"
    assert lines[3].startswith(f"Retention of {root} at ")
    assert lines[-1].startswith("policy: daily 30 days")
    assert json_posts(receiver, "/pagerduty") == []

    # 2. A real run with the config's max_delete_fraction is refused: nothing deleted, Slack and PagerDuty alerted.
    run = run_retention(bucket=bucket, local_root=root, conf={"dry_run": False})
    assert run.state == "failed", run.output[-3000:]
    assert all_keys(client, bucket) == s3_before and files_under(root) == local_before
    assert last_xcom(airflow_home) is None
    assert_alerted(receiver, re.escape(refusal))
    assert f"max_delete_fraction {needed} or more lets it through" in json_posts(receiver, "/slack")[0]["text"]

    # 3. With max_delete_fraction 1.0, exactly the survivors remain in S3 and locally, and all of legacy's.
    run = run_retention(bucket=bucket, local_root=root, conf={"dry_run": False, "max_delete_fraction": 1.0})
    assert run.state == "success", run.output[-3000:]
    assert all_keys(client, bucket) == s3_before - s3_gone
    assert all_keys(client, bucket) == {s.key + x for s in specs + theirs if s.file in survivors or s.target == "legacy"
                                        for x in SUFFIXES} | set(NOT_BACKUPS)
    assert set(files_under(root)) == {s.local_rel + x for s in specs + theirs
                                      if s.file in survivors or s.target == "legacy" for x in SUFFIXES}
    x = last_xcom(airflow_home)
    assert x["dry_run"] is False and x["max_delete_fraction"] == 1.0
    assert x["s3"]["deleted"] == len(gone) and set(x["s3"]["deleted_keys"]) == s3_gone
    assert x["s3"]["kept"] == len(survivors) and x["s3"]["refused"] is None and x["s3"]["would_delete_keys"] == []
    assert x["local"]["deleted"] == len(gone) and set(x["local"]["deleted_keys"]) == local_gone
    assert run.output.count("DELETED ") >= 2 * len(gone)
    (slack,) = json_posts(receiver, "/slack")
    assert slack["text"].splitlines()[0] == ":wastebasket: Backup retention (applied)"
    assert f"keep {len(survivors) + len(theirs)}, deleted {len(gone)}" in slack["text"]
    assert json_posts(receiver, "/pagerduty") == []


def test_empty_bucket_is_refused_and_alerted(run_retention, airflow_home, s3, bucket, receiver, tmp_path):
    specs, _ = recent_history(60)
    root = tmp_path / "backups"
    write_tree(root, specs)
    before = files_under(root)
    # Even a real run allowed to delete everything deletes nothing locally when S3 lists nothing.
    run = run_retention(bucket=bucket, local_root=root, conf={"dry_run": False, "max_delete_fraction": 1.0})
    assert run.state == "failed", run.output[-3000:]
    assert files_under(root) == before
    assert_alerted(receiver, re.escape(f"retention refused: no backups found in s3://{bucket}/database for target(s) "
                                       f"glimpse; "))
    assert f"glimpse has no verified backup in s3://{bucket}/database" in json_posts(receiver, "/slack")[0]["text"]


def test_worker_without_local_copies_applies_s3_within_the_guard(run_retention, airflow_home, s3, bucket, receiver,
                                                                  tmp_path):
    specs, now = recent_history(60)
    client = s3.client()
    upload(client, bucket, specs)
    survivors = expected_survivors(specs, now)
    assert 0 < len(specs) - len(survivors) <= 0.5 * len(specs)  # a steady state: the config's guard allows it
    root = tmp_path / "no-local-copies"  # never created
    run = run_retention(bucket=bucket, local_root=root, conf={"dry_run": False})
    assert run.state == "success", run.output[-3000:]
    assert all_keys(client, bucket) == {s.key + x for s in specs if s.file in survivors for x in SUFFIXES} | set(
        NOT_BACKUPS)
    x = last_xcom(airflow_home)
    assert x["s3"]["deleted"] == len(specs) - len(survivors)
    assert x["local"]["backups"] == 0 and x["local"]["deleted_keys"] == []
    assert f"no local backups of glimpse under {root}" in json_posts(receiver, "/slack")[0]["text"]


def test_clock_skew_and_a_stalled_pipeline_refuse_a_named_target_is_pruned(run_retention, airflow_home, s3, bucket,
                                                                          receiver, tmp_path):
    # glimpse stopped producing backups three days ago; legacy was removed from the config 40 days ago.
    ours, now = recent_history(60, ending_days_ago=3)
    theirs, _ = recent_history(150, target="legacy", ending_days_ago=40)
    client = s3.client()
    upload(client, bucket, ours + theirs)
    root = tmp_path / "backups"
    write_tree(root, ours + theirs)
    s3_before, local_before = all_keys(client, bucket), files_under(root)
    # Both would lose backups to a steady-state run, so "nothing deleted" below is the guards' doing.
    assert expected_survivors(ours, now) < {s.file for s in ours}

    # 1. S3's clock 20 days behind this worker's (equivalently: this worker 20 days fast).
    # moto's Date is the real clock, and this worker's clock is not ours to change: an S3 endpoint
    # 20 days slow is, to the guard, the same as this worker being 20 days fast.
    skewed = S3Proxy(s3.port, date_offset=-dt.timedelta(days=20).total_seconds()).start()
    try:
        run = run_retention(bucket=bucket, local_root=root, conf={"dry_run": False, "max_delete_fraction": 1.0},
                            s3_endpoint=skewed.endpoint)
    finally:
        skewed.stop()
    assert run.state == "failed", run.output[-3000:]
    assert all_keys(client, bucket) == s3_before and files_under(root) == local_before
    assert last_xcom(airflow_home) is None
    assert_alerted(receiver, r"retention refused: this worker's clock \(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC\) is "
                             r"20\.0 days ahead of the clock of S3 at " + re.escape(skewed.endpoint) +
                             r" \(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC\), more than "
                             r"retention\.max_future_skew_minutes \(60\)")

    # 2. The clocks agree, but glimpse's newest verified backup is three and a half days old: a dry run is refused too.
    newest = max(ours, key=lambda s: s.snapshot)
    run = run_retention(bucket=bucket, local_root=root, conf={"dry_run": True})
    assert run.state == "failed", run.output[-3000:]
    assert all_keys(client, bucket) == s3_before and files_under(root) == local_before
    assert_alerted(receiver, r"retention refused: the newest verified backup of glimpse is 3\.\d days old \(" +
                   re.escape(f"{newest.tier}/{newest.file}, {newest.local:%Y-%m-%d %H:%M} KST), older than "
                             "monitor_max_backup_age_hours (24). A pipeline that stopped producing verified backups "
                             "is no time to prune"))

    # 3. A human names the removed target: only its backups are judged (cut to its windows, its newest
    #    daily kept although out of window); glimpse's stalled history is not ours this time and stays.
    run = run_retention(bucket=bucket, local_root=root,
                        conf={"dry_run": False, "max_delete_fraction": 1.0, "targets": ["legacy"]})
    assert run.state == "success", run.output[-3000:]
    newest_daily = max((s for s in theirs if s.tier == "daily"), key=lambda s: s.snapshot)
    assert newest_daily.file not in expected_survivors(theirs, now)
    legacy_kept = expected_survivors(theirs, now) | {newest_daily.file}
    s3_gone = {s.key + x for s in theirs if s.file not in legacy_kept for x in SUFFIXES}
    assert s3_gone and all_keys(client, bucket) == s3_before - s3_gone
    assert set(files_under(root)) == set(local_before) - {s.local_rel + x for s in theirs if s.file not in legacy_kept
                                                          for x in SUFFIXES}
    x = last_xcom(airflow_home)
    assert x["targets"] == ["legacy"] and x["targets_from"] == "param" and x["newest_verified"] == {}
    assert set(x["s3"]["deleted_keys"]) == s3_gone and x["s3"]["kept"] == len(legacy_kept)
    assert sorted(x["s3"]["not_ours"]) == sorted(f"{s.tier}/{s.file}" for s in ours)
    assert json_posts(receiver, "/pagerduty") == []
