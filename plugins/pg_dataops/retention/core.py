"""Grandfather-father-son retention of backups in S3 and in the local tree. Airflow-free.

A backup is three parts (the dump, its ``.sha256`` and its ``.json`` manifest) that are kept or
deleted together. Age comes from the backup's own timestamp: the manifest's ``timestamp``, else the
time in the file name (local time in the config time zone); never S3's LastModified or a file's
mtime, which a copy, a restore or a re-upload resets. A manifest timestamp more than a day from the
time in its file name is a contradiction: that backup is kept and flagged, not guessed at.

:func:`plan_retention` is pure: it decides and gives a reason for every backup, and refuses
(:class:`RetentionRefused`, nothing deleted) when the listing looks wrong. Only the targets it is
given are judged; other targets' backups (a removed target, another deployment sharing the prefix)
are kept as "not ours". :func:`check_clock` and :func:`check_recent_backups` are the run-wide
guards (this clock against S3's, and a pipeline that stopped producing verified backups).
``list_*`` build the input and ``apply_*`` carry a plan out. Anything it cannot read with certainty
is kept and reported.
"""

from __future__ import annotations

import calendar
import datetime as dt
import email.utils
import json
import logging
import os
import posixpath
import re
import zoneinfo
from collections import defaultdict
from collections.abc import Collection
from dataclasses import asdict, dataclass, field

from botocore.exceptions import BotoCoreError, ClientError

from pg_dataops.common import s3
from pg_dataops.common.config import Retention
from pg_dataops.common.errors import BackupError
from pg_dataops.common.formatting import fmt_time
from pg_dataops.common.naming import TIERS, parse_name, parse_timestamp
from pg_dataops.common.s3 import describe_error

log = logging.getLogger(__name__)

KEEP = "keep"
DELETE = "delete"
PARTS = ("data", "checksum", "manifest")  # also the order of deletion: the manifest goes last
_SUFFIX = {"checksum": ".sha256", "manifest": ".json"}
# A scheduled run names its file from the logical date and snapshots seconds later; a day apart is
# no longer the same moment (a run cleared weeks late, a hand-edited manifest, a wrong clock).
MAX_NAME_SKEW = dt.timedelta(days=1)


class RetentionError(BackupError):
    """Retention could not list or delete backups; the message says where and why."""


class RetentionRefused(RetentionError):
    """The listing looks wrong, so nothing is deleted. ``plan`` is set when a plan was made."""

    def __init__(self, message: str, plan: RetentionPlan | None = None):
        super().__init__(message)
        self.plan = plan


class RetentionDeleteFailed(RetentionError):
    """A delete failed part-way; ``result`` holds exactly what was deleted before it."""

    def __init__(self, message: str, result: ApplyResult):
        super().__init__(message)
        self.result = result


@dataclass(frozen=True)
class BackupItem:
    """One backup as listed: its identity, its own timestamp and where its parts are."""

    target: str
    tier: str
    file: str  # the dump's file name, e.g. glimpse_daily_20261125_020000.dump
    timestamp: dt.datetime | None  # aware UTC; None only if nothing gave a time
    timestamp_source: str  # "manifest", or "file name" with why the manifest gave none
    verified: bool  # the manifest says a restore test passed
    data: str | None  # S3 key or local path of the dump; None if missing
    checksum: str | None  # ... of the .sha256
    manifest: str | None  # ... of the .json
    location: str = ""  # s3://bucket/prefix or local_root, for messages
    display: str = ""  # relative to location: daily/glimpse_daily_... or daily/2026/11/glimpse_daily_...
    problem: str | None = None  # why it must be kept and looked at (unreadable or inconsistent manifest)
    # The manifest's timestamp is more than MAX_NAME_SKEW from its file name's: which one dates it is
    # unknown, so retention keeps it; its manifest still says when the pipeline took it.
    time_conflict: str | None = None

    @property
    def missing(self) -> list[str]:
        """Absent parts: ['.json'] for a dump whose manifest was never written, ['dump'] for lone sidecars."""
        names = {"data": "dump", **_SUFFIX}
        return [names[p] for p in PARTS if getattr(self, p) is None]

    @property
    def complete(self) -> bool:
        return not self.missing

    @property
    def paths(self) -> list[str]:
        """Present parts in deletion order (dump, .sha256, .json)."""
        return [p for p in (self.data, self.checksum, self.manifest) if p is not None]


