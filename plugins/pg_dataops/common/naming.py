"""Backup tier (GFS level) of a run, and the backup names: built and parsed here, nowhere else. Airflow-free."""

from __future__ import annotations

import datetime as dt
import re
import zoneinfo

TIERS = ("daily", "weekly", "monthly")
TIER_CHOICES = ("auto", *TIERS)
# {target}_{tier}_{YYYYmmdd_HHMMSS}{ext}[.age]; the tier and the stamp anchor a target that contains '_'.
# '.age': the artifact is encrypted (common.age); its manifest says for whom.
_NAME_RE = re.compile(
    r"^(?P<target>[a-z][a-z0-9_]*)_(?P<tier>daily|weekly|monthly)_(?P<stamp>\d{8}_\d{6})"
    r"(?P<ext>\.dump|\.tar|\.sql\.gz|\.sql)(?P<age>\.age)?$"
)
ENCRYPTED_SUFFIX = ".age"


def is_encrypted_name(file: str) -> bool:
    """The backup file name says it is an age-encrypted artifact."""
    return file.endswith(ENCRYPTED_SUFFIX)


def tier_for(moment: dt.datetime, timezone: str) -> str:
    """The runbook's rule, in the configured time zone: 1st of month monthly, Sunday weekly, else daily."""
    if moment.tzinfo is None:
        raise ValueError("tier_for needs a timezone-aware datetime")
    local = moment.astimezone(zoneinfo.ZoneInfo(timezone))
    if local.day == 1:
        return "monthly"
    if local.isoweekday() == 7:
        return "weekly"
    return "daily"


def resolve_tier(requested: str | None, moment: dt.datetime, timezone: str) -> str:
    """A manual trigger may force a tier; 'auto' (or nothing) applies the calendar rule."""
    if requested in (None, "", "auto"):
        return tier_for(moment, timezone)
    if requested not in TIERS:
        raise ValueError(f"tier: {requested!r} is not one of {', '.join(TIER_CHOICES)}")
    return requested


def backup_basename(target: str, tier: str, moment: dt.datetime, timezone: str) -> str:
    """glimpse_daily_20240131_020000: the runbook's name, local time, without extension."""
    local = moment.astimezone(zoneinfo.ZoneInfo(timezone))
    return f"{target}_{tier}_{local:%Y%m%d_%H%M%S}"


def local_dir(local_root: str, tier: str, moment: dt.datetime, timezone: str) -> str:
    """{local_root}/{tier}/{YYYY}/{MM}, as the runbook lays out its backup tree."""
    local = moment.astimezone(zoneinfo.ZoneInfo(timezone))
    return f"{local_root.rstrip('/')}/{tier}/{local:%Y}/{local:%m}"


def parse_name(file: str, timezone: str) -> tuple[str, str, dt.datetime] | None:
    """(target, tier, timestamp in UTC) from a dump's file name, or None if it is not one of ours."""
    m = _NAME_RE.match(file)
    if not m:
        return None
    try:
        local = dt.datetime.strptime(m["stamp"], "%Y%m%d_%H%M%S")
    except ValueError:
        return None
    moment = local.replace(tzinfo=zoneinfo.ZoneInfo(timezone)).astimezone(dt.UTC)
    return m["target"], m["tier"], moment


def parse_timestamp(value) -> dt.datetime | None:
    """An ISO-8601 time with a zone, in UTC; None otherwise."""
    if not isinstance(value, str):
        return None
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    # A zoneless time would be a guess between UTC and local time.
    return moment.astimezone(dt.UTC) if moment.tzinfo is not None else None
