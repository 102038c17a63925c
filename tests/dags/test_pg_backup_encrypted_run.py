"""pg_backup with client-side encryption (age), end to end: real pg_dump, moto S3 over HTTP, the catalog in
PostgreSQL, Debian's age, the identity in an Airflow connection.

Green: only the encrypted object and its sidecars are stored, the manifest and the catalog say so, the
verification decrypted it, and the stored object restores with the stock `age -d` (escrow key) row for row.
Red: a wrong identity fails the verification before any restore, naming the connection and the recipients;
nothing is marked good and no plaintext is left on disk.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest
from pg_dataops.backup import manifest as manifest_mod
from pg_dataops.common import age

from tests.support.pg import PG_BIN, table_digests

from .conftest import catalog_rows, files_under, json_posts

pytestmark = pytest.mark.dagrun
BASE = "glimpse_daily_20261125_020000"
FILE = f"{BASE}.dump.age"
CONN_ID = "backup_age_identity"


def keygen(path: Path) -> dict:
    subprocess.run(["age-keygen", "-o", str(path)], check=True, capture_output=True)
    recipient = subprocess.run(["age-keygen", "-y", str(path)], check=True, capture_output=True,
                               text=True).stdout.strip()
    text = path.read_text()
    secret = next(line for line in text.splitlines() if line.startswith("AGE-SECRET-KEY-"))
    return {"file": path, "identity": text, "secret": secret, "recipient": recipient}


@pytest.fixture
def keys(tmp_path):
    d = tmp_path / "keys"
    d.mkdir()
    return [keygen(d / name) for name in ("backup.txt", "escrow.txt", "stranger.txt")]


def encrypted_run(run_pg_backup, bucket, keys, identity_key):
    """A pg_backup run encrypting for the backup key and the escrow key, with ``identity_key`` in the connection."""
    recipients = f"{keys[0]['recipient']},{keys[1]['recipient']}"
    identity_conn = json.dumps({"conn_type": "generic", "password": identity_key["identity"]})
    return run_pg_backup(bucket=bucket, conns={CONN_ID: identity_conn},
                         env={"PGBACKUP_ENCRYPTION_RECIPIENTS": recipients})


def assert_no_plaintext_under(root: Path) -> None:
    """Only the three encrypted-backup files; the restore's scratch directory is gone."""
    assert files_under(root) == [f"daily/2026/11/{FILE}", f"daily/2026/11/{FILE}.json",
                                 f"daily/2026/11/{FILE}.sha256"]
    scratch = root / ".scratch"
    assert not scratch.exists() or list(scratch.iterdir()) == []
    assert (root / "daily/2026/11" / FILE).read_bytes().startswith(b"age-encryption.org/v1\n")