@dataclass(frozen=True)
class Decision:
    item: BackupItem
    action: str  # KEEP or DELETE
    reason: str
    attention: bool = False  # kept because it could not be judged: an operator should look
    not_ours: bool = False  # another target's backup: kept, not judged


@dataclass(frozen=True)
class RetentionPlan:
    now: dt.datetime  # in the calendar's time zone
    policy: Retention
    cutoffs: dict[str, dt.datetime]  # tier -> backups at or before it are out of their window
    decisions: tuple[Decision, ...]
    source: str = ""
    targets: tuple[str, ...] | None = None  # the targets judged; None: every target found

    @property
    def keep(self) -> list[Decision]:
        return [d for d in self.decisions if d.action == KEEP]

    @property
    def not_ours(self) -> list[Decision]:
        return [d for d in self.decisions if d.not_ours]

    @property
    def delete(self) -> list[Decision]:
        return [d for d in self.decisions if d.action == DELETE]

    @property
    def attention(self) -> list[Decision]:
        return [d for d in self.decisions if d.attention]

    @property
    def judged(self) -> list[Decision]:
        """The decisions about the plan's own targets (what max_delete_fraction is measured against)."""
        return [d for d in self.decisions if not d.not_ours]


@dataclass
class ApplyResult:
    dry_run: bool
    deleted: dict[str, list[str]] = field(default_factory=dict)  # item.display -> keys/paths removed
    would_delete: dict[str, list[str]] = field(default_factory=dict)  # dry run: what a real run removes
    already_gone: list[str] = field(default_factory=list)  # local parts that vanished before we got there
    removed_dirs: list[str] = field(default_factory=list)
    error: str | None = None  # why it stopped, when it did

    @property
    def deleted_paths(self) -> list[str]:
        return [p for parts in self.deleted.values() for p in parts]

    def to_dict(self) -> dict:
        """JSON-safe, for XCom."""
        return asdict(self)


# --- names and manifests --------------------------------------------------------------------------


def _split_part(name: str) -> tuple[str, str]:
    """('checksum', 'x.dump') for 'x.dump.sha256'; ('data', name) for anything without a sidecar suffix."""
    for part, suffix in _SUFFIX.items():
        if name.endswith(suffix):
            return part, name[: -len(suffix)]
    return "data", name


def _build_item(
    *, tier: str, base: str, parts: dict[str, str], manifest_text: bytes | None, manifest_error: str | None,
    timezone: str, location: str, strip: str,
) -> BackupItem:
    target, name_tier, name_time = parse_name(base, timezone)  # callers only group names that parse
    problems = []
    if name_tier != tier:
        problems.append(f"its name says {name_tier} but it is under {tier}/")
    timestamp, source, verified, time_conflict = name_time, "file name", False, None
    if "manifest" in parts:
        doc = None
        if manifest_error:
            problems.append(f"manifest unreadable: {manifest_error}")
        else:
            try:
                # strict=False: the runbook's hand-built manifests carry psql's raw newline in db_version.
                doc = json.loads(manifest_text, strict=False)
            except (ValueError, UnicodeDecodeError) as exc:
                problems.append(f"manifest is not valid JSON ({exc})")
            else:
                if not isinstance(doc, dict):
                    problems.append("manifest is not a JSON object")
                    doc = None
        if doc is not None:
            for key, expected in (("file", base), ("type", tier), ("target", target)):
                if key in doc and doc[key] != expected:
                    problems.append(f"manifest says {key} {doc[key]!r}, not {expected!r}")
            from_manifest = parse_timestamp(doc.get("timestamp"))
            if from_manifest is not None:
                timestamp, source = from_manifest, "manifest"
                if abs(from_manifest - name_time) > MAX_NAME_SKEW:
                    days = (from_manifest - name_time).total_seconds() / 86400
                    time_conflict = (
                        f"manifest timestamp {from_manifest:%Y-%m-%d %H:%M} UTC is {abs(days):.1f} days "
                        f"{'after' if days > 0 else 'before'} the time in its file name "
                        f"({name_time:%Y-%m-%d %H:%M} UTC)"
                    )
            elif "timestamp" in doc:
                source = f"file name (manifest timestamp {doc['timestamp']!r} is not ISO-8601 with a zone)"
            else:
                source = "file name (manifest has no timestamp)"
            verified = doc.get("verified") is True
    return BackupItem(
        target=target, tier=tier, file=base, timestamp=timestamp, timestamp_source=source, verified=verified,
        data=parts.get("data"), checksum=parts.get("checksum"), manifest=parts.get("manifest"),
        location=location, display=posixpath.dirname(next(iter(parts.values())))[len(strip):] + "/" + base,
        problem="; ".join(problems) or None, time_conflict=time_conflict,
    )


