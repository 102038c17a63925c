"""pg_table_restore: one table back as it was in a backup (or in an already recovered database). Airflow-free.

The runbook's ``restore-table.sh`` restored into a second database and then ran ``INSERT ... SELECT`` across
databases (PostgreSQL cannot), asked ``read -p`` which option, pasted ``$TABLE_NAME`` into SQL, and its
"replace" was ``TRUNCATE ... CASCADE``, which silently empties every table that references this one. Here:

- :func:`plan_restore` (validate): the form's params, the backup (or ``from_database``), the confirm; nothing
  is created. A table name is ``[schema.]table`` or refused; it reaches SQL only as a quoted identifier.
- :func:`stage`: the archive (downloaded and proven, or ``pg_dump -Fc`` of just that table from
  ``from_database``); the table must be in its table of contents (else: near matches) before a staging
  schema ``<staging_schema>_<run hash>`` is created in the target database and the backup's rows copied in.
- :func:`preview`: current / backup / to insert / to replace / unchanged / to delete, and the tables whose
  foreign keys point at this one with what would happen to their rows. ``replace`` is refused when other
  tables reference the table, unless ``cascade``.
- :func:`apply` (after the approval): a safety dump of the table to S3 first, then in ONE transaction
  DELETE / UPDATE (all columns) / INSERT against the staging rows, re-counted before commit; a dropped
  table is re-created from the archive with its indexes, constraints, defaults and sequences.
- :func:`cleanup` drops the staging schema and the work files; :func:`report_row` is the catalog row.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
from collections.abc import Callable, Mapping
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from pg_dataops.backup import manifest
from pg_dataops.common import age, databases, fetch, s3, sqlfiles
from pg_dataops.common import pg as pgtools
from pg_dataops.common.config import Config
from pg_dataops.common.errors import BackupError, PermanentError, redact
from pg_dataops.common.formatting import fmt_bytes
from pg_dataops.common.guards import as_bool
from pg_dataops.common.pg import PgConn
from pg_dataops.restore import archive, audit, request, source
from pg_dataops.restore.request import RequestRefused

MODES = ("dry_run", "replace", "merge_missing")
COUNT_KEYS = ("current_rows", "backup_rows", "to_insert", "to_replace", "unchanged", "to_delete")
ON_DELETE = {"a": "NO ACTION", "r": "RESTRICT", "c": "CASCADE", "n": "SET NULL", "d": "SET DEFAULT"}


class TableRestoreFailed(BackupError):
    """The apply did not leave the table as the preview said: rolled back, nothing changed."""


# ---- validate ---------------------------------------------------------------------------------------------

def parse_mode(value: Any) -> str:
    mode = request.text_param({"mode": value}, "mode") or "dry_run"
    if mode not in MODES:
        raise RequestRefused(f"mode {mode!r} is not one of {', '.join(MODES)}")
    return mode


def staging_schema_name(cfg: Config, run_id: str) -> str:
    """``<restore.staging_schema>_<hash of the run id>``: this run's own schema, never another run's."""
    return f"{cfg.restore.staging_schema}_{hashlib.sha256(run_id.encode()).hexdigest()[:10]}"


def plan_restore(cfg: Config, params: Mapping[str, Any], *, run_id: str, connect_target: Callable[[str], PgConn],
                 find_backup: Callable[[str, str | None, str | None], dict], prove_identity: Callable[[dict], Any],
                 database_exists: Callable[[PgConn, str], bool] = databases.database_exists) -> dict[str, Any]:
    """The run's plan from the trigger form, or RequestRefused naming the cause; nothing is created.

    ``connect_target(target)``: the target's PgConn (its database); ``find_backup(target, date, key)``: the
    backup (:func:`source.find_backup`); ``prove_identity(manifest)``: an encrypted backup's identity must
    open it before anything is downloaded."""
    target = request.text_param(params, "target")
    if target not in cfg.target_names:
        raise RequestRefused(f"target {target!r} is not configured (configured: {', '.join(cfg.target_names)})")
    conn = connect_target(target)
    database = conn.dbname
    schema, name = archive.parse_table_param(request.text_param(params, "table"))
    mode = parse_mode(params.get("mode"))
    try:
        cascade = as_bool(params.get("cascade", False), "cascade")
    except PermanentError as exc:
        raise RequestRefused(str(exc)) from None
    choice = request.parse_backup_choice(params, allow_from_database=True)
    if choice["from_database"]:
        request.check_from_database(choice["from_database"], target_database=database,
                                    exists=lambda name: database_exists(conn, name))
    request.check_confirm(request.text_param(params, "confirm"), database)
    backup = None
    if not choice["from_database"]:
        backup = find_backup(target, choice["backup_date"], choice["backup_key"])
        fmt = backup["manifest"].get("format", "custom")
        if fmt != "custom":
            raise RequestRefused(f"{backup['key']} is a {fmt}-format backup: one table can be read only out of a "
                                 "custom-format (-Fc) backup; use pg_full_recovery or choose another backup")
        prove_identity(backup["manifest"])
    return {
        "target": target, "database": database, "table": f"{schema}.{name}" if schema else name,
        "mode": mode, "cascade": cascade, "backup": backup, "backup_key": backup["key"] if backup else None,
        "from_database": choice["from_database"], "expected_confirm": database,
        "staging_schema": staging_schema_name(cfg, run_id),
        "work_dir": source.work_dir(cfg.local_root, run_id, target),
        "source_text": (f"database {choice['from_database']}" if choice["from_database"]
                        else f"backup {backup['key']} ({backup['local_date']})"),
    }


def start_text(plan: Mapping[str, Any], who: str) -> str:
    return (f":arrows_counterclockwise: pg_table_restore started by {who}: table {plan['table']} of "
            f"{plan['target']} ({plan['database']}) from {plan['source_text']}, mode {plan['mode']}"
            + (", cascade" if plan["cascade"] else ""))


def fetch_backup_archive(cfg: Config, client, plan: Mapping[str, Any], identity: Callable[[], str]) -> str:
    """The plan's backup downloaded into the work dir (space checked first), proven and decrypted: its path."""
    backup = plan["backup"]
    encrypted = bool(fetch.encryption_recipients(backup["manifest"]))
    source.check_free_space(plan["work_dir"], backup["size"] * (2 if encrypted else 1))
    return source.fetch_archive(client, cfg, backup, plan["work_dir"], identity=identity,
                                timeout=cfg.task_timeout_minutes * 60)["path"]


