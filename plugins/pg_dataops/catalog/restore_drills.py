"""The catalog table ``restore_drills``: one row per restore drill, with its measured RTO
(include/sql/catalog/restore_drills.sql). Airflow-free."""

from __future__ import annotations

import datetime as dt
from typing import Any

import psycopg
from psycopg.rows import dict_row

from pg_dataops.catalog.migrations import ensure_schema
from pg_dataops.common import sqlfiles


def record(pg: psycopg.Connection, row: dict[str, Any]) -> int:
    """Insert one drill's row (also a failed drill's: ``pg_dataops.drill.rto.drill_row``); returns its id."""
    ensure_schema(pg)
    with pg.transaction():
        return pg.execute(sqlfiles.text("catalog/record_drill.sql"), row).fetchone()[0]


def rto_history(pg: psycopg.Connection, target: str, since: dt.datetime) -> list[tuple[dt.datetime, float]]:
    """``(drill_date, total_seconds)`` of the successful drills of ``target`` since ``since``, oldest first."""
    ensure_schema(pg)
    with pg.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(sqlfiles.text("catalog/drill_history.sql"), {"target": target, "since": since}).fetchall()
    return [(r["drill_date"], float(r["total_seconds"])) for r in rows]
