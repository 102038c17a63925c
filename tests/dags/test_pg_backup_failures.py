"""Bad input and faults: each fails the run with a message naming the cause, alerts Slack and PagerDuty,
leaves no partial file or incomplete multipart upload, and records nothing as a good backup."""

from __future__ import annotations

import json
import os
import subprocess

import devstack
import psycopg
import pytest
from faultproxy import FaultProxy

from .conftest import catalog_rows, files_under, json_posts

pytestmark = pytest.mark.dagrun


def assert_run_failed(run, task: str):
    """The run is red in the metadata DB because `task` failed; no success was posted, nothing pruned."""
    assert run.state == "failed", run.output[-3000:]
    states = run.task_states
    assert states[f"back_up_target.{task}[0]"] == "failed", states
    assert states["back_up_target.record[0]"] == "success", states  # the FAILED row was written
    assert states["back_up_target.notify[0]"] != "success", states
    assert states["retention"] in ("skipped", "upstream_failed"), states
    assert states["run_outcome"] == "failed", states


def assert_alerted(run, receiver, cause: str, task: str):
    assert_run_failed(run, task)
    slack = json_posts(receiver, "/slack")
    assert len(slack) == 1, slack
    text = slack[0]["text"]
    assert text.startswith(":red_circle: *Database backup FAILED*")
    assert f"task: `back_up_target.{task}`" in text and "target: `glimpse`" in text
    assert cause in text
    assert "log: http://localhost:8080/" in text
    pd = json_posts(receiver, "/pagerduty")
    assert len(pd) == 1, pd
    event = pd[0]
    assert event["routing_key"] == "test-routing-key"
    assert event["event_action"] == "trigger"
    assert event["dedup_key"] == f"pg_backup/{run.run_id}" and run.run_id.startswith("manual__")
    assert event["payload"]["severity"] == "critical"
    assert event["payload"]["source"] == "pg_dataops"
    assert event["payload"]["summary"].startswith(f"Database backup FAILED: pg_backup.back_up_target.{task}[glimpse]")
    assert cause in event["payload"]["summary"]
    assert event["payload"]["custom_details"]["task_id"] == f"back_up_target.{task}"
    assert event["links"][0]["href"].startswith("http://localhost:8080/")


def assert_recorded_failed(cluster, cause: str, step: str | None):
    rows = catalog_rows(cluster)
    assert [r["status"] for r in rows] == ["FAILED"], rows
    assert cause in rows[0]["error_message"]
    assert rows[0]["failed_step"] == step


def assert_no_s3_leftovers(s3, bucket):
    c = s3.client()
    assert c.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert c.list_objects_v2(Bucket=bucket).get("KeyCount") == 0


def test_missing_connection(run_pg_backup, cluster, s3, bucket, receiver):
    run = run_pg_backup(bucket=bucket, conns={"glimpse_db": None})
    assert run.failed, run.output[-3000:]
    cause = "Airflow connection 'glimpse_db' (target glimpse) is not defined"
    assert_alerted(run, receiver, cause, "dump")
    assert_recorded_failed(cluster, cause, "dump")
    assert files_under(run.local_root) == []
    assert_no_s3_leftovers(s3, bucket)


def test_database_unreachable(run_pg_backup, cluster, s3, bucket, receiver):
    port = devstack.free_port()
    conn = json.dumps({"conn_type": "postgres", "host": "127.0.0.1", "port": port, "login": "postgres",
                       "password": "x", "schema": "glimpse"})
    run = run_pg_backup(bucket=bucket, conns={"glimpse_db": conn})
    assert run.failed, run.output[-3000:]
    cause = f"cannot reach PostgreSQL at 127.0.0.1:{port}"
    assert_alerted(run, receiver, cause, "dump")
    assert_recorded_failed(cluster, cause, "dump")
    assert files_under(run.local_root) == []
    assert_no_s3_leftovers(s3, bucket)


def test_wrong_password(run_pg_backup, cluster, s3, bucket, receiver):
    run = run_pg_backup(bucket=bucket, conns={"glimpse_db": cluster.airflow_conn("glimpse", password="not-it-9")})
    assert run.failed, run.output[-3000:]
    cause = "authentication failed for user 'postgres'"
    assert_alerted(run, receiver, cause, "dump")
    assert_recorded_failed(cluster, cause, "dump")
    assert "not-it-9" not in json.dumps(receiver.requests)
    assert files_under(run.local_root) == []
    assert_no_s3_leftovers(s3, bucket)


def test_bucket_missing(run_pg_backup, cluster, s3, receiver):
    run = run_pg_backup(bucket="glimpse-no-such-bucket")
    assert run.failed, run.output[-3000:]
    cause = "S3 bucket 'glimpse-no-such-bucket' does not exist"
    # The streaming upload checks the bucket before pg_dump starts: nothing is dumped in vain.
    assert_alerted(run, receiver, cause, "dump")
    assert_recorded_failed(cluster, cause, "dump")
    assert files_under(run.local_root) == []


