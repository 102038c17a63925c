"""Grandfather-father-son retention: the pure decisions. Airflow-free, no I/O.

A backup is three parts (the dump, its ``.sha256`` and its ``.json`` manifest) that are kept or
deleted together. Age comes from the backup's own timestamp: the manifest's ``timestamp``, else the
time in the file name (local time in the config time zone, parsed by :mod:`pg_dataops.common.naming`);
never S3's LastModified or a file's mtime, which a copy, a restore or a re-upload resets. A manifest
timestamp more than a day from the time in its file name is a contradiction: that backup is kept and
flagged, not guessed at (:func:`build_item`).

:func:`plan_retention` decides and gives a reason for every backup, and refuses
(:class:`RetentionRefused`, nothing deleted) when the listing looks wrong. Only the targets it is
given are judged; other targets' backups (a removed target, another deployment sharing the prefix)
are kept as "not ours". :func:`check_clock` and :func:`check_recent_backups` are the run-wide
guards (this clock against S3's, and a pipeline that stopped producing verified backups).
:func:`run_params` reads a run's params (rendered templates) against the config. Listing and
deleting are in :mod:`pg_dataops.retention.apply`, the report in :mod:`pg_dataops.retention.report`.
"""

from __future__ import annotations

import calendar
import datetime as dt
import json
import math
import posixpath
import zoneinfo
from collections import defaultdict
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from pg_dataops.common.config import Config, Retention
from pg_dataops.common.formatting import fmt_time
from pg_dataops.common.guards import (  # noqa: F401 - re-exported: retention's callers and tests use them here
    _FALSE,
    _TRUE,
    RetentionError,
    RetentionParamError,
    RetentionRefused,
    age_text,
    as_bool,
    check_clock,
)
from pg_dataops.common.naming import TIERS, parse_name, parse_timestamp

KEEP = "keep"
DELETE = "delete"
PARTS = ("data", "checksum", "manifest")  # also the order of deletion: the manifest goes last
SUFFIX = {"checksum": ".sha256", "manifest": ".json"}
# A scheduled run names its file from the logical date and snapshots seconds later; a day apart is
# no longer the same moment (a run cleared weeks late, a hand-edited manifest, a wrong clock).
MAX_NAME_SKEW = dt.timedelta(days=1)


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
        names = {"data": "dump", **SUFFIX}
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


def _decisions_where(test: Callable[[Decision], bool], doc: str) -> property:
    return property(lambda plan: [d for d in plan.decisions if test(d)], doc=doc)


@dataclass(frozen=True)
class RetentionPlan:
    now: dt.datetime  # in the calendar's time zone
    policy: Retention
    cutoffs: dict[str, dt.datetime]  # tier -> backups at or before it are out of their window
    decisions: tuple[Decision, ...]
    source: str = ""
    targets: tuple[str, ...] | None = None  # the targets judged; None: every target found

    keep = _decisions_where(lambda d: d.action == KEEP, "Every backup kept, other targets' included.")
    delete = _decisions_where(lambda d: d.action == DELETE, "The backups to delete.")
    attention = _decisions_where(lambda d: d.attention, "Kept because they could not be judged.")
    not_ours = _decisions_where(lambda d: d.not_ours, "Other targets' backups: kept, not judged.")
    judged = _decisions_where(lambda d: not d.not_ours,
                              "The decisions about the plan's own targets (what max_delete_fraction is measured against).")


# --- reading a listing: names and manifests -------------------------------------------------------


def split_part(name: str) -> tuple[str, str]:
    """('checksum', 'x.dump') for 'x.dump.sha256'; ('data', name) for anything without a sidecar suffix."""
    for part, suffix in SUFFIX.items():
        if name.endswith(suffix):
            return part, name[: -len(suffix)]
    return "data", name


def build_item(
    *, tier: str, base: str, parts: dict[str, str], manifest_text: bytes | None, manifest_error: str | None,
    timezone: str, location: str, strip: str,
) -> BackupItem:
    """The BackupItem of one listed backup: ``base`` must parse as a backup name (callers group only those)."""
    target, name_tier, name_time = parse_name(base, timezone)
    problems = []
    if name_tier != tier:
        problems.append(f"its name says {name_tier} but it is under {tier}/")
    timestamp, source, verified, time_conflict = name_time, "file name", False, None
    doc = _read_manifest(manifest_text, manifest_error, problems) if "manifest" in parts else None
    if doc is not None:
        for key, expected in (("file", base), ("type", tier), ("target", target)):
            if key in doc and doc[key] != expected:
                problems.append(f"manifest says {key} {doc[key]!r}, not {expected!r}")
        timestamp, source, time_conflict = _manifest_time(doc, name_time)
        verified = doc.get("verified") is True
    return BackupItem(
        target=target, tier=tier, file=base, timestamp=timestamp, timestamp_source=source, verified=verified,
        data=parts.get("data"), checksum=parts.get("checksum"), manifest=parts.get("manifest"),
        location=location, display=posixpath.dirname(next(iter(parts.values())))[len(strip):] + "/" + base,
        problem="; ".join(problems) or None, time_conflict=time_conflict,
    )


