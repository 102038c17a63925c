"""Monitoring rules on the catalog and the local backup disk: decisions and texts, no sending. Airflow-free.

``evaluate`` returns one ``Finding`` per rule and target, passing or not. :mod:`pg_dataops.observe.alerts`
(DAG ``pg_backup_monitor``) triggers a failing finding (severity ``page``: PagerDuty, ``warn``: Slack) and
resolves a passing one under the same ``dedup_key``; :mod:`pg_dataops.observe.report` lists the failing
ones as overdue.

Encryption: the newest SUCCESS backup of each target must be client-side encrypted (``backup_logs.encrypted``
true; false and NULL, a row from before the column, are not): a warning while it is not, cleared by the
first encrypted backup. Running without recipients is allowed, but never silently.

Freshness counts the newest SUCCESS backup of ANY tier: on Sundays and the 1st the weekly or monthly
run replaces the daily one and every scheduled run is a full dump, so the runbook's
``backup_type = 'daily'`` filter would page every Monday and every 2nd.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import zoneinfo
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import dict_row

from pg_dataops.catalog import migrations
from pg_dataops.common import sqlfiles
from pg_dataops.common.alerting import PAGE, WARN, Finding  # noqa: F401 - re-exported for report and tests
from pg_dataops.common.formatting import fmt_bytes, fmt_time

DEDUP_PREFIX = "pg_backup_monitor"

CHECK_BACKUP_AGE = "last_daily_backup_age"
CHECK_SIZE = "backup_size_deviation"
CHECK_FREE_SPACE = "local_free_space"
CHECK_UPLOAD = "upload_missing"
CHECK_VERIFICATION = "verification_missing"
CHECK_ENCRYPTION = "not_encrypted"
CHECKS = (CHECK_BACKUP_AGE, CHECK_SIZE, CHECK_FREE_SPACE, CHECK_UPLOAD, CHECK_VERIFICATION, CHECK_ENCRYPTION)


# Shown when neither configured targets nor catalog rows name one: still a page, never silence.
NO_TARGET = "*"


@dataclass(frozen=True)
class MonitorSettings:
    max_backup_age_hours: float = 24.0
    size_deviation_pct: float = 50.0
    # Either or both; below either warns. 20 GiB matches pgbackup.yaml's monitor_min_free_gb default.
    min_free_bytes: int | None = 20 * 1024**3
    min_free_pct: float | None = None
    lookback_hours: float = 24.0
    # Expected targets (cfg.target_names). Empty: the targets the catalog knows, which cannot notice
    # a configured target that never backed up.
    targets: tuple[str, ...] = ()
    size_window: int = 7
    size_min_previous: int = 3
    timezone: str = "UTC"  # of the times in messages
    # encryption.recipients (public keys): only to say, in the message, whether the next backup will be encrypted
    encryption_recipients: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("max_backup_age_hours", "size_deviation_pct", "lookback_hours"):
            if not getattr(self, name) > 0:
                raise ValueError(f"MonitorSettings.{name}: must be positive, got {getattr(self, name)!r}")
        if self.min_free_bytes is None and self.min_free_pct is None:
            raise ValueError("MonitorSettings: set min_free_bytes or min_free_pct (or both)")
        if self.min_free_bytes is not None and self.min_free_bytes < 0:
            raise ValueError(f"MonitorSettings.min_free_bytes: must be >= 0, got {self.min_free_bytes!r}")
        if self.min_free_pct is not None and not 0 <= self.min_free_pct <= 100:
            raise ValueError(f"MonitorSettings.min_free_pct: must be within 0..100, got {self.min_free_pct!r}")
        if not 1 <= self.size_min_previous <= self.size_window:
            raise ValueError(
                f"MonitorSettings.size_min_previous: must be within 1..size_window ({self.size_window}), "
                f"got {self.size_min_previous!r}"
            )
        if isinstance(self.targets, str):
            raise ValueError("MonitorSettings.targets: a tuple of target names, not a string")
        try:
            zoneinfo.ZoneInfo(self.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"MonitorSettings.timezone: unknown time zone {self.timezone!r}") from None


def dedup_key(check: str, target: str) -> str:
    """Stable per check and target, so a later resolve closes the incident this one opened."""
    return f"{DEDUP_PREFIX}/{check}/{target}"


def evaluate(pg: psycopg.Connection, now: dt.datetime, settings: MonitorSettings, local_root: str) -> list[Finding]:
    """Every rule, as of ``now`` (timezone-aware; pass the wall clock, not the data interval)."""
    if now.tzinfo is None:
        raise ValueError("evaluate needs a timezone-aware 'now'")
    since = now - dt.timedelta(hours=settings.lookback_hours)
    # Idempotent; the monitor may well run before the first backup ever created the table.
    migrations.ensure_schema(pg)
    with pg.transaction(), pg.cursor(row_factory=dict_row) as cur:
        known = settings.targets or [r["target"] for r in cur.execute(sqlfiles.text("monitor/known_targets.sql"))]
        targets = list(known)
        fresh = cur.execute(sqlfiles.text("monitor/freshness.sql"), {"targets": targets, "now": now}).fetchall()
        recent = cur.execute(
            sqlfiles.text("monitor/recent_successes.sql"),
            {"targets": targets, "since": since, "now": now, "window": settings.size_window},
        ).fetchall()
    tz = zoneinfo.ZoneInfo(settings.timezone)
    findings = [check_backup_age(row, now, settings, tz) for row in fresh]
    findings += [check_encryption(row, settings, tz) for row in fresh]
    if not targets:
        findings.append(_no_target_finding(settings))
    for target in targets:
        mine = [r for r in recent if r["target"] == target]
        findings.append(check_size(target, mine, settings, tz))
        findings.append(_flag_finding(CHECK_UPLOAD, "upload", "s3_uploaded", target, mine, settings, tz))
        findings.append(_flag_finding(CHECK_VERIFICATION, "verification", "verified", target, mine, settings, tz))
    findings.append(check_free_space(local_root, settings))
    return findings


# --- (a) freshness -------------------------------------------------------------------------------


def check_backup_age(row: dict[str, Any], now: dt.datetime, settings: MonitorSettings, tz: dt.tzinfo) -> Finding:
    target = row["target"]
    threshold = f"threshold {_num(settings.max_backup_age_hours)} h"
    details: dict[str, Any] = {"threshold_hours": settings.max_backup_age_hours}
    if row["success_date"] is None:
        ok = False
        message = f"no successful backup of {target} is recorded in backup_logs ({threshold})"
    else:
        age_h = (now - row["success_date"]).total_seconds() / 3600
        ok = age_h <= settings.max_backup_age_hours
        message = (
            f"last successful backup of {target} ({row['success_tier']}, {fmt_time(row['success_date'], tz)}) "
            f"is {age_h:.1f} h old ({threshold})"
        )
        details.update(age_hours=round(age_h, 3), last_success=_iso(row["success_date"]),
                       last_success_tier=row["success_tier"], last_success_file=row["success_file"])
    if row["attempt_status"] == "FAILED":
        # The newest attempt failed: the reason is what the on-call needs first.
        step = f" in {row['attempt_failed_step']}" if row["attempt_failed_step"] else ""
        message += (
            f"; latest attempt ({row['attempt_tier']}, {fmt_time(row['attempt_date'], tz)}) FAILED{step}: "
            f"{row['attempt_error'] or 'no error recorded'}"
        )
        details.update(latest_attempt=_iso(row["attempt_date"]), latest_attempt_error=row["attempt_error"],
                       latest_attempt_failed_step=row["attempt_failed_step"])
    return Finding(CHECK_BACKUP_AGE, target, ok, PAGE, message, dedup_key(CHECK_BACKUP_AGE, target), details)


def _no_target_finding(settings: MonitorSettings) -> Finding:
    message = (
        "no successful backup of any target is recorded in backup_logs and no target is configured "
        f"(threshold {_num(settings.max_backup_age_hours)} h)"
    )
    return Finding(CHECK_BACKUP_AGE, NO_TARGET, False, PAGE, message, dedup_key(CHECK_BACKUP_AGE, NO_TARGET),
                   {"threshold_hours": settings.max_backup_age_hours})


# --- encryption ----------------------------------------------------------------------------------


def check_encryption(row: dict[str, Any], settings: MonitorSettings, tz: dt.tzinfo) -> Finding:
    """The newest successful backup of a target is client-side encrypted, or a warning saying why not."""
    target = row["target"]
    details: dict[str, Any] = {"recipients_configured": len(settings.encryption_recipients)}
    if row["success_date"] is None:  # nothing to judge; the freshness check pages about it
        message = f"no successful backup of {target} to check for client-side encryption"
        return Finding(CHECK_ENCRYPTION, target, True, WARN, message, dedup_key(CHECK_ENCRYPTION, target), details)
    encrypted = row["success_encrypted"] is True
    which = f"the newest backup of {target} ({row['success_tier']}, {fmt_time(row['success_date'], tz)})"
    if encrypted:
        message = f"{which} is client-side encrypted (age)"
    elif settings.encryption_recipients:
        message = f"{which} is not client-side encrypted (encryption.recipients is set: the next backup will be)"
    else:
        message = f"{which} is not client-side encrypted (encryption.recipients is empty)"
    details.update(encrypted=row["success_encrypted"], last_success=_iso(row["success_date"]),
                   last_success_file=row["success_file"])
    return Finding(CHECK_ENCRYPTION, target, encrypted, WARN, message, dedup_key(CHECK_ENCRYPTION, target), details)


# --- (b) size deviation --------------------------------------------------------------------------


def check_size(target: str, rows: list[dict[str, Any]], settings: MonitorSettings, tz: dt.tzinfo) -> Finding:
    pct = settings.size_deviation_pct
    lookback = _num(settings.lookback_hours)
    deviating, compared, skipped = [], [], []
    for r in rows:
        median = r["median_bytes"]
        if r["file_size_bytes"] is None or r["n_previous"] < settings.size_min_previous or not median:
            skipped.append(r)
            continue
        deviation = (r["file_size_bytes"] - median) / median * 100
        entry = {"id": r["id"], "tier": r["backup_type"], "backup_date": _iso(r["backup_date"]),
                 "file_name": r["file_name"], "size_bytes": r["file_size_bytes"], "median_bytes": median,
                 "n_previous": r["n_previous"], "deviation_pct": round(deviation, 2)}
        compared.append(entry)
        if abs(deviation) > pct:
            deviating.append((r, entry))
    details = {"threshold_pct": pct, "compared": compared, "skipped_ids": [r["id"] for r in skipped],
               "deviating_ids": [e["id"] for _, e in deviating]}
    if deviating:
        parts = [
            f"{r['backup_type']} backup of {target} at {fmt_time(r['backup_date'], tz)} is "
            f"{fmt_bytes(e['size_bytes'])}, {e['deviation_pct']:+.1f}% vs the median "
            f"{fmt_bytes(e['median_bytes'])} of the previous {e['n_previous']} {r['backup_type']} backups"
            for r, e in deviating
        ]
        message = "; ".join(parts) + f" (threshold ±{_num(pct)}%)"
    else:
        message = (
            f"no size deviation among {_plural(len(compared), 'compared backup')} of {target} in the last "
            f"{lookback} h (threshold ±{_num(pct)}% of the median of up to {settings.size_window} previous "
            "of the same tier)"
        )
    if skipped:
        message += (
            f"; {_plural(len(skipped), 'backup')} not compared "
            f"(fewer than {settings.size_min_previous} previous of the same tier)"
        )
    return Finding(CHECK_SIZE, target, not deviating, WARN, message, dedup_key(CHECK_SIZE, target), details)


# --- (d) upload / verification flags -------------------------------------------------------------


def _flag_finding(check: str, what: str, column: str, target: str, rows: list[dict[str, Any]],
                  settings: MonitorSettings, tz: dt.tzinfo) -> Finding:
    missing = [r for r in rows if not r[column]]
    message = (
        f"{what} missing for {len(missing)} of {_plural(len(rows), 'successful backup')} of {target} "
        f"in the last {_num(settings.lookback_hours)} h (threshold 0)"
    )
    if missing:
        message += ": " + ", ".join(
            f"{r['file_name'] or r['backup_type']} ({fmt_time(r['backup_date'], tz)})" for r in missing
        )
    details = {"checked": len(rows), "missing": [
        {"id": r["id"], "tier": r["backup_type"], "backup_date": _iso(r["backup_date"]), "file_name": r["file_name"]}
        for r in missing
    ]}
    return Finding(check, target, not missing, WARN, message, dedup_key(check, target), details)


# --- (c) free space ------------------------------------------------------------------------------


def nearest_existing(path: str) -> str:
    """``path`` itself or its nearest existing ancestor (the filesystem the backups will land on)."""
    current = os.path.abspath(path)
    while not os.path.exists(current):
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    return current


def check_free_space(local_root: str, settings: MonitorSettings) -> Finding:
    checked = nearest_existing(local_root)
    usage = shutil.disk_usage(checked)
    free_pct = usage.free / usage.total * 100 if usage.total else 0.0
    too_few_bytes = settings.min_free_bytes is not None and usage.free < settings.min_free_bytes
    too_few_pct = settings.min_free_pct is not None and free_pct < settings.min_free_pct
    limits = []
    if settings.min_free_pct is not None:
        limits.append(f"{_num(settings.min_free_pct)}%")
    if settings.min_free_bytes is not None:
        limits.append(fmt_bytes(settings.min_free_bytes))
    where = (
        f"free space under {local_root}" if checked == os.path.abspath(local_root)
        else f"local_root {local_root} does not exist; free space under its nearest existing parent {checked}"
    )
    message = (
        f"{where} is {fmt_bytes(usage.free)}, {free_pct:.1f}% of {fmt_bytes(usage.total)} "
        f"(threshold: at least {' and '.join(limits)} free)"
    )
    details = {"local_root": local_root, "checked_path": checked, "exists": checked == os.path.abspath(local_root),
               "free_bytes": usage.free, "total_bytes": usage.total, "free_pct": round(free_pct, 2),
               "min_free_bytes": settings.min_free_bytes, "min_free_pct": settings.min_free_pct}
    ok = not (too_few_bytes or too_few_pct)
    return Finding(CHECK_FREE_SPACE, local_root, ok, WARN, message, dedup_key(CHECK_FREE_SPACE, local_root), details)


# --- formatting ----------------------------------------------------------------------------------


def _num(x: float | int | None) -> str:
    """24.0 -> '24', 12.5 -> '12.5': thresholds as people wrote them."""
    return f"{x:g}"


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _iso(moment: dt.datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None