# --- the planner ----------------------------------------------------------------------------------


def months_before(moment: dt.datetime, months: int) -> dt.datetime:
    """The same wall-clock time ``months`` calendar months earlier; the 31st becomes the month's last day."""
    index = moment.year * 12 + moment.month - 1 - months
    year, month = divmod(index, 12)
    month += 1
    return moment.replace(year=year, month=month, day=min(moment.day, calendar.monthrange(year, month)[1]))


def cutoffs_for(now: dt.datetime, policy: Retention) -> dict[str, dt.datetime]:
    """Per tier, the moment a backup must be after to be in its window.

    Wall-clock arithmetic in ``now``'s zone, so a 02:00 backup stays a 02:00 backup across DST.
    """
    return {
        "daily": now - dt.timedelta(days=policy.daily_days),
        "weekly": now - dt.timedelta(weeks=policy.weekly_weeks),
        "monthly": months_before(now, policy.monthly_months),
    }


_WINDOW = {"daily": ("daily_days", "days"), "weekly": ("weekly_weeks", "weeks"), "monthly": ("monthly_months", "months")}


def _window(policy: Retention, tier: str) -> str:
    attr, unit = _WINDOW[tier]
    return f"{getattr(policy, attr)} {unit}"


def plan_retention(
    backups: list[BackupItem],
    now: dt.datetime,
    policy: Retention,
    *,
    max_delete_fraction: float,
    max_future_skew: dt.timedelta,
    timezone: str | None = None,
    source: str = "",
    targets: Collection[str] | None = None,
) -> RetentionPlan:
    """Decide, with a reason, which backups to keep and which to delete.

    ``timezone`` is the calendar of the windows (the config's; default: ``now``'s own zone).
    ``targets``: only these targets' backups are judged; every other backup is kept as "not ours"
    (None: every target found). Raises RetentionRefused, deleting nothing, when no backup of the
    targets is listed, one of them is dated more than ``max_future_skew`` after ``now``, or more
    than ``max_delete_fraction`` of them would go at once.
    """
    if now.tzinfo is None:
        raise ValueError("plan_retention needs a timezone-aware now")
    if not 0.0 <= max_delete_fraction <= 1.0:
        raise ValueError(f"max_delete_fraction: {max_delete_fraction} is outside 0..1")
    if max_future_skew < dt.timedelta(0):
        raise ValueError(f"max_future_skew: {max_future_skew} is negative")
    if targets is not None and not targets:
        raise ValueError("targets: an empty list would judge nothing; pass None for every target")
    tz = zoneinfo.ZoneInfo(timezone) if timezone else now.tzinfo
    now = now.astimezone(tz)
    where = source or (backups[0].location if backups else "the listing")
    scope = tuple(sorted(set(targets))) if targets is not None else None
    ours = [b for b in backups if scope is None or b.target in scope]
    others = [b for b in backups if scope is not None and b.target not in scope]

    if not ours:
        whose = f" for target(s) {', '.join(scope)}" if scope else ""
        besides = (f" (only {len(others)} backup(s) of other targets: {', '.join(sorted({b.target for b in others}))})"
                   if others else "")
        raise RetentionRefused(
            f"retention refused: no backups found in {where}{whose}{besides}; an empty listing means a wrong bucket, "
            "prefix, local_root or target name, or a listing that failed, not that there is nothing to keep"
        )
    latest_ok = now + max_future_skew
    future = sorted((b for b in ours if b.timestamp and b.timestamp > latest_ok), key=lambda b: b.timestamp)
    if future:
        worst = future[-1]
        raise RetentionRefused(
            f"retention refused: {len(future)} backup(s) in {where} are dated more than {max_future_skew} after "
            f"now ({fmt_time(now, tz)}), e.g. {worst.display} at {fmt_time(worst.timestamp, tz)} "
            f"(from its {worst.timestamp_source}); this clock, the backup host's clock or the time zone is wrong"
        )

    cutoffs = cutoffs_for(now, policy)
    # Protection is chosen among backups we can judge; an orphan or unreadable one is kept anyway.
    judgeable = [b for b in ours if _judgeable(b)]
    by_group: dict[tuple[str, str], list[BackupItem]] = defaultdict(list)
    for b in judgeable:
        by_group[(b.target, b.tier)].append(b)
    protected: dict[int, str] = {}
    for (target, tier), group in by_group.items():
        verified = [b for b in group if b.verified]
        if verified:
            newest = max(verified, key=lambda b: (b.timestamp, b.file))
            protected[id(newest)] = f"the newest verified {tier} backup of {target}"
        else:
            newest = max(group, key=lambda b: (b.timestamp, b.file))
            protected[id(newest)] = f"the newest {tier} backup of {target} (none is verified)"

    decisions = []
    for b in sorted(backups, key=lambda b: (b.target, b.tier, b.timestamp or now, b.file)):
        if scope is not None and b.target not in scope:
            decisions.append(Decision(b, KEEP, f"not ours: target {b.target} is not one of {', '.join(scope)}; "
                                               "kept", not_ours=True))
        else:
            decisions.append(_decide(b, cutoffs, policy, now, tz, protected.get(id(b))))

    plan = RetentionPlan(now=now, policy=policy, cutoffs=cutoffs, decisions=tuple(decisions), source=where,
                         targets=scope)
    # The guard is about our own history: other targets' backups kept aside must not dilute it.
    n_delete, total = len(plan.delete), len(ours)
    if n_delete > max_delete_fraction * total:
        raise RetentionRefused(
            f"retention refused: the plan would delete {n_delete} of {total} backups in {where} "
            f"({n_delete / total:.0%}), more than max_delete_fraction {max_delete_fraction:.0%} at once. "
            "If this is the first cleanup of a long history, check the dry-run report and run once with a higher "
            "retention.max_delete_fraction; otherwise the listing or the timestamps are wrong",
            plan=plan,
        )
    return plan


