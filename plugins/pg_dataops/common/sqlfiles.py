"""Every SQL statement lives in include/sql/; this loads them. Airflow-free."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from psycopg import sql

SQL_ROOT = Path(__file__).resolve().parents[3] / "include" / "sql"


@cache
def text(name: str) -> str:
    """The text of include/sql/<name>, e.g. text('catalog/backup_logs.sql')."""
    return (SQL_ROOT / name).read_text()


def composed(sql_file: str, /, **identifiers: str) -> sql.Composed:
    """A statement whose {placeholders} are identifiers, quoted by psycopg (never by f-strings)."""
    return sql.SQL(text(sql_file)).format(**{k: sql.Identifier(v) for k, v in identifiers.items()})
