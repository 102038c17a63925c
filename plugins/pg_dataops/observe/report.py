"""The daily backup report: a Slack (mrkdwn) text and the same facts as a dict. Airflow-free.

:func:`daily_report` is DAG ``pg_backup_report``'s one step: S3 usage per tier
(:func:`pg_dataops.common.s3.usage_by_tier`), the monitor's findings for the "overdue" section, then
:func:`build_report`; the operator posts ``Report.text``.
"""

from __future__ import annotations

import datetime as dt
import math
import zoneinfo
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import dict_row

from pg_dataops.catalog import migrations
from pg_dataops.common import s3, sqlfiles
from pg_dataops.common.config import Config
from pg_dataops.common.formatting import fmt_bytes, fmt_duration, fmt_time, slack_escape
from pg_dataops.common.naming import TIERS
from pg_dataops.observe import alerts, monitor
from pg_dataops.observe.monitor import PAGE, Finding

BARS = "▁▂▃▄▅▆▇█"
ERROR_CHARS = 300  # a report line, not a log: the full error is in the catalog


@dataclass(frozen=True)
class Report:
    text: str  # Slack mrkdwn
    data: dict[str, Any]  # JSON-safe


def sparkline(values: Iterable[float | int | None], *, gap: str = " ") -> str:
    """One bar per value, scaled between the minimum and the maximum present.

    None (and NaN or infinity) is a gap; constant values are a flat middle line (not "all low",
    which would read as a collapse); no values give "".
    """
    nums = [float(v) if v is not None and math.isfinite(float(v)) else None for v in values]
    present = [v for v in nums if v is not None]
    if not present:
        return gap * len(nums)
    lo, hi = min(present), max(present)
    span = hi - lo
    out = []
    for v in nums:
        if v is None:
            out.append(gap)
        elif span == 0:
            out.append(BARS[3])
        else:
            out.append(BARS[int((v - lo) / span * (len(BARS) - 1) + 0.5)])
    return "".join(out)


def daily_report(cfg: Config, pg: psycopg.Connection, s3_client, now: dt.datetime) -> Report:
    """The configured report as of ``now``: S3 listed first (a missing bucket fails before any query)."""
    storage = s3.usage_by_tier(s3_client, cfg.bucket, cfg.prefix)
    findings = monitor.evaluate(pg, now, alerts.monitor_settings(cfg), cfg.local_root)
    return build_report(pg, now, rto_objective_seconds=cfg.rto_objective_seconds, storage_by_tier=storage,
                        findings=findings, timezone=cfg.timezone, encryption_recipients=cfg.encryption.recipients)


def build_report(
    pg: psycopg.Connection,
    now: dt.datetime,
    *,
    rto_objective_seconds: float,
    storage_by_tier: dict[str, dict] | None,
    findings: Sequence[Finding] | None = None,
    timezone: str = "UTC",
    window_hours: float = 24,
    trend_days: int = 30,
    encryption_recipients: Sequence[str] = (),
) -> Report:
    """The report as of ``now`` (timezone-aware).

    ``storage_by_tier``: ``{"daily": {"bytes": int, "objects": int}, ...}`` (``objects`` optional),
    or None when S3 was not listed. ``findings``: from ``monitor.evaluate``, for "overdue"; None
    says the checks were not run. ``encryption_recipients``: the configured age public keys, for the
    encryption line (whether the window's backups were client-side encrypted comes from the catalog).
    """
    if now.tzinfo is None:
        raise ValueError("build_report needs a timezone-aware 'now'")
    if trend_days < 1:
        raise ValueError(f"trend_days: must be at least 1, got {trend_days}")
    tz = zoneinfo.ZoneInfo(timezone)
    since = now - dt.timedelta(hours=window_hours)
    today = now.astimezone(tz).date()
    days = [today - dt.timedelta(days=trend_days - 1 - i) for i in range(trend_days)]
    trend_since = dt.datetime.combine(days[0], dt.time(0), tzinfo=tz)

    migrations.ensure_schema(pg)  # idempotent; a report may run before the first backup
    with pg.transaction(), pg.cursor(row_factory=dict_row) as cur:
        recent = cur.execute(sqlfiles.text("report/recent_backups.sql"), {"since": since, "now": now}).fetchall()
        trend_rows = cur.execute(sqlfiles.text("report/trend.sql"), {"since": trend_since, "now": now}).fetchall()
        drills = cur.execute(sqlfiles.text("report/last_drills.sql"), {"now": now}).fetchall()

    lines = [f"*PostgreSQL backup report*: {fmt_time(now, tz)}"]
    data: dict[str, Any] = {
        "generated_at": now.isoformat(),
        "timezone": timezone,
        "window": {"since": since.isoformat(), "until": now.isoformat()},
    }
    for section in (
        _recent_section(recent, window_hours, tz),
        _verification_section(recent, tz),
        _encryption_section(recent, encryption_recipients, tz),
        _rto_section(drills, rto_objective_seconds, tz),
        _storage_section(storage_by_tier),
        _overdue_section(findings),
        _trend_section(trend_rows, days, tz),
    ):
        key, section_lines, section_data = section
        lines.extend(section_lines)
        data[key] = section_data
    return Report(text="\n".join(lines), data=data)