# ---- stage ------------------------------------------------------------------------------------------------

def _tool(pg: psycopg.Connection, cfg: Config, name: str) -> str:
    return pgtools.client_binary(name, pgtools.server_major(pg), cfg.pg_bin_root)


def _run(argv: list[str], env: dict[str, str], timeout: float | None, what: str) -> None:
    with tempfile.TemporaryFile() as err:
        try:
            done = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=err, env=env, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise BackupError(f"{what} did not finish within {timeout:g} s") from None
        if done.returncode != 0:
            err.seek(0)
            raise BackupError(f"{what} exited with {done.returncode}: "
                              f"{redact(err.read().decode(errors='replace').strip()[-800:])}")


def dump_pattern(schema: str, name: str) -> str:
    """A pg_dump ``--table`` pattern that matches exactly this table (quoted: no pattern characters)."""
    return '"' + schema.replace('"', '""') + '"."' + name.replace('"', '""') + '"'


def database_tables(pg: psycopg.Connection) -> list[archive.TocTable]:
    """The ordinary tables of a database (for resolving the form's name in ``from_database``)."""
    rows = pg.execute("SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                      "WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
                      "AND n.nspname NOT LIKE 'pg\\_toast%' ORDER BY 1, 2").fetchall()
    return [archive.TocTable(dump_id=0, schema=s, name=n, has_data=True) for s, n in rows]


def dump_from_database(cfg: Config, plan: Mapping[str, Any], source_conn: PgConn) -> str:
    """``pg_dump -Fc -Z0`` of just the form's table from ``from_database`` into the work dir; its path."""
    with pgtools.connect(source_conn, autocommit=True) as pg:
        found = archive.resolve_table(plan["table"], database_tables(pg), what=f"database {source_conn.dbname}")
        pg_dump = _tool(pg, cfg, "pg_dump")
        major = pgtools.server_major(pg)
    os.makedirs(plan["work_dir"], exist_ok=True)
    path = os.path.join(plan["work_dir"], "from_database.dump")
    _run([pg_dump, "-Fc", "-Z0", "--strict-names", f"--table={dump_pattern(found.schema, found.name)}", "-f", path,
          source_conn.dbname], source_conn.client_tool_env(major), cfg.task_timeout_minutes * 60,
         f"pg_dump of {found.qualified} from {source_conn.dbname}")
    return path


def columns_of(pg: psycopg.Connection, schema: str, name: str) -> list[dict[str, Any]]:
    """The table's columns (:file:`table_columns.sql`); [] when it does not exist."""
    with pg.cursor(row_factory=dict_row) as cur:
        return cur.execute(sqlfiles.text("restore/table_columns.sql"), {"schema": schema, "name": name}).fetchall()


def column_differences(backup: list[dict], current: list[dict]) -> list[str]:
    """What differs between the backup's columns and the table's now (names and types), in words."""
    b = {c["name"]: c["type"] for c in backup}
    n = {c["name"]: c["type"] for c in current}
    out = []
    if only_backup := [c for c in b if c not in n]:
        out.append("only in the backup: " + ", ".join(only_backup))
    if only_now := [c for c in n if c not in b]:
        out.append("only in the table now: " + ", ".join(only_now))
    out += [f"{c} is {b[c]} in the backup but {n[c]} now" for c in b if c in n and b[c] != n[c]]
    return out


def check_target_table(mode: str, qualified: str, current: list[dict]) -> None:
    """The refusals that need only the table as it is now (before anything is created)."""
    if current and current[0]["relkind"] not in ("r",):
        raise RequestRefused(f"{qualified} in the target database is not an ordinary table (relkind "
                             f"{current[0]['relkind']}): restore it with pg_full_recovery or by hand")
    if mode == "merge_missing" and not current:
        raise RequestRefused(f"{qualified} does not exist in the target database: merge_missing needs the table; "
                             "use mode replace to re-create it from the backup")
    if mode == "merge_missing" and not any(c["in_pk"] for c in current):
        raise RequestRefused(f"{qualified} has no primary key: merge_missing cannot tell which rows are missing "
                             "(use replace, which puts back the backup's rows exactly)")


