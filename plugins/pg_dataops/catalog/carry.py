"""The catalog follows production through a swap. Airflow-free.

The runbook keeps its catalog (backup_logs, ...) in the production database itself, and so does our default
config (``catalog_conn_id: glimpse_db``). A full recovery or a PITR swap renames production away: the catalog's
rows since the restored backup (backups, drills, open monitor alerts, this very recovery's history) would stay
in the kept database while the new production database carries the catalog as of the backup. Right after the
swap, :func:`carry_over` replaces the new database's catalog rows with the kept database's, in one
transaction, so every DAG reads and writes the same history as before.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from pg_dataops.catalog.migrations import ensure_schema
from pg_dataops.common import pg as pgtools
from pg_dataops.common import sqlfiles

# Every table of the catalog (views are derived); in dependency order of migrations.SCHEMA_FILES.
CATALOG_TABLES = ("backup_logs", "restore_drills", "monitor_alerts", "base_backups", "pitr_recoveries",
                  "restore_logs", "failovers")


def same_database(a: pgtools.PgConn, b: pgtools.PgConn) -> bool:
    """Whether two connections name the same database of the same server (as configured)."""
    return (a.host, int(a.port), a.dbname) == (b.host, int(b.port), b.dbname)


def _columns(pg: psycopg.Connection, table: str) -> list[str]:
    return [r[0] for r in pg.execute(sqlfiles.text("catalog/carry_columns.sql"), {"table": table}).fetchall()]


def carry_over(source: pgtools.PgConn, dest: pgtools.PgConn) -> dict[str, Any]:
    """Replace ``dest``'s catalog rows with ``source``'s (same server: the kept database and the new
    production). Tables missing in ``source`` are left alone; ``dest`` gets every table first (the restored
    backup may predate some). Columns present on both sides are copied. Returns rows per table."""
    src = pgtools.connect(source, autocommit=True)
    dst = pgtools.connect(dest, autocommit=True)
    carried: dict[str, int] = {}
    try:
        ensure_schema(dst)
        with dst.transaction():
            for table in CATALOG_TABLES:
                theirs = _columns(src, table)
                if not theirs:
                    continue
                ours = _columns(dst, table)
                common = [c for c in ours if c in theirs]
                name = sql.Identifier(table)
                cols = sql.SQL(", ").join(sql.Identifier(c) for c in common)
                # Our own table, in the database the swap just put in place: its rows are the backup's copy.
                dst.execute(sql.SQL("DELETE FROM {}").format(name))
                with src.cursor().copy(sql.SQL("COPY (SELECT {} FROM {}) TO STDOUT").format(cols, name)) as out, \
                        dst.cursor().copy(sql.SQL("COPY {} ({}) FROM STDIN").format(name, cols)) as into:
                    for block in out:
                        into.write(block)
                carried[table] = dst.execute(sql.SQL("SELECT count(*) FROM {}").format(name)).fetchone()[0]
                if "id" in common:
                    dst.execute(sqlfiles.composed("catalog/carry_setval.sql", table=table), {"table": table})
    finally:
        src.close()
        dst.close()
    return {"carried": True, "from": source.dbname, "to": dest.dbname, "rows": carried}