def _read_manifest(text: bytes | None, error: str | None, problems: list[str]) -> dict | None:
    """The manifest as a JSON object, or None with why appended to ``problems``."""
    if error:
        problems.append(f"manifest unreadable: {error}")
        return None
    try:
        # strict=False: the runbook's hand-built manifests carry psql's raw newline in db_version.
        doc = json.loads(text, strict=False)
    except (ValueError, UnicodeDecodeError) as exc:
        problems.append(f"manifest is not valid JSON ({exc})")
        return None
    if not isinstance(doc, dict):
        problems.append("manifest is not a JSON object")
        return None
    return doc


def _manifest_time(doc: dict, name_time: dt.datetime) -> tuple[dt.datetime, str, str | None]:
    """(timestamp, its source, time conflict): the manifest's timestamp if it has a usable one, else the name's."""
    from_manifest = parse_timestamp(doc.get("timestamp"))
    if from_manifest is None:
        if "timestamp" in doc:
            return name_time, f"file name (manifest timestamp {doc['timestamp']!r} is not ISO-8601 with a zone)", None
        return name_time, "file name (manifest has no timestamp)", None
    conflict = None
    if abs(from_manifest - name_time) > MAX_NAME_SKEW:
        days = (from_manifest - name_time).total_seconds() / 86400
        conflict = (
            f"manifest timestamp {from_manifest:%Y-%m-%d %H:%M} UTC is {abs(days):.1f} days "
            f"{'after' if days > 0 else 'before'} the time in its file name "
            f"({name_time:%Y-%m-%d %H:%M} UTC)"
        )
    return from_manifest, "manifest", conflict


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


def window_text(policy: Retention, tier: str) -> str:
    """'30 days', '12 weeks', '12 months': a tier's window in the policy."""
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
    _check_arguments(now, max_delete_fraction, max_future_skew, targets)
    tz = zoneinfo.ZoneInfo(timezone) if timezone else now.tzinfo
    now = now.astimezone(tz)
    where = source or (backups[0].location if backups else "the listing")
    scope = tuple(sorted(set(targets))) if targets is not None else None
    ours = [b for b in backups if scope is None or b.target in scope]
    _refuse_empty(ours, backups, where, scope)
    _refuse_future(ours, now, max_future_skew, where)

    cutoffs = cutoffs_for(now, policy)
    protected = _protected(ours)
    decisions = []
    for b in sorted(backups, key=lambda b: (b.target, b.tier, b.timestamp or now, b.file)):
        if scope is not None and b.target not in scope:
            decisions.append(Decision(b, KEEP, f"not ours: target {b.target} is not one of {', '.join(scope)}; "
                                               "kept", not_ours=True))
        else:
            decisions.append(_decide(b, cutoffs, policy, now, protected.get(id(b))))

    plan = RetentionPlan(now=now, policy=policy, cutoffs=cutoffs, decisions=tuple(decisions), source=where,
                         targets=scope)
    _refuse_too_many(plan, len(ours), max_delete_fraction)
    return plan


def _check_arguments(now: dt.datetime, max_delete_fraction: float, max_future_skew: dt.timedelta,
                     targets: Collection[str] | None) -> None:
    if now.tzinfo is None:
        raise ValueError("plan_retention needs a timezone-aware now")
    if not 0.0 <= max_delete_fraction <= 1.0:
        raise ValueError(f"max_delete_fraction: {max_delete_fraction} is outside 0..1")
    if max_future_skew < dt.timedelta(0):
        raise ValueError(f"max_future_skew: {max_future_skew} is negative")
    if targets is not None and not targets:
        raise ValueError("targets: an empty list would judge nothing; pass None for every target")


def _refuse_empty(ours: list[BackupItem], backups: list[BackupItem], where: str,
                  scope: tuple[str, ...] | None) -> None:
    if ours:
        return
    whose = f" for target(s) {', '.join(scope)}" if scope else ""
    others = sorted({b.target for b in backups})  # nothing of ours: every backup listed is another target's
    besides = f" (only {len(backups)} backup(s) of other targets: {', '.join(others)})" if backups else ""
    raise RetentionRefused(
        f"retention refused: no backups found in {where}{whose}{besides}; an empty listing means a wrong bucket, "
        "prefix, local_root or target name, or a listing that failed, not that there is nothing to keep"
    )


def _refuse_future(ours: list[BackupItem], now: dt.datetime, max_future_skew: dt.timedelta, where: str) -> None:
    latest_ok = now + max_future_skew
    future = sorted((b for b in ours if b.timestamp and b.timestamp > latest_ok), key=lambda b: b.timestamp)
    if future:
        worst, tz = future[-1], now.tzinfo
        raise RetentionRefused(
            f"retention refused: {len(future)} backup(s) in {where} are dated more than {max_future_skew} after "
            f"now ({fmt_time(now, tz)}), e.g. {worst.display} at {fmt_time(worst.timestamp, tz)} "
            f"(from its {worst.timestamp_source}); this clock, the backup host's clock or the time zone is wrong"
        )