def stage(cfg: Config, plan: Mapping[str, Any], *, target_conn: PgConn, fetch_archive: Callable[[], str],
          source_conn: PgConn | None = None) -> dict[str, Any]:
    """The backup's rows of the table in ``<staging schema>.<table>`` inside the target database.

    ``fetch_archive()``: the downloaded, proven, decrypted archive's path (a backup); ``source_conn``:
    ``from_database`` instead. Refusals (not in the archive, merge into a missing table, no primary key,
    columns that differ) come before or right after the staging table: nothing of the target is touched."""
    path = dump_from_database(cfg, plan, source_conn) if plan.get("from_database") else fetch_archive()
    with pgtools.connect(target_conn, autocommit=True) as pg:
        pg_restore = _tool(pg, cfg, "pg_restore")
        found = archive.resolve_table(plan["table"], archive.toc_tables(path, pg_restore),
                                      what=plan["source_text"])
        if not found.has_data:
            raise RequestRefused(f"{plan['source_text']} has {found.qualified}'s definition but not its rows "
                                 "(excluded with exclude_table_data?): nothing to restore")
        current = columns_of(pg, found.schema, found.name)
        check_target_table(plan["mode"], found.qualified, current)
        definition = archive.table_definition(path, found, pg_restore)
        statement = archive.staging_definition(pg, definition, found, plan["staging_schema"])
        archive.create_staging_schema(pg, plan["staging_schema"])
        with pg.transaction():
            pg.execute(statement)
            copied = archive.copy_into(pg, path, found, pg_restore, dest_schema=plan["staging_schema"],
                                       timeout=cfg.task_timeout_minutes * 60)
        backup_columns = columns_of(pg, plan["staging_schema"], found.name)
        if current and (diff := column_differences(backup_columns, current)):
            raise RequestRefused(f"the columns of {found.qualified} differ between {plan['source_text']} and the "
                                 "target database (" + "; ".join(diff) + "): restore it by hand")
    return {"archive": path, "table": found.qualified, "schema": found.schema, "name": found.name,
            "staging_schema": plan["staging_schema"], "exists": bool(current),
            "columns": [c["name"] for c in (current or backup_columns)],
            "primary_key": [c["name"] for c in current if c["in_pk"]], "backup_rows": copied["rows"]}


# ---- preview ----------------------------------------------------------------------------------------------

def _tbl(schema: str, name: str) -> sql.Composed:
    return sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(name))


def _pk_match(pk: list[str]) -> sql.Composed:
    return sql.SQL(" AND ").join(sql.SQL("t.{c} = s.{c}").format(c=sql.Identifier(c)) for c in pk)


def _differs(columns: list[str]) -> sql.Composed:
    """Some column's text differs: an exact comparison that also works for json, xml, point (no ``=``)."""
    t = sql.SQL(", ").join(sql.SQL("t.{}::text").format(sql.Identifier(c)) for c in columns)
    s = sql.SQL(", ").join(sql.SQL("s.{}::text").format(sql.Identifier(c)) for c in columns)
    return sql.SQL("ROW({}) IS DISTINCT FROM ROW({})").format(t, s)


def _deleted_keys(staged: Mapping[str, Any], referenced: list[str]) -> sql.Composed:
    """The referenced columns of the rows a replace deletes (all rows when there is no primary key)."""
    cols = sql.SQL(", ").join(sql.SQL("t.{}").format(sql.Identifier(c)) for c in referenced)
    tbl = _tbl(staged["schema"], staged["name"])
    if not staged["primary_key"]:
        return sql.SQL("SELECT {} FROM {} t").format(cols, tbl)
    return sql.SQL("SELECT {} FROM {} t WHERE NOT EXISTS (SELECT 1 FROM {} s WHERE {})").format(
        cols, tbl, _tbl(staged["staging_schema"], staged["name"]), _pk_match(staged["primary_key"]))


def count_rows(pg: psycopg.Connection, staged: Mapping[str, Any]) -> dict[str, int]:
    """current_rows, backup_rows, to_insert, to_replace (differs), unchanged, to_delete (not in the backup)."""
    staging = _tbl(staged["staging_schema"], staged["name"])
    if not staged["exists"]:
        n = pg.execute(sql.SQL("SELECT count(*) FROM {}").format(staging)).fetchone()[0]
        return {"current_rows": 0, "backup_rows": n, "to_insert": n, "to_replace": 0, "unchanged": 0,
                "to_delete": 0}
    tbl = _tbl(staged["schema"], staged["name"])
    if not staged["primary_key"]:  # no way to pair rows: a replace deletes them all and inserts the backup's
        now = pg.execute(sql.SQL("SELECT count(*) FROM {}").format(tbl)).fetchone()[0]
        n = pg.execute(sql.SQL("SELECT count(*) FROM {}").format(staging)).fetchone()[0]
        return {"current_rows": now, "backup_rows": n, "to_insert": n, "to_replace": 0, "unchanged": 0,
                "to_delete": now}
    statement = sql.SQL(sqlfiles.text("restore/table_counts.sql")).format(
        tbl=tbl, staging=staging, pk_match=_pk_match(staged["primary_key"]), differs=_differs(staged["columns"]))
    with pg.cursor(row_factory=dict_row) as cur:
        return dict(cur.execute(statement).fetchone())