def _judgeable(b: BackupItem) -> bool:
    return (b.complete and b.problem is None and b.time_conflict is None and b.timestamp is not None
            and b.tier in TIERS)


def _decide(b: BackupItem, cutoffs, policy: Retention, now, tz, protection: str | None) -> Decision:
    if not b.complete:
        return Decision(b, KEEP, f"orphan: missing {', '.join(b.missing)}; kept, check it", attention=True)
    if b.problem or b.time_conflict:
        why = "; ".join(p for p in (b.problem, b.time_conflict) if p)
        return Decision(b, KEEP, f"{why}; kept, check it", attention=True)
    if b.tier not in TIERS or b.timestamp is None:
        return Decision(b, KEEP, "no tier or timestamp to judge it by; kept, check it", attention=True)
    age_days = (now - b.timestamp).total_seconds() / 86400
    when = f"{age_days:.1f} days old"
    cutoff = cutoffs[b.tier]
    window = _window(policy, b.tier)
    if b.timestamp > cutoff:
        return Decision(b, KEEP, f"{when}, within {window} (after {fmt_time(cutoff, tz)})")
    if protection:
        return Decision(b, KEEP, f"{when}, older than {window} but {protection}")
    return Decision(b, DELETE, f"{when}, older than {window} (not after {fmt_time(cutoff, tz)})")


# --- run-wide guards ------------------------------------------------------------------------------


