"""Verification floors through real pg_backup runs (issue 7): the database to back up must be named, and a
restore test that failed because of the restore server is retried, its manifest then holding both verdicts."""

from __future__ import annotations

import json

import pytest
from faultproxy import TcpCutProxy

from .conftest import catalog_rows, files_under, json_posts

pytestmark = pytest.mark.dagrun


def test_unnamed_database_fails_before_anything_is_dumped(run_pg_backup, cluster, s3, bucket, receiver):
    # A connection with no schema and a target with no `database:` used to dump the `postgres` database.
    conn = json.dumps({"conn_type": "postgres", "host": "127.0.0.1", "port": cluster.port, "login": "postgres",
                       "password": cluster.password})
    run = run_pg_backup(bucket=bucket, conns={"glimpse_db": conn})
    assert run.failed, (run.state, run.output[-3000:])
    cause = ("target glimpse: no database named: set the target's 'database' in the config or the schema (database) "
             "field of Airflow connection 'glimpse_db'; refusing to fall back to 'postgres'")
    rows = catalog_rows(cluster)
    assert [(r["status"], r["failed_step"]) for r in rows] == [("FAILED", "dump")], rows
    assert cause in rows[0]["error_message"]
    slack = json_posts(receiver, "/slack")
    assert len(slack) == 1 and cause in slack[0]["text"], slack
    pd = json_posts(receiver, "/pagerduty")
    assert len(pd) == 1 and cause in pd[0]["payload"]["summary"], pd
    # nothing dumped, nothing uploaded
    assert files_under(run.local_root) == []
    client = s3.client()
    assert client.list_objects_v2(Bucket=bucket).get("KeyCount") == 0
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_restore_server_failure_is_retried_and_the_manifest_keeps_both_verdicts(run_pg_backup, cluster, s3,
                                                                                 bucket):
    # The restore-test server is reached through a relay that resets the first connection carrying more
    # than 256 kB from the client: pg_restore's COPY of the largest table, on the first attempt only.
    proxy = TcpCutProxy(cluster.port, cut_after_bytes=256 * 1024, cuts=1).start()
    restore_conn = json.dumps({"conn_type": "postgres", "host": "127.0.0.1", "port": proxy.port,
                               "login": "postgres", "password": cluster.password})
    try:
        run = run_pg_backup(bucket=bucket, conns={"restore_test": restore_conn},
                            env={"PGBACKUP_VERIFY_CONN_ID": "restore_test", "PGBACKUP_RETRIES": "1",
                                 "PGBACKUP_RETRY_DELAY_SECONDS": "1"})
    finally:
        proxy.stop()
    assert proxy.cut == 1
    assert run.succeeded, (run.state, run.output[-3000:])

    client = s3.client()
    keys = sorted(o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"])
    manifests = [k for k in keys if k.endswith(".json")]
    assert len(manifests) == 1, keys
    doc = json.loads(client.get_object(Bucket=bucket, Key=manifests[0])["Body"].read())
    local = [p for p in files_under(run.local_root) if p.endswith(".json")]
    assert len(local) == 1
    assert json.loads((run.local_root / local[0]).read_text()) == doc
    assert doc["verified"] is True
    first, second = doc["verifications"]
    assert first["verified"] is False and first["transient"] is True and first["try_number"] == 1
    assert first["error"].startswith("pg_restore failed (exit 1): the connection to the restore server was lost; "
                                     "not a fault of the backup, retrying: ")
    assert second["verified"] is True and second == doc["verification"]
    assert second["mismatches"] == []
    assert doc["file"] == manifests[0].rsplit("/", 1)[1][: -len(".json")]
    sha_line = client.get_object(Bucket=bucket, Key=manifests[0][: -len(".json")] + ".sha256")["Body"].read()
    assert sha_line.decode().split()[0] == doc["checksum"]
    rows = catalog_rows(cluster)
    assert [(r["status"], r["verified"]) for r in rows] == [("SUCCESS", True)], rows
    assert rows[0]["checksum_sha256"] == doc["checksum"]