def referencing_tables(pg: psycopg.Connection, staged: Mapping[str, Any], *, count: bool) -> list[dict[str, Any]]:
    """The foreign keys pointing at the table, each with how many of its rows reference rows a replace
    deletes (``affected_rows``; with ``count``) and what happens to them."""
    if not staged["exists"]:
        return []
    with pg.cursor(row_factory=dict_row) as cur:
        fks = cur.execute(sqlfiles.text("restore/table_referencing.sql"),
                          {"schema": staged["schema"], "name": staged["name"]}).fetchall()
    out = []
    for fk in fks:
        affected = None
        if count:
            statement = sql.SQL("SELECT count(*) FROM {} c WHERE ({}) IN ({})").format(
                _tbl(fk["schema"], fk["table"]),
                sql.SQL(", ").join(sql.SQL("c.{}").format(sql.Identifier(c)) for c in fk["columns"]),
                _deleted_keys(staged, fk["referenced_columns"]))
            affected = pg.execute(statement).fetchone()[0]
        action = ON_DELETE.get(fk["on_delete"], fk["on_delete"])
        out.append({"table": f"{fk['schema']}.{fk['table']}", "schema": fk["schema"], "name": fk["table"],
                    "constraint": fk["name"], "columns": fk["columns"], "referenced_columns": fk["referenced_columns"],
                    "on_delete": action, "affected_rows": affected,
                    "self": fk["schema"] == staged["schema"] and fk["table"] == staged["name"],
                    "definition": fk["definition"]})
    return out


def what_happens(ref: Mapping[str, Any], cascade: bool) -> str:
    """What a replace does to a referencing table's rows that point at deleted rows, in words."""
    n = ref["affected_rows"] or 0
    rows = f"{n:,} of its rows reference rows the restore deletes"
    if ref["on_delete"] == "CASCADE":
        return f"{rows}: deleted with them (ON DELETE CASCADE)"
    if ref["on_delete"] in ("SET NULL", "SET DEFAULT"):
        return f"{rows}: {', '.join(ref['columns'])} {ref['on_delete'].lower().replace('set ', 'set to ')} " \
               f"(ON DELETE {ref['on_delete']})"
    if not n:
        return f"{rows} (ON DELETE {ref['on_delete']})"
    if cascade:
        return f"{rows}: deleted first, because cascade is set (ON DELETE {ref['on_delete']})"
    return f"{rows}: the apply would fail on them (ON DELETE {ref['on_delete']}) unless cascade is set"


def check_replace(staged: Mapping[str, Any], referencing: list[dict], *, cascade: bool) -> None:
    """``replace`` refuses when another table references this one, unless ``cascade``: naming them."""
    others = [r for r in referencing if not r["self"]]
    if others and not cascade:
        listed = "; ".join(f"{r['table']} ({r['constraint']}): {what_happens(r, cascade)}" for r in others)
        raise RequestRefused(f"{staged['table']} is referenced by other tables, so replace needs cascade=true "
                             f"(nothing was changed): {listed}. Use merge_missing to only add missing rows, or set "
                             "cascade after reading what happens to those rows")


def safety_key(cfg: Config, plan: Mapping[str, Any], staged: Mapping[str, Any], stamp: str) -> str:
    """``{prefix}/{safety_prefix}/{target}/{db}_{schema}.{table}_before_table_restore_{stamp}.dump[.age]``."""
    name = f"{plan['database']}_{staged['schema']}.{staged['name']}_before_table_restore_{stamp}.dump"
    if cfg.encryption.recipients:
        name += age.SUFFIX
    return "/".join(p.strip("/") for p in (cfg.prefix, cfg.restore.safety_prefix, plan["target"], name) if p)


def preview_markdown(plan: Mapping[str, Any], staged: Mapping[str, Any], counts: Mapping[str, int],
                     referencing: list[dict], *, safety: str | None, backup_foreign_keys: list[dict]) -> str:
    mode, tbl = plan["mode"], staged["table"]
    lines = [f"### pg_table_restore: {tbl} in {plan['database']} ({plan['target']}), mode **{mode}**", "",
             f"Source: {plan['source_text']}" + ("" if staged["exists"] else
                                                 f". **{tbl} does not exist in the target database now.**"), "",
             "| rows | count |", "|---|---:|",
             f"| in the table now | {counts['current_rows']:,} |", f"| in the backup | {counts['backup_rows']:,} |",
             f"| to insert (missing now) | {counts['to_insert']:,} |"]
    if mode != "merge_missing":
        lines += [f"| to replace (changed since, all columns) | {counts['to_replace']:,} |",
                  f"| unchanged | {counts['unchanged']:,} |",
                  f"| to delete (not in the backup) | {counts['to_delete']:,} |"]
    else:
        lines += [f"| changed since (kept as they are) | {counts['to_replace']:,} |",
                  f"| only in the table now (kept) | {counts['to_delete']:,} |"]
    lines.append("")
    if not staged["primary_key"] and staged["exists"]:
        lines += ["The table has no primary key: replace deletes all its rows and inserts the backup's.", ""]
    if mode == "dry_run":
        lines.append("Dry run: nothing is changed. Run again with mode replace or merge_missing to apply.")
    elif mode == "replace" and not staged["exists"]:
        lines.append(f"Replace re-creates {tbl} from the backup with its indexes, constraints, defaults and "
                     "sequences, and its rows, in one transaction.")
    elif mode == "replace":
        lines.append("Replace deletes, updates (every column) and inserts in ONE transaction, so the table equals "
                     "the backup's rows; counted again before commit.")
    else:
        lines.append("merge_missing inserts only the rows whose primary key is missing, in one transaction.")
    if referencing and mode != "merge_missing":
        lines += ["", "Tables whose foreign keys point at this one (replace):"]
        lines += [f"- {r['table']} ({r['constraint']}): {what_happens(r, plan['cascade'])}" for r in referencing]
        if mode == "dry_run" and any(not r["self"] for r in referencing) and not plan["cascade"]:
            lines.append("- replace would be refused unless cascade is set")
    if backup_foreign_keys:
        lines += ["", "Foreign keys of other tables that pointed at it in the backup (NOT re-created; add them by "
                      "hand if needed):"]
        lines += [f"- `{fk['sql']}`" for fk in backup_foreign_keys]
    if safety:
        lines += ["", f"Before the change, a safety dump of the table goes to `{safety}` "
                      "(restore it with pg_restore to roll back)."]
    if mode != "dry_run":
        lines += ["", f"Approve here, or trigger with confirm = `{plan['expected_confirm']}` to approve in advance."]
    return "\n".join(lines)


