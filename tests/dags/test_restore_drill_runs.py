"""pg_restore_drill end to end: the newest backup fetched from S3, proven, restored, timed; and the
bad inputs (a flipped byte, a missing .sha256, a manifest that does not parse, a newer major) each
detected and reported, with nothing restored, deleted or marked good. Encrypted (age) backups: restored
with the identity connection (also one made before a recipient was added, and one made for two
recipients with the second's key); without it, or with a wrong one, a FAILED drill naming the
connection and the recipients, and no plaintext left behind."""

from __future__ import annotations

import datetime as dt
import json
import os

import psycopg
import pytest
from pg_dataops.backup import steps as backup
from pg_dataops.common import age
from pg_dataops.common.config import load_config

from tests.support.age_keys import encrypt_backup_in_s3, keypair

from .conftest import json_posts

pytestmark = pytest.mark.dagrun
MOMENT = dt.datetime(2026, 11, 24, 17, 0, tzinfo=dt.UTC)  # 25 Nov 02:00 in Seoul
BASE = "database/daily/glimpse_daily_20261125_020000.dump"


@pytest.fixture
def seeded(cluster, s3, bucket, tmp_path):
    """A real backup of the demo database in S3 (the pg_backup steps, without Airflow)."""
    cfg = load_config(environ={"PGBACKUP_BUCKET": bucket, "PGBACKUP_LOCAL_ROOT": str(tmp_path / "src"),
                               "PGBACKUP_MULTIPART_CHUNK_MB": "5"})
    client = s3.client()
    dump = backup.dump_step(cfg, cfg.target("glimpse"), cluster.conn("glimpse"), "daily", MOMENT)
    checksum = backup.checksum_step(dump)
    upload = backup.upload_step(client, cfg, dump, checksum)
    doc = backup.manifest_step(client, cfg, dump, upload, {"verified": True}, "pg_backup", "seed")
    return doc


def run_drill(run_dag, cluster, bucket, tmp_path):
    cluster.psql("-c", "DROP TABLE IF EXISTS restore_drills CASCADE", dbname="catalog")
    return run_dag("pg_restore_drill", "2026-11-29T05:00:00+09:00", bucket=bucket, local_root=tmp_path / "drill_root")


def drills(cluster):
    with psycopg.connect(host="127.0.0.1", port=cluster.port, user="postgres", password=cluster.password,
                         dbname="catalog", row_factory=psycopg.rows.dict_row) as pg:
        return pg.execute("SELECT * FROM restore_drills ORDER BY id").fetchall()


def scratch_databases(cluster):
    with psycopg.connect(host="127.0.0.1", port=cluster.port, user="postgres", password=cluster.password,
                         dbname="postgres") as pg:
        return [r[0] for r in pg.execute("SELECT datname FROM pg_database WHERE datname LIKE 'pgdataops_%'")]


def test_drill_restores_the_newest_backup_and_measures_rto(run_dag, cluster, s3, bucket, receiver, tmp_path,
                                                           seeded):
    run = run_drill(run_dag, cluster, bucket, tmp_path)
    assert run.state == "success", run.output[-3000:]
    steps = ("find_latest", "download", "create_drill_db", "restore", "drop_drill_db", "record_drill")
    assert run.task_states == {**{f"drill_target.{s}[0]": "success" for s in steps}, "run_outcome": "skipped"}
    rows = drills(cluster)
    assert len(rows) == 1 and rows[0]["status"] == "SUCCESS"
    r = rows[0]
    assert r["s3_key"] == BASE and r["backup_type"] == "daily" and r["size_bytes"] == seeded["size"]
    assert r["total_seconds"] == r["download_seconds"] + r["restore_seconds"] + r["check_seconds"] > 0
    assert r["rto_objective_seconds"] == 4 * 3600
    slack = json_posts(receiver, "/slack")
    assert len(slack) == 1, receiver.requests
    text = slack[0]["text"]
    assert text.startswith(":white_check_mark: Restore drill of glimpse: glimpse_daily_20261125_020000.dump from S3")
    assert f"{len(seeded['table_counts'])} tables and {sum(seeded['table_counts'].values()):,} rows match" in text
    assert "is within the objective 4 h (" in text
    assert receiver.posts("/pagerduty") == []
    assert scratch_databases(cluster) == []
    assert [f for _, _, fs in os.walk(tmp_path / "drill_root") for f in fs] == []  # the download was removed


