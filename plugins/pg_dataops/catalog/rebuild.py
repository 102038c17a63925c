"""Rebuild the backup_logs catalog from the manifests in S3 (the catalog may be the database that was lost).

Airflow-free. Every ``.json`` under ``{prefix}/{daily,weekly,monthly}/`` is read and checked with
:func:`pg_dataops.backup.manifest.loads`; each good manifest becomes one upserted backup_logs row (keyed like
pg_backup's own rows, so running it twice, or on a catalog that survived, changes nothing). A manifest
that cannot be read, or that contradicts where it sits, is skipped and reported: never guessed at.
A row is SUCCESS only when the manifest says verified *and* its dump is in S3 with the manifest's
size; a dump that is missing or of another size makes it FAILED, saying which. An encrypted backup
(``x.dump.age`` beside ``x.dump.age.json``) is rebuilt like any other, with ``encrypted`` from its
manifest's ``encryption`` block.

Also a command line, for when Airflow itself is not available::

    python -m pg_dataops.catalog_rebuild --bucket glimpse-backups --prefix database \\
        [--endpoint-url http://minio:9000] --dsn-env CATALOG_DSN

(boto3's usual credential chain; ``CATALOG_DSN`` holds a libpq connection string.)
"""

from __future__ import annotations

import argparse
import json
import os
import posixpath
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from pg_dataops.backup import manifest
from pg_dataops.catalog import backup_logs
from pg_dataops.common import s3
from pg_dataops.common.errors import BackupError, ManifestError, PermanentError
from pg_dataops.common.naming import TIERS, parse_name, parse_timestamp
from pg_dataops.common.s3 import describe_error

FAILED_MESSAGE = "verification failed or did not run (rebuilt from manifest)"
REBUILT_DAG_ID = "rebuilt"


class CatalogRebuildError(BackupError):
    """The manifests could not be listed, or there are none: nothing was written."""


class NoManifestsFound(CatalogRebuildError, PermanentError):
    """Nothing under the tier folders: a wrong bucket or prefix, not an empty history."""