def backup_foreign_keys(pg: psycopg.Connection, cfg: Config, staged: Mapping[str, Any]) -> list[dict[str, Any]]:
    """For a table missing in the target: the other tables' foreign keys to it in the archive (with their SQL)."""
    if staged["exists"]:
        return []
    pg_restore = _tool(pg, cfg, "pg_restore")
    found = archive.TocTable(0, staged["schema"], staged["name"], True)
    quoted = f"{archive.quote_ident(pg, found.schema)}.{archive.quote_ident(pg, found.name)}"
    parts = archive.table_entries(archive.schema_entries(staged["archive"], pg_restore), found, quoted)
    return [{"table": f"{e.schema}.{e.name.split(' ')[0]}", "name": e.name, "sql": " ".join(e.statement.split())}
            for e in parts["referencing"]]


def preview(cfg: Config, plan: Mapping[str, Any], staged: Mapping[str, Any], *, target_conn: PgConn) -> dict[str, Any]:
    """The counts and what the mode would do, as the approval's body; ``replace`` of a referenced table
    without ``cascade`` is refused here, before anyone is asked to approve."""
    with pgtools.connect(target_conn, autocommit=True) as pg:
        counts = count_rows(pg, staged)
        referencing = referencing_tables(pg, staged, count=plan["mode"] != "merge_missing")
        fks = backup_foreign_keys(pg, cfg, staged)
    if plan["mode"] == "replace":
        check_replace(staged, referencing, cascade=plan["cascade"])
    safety = None
    if staged["exists"] and plan["mode"] != "dry_run":
        safety = f"s3://{cfg.bucket}/" + safety_key(cfg, plan, staged, "<stamp>")
    markdown = preview_markdown(plan, staged, counts, referencing, safety=safety, backup_foreign_keys=fks)
    return {"markdown": markdown, "expected_confirm": plan["expected_confirm"], "requested": plan["mode"] != "dry_run",
            "mode": plan["mode"], "table": staged["table"], "counts": counts, "referencing": referencing,
            "backup_foreign_keys": fks}


# ---- apply ------------------------------------------------------------------------------------------------

def _file_digests(path: str, part_size: int) -> tuple[int, str, list[str]]:
    whole, parts, size = hashlib.sha256(), [], 0
    with open(path, "rb") as f:
        while chunk := f.read(part_size):
            whole.update(chunk)
            parts.append(hashlib.sha256(chunk).hexdigest())
            size += len(chunk)
    return size, whole.hexdigest(), parts


def safety_dump(cfg: Config, client, plan: Mapping[str, Any], staged: Mapping[str, Any], *, target_conn: PgConn,
                stamp: str) -> dict[str, Any]:
    """``pg_dump -Fc`` of just the table as it is now, encrypted like every dump when recipients are set, in S3
    with its ``.sha256``: the way back. Returns ``{"key", "uri", "size", "sha256", "encrypted"}``."""
    with pgtools.connect(target_conn, autocommit=True) as pg:
        pg_dump = _tool(pg, cfg, "pg_dump")
        major = pgtools.server_major(pg)
    os.makedirs(plan["work_dir"], exist_ok=True)
    plain = os.path.join(plan["work_dir"], "safety.dump")
    _run([pg_dump, "-Fc", "--strict-names", f"--table={dump_pattern(staged['schema'], staged['name'])}", "-f", plain,
          target_conn.dbname], target_conn.client_tool_env(major), cfg.task_timeout_minutes * 60,
         f"safety dump (pg_dump) of {staged['table']}")
    path = plain
    if cfg.encryption.recipients:
        path = plain + age.SUFFIX
        with open(path, "wb") as out, open(plain, "rb") as src:
            writer = age.EncryptingWriter(cfg.encryption.recipients, out)
            try:
                while chunk := src.read(1 << 20):
                    writer.write(chunk)
                writer.close()
            except BaseException:
                writer.abort()
                raise
        os.remove(plain)
    key = safety_key(cfg, plan, staged, stamp)
    part_size = cfg.multipart_chunk_mb * 1024 * 1024
    size, sha, parts = _file_digests(path, part_size)
    s3.upload_file(client, path, cfg.bucket, key, size=size, sha256_hex=sha, part_sha256=parts, part_size=part_size,
                   storage_class=cfg.storage_class, sse=cfg.sse, kms_key_id=cfg.kms_key_id)
    s3.put_small(client, cfg.bucket, key + ".sha256", manifest.sha256_line(sha, key.rsplit("/", 1)[1]).encode(),
                 content_type="text/plain", sse=cfg.sse, kms_key_id=cfg.kms_key_id)
    os.remove(path)
    return {"key": key, "uri": f"s3://{cfg.bucket}/{key}", "size": size, "sha256": sha,
            "encrypted": bool(cfg.encryption.recipients)}


