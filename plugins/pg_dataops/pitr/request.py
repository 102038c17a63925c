"""A point-in-time recovery request checked before anything starts: the plan every later step follows.

Airflow-free. :func:`parse_request` checks the form's values alone (no I/O); :func:`plan_recovery` checks
them against what exists: the recoverable window in S3 (a target before the oldest base backup's end or
after the newest archived WAL is refused, naming the window), the base backup (the newest that ended at
or before the target, or the one asked for), the WAL from that backup's start to the first segment
archived after the target (a gap is refused, naming the missing segments), the age identity of an
encrypted backup, the server binaries and tools on the worker, its free disk, and the target server (the
new database must not exist there). A refusal raises :class:`RecoveryRefused` before any work, so nothing
is created, downloaded or changed.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pg_dataops.common import wal
from pg_dataops.common.config import Config
from pg_dataops.common.errors import PermanentError
from pg_dataops.common.formatting import fmt_bytes, fmt_instant
from pg_dataops.pitr import inventory, scratch
from pg_dataops.pitr.recover import TARGET_ACTIONS

DATABASE_NAME_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
TIME_FORMAT_HINT = "ISO 8601 with a time zone, e.g. 2026-12-01T14:29:59+09:00 or 2026-12-01 05:29:59Z"
# Disk the scratch copy needs beyond the unpacked backup: the replayed WAL's segments and the spool.
DISK_MARGIN = 1.2


class RecoveryRefused(PermanentError):
    """The request cannot be carried out as asked; nothing was started. The message says why and what exists."""


@dataclass(frozen=True)
class RecoveryRequest:
    """The form's values, checked for shape (see :func:`parse_request`)."""

    target: str
    target_time: dt.datetime  # aware
    base_backup: str | None
    target_action: str
    database_name: str
    swap: bool
    confirm: str

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["target_time"] = self.target_time.astimezone(dt.UTC).isoformat()
        return d


def parse_target_time(value: Any) -> dt.datetime:
    """An aware datetime from the form's text; a naive or malformed one is refused, naming the format."""
    if isinstance(value, dt.datetime):
        moment = value
    else:
        text = str(value or "").strip()
        if not text:
            raise RecoveryRefused(f"target_time is empty: give the moment to recover to, {TIME_FORMAT_HINT}")
        try:
            moment = dt.datetime.fromisoformat(text.replace(" Z", "Z"))
        except ValueError:
            raise RecoveryRefused(f"target_time {text!r} is not a date-time: write it as {TIME_FORMAT_HINT}") from None
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise RecoveryRefused(f"target_time {value!r} has no time zone, so it could mean several moments: write it "
                              f"as {TIME_FORMAT_HINT}")
    return moment


