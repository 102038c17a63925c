"""The backup a restore starts from: found in S3 by date or key, downloaded, proven, decrypted. Airflow-free.

The runbook listed ``aws s3 ls ... | grep $DATE`` and then asked for a file name it never used
(``$BACKUP_FILE`` was never set): here the date (in the config's time zone) or the key picks exactly one
backup, or the run stops naming what exists. The download is hashed while it streams and must match
its ``.sha256`` and its manifest (:mod:`pg_dataops.common.fetch`); an encrypted one is decrypted with the
restore identity beside it; :func:`remove_files` removes both, whatever happened.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import zoneinfo
from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError

from pg_dataops.backup import manifest
from pg_dataops.common import fetch, s3
from pg_dataops.common.config import Config
from pg_dataops.common.errors import ManifestError
from pg_dataops.common.naming import parse_name
from pg_dataops.common.s3 import describe_error
from pg_dataops.restore.request import RequestRefused


def list_backups(client, cfg: Config, target: str) -> list[dict[str, Any]]:
    """Every proven backup of ``target`` in S3 (an object with its .json or .sha256), oldest first:
    ``{"key", "tier", "moment" (UTC), "local_date" (YYYY-MM-DD in the config's zone), "size"}``."""
    zone = zoneinfo.ZoneInfo(cfg.timezone)
    listed, found = set(), []
    for tier, _prefix, obj in s3.list_tiers(client, cfg.bucket, cfg.prefix):
        listed.add(obj["Key"])
        parsed = parse_name(obj["Key"].rsplit("/", 1)[1], cfg.timezone)
        if parsed and parsed[0] == target:
            found.append({"key": obj["Key"], "tier": tier, "moment": parsed[2],
                          "local_date": parsed[2].astimezone(zone).date().isoformat(), "size": obj["Size"]})
    proven = [b for b in found if b["key"] + ".json" in listed or b["key"] + ".sha256" in listed]
    return sorted(proven, key=lambda b: (b["moment"], b["key"]))


def _describe(backups: list[dict[str, Any]], limit: int = 8) -> str:
    return ", ".join(b["key"] for b in backups[-limit:]) + (f" (and {len(backups) - limit} older)"
                                                              if len(backups) > limit else "")


def choose_backup(backups: list[dict[str, Any]], *, target: str, backup_date: str | None,
                  backup_key: str | None) -> dict[str, Any]:
    """The one backup the form asked for, or RequestRefused naming what exists."""
    if not backups:
        raise RequestRefused(f"there is no backup of {target!r} in S3 to restore from")
    if backup_key:
        match = [b for b in backups if b["key"] == backup_key or b["key"].rsplit("/", 1)[1] == backup_key]
        if not match:
            raise RequestRefused(f"backup_key {backup_key!r} is not a backup of {target!r} in S3; the newest are: "
                                 f"{_describe(backups)}")
        if backup_date and match[0]["local_date"] != backup_date:
            raise RequestRefused(f"backup_key {backup_key!r} is from {match[0]['local_date']}, not {backup_date}")
        return match[0]
    on_date = [b for b in backups if b["local_date"] == backup_date]
    if not on_date:
        dates = sorted({b["local_date"] for b in backups})
        raise RequestRefused(f"no backup of {target!r} on {backup_date}; backups exist on: "
                             + ", ".join(dates[-14:]) + (f" (and {len(dates) - 14} earlier dates)"
                                                         if len(dates) > 14 else ""))
    if len(on_date) > 1:
        raise RequestRefused(f"{len(on_date)} backups of {target!r} on {backup_date}: choose one as backup_key: "
                             + ", ".join(b["key"] for b in on_date))
    return on_date[0]


def read_manifest(client, cfg: Config, key: str) -> dict[str, Any]:
    """The backup's manifest (``{key}.json``), which must describe that file."""
    manifest_key = key + ".json"
    try:
        raw = client.get_object(Bucket=cfg.bucket, Key=manifest_key)["Body"].read()
    except ClientError as exc:
        raise ManifestError(f"s3://{cfg.bucket}/{manifest_key} cannot be read ({describe_error(exc)}): {key} has no "
                            "usable manifest, so it cannot be proven before a restore") from None
    doc = manifest.loads(raw, source=f"s3://{cfg.bucket}/{manifest_key}")
    if doc["file"] != key.rsplit("/", 1)[1]:
        raise ManifestError(f"s3://{cfg.bucket}/{manifest_key} describes {doc['file']!r}, not {key}")
    return doc


def find_backup(client, cfg: Config, target: str, *, backup_date: str | None, backup_key: str | None) -> dict[str, Any]:
    """``{"key", "tier", "moment", "local_date", "size", "manifest"}`` of the chosen backup (moment as ISO text)."""
    chosen = choose_backup(list_backups(client, cfg, target), target=target, backup_date=backup_date,
                           backup_key=backup_key)
    doc = read_manifest(client, cfg, chosen["key"])
    return {**chosen, "moment": chosen["moment"].isoformat(), "manifest": doc}


def work_dir(local_root: str, run_id: str, target: str) -> str:
    """``{local_root}/.restore/{target}_{run_id}``: this run's download and plaintext, removed at its end."""
    safe = "".join(c if c.isalnum() else "_" for c in run_id)
    return os.path.join(local_root, ".restore", f"{target}_{safe}")


def check_free_space(path: str, needed: int) -> None:
    """The download (and its plaintext) must fit: refused before any transfer."""
    probe = path
    while not os.path.exists(probe):
        probe = os.path.dirname(probe) or "/"
    free = shutil.disk_usage(probe).free
    if free < needed:
        raise RequestRefused(f"{probe} has {free / 2**30:.1f} GiB free, the backup needs about {needed / 2**30:.1f} "
                             "GiB there (download, and its plaintext when encrypted): free space or change local_root")


def fetch_archive(client, cfg: Config, backup: dict[str, Any], dest_dir: str, *, identity: Callable[[], str],
                  timeout: float | None) -> dict[str, Any]:
    """Download the backup into ``dest_dir`` (hash checked against .sha256 and manifest; an encrypted one only
    once the identity is proven to open it), then decrypt it there. ``path``: the archive to restore."""
    doc = backup["manifest"]
    got = fetch.fetch_backup(client, cfg.bucket, backup["key"], doc, dest_dir, identity=identity,
                             identity_conn_id=cfg.encryption.identity_conn_id)
    try:
        path, decrypt_seconds = fetch.decrypt_download(got["path"], doc, identity,
                                                       cfg.encryption.identity_conn_id, timeout=timeout)
    except BaseException:
        fetch.remove_download(got["path"])
        raise
    return {**got, "download_path": got["path"], "path": path, "decrypt_seconds": decrypt_seconds,
            "format": doc.get("format", "custom")}


def remove_files(dest_dir: str) -> dict[str, Any]:
    """Remove this run's download folder (download and plaintext); already gone is fine."""
    existed = os.path.isdir(dest_dir)
    shutil.rmtree(dest_dir, ignore_errors=True)
    return {"removed": dest_dir if existed else None}


def stamp(moment: dt.datetime) -> str:
    """``YYYYmmddHHMMSS`` (UTC) for names of kept databases, safety dumps and schemas."""
    return moment.astimezone(dt.UTC).strftime("%Y%m%d%H%M%S")