def _columns_for_write(current: list[dict]) -> tuple[list[str], list[str], bool]:
    """(insert columns: not generated; update columns: also not the key nor GENERATED ALWAYS identity;
    whether the table has identity columns)."""
    insert = [c["name"] for c in current if not c["generated"]]
    update = [c["name"] for c in current if not c["generated"] and not c["in_pk"] and c["identity"] != "a"]
    return insert, update, any(c["identity"] for c in current)


def _write(pg: psycopg.Connection, staged: Mapping[str, Any], mode: str, current: list[dict],
           referencing: list[dict], cascade: bool) -> dict[str, Any]:
    """The mode's statements inside the caller's transaction; rows touched per statement."""
    tbl, staging = _tbl(staged["schema"], staged["name"]), _tbl(staged["staging_schema"], staged["name"])
    pk = staged["primary_key"]
    insert_cols, update_cols, has_identity = _columns_for_write(current)
    done: dict[str, Any] = {"child_rows_deleted": {}, "deleted": 0, "updated": 0, "inserted": 0}
    if mode == "replace":
        for ref in referencing:
            if cascade and not ref["self"] and ref["on_delete"] in ("NO ACTION", "RESTRICT") and ref["affected_rows"]:
                statement = sql.SQL("DELETE FROM {} c WHERE ({}) IN ({})").format(
                    _tbl(ref["schema"], ref["name"]),
                    sql.SQL(", ").join(sql.SQL("c.{}").format(sql.Identifier(c)) for c in ref["columns"]),
                    _deleted_keys(staged, ref["referenced_columns"]))
                done["child_rows_deleted"][f"{ref['table']} ({ref['constraint']})"] = pg.execute(statement).rowcount
        if pk:
            done["deleted"] = pg.execute(sql.SQL(sqlfiles.text("restore/table_delete_missing.sql")).format(
                tbl=tbl, staging=staging, pk_match=_pk_match(pk))).rowcount
            if update_cols:
                done["updated"] = pg.execute(sql.SQL(sqlfiles.text("restore/table_update_changed.sql")).format(
                    tbl=tbl, staging=staging, pk_match=_pk_match(pk), differs=_differs(staged["columns"]),
                    columns=sql.SQL(", ").join(sql.Identifier(c) for c in update_cols),
                    values=sql.SQL(", ").join(sql.SQL("s.{}").format(sql.Identifier(c)) for c in update_cols),
                )).rowcount
        else:
            done["deleted"] = pg.execute(sql.SQL("DELETE FROM {}").format(tbl)).rowcount
    overriding = sql.SQL("OVERRIDING SYSTEM VALUE" if has_identity else "")
    columns = sql.SQL(", ").join(sql.Identifier(c) for c in insert_cols)
    values = sql.SQL(", ").join(sql.SQL("s.{}").format(sql.Identifier(c)) for c in insert_cols)
    if pk:
        statement = sql.SQL(sqlfiles.text("restore/table_insert_missing.sql")).format(
            tbl=tbl, staging=staging, pk_match=_pk_match(pk), columns=columns, values=values, overriding=overriding)
    else:
        statement = sql.SQL("INSERT INTO {} ({}) {} SELECT {} FROM {} s").format(tbl, columns, overriding, values,
                                                                                 staging)
    done["inserted"] = pg.execute(statement).rowcount
    return done


def advance_sequences(pg: psycopg.Connection, schema: str, name: str) -> list[dict[str, Any]]:
    """Each serial / identity column's sequence set to at least the column's max (restored ids are not handed
    out again)."""
    out = []
    with pg.cursor(row_factory=dict_row) as cur:
        owned = cur.execute(sqlfiles.text("restore/table_owned_sequences.sql"), {"schema": schema, "name": name}).fetchall()
    for row in owned:
        top = pg.execute(sql.SQL("SELECT max({}) FROM {}").format(sql.Identifier(row["column"]),
                                                                   _tbl(schema, name))).fetchone()[0]
        if top is None:
            continue
        now = pg.execute("SELECT pg_sequence_last_value(%s::regclass)", (row["sequence"],)).fetchone()[0]
        if now is None or now < top:
            pg.execute("SELECT setval(%s::regclass, %s)", (row["sequence"], top))
            out.append({"sequence": row["sequence"], "value": top})
    return out