# --- sections: each returns (data key, text lines, data) -----------------------------------------


def _recent_section(rows: list[dict], window_hours: float, tz: dt.tzinfo) -> tuple[str, list[str], Any]:
    ok = sum(r["status"] == "SUCCESS" for r in rows)
    lines = [f"*Last {window_hours:g} h*: {ok} succeeded, {len(rows) - ok} failed"]
    tiers: dict[str, dict[str, Any]] = {}
    for tier in _tiers_in(r["backup_type"] for r in rows):
        mine = [r for r in rows if r["backup_type"] == tier]
        good = [r for r in mine if r["status"] == "SUCCESS"]
        tiers[tier] = {
            "succeeded": len(good),
            "failed": len(mine) - len(good),
            "size_bytes": sum(r["file_size_bytes"] or 0 for r in good),
            "duration_seconds": sum(r["duration_seconds"] or 0 for r in good),
        }
        lines.append(f"• {tier}: {len(good)} succeeded, {len(mine) - len(good)} failed")
    backups = []
    for r in rows:
        when = fmt_time(r["backup_date"], tz)
        if r["status"] == "SUCCESS":
            flags = ("uploaded" if r["s3_uploaded"] else "NOT uploaded", "verified" if r["verified"] else "not verified")
            lines.append(
                f":white_check_mark: {slack_escape(r['target'])} {r['backup_type']} {when}: "
                f"{fmt_bytes(r['file_size_bytes'])} in {fmt_duration(r['duration_seconds'])}, {', '.join(flags)}"
            )
        else:
            step = f" in {r['failed_step']}" if r["failed_step"] else ""
            lines.append(f":x: {slack_escape(r['target'])} {r['backup_type']} {when}: FAILED{step}: {slack_escape(_short(r['error_message']))}")
        backups.append({
            "target": r["target"], "tier": r["backup_type"], "backup_date": r["backup_date"].isoformat(),
            "status": r["status"], "file_name": r["file_name"], "size_bytes": r["file_size_bytes"],
            "duration_seconds": r["duration_seconds"], "s3_uploaded": r["s3_uploaded"], "verified": r["verified"],
            "failed_step": r["failed_step"], "error": r["error_message"],
        })
    return "last_window", lines, {"succeeded": ok, "failed": len(rows) - ok, "tiers": tiers, "backups": backups}


def _verification_section(rows: list[dict], tz: dt.tzinfo) -> tuple[str, list[str], Any]:
    good = [r for r in rows if r["status"] == "SUCCESS"]
    unverified = [r for r in good if not r["verified"]]
    if not good:
        text = "*Verification*: no successful backup in the window to verify"
    else:
        text = f"*Verification*: {len(good) - len(unverified)} of {len(good)} successful backups verified"
        if unverified:
            text += "; not verified: " + ", ".join(
                f"{slack_escape(r['target'])} {r['backup_type']} {fmt_time(r['backup_date'], tz)}" for r in unverified
            )
    data = {"successful": len(good), "verified": len(good) - len(unverified),
            "not_verified": [{"target": r["target"], "tier": r["backup_type"],
                              "backup_date": r["backup_date"].isoformat()} for r in unverified]}
    return "verification", [text], data