def check_clock(now: dt.datetime, server_time: dt.datetime, max_skew: dt.timedelta, *, server: str) -> None:
    """RetentionRefused when this clock and the storage server's differ by more than ``max_skew``.

    Every age is measured from ``now``: a worker clock 20 days fast ages every backup 20 days. Which
    of the two clocks is wrong cannot be told from here, so either way nothing is deleted.
    """
    if now.tzinfo is None or server_time.tzinfo is None:
        raise ValueError("check_clock needs timezone-aware times")
    skew = now - server_time
    if abs(skew) > max_skew:
        direction = "ahead of" if skew > dt.timedelta(0) else "behind"
        raise RetentionRefused(
            f"retention refused: this worker's clock ({now.astimezone(dt.UTC):%Y-%m-%d %H:%M:%S} UTC) is "
            f"{_duration(abs(skew))} {direction} the clock of {server} "
            f"({server_time.astimezone(dt.UTC):%Y-%m-%d %H:%M:%S} UTC), more than "
            f"retention.max_future_skew_minutes ({max_skew.total_seconds() / 60:g}); every backup's age would be "
            "wrong by as much. Fix the clock (NTP) of the worker or of the storage server"
        )


def s3_server_time(client, bucket: str) -> dt.datetime:
    """The S3 server's clock: the ``Date`` header of its answer to a HEAD of the bucket."""
    try:
        resp = client.head_bucket(Bucket=bucket)
    except (ClientError, BotoCoreError) as exc:
        raise RetentionError(f"cannot reach s3://{bucket} to read its clock: {describe_error(exc)}") from None
    date = resp.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
    try:
        moment = email.utils.parsedate_to_datetime(date) if date else None
    except (TypeError, ValueError):
        moment = None
    if moment is None or moment.tzinfo is None:
        raise RetentionRefused(
            f"retention refused: S3 at {client.meta.endpoint_url} sent no usable Date header ({date!r}), so this "
            "worker's clock cannot be checked against it"
        )
    return moment


def check_recent_backups(
    backups: list[BackupItem], now: dt.datetime, targets: Collection[str], max_age: dt.timedelta, *,
    source: str, timezone: str | None = None,
) -> dict[str, BackupItem]:
    """RetentionRefused unless each of ``targets`` has a verified backup newer than ``max_age``.

    A pipeline that stopped producing verified backups is no time to prune: every run would take
    history away while nothing new arrives. A backup counts by its manifest's timestamp (the moment
    the pipeline took it), also one whose file name is from another day (a run cleared late). Returns
    the newest verified backup of each target.
    """
    tz = zoneinfo.ZoneInfo(timezone) if timezone else now.tzinfo
    newest: dict[str, BackupItem] = {}
    for b in backups:
        if (b.target in targets and b.verified and b.complete and b.problem is None
                and b.timestamp_source == "manifest" and b.timestamp is not None):
            if b.target not in newest or (b.timestamp, b.file) > (newest[b.target].timestamp, newest[b.target].file):
                newest[b.target] = b
    stale = []
    for target in sorted(set(targets)):
        b = newest.get(target)
        if b is None:
            stale.append(f"{target} has no verified backup in {source}")
        elif now - b.timestamp > max_age:
            stale.append(f"the newest verified backup of {target} is {_duration(now - b.timestamp)} old "
                         f"({b.display}, {fmt_time(b.timestamp, tz)}), older than monitor_max_backup_age_hours "
                         f"({max_age.total_seconds() / 3600:g})")
    if stale:
        raise RetentionRefused(
            "retention refused: " + "; ".join(stale) + ". A pipeline that stopped producing verified backups is "
            "no time to prune: nothing is deleted until a fresh backup of every target is verified"
        )
    return newest


def _duration(delta: dt.timedelta) -> str:
    hours = delta.total_seconds() / 3600
    if hours >= 48:
        return f"{hours / 24:.1f} days"
    if hours >= 2:
        return f"{hours:.1f} hours"
    return f"{delta.total_seconds() / 60:.0f} minutes"


# --- S3 -------------------------------------------------------------------------------------------


