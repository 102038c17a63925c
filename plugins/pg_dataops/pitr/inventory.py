"""What PITR has in S3: base backups (their manifest.json), archived WAL, and the recoverable window.

Airflow-free. Every PITR step reads the state through here: the base backup DAG's retention, the
archive check, the restore's validation and the drill.

A base backup is the folder ``{prefix}/{pitr.base_prefix}/{target}/{backup_id}/`` holding
``base.tar.zst`` (``.age`` when encrypted: pg_basebackup's tar stream with its backup_manifest
injected, zstd-compressed on the worker) and ``manifest.json``, written last: a folder without a
readable manifest is an incomplete backup and is never used for recovery.

manifest.json (``kind`` "pg_base_backup", ``version`` 1)::

    target, backup_id, server_version, server_version_num, system_identifier,
    timeline, start_lsn, stop_lsn, start_wal, stop_wal,       -- from pg_basebackup / backup_manifest
    start_time, stop_time (ISO 8601, UTC, the server's clock), duration_seconds,
    archive: {key, file, size, sha256, part_size, part_sha256, compression},
    backup_manifest: {checksum, files, size},                 -- its Manifest-Checksum (SHA-256)
    database_size, encryption (null or {"format": "age", "recipients": [...]}), pg_basebackup (argv, no secrets)
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from pg_dataops.common import wal
from pg_dataops.common.config import Config
from pg_dataops.common.errors import BackupError
from pg_dataops.common.formatting import fmt_instant

MANIFEST = "manifest.json"
KIND = "pg_base_backup"
ARCHIVE_FILE = "base.tar.zst"
_ID_RE = re.compile(r"^(?P<target>[a-z][a-z0-9_]*)_base_(?P<stamp>\d{8}T\d{6}Z)$")


class PitrError(BackupError):
    """PITR state in S3 is missing or unusable; the message says what and where."""


def backup_id(target: str, moment: dt.datetime) -> str:
    """glimpse_base_20261201T033000Z: UTC, so ids sort by time whatever the configured time zone."""
    return f"{target}_base_{moment.astimezone(dt.UTC):%Y%m%dT%H%M%SZ}"


def parse_backup_id(name: str) -> tuple[str, dt.datetime] | None:
    m = _ID_RE.match(name)
    if not m:
        return None
    return m.group("target"), dt.datetime.strptime(m.group("stamp"), "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)


def backup_folder(cfg: Config, target: str, bid: str) -> str:
    return f"{wal.base_backup_prefix(cfg, target)}{bid}/"


def parse_time(value: str) -> dt.datetime:
    t = dt.datetime.fromisoformat(value)
    if t.tzinfo is None:
        raise ValueError(f"{value!r} has no time zone")
    return t


@dataclass(frozen=True)
class BaseBackup:
    """One complete base backup, from its manifest.json."""

    backup_id: str
    folder: str
    doc: dict[str, Any] = field(repr=False)

    @property
    def start_time(self) -> dt.datetime:
        return parse_time(self.doc["start_time"])

    @property
    def stop_time(self) -> dt.datetime:
        """When the backup became consistent: the earliest moment it can recover to."""
        return parse_time(self.doc["stop_time"])

    @property
    def start_segment(self) -> wal.Segment:
        return wal.Segment.parse(self.doc["start_wal"])

    @property
    def stop_segment(self) -> wal.Segment:
        return wal.Segment.parse(self.doc["stop_wal"])

    @property
    def archive_key(self) -> str:
        return self.doc["archive"]["key"]

    @property
    def encrypted(self) -> bool:
        return bool(self.doc.get("encryption"))


@dataclass
class Listing:
    """A target's base backups (complete ones, oldest first) and the folders that are not (no manifest)."""

    backups: list[BaseBackup]
    incomplete: list[str]  # folders without a readable manifest.json: never recovered from, retention removes them
    problems: list[str]  # unreadable manifests, named


