"""Text formatting shared by alerts, reports, drills and retention: times, sizes, durations, Slack escaping.
Airflow-free."""

from __future__ import annotations

import datetime as dt


def fmt_time(moment: dt.datetime, tz: dt.tzinfo | str, *, seconds: bool = False) -> str:
    """2026-11-30 02:00 JST: a moment in the configured zone (a tzinfo or its name), as people read it;
    ``seconds`` for times a person types back (a recovery target: 2026-11-30 02:00:41 JST)."""
    if isinstance(tz, str):
        import zoneinfo

        tz = zoneinfo.ZoneInfo(tz)
    return moment.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S %Z" if seconds else "%Y-%m-%d %H:%M %Z")


def fmt_instant(moment: dt.datetime, tz: dt.tzinfo | str) -> str:
    """'2026-12-01 14:29:41 KST (2026-12-01T05:29:41Z)': to the second, in the configured zone to read and in UTC
    to paste into a trigger form (recovery targets and windows)."""
    utc = moment.astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    return f"{fmt_time(moment, tz, seconds=True)} ({utc})"


def slack_escape(text: str) -> str:
    """Slack mrkdwn needs &, < and > escaped, or they become links and mentions."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def fmt_bytes(n: float | int | None) -> str:
    """1536 -> '1.5 KiB'; binary units, one decimal (bytes as an integer)."""
    if n is None:
        return "unknown size"
    value = float(n)
    if abs(value) < 1024:
        return f"{int(value)} B"
    units = ("KiB", "MiB", "GiB", "TiB", "PiB")
    i = 0
    value /= 1024
    while abs(value) >= 1024 and i < len(units) - 1:
        value /= 1024
        i += 1
    unit = units[i]
    return f"{value:.1f} {unit}"


def fmt_duration(seconds: float | int | None) -> str:
    """42.04 -> '42.0 s', 185 -> '3 min 5 s', 3720 -> '1 h 2 min', 14400 -> '4 h'."""
    if seconds is None:
        return "unknown duration"
    s = float(seconds)
    if round(s, 1) < 60:  # 59.97 is "1 min", not "60.0 s"
        return f"{s:.1f} s"
    total = int(s + 0.5)
    if total < 3600:
        m, sec = divmod(total, 60)
        return f"{m} min" + (f" {sec} s" if sec else "")
    h, rest = divmod(total, 3600)
    m = rest // 60
    return f"{h} h" + (f" {m} min" if m else "")