def _encryption_section(rows: list[dict], recipients: Sequence[str], tz: dt.tzinfo) -> tuple[str, list[str], Any]:
    """Whether the window's successful backups were client-side encrypted (``encrypted`` true; false or NULL
    is S3 server-side encryption only), with the configured recipients."""
    good = [r for r in rows if r["status"] == "SUCCESS"]
    plain = [r for r in good if r["encrypted"] is not True]
    keys = f"age, {len(recipients)} recipient{'s' if len(recipients) != 1 else ''}" if recipients \
        else "encryption.recipients is empty"
    if not good:
        text = f"*Encryption*: no successful backup in the window ({keys})"
    elif not plain:
        text = f"*Encryption*: {keys}: {len(good)} of {len(good)} successful backups client-side encrypted"
        if not recipients:
            text = (f"*Encryption*: age: {len(good)} of {len(good)} successful backups client-side encrypted, but "
                    "encryption.recipients is empty now: the next ones will NOT be")
    elif len(plain) == len(good):
        text = (f"*Encryption*: :warning: NOT client-side encrypted (S3 SSE only): {len(good)} of {len(good)} "
                f"successful backups ({keys})")
    else:
        text = (f"*Encryption*: :warning: {len(good) - len(plain)} of {len(good)} successful backups client-side "
                f"encrypted ({keys}); NOT client-side encrypted (S3 SSE only): " + ", ".join(
                    f"{slack_escape(r['target'])} {r['backup_type']} {fmt_time(r['backup_date'], tz)}" for r in plain))
    data = {"recipients": len(recipients), "successful": len(good), "encrypted": len(good) - len(plain),
            "not_encrypted": [{"target": r["target"], "tier": r["backup_type"],
                               "backup_date": r["backup_date"].isoformat()} for r in plain]}
    return "encryption", [text], data


def _rto_section(drills: list[dict], objective: float, tz: dt.tzinfo) -> tuple[str, list[str], Any]:
    head = f"*RTO* (objective {fmt_duration(objective)})"
    per_target: dict[str, dict[str, Any]] = {}
    parts = []
    for target in sorted({d["target"] for d in drills}):
        mine = {d["status"]: d for d in drills if d["target"] == target}
        last_ok, last_failed = mine.get("SUCCESS"), mine.get("FAILED")
        measured = last_ok["total_seconds"] if last_ok else None
        within = measured is not None and measured <= objective
        entry: dict[str, Any] = {"measured_seconds": measured, "within_objective": within,
                                 "measured_at": last_ok["drill_date"].isoformat() if last_ok else None,
                                 "latest_status": "SUCCESS"}
        text = f"{slack_escape(target)}: "
        if last_failed and (not last_ok or last_failed["drill_date"] > last_ok["drill_date"]):
            # The newest drill failed: say so before any older measurement.
            entry.update(latest_status="FAILED", latest_failed_at=last_failed["drill_date"].isoformat(),
                         latest_error=last_failed["error_message"])
            text += (f"last drill {fmt_time(last_failed['drill_date'], tz)} FAILED: "
                     f"{slack_escape(_short(last_failed['error_message']))}; ")
        if measured is None:
            text += "no measured restore"
        else:
            text += (f"{fmt_duration(measured)} measured {fmt_time(last_ok['drill_date'], tz)} "
                     f"({last_ok['backup_type'] or 'unknown'} backup)")
        icon = ":white_check_mark:" if within and entry["latest_status"] == "SUCCESS" else ":warning:"
        if measured is not None and not within:
            text += ", over the objective"
        parts.append(f"{text} {icon}")
        per_target[target] = entry
    if not parts:
        parts = ["no restore drill recorded :warning:"]
    return "rto", [f"{head}: " + "; ".join(parts)], {"objective_seconds": objective, "targets": per_target}