def _flag(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off", "", "none"):
        return False
    raise RecoveryRefused(f"{name} must be true or false, got {value!r}")


def resolve_target(cfg: Config, value: Any) -> str:
    """The PITR target asked for, default the first one; an unknown one is refused, naming the ones there are."""
    targets = [t.name for t in cfg.pitr_targets]
    target = str(value or "").strip() or (targets[0] if targets else "")
    if target not in targets:
        raise RecoveryRefused(f"target {target!r} has no WAL archiving configured (PITR targets: "
                              f"{', '.join(targets) or 'none'})")
    return target


def parse_request(cfg: Config, params: Mapping[str, Any]) -> RecoveryRequest:
    """The form's values checked for shape, before any I/O: the target, the time (with a zone), the action,
    the new database's name (lower-case, not the target's own), ``swap`` and ``confirm``."""
    target = resolve_target(cfg, params.get("target"))
    moment = parse_target_time(params.get("target_time"))
    action = str(params.get("target_action") or "promote").strip()
    if action not in TARGET_ACTIONS:
        raise RecoveryRefused(f"target_action must be one of {', '.join(TARGET_ACTIONS)}, got {action!r}")
    name = str(params.get("database_name") or "").strip() or cfg.pitr.recovery_database
    if not DATABASE_NAME_RE.match(name):
        raise RecoveryRefused(f"database_name {name!r} must be 1 to 63 lower-case letters, digits and '_', not "
                              "starting with a digit")
    base = str(params.get("base_backup") or "").strip() or None
    return RecoveryRequest(target=target, target_time=moment, base_backup=base, target_action=action,
                           database_name=name, swap=_flag("swap", params.get("swap", False)),
                           confirm=str(params.get("confirm") or "").strip())


when = fmt_instant  # '2026-12-01 14:29:41 KST (2026-12-01T05:29:41Z)': the configured zone to read, UTC to paste


def describe_window(window: inventory.Window, timezone: str) -> str:
    """The recoverable window as the validate log, the refusals and the Slack report state it."""
    if not window.backups:
        return f"{window.target}: no base backup yet, nothing to recover to (run pg_base_backup)"
    newest = window.newest_segment
    if window.end is None or window.end < window.start:
        return (f"{window.target}: base backups from {when(window.start, timezone)}, but no WAL archived after the "
                "newest one yet")
    return (f"{window.target}: {when(window.start, timezone)} .. {when(window.end, timezone)} "
            f"({len(window.backups)} base backup{'s' if len(window.backups) != 1 else ''}, oldest "
            f"{window.backups[0].backup_id}, newest {window.backups[-1].backup_id}; newest WAL segment "
            f"{newest.name if newest else 'none'})")


def choose_base_backup(window: inventory.Window, moment: dt.datetime, asked: str | None,
                       timezone: str) -> inventory.BaseBackup:
    """The base backup to start from: the one asked for (it must exist and have ended at or before the
    target), else the newest that ended at or before the target (the shortest replay)."""
    if asked is None:
        base = window.base_for(moment)
        if base is None:  # the window check ran first; this is the belt to its braces
            raise RecoveryRefused(f"no base backup of {window.target} ended at or before {when(moment, timezone)}")
        return base
    known = {b.backup_id: b for b in window.backups}
    fitting = [b.backup_id for b in window.backups if b.stop_time <= moment]
    if asked not in known:
        raise RecoveryRefused(f"base_backup {asked!r} is not a complete base backup of {window.target} in S3; the "
                              f"ones that exist: {', '.join(known) or 'none'}")
    base = known[asked]
    if base.stop_time > moment:
        raise RecoveryRefused(f"base_backup {asked} ended at {when(base.stop_time, timezone)}, after the target "
                              f"{when(moment, timezone)}: a base backup can only be rolled forward; ones that ended "
                              f"before the target: {', '.join(fitting) or 'none'}")
    return base


def wal_end_segment(window: inventory.Window, moment: dt.datetime) -> wal.Segment | None:
    """The first segment archived after ``moment`` (by upload time): the WAL recovery must reach. None when
    nothing was archived after it."""
    after = [w.segment for w in wal.segments(window.archive) if w.last_modified >= moment]
    return min(after) if after else None


def check_wal(window: inventory.Window, base: inventory.BaseBackup, moment: dt.datetime) -> wal.Segment:
    """The WAL from the base backup's start segment to the first one archived after the target must all be
    in S3; a gap is refused, naming the missing segments. Returns that last segment."""
    end = wal_end_segment(window, moment)
    if end is None:
        raise RecoveryRefused(f"no WAL of {window.target} was archived after the target: the archive ends before it")
    end = max(end, base.stop_segment)
    present = [w.segment for w in wal.segments(window.archive)]
    gaps = wal.find_gaps(present, base.start_segment, end)
    if gaps:
        names = "; ".join(g.describe() for g in gaps[:5]) + ("; ..." if len(gaps) > 5 else "")
        raise RecoveryRefused(
            f"WAL needed to replay base backup {base.backup_id} to the target is missing from "
            f"s3://.../{window.target}/wals/: {names} (needed: {base.start_segment.name()} .. {end.name()}); "
            "recovery would stop there. Choose a target before the gap, or a base backup after it")
    return end


def check_worker(cfg: Config, base: inventory.BaseBackup) -> dict[str, Any]:
    """The worker can do it: the server binaries of the backup's major version, zstd and tar, the Barman
    restore tool, and free disk under ``pitr.scratch_root`` for the unpacked copy."""
    bin_dir = scratch.server_bin_dir(cfg.pg_bin_root, int(base.doc["server_version_num"]))
    for name, package in (("zstd", "zstd"), ("tar", "tar")):
        if shutil.which(name) is None:
            raise RecoveryRefused(f"{name} is not installed on the worker: apt-get install {package}")
    tool = f"{cfg.pitr.wal_tools_bin}/barman-cloud-wal-restore"
    if not os.access(tool, os.X_OK):
        raise RecoveryRefused(f"{tool} is missing: restore_command needs Barman's cloud tools on the worker "
                              "(scripts/install-wal-tools.sh; pitr.wal_tools_bin)")
    archive = base.doc.get("archive") or {}
    need = int(archive.get("tar_size") or base.doc.get("database_size") or archive.get("size") or 0)
    existing = Path(cfg.pitr.scratch_root)
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    free = shutil.disk_usage(existing).free
    if need and free < need * DISK_MARGIN:
        from pg_dataops.common.errors import DiskFull

        raise DiskFull(f"the worker has {fmt_bytes(free)} free under {cfg.pitr.scratch_root} (pitr.scratch_root), "
                       f"the unpacked base backup {base.backup_id} needs about {fmt_bytes(need * DISK_MARGIN)}")
    return {"bin_dir": bin_dir, "free_bytes": free, "need_bytes": need}


def old_database_name(production: str, moment: dt.datetime, timezone: str) -> str:
    """``{production}_before_pitr_{YYYYmmdd_HHMMSS}`` (in the configured zone), within 63 bytes."""
    import zoneinfo

    suffix = f"_before_pitr_{moment.astimezone(zoneinfo.ZoneInfo(timezone)):%Y%m%d_%H%M%S}"
    return production[: 63 - len(suffix)] + suffix


def plan_recovery(cfg: Config, request: RecoveryRequest, *, window: inventory.Window, source_database: str,
                  database_exists: Callable[[str], bool], identity: Callable[[], str], run_id: str,
                  conn_id: str) -> dict[str, Any]:
    """Check the request against S3, the worker and the target server; the plan (JSON-ready) or a refusal.

    ``source_database``: the target's database (the one recovered, and replaced by a swap);
    ``database_exists(name)``: asks the target server; ``identity``: reads the age key, called only for an
    encrypted backup (it is proven here and never returned).
    """
    tz = cfg.timezone
    moment = request.target_time
    window_text = describe_window(window, tz)
    if not window.backups or window.end is None or window.end < window.start:
        raise RecoveryRefused(f"nothing to recover to yet: {window_text}")
    if moment < window.start:
        raise RecoveryRefused(
            f"target_time {when(moment, tz)} is before the recoverable window {window_text}: the oldest base backup, "
            f"{window.backups[0].backup_id}, became consistent at {when(window.start, tz)}")
    if moment > window.end:
        raise RecoveryRefused(
            f"target_time {when(moment, tz)} is after the recoverable window {window_text}: the newest archived WAL "
            f"was uploaded at {when(window.end, tz)}, and later commits are not in S3 yet (an idle server ships a "
            f"segment every archive_timeout, {cfg.pitr.archive_timeout_seconds} s; retry in a minute)")
    base = choose_base_backup(window, moment, request.base_backup, tz)
    end = check_wal(window, base, moment)
    worker = check_worker(cfg, base)
    if request.database_name == source_database:
        raise RecoveryRefused(f"database_name {request.database_name!r} is the target's own database: the recovered "
                              "copy goes into a new database next to it (swap=true renames them afterwards)")
    if database_exists(request.database_name):
        raise RecoveryRefused(f"database {request.database_name!r} already exists on the target server of "
                              f"{request.target}: choose another database_name (or drop it first if it is an old "
                              "recovery)")
    source_exists = database_exists(source_database)
    if request.swap and request.confirm and request.confirm != source_database:
        raise RecoveryRefused(f"confirm {request.confirm!r} does not match the database the swap replaces, "
                              f"{source_database!r}: leave confirm empty to approve in the Airflow UI, or type "
                              "that name to approve in advance")
    identity_proven = scratch.prove_identity(base.doc, identity, cfg.encryption.identity_conn_id) is not None
    layout = scratch.layout_for(cfg.pitr.scratch_root, run_id, request.target)
    root = Path(cfg.pitr.scratch_root)
    # Folders of runs that were killed before their teardown (or of a drill running now): named, never removed here.
    others = sorted(str(p) for p in root.iterdir() if p != layout.root) if root.is_dir() else []
    return {
        **request.to_dict(),
        "conn_id": conn_id,
        "source_database": source_database,
        "source_exists": source_exists,
        "target_time_text": when(moment, tz),
        "window": {"start": window.start.astimezone(dt.UTC).isoformat(),
                   "end": window.end.astimezone(dt.UTC).isoformat(), "text": window_text},
        "base_backup": base.backup_id,
        "base_backup_doc": base.doc,
        "base_backup_stop_time": base.stop_time.astimezone(dt.UTC).isoformat(),
        "wal_needed": {"from": base.start_segment.name(), "to": end.name()},
        "encrypted": identity_proven,
        "bin_dir": worker["bin_dir"],
        "scratch": layout.to_dict(),
        "scratch_others": others,
        "run_id": run_id,
    }
