"""The catalog table ``backup_logs``: one row per backup attempt (include/sql/catalog/backup_logs.sql). Airflow-free."""

from __future__ import annotations

from typing import Any

import psycopg

from pg_dataops.catalog.migrations import ensure_schema
from pg_dataops.common import sqlfiles

COLUMNS = (
    "backup_date", "backup_type", "target", "database_name", "file_name", "file_size_bytes",
    "checksum_sha256", "duration_seconds", "status", "error_message", "failed_step",
    "s3_bucket", "s3_key", "s3_uploaded", "verified", "verified_at", "dag_id", "run_id",
)
# Columns a row may leave out (NULL: not known to its writer, e.g. a row rebuilt from an old manifest).
OPTIONAL_COLUMNS = ("encrypted",)


def record(pg: psycopg.Connection, row: dict[str, Any]) -> int:
    """Insert (or update, for a re-run) one catalog row; returns its id."""
    missing = [c for c in COLUMNS if c not in row]
    if missing:
        raise ValueError(f"catalog row is missing {', '.join(missing)}")
    ensure_schema(pg)
    with pg.transaction():
        params = {c: row[c] for c in COLUMNS} | {c: row.get(c) for c in OPTIONAL_COLUMNS}
        return pg.execute(sqlfiles.text("catalog/record_backup.sql"), params).fetchone()[0]