def expected_after(mode: str, before: Mapping[str, int]) -> dict[str, int]:
    """The counts the apply must leave (checked before commit)."""
    if mode == "replace":
        return {"current_rows": before["backup_rows"], "to_insert": 0, "to_replace": 0, "to_delete": 0}
    return {"current_rows": before["current_rows"] + before["to_insert"], "to_insert": 0,
            "to_replace": before["to_replace"], "to_delete": before["to_delete"]}


def _check(what: str, want: Mapping[str, int], got: Mapping[str, int], *, rolled_back: bool = True) -> None:
    wrong = {k: (v, got.get(k)) for k, v in want.items() if got.get(k) != v}
    if wrong:
        raise TableRestoreFailed(f"{what}: " + ", ".join(f"{k} {g} (expected {w})" for k, (w, g) in wrong.items())
                                 + ("; rolled back, nothing changed" if rolled_back else
                                    "; the re-created table is there: check it, or drop it"))


def recreate_table(cfg: Config, pg: psycopg.Connection, staged: Mapping[str, Any], *, target_conn: PgConn) -> dict:
    """A dropped table back from the archive: its entries (table, indexes, constraints, defaults, sequences,
    triggers, comments) and its rows, by ``pg_restore -L`` in one transaction, without owners or privileges."""
    pg_restore = _tool(pg, cfg, "pg_restore")
    found = archive.TocTable(0, staged["schema"], staged["name"], True)
    quoted = f"{archive.quote_ident(pg, found.schema)}.{archive.quote_ident(pg, found.name)}"
    parts = archive.table_entries(archive.schema_entries(staged["archive"], pg_restore), found, quoted)
    entries = []
    for e in parts["own"]:  # a sequence that survived the drop (not owned by the table) is reused, not re-created
        if e.type == "SEQUENCE" and e.statement.startswith("CREATE SEQUENCE") and pg.execute(
                "SELECT to_regclass(%s) IS NOT NULL", (f"{archive.quote_ident(pg, e.schema)}."
                                                       f"{archive.quote_ident(pg, e.name)}",)).fetchone()[0]:
            continue
        entries.append(e)
    sequences = [f"{e.schema}.{e.name}" for e in entries if e.type == "SEQUENCE"]
    listing = archive.use_list(staged["archive"], pg_restore, {e.dump_id for e in entries}, data_of=found,
                               sequences=sequences)
    list_path = os.path.join(os.path.dirname(staged["archive"]), "recreate.list")
    with open(list_path, "w") as f:
        f.write(listing)
    _run([pg_restore, "--single-transaction", "--exit-on-error", "--no-owner", "--no-privileges", "-L", list_path,
          "-d", target_conn.dbname, staged["archive"]], target_conn.client_tool_env(pgtools.server_major(pg)),
         cfg.task_timeout_minutes * 60, f"pg_restore of {staged['table']}'s definition and rows")
    return {"entries": [f"{e.type} {e.name}" for e in entries],
            "not_recreated_foreign_keys": [" ".join(e.statement.split()) for e in parts["referencing"]]}


def apply(cfg: Config, client, plan: Mapping[str, Any], staged: Mapping[str, Any], previewed: Mapping[str, Any], *,
          target_conn: PgConn, stamp: str) -> dict[str, Any]:
    """After the approval: the safety dump, then the mode in one transaction, checked against the preview."""
    mode, before = plan["mode"], previewed["counts"]
    if mode not in ("replace", "merge_missing"):
        raise RequestRefused(f"mode {mode} changes nothing: there is nothing to apply")
    safety = safety_dump(cfg, client, plan, staged, target_conn=target_conn, stamp=stamp) if staged["exists"] else None
    result: dict[str, Any] = {"mode": mode, "table": staged["table"], "before": before, "safety": safety}
    with pgtools.connect(target_conn) as pg:
        if not staged["exists"]:
            if pg.execute("SELECT to_regclass(%s) IS NOT NULL",
                          (f"{archive.quote_ident(pg, staged['schema'])}."
                           f"{archive.quote_ident(pg, staged['name'])}",)).fetchone()[0]:
                raise TableRestoreFailed(f"{staged['table']} was created since the preview: nothing applied; run "
                                         "again to see it in the preview")
            pg.rollback()
            result["recreated"] = recreate_table(cfg, pg, staged, target_conn=target_conn)
            pg.rollback()
            now = {**staged, "exists": True,
                   "primary_key": [c["name"] for c in columns_of(pg, staged["schema"], staged["name"]) if c["in_pk"]]}
            with pg.transaction():
                result["after"] = after = count_rows(pg, now) if now["primary_key"] else {
                    "current_rows": pg.execute(sql.SQL("SELECT count(*) FROM {}").format(
                        _tbl(staged["schema"], staged["name"]))).fetchone()[0]}
                result["sequences"] = advance_sequences(pg, staged["schema"], staged["name"])
            _check("after re-creating the table", expected_after("replace", before) if now["primary_key"]
                   else {"current_rows": before["backup_rows"]}, after, rolled_back=False)
            result["applied"] = {"inserted": after["current_rows"], "recreated": True}
            return result
        with pg.transaction():
            pg.execute(sql.SQL("LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE").format(
                _tbl(staged["schema"], staged["name"])))
            now = count_rows(pg, staged)
            _check("the table changed since the preview that was approved", before, now)
            current = columns_of(pg, staged["schema"], staged["name"])
            referencing = referencing_tables(pg, staged, count=mode == "replace")
            if mode == "replace":
                check_replace(staged, referencing, cascade=plan["cascade"])
            result["applied"] = done = _write(pg, staged, mode, current, referencing, plan["cascade"])
            want = {"deleted": before["to_delete"] if mode == "replace" else 0,
                    "inserted": before["to_insert"]}
            if mode == "replace" and staged["primary_key"]:
                want["updated"] = before["to_replace"]
            _check("rows touched", want, done)
            result["after"] = after = count_rows(pg, staged)
            want = expected_after(mode, before) if staged["primary_key"] else {"current_rows": before["backup_rows"]}
            _check("after the apply", want, after)
            result["sequences"] = advance_sequences(pg, staged["schema"], staged["name"])
    return result