def list_base_backups(client, cfg: Config, target: str) -> Listing:
    """Every base backup folder of ``target`` in S3, with its manifest read and checked."""
    prefix = wal.base_backup_prefix(cfg, target)
    folders: dict[str, list[str]] = {}
    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=cfg.bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                rest = obj["Key"][len(prefix):]
                if "/" in rest:
                    folder, name = rest.split("/", 1)
                    folders.setdefault(folder, []).append(name)
    except (ClientError, BotoCoreError) as exc:
        raise PitrError(f"cannot list base backups under s3://{cfg.bucket}/{prefix}: {exc}") from None
    backups, incomplete, problems = [], [], []
    for folder in sorted(folders):
        where = f"s3://{cfg.bucket}/{prefix}{folder}/"
        if MANIFEST not in folders[folder]:
            incomplete.append(prefix + folder + "/")
            continue
        try:
            body = client.get_object(Bucket=cfg.bucket, Key=f"{prefix}{folder}/{MANIFEST}")["Body"].read()
            doc = check_manifest(json.loads(body), folder, target)
        except (ClientError, BotoCoreError, ValueError, KeyError, TypeError) as exc:
            problems.append(f"{where}{MANIFEST}: {exc}")
            incomplete.append(prefix + folder + "/")
            continue
        backups.append(BaseBackup(folder, prefix + folder + "/", doc))
    backups.sort(key=lambda b: b.stop_time)
    return Listing(backups, incomplete, problems)


_REQUIRED = ("target", "backup_id", "timeline", "start_lsn", "stop_lsn", "start_wal", "stop_wal", "start_time",
             "stop_time", "archive", "backup_manifest", "server_version_num")


def check_manifest(doc: Any, folder: str, target: str) -> dict[str, Any]:
    """A base backup manifest as written by pg_base_backup, or ValueError naming what is wrong."""
    if not isinstance(doc, dict) or doc.get("kind") != KIND:
        raise ValueError(f"not a {KIND} manifest")
    missing = [k for k in _REQUIRED if k not in doc]
    if missing:
        raise ValueError(f"missing {', '.join(missing)}")
    if doc["backup_id"] != folder or doc["target"] != target:
        raise ValueError(f"manifest names {doc['target']}/{doc['backup_id']}, found in {target}/{folder}")
    parse_time(doc["start_time"])
    parse_time(doc["stop_time"])
    wal.Segment.parse(doc["start_wal"])
    wal.Segment.parse(doc["stop_wal"])
    if not isinstance(doc["archive"], dict) or not {"key", "size", "sha256"} <= set(doc["archive"]):
        raise ValueError("archive must have key, size, sha256")
    return doc


@dataclass
class Window:
    """The recoverable window of a target: from the oldest base backup's end to the newest archived WAL.

    ``end`` is the newest segment's upload time: every commit in it happened before then; the server
    may have committed more since (at most archive_timeout of it, the RPO)."""

    target: str
    backups: list[BaseBackup]
    archive: list[wal.ArchivedWal]
    start: dt.datetime | None
    end: dt.datetime | None

    @property
    def newest_segment(self) -> wal.ArchivedWal | None:
        return wal.newest_segment(self.archive)

    def describe(self, timezone: str) -> str:
        if not self.backups:
            return f"no base backup of {self.target} yet: nothing to recover to (run pg_base_backup)"
        if self.end is None or self.end < self.start:
            return (f"{self.target}: base backups from {fmt_instant(self.start, timezone)}, but no WAL archived after "
                    "the newest one")
        return f"{self.target}: {fmt_instant(self.start, timezone)} .. {fmt_instant(self.end, timezone)}"

    def contains(self, moment: dt.datetime) -> bool:
        return self.start is not None and self.end is not None and self.start <= moment <= self.end

    def base_for(self, moment: dt.datetime) -> BaseBackup | None:
        """The newest base backup that ended at or before ``moment`` (replay from there is shortest)."""
        fitting = [b for b in self.backups if b.stop_time <= moment]
        return fitting[-1] if fitting else None


def recoverable_window(client, cfg: Config, target: str, *, listing: Listing | None = None) -> Window:
    listing = listing or list_base_backups(client, cfg, target)
    try:
        archive = wal.list_archive(client, cfg.bucket, wal.archive_prefix(cfg, target))
    except (ClientError, BotoCoreError) as exc:
        raise PitrError(f"cannot list the WAL archive s3://{cfg.bucket}/{wal.archive_prefix(cfg, target)}: "
                        f"{exc}") from None
    start = listing.backups[0].stop_time if listing.backups else None
    newest = wal.newest_segment(archive)
    end = newest.last_modified if newest is not None else None
    return Window(target, listing.backups, archive, start, end)
