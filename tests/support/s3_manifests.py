"""Manifests in S3 for the catalog rebuild, and the backup_logs rows they must become.

``put_manifests`` writes, as pg_backup would (:func:`pg_dataops.backup.manifest.build_manifest`), three good
manifests with their dumps (verified, unverified, from outside Airflow), two verified ones whose dump is missing
or of another size, and five that must be skipped, each for its own reason. ``expected_rows``,
``EXPECTED_SKIPPED`` and ``expected_dump_problems`` are what a rebuild of them must give; ``rebuilt_rows``
reads a catalog back in that shape.
"""

from __future__ import annotations

import datetime as dt
import json

import psycopg
from pg_dataops.backup import manifest
from pg_dataops.catalog.rebuild import FAILED_MESSAGE
from psycopg import sql

PREFIX = "database"
UTC = dt.UTC
COLUMNS = ("backup_date", "backup_type", "target", "database_name", "file_name", "file_size_bytes",
           "checksum_sha256", "duration_seconds", "status", "error_message", "failed_step", "s3_bucket", "s3_key",
           "s3_uploaded", "verified", "verified_at", "dag_id", "run_id", "encrypted")


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
         "scheduled__2026-11-23T17:00:00+00:00", False),
        (at(2026, 11, 25, 17, 0, 1), "daily", *common, MISSING, 123456, "ab" * 32, 12.5, "FAILED",
         f"the dump s3://{bucket}/{PREFIX}/daily/{MISSING} is missing (rebuilt from manifest, which says verified)",
         "upload", bucket, f"{PREFIX}/daily/{MISSING}", False, False, None, "pg_backup",
         "scheduled__2026-11-25T17:00:00+00:00", False),
        (at(2026, 11, 26, 17, 0, 1), "daily", *common, RESIZED, 123456, "ab" * 32, 12.5, "FAILED",
         f"the dump s3://{bucket}/{PREFIX}/daily/{RESIZED} is 123455 bytes, the manifest says 123456 (rebuilt from "
         "manifest, which says verified)", "upload", bucket, f"{PREFIX}/daily/{RESIZED}", True, False, None,
         "pg_backup", "scheduled__2026-11-26T17:00:00+00:00", False),
        (at(2026, 10, 31, 17, 0, 3), "monthly", *common, OUTSIDE, 123456, "ab" * 32, 12.5, "FAILED", FAILED_MESSAGE,
         "verify", bucket, f"{PREFIX}/monthly/{OUTSIDE}", True, False, None, "rebuilt",
         f"{PREFIX}/monthly/{OUTSIDE}.json", False),
        (at(2026, 11, 21, 17, 0, 2), "weekly", *common, UNVERIFIED, 123456, "ab" * 32, 12.5, "FAILED",
         FAILED_MESSAGE + ": public.users: 2999 rows, the dump had 3000", "verify", bucket,
         f"{PREFIX}/weekly/{UNVERIFIED}", True, False, None, "pg_backup", "scheduled__2026-11-21T17:00:00+00:00",
         False),
    ]


def expected_dump_problems(bucket: str) -> list[dict]:
    return [{"key": f"{PREFIX}/daily/{MISSING}.json", "problem": f"the dump s3://{bucket}/{PREFIX}/daily/{MISSING} "
                                                                  "is missing"},
            {"key": f"{PREFIX}/daily/{RESIZED}.json", "problem": f"the dump s3://{bucket}/{PREFIX}/daily/{RESIZED} "
                                                                  "is 123455 bytes, the manifest says 123456"}]


def rebuilt_rows(cluster, dbname: str) -> list[tuple]:
    """``(id, *COLUMNS)`` of every backup_logs row of ``dbname``, by file name (duration as float)."""
    query = sql.SQL("SELECT id, {} FROM backup_logs ORDER BY file_name").format(
        sql.SQL(", ").join(map(sql.Identifier, COLUMNS)))
    with psycopg.connect(host="127.0.0.1", port=cluster.port, user="postgres", password=cluster.password,
                         dbname=dbname) as pg:
        result = pg.execute(query).fetchall()
    return [(r[0], *[float(v) if c == "duration_seconds" else v for c, v in zip(COLUMNS, r[1:], strict=True)])
            for r in result]
