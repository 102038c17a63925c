"""The restore drill: the newest backup, fetched from S3 (not the local copy), proven and timed.

Airflow-free. The measured RTO of a logical restore is download + restore + checks; it is recorded in
``restore_drills`` next to the objective, and judged against it and against its own trend.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import time
from dataclasses import dataclass

from botocore.exceptions import BotoCoreError, ClientError

from pg_dataops.backup import manifest
from pg_dataops.common import s3, sqlfiles
from pg_dataops.common.errors import BackupError, IntegrityError, ManifestError
from pg_dataops.common.naming import parse_name
from pg_dataops.common.s3 import describe_error

log = logging.getLogger(__name__)
CHUNK = 1024 * 1024


def latest_backup(client, bucket: str, prefix: str, target: str, timezone: str) -> dict:
    """The newest backup of ``target`` in S3 (by the time in its name), with its parsed manifest.

    The newest is taken even when its manifest is broken: a drill that quietly fell back to an
    older backup would hide exactly the problem it exists to find. An object with neither .sha256
    nor .json is not a backup yet (an upload whose run died before proving it) and is passed over.
    """
    newest = None
    candidates, listed = [], set()
    for _tier, _prefix, obj in s3.list_tiers(client, bucket, prefix, error=BackupError):
        listed.add(obj["Key"])
        parsed = parse_name(obj["Key"].rsplit("/", 1)[1], timezone)
        if parsed and parsed[0] == target:
            candidates.append((obj["Key"], parsed[2], obj["Size"]))
    for key, moment, size in candidates:
        if (key + ".json" in listed or key + ".sha256" in listed) and (newest is None or moment > newest[1]):
            newest = (key, moment, size)
    if newest is None:
        raise BackupError(f"no backup of {target!r} under s3://{bucket}/{prefix}/ to drill")
    key = newest[0]
    manifest_key = key + ".json"
    try:
        raw = client.get_object(Bucket=bucket, Key=manifest_key)["Body"].read()
    except ClientError as exc:
        raise ManifestError(f"s3://{bucket}/{manifest_key} cannot be read ({describe_error(exc)}): the newest "
                            f"backup {key} has no usable manifest") from None
    doc = manifest.loads(raw, source=f"s3://{bucket}/{manifest_key}")
    if doc["file"] != key.rsplit("/", 1)[1]:
        raise ManifestError(f"s3://{bucket}/{manifest_key} describes {doc['file']!r}, not {key}")
    return {"key": key, "manifest": doc}


def _read_sha256_sidecar(client, bucket: str, key: str) -> str:
    sidecar = key + ".sha256"
    try:
        text = client.get_object(Bucket=bucket, Key=sidecar)["Body"].read().decode()
    except ClientError as exc:
        raise IntegrityError(f"s3://{bucket}/{sidecar} is missing or unreadable ({describe_error(exc)}): "
                             "the backup cannot be proven, so it is not restored") from None
    parts = text.split()
    if len(parts) != 2 or len(parts[0]) != 64 or parts[1].lstrip("*") != key.rsplit("/", 1)[1]:
        raise IntegrityError(f"s3://{bucket}/{sidecar} is not a sha256sum line for {key.rsplit('/', 1)[1]}")
    return parts[0]


def download_and_check(client, bucket: str, key: str, doc: dict, dest_dir: str) -> dict:
    """Stream the object to ``dest_dir`` while hashing it; it must match the .sha256 and the manifest."""
    expected = _read_sha256_sidecar(client, bucket, key)
    if expected != doc["checksum"]:
        raise IntegrityError(f"{key}: the .sha256 ({expected[:12]}...) and the manifest ({doc['checksum'][:12]}...) "
                             "disagree")
    os.makedirs(dest_dir, exist_ok=True)
    path = os.path.join(dest_dir, doc["file"])
    started = time.monotonic()
    h = hashlib.sha256()
    size = 0
    try:
        body = client.get_object(Bucket=bucket, Key=key)["Body"]
        with open(path, "wb") as out:
            for block in iter(lambda: body.read(CHUNK), b""):
                h.update(block)
                out.write(block)
                size += len(block)
    except (ClientError, BotoCoreError) as exc:
        _remove(path)
        raise BackupError(f"download of s3://{bucket}/{key} failed: {describe_error(exc)}") from None
    except BaseException:
        _remove(path)
        raise
    digest = h.hexdigest()
    if digest != expected or size != doc["size"]:
        _remove(path)
        raise IntegrityError(
            f"s3://{bucket}/{key} is corrupt: SHA-256 {digest[:16]}... and {size} bytes, but .sha256 and the "
            f"manifest say {expected[:16]}... and {doc['size']} bytes; nothing was restored or deleted"
        )
    return {"path": path, "size": size, "sha256": digest, "download_seconds": round(time.monotonic() - started, 3)}


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


@dataclass(frozen=True)
class RtoVerdict:
    status: str  # "ok" | "exceeded" | "trend"
    message: str
    projected_seconds: float | None = None


def assess_rto(measured_seconds: float, objective_seconds: float, history: list[tuple[dt.datetime, float]],
               now: dt.datetime, *, horizon_days: int = 90, min_points: int = 4) -> RtoVerdict:
    """Exceeded now, or heading past the objective within ``horizon_days`` by a least-squares trend.

    ``history`` holds earlier successful drills (time, total seconds); the current one is added.
    """
    pct = 100.0 * measured_seconds / objective_seconds
    if measured_seconds > objective_seconds:
        return RtoVerdict("exceeded", f"measured RTO {fmt_seconds(measured_seconds)} exceeds the objective "
                                      f"{fmt_seconds(objective_seconds)} ({pct:.0f}%)")
    points = sorted([*history, (now, measured_seconds)])
    if len(points) >= min_points:
        t0 = points[0][0]
        xs = [(t - t0).total_seconds() / 86400 for t, _ in points]
        ys = [v for _, v in points]
        mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
        var = sum((x - mx) ** 2 for x in xs)
        if var > 0:
            slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var  # seconds per day
            projected = my + slope * ((now - t0).total_seconds() / 86400 + horizon_days - mx)
            if slope > 0 and projected > objective_seconds:
                days = (objective_seconds - measured_seconds) / slope
                return RtoVerdict(
                    "trend",
                    f"measured RTO {fmt_seconds(measured_seconds)} is within the objective "
                    f"{fmt_seconds(objective_seconds)} ({pct:.0f}%), but growing {fmt_seconds(slope)} per day: "
                    f"it reaches the objective in about {days:.0f} days",
                    projected_seconds=round(projected, 1),
                )
    return RtoVerdict("ok", f"measured RTO {fmt_seconds(measured_seconds)} is within the objective "
                            f"{fmt_seconds(objective_seconds)} ({pct:.1f}%)")


def fmt_seconds(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def record_drill(pg, row: dict) -> int:
    from pg_dataops.catalog import backup_logs

    backup_logs.ensure_schema(pg)
    with pg.transaction():
        return pg.execute(sqlfiles.text("catalog/record_drill.sql"), row).fetchone()[0]


def drill_history(pg, target: str, since: dt.datetime) -> list[tuple[dt.datetime, float]]:
    from pg_dataops.catalog import backup_logs

    backup_logs.ensure_schema(pg)
    rows = pg.execute(sqlfiles.text("catalog/drill_history.sql"), {"target": target, "since": since}).fetchall()
    return [(r[0], float(r[1])) for r in rows]
