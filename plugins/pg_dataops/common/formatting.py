"""Text formatting shared by alerts, reports and retention: times and Slack escaping. Airflow-free."""

from __future__ import annotations

import datetime as dt


def fmt_time(moment: dt.datetime, tz: dt.tzinfo) -> str:
    """2026-11-30 02:00 JST: a moment in the configured zone, as people read it."""
    return moment.astimezone(tz).strftime("%Y-%m-%d %H:%M %Z")


def slack_escape(text: str) -> str:
    """Slack mrkdwn needs &, < and > escaped, or they become links and mentions."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
