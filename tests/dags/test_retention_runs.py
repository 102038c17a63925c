"""pg_backup_retention end to end with `airflow dags test`: a synthetic history in moto's S3 and a local tree.

The task plans against the wall clock, so the history is laid out relative to it, with every backup
at a time of day twelve hours away from now: no cutoff falls anywhere near a backup while the test runs.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import devstack
import pytest

from tests.unit.test_retention import PREFIX, SEOUL, UTC, Spec, expected_survivors, history, write_local

from .conftest import BackupRun, files_under, json_posts

pytestmark = pytest.mark.dagrun

DAG_ID = "pg_backup_retention"
SUFFIXES = ("", ".sha256", ".json")
NOT_BACKUPS = (f"{PREFIX}/wal/000000010000000000000001", f"{PREFIX}/daily/README.txt")


def recent_history(days: int) -> tuple[list[Spec], dt.datetime]:
    """``days`` days of pg_backup's tiers up to now, each at (now's hour + 12) Seoul time."""
    now = dt.datetime.now(SEOUL)
    hour = (now.hour + 12) % 24
    specs = []
    for s in history(start=now.date() - dt.timedelta(days=days - 1), end=now.date()):
        local = s.local.replace(hour=hour)
        specs.append(replace(s, local=local, snapshot=(local + dt.timedelta(seconds=1, microseconds=123456))
                             .astimezone(UTC)))
    return [s for s in specs if s.snapshot <= now], now


def upload(client, bucket: str, specs: list[Spec]) -> None:
    objects = [(s.key + suffix, body) for s in specs for suffix, body in zip(SUFFIXES, s.parts().values(), strict=True)]
    objects += [(key, b"not a backup") for key in NOT_BACKUPS]
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(lambda kb: client.put_object(Bucket=bucket, Key=kb[0], Body=kb[1]), objects))


def all_keys(client, bucket: str) -> set[str]:
    keys = set()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys.update(o["Key"] for o in page.get("Contents", []))
    return keys


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
def run_retention(airflow_home, s3, receiver, tmp_path):
    def run(*, bucket: str, local_root: Path, conf: dict | None = None) -> BackupRun:
        receiver.clear()
        conns = {"backup_s3": s3.airflow_conn(), "slack_backup": receiver.slack_conn(),
                 "pagerduty_backup": receiver.pagerduty_conn()}
        extra = {"PGBACKUP_LOCAL_ROOT": str(local_root), "PGBACKUP_BUCKET": bucket, "PGBACKUP_RETRIES": "0"}
        proc = devstack.dags_test(devstack.airflow_env(airflow_home, conns=conns, extra=extra), DAG_ID, None, conf)
        with open(tmp_path / "dags_test.log", "a") as log:
            log.write(proc.stdout + "\n" + proc.stderr + "\n")
        return BackupRun(proc=proc, local_root=local_root, bucket=bucket)

    return run


def assert_alerted(receiver, cause: str):
    (slack,) = json_posts(receiver, "/slack")
    text = slack["text"]
    assert f"DAG: `{DAG_ID}`  task: `apply_retention`" in text and cause in text, text
    (event,) = json_posts(receiver, "/pagerduty")
    assert event["routing_key"] == "test-routing-key" and event["event_action"] == "trigger"
    assert event["dedup_key"].startswith(f"{DAG_ID}/manual__")
    assert event["payload"]["summary"].startswith(f"Backup retention FAILED: {DAG_ID}.apply_retention in run ")
    assert cause in event["payload"]["summary"]


def test_dry_run_then_refused_then_applied(run_retention, airflow_home, s3, bucket, receiver, tmp_path):
    specs, now = recent_history(120)
    client = s3.client()
    upload(client, bucket, specs)
    root = tmp_path / "backups"
    for s in specs:
        write_local(root, s)
    s3_before, local_before = all_keys(client, bucket), files_under(root)

    survivors = expected_survivors(specs, now)
    gone = [s for s in specs if s.file not in survivors]
    s3_gone = {s.key + x for s in gone for x in SUFFIXES}
    local_gone = {str(root / s.local_rel) + x for s in gone for x in SUFFIXES}
    # A backlog larger than the steady-state guard (max_delete_fraction 0.5) lets through.
    assert len(gone) > 0.5 * len(specs) and len(survivors) >= 30
    needed = -(-len(gone) * 100 // len(specs)) / 100  # rounded up to two decimals
    refusal = f"retention refused: the plan would delete {len(gone)} of {len(specs)} backups in s3://{bucket}/database"

    # 1. Dry run: nothing deleted; the log, the XCom and Slack say what a real run would delete and need.
    run = run_retention(bucket=bucket, local_root=root, conf={"dry_run": True})
    assert run.succeeded, run.output[-3000:]
    assert all_keys(client, bucket) == s3_before and files_under(root) == local_before
    x = last_xcom(airflow_home)
    assert x["dry_run"] is True and x["max_delete_fraction"] == 0.5
    assert x["s3"]["backups"] == len(specs) and x["s3"]["kept"] == len(survivors)
    assert x["s3"]["deleted"] == 0 and x["s3"]["deleted_keys"] == []
    assert x["s3"]["would_delete"] == len(gone) and set(x["s3"]["would_delete_keys"]) == s3_gone
    assert x["s3"]["refused"].startswith(refusal) and x["s3"]["minimum_max_delete_fraction"] == needed
    assert set(x["local"]["would_delete_keys"]) == local_gone and x["local"]["deleted_keys"] == []
    assert "DRY RUN, nothing deleted" in run.output
    assert run.output.count("WOULD DELETE ") == 2 * len(gone)  # one report line per backup, S3 and local
    (slack,) = json_posts(receiver, "/slack")
    lines = slack["text"].splitlines()
    assert lines[0] == ":wastebasket: Backup retention (DRY RUN, nothing deleted)"
    assert lines[1].startswith(f"Retention of s3://{bucket}/database at ")
    assert lines[1].endswith(f"(DRY RUN, nothing deleted): {len(specs)} backups, keep {len(survivors)}, "
                             f"would delete {len(gone)}")
    assert lines[2] == f"a real run would be refused: needs max_delete_fraction >= {needed}"
    assert lines[3].startswith(f"Retention of {root} at ")
    assert lines[-1].startswith("policy: daily 30 days")
    assert json_posts(receiver, "/pagerduty") == []

    # 2. A real run with the config's max_delete_fraction is refused: nothing deleted, Slack and PagerDuty alerted.
    run = run_retention(bucket=bucket, local_root=root, conf={"dry_run": False})
    assert run.failed, run.output[-3000:]
    assert all_keys(client, bucket) == s3_before and files_under(root) == local_before
    assert last_xcom(airflow_home) is None
    assert_alerted(receiver, refusal)
    assert f"max_delete_fraction {needed} or more lets it through" in json_posts(receiver, "/slack")[0]["text"]

    # 3. With max_delete_fraction 1.0, exactly the survivors remain in S3 and locally.
    run = run_retention(bucket=bucket, local_root=root, conf={"dry_run": False, "max_delete_fraction": 1.0})
    assert run.succeeded, run.output[-3000:]
    assert all_keys(client, bucket) == {s.key + x for s in specs if s.file in survivors for x in SUFFIXES} | set(
        NOT_BACKUPS)
    assert set(files_under(root)) == {s.local_rel + x for s in specs if s.file in survivors for x in SUFFIXES}
    x = last_xcom(airflow_home)
    assert x["dry_run"] is False and x["max_delete_fraction"] == 1.0
    assert x["s3"]["deleted"] == len(gone) and set(x["s3"]["deleted_keys"]) == s3_gone
    assert x["s3"]["kept"] == len(survivors) and x["s3"]["refused"] is None and x["s3"]["would_delete_keys"] == []
    assert x["local"]["deleted"] == len(gone) and set(x["local"]["deleted_keys"]) == local_gone
    assert run.output.count("DELETED ") >= 2 * len(gone)
    (slack,) = json_posts(receiver, "/slack")
    assert slack["text"].splitlines()[0] == ":wastebasket: Backup retention (applied)"
    assert f"keep {len(survivors)}, deleted {len(gone)}" in slack["text"]
    assert json_posts(receiver, "/pagerduty") == []


def test_empty_bucket_is_refused_and_alerted(run_retention, airflow_home, s3, bucket, receiver, tmp_path):
    specs, _ = recent_history(60)
    root = tmp_path / "backups"
    for s in specs:
        write_local(root, s)
    before = files_under(root)
    # Even a real run allowed to delete everything deletes nothing locally when S3 lists nothing.
    run = run_retention(bucket=bucket, local_root=root, conf={"dry_run": False, "max_delete_fraction": 1.0})
    assert run.failed, run.output[-3000:]
    assert files_under(root) == before
    assert_alerted(receiver, f"retention refused: no backups found in s3://{bucket}/database")
    assert "nothing was deleted" in json_posts(receiver, "/slack")[0]["text"]


def test_worker_without_local_copies_applies_s3_within_the_guard(run_retention, airflow_home, s3, bucket, receiver,
                                                                  tmp_path):
    specs, now = recent_history(60)
    client = s3.client()
    upload(client, bucket, specs)
    survivors = expected_survivors(specs, now)
    assert 0 < len(specs) - len(survivors) <= 0.5 * len(specs)  # a steady state: the config's guard allows it
    root = tmp_path / "no-local-copies"  # never created
    run = run_retention(bucket=bucket, local_root=root, conf={"dry_run": False})
    assert run.succeeded, run.output[-3000:]
    assert all_keys(client, bucket) == {s.key + x for s in specs if s.file in survivors for x in SUFFIXES} | set(
        NOT_BACKUPS)
    x = last_xcom(airflow_home)
    assert x["s3"]["deleted"] == len(specs) - len(survivors)
    assert x["local"]["backups"] == 0 and x["local"]["deleted_keys"] == []
    assert f"no local backups under {root}" in json_posts(receiver, "/slack")[0]["text"]
