"""Whole databases on a server: facts, existence, drop, and the rename swap that puts a copy in place. Airflow-free.

Shared by every capability that creates a database beside production and may swap it in
(pg_pitr_restore, pg_full_recovery): :func:`swap_databases` closes production to new sessions, ends its
sessions and renames both in one transaction, keeping the old one; :func:`switch_over_commands` and
:func:`rollback_commands` say the same as SQL to run by hand.
"""

from __future__ import annotations

import time
from typing import Any

import psycopg
from psycopg import sql

from pg_dataops.common import pg as pgtools
from pg_dataops.common import sqlfiles
from pg_dataops.common.errors import PermanentError

MAINTENANCE_DATABASE = "postgres"


class DatabaseExists(PermanentError):
    """The database the copy would create exists (and is not this run's own leftover)."""


class SwapFailed(PermanentError):
    """The rename swap did not happen; both databases keep their names."""


def database_facts(pg: psycopg.Connection, name: str) -> dict[str, Any] | None:
    row = pg.execute(sqlfiles.text("databases/database_facts.sql"), {"name": name}).fetchone()
    if row is None:
        return None
    return dict(zip(("encoding", "collate", "ctype", "owner", "allow_connections", "comment"), row, strict=True))


def database_exists(admin: pgtools.PgConn, name: str) -> bool:
    pg = pgtools.connect(admin.with_db(MAINTENANCE_DATABASE), autocommit=True)
    try:
        return bool(pg.execute(sqlfiles.text("databases/database_exists.sql"), {"name": name}).fetchone()[0])
    finally:
        pg.close()


def drop_database(pg: psycopg.Connection, name: str) -> None:
    pg.execute(sqlfiles.composed("databases/drop_database.sql", name=name))


def _quote(name: str) -> str:
    return sql.Identifier(name).as_string(None)


def switch_over_commands(production: str, recovered: str, old: str, *, production_exists: bool = True) -> list[str]:
    """What the swap does, as SQL to run by hand (psql as a superuser, connected to the postgres database)."""
    if not production_exists:
        return [f"ALTER DATABASE {_quote(recovered)} RENAME TO {_quote(production)};"]
    return [
        f"ALTER DATABASE {_quote(production)} WITH ALLOW_CONNECTIONS false;",
        f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = "
        f"{sql.Literal(production).as_string(None)};",
        f"ALTER DATABASE {_quote(production)} RENAME TO {_quote(old)};",
        f"ALTER DATABASE {_quote(recovered)} RENAME TO {_quote(production)};",
        f"ALTER DATABASE {_quote(old)} WITH ALLOW_CONNECTIONS true;",
    ]


def rollback_commands(production: str, recovered: str, old: str) -> list[str]:
    """Undo a swap: the recovered database back to its own name, the kept one back to the production name."""
    return [
        f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = "
        f"{sql.Literal(production).as_string(None)};",
        f"ALTER DATABASE {_quote(production)} RENAME TO {_quote(recovered)};",
        f"ALTER DATABASE {_quote(old)} RENAME TO {_quote(production)};",
    ]


def swap_databases(admin: pgtools.PgConn, *, production: str, recovered: str, old: str, marker: str | None = None,
                   attempts: int = 5) -> dict[str, Any]:
    """Put the recovered copy in production's place, keeping the old database as ``old``.

    The production database is closed to new sessions (ALLOW_CONNECTIONS false), its sessions are ended,
    and both renames run in one transaction (retried while ended sessions are still leaving); the kept
    database then accepts connections again. Any failure restores production's ALLOW_CONNECTIONS and
    leaves both names as they were. ``marker``: the copy's comment (:func:`run_marker`); a retry that finds
    it on ``production`` already (an earlier try swapped, then failed) reports the swap instead of failing.
    """
    started = time.monotonic()
    pg = pgtools.connect(admin.with_db(MAINTENANCE_DATABASE), autocommit=True)
    try:
        prod = database_facts(pg, production)
        if marker and prod is not None and prod["comment"] == marker and database_facts(pg, recovered) is None:
            kept = database_facts(pg, old)
            if kept is not None and not kept["allow_connections"]:
                pg.execute(sql.SQL(sqlfiles.text("databases/allow_connections.sql")).format(
                    name=sql.Identifier(old), allow=sql.SQL("true")))
            return {"swapped": True, "production": production, "old_database": old if kept else None,
                    "sessions_ended": 0, "swap_seconds": round(time.monotonic() - started, 3),
                    "note": "already swapped by an earlier try of this run"}
        if database_facts(pg, recovered) is None:
            raise SwapFailed(f"the recovered database {recovered!r} does not exist on the target server: nothing to "
                             "swap in")
        if database_facts(pg, old) is not None:
            raise SwapFailed(f"database {old!r} exists already: refusing to rename {production!r} onto it")
        if prod is None:  # production was dropped (the damage itself): the copy only takes its name
            pg.execute(sqlfiles.composed("databases/rename_database.sql", old=recovered, new=production))
            return {"swapped": True, "production": production, "old_database": None,
                    "sessions_ended": 0, "swap_seconds": round(time.monotonic() - started, 3)}
        allowed = bool(prod["allow_connections"])
        pg.execute(sql.SQL(sqlfiles.text("databases/allow_connections.sql")).format(
            name=sql.Identifier(production), allow=sql.SQL("false")))
        ended = 0
        try:
            for attempt in range(1, attempts + 1):
                for name in (production, recovered):
                    ended += pg.execute(sqlfiles.text("databases/end_sessions.sql"), {"name": name}).fetchone()[0]
                try:
                    with pg.transaction():
                        pg.execute(sqlfiles.composed("databases/rename_database.sql", old=production, new=old))
                        pg.execute(sqlfiles.composed("databases/rename_database.sql", old=recovered, new=production))
                    break
                except psycopg.errors.ObjectInUse:
                    if attempt == attempts:
                        raise
                    time.sleep(1)
        except BaseException as exc:
            pg.execute(sql.SQL(sqlfiles.text("databases/allow_connections.sql")).format(
                name=sql.Identifier(production), allow=sql.SQL("true" if allowed else "false")))
            if isinstance(exc, psycopg.Error):
                raise SwapFailed(f"the swap did not happen ({str(exc).strip()}); {production!r} and {recovered!r} "
                                 "keep their names") from None
            raise
        pg.execute(sql.SQL(sqlfiles.text("databases/allow_connections.sql")).format(
            name=sql.Identifier(old), allow=sql.SQL("true" if allowed else "false")))
    finally:
        pg.close()
    return {"swapped": True, "production": production, "old_database": old, "sessions_ended": ended,
            "swap_seconds": round(time.monotonic() - started, 3)}
