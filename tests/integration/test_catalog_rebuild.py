"""backup_logs rebuilt from the manifests in S3 (moto over HTTP) into a fresh catalog database.

The manifests are built with pg_dataops.backup.manifest.build_manifest, as pg_backup writes them; beside them
sit an unverified one, one from outside Airflow, and several that must be skipped with their reason.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
import pytest
from pg_dataops.backup import manifest
from pg_dataops.catalog import rebuild
from pg_dataops.catalog.rebuild import FAILED_MESSAGE, NoManifestsFound
from pg_dataops.common import pg as pgtools

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
PREFIX = "database"
UTC = dt.UTC
COLUMNS = ("backup_date", "backup_type", "target", "database_name", "file_name", "file_size_bytes",
           "checksum_sha256", "duration_seconds", "status", "error_message", "failed_step", "s3_bucket", "s3_key",
           "s3_uploaded", "verified", "verified_at", "dag_id", "run_id")


def doc(file: str, tier: str, snapshot: str, *, verification: dict | None, run_id: str | None = None,
        target: str = "glimpse", bucket: str = "b") -> dict:
    dump = {"snapshot_time": snapshot, "file": file, "size": 123456, "sha256": "ab" * 32,
            "db_version": "PostgreSQL 15.19 on x86_64-pc-linux-gnu", "database": "glimpse",
            "server_version_num": 150019, "pg_dump_version": "pg_dump (PostgreSQL) 15.19", "format": "custom",
            "compression": 1, "jobs": 1, "started_at": snapshot, "duration_seconds": 12.5,
            "table_counts": {"public.users": 3000}, "part_size": 5 * 1024 * 1024}
    upload = {"key": f"{PREFIX}/{tier}/{file}", "storage_class": "STANDARD_IA", "server_side_encryption": "AES256",
              "etag": '"x"', "checksum_verified": "sha256 metadata and composite"}
    return manifest.build_manifest(target=target, tier=tier, dump=dump, upload=upload, bucket=bucket, prefix=PREFIX,
                                   dag_id="pg_backup" if run_id else None, run_id=run_id, verification=verification)


GOOD = "glimpse_daily_20261124_020000.dump"
UNVERIFIED = "glimpse_weekly_20261122_020000.dump"
OUTSIDE = "glimpse_monthly_20261101_020000.dump"  # no airflow ids, no verification at all
MISSING = "glimpse_daily_20261126_020000.dump"  # verified, but its dump is gone from S3
RESIZED = "glimpse_daily_20261127_020000.dump"  # verified, but the object is not the manifest's size
DUMP_BODY = b"PGDMP" + bytes(123456 - 5)  # the size every doc() manifest records


@pytest.fixture
def manifests(s3, bucket):
    client = s3.client()
    put_manifests(client, bucket)
    return client


def put_manifests(client, bucket: str) -> None:
    """Three good manifests (verified, unverified, from outside Airflow) with their dumps, two verified ones
    whose dump is missing or of another size, and five to skip."""

    def put(key: str, body: bytes) -> None:
        client.put_object(Bucket=bucket, Key=key, Body=body)

    good = doc(GOOD, "daily", "2026-11-23T17:00:01.5Z",
               verification={"verified": True, "checked_at": "2026-11-23T17:03:10Z", "rows_checked": 3000},
               run_id="scheduled__2026-11-23T17:00:00+00:00")
    unverified = doc(UNVERIFIED, "weekly", "2026-11-21T17:00:02Z",
                     verification={"verified": False, "error": "public.users: 2999 rows, the dump had 3000"},
                     run_id="scheduled__2026-11-21T17:00:00+00:00")
    outside = doc(OUTSIDE, "monthly", "2026-10-31T17:00:03+00:00", verification=None)
    missing = doc(MISSING, "daily", "2026-11-25T17:00:01Z", verification={"verified": True,
                  "checked_at": "2026-11-25T17:03:10Z"}, run_id="scheduled__2026-11-25T17:00:00+00:00")
    resized = doc(RESIZED, "daily", "2026-11-26T17:00:01Z", verification={"verified": True,
                  "checked_at": "2026-11-26T17:03:10Z"}, run_id="scheduled__2026-11-26T17:00:00+00:00")
    for d, body in ((good, DUMP_BODY), (unverified, DUMP_BODY), (outside, DUMP_BODY), (missing, None),
                    (resized, DUMP_BODY[:-1])):
        key = d["s3"]["key"]
        if body is not None:
            put(key, body)
        put(key + ".sha256", f"{d['checksum']}  {d['file']}\n".encode())
        put(key + ".json", manifest.dumps(d).encode())
    # To be skipped, each for its own reason.
    put(f"{PREFIX}/daily/glimpse_daily_20261120_020000.dump.json", b'{"timestamp": "2026-11-19T17:00:00Z", "ty')
    put(f"{PREFIX}/daily/glimpse_daily_20261121_020000.dump.json", json.dumps({  # the runbook's own manifest
        "timestamp": "2026-11-20T17:00:00Z", "type": "daily", "file": "glimpse_daily_20261121_020000.dump",
        "size": "1.2G", "checksum": "0" * 64, "db_version": "PostgreSQL 15.4"}).encode())
    put(f"{PREFIX}/daily/glimpse_daily_20261122_020000.dump.json",
        manifest.dumps({**good, "file": GOOD}).encode())  # a copy of another backup's manifest
    put(f"{PREFIX}/weekly/glimpse_daily_20261123_020000.dump.json",
        manifest.dumps({**good, "file": "glimpse_daily_20261123_020000.dump", "airflow": {}}).encode())
    put(f"{PREFIX}/daily/glimpse_daily_20261125_020000.dump.json",
        manifest.dumps({**good, "file": "glimpse_daily_20261125_020000.dump", "timestamp": "2026-11-24T17:00:00",
                        "airflow": {}}).encode())
    # Not manifests, or not under a tier folder: not read at all.
    put(f"{PREFIX}/wal/000000010000000000000001.json", b"{}")
    put(f"{PREFIX}/daily/README.txt", b"hands off")


EXPECTED_SKIPPED = [
    {"key": f"{PREFIX}/daily/glimpse_daily_20261120_020000.dump.json",
     "reason": "manifest is not valid JSON: Unterminated string starting at: line 1 column 39 (char 38)"},
    {"key": f"{PREFIX}/daily/glimpse_daily_20261121_020000.dump.json",
     "reason": "manifest: size must be a byte count, got '1.2G'"},
    {"key": f"{PREFIX}/daily/glimpse_daily_20261122_020000.dump.json",
     "reason": f"manifest names file {GOOD!r} but sits beside 'glimpse_daily_20261122_020000.dump'"},
    {"key": f"{PREFIX}/daily/glimpse_daily_20261125_020000.dump.json",
     "reason": "timestamp '2026-11-24T17:00:00' is not ISO-8601 with a time zone"},
    {"key": f"{PREFIX}/weekly/glimpse_daily_20261123_020000.dump.json",
     "reason": "manifest says type 'daily' but it is under weekly/"},
]


def expected_rows(bucket: str) -> list[tuple]:
    def at(*args):
        return dt.datetime(*args, tzinfo=UTC)

    common = ("glimpse", "glimpse")
    return [
        # ordered by file_name
        (at(2026, 11, 23, 17, 0, 1, 500000), "daily", *common, GOOD, 123456, "ab" * 32, 12.5, "SUCCESS", None, None,
         bucket, f"{PREFIX}/daily/{GOOD}", True, True, at(2026, 11, 23, 17, 3, 10), "pg_backup",
         "scheduled__2026-11-23T17:00:00+00:00"),
        (at(2026, 11, 25, 17, 0, 1), "daily", *common, MISSING, 123456, "ab" * 32, 12.5, "FAILED",
         f"the dump s3://{bucket}/{PREFIX}/daily/{MISSING} is missing (rebuilt from manifest, which says verified)",
         "upload", bucket, f"{PREFIX}/daily/{MISSING}", False, False, None, "pg_backup",
         "scheduled__2026-11-25T17:00:00+00:00"),
        (at(2026, 11, 26, 17, 0, 1), "daily", *common, RESIZED, 123456, "ab" * 32, 12.5, "FAILED",
         f"the dump s3://{bucket}/{PREFIX}/daily/{RESIZED} is 123455 bytes, the manifest says 123456 (rebuilt from "
         "manifest, which says verified)", "upload", bucket, f"{PREFIX}/daily/{RESIZED}", True, False, None,
         "pg_backup", "scheduled__2026-11-26T17:00:00+00:00"),
        (at(2026, 10, 31, 17, 0, 3), "monthly", *common, OUTSIDE, 123456, "ab" * 32, 12.5, "FAILED", FAILED_MESSAGE,
         "verify", bucket, f"{PREFIX}/monthly/{OUTSIDE}", True, False, None, "rebuilt",
         f"{PREFIX}/monthly/{OUTSIDE}.json"),
        (at(2026, 11, 21, 17, 0, 2), "weekly", *common, UNVERIFIED, 123456, "ab" * 32, 12.5, "FAILED",
         FAILED_MESSAGE + ": public.users: 2999 rows, the dump had 3000", "verify", bucket,
         f"{PREFIX}/weekly/{UNVERIFIED}", True, False, None, "pg_backup", "scheduled__2026-11-21T17:00:00+00:00"),
    ]


def expected_dump_problems(bucket: str) -> list[dict]:
    return [{"key": f"{PREFIX}/daily/{MISSING}.json", "problem": f"the dump s3://{bucket}/{PREFIX}/daily/{MISSING} "
                                                                  "is missing"},
            {"key": f"{PREFIX}/daily/{RESIZED}.json", "problem": f"the dump s3://{bucket}/{PREFIX}/daily/{RESIZED} "
                                                                  "is 123455 bytes, the manifest says 123456"}]


def fresh_catalog(cluster) -> str:
    name = f"catalog_rebuild_{uuid.uuid4().hex[:8]}"
    cluster.createdb(name)
    return name


def rows(cluster, dbname: str) -> list[tuple]:
    with psycopg.connect(host="127.0.0.1", port=cluster.port, user="postgres", password=cluster.password,
                         dbname=dbname) as pg:
        result = pg.execute(f"SELECT id, {', '.join(COLUMNS)} FROM backup_logs ORDER BY file_name").fetchall()
    return [(r[0], *[float(v) if c == "duration_seconds" else v for c, v in zip(COLUMNS, r[1:], strict=True)])
            for r in result]


def test_rebuild_exact_rows_skipped_list_and_idempotent(cluster, manifests, bucket):
    dbname = fresh_catalog(cluster)
    pg = pgtools.connect(cluster.conn(dbname))
    try:
        first = rebuild.rebuild_catalog(manifests, bucket, PREFIX, pg)
        after_first = rows(cluster, dbname)
        second = rebuild.rebuild_catalog(manifests, bucket, PREFIX, pg)
    finally:
        pg.close()
    assert first.to_dict() == {"bucket": bucket, "prefix": PREFIX, "manifests": 10, "recorded": 5, "success": 1,
                               "failed": 4, "skipped": EXPECTED_SKIPPED, "dump_problems": expected_dump_problems(bucket)}
    assert [r[1:] for r in after_first] == expected_rows(bucket)
    # Twice: the same rows, the same ids (upserted, not duplicated).
    assert second.to_dict() == first.to_dict()
    assert rows(cluster, dbname) == after_first


def test_rebuild_updates_a_surviving_catalog_row_of_the_same_run(cluster, manifests, bucket):
    dbname = fresh_catalog(cluster)
    pg = pgtools.connect(cluster.conn(dbname))
    try:
        stale = dict(zip(COLUMNS, expected_rows(bucket)[0], strict=True))
        stale.update(status="FAILED", error_message="record: catalog was down", failed_step="record",
                     verified=False, verified_at=None)
        from pg_dataops.catalog import backup_logs

        backup_logs.record(pg, stale)
        rebuild.rebuild_catalog(manifests, bucket, PREFIX, pg)
    finally:
        pg.close()
    assert [r[1:] for r in rows(cluster, dbname)] == expected_rows(bucket)


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
    dbname = fresh_catalog(cluster)
    pg = pgtools.connect(cluster.conn(dbname))
    expected = {r[4]: r for r in expected_rows(bucket)}
    good_row = dict(zip(COLUMNS, expected[GOOD], strict=True))
    missing_was = {**dict(zip(COLUMNS, expected[MISSING], strict=True)), "status": "SUCCESS", "error_message": None,
                   "failed_step": None, "s3_uploaded": True, "verified": True,
                   "verified_at": dt.datetime(2026, 11, 25, 17, 3, 10, tzinfo=UTC)}
    try:
        from pg_dataops.catalog import backup_logs

        backup_logs.record(pg, {**good_row, "duration_seconds": 99.0})  # what pg_backup wrote, slightly different
        backup_logs.record(pg, missing_was)
        result = rebuild.rebuild_catalog(HeadDenied(manifests, f"{PREFIX}/daily/{GOOD}"), bucket, PREFIX, pg)
    finally:
        pg.close()
    assert {"key": f"{PREFIX}/daily/{GOOD}.json",
            "reason": f"cannot check its dump s3://{bucket}/{PREFIX}/daily/{GOOD}: 403: Forbidden"} in result.skipped
    assert result.success == 0 and result.dump_problems == expected_dump_problems(bucket)
    by_file = {r[5]: r[1:] for r in rows(cluster, dbname)}
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
    dbname = fresh_catalog(cluster)
    pg = pgtools.connect(cluster.conn(dbname))
    try:
        result = rebuild.rebuild_catalog(client, bucket, PREFIX, pg)
    finally:
        pg.close()
    assert result.recorded == 0 and [s["key"] for s in result.skipped] == [a["s3"]["key"] + ".json",
                                                                          b["s3"]["key"] + ".json"]
    assert result.skipped[0]["reason"] == (f"same dag_id/run_id/target (pg_backup, manual__x, glimpse) as "
                                           f"{b['s3']['key']}.json")


def test_no_manifests_is_an_error_and_writes_nothing(cluster, s3, bucket):
    s3.client().put_object(Bucket=bucket, Key="elsewhere/daily/x.json", Body=b"{}")
    dbname = fresh_catalog(cluster)
    pg = pgtools.connect(cluster.conn(dbname))
    try:
        with pytest.raises(NoManifestsFound, match=rf"no manifests found under s3://{bucket}/database/"
                                                   r"\{daily,weekly,monthly\}/"):
            rebuild.rebuild_catalog(s3.client(), bucket, PREFIX, pg)
        assert pg.execute("SELECT to_regclass('public.backup_logs')").fetchone()[0] is None
    finally:
        pg.close()


def test_command_line(cluster, s3, manifests, bucket):
    dbname = fresh_catalog(cluster)
    env = {**os.environ, "PYTHONPATH": str(REPO / "plugins"), "AWS_ACCESS_KEY_ID": s3.access_key,
           "AWS_SECRET_ACCESS_KEY": s3.secret_key, "AWS_DEFAULT_REGION": s3.region,
           "CATALOG_DSN": f"host=127.0.0.1 port={cluster.port} user=postgres password={cluster.password} "
                          f"dbname={dbname}"}
    out = subprocess.run([sys.executable, "-m", "pg_dataops.catalog_rebuild", "--bucket", bucket, "--prefix", PREFIX,
                          "--endpoint-url", s3.endpoint, "--dsn-env", "CATALOG_DSN"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["skipped"] == EXPECTED_SKIPPED
    assert [r[1:] for r in rows(cluster, dbname)] == expected_rows(bucket)
