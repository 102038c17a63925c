"""The catalog table ``monitor_alerts``: the state last alerted per monitor finding key
(include/sql/catalog/monitor_alerts.sql). Airflow-free; the rules that use it are in
:mod:`pg_dataops.observe.alerts`."""

from __future__ import annotations

import datetime as dt
from typing import Any

import psycopg
from psycopg.rows import dict_row

from pg_dataops.catalog.migrations import ensure_schema
from pg_dataops.common import sqlfiles


def load_state(pg: psycopg.Connection) -> dict[str, dict[str, Any]]:
    """``{dedup_key: {"dedup_key", "failing", "message", "changed_at", "last_seen_at", "severity"}}``."""
    ensure_schema(pg)  # idempotent; the first monitor run may come before any other catalog writer
    with pg.transaction(), pg.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(sqlfiles.text("monitor/alert_state.sql")).fetchall()
    return {r["dedup_key"]: r for r in rows}


def record(pg: psycopg.Connection, dedup_key: str, *, failing: bool, message: str, severity: str,
           now: dt.datetime) -> None:
    """The state just alerted (or just seen) for one key; ``changed_at`` moves only when ``failing`` flips."""
    with pg.transaction():
        pg.execute(sqlfiles.text("monitor/upsert_alert.sql"), {
            "dedup_key": dedup_key, "failing": failing, "message": message, "severity": severity, "now": now,
        })


def forget(pg: psycopg.Connection, dedup_key: str) -> None:
    """Delete a key no check produces any more, once its clear was sent."""
    with pg.transaction():
        pg.execute(sqlfiles.text("monitor/forget_alert.sql"), {"dedup_key": dedup_key})