def list_s3_backups(client, bucket: str, prefix: str, timezone: str, *, max_workers: int = 8) -> list[BackupItem]:
    """Every backup under ``{prefix}/{tier}/``, grouped into its three parts, manifests read.

    Only the three tier folders are listed, so anything else under the prefix is never touched.
    """
    location = f"s3://{bucket}/{prefix}"
    groups: dict[tuple[str, str], dict[str, str]] = defaultdict(dict)
    sizes: dict[str, int] = {}
    for tier, tier_prefix, obj in s3.list_tiers(client, bucket, prefix, error=RetentionError):
        rest = obj["Key"][len(tier_prefix):]
        part, base = _split_part(rest)
        if "/" in rest or parse_name(base, timezone) is None:
            log.warning("retention: ignoring s3://%s/%s (not a backup part)", bucket, obj["Key"])
            continue
        groups[(tier, base)][part] = obj["Key"]
        sizes[obj["Key"]] = obj.get("Size", 0)

    keys = [parts["manifest"] for parts in groups.values() if "manifest" in parts]
    fetched = s3.read_manifests(client, bucket, keys, sizes=sizes, max_workers=max_workers)
    items = []
    for (tier, base), parts in sorted(groups.items()):
        text, error = fetched.get(parts.get("manifest"), (None, None))
        items.append(_build_item(tier=tier, base=base, parts=parts, manifest_text=text, manifest_error=error,
                                 timezone=timezone, location=location, strip=prefix + "/"))
    return items


def apply_s3(client, bucket: str, plan: RetentionPlan, dry_run: bool) -> ApplyResult:
    """Delete each planned backup's parts in one DeleteObjects request; stop at the first failure.

    Raises RetentionDeleteFailed (with ``result``: what was deleted before) if S3 reports an error or
    does not confirm a key. On a versioned bucket this leaves delete markers; old versions go by lifecycle.
    """
    result = ApplyResult(dry_run=dry_run)
    for d in plan.delete:
        keys = d.item.paths
        if dry_run:
            result.would_delete[d.item.display] = keys
            continue
        try:
            resp = client.delete_objects(
                Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys], "Quiet": False}
            )
        except (ClientError, BotoCoreError) as exc:
            result.error = f"deleting {d.item.display} from s3://{bucket} failed: {describe_error(exc)}"
            raise RetentionDeleteFailed(result.error, result) from None
        done = [o["Key"] for o in resp.get("Deleted", [])]
        if done:
            result.deleted[d.item.display] = [k for k in keys if k in done]
        errors = resp.get("Errors", [])
        unconfirmed = [k for k in keys if k not in done and all(e.get("Key") != k for e in errors)]
        if errors or unconfirmed:
            what = [f"{e.get('Key')}: {e.get('Code')} {e.get('Message', '')}".strip() for e in errors]
            what += [f"{k}: not confirmed by S3" for k in unconfirmed]
            result.error = (
                f"deleting {d.item.display} from s3://{bucket} failed for {'; '.join(what)}; "
                "its remaining parts will show up as an orphan next time"
            )
            raise RetentionDeleteFailed(result.error, result)
    return result


# --- local tree -----------------------------------------------------------------------------------


def list_local_backups(local_root: str, timezone: str) -> list[BackupItem]:
    """Every backup under ``{local_root}/{tier}/{YYYY}/{MM}/``, grouped into its three parts."""
    root = local_root.rstrip("/") or "/"
    groups: dict[tuple[str, str, str], dict[str, str]] = defaultdict(dict)
    for tier in TIERS:
        tier_dir = os.path.join(root, tier)
        for year in _subdirs(tier_dir, r"\d{4}"):
            for month in _subdirs(os.path.join(tier_dir, year), r"\d{2}"):
                month_dir = os.path.join(tier_dir, year, month)
                with os.scandir(month_dir) as entries:
                    for entry in entries:
                        part, base = _split_part(entry.name)
                        # *.partial, *.tmp and the like are a dump or sidecar being written: not ours to judge.
                        if not entry.is_file(follow_symlinks=False) or parse_name(base, timezone) is None:
                            log.warning("retention: ignoring %s (not a backup part)", entry.path)
                            continue
                        groups[(tier, month_dir, base)][part] = entry.path
    items = []
    for (tier, _month_dir, base), parts in sorted(groups.items()):
        text, error = None, None
        if "manifest" in parts:
            try:
                if os.path.getsize(parts["manifest"]) > s3.MAX_MANIFEST_BYTES:
                    error = "too large for a manifest"
                else:
                    with open(parts["manifest"], "rb") as f:
                        text = f.read()
            except OSError as exc:
                error = f"cannot read {parts['manifest']}: {exc.strerror or exc}"
        items.append(_build_item(tier=tier, base=base, parts=parts, manifest_text=text, manifest_error=error,
                                 timezone=timezone, location=root, strip=root.rstrip("/") + "/"))
    return items


