"""pg_base_backup end to end with `airflow dags test`: a real PostgreSQL 15 whose WAL barman-cloud-wal-archive
ships to moto over HTTP, the catalog in PostgreSQL, Debian's age and zstd, Slack and PagerDuty recorded.

Green: an encrypted base backup is in S3 with its manifest, proven by SHA-256 and opening with `age -d`; the
catalog row says SUCCESS with the manifest's facts; the retention pruned the planted backup from 12 days ago
and the WAL only it needed, keeping the one covering the window; Slack got the summary.
Red: a role without REPLICATION fails the base backup before anything is written; the run is red, the
catalog row says FAILED at base_backup (preflight) with the cause, nothing is pruned, the failure is alerted.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import subprocess
import uuid

import psycopg
import pytest
from pg_dataops.common import wal
from pg_dataops.common.config import load_config
from pg_dataops.pitr import inventory

from tests.support import age_keys
from tests.support.pitr import TARGET, archiving_cluster, connect, pitr_env, switch_and_wait
from tests.support.pitr_basebackup import folder_keys, plant_base_backup

from .conftest import json_posts

pytestmark = pytest.mark.dagrun

STEPS = ("base_backup", "record_base_backup", "prune_pitr")


@pytest.fixture(scope="module")
def pitr_bucket(s3):
    name = f"dagbb-{uuid.uuid4().hex[:10]}"
    s3.client().create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="module")
def archiving(s3, pitr_bucket):
    c = archiving_cluster(s3, pitr_bucket, users=100)
    try:
        for _ in range(3):
            switch_and_wait(c)  # real archived WAL at segments 1.. before any base backup
        yield c
    finally:
        c.stop()


@pytest.fixture
def fresh_catalog(cluster):
    cluster.psql("-c", "DROP TABLE IF EXISTS base_backups CASCADE", dbname="catalog")


def base_rows(cluster) -> list[dict]:
    with psycopg.connect(host="127.0.0.1", port=cluster.port, user="postgres", password=cluster.password,
                         dbname="catalog", row_factory=psycopg.rows.dict_row) as pg:
        return pg.execute("SELECT *, start_lsn::text AS start_lsn_text, stop_lsn::text AS stop_lsn_text "
                          "FROM base_backups ORDER BY id").fetchall()


def test_base_backup_run_stores_records_prunes_and_posts(run_dag, archiving, cluster, s3, pitr_bucket, receiver,
                                                         fresh_catalog, tmp_path):
    client = s3.client()
    pair = age_keys.keypair(tmp_path, "base")
    env = pitr_env(pitr_bucket, PGBACKUP_PITR_SCRATCH_ROOT=str(tmp_path / "scratch"),
                   PGBACKUP_ENCRYPTION_RECIPIENTS=pair.recipient)
    cfg = load_config(environ=env)
    with connect(archiving, "postgres") as pg:
        now = pg.execute("SELECT now()").fetchone()[0]
    old = plant_base_backup(client, cfg, TARGET, now - dt.timedelta(days=12), "000000010000000000000001")
    covering = plant_base_backup(client, cfg, TARGET, now - dt.timedelta(days=9), "000000010000000000000002")
    wal_before = {k.rsplit("/", 1)[-1] for k in folder_keys(client, pitr_bucket, wal.archive_prefix(cfg, TARGET))}
    assert "000000010000000000000001.gz" in wal_before

    run = run_dag("pg_base_backup", bucket=pitr_bucket, conns={"glimpse_db": archiving.airflow_conn("glimpse")},
                  env=env)
    assert run.state == "success", run.output[-5000:]
    assert run.task_states == {**{f"base_backup_target.{s}[0]": "success" for s in STEPS},
                               "run_outcome": "skipped"}

    # S3: the new encrypted backup beside the covering one; the old one is gone.
    listing = inventory.list_base_backups(client, cfg, TARGET)
    assert [b.backup_id for b in listing.backups][:1] == [covering] and len(listing.backups) == 2
    made = listing.backups[-1]
    assert old not in [b.backup_id for b in listing.backups] and listing.incomplete == []
    assert folder_keys(client, pitr_bucket, made.folder) == [made.folder + "base.tar.zst.age",
                                                             made.folder + "manifest.json"]
    body = client.get_object(Bucket=pitr_bucket, Key=made.archive_key)["Body"].read()
    assert hashlib.sha256(body).hexdigest() == made.doc["archive"]["sha256"] and len(body) == made.doc["archive"][
        "size"]
    plain = subprocess.run(["age", "-d", "-i", str(tmp_path / "base.key")], input=body, capture_output=True,
                           check=True).stdout
    members = subprocess.run(["bash", "-c", "zstd -d -q -c | tar -t"], input=plain, capture_output=True,
                             check=True).stdout.decode().split()
    assert "backup_manifest" in members and "backup_label" in members
    assert made.doc["encryption"] == {"format": "age", "recipients": [pair.recipient]}
    assert list((tmp_path / "scratch" / "base-spool").iterdir()) == []

    # WAL: segment 1 (only the pruned backup needed it) went; from the covering backup's start on, all stay.
    wal_after = {k.rsplit("/", 1)[-1] for k in folder_keys(client, pitr_bucket, wal.archive_prefix(cfg, TARGET))}
    assert wal_before - wal_after == {"000000010000000000000001.gz"}

    # The catalog row holds the manifest's facts.
    rows = base_rows(cluster)
    assert len(rows) == 1
    row, doc = rows[0], made.doc
    assert (row["status"], row["error_message"], row["failed_step"], row["target"]) == ("SUCCESS", None, None, TARGET)
    assert row["backup_id"] == doc["backup_id"] and row["s3_key"] == made.archive_key and row["s3_bucket"] == pitr_bucket
    assert (row["start_lsn_text"], row["stop_lsn_text"], row["start_wal"], row["stop_wal"], row["timeline"]) == (
        doc["start_lsn"], doc["stop_lsn"], doc["start_wal"], doc["stop_wal"], doc["timeline"])
    assert row["start_time"] == inventory.parse_time(doc["start_time"])
    assert row["stop_time"] == inventory.parse_time(doc["stop_time"])
    assert row["checksum_sha256"] == doc["archive"]["sha256"] and row["archive_size_bytes"] == doc["archive"]["size"]
    assert row["manifest_checksum"] == doc["backup_manifest"]["checksum"] and row["encrypted"] is True
    assert row["system_identifier"] == doc["system_identifier"] and row["database_size_bytes"] == doc["database_size"]
    assert row["dag_id"] == "pg_base_backup" and row["run_id"] == run.run_id

    # Slack: the summary of what was made and pruned (no failure alert, no page).
    posts = json_posts(receiver, "/slack")
    assert len(posts) == 1, posts
    text = json.dumps(posts[0])
    assert f"Base backup SUCCESS: glimpse {doc['backup_id']}" in text
    assert "kept 2 base backup(s), pruned 1 base backup(s) and 1 WAL file(s) before 000000010000000000000002" in text
    assert receiver.posts("/pagerduty") == []


def test_base_backup_run_without_replication_fails_red_and_recorded(run_dag, archiving, cluster, s3, pitr_bucket,
                                                                    receiver, fresh_catalog, tmp_path):
    with connect(archiving, "postgres", autocommit=True) as pg:
        pg.execute("DROP ROLE IF EXISTS no_repl")
        pg.execute("CREATE ROLE no_repl LOGIN PASSWORD 'no-repl-secret-pw'")
    conn = json.dumps({"conn_type": "postgres", "host": "127.0.0.1", "port": archiving.port, "login": "no_repl",
                       "password": "no-repl-secret-pw", "schema": "glimpse"})
    client = s3.client()
    cfg_prefix = "database/base/glimpse/"
    before = folder_keys(client, pitr_bucket, cfg_prefix)
    wal_before = folder_keys(client, pitr_bucket, "database/wal/glimpse/")

    run = run_dag("pg_base_backup", bucket=pitr_bucket, conns={"glimpse_db": conn},
                  env=pitr_env(pitr_bucket, PGBACKUP_PITR_SCRATCH_ROOT=str(tmp_path / "scratch")))
    assert run.state == "failed", run.output[-5000:]
    assert run.task_states == {"base_backup_target.base_backup[0]": "failed",
                               "base_backup_target.record_base_backup[0]": "success",
                               "base_backup_target.prune_pitr[0]": "upstream_failed", "run_outcome": "failed"}
    # Nothing written, nothing pruned.
    assert folder_keys(client, pitr_bucket, cfg_prefix) == before
    assert folder_keys(client, pitr_bucket, "database/wal/glimpse/") == wal_before

    rows = base_rows(cluster)
    assert len(rows) == 1
    row = rows[0]
    assert (row["status"], row["failed_step"], row["backup_id"], row["encrypted"]) == (
        "FAILED", "base_backup (preflight)", None, None)
    assert "role 'no_repl'" in row["error_message"] and "neither superuser nor has the REPLICATION" in \
        row["error_message"]
    assert "no-repl-secret-pw" not in row["error_message"] and "no-repl-secret-pw" not in run.output

    # The failure is alerted (the DAG defaults), naming the cause.
    slack = json.dumps(json_posts(receiver, "/slack"))
    assert "REPLICATION" in slack and "SUCCESS" not in slack
    assert receiver.posts("/pagerduty")
