"""Backup tier (GFS level) of a run and the names derived from it. Airflow-free."""

from __future__ import annotations

import datetime as dt
import zoneinfo

TIERS = ("daily", "weekly", "monthly")
TIER_CHOICES = ("auto", *TIERS)


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