def _subdirs(path: str, pattern: str) -> list[str]:
    try:
        entries = list(os.scandir(path))
    except FileNotFoundError:
        return []
    names = []
    for entry in entries:
        if entry.is_dir(follow_symlinks=False) and re.fullmatch(pattern, entry.name):
            names.append(entry.name)
        else:
            log.warning("retention: ignoring %s (not in the {tier}/{YYYY}/{MM} layout)", entry.path)
    return sorted(names)


def apply_local(plan: RetentionPlan, dry_run: bool) -> ApplyResult:
    """Remove each planned backup's files, then the month and year directories left empty."""
    result = ApplyResult(dry_run=dry_run)
    touched: set[str] = set()
    for d in plan.delete:
        if dry_run:
            result.would_delete[d.item.display] = d.item.paths
            continue
        removed = []
        for path in d.item.paths:
            try:
                os.unlink(path)
            except FileNotFoundError:
                result.already_gone.append(path)
                continue
            except OSError as exc:
                if removed:
                    result.deleted[d.item.display] = removed
                result.error = f"deleting {path} failed: {exc.strerror or exc}"
                raise RetentionDeleteFailed(result.error, result) from None
            removed.append(path)
            touched.add(os.path.dirname(path))
        if removed:
            result.deleted[d.item.display] = removed
    for month_dir in sorted(touched, reverse=True):
        # Only {YYYY}/{MM} under a tier directory: the tier directories and local_root stay.
        for directory in (month_dir, os.path.dirname(month_dir)):
            try:
                os.rmdir(directory)
            except OSError:
                break  # not empty (or already gone): leave it and its parent
            result.removed_dirs.append(directory)
    return result


# --- report ---------------------------------------------------------------------------------------


def format_report(plan: RetentionPlan, applied: ApplyResult | None = None) -> str:
    """One summary line, the policy, then one line per backup: what happened to it and why."""
    tz = plan.now.tzinfo
    deleted = applied.deleted if applied else {}
    if applied is None:
        mode, verb = "plan only", "to delete"
    elif applied.dry_run:
        mode, verb = "DRY RUN, nothing deleted", "would delete"
    else:
        mode, verb = "applied", "deleted"
    n_deleted = len(deleted) if applied and not applied.dry_run else len(plan.delete)
    not_ours = plan.not_ours
    lines = [
        f"Retention of {plan.source} at {fmt_time(plan.now, tz)} ({mode}): {len(plan.decisions)} backups, "
        f"keep {len(plan.keep)}, {verb} {n_deleted}"
        + (f", {len(plan.attention)} need attention" if plan.attention else "")
        + (f", {len(not_ours)} not ours ({', '.join(sorted({d.item.target for d in not_ours}))})" if not_ours else ""),
        "policy: " + ", ".join(
            f"{tier} {_window(plan.policy, tier)} (after {fmt_time(plan.cutoffs[tier], tz)})" for tier in TIERS
        ),
    ]
    if applied and applied.error:
        lines.append(f"STOPPED: {applied.error}")
    for d in plan.decisions:
        b = d.item
        if d.not_ours:
            label = "NOT OURS"
        elif d.action == KEEP:
            label = "KEEP!" if d.attention else "KEEP"
        elif applied is None:
            label = "DELETE"
        elif applied.dry_run:
            label = "WOULD DELETE"
        elif b.display in deleted:
            label = "DELETED" if len(deleted[b.display]) == len(b.paths) else "PARTLY DELETED"
        else:
            label = "NOT DELETED"
        when = fmt_time(b.timestamp, tz) if b.timestamp else "no timestamp"
        origin = "" if b.timestamp_source == "manifest" else f", time from {b.timestamp_source}"
        verified = ", verified" if b.verified else ""
        lines.append(f"{label:<14} {b.target} {b.tier:<7} {when}  {b.display}  {d.reason}{origin}{verified}")
    if applied and applied.already_gone:
        lines.append("already gone before deletion: " + ", ".join(applied.already_gone))
    if applied and applied.removed_dirs:
        lines.append("removed empty directories: " + ", ".join(applied.removed_dirs))
    return "\n".join(lines)
