"""The steps of one logical backup, as plain functions on plain dicts. Airflow-free.

Each step takes what earlier steps returned (JSON-safe dicts, so they travel as XCom) and returns
its own result; the operators in ``pg_dataops.operators`` only fetch connections and call these.
"""

from __future__ import annotations

import datetime as dt
import os
from typing import Any

from pg_dataops import catalog, manifest, storage, tiers
from pg_dataops.config import Config, Target
from pg_dataops.dump import artifact_name, run_dump
from pg_dataops.errors import IntegrityError
from pg_dataops.pgtools import PgConn


def s3_key(cfg: Config, tier: str, file: str) -> str:
    """database/{tier}/{file}, the runbook's layout."""
    return f"{cfg.prefix}/{tier}/{file}"


def dump_step(cfg: Config, target: Target, conn: PgConn, tier: str, moment: dt.datetime,
              client=None) -> dict[str, Any]:
    """pg_dump to the local tree; with ``stream_upload`` (and a client) the object reaches S3 as it is
    written, so the upload costs almost no extra time; the upload step then proves it."""
    basename = tiers.backup_basename(target.name, tier, moment, cfg.timezone)
    out_dir = tiers.local_dir(cfg.local_root, tier, moment, cfg.timezone)
    uploader = None
    if cfg.stream_upload and client is not None:
        file = artifact_name(basename, cfg.dump_format, cfg.dump_compression)
        uploader = storage.StreamingUpload(client, cfg.bucket, s3_key(cfg, tier, file),
                                           storage_class=cfg.storage_class, sse=cfg.sse, kms_key_id=cfg.kms_key_id)
    result = run_dump(
        conn,
        out_dir,
        basename,
        fmt=cfg.dump_format,
        compression=cfg.dump_compression,
        jobs=cfg.dump_jobs,
        part_size=cfg.multipart_chunk_mb * 1024 * 1024,
        pg_bin_root=cfg.pg_bin_root,
        uploader=uploader,
    )
    return {**result.to_dict(), "target": target.name, "tier": tier, "streamed": uploader is not None}


def checksum_step(dump: dict[str, Any]) -> dict[str, Any]:
    """Write the `sha256sum -c` sidecar from the digest computed while dumping (no second read)."""
    size = os.stat(dump["path"]).st_size
    if size != dump["size"]:
        raise IntegrityError(f"{dump['path']} is {size} bytes, but the dump wrote {dump['size']}: it changed")
    sidecar = dump["path"] + ".sha256"
    tmp = sidecar + ".tmp"
    with open(tmp, "w") as f:
        f.write(manifest.sha256_line(dump["sha256"], dump["file"]))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, sidecar)
    return {"path": sidecar, "sha256": dump["sha256"], "file": dump["file"]}


def upload_step(client, cfg: Config, dump: dict[str, Any], checksum: dict[str, Any]) -> dict[str, Any]:
    key = s3_key(cfg, dump["tier"], dump["file"])
    result = storage.upload_file(
        client,
        dump["path"],
        cfg.bucket,
        key,
        size=dump["size"],
        sha256_hex=dump["sha256"],
        part_sha256=dump["part_sha256"],
        part_size=dump["part_size"],
        storage_class=cfg.storage_class,
        sse=cfg.sse,
        kms_key_id=cfg.kms_key_id,
    )
    with open(checksum["path"], "rb") as f:
        storage.put_small(
            client, cfg.bucket, key + ".sha256", f.read(), content_type="text/plain", sse=cfg.sse,
            kms_key_id=cfg.kms_key_id,
        )
    return result.to_dict()


def manifest_step(
    client, cfg: Config, dump: dict[str, Any], upload: dict[str, Any], verification: dict[str, Any] | None,
    dag_id: str | None, run_id: str | None,
) -> dict[str, Any]:
    doc = manifest.build_manifest(
        target=dump["target"], tier=dump["tier"], dump=dump, upload=upload, bucket=cfg.bucket,
        prefix=cfg.prefix, dag_id=dag_id, run_id=run_id, verification=verification,
    )
    text = manifest.dumps(doc)
    local = dump["path"] + ".json"
    tmp = local + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, local)
    storage.put_small(
        client, cfg.bucket, upload["key"] + ".json", text.encode(), content_type="application/json",
        sse=cfg.sse, kms_key_id=cfg.kms_key_id,
    )
    return doc


def catalog_row(
    *,
    target: str,
    tier: str | None,
    moment: dt.datetime,
    dump: dict | None,
    upload: dict | None,
    doc: dict | None,
    error: str | None,
    failed_step: str | None,
    bucket: str,
    dag_id: str | None,
    run_id: str | None,
) -> dict[str, Any]:
    """One backup_logs row: SUCCESS only when the manifest was written and the restore test passed."""
    ok = doc is not None and bool(doc.get("verified")) and error is None
    return {
        "backup_date": (dump or {}).get("snapshot_time") or moment.isoformat(),
        "backup_type": tier or "daily",
        "target": target,
        "database_name": (dump or {}).get("database"),
        "file_name": (dump or {}).get("file"),
        "file_size_bytes": (dump or {}).get("size"),
        "checksum_sha256": (dump or {}).get("sha256"),
        "duration_seconds": (dump or {}).get("duration_seconds"),
        "status": "SUCCESS" if ok else "FAILED",
        "error_message": None if ok else (error or "an upstream step failed"),
        "failed_step": None if ok else failed_step,
        "s3_bucket": bucket,
        "s3_key": (upload or {}).get("key"),
        "s3_uploaded": upload is not None,
        "verified": bool(doc and doc.get("verified")),
        "verified_at": (doc or {}).get("verification", {}).get("checked_at") if doc and doc.get("verified") else None,
        "dag_id": dag_id,
        "run_id": run_id,
    }


def record_step(pg, row: dict[str, Any]) -> int:
    return catalog.record(pg, row)


def success_text(doc: dict[str, Any]) -> str:
    """The Slack success message, the runbook's notify_slack SUCCESS with the facts that matter."""
    size_mb = doc["size"] / 1e6
    dur = doc["duration_seconds"]
    rate = size_mb / dur if dur else 0.0
    v = doc.get("verification") or {}
    return (
        f":white_check_mark: Database backup SUCCESS: {doc['target']} ({doc['type']})\n"
        f"s3://{doc['s3']['bucket']}/{doc['s3']['key']}\n"
        f"size {size_mb:,.1f} MB, dump {dur:.1f} s ({rate:,.1f} MB/s), "
        f"{sum(doc['table_counts'].values()):,} rows in {len(doc['table_counts'])} tables\n"
        f"verified: restored in {v.get('restore_seconds', 0):.1f} s, {v.get('tables_found', 0)} tables and "
        f"{v.get('rows_checked', 0):,} rows match the dump snapshot, amcheck {v.get('amcheck', 'n/a')}\n"
        f"sha256 {doc['checksum']}"
    )