@dataclass
class RebuildResult:
    bucket: str
    prefix: str
    manifests: int = 0  # .json objects found under the tier folders
    recorded: int = 0  # rows upserted
    success: int = 0
    failed: int = 0
    skipped: list[dict[str, str]] = field(default_factory=list)  # [{"key": ..., "reason": ...}]
    # Recorded FAILED because the dump is missing or not the manifest's size: [{"key": manifest key, "problem": ...}]
    dump_problems: list[dict[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict:
        """JSON-safe, for XCom."""
        return asdict(self)


def list_manifest_keys(client, bucket: str, prefix: str) -> list[str]:
    """Every ``.json`` key under ``{prefix}/{tier}/`` for the three tiers, sorted."""
    return sorted(obj["Key"] for _tier, _prefix, obj in s3.list_tiers(client, bucket, prefix, error=CatalogRebuildError)
                  if obj["Key"].endswith(".json"))


def row_from_manifest(doc: dict[str, Any], *, bucket: str, prefix: str, key: str) -> dict[str, Any]:
    """The backup_logs row a manifest describes; ManifestError when it contradicts itself or its place."""
    tier_folder = key[len(prefix) + 1:].split("/", 1)[0]
    dump_key = key[: -len(".json")]
    file = doc["file"]
    if doc["type"] not in TIERS:
        raise ManifestError(f"type {doc['type']!r} is not one of {', '.join(TIERS)}")
    if doc["type"] != tier_folder:
        raise ManifestError(f"manifest says type {doc['type']!r} but it is under {tier_folder}/")
    if file != posixpath.basename(dump_key):
        raise ManifestError(f"manifest names file {file!r} but sits beside {posixpath.basename(dump_key)!r}")
    backup_date = parse_timestamp(doc["timestamp"])
    if backup_date is None:
        raise ManifestError(f"timestamp {doc['timestamp']!r} is not ISO-8601 with a time zone")
    target = doc.get("target")
    if target is None:
        parsed = parse_name(file, "UTC")  # only the target is taken from the name, not its time
        if parsed is None:
            raise ManifestError(f"no target in the manifest and file name {file!r} does not name one")
        target = parsed[0]
    elif not isinstance(target, str) or not target:
        raise ManifestError(f"target {target!r} is not a name")

    verified = doc.get("verified") is True
    verification = doc.get("verification") if isinstance(doc.get("verification"), dict) else {}
    error = None
    if not verified:
        detail = verification.get("error")
        error = FAILED_MESSAGE + (f": {detail}" if isinstance(detail, str) and detail else "")
    airflow = doc.get("airflow") if isinstance(doc.get("airflow"), dict) else {}
    dag_id, run_id = airflow.get("dag_id"), airflow.get("run_id")
    if not (isinstance(dag_id, str) and dag_id and isinstance(run_id, str) and run_id):
        dag_id, run_id = REBUILT_DAG_ID, key
    duration = doc.get("duration_seconds")
    database = doc.get("database")
    return {
        "backup_date": backup_date,
        "backup_type": doc["type"],
        "target": target,
        "database_name": database if isinstance(database, str) else None,
        "file_name": file,
        "file_size_bytes": doc["size"],
        "checksum_sha256": doc["checksum"],
        "duration_seconds": duration if isinstance(duration, (int, float)) and not isinstance(duration, bool) else None,
        "status": "SUCCESS" if verified else "FAILED",
        "error_message": error,
        "failed_step": None if verified else "verify",
        "s3_bucket": bucket,
        "s3_key": dump_key,  # where the dump is now, which a restore needs (the manifest may predate a copy)
        "s3_uploaded": True,
        "verified": verified,
        "verified_at": parse_timestamp(verification.get("checked_at")) if verified else None,
        "dag_id": dag_id,
        "run_id": run_id,
        # Client-side (age) encryption, as the manifest records it (loads checked it against the name);
        # a manifest from before encryption has no block and describes a plaintext dump.
        "encrypted": manifest.encryption_of(doc) is not None,
    }


def head_size(client, bucket: str, key: str) -> int | None:
    """The object's size in bytes, or None when there is no such object (other errors are raised)."""
    try:
        return client.head_object(Bucket=bucket, Key=key)["ContentLength"]
    except ClientError as exc:
        if str(exc.response.get("Error", {}).get("Code", "")) in ("404", "NoSuchKey", "NotFound"):
            return None
        raise


def dump_problem(row: dict[str, Any], size: int | None) -> str | None:
    """Why the row's dump in S3 is not the backup its manifest describes; None when it is (by size)."""
    where = f"s3://{row['s3_bucket']}/{row['s3_key']}"
    if size is None:
        return f"the dump {where} is missing"
    if size != row["file_size_bytes"]:
        return f"the dump {where} is {size} bytes, the manifest says {row['file_size_bytes']}"
    return None


def failed_for_dump(row: dict[str, Any], problem: str, *, present: bool) -> dict[str, Any]:
    """The row as FAILED: a verdict on a dump that is not there (or not that dump) proves nothing now."""
    said = f"; {row['error_message']}" if row["error_message"] else " (rebuilt from manifest, which says verified)"
    return {
        **row,
        "status": "FAILED",
        "error_message": problem + said,
        "failed_step": "upload",
        "s3_uploaded": present,
        "verified": False,
        "verified_at": None,
    }


def rebuild_catalog(client, bucket: str, prefix: str, pg, *, max_workers: int = 8) -> RebuildResult:
    """Upsert one backup_logs row per readable manifest; report the rest.

    Raises CatalogRebuildError, writing nothing, when the listing fails, and NoManifestsFound when it
    finds no manifest at all (a wrong bucket or prefix).
    """
    result = RebuildResult(bucket=bucket, prefix=prefix)
    keys = list_manifest_keys(client, bucket, prefix)
    result.manifests = len(keys)
    if not keys:
        raise NoManifestsFound(
            f"no manifests found under s3://{bucket}/{prefix}/{{{','.join(TIERS)}}}/: a wrong bucket or prefix, "
            "not an empty history; nothing was written"
        )
    bodies = s3.read_manifests(client, bucket, keys, max_workers=max_workers)
    dumps = dump_sizes(client, bucket, keys, max_workers=max_workers)
    rows = rows_from_manifests(keys, bodies, dumps, bucket=bucket, prefix=prefix, result=result)
    drop_clashing_runs(rows, result)
    for key in keys:
        if key in rows:
            record_row(pg, key, rows[key], dumps[key][0], result)
    result.skipped.sort(key=lambda s: s["key"])
    return result


def dump_sizes(client, bucket: str, keys: list[str], *, max_workers: int) -> dict[str, tuple[int | None, str | None]]:
    """Per manifest key: (size, None) when the dump beside it exists, (None, None) when it does not,
    (None, why) when it cannot be checked."""

    def dump_size(key: str) -> tuple[int | None, str | None]:
        dump_key = key[: -len(".json")]
        try:
            return head_size(client, bucket, dump_key), None
        except (ClientError, BotoCoreError) as exc:
            return None, f"cannot check its dump s3://{bucket}/{dump_key}: {describe_error(exc)}"

    with ThreadPoolExecutor(max_workers=max_workers) as pool:
        return dict(zip(keys, pool.map(dump_size, keys), strict=True))


def rows_from_manifests(keys: list[str], bodies: dict[str, tuple[bytes | None, str | None]],
                        dumps: dict[str, tuple[int | None, str | None]], *, bucket: str, prefix: str,
                        result: RebuildResult) -> dict[str, dict[str, Any]]:
    """``{manifest key: row}`` of the manifests that read and check; the others go to ``result.skipped``."""
    rows: dict[str, dict[str, Any]] = {}
    for key in keys:
        body, error = bodies[key]
        head_error = dumps[key][1]
        if error is not None or head_error is not None:
            # A dump that cannot be checked (access denied, a dropped connection) is neither good nor
            # bad: writing either could overwrite the truth in a catalog that survived.
            result.skipped.append({"key": key, "reason": error or head_error})
            continue
        try:
            doc = manifest.loads(body, source="manifest")
            rows[key] = row_from_manifest(doc, bucket=bucket, prefix=prefix, key=key)
        except ManifestError as exc:
            result.skipped.append({"key": key, "reason": str(exc)})
    return rows


def drop_clashing_runs(rows: dict[str, dict[str, Any]], result: RebuildResult) -> None:
    """Two manifests claiming the same (dag_id, run_id, target) would overwrite each other: keep neither."""
    by_identity: dict[tuple, list[str]] = {}
    for key, row in rows.items():
        by_identity.setdefault((row["dag_id"], row["run_id"], row["target"]), []).append(key)
    for (dag_id, run_id, target), clash in by_identity.items():
        if len(clash) > 1:
            for key in clash:
                others = ", ".join(k for k in clash if k != key)
                result.skipped.append({"key": key, "reason": f"same dag_id/run_id/target ({dag_id}, {run_id}, "
                                                             f"{target}) as {others}"})
                del rows[key]


def record_row(pg, key: str, row: dict[str, Any], dump_size: int | None, result: RebuildResult) -> None:
    """Upsert one manifest's row, FAILED when its dump is missing or not the manifest's size."""
    problem = dump_problem(row, dump_size)
    if problem is not None:
        row = failed_for_dump(row, problem, present=dump_size is not None)
        result.dump_problems.append({"key": key, "problem": problem})
    backup_logs.record(pg, row)
    result.recorded += 1
    result.success += row["status"] == "SUCCESS"
    result.failed += row["status"] == "FAILED"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pg_dataops.catalog_rebuild", description=__doc__.splitlines()[0])
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--endpoint-url", default=None, help="S3-compatible endpoint (MinIO, moto)")
    parser.add_argument("--dsn-env", required=True, help="environment variable holding the catalog's libpq DSN")
    args = parser.parse_args(argv)
    dsn = os.environ.get(args.dsn_env)
    if not dsn:
        parser.error(f"environment variable {args.dsn_env} is not set")

    import boto3
    import psycopg

    client = boto3.client("s3", endpoint_url=args.endpoint_url)
    try:
        with psycopg.connect(dsn, application_name="pg_dataops") as pg:
            result = rebuild_catalog(client, args.bucket, args.prefix.strip("/"), pg)
    except (BackupError, psycopg.Error) as exc:
        print(f"catalog rebuild failed: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result.to_dict(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
