"""backup_logs rebuilt from the manifests in S3 (moto over HTTP) into a fresh catalog database.

The manifests (tests/support/s3_manifests.py) are built with pg_dataops.backup.manifest.build_manifest, as
pg_backup writes them; beside them sit an unverified one, one from outside Airflow, and several that must be
skipped with their reason.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pg_dataops.backup import manifest
from pg_dataops.catalog import backup_logs, rebuild
from pg_dataops.catalog.rebuild import NoManifestsFound
from pg_dataops.common import pg as pgtools

from tests.support.age_keys import encrypt, encryption_block, keypair, sha256_hex
from tests.support.catalog import fresh_catalog
from tests.support.s3_manifests import (
    COLUMNS,
    DUMP_BODY,
    EXPECTED_SKIPPED,
    GOOD,
    MISSING,
    PREFIX,
    UTC,
    doc,
    expected_dump_problems,
    expected_rows,
    put_manifests,
    rebuilt_rows,
)

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def manifests(s3, bucket):
    client = s3.client()
    put_manifests(client, bucket)
    return client


def rebuild_into_fresh_catalog(cluster, client, bucket: str):
    """(database, RebuildResult) of a rebuild into a new, empty catalog database."""
    dbname = fresh_catalog(cluster, "catalog_rebuild")
    pg = pgtools.connect(cluster.conn(dbname))
    try:
        return dbname, rebuild.rebuild_catalog(client, bucket, PREFIX, pg)
    finally:
        pg.close()


def test_rebuild_exact_rows_skipped_list_and_idempotent(cluster, manifests, bucket):
    dbname = fresh_catalog(cluster, "catalog_rebuild")
    pg = pgtools.connect(cluster.conn(dbname))
    try:
        first = rebuild.rebuild_catalog(manifests, bucket, PREFIX, pg)
        after_first = rebuilt_rows(cluster, dbname)
        second = rebuild.rebuild_catalog(manifests, bucket, PREFIX, pg)
    finally:
        pg.close()
    assert first.to_dict() == {"bucket": bucket, "prefix": PREFIX, "manifests": 10, "recorded": 5, "success": 1,
                               "failed": 4, "skipped": EXPECTED_SKIPPED, "dump_problems": expected_dump_problems(bucket)}
    assert [r[1:] for r in after_first] == expected_rows(bucket)
    # Twice: the same rows, the same ids (upserted, not duplicated).
    assert second.to_dict() == first.to_dict()
    assert rebuilt_rows(cluster, dbname) == after_first


def test_rebuild_updates_a_surviving_catalog_row_of_the_same_run(cluster, manifests, bucket):
    dbname = fresh_catalog(cluster, "catalog_rebuild")
    pg = pgtools.connect(cluster.conn(dbname))
    try:
        stale = dict(zip(COLUMNS, expected_rows(bucket)[0], strict=True))
        stale.update(status="FAILED", error_message="record: catalog was down", failed_step="record",
                     verified=False, verified_at=None)
        backup_logs.record(pg, stale)
        rebuild.rebuild_catalog(manifests, bucket, PREFIX, pg)
    finally:
        pg.close()
    assert [r[1:] for r in rebuilt_rows(cluster, dbname)] == expected_rows(bucket)


class HeadDenied:
    """The moto client, except that HEAD of one key answers 403 (a policy, a lost connection): not a 404."""

    def __init__(self, client, deny: str):
        self._client, self._deny = client, deny

    def __getattr__(self, name):
        return getattr(self._client, name)

    def head_object(self, *, Bucket, Key, **kw):  # noqa: N803 - boto3's parameter names
        if Key == self._deny:
            from botocore.exceptions import ClientError

            raise ClientError({"Error": {"Code": "403", "Message": "Forbidden"}}, "HeadObject")
        return self._client.head_object(Bucket=Bucket, Key=Key, **kw)


def test_a_surviving_success_row_whose_dump_is_gone_becomes_failed(cluster, manifests, bucket):
    """The catalog said SUCCESS for two backups; one dump was deleted since, the other cannot be checked."""
    dbname = fresh_catalog(cluster, "catalog_rebuild")
    pg = pgtools.connect(cluster.conn(dbname))
    expected = {r[4]: r for r in expected_rows(bucket)}
    good_row = dict(zip(COLUMNS, expected[GOOD], strict=True))
    missing_was = {**dict(zip(COLUMNS, expected[MISSING], strict=True)), "status": "SUCCESS", "error_message": None,
                   "failed_step": None, "s3_uploaded": True, "verified": True,
                   "verified_at": dt.datetime(2026, 11, 25, 17, 3, 10, tzinfo=UTC)}
    try:
        backup_logs.record(pg, {**good_row, "duration_seconds": 99.0})  # what pg_backup wrote, slightly different
        backup_logs.record(pg, missing_was)
        result = rebuild.rebuild_catalog(HeadDenied(manifests, f"{PREFIX}/daily/{GOOD}"), bucket, PREFIX, pg)
    finally:
        pg.close()
    assert {"key": f"{PREFIX}/daily/{GOOD}.json",
            "reason": f"cannot check its dump s3://{bucket}/{PREFIX}/daily/{GOOD}: 403: Forbidden"} in result.skipped
    assert result.success == 0 and result.dump_problems == expected_dump_problems(bucket)
    by_file = {r[5]: r[1:] for r in rebuilt_rows(cluster, dbname)}
    # The row that could not be checked is left as it was; the one whose dump is gone is FAILED now.
    assert by_file[GOOD] == (*expected[GOOD][:7], 99.0, *expected[GOOD][8:])
    assert by_file[MISSING] == expected[MISSING]


def test_duplicate_run_identity_is_skipped_not_guessed(cluster, s3, bucket):
    client = s3.client()
    a = doc("glimpse_daily_20261124_020000.dump", "daily", "2026-11-23T17:00:01Z",
            verification={"verified": True, "checked_at": "2026-11-23T17:03:10Z"}, run_id="manual__x")
    b = doc("glimpse_daily_20261125_020000.dump", "daily", "2026-11-24T17:00:01Z",
            verification={"verified": True, "checked_at": "2026-11-24T17:03:10Z"}, run_id="manual__x")
    for d in (a, b):
        client.put_object(Bucket=bucket, Key=d["s3"]["key"] + ".json", Body=manifest.dumps(d).encode())
    dbname, result = rebuild_into_fresh_catalog(cluster, client, bucket)
    assert result.recorded == 0 and [s["key"] for s in result.skipped] == [a["s3"]["key"] + ".json",
                                                                          b["s3"]["key"] + ".json"]
    assert result.skipped[0]["reason"] == (f"same dag_id/run_id/target (pg_backup, manual__x, glimpse) as "
                                           f"{b['s3']['key']}.json")


def test_no_manifests_is_an_error_and_writes_nothing(cluster, s3, bucket):
    s3.client().put_object(Bucket=bucket, Key="elsewhere/daily/x.json", Body=b"{}")
    dbname = fresh_catalog(cluster, "catalog_rebuild")
    pg = pgtools.connect(cluster.conn(dbname))
    try:
        with pytest.raises(NoManifestsFound, match=rf"no manifests found under s3://{bucket}/database/"
                                                   r"\{daily,weekly,monthly\}/"):
            rebuild.rebuild_catalog(s3.client(), bucket, PREFIX, pg)
        assert pg.execute("SELECT to_regclass('public.backup_logs')").fetchone()[0] is None
    finally:
        pg.close()


def test_command_line(cluster, s3, manifests, bucket):
    dbname = fresh_catalog(cluster, "catalog_rebuild")
    env = {**os.environ, "PYTHONPATH": str(REPO / "plugins"), "AWS_ACCESS_KEY_ID": s3.access_key,
           "AWS_SECRET_ACCESS_KEY": s3.secret_key, "AWS_DEFAULT_REGION": s3.region,
           "CATALOG_DSN": f"host=127.0.0.1 port={cluster.port} user=postgres password={cluster.password} "
                          f"dbname={dbname}"}
    out = subprocess.run([sys.executable, "-m", "pg_dataops.catalog_rebuild", "--bucket", bucket, "--prefix", PREFIX,
                          "--endpoint-url", s3.endpoint, "--dsn-env", "CATALOG_DSN"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["skipped"] == EXPECTED_SKIPPED
    assert [r[1:] for r in rebuilt_rows(cluster, dbname)] == expected_rows(bucket)


def test_rebuild_of_an_encrypted_backup_records_it_as_encrypted(cluster, s3, bucket, tmp_path):
    """A real .dump.age (the stock age CLI) with its manifest's encryption block; beside it a plaintext backup
    and a .age manifest that records no encryption (skipped, not guessed)."""
    client = s3.client()
    plain = tmp_path / "x.dump"
    plain.write_bytes(DUMP_BODY)
    a, b = keypair(tmp_path, "a"), keypair(tmp_path, "b")
    sealed = tmp_path / "x.dump.age"
    encrypt(plain, sealed, [a.recipient, b.recipient])
    body = sealed.read_bytes()
    enc_file = "glimpse_daily_20261128_020000.dump.age"
    enc = doc(enc_file, "daily", "2026-11-27T17:00:01Z", run_id="scheduled__2026-11-27T17:00:00+00:00",
              verification={"verified": True, "checked_at": "2026-11-27T17:04:00Z"})
    enc.update(size=len(body), checksum=sha256_hex(body), encryption=encryption_block([a.recipient, b.recipient]))
    old = doc(GOOD, "daily", "2026-11-23T17:00:01.5Z", run_id="scheduled__2026-11-23T17:00:00+00:00",
              verification={"verified": True, "checked_at": "2026-11-23T17:03:10Z"})
    del old["encryption"]  # a manifest from before encryption: no key at all
    unmarked = doc("glimpse_daily_20261129_020000.dump.age", "daily", "2026-11-28T17:00:01Z",
                   run_id="scheduled__2026-11-28T17:00:00+00:00", verification={"verified": True})
    for d, data in ((enc, body), (old, DUMP_BODY), (unmarked, body)):
        key = f"{PREFIX}/daily/{d['file']}"
        client.put_object(Bucket=bucket, Key=key, Body=data)
        client.put_object(Bucket=bucket, Key=key + ".sha256", Body=manifest.sha256_line(d["checksum"], d["file"]).encode())
        client.put_object(Bucket=bucket, Key=key + ".json", Body=json.dumps(d).encode())
    dbname, result = rebuild_into_fresh_catalog(cluster, client, bucket)
    assert (result.recorded, result.success, result.dump_problems) == (2, 2, [])
    assert result.skipped == [{"key": f"{PREFIX}/daily/glimpse_daily_20261129_020000.dump.age.json",
                               "reason": "manifest: file glimpse_daily_20261129_020000.dump.age ends in .age but no "
                                         "encryption is recorded"}]
    rows = {r[5]: dict(zip(COLUMNS, r[1:], strict=True)) for r in rebuilt_rows(cluster, dbname)}
    assert set(rows) == {enc_file, GOOD}
    e = rows[enc_file]
    assert (e["status"], e["verified"], e["encrypted"], e["s3_key"], e["file_size_bytes"], e["checksum_sha256"]) == (
        "SUCCESS", True, True, f"{PREFIX}/daily/{enc_file}", len(body), sha256_hex(body))
    assert (rows[GOOD]["status"], rows[GOOD]["encrypted"]) == ("SUCCESS", False)