def _storage_section(storage: dict[str, dict] | None) -> tuple[str, list[str], Any]:
    if storage is None:
        return "storage", ["*Storage (S3)*: not listed"], None
    parts, total = [], 0
    for tier in _tiers_in(storage, all_tiers=False):
        entry = storage[tier]
        if not isinstance(entry, dict) or not isinstance(entry.get("bytes"), int):
            raise ValueError(f"storage_by_tier[{tier!r}]: expected {{'bytes': int, 'objects': int}}, got {entry!r}")
        total += entry["bytes"]
        objects = entry.get("objects")
        parts.append(f"{tier} {fmt_bytes(entry['bytes'])}"
                     + (f" in {objects} object{'s' if objects != 1 else ''}" if objects is not None else ""))
    parts.append(f"total {fmt_bytes(total)}")
    return "storage", ["*Storage (S3)*: " + " · ".join(parts)], {"by_tier": storage, "total_bytes": total}


def _overdue_section(findings: Sequence[Finding] | None) -> tuple[str, list[str], Any]:
    if findings is None:
        return "overdue", ["*Overdue*: not checked (no monitor findings given)"], None
    failing = [f for f in findings if not f.ok]
    if not failing:
        return "overdue", [f"*Overdue*: nothing (all {len(findings)} checks pass)"], []
    lines = ["*Overdue*:"] + [
        f"{':rotating_light:' if f.severity == PAGE else ':warning:'} {slack_escape(f.message)}" for f in failing
    ]
    return "overdue", lines, [f.to_dict() for f in failing]


def _trend_section(rows: list[dict], days: list[dt.date], tz: dt.tzinfo) -> tuple[str, list[str], Any]:
    index = {d: i for i, d in enumerate(days)}
    targets = sorted({r["target"] for r in rows})
    series = []
    for target in targets:
        for tier in TIERS:
            sizes: list[float | None] = [None] * len(days)
            durations: list[float | None] = [None] * len(days)
            for r in rows:  # oldest first: a later run of the same day wins
                i = index.get(r["backup_date"].astimezone(tz).date())
                if r["target"] == target and r["backup_type"] == tier and i is not None:
                    sizes[i], durations[i] = r["file_size_bytes"], r["duration_seconds"]
            series.append({"target": target, "tier": tier, "size_bytes": sizes, "duration_seconds": durations})
    head = (f"*{len(days)}-day trend* (one column per day, {days[0]} to {days[-1]}, "
            "blank: no successful backup that day)")
    if not series:
        return "trend", [f"{head}: no successful backup"], {"days": [d.isoformat() for d in days], "series": []}
    label_width = max(len(f"{s['target']} {s['tier']}") for s in series)
    rendered = []
    for s in series:
        label = f"{s['target']} {s['tier']}".ljust(label_width)
        if all(v is None for v in s["size_bytes"]):
            rendered.append((label, None, None))
            continue
        size = f"size {sparkline(s['size_bytes'])} {_range(s['size_bytes'], fmt_bytes)}"
        duration = f"duration {sparkline(s['duration_seconds'])} {_range(s['duration_seconds'], fmt_duration)}"
        rendered.append((label, size, duration))
    size_width = max((len(size) for _, size, _ in rendered if size), default=0)
    body = [
        f"{label}  {size.ljust(size_width)}  {duration}" if size else f"{label}  no successful backup"
        for label, size, duration in rendered
    ]
    return "trend", [head, "```", *body, "```"], {"days": [d.isoformat() for d in days], "series": series}


# --- helpers -------------------------------------------------------------------------------------


def _range(values: list, fmt) -> str:
    present = [v for v in values if v is not None]
    if not present:
        return "no data"
    lo, hi = min(present), max(present)
    return fmt(lo) if lo == hi else f"{fmt(lo)}–{fmt(hi)}"


def _tiers_in(names: Iterable[str], *, all_tiers: bool = True) -> list[str]:
    """GFS order (with all three tiers when ``all_tiers``), then any other name seen."""
    seen = set(names)
    return [t for t in TIERS if all_tiers or t in seen] + sorted(seen - set(TIERS))


def _short(text: str | None) -> str:
    text = " ".join((text or "no error recorded").split())
    return text if len(text) <= ERROR_CHARS else text[: ERROR_CHARS - 3] + "..."


