"""The catalog's schema: every table and view, created or brought up to date in one place. Airflow-free.

Each file under ``include/sql/catalog/`` is idempotent (IF NOT EXISTS / CREATE OR REPLACE) and they are
applied in order, under an advisory lock (mapped record tasks of a fleet may run this at once), by
whatever writes or reads the catalog first. A new table is one more file here, in the order of its
dependencies; a column added later is an ``ALTER TABLE ... ADD COLUMN IF NOT EXISTS`` in its table's file.
"""

from __future__ import annotations

import psycopg

from pg_dataops.common import sqlfiles

SCHEMA_FILES = (
    "catalog/backup_logs.sql",
    "catalog/restore_drills.sql",
    "catalog/monitor_alerts.sql",
    "catalog/base_backups.sql",
    "catalog/pitr_recoveries.sql",
    "catalog/restore_logs.sql",
    "catalog/failovers.sql",
    "catalog/views.sql",
)


def ensure_schema(pg: psycopg.Connection) -> None:
    with pg.transaction():
        pg.execute(sqlfiles.text("catalog/lock.sql"))
        for name in SCHEMA_FILES:
            pg.execute(sqlfiles.text(name))
