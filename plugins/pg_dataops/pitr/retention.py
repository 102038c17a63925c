"""Retention of base backups and archived WAL: keep the recoverable window, delete what only precedes it.

Airflow-free. :func:`plan_pitr_retention` decides (pure, no I/O, a reason for every base backup and
folder); :func:`apply_pitr_retention` lists S3, checks this worker's clock against S3's, plans, and
deletes (or, in a dry run, reports). It runs as pg_base_backup's last task, only after a successful
backup.

Kept: every base backup whose ``stop_time`` is within ``pitr.window_days`` of now; the newest one that
ended before that (the window's first moments replay from it); and always the newest. Deleted: older
base backups, folders without a manifest.json older than a day (what a failed or killed run left),
and archived WAL segments positioned before the start segment of the oldest kept base backup (so no
kept backup ever loses WAL it needs; ``.history`` files always stay, ``.backup`` and ``.partial`` files
go with their segment).

Refused, nothing deleted (the logical retention's rules): no complete base backup listed, a base
backup dated in the future, this worker's clock off S3's by more than
``retention.max_future_skew_minutes``, the backup just made missing from the listing, or more than
``retention.max_delete_fraction`` of the base backups to go at once (a dry run still reports that plan).
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from pg_dataops.common import s3, wal
from pg_dataops.common.config import Config
from pg_dataops.common.formatting import fmt_time
from pg_dataops.common.guards import RetentionError, RetentionRefused, check_clock, s3_server_time
from pg_dataops.pitr import inventory

log = logging.getLogger(__name__)

KEEP = "keep"
DELETE = "delete"
INCOMPLETE_GRACE = dt.timedelta(days=1)  # a folder without manifest.json younger than this may be a backup running
_BACKUP_FILE_RE = re.compile(r"^([0-9A-F]{24})\.[0-9A-F]{8}\.backup$")
_PARTIAL_RE = re.compile(r"^([0-9A-F]{24})\.partial$")
DELETE_BATCH = 1000  # DeleteObjects takes at most 1,000 keys


@dataclass(frozen=True)
class IncompleteFolder:
    """A backup folder without a readable manifest.json: what a failed or killed run left, or one running."""

    folder: str
    keys: tuple[str, ...]
    last_modified: dt.datetime | None  # the time in its name (backup_id), else its newest object's; None: empty
    has_manifest: bool  # a manifest.json is there but could not be read: kept, for a person to look at


@dataclass(frozen=True)
class BackupDecision:
    backup: inventory.BaseBackup
    action: str
    reason: str


@dataclass(frozen=True)
class FolderDecision:
    folder: IncompleteFolder
    action: str
    reason: str


@dataclass
class PitrRetentionPlan:
    target: str
    now: dt.datetime
    window_start: dt.datetime
    backups: list[BackupDecision]
    folders: list[FolderDecision]
    wal_keep_from: wal.Segment | None  # the oldest kept base backup's start segment
    wal_delete: list[wal.ArchivedWal]
    wal_kept: list[wal.ArchivedWal]
    refusal: str | None = None  # set on a dry run's plan that a real run would refuse
    notes: list[str] = field(default_factory=list)

    @property
    def keep(self) -> list[BackupDecision]:
        return [d for d in self.backups if d.action == KEEP]

    @property
    def delete(self) -> list[BackupDecision]:
        return [d for d in self.backups if d.action == DELETE]

    @property
    def folders_to_delete(self) -> list[FolderDecision]:
        return [d for d in self.folders if d.action == DELETE]


def archived_position(item: wal.ArchivedWal) -> wal.Segment | None:
    """The segment an archived file belongs to: its own, or a ``.backup`` / ``.partial`` file's; None for
    timeline history and anything else (always kept)."""
    if item.segment is not None:
        return item.segment
    m = _BACKUP_FILE_RE.match(item.name) or _PARTIAL_RE.match(item.name)
    return wal.Segment.parse(m.group(1)) if m else None


def plan_pitr_retention(
    target: str,
    backups: Sequence[inventory.BaseBackup],
    incomplete: Sequence[IncompleteFolder],
    archive: Sequence[wal.ArchivedWal],
    now: dt.datetime,
    *,
    window_days: int,
    max_delete_fraction: float,
    max_future_skew: dt.timedelta,
    must_keep: str | None = None,
    dry_run: bool = False,
    where: str = "S3",
) -> PitrRetentionPlan:
    """Decide, with a reason, which base backups, incomplete folders and WAL files go.

    Raises RetentionRefused (nothing to delete) on an empty listing, a backup from the future,
    ``must_keep`` (the backup just made) missing, or too large a fraction (a dry run reports that plan
    with ``refusal`` set instead).
    """
    if now.tzinfo is None:
        raise ValueError("plan_pitr_retention needs a timezone-aware now")
    if not backups:
        raise RetentionRefused(
            f"PITR retention refused: no complete base backup of {target} listed in {where}; an empty listing means "
            "a wrong bucket, prefix or target, or a listing that failed, not that there is nothing to keep")
    ordered = sorted(backups, key=lambda b: (b.stop_time, b.backup_id))
    future = [b for b in ordered if b.stop_time > now + max_future_skew]
    if future:
        raise RetentionRefused(
            f"PITR retention refused: base backup {future[-1].backup_id} of {target} ended at "
            f"{fmt_time(future[-1].stop_time, 'UTC')}, more than {max_future_skew} after now "
            f"({fmt_time(now, 'UTC')}); this clock or the database server's is wrong")
    if must_keep is not None and must_keep not in {b.backup_id for b in ordered}:
        raise RetentionRefused(
            f"PITR retention refused: the base backup just made, {must_keep}, is not among the {len(ordered)} "
            f"listed in {where}; the listing is not to be trusted")

    window_start = now - dt.timedelta(days=window_days)
    before = [b for b in ordered if b.stop_time < window_start]
    covering = before[-1] if before else None
    decisions = []
    for b in ordered:
        if b is ordered[-1]:
            decisions.append(BackupDecision(b, KEEP, "the newest base backup"))
        elif b.stop_time >= window_start:
            decisions.append(BackupDecision(b, KEEP, f"ended within the {window_days}-day window"))
        elif b is covering:
            decisions.append(BackupDecision(b, KEEP, "the newest that ended before the window: the window's "
                                                     "first moments replay from it"))
        else:
            decisions.append(BackupDecision(b, DELETE, f"ended before the {window_days}-day window, and a newer "
                                                       f"one ({covering.backup_id}) covers its start"))
    kept = [d.backup for d in decisions if d.action == KEEP]
    keep_from = min(b.start_segment for b in kept)
    wal_delete, wal_kept = [], []
    for item in archive:
        pos = archived_position(item)
        (wal_delete if pos is not None and pos.segno < keep_from.segno else wal_kept).append(item)
    _check_kept_backups_keep_their_wal(kept, wal_delete)

    folders = [_decide_folder(f, now) for f in sorted(incomplete, key=lambda f: f.folder)]
    plan = PitrRetentionPlan(target, now, window_start, decisions, folders, keep_from, wal_delete, wal_kept)
    deleting = len(plan.delete)
    if deleting and deleting / len(ordered) > max_delete_fraction:
        plan.refusal = (
            f"PITR retention refused: it would delete {deleting} of {len(ordered)} base backups of {target} "
            f"({deleting / len(ordered):.0%}), more than retention.max_delete_fraction ({max_delete_fraction:g}); "
            "read a dry run's report, then raise it for one run if that is right")
        if not dry_run:
            raise RetentionRefused(plan.refusal)
    return plan


def _check_kept_backups_keep_their_wal(kept: Sequence[inventory.BaseBackup],
                                       wal_delete: Sequence[wal.ArchivedWal]) -> None:
    """Never WAL a kept base backup needs: from its start segment on (its own range and everything after)."""
    for item in wal_delete:
        pos = archived_position(item)
        for b in kept:
            if pos is not None and pos.segno >= b.start_segment.segno:
                raise RetentionError(f"PITR retention would delete {item.key}, which base backup {b.backup_id} "
                                     f"needs (from {b.start_segment.name()}): refusing")


def _decide_folder(f: IncompleteFolder, now: dt.datetime) -> FolderDecision:
    if f.has_manifest:
        return FolderDecision(f, KEEP, "its manifest.json cannot be read: kept for a person to look at")
    if not f.keys:
        return FolderDecision(f, KEEP, "empty")
    if f.last_modified is not None and now - f.last_modified < INCOMPLETE_GRACE:
        return FolderDecision(f, KEEP, "incomplete (no manifest.json) but written in the last day: maybe a "
                                       "backup still running")
    return FolderDecision(f, DELETE, "incomplete (no manifest.json): left by a failed or killed run")


# --- S3 --------------------------------------------------------------------------------------------


def list_incomplete(client, cfg: Config, folders: Sequence[str]) -> list[IncompleteFolder]:
    out = []
    for folder in folders:
        keys, newest = [], None
        try:
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=cfg.bucket, Prefix=folder):
                for obj in page.get("Contents", []):
                    keys.append(obj["Key"])
                    newest = max(newest, obj["LastModified"]) if newest else obj["LastModified"]
        except (ClientError, BotoCoreError) as exc:
            raise RetentionError(f"cannot list s3://{cfg.bucket}/{folder}: {s3.describe_error(exc)}") from None
        # Dated by its name (the backup's start, the server's clock) like every backup here, not by S3's
        # LastModified; a folder with another name by its newest object.
        named = inventory.parse_backup_id(folder.rstrip("/").rsplit("/", 1)[-1])
        written = named[1] if named else newest
        out.append(IncompleteFolder(folder, tuple(keys), written, folder + inventory.MANIFEST in keys))
    return out


def _folder_keys(client, bucket: str, folder: str) -> list[str]:
    keys = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=folder):
        keys += [o["Key"] for o in page.get("Contents", [])]
    # manifest.json first: a backup half deleted is then an incomplete folder, never a listed backup
    # whose archive is gone.
    return sorted(keys, key=lambda k: (not k.endswith("/" + inventory.MANIFEST), k))


def delete_keys(client, bucket: str, keys: Sequence[str]) -> list[str]:
    """DeleteObjects in batches; RetentionError naming the first key S3 did not delete."""
    done: list[str] = []
    for i in range(0, len(keys), DELETE_BATCH):
        batch = list(keys[i:i + DELETE_BATCH])
        try:
            resp = client.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in batch],
                                                                 "Quiet": False})
        except (ClientError, BotoCoreError) as exc:
            raise RetentionError(f"deleting from s3://{bucket} failed after {len(done)} objects: "
                                 f"{s3.describe_error(exc)}") from None
        deleted = {o["Key"] for o in resp.get("Deleted", [])}
        done += [k for k in batch if k in deleted]
        missing = [k for k in batch if k not in deleted]
        if missing or resp.get("Errors"):
            errors = "; ".join(f"{e.get('Key')}: {e.get('Code')}" for e in resp.get("Errors", [])[:5])
            raise RetentionError(f"s3://{bucket}: {len(missing)} object(s) not deleted (e.g. {missing[:1]}) "
                                 f"{errors}".strip())
    return done


def apply_pitr_retention(cfg: Config, client, target: str, *, dry_run: bool, must_keep: str | None = None,
                         now: dt.datetime | None = None) -> dict[str, Any]:
    """List, check the clock, plan and delete (or report) for one target; returns the summary for XCom.

    ``now`` is for tests; a run measures from this worker's clock once it agrees with S3's."""
    if not isinstance(dry_run, bool):
        raise RetentionError(f"dry_run must be true or false, got {dry_run!r}")
    skew = dt.timedelta(minutes=cfg.retention.max_future_skew_minutes)
    server_time = s3_server_time(client, cfg.bucket)
    measured_now = now or dt.datetime.now(dt.UTC)
    try:
        check_clock(measured_now, server_time, skew, server=f"S3 at {client.meta.endpoint_url}")
    except RetentionRefused as exc:
        raise RetentionRefused(f"PITR {exc}; nothing was deleted") from None
    listing = inventory.list_base_backups(client, cfg, target)
    try:
        archive = wal.list_archive(client, cfg.bucket, wal.archive_prefix(cfg, target))
    except (ClientError, BotoCoreError) as exc:
        raise RetentionError(f"cannot list the WAL archive s3://{cfg.bucket}/{wal.archive_prefix(cfg, target)}: "
                             f"{s3.describe_error(exc)}") from None
    incomplete = list_incomplete(client, cfg, listing.incomplete)
    where = f"s3://{cfg.bucket}/{wal.base_backup_prefix(cfg, target)}"
    plan = plan_pitr_retention(
        target, listing.backups, incomplete, archive, measured_now, window_days=cfg.pitr.window_days,
        max_delete_fraction=cfg.retention.max_delete_fraction, max_future_skew=skew, must_keep=must_keep,
        dry_run=dry_run, where=where)
    for problem in listing.problems:
        log.warning("PITR retention: %s (kept)", problem)
    log.info("%s", format_plan(plan, dry_run, cfg.timezone))

    deleted_backups, deleted_folders, deleted_wal = [], [], []
    if not dry_run:
        for d in plan.delete:
            delete_keys(client, cfg.bucket, _folder_keys(client, cfg.bucket, d.backup.folder))
            deleted_backups.append(d.backup.backup_id)
        for d in plan.folders_to_delete:
            delete_keys(client, cfg.bucket, list(d.folder.keys))
            deleted_folders.append(d.folder.folder)
        # WAL last: should a backup deletion fail above, no WAL of it is gone yet.
        deleted_wal = delete_keys(client, cfg.bucket, [w.key for w in plan.wal_delete])
    return summarize(plan, dry_run, server_time, deleted_backups, deleted_folders, deleted_wal)


def summarize(plan: PitrRetentionPlan, dry_run: bool, server_time: dt.datetime, deleted_backups: list[str],
              deleted_folders: list[str], deleted_wal: list[str]) -> dict[str, Any]:
    segments = [w for w in plan.wal_delete if w.segment is not None]
    return {
        "target": plan.target,
        "dry_run": dry_run,
        "now": plan.now.isoformat(),
        "s3_server_time": server_time.isoformat(),
        "window_start": plan.window_start.isoformat(),
        "kept": {d.backup.backup_id: d.reason for d in plan.keep},
        "delete": {d.backup.backup_id: d.reason for d in plan.delete},
        "incomplete": {d.folder.folder: f"{d.action}: {d.reason}" for d in plan.folders},
        "wal_keep_from": plan.wal_keep_from.name() if plan.wal_keep_from else None,
        "wal_delete_count": len(plan.wal_delete),
        "wal_delete_bytes": sum(w.size for w in plan.wal_delete),
        "wal_delete_range": [segments[0].name, segments[-1].name] if segments else None,
        "wal_kept_count": len(plan.wal_kept),
        "deleted_backups": deleted_backups,
        "deleted_folders": deleted_folders,
        "deleted_wal_count": len(deleted_wal),
        "refusal": plan.refusal,
    }


def format_plan(plan: PitrRetentionPlan, dry_run: bool, timezone: str = "UTC") -> str:
    """The report in the task log: one line per base backup and folder, then the WAL."""
    head = "DRY RUN: nothing is deleted. " if dry_run else ""
    lines = [f"{head}PITR retention of {plan.target} at {fmt_time(plan.now, timezone)}: window from "
             f"{fmt_time(plan.window_start, timezone)}"]
    for d in plan.backups:
        lines.append(f"  {d.action.upper():6} {d.backup.backup_id} (ended "
                     f"{fmt_time(d.backup.stop_time, timezone, seconds=True)}, "
                     f"WAL from {d.backup.start_segment.name()}): {d.reason}")
    for f in plan.folders:
        lines.append(f"  {f.action.upper():6} {f.folder.folder} ({len(f.folder.keys)} objects): {f.reason}")
    keep_from = plan.wal_keep_from.name() if plan.wal_keep_from else "-"
    lines.append(f"  WAL: {len(plan.wal_delete)} file(s) before {keep_from} to delete "
                 f"({sum(w.size for w in plan.wal_delete) / 1e6:.1f} MB), {len(plan.wal_kept)} kept")
    if plan.refusal:
        lines.append(f"  a real run would be refused: {plan.refusal}")
    return "\n".join(lines)


def slack_line(summary: dict[str, Any]) -> str:
    """One line for the base backup's Slack post."""
    verb = "would prune" if summary["dry_run"] else "pruned"
    gone = summary["delete"] if summary["dry_run"] else summary["deleted_backups"]
    wal_count = summary["wal_delete_count"] if summary["dry_run"] else summary["deleted_wal_count"]
    folders = [k for k, v in summary["incomplete"].items() if v.startswith(DELETE)]
    extra = f", {len(folders)} incomplete folder(s)" if folders else ""
    refused = f" (a real run would be refused: {summary['refusal']})" if summary.get("refusal") else ""
    return (f"retention: kept {len(summary['kept'])} base backup(s), {verb} {len(gone)} base backup(s){extra} and "
            f"{wal_count} WAL file(s) before {summary['wal_keep_from']}{refused}")