def corrupt_object(s3, bucket):
    c = s3.client()
    body = bytearray(c.get_object(Bucket=bucket, Key=BASE)["Body"].read())
    body[len(body) // 2] ^= 0x01
    c.put_object(Bucket=bucket, Key=BASE, Body=bytes(body))


def drop_sidecar(s3, bucket):
    s3.client().delete_object(Bucket=bucket, Key=BASE + ".sha256")


def break_manifest(s3, bucket):
    s3.client().put_object(Bucket=bucket, Key=BASE + ".json", Body=b'{"timestamp": "2026-11-24T17:00:00Z", "typ')


def newer_major(s3, bucket):
    c = s3.client()
    doc = json.loads(c.get_object(Bucket=bucket, Key=BASE + ".json")["Body"].read())
    doc["server_version_num"] = 170002
    c.put_object(Bucket=bucket, Key=BASE + ".json", Body=json.dumps(doc).encode())


@pytest.mark.parametrize(
    ("damage", "task", "cause"),
    [
        (corrupt_object, "download", "is corrupt: SHA-256"),
        (drop_sidecar, "download", ".sha256 is missing or unreadable"),
        (break_manifest, "find_latest", f"{BASE}.json is not valid JSON"),
        (newer_major, "restore", "the backup comes from PostgreSQL 17, newer than the restore server's client"),
    ],
    ids=["flipped-byte", "missing-sha256", "manifest-does-not-parse", "newer-major"],
)
def test_bad_backups_are_detected_and_reported(run_dag, cluster, s3, bucket, receiver, tmp_path, seeded,
                                               damage, task, cause):
    damage(s3, bucket)
    before = sorted(o["Key"] for o in s3.client().list_objects_v2(Bucket=bucket)["Contents"])
    run = run_drill(run_dag, cluster, bucket, tmp_path)
    # Red, although record_drill (ALL_DONE) and the teardown succeeded: run_outcome saw the failure.
    assert run.state == "failed", run.output[-3000:]
    states = run.task_states
    assert states[f"drill_target.{task}[0]"] == "failed" and states["drill_target.record_drill[0]"] == "success"
    assert states["run_outcome"] == "failed"
    slack = json_posts(receiver, "/slack")
    assert len(slack) == 1 and f"task: `drill_target.{task}`" in slack[0]["text"] and cause in slack[0]["text"]
    pd = json_posts(receiver, "/pagerduty")
    assert len(pd) == 1 and cause in pd[0]["payload"]["summary"]
    assert pd[0]["dedup_key"] == f"pg_restore_drill/{run.run_id}"
    rows = drills(cluster)
    assert [(r["status"], cause in r["error_message"]) for r in rows] == [("FAILED", True)]
    assert sorted(o["Key"] for o in s3.client().list_objects_v2(Bucket=bucket)["Contents"]) == before  # nothing deleted
    assert scratch_databases(cluster) == []
    assert [f for _, _, fs in os.walk(tmp_path / "drill_root") for f in fs] == []


# --- encrypted backups (age) ----------------------------------------------------------------------

IDENTITY_CONN = "backup_age_identity"


@pytest.fixture(scope="module")
def age_pairs(tmp_path_factory):
    d = tmp_path_factory.mktemp("age-keys")
    return {name: keypair(d, name) for name in ("a", "b", "c")}


def drill_files(tmp_path):
    return [f for _, _, fs in os.walk(tmp_path / "drill_root") for f in fs]


@pytest.mark.parametrize(
    ("made_for", "configured", "identity"),
    [(["a"], ["a", "b"], "a"), (["a", "b"], ["a", "b"], "b")],
    ids=["made-for-A-restores-with-A-after-B-was-added", "made-for-A-and-B-restores-with-B"],
)
def test_drill_restores_an_encrypted_backup_with_the_identity(run_dag, cluster, s3, bucket, receiver, tmp_path,
                                                              seeded, age_pairs, made_for, configured, identity):
    client = s3.client()
    doc = encrypt_backup_in_s3(client, bucket, BASE, [age_pairs[n].recipient for n in made_for], tmp_path / "seal")
    stored = client.get_object(Bucket=bucket, Key=BASE + ".age")["Body"].read()
    assert not stored.startswith(b"PGDMP") and b"PGDMP" not in stored  # no pg_dump header in the stored object
    cluster.psql("-c", "DROP TABLE IF EXISTS restore_drills CASCADE", dbname="catalog")
    run = run_dag("pg_restore_drill", "2026-11-29T05:00:00+09:00", bucket=bucket, local_root=tmp_path / "drill_root",
                  conns={IDENTITY_CONN: age_pairs[identity].connection()},
                  env={"PGBACKUP_ENCRYPTION_RECIPIENTS": ",".join(age_pairs[n].recipient for n in configured)})
    assert run.state == "success", run.output[-3000:]
    rows = drills(cluster)
    assert [(r["status"], r["s3_key"], r["backup_file"], r["size_bytes"]) for r in rows] == [
        ("SUCCESS", BASE + ".age", doc["file"], len(stored))]
    r = rows[0]
    assert r["total_seconds"] == r["download_seconds"] + r["restore_seconds"] + r["check_seconds"] > 0
    text = json_posts(receiver, "/slack")[0]["text"]
    assert text.startswith(f":white_check_mark: Restore drill of glimpse: {doc['file']} from S3, age-encrypted, ")
    assert f"{len(seeded['table_counts'])} tables and {sum(seeded['table_counts'].values()):,} rows match" in text
    assert ", of which age -d " in text
    assert age_pairs[identity].identity not in run.output  # the key never reaches a log
    assert receiver.posts("/pagerduty") == []
    assert scratch_databases(cluster) == []
    assert drill_files(tmp_path) == []  # neither the download nor its plaintext is left


@pytest.mark.parametrize("identity", ["c", None], ids=["wrong-identity", "no-identity-connection"])
def test_drill_of_an_encrypted_backup_without_its_identity_fails_clearly(run_dag, cluster, s3, bucket, receiver,
                                                                         tmp_path, seeded, age_pairs, identity):
    a = age_pairs["a"]
    encrypt_backup_in_s3(s3.client(), bucket, BASE, [a.recipient], tmp_path / "seal")
    cluster.psql("-c", "DROP TABLE IF EXISTS restore_drills CASCADE", dbname="catalog")
    run = run_dag("pg_restore_drill", "2026-11-29T05:00:00+09:00", bucket=bucket, local_root=tmp_path / "drill_root",
                  conns={IDENTITY_CONN: age_pairs[identity].connection() if identity else None})
    assert run.state == "failed", run.output[-3000:]
    states = run.task_states
    assert states["drill_target.download[0]"] == "failed" and states["drill_target.restore[0]"] == "upstream_failed"
    assert states["drill_target.record_drill[0]"] == "success"
    file = BASE.rsplit("/", 1)[1] + ".age"
    if identity:
        cause = (f"the age identity in Airflow connection '{IDENTITY_CONN}' (public key "
                 f"{age.describe([age_pairs['c'].recipient])}) cannot decrypt {file}: it was encrypted for "
                 f"{age.describe([a.recipient])}")
    else:
        cause = (f"Airflow connection '{IDENTITY_CONN}' (age identity for encrypted backups) is not defined: add it "
                 f"in Admin > Connections or as AIRFLOW_CONN_BACKUP_AGE_IDENTITY; {file} was encrypted for "
                 f"{age.describe([a.recipient])}")
    rows = drills(cluster)
    assert [(r["status"], r["s3_key"], r["backup_file"]) for r in rows] == [("FAILED", BASE + ".age", file)]
    assert rows[0]["error_message"].startswith(f"drill_target.download: {cause}"), rows[0]["error_message"]
    slack = json_posts(receiver, "/slack")
    assert len(slack) == 1 and "task: `drill_target.download`" in slack[0]["text"] and cause in slack[0]["text"]
    pd = json_posts(receiver, "/pagerduty")
    assert len(pd) == 1 and cause in pd[0]["payload"]["summary"]
    if identity:
        assert age_pairs[identity].identity not in run.output
    assert rows[0]["download_seconds"] is None  # failed before downloading
    assert scratch_databases(cluster) == []
    assert drill_files(tmp_path) == []  # no plaintext (nor download) left in the drill directory