# ---- cleanup and report -----------------------------------------------------------------------------------

def cleanup(plan: Mapping[str, Any], *, target_conn: PgConn) -> dict[str, Any]:
    """Drop this run's staging schema and work files, whatever happened (already gone is fine)."""
    with pgtools.connect(target_conn, autocommit=True) as pg:
        dropped = archive.drop_staging_schema(pg, plan["staging_schema"])
    return {"staging_schema": plan["staging_schema"], "staging_dropped": dropped,
            **source.remove_files(plan["work_dir"])}


def outcome(*, plan: Mapping | None, refused: bool, error: str | None, decision: Mapping | None,
            applied: Mapping | None) -> str:
    mode = (plan or {}).get("mode")
    return audit.status_of(planned=bool(plan) and not refused, error=error, dry_run=mode == "dry_run",
                           approval=decision, approval_needed=mode in ("replace", "merge_missing"),
                           done=applied is not None)


def changes_of(previewed: Mapping | None, applied: Mapping | None) -> dict[str, Any] | None:
    if applied:
        return {"table": applied["table"], "before": applied["before"], "after": applied.get("after"),
                "applied": applied.get("applied"), "sequences": applied.get("sequences"),
                "recreated": applied.get("recreated")}
    if previewed:
        return {"table": previewed["table"], "preview": previewed["counts"]}
    return None


def report_row(*, plan: Mapping | None, params: Mapping[str, Any], status: str, staged: Mapping | None,
               previewed: Mapping | None, applied: Mapping | None, decision: Mapping | None, error: str | None,
               triggered_by: str, dag_id: str, run_id: str, target: str) -> dict[str, Any]:
    plan = plan or {}
    safety = ((applied or {}).get("safety") or {}).get("uri")
    return audit.log_row(
        kind="table", target=plan.get("target") or target, status=status, dag_id=dag_id, run_id=run_id,
        params=dict(params), triggered_by=triggered_by, approval=decision, database_name=plan.get("database"),
        backup_key=plan.get("backup_key"), from_database=plan.get("from_database"),
        changes=changes_of(previewed, applied), safety_location=safety, error=error,
        details={"table": (staged or {}).get("table") or plan.get("table"), "mode": plan.get("mode"),
                 "cascade": plan.get("cascade"), "referencing": (previewed or {}).get("referencing"),
                 "backup_foreign_keys": (previewed or {}).get("backup_foreign_keys")})


def slack_text(row: Mapping[str, Any], *, previewed: Mapping | None, applied: Mapping | None) -> str:
    status = row["status"]
    icon = {"SUCCESS": ":white_check_mark:", "DRY_RUN": ":mag:", "REJECTED": ":no_entry_sign:"}.get(status, ":x:")
    table = row["details"].get("table") or "?"
    head = f"{icon} pg_table_restore {status}: {table} of {row['target']}"
    lines = [head + (f" (mode {row['details'].get('mode')})" if row["details"].get("mode") else "")]
    counts = (applied or {}).get("before") or (previewed or {}).get("counts")
    if counts:
        lines.append("before: " + ", ".join(f"{k} {counts[k]:,}" for k in COUNT_KEYS if k in counts))
    if applied and applied.get("after"):
        lines.append("after: " + ", ".join(f"{k} {applied['after'][k]:,}" for k in COUNT_KEYS
                                           if k in applied["after"]))
    if applied and applied.get("applied"):
        a = applied["applied"]
        lines.append("applied: " + ", ".join(f"{k} {v}" for k, v in a.items() if v not in ({}, None)))
    if row.get("safety_location"):
        size = ((applied or {}).get("safety") or {}).get("size")
        lines.append(f"safety dump: {row['safety_location']} ({fmt_bytes(size)})")
    if row.get("approved_by"):
        lines.append(f"approved by {row['approved_by']}")
    if row.get("error_message"):
        lines.append(f"cause: {row['error_message']}")
    lines.append(f"triggered by {row.get('triggered_by')}; run {row['run_id']}")
    return "\n".join(lines)


def prove_identity(cfg: Config, identity: Callable[[], str]) -> Callable[[dict], Any]:
    """``prove_identity(manifest)`` for :func:`plan_restore`: an encrypted backup's identity opens it."""
    return lambda doc: fetch.prove_identity(doc, identity, cfg.encryption.identity_conn_id)