def test_encrypted_backup_is_stored_verified_recorded_and_restores_with_stock_age(run_pg_backup, cluster, s3, bucket,
                                                                                   receiver, keys, tmp_path):
    run = encrypted_run(run_pg_backup, bucket, keys, identity_key=keys[0])
    assert run.state == "success", run.output[-4000:]
    steps = ("dump", "checksum", "upload", "create_verify_db", "verify", "drop_verify_db", "manifest", "record",
             "notify")
    assert run.task_states == {**{f"back_up_target.{s}[0]": "success" for s in steps}, "retention": "success",
                               "run_outcome": "skipped"}
    assert "is not client-side encrypted" not in run.output

    c = s3.client()
    keys_in_s3 = sorted(o["Key"] for o in c.list_objects_v2(Bucket=bucket)["Contents"])
    assert keys_in_s3 == [f"database/daily/{FILE}", f"database/daily/{FILE}.json", f"database/daily/{FILE}.sha256"]
    body = c.get_object(Bucket=bucket, Key=f"database/daily/{FILE}")["Body"].read()
    assert body.startswith(b"age-encryption.org/v1\n") and b"PGDMP" not in body
    assert body == (run.local_root / "daily/2026/11" / FILE).read_bytes()
    assert_no_plaintext_under(run.local_root)

    doc = manifest_mod.loads(c.get_object(Bucket=bucket, Key=f"database/daily/{FILE}.json")["Body"].read())
    assert doc["file"] == FILE and doc["size"] == len(body) and doc["checksum"] == hashlib.sha256(body).hexdigest()
    assert doc["encryption"] == {"format": "age", "recipients": [keys[0]["recipient"], keys[1]["recipient"]]}
    assert doc["verified"] is True and doc["verification"]["mismatches"] == []
    assert doc["verification"]["rows_checked"] == sum(doc["table_counts"].values())
    sidecar = c.get_object(Bucket=bucket, Key=f"database/daily/{FILE}.sha256")["Body"].read().decode()
    assert sidecar == f"{doc['checksum']}  {FILE}\n"

    rows = catalog_rows(cluster)
    assert [(r["status"], r["file_name"], r["s3_key"], r["encrypted"], r["verified"]) for r in rows] == [
        ("SUCCESS", FILE, f"database/daily/{FILE}", True, True)]
    slack = json_posts(receiver, "/slack")
    assert len(slack) == 1 and f"s3://{bucket}/database/daily/{FILE}" in slack[0]["text"]

    # The private key is in no log line, message, manifest or XCom-derived record.
    for k in keys:
        assert k["secret"] not in run.output and k["secret"] not in json.dumps(receiver.requests)
        assert k["secret"] not in json.dumps(doc)

    # 3 a.m., without this project: the escrow key and the stock tool restore the stored object row for row.
    enc = tmp_path / FILE
    enc.write_bytes(body)
    plain = tmp_path / f"{BASE}.dump"
    done = subprocess.run(["age", "-d", "-i", str(keys[1]["file"]), "-o", str(plain), str(enc)], capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    cluster.dropdb("restored_encrypted_e2e")
    cluster.createdb("restored_encrypted_e2e")
    try:
        subprocess.run([f"{PG_BIN}/pg_restore", "--exit-on-error", "--no-owner", "-h", "127.0.0.1", "-p",
                        str(cluster.port), "-U", "postgres", "-d", "restored_encrypted_e2e", str(plain)],
                       env={"PGPASSWORD": cluster.password, "PATH": "/usr/bin:/bin"}, check=True, capture_output=True)
        source = table_digests(cluster, "glimpse")
        assert table_digests(cluster, "restored_encrypted_e2e") == source
    finally:
        cluster.dropdb("restored_encrypted_e2e")
    assert {k: v[0] for k, v in source.items()} == doc["table_counts"]


def test_a_wrong_identity_fails_the_backup_before_any_restore(run_pg_backup, cluster, s3, bucket, receiver, keys):
    run = encrypted_run(run_pg_backup, bucket, keys, identity_key=keys[2])  # a key the backup was not made for
    assert run.state == "failed", run.output[-4000:]
    states = run.task_states
    assert states["back_up_target.verify[0]"] == "failed", states
    assert states["back_up_target.drop_verify_db[0]"] == "success", states  # the teardown ran
    assert (states["back_up_target.manifest[0]"], states["back_up_target.record[0]"]) == ("success", "success")
    assert states["back_up_target.notify[0]"] != "success" and states["run_outcome"] == "failed", states
    assert states["retention"] in ("skipped", "upstream_failed"), states

    recipients = age.describe([keys[0]["recipient"], keys[1]["recipient"]])
    cause = (f"the age identity in Airflow connection '{CONN_ID}' (public key {age.describe([keys[2]['recipient']])}) "
             f"cannot decrypt {FILE}: it was encrypted for {recipients}")

    c = s3.client()
    doc = manifest_mod.loads(c.get_object(Bucket=bucket, Key=f"database/daily/{FILE}.json")["Body"].read())
    assert doc["verified"] is False and doc["encryption"]["recipients"] == [keys[0]["recipient"], keys[1]["recipient"]]
    assert cause in doc["verification"]["error"] and doc["verification"]["transient"] is False
    assert "restore_seconds" not in doc["verification"]  # no restore was attempted

    rows = catalog_rows(cluster)
    assert [(r["status"], r["failed_step"], r["encrypted"], r["verified"]) for r in rows] == [
        ("FAILED", "verify", True, False)], rows
    assert cause in rows[0]["error_message"]
    slack = json_posts(receiver, "/slack")
    assert len(slack) == 1 and cause in slack[0]["text"], slack
    pd = json_posts(receiver, "/pagerduty")
    assert len(pd) == 1 and cause in pd[0]["payload"]["summary"], pd

    assert_no_plaintext_under(run.local_root)
    for k in keys:
        assert k["secret"] not in run.output and k["secret"] not in json.dumps(receiver.requests)
