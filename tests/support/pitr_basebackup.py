"""Old base backups for retention tests: a folder in S3 as pg_base_backup writes it (an archive object, then a
manifest.json that passes pitr.inventory.check_manifest), dated in the past, its WAL starting where told.

Only the dates and positions are invented (a real backup cannot be made last week); the S3 layout, the
manifest's contract and the server they are listed and deleted from (moto over HTTP) are real.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json

from pg_dataops.common import wal
from pg_dataops.pitr import inventory


def plant_base_backup(client, cfg, target: str, stop_time: dt.datetime, start_wal: str,
                      stop_wal: str | None = None, *, manifest: bool = True) -> str:
    """Writes ``{folder}base.tar.zst`` (and manifest.json unless ``manifest`` is false); returns the backup_id."""
    start_time = stop_time - dt.timedelta(seconds=30)
    bid = inventory.backup_id(target, start_time)
    folder = inventory.backup_folder(cfg, target, bid)
    body = f"planted base backup {bid}".encode()
    client.put_object(Bucket=cfg.bucket, Key=folder + inventory.ARCHIVE_FILE, Body=body)
    if manifest:
        start = wal.Segment.parse(start_wal)
        doc = {"kind": inventory.KIND, "version": 1, "target": target, "backup_id": bid,
               "server_version_num": 150020, "timeline": start.timeline,
               "start_lsn": wal.format_lsn(start.segno * wal.SEGMENT_SIZE + 0x28),
               "stop_lsn": wal.format_lsn(wal.Segment.parse(stop_wal or start_wal).segno * wal.SEGMENT_SIZE + 0x100),
               "start_wal": start_wal, "stop_wal": stop_wal or start_wal,
               "start_time": start_time.isoformat(), "stop_time": stop_time.isoformat(),
               "archive": {"key": folder + inventory.ARCHIVE_FILE, "size": len(body),
                           "sha256": hashlib.sha256(body).hexdigest()},
               "backup_manifest": {"checksum": "0" * 64, "files": 0, "size": 0}, "encryption": None}
        client.put_object(Bucket=cfg.bucket, Key=folder + inventory.MANIFEST, Body=json.dumps(doc).encode())
    return bid


def plant_wal(client, cfg, target: str, name: str) -> str:
    """An archived WAL file (segment, .history, .backup) under Barman's layout, gzip-suffixed as it ships them."""
    folder = name[:16] + "/" if len(name) >= 24 else ""  # segments by timeline+log; history files at the top
    key = f"{wal.archive_prefix(cfg, target)}{folder}{name}.gz"
    client.put_object(Bucket=cfg.bucket, Key=key, Body=b"planted wal " + name.encode())
    return key


def folder_keys(client, bucket: str, prefix: str) -> list[str]:
    return sorted(o["Key"] for p in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
                  for o in p.get("Contents", []))