def test_bucket_missing_without_streaming_keeps_the_complete_dump(run_pg_backup, cluster, s3, receiver):
    run = run_pg_backup(bucket="glimpse-no-such-bucket", env={"PGBACKUP_STREAM_UPLOAD": "false"})
    assert run.failed, run.output[-3000:]
    cause = "S3 bucket 'glimpse-no-such-bucket' does not exist"
    assert_alerted(run, receiver, cause, "upload")
    assert_recorded_failed(cluster, cause, "upload")
    # The complete local dump stays (with its checksum), so the upload can be retried; nothing partial.
    files = files_under(run.local_root)
    assert [os.path.basename(f) for f in files] == ["glimpse_daily_20261125_020000.dump",
                                                     "glimpse_daily_20261125_020000.dump.sha256"]
    sidecar_dir = run.local_root / "daily/2026/11"
    assert subprocess.run(["sha256sum", "-c", "--quiet", "glimpse_daily_20261125_020000.dump.sha256"],
                          cwd=sidecar_dir).returncode == 0


@pytest.mark.parametrize(("stream", "task"), [("true", "dump"), ("false", "upload")], ids=["streamed", "after-dump"])
def test_upload_failing_midway(run_pg_backup, cluster, s3, bucket, receiver, stream, task):
    proxy = FaultProxy(s3.port, fail_from_part=2).start()
    try:
        run = run_pg_backup(bucket=bucket, conns={"backup_s3": s3.airflow_conn(endpoint=proxy.endpoint)},
                            env={"PGBACKUP_DUMP_COMPRESSION": "0",  # ~28 MB: six 5 MB parts
                                 "PGBACKUP_STREAM_UPLOAD": stream})
    finally:
        proxy.stop()
    assert run.failed, run.output[-3000:]
    assert proxy.failed_requests >= 1
    cause = "InternalError: injected fault: part upload failed"
    assert_alerted(run, receiver, cause, task)
    assert_recorded_failed(cluster, cause, task)
    assert_no_s3_leftovers(s3, bucket)
    local = files_under(run.local_root)
    assert [f for f in local if f.endswith((".partial", ".tmp"))] == []
    if task == "dump":
        assert local == []  # the dump failed with its upload: no local file either


def test_local_disk_full(run_pg_backup, cluster, s3, bucket, receiver, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (CI runs as root)")
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], check=True)
    try:
        run = run_pg_backup(bucket=bucket, local_root=mnt)
        assert run.failed, run.output[-3000:]
        cause = "local disk full while writing"
        assert_alerted(run, receiver, cause, "dump")
        assert_recorded_failed(cluster, cause, "dump")
        assert files_under(mnt) == []
    finally:
        subprocess.run(["umount", str(mnt)], check=False)
    assert_no_s3_leftovers(s3, bucket)


def test_failed_verification_is_a_failed_backup(run_pg_backup, cluster, s3, bucket, receiver):
    """The classic dump that does not restore: a CHECK calling a function that reads another table,
    whose data pg_restore loads later. pg_dump succeeds; only a restore test finds out."""
    cluster.createdb("unrestorable")
    cluster.psql("-c", """
        CREATE TABLE zz_allowed (v int PRIMARY KEY);
        INSERT INTO zz_allowed SELECT generate_series(1, 10);
        CREATE FUNCTION is_allowed(x int) RETURNS boolean LANGUAGE sql STABLE
            AS $$ SELECT EXISTS (SELECT 1 FROM public.zz_allowed WHERE v = x) $$;
        CREATE TABLE aa_items (id int PRIMARY KEY, v int CHECK (is_allowed(v)));
        INSERT INTO aa_items VALUES (1, 1), (2, 2);
    """, dbname="unrestorable")
    run = run_pg_backup(bucket=bucket, conns={"glimpse_db": cluster.airflow_conn("unrestorable")},
                        env={"PGBACKUP_RESTORE_JOBS": "1"})  # one job: data loads in TOC order, always
    assert run.failed, run.output[-3000:]
    cause = 'violates check constraint "aa_items_v_check"'
    assert_alerted(run, receiver, cause, "verify")
    assert_recorded_failed(cluster, cause, "verify")
    c = s3.client()
    keys = sorted(o["Key"] for o in c.list_objects_v2(Bucket=bucket)["Contents"])
    base = "database/daily/glimpse_daily_20261125_020000.dump"
    assert keys == [base, base + ".json", base + ".sha256"]
    doc = json.loads(c.get_object(Bucket=bucket, Key=base + ".json")["Body"].read())
    assert doc["verified"] is False and cause in doc["verification"]["error"]
    with psycopg.connect(host="127.0.0.1", port=cluster.port, user="postgres", password=cluster.password,
                         dbname="postgres") as pg:
        assert pg.execute("SELECT count(*) FROM pg_database WHERE datname LIKE 'pgdataops_%'").fetchone()[0] == 0
    states = run.task_states
    assert (states["back_up_target.verify[0]"], states["back_up_target.drop_verify_db[0]"],
            states["back_up_target.manifest[0]"], states["back_up_target.notify[0]"]) == (
        "failed", "success", "success", "skipped")
