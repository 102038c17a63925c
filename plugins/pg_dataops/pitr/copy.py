"""The recovered database: counted, copied into the target server, and swapped in when asked. Airflow-free.

- :func:`check_recovered`: every table's exact row count in the recovered database (the scratch copy),
  and the runbook's counts (users, matches, messages when present).
- :func:`copy_database`: ``CREATE DATABASE {name}`` on the target server (refused if it exists), then
  ``pg_dump -Fc -Z0`` from the scratch server's socket piped into ``pg_restore --exit-on-error``, then every
  table counted again on the target and compared. The database is marked with a comment naming the run;
  on any failure it is dropped (it is ours), and a retried copy drops only a database carrying its own
  run's mark. The target's own database is never touched.
- :func:`swap_databases`: in one step, the target's database is closed to new sessions, its sessions
  ended, renamed to ``{name}_before_pitr_{stamp}`` (kept), and the copy renamed to its name.
- :func:`switch_over_commands` / :func:`rollback_commands`: the same by hand, correctly quoted.
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from collections.abc import Mapping
from typing import Any

import psycopg
from psycopg import sql

from pg_dataops.common import pg as pgtools
from pg_dataops.common import sqlfiles
from pg_dataops.common.databases import (  # noqa: F401 - re-exported: pitr's callers and tests use copy.*
    MAINTENANCE_DATABASE,
    DatabaseExists,
    SwapFailed,
    database_exists,
    database_facts,
    drop_database,
    rollback_commands,
    swap_databases,
    switch_over_commands,
)
from pg_dataops.common.errors import BackupError, DatabaseUnreachable, VerificationFailed, redact

RUNBOOK_TABLES = ("public.users", "public.matches", "public.messages")


class CopyFailed(BackupError):
    """pg_dump or pg_restore failed, or the copy's counts differ from the recovered database's."""


# --- counting ---------------------------------------------------------------------------------------------

def table_counts(conn: pgtools.PgConn) -> dict[str, int]:
    """Exact row count of every ordinary table (extension-owned ones aside, like pg_backup's verification)."""
    pg = pgtools.connect(conn, autocommit=True)
    try:
        tables = pg.execute(sqlfiles.text("dump/list_tables.sql")).fetchall()
        return {f"{s}.{t}": pg.execute(sqlfiles.composed("dump/count_rows.sql", schema=s, table=t)).fetchone()[0]
                for s, t in tables}
    finally:
        pg.close()


def runbook_counts(counts: Mapping[str, int]) -> dict[str, int]:
    """The runbook's checks: users, matches and messages (those present)."""
    return {name.split(".", 1)[1]: counts[name] for name in RUNBOOK_TABLES if name in counts}


def check_recovered(conn: pgtools.PgConn) -> dict[str, Any]:
    """Count the recovered database (``conn``: the scratch server, the target's database): it must hold tables."""
    started = time.monotonic()
    try:
        counts = table_counts(conn)
    except DatabaseUnreachable as exc:
        if "does not exist" not in str(exc):
            raise
        raise VerificationFailed(f"the recovered cluster has no database {conn.dbname!r}: it did not exist at the "
                                 "target time (choose a later target_time)") from None
    if not counts:
        raise VerificationFailed(f"the recovered database {conn.dbname!r} holds no tables: nothing to copy (was "
                                 "the target's database empty at that time?)")
    return {"database": conn.dbname, "tables": len(counts), "rows": sum(counts.values()), "counts": counts,
            "runbook": runbook_counts(counts), "check_seconds": round(time.monotonic() - started, 3)}


def compare_counts(expected: Mapping[str, int], got: Mapping[str, int]) -> list[str]:
    out = []
    for name in sorted(set(expected) | set(got)):
        if name not in got:
            out.append(f"table {name} is missing from the copy")
        elif name not in expected:
            out.append(f"table {name} is in the copy but not in the recovered database")
        elif got[name] != expected[name]:
            out.append(f"table {name}: {got[name]} rows in the copy, {expected[name]} recovered")
    return out


# --- copying into the target server ---------------------------------------------------------------------

def copy_database(source: pgtools.PgConn, admin: pgtools.PgConn, name: str, *, expected: Mapping[str, int],
                  marker: str, protected: tuple[str, ...], pg_bin_root: str,
                  timeout: float | None = None) -> dict[str, Any]:
    """Copy ``source`` (the recovered database on the scratch server) into a new database ``name`` on
    ``admin``'s server, and prove it by counts against ``expected``.

    ``marker``: the comment that marks the database as this run's (a retry may drop only that).
    ``protected``: names never created, dropped or written here (the target's own database).
    """
    if name in protected:
        raise DatabaseExists(f"refusing to copy into {name!r}: it is the target's own database")
    started = time.monotonic()
    pg = pgtools.connect(admin.with_db(MAINTENANCE_DATABASE), autocommit=True)
    try:
        existing = database_facts(pg, name)
        if existing is not None:
            if existing["comment"] != marker:
                raise DatabaseExists(f"database {name!r} exists on the target server now (it did not when this run "
                                     "was validated): refusing to touch it; choose another database_name")
            drop_database(pg, name)  # an earlier try of this very run left it
        src = pgtools.connect(source, autocommit=True)
        try:
            facts = database_facts(src, source.dbname)
            source_major = pgtools.server_major(src)
        finally:
            src.close()
        target_major = pgtools.server_major(pg)
        pg.execute(sql.SQL(sqlfiles.text("pitr/recover_create_database.sql")).format(
            name=sql.Identifier(name), encoding=sql.Literal(facts["encoding"]), collate=sql.Literal(facts["collate"]),
            ctype=sql.Literal(facts["ctype"])))
        try:
            pg.execute(sql.SQL(sqlfiles.text("pitr/recover_comment_database.sql")).format(
                name=sql.Identifier(name), comment=sql.Literal(marker)))
            dump_restore(source, admin.with_db(name), source_major=source_major, target_major=target_major,
                         pg_bin_root=pg_bin_root, timeout=timeout)
            copy_seconds = time.monotonic() - started
            got = table_counts(admin.with_db(name))
            mismatches = compare_counts(expected, got)
            if mismatches:
                raise VerificationFailed(f"the copy {name!r} does not match the recovered database: "
                                         + "; ".join(mismatches[:5]))
            warnings = _set_owner(pg, name, facts["owner"], admin.user)
        except BaseException:
            drop_database(pg, name)
            raise
    finally:
        pg.close()
    return {"database": name, "tables": len(got), "rows": sum(got.values()), "counts_match": True,
            "owner": facts["owner"], "warnings": warnings, "copy_seconds": round(copy_seconds, 3),
            "source_major": source_major, "target_major": target_major}


def _set_owner(pg: psycopg.Connection, name: str, owner: str, us: str) -> list[str]:
    if owner == us:
        return []
    if not pg.execute(sqlfiles.text("pitr/recover_role_exists.sql"), {"role": owner}).fetchone()[0]:
        return [f"the recovered database was owned by role {owner!r}, which does not exist on the target server: "
                f"{name} is owned by {us!r}"]
    try:
        pg.execute(sqlfiles.composed("pitr/recover_set_owner.sql", name=name, owner=owner))
    except psycopg.Error as exc:
        return [f"could not give {name} to its recovered owner {owner!r}: {str(exc).strip()}"]
    return []


def dump_restore(source: pgtools.PgConn, dest: pgtools.PgConn, *, source_major: int, target_major: int,
                 pg_bin_root: str, timeout: float | None = None) -> None:
    """``pg_dump -Fc -Z0`` of ``source`` piped into ``pg_restore --exit-on-error`` into ``dest`` (no file:
    the archive passes through a pipe). Passwords travel in each tool's environment only."""
    pg_dump = pgtools.client_binary("pg_dump", source_major, pg_bin_root)
    pg_restore = pgtools.client_binary("pg_restore", target_major, pg_bin_root)
    with tempfile.TemporaryFile() as dump_err, tempfile.TemporaryFile() as restore_err:
        dump = subprocess.Popen([pg_dump, "-Fc", "-Z0", "-d", source.dbname], stdout=subprocess.PIPE,
                                stderr=dump_err, env=source.client_tool_env(source_major), start_new_session=True)
        try:
            restore = subprocess.Popen([pg_restore, "--exit-on-error", "-d", dest.dbname], stdin=dump.stdout,
                                       stdout=subprocess.DEVNULL, stderr=restore_err,
                                       env=dest.client_tool_env(target_major), start_new_session=True)
        except BaseException:
            dump.kill()
            dump.wait()
            raise
        dump.stdout.close()  # pg_restore holds it: pg_dump sees a broken pipe if pg_restore stops
        try:
            restore_rc = restore.wait(timeout=timeout)
            dump_rc = dump.wait(timeout=60)
        except subprocess.TimeoutExpired:
            for proc in (dump, restore):
                proc.kill()
                proc.wait()
            raise CopyFailed(f"pg_dump | pg_restore into {dest.dbname} did not finish within {timeout:g} s") from None
        except BaseException:
            for proc in (dump, restore):
                proc.kill()
                proc.wait()
            raise
        if restore_rc != 0 or dump_rc != 0:
            texts = []
            for what, rc, err in (("pg_restore", restore_rc, restore_err), ("pg_dump", dump_rc, dump_err)):
                if rc != 0:
                    err.seek(0)
                    text = err.read().decode(errors="replace").strip()[-800:]
                    texts.append(f"{what} exited with {rc}: {redact(text, dest.password) or '(no message)'}")
            raise CopyFailed(f"copying the recovered database into {dest.dbname} failed: " + " | ".join(texts))


def preview(plan: Mapping[str, Any], checked: Mapping[str, Any], copied: Mapping[str, Any], old: str) -> dict[str, Any]:
    """What a swap would change, for the approval's body (Markdown) and the report: the names, the counts,
    where the old database is kept, the commands to do it by hand and to roll back."""
    production, recovered = plan["source_database"], copied["database"]
    exists = bool(plan.get("source_exists", True))
    commands = switch_over_commands(production, recovered, old, production_exists=exists)
    rollback = rollback_commands(production, recovered, old) if exists else []
    runbook = ", ".join(f"{k} {v:,}" for k, v in (checked.get("runbook") or {}).items())
    kept = (f"- **{production}** (the current database) is renamed to **{old}** and kept: nothing is dropped"
            if exists else f"- there is no database **{production}** now: the copy only takes its name")
    markdown = "\n".join([
        f"### Swap {recovered} into place as {production}",
        f"Point-in-time recovery of **{plan['target']}** to **{plan.get('target_time_text') or plan['target_time']}** "
        f"(base backup {plan['base_backup']}).",
        "",
        f"- **{recovered}** (the recovered copy: {copied['tables']} tables, {copied['rows']:,} rows"
        + (f"; {runbook}" if runbook else "") + f") is renamed to **{production}**",
        kept,
        f"- every session on **{production}** is ended; it accepts no new sessions during the two renames",
        "",
        "The same by hand (psql as a superuser, database postgres):",
        "```sql", *commands, "```",
        "To roll back afterwards:" if rollback else "",
        *(["```sql", *rollback, "```"] if rollback else []),
    ])
    return {"old_database": old if exists else None, "commands": commands, "rollback": rollback,
            "markdown": markdown, "expected_confirm": production}


def run_marker(dag_id: str, run_id: str, target: str, target_time: str) -> str:
    """The comment on the database a recovery creates: what it is, and which run may drop it on a retry."""
    return f"pg_dataops {dag_id} run {run_id}: {target} recovered to {target_time}"