def _protected(ours: list[BackupItem]) -> dict[int, str]:
    """id(backup) -> why it is kept whatever its age: the newest (verified, if any is) of each target and tier.

    Protection is chosen among backups we can judge; an orphan or unreadable one is kept anyway.
    """
    by_group: dict[tuple[str, str], list[BackupItem]] = defaultdict(list)
    for b in ours:
        if _judgeable(b):
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
    return protected


def _refuse_too_many(plan: RetentionPlan, total: int, max_delete_fraction: float) -> None:
    # The guard is about our own history: other targets' backups kept aside must not dilute it.
    n_delete = len(plan.delete)
    if n_delete > max_delete_fraction * total:
        raise RetentionRefused(
            f"retention refused: the plan would delete {n_delete} of {total} backups in {plan.source} "
            f"({n_delete / total:.0%}), more than max_delete_fraction {max_delete_fraction:.0%} at once. "
            "If this is the first cleanup of a long history, check the dry-run report and run once with a higher "
            "retention.max_delete_fraction; otherwise the listing or the timestamps are wrong",
            plan=plan,
        )


def _judgeable(b: BackupItem) -> bool:
    return (b.complete and b.problem is None and b.time_conflict is None and b.timestamp is not None
            and b.tier in TIERS)


def _decide(b: BackupItem, cutoffs, policy: Retention, now: dt.datetime, protection: str | None) -> Decision:
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
    window = window_text(policy, b.tier)
    if b.timestamp > cutoff:
        return Decision(b, KEEP, f"{when}, within {window} (after {fmt_time(cutoff, now.tzinfo)})")
    if protection:
        return Decision(b, KEEP, f"{when}, older than {window} but {protection}")
    return Decision(b, DELETE, f"{when}, older than {window} (not after {fmt_time(cutoff, now.tzinfo)})")


def minimum_fraction(plan: RetentionPlan) -> float:
    """The smallest max_delete_fraction (two decimals, rounded up) that lets this plan through."""
    return math.ceil(len(plan.delete) / len(plan.judged) * 100) / 100


# --- run-wide guards ------------------------------------------------------------------------------


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
            stale.append(f"the newest verified backup of {target} is {age_text(now - b.timestamp)} old "
                         f"({b.display}, {fmt_time(b.timestamp, tz)}), older than monitor_max_backup_age_hours "
                         f"({max_age.total_seconds() / 3600:g})")
    if stale:
        raise RetentionRefused(
            "retention refused: " + "; ".join(stale) + ". A pipeline that stopped producing verified backups is "
            "no time to prune: nothing is deleted until a fresh backup of every target is verified"
        )
    return newest


# --- run params -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class RunParams:
    """One run's settings: its params (rendered templates) over the config's defaults."""

    dry_run: bool
    max_delete_fraction: float
    targets: list[str]  # sorted; the configured targets unless the run names others
    targets_from: str  # "param" or "config"
    max_future_skew: dt.timedelta


def run_params(cfg: Config, *, dry_run: Any, max_delete_fraction: Any = None, targets: Any = None) -> RunParams:
    """RetentionParamError for a param that is not a value retention accepts; never a silent default."""
    fraction = as_fraction(max_delete_fraction)
    named = as_targets(targets)
    return RunParams(
        dry_run=as_bool(dry_run, "dry_run"),
        max_delete_fraction=cfg.retention.max_delete_fraction if fraction is None else fraction,
        # Only this deployment's targets, unless a human names others (e.g. a removed target's backups):
        # the bucket and prefix may hold backups this config knows nothing about.
        targets=sorted(set(named)) if named is not None else sorted(cfg.target_names),
        targets_from="param" if named is not None else "config",
        max_future_skew=dt.timedelta(minutes=cfg.retention.max_future_skew_minutes),
    )


def _is_null(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "null"))


def as_fraction(value: Any) -> float | None:
    """None (use the config's) or a number in (0, 1]."""
    if _is_null(value):
        return None
    try:
        number = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        number = math.nan
    if not 0 < number <= 1:
        raise RetentionParamError(f"max_delete_fraction: expected a number in (0, 1] or null, got {value!r}")
    return number


def as_targets(value: Any) -> list[str] | None:
    """None (every target found) or target names: a list, a JSON list or comma-separated text."""
    if _is_null(value):
        return None
    if isinstance(value, str):
        text = value.strip()
        value = json.loads(text) if text.startswith("[") else [p.strip() for p in text.split(",")]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v for v in value) or not value:
        raise RetentionParamError(f"targets: expected a list of target names, got {value!r}")
    return list(value)
