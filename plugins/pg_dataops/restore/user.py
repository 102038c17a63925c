"""One user's rows back from a backup or a recovered database (runbook 3.2, pg_user_data_restore). Airflow-free.

Which rows are a user's is declarative config (``restore.user_tables``: table -> the columns that hold a user
id; ``restore.user_key``: the column whose type a user id has). The steps:

- :func:`plan`: the form's params checked against S3 and the target database before anything exists: the
  user id parsed as the key column's type (its canonical text is used afterwards, always as a bound
  parameter; the runbook pasted it into SQL), every mapped table and column present, the tables ordered
  parents first by their foreign keys, the backup found (and an encrypted one's identity proven) or
  ``from_database`` checked.
- :func:`stage`: the user's rows into a staging schema inside the target database: from a backup, each
  table's ``COPY`` block streamed out of ``pg_restore --data-only`` keeping only that user's rows (the
  runbook's ``pg_restore --schema=recovery_temp`` does not rename anything); from ``from_database``, a
  ``COPY (SELECT ...) TO STDOUT`` on that database streamed into ``COPY ... FROM STDIN`` on the target (the
  runbook's cross-database ``INSERT ... SELECT`` cannot work in PostgreSQL).
- :func:`preview`: per table how many rows would be inserted, updated and left unchanged, and how many of
  the user's current rows are not in the backup (left alone: nothing is deleted).
- :func:`apply`: after the approval, in one transaction and parents first: a safety copy of every row the
  upsert may change (kept in ``restore.safety_schema``), the upsert of all columns on the primary key (the
  runbook restored only ``updated_at``), the counts checked against the preview, sequences moved past the
  restored ids.
- :func:`cleanup` drops the staging schema and the download; :func:`log_row` and :func:`report_text` the
  audit row and the Slack summary (the user id is an opaque id; nothing of the user's data leaves).
"""

from __future__ import annotations

import hashlib
import os
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import psycopg
from psycopg import sql

from pg_dataops.common import pg as pgtools
from pg_dataops.common import sqlfiles
from pg_dataops.common.config import Config
from pg_dataops.common.errors import PermanentError
from pg_dataops.restore import archive, audit, request, source
from pg_dataops.restore.request import RequestRefused

KIND = "user"

INTEGER_RANGES = {"smallint": (-2**15, 2**15 - 1), "integer": (-2**31, 2**31 - 1), "bigint": (-2**63, 2**63 - 1)}
# Other key types a user id may have: checked by a server-side cast. Only these names reach SQL (as type text).
_CAST_TYPE_RE = re.compile(r"^(?:text|character varying(?:\((\d+)\))?|character(?:\((\d+)\))?|numeric(?:\(\d+(?:,\d+)?\))?)$")
_UUID_RE = re.compile(r"^(?:[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}|[0-9a-fA-F]{32})$")
_INTEGER_RE = re.compile(r"^[+-]?[0-9]{1,19}$")


class ApplyFailed(PermanentError):
    """The upsert did not happen (its transaction was rolled back): the target database is as it was."""


# ---- the user id --------------------------------------------------------------------------------------------


def canonical_user_id(value: Any, key_type: str, *, cast: Callable[[str, str], str] | None = None) -> str:
    """The user id as the key column's type writes it (lower-case uuid, plain integer), or RequestRefused.

    ``key_type`` is format_type's text of the key column; ``cast(value, type_text)`` asks the server for
    other allowed types (text, varchar, char, numeric)."""
    text = "" if value is None else str(value).strip()
    if not text:
        raise RequestRefused("user_id is empty: give the id of the user whose rows to restore")
    if key_type == "uuid":
        if not _UUID_RE.match(text):
            raise RequestRefused(f"user_id {text!r} is not a UUID (the user key is uuid), e.g. "
                                 "6f1c2a4e-8d3b-4c7a-9e2f-0a1b2c3d4e5f")
        return str(uuid.UUID(text))
    if key_type in INTEGER_RANGES:
        low, high = INTEGER_RANGES[key_type]
        if not _INTEGER_RE.match(text) or not low <= int(text) <= high:
            raise RequestRefused(f"user_id {text!r} is not a whole number of type {key_type} (the user key's type)")
        return str(int(text))
    m = _CAST_TYPE_RE.match(key_type)
    if not m:
        raise RequestRefused(f"the user key's type is {key_type}: pg_user_data_restore handles uuid, smallint, "
                             "integer, bigint, text, varchar, char and numeric keys")
    if any(ord(c) < 32 or c == "\\" for c in text):
        raise RequestRefused(f"user_id {text!r} contains control characters or a backslash")
    limit = m.group(1) or m.group(2)
    if limit and len(text) > int(limit):
        raise RequestRefused(f"user_id {text!r} is longer than the user key's type {key_type} allows")
    if cast is None:
        raise RequestRefused(f"user_id of type {key_type} needs the target server to check it")
    return cast(text, key_type)


def server_cast(pg: psycopg.Connection) -> Callable[[str, str], str]:
    """``cast(value, type_text)``: the server's text of ``CAST(value AS type)``; a value it rejects is refused.
    The type text comes from the catalog and passed :data:`_CAST_TYPE_RE`; the value is a bound parameter."""

    def cast(value: str, type_text: str) -> str:
        if not _CAST_TYPE_RE.match(type_text):
            raise RequestRefused(f"the user key's type {type_text} is not one pg_user_data_restore handles")
        statement = sql.SQL("SELECT CAST(%s AS {})::text").format(sql.SQL(type_text))
        try:
            with pg.transaction():
                return pg.execute(statement, (value,)).fetchone()[0]
        except psycopg.DataError as exc:
            raise RequestRefused(f"user_id {value!r} is not a value of the user key's type {type_text}: "
                                 f"{exc.diag.message_primary}") from None

    return cast


def split_path(path: str, parts: int) -> tuple[str, ...]:
    items = tuple(path.split("."))
    if len(items) != parts:
        raise RequestRefused(f"{path!r} must have {parts} dot-separated parts")
    return items


def key_type(pg: psycopg.Connection, user_key: str) -> str:
    schema, table, column = split_path(user_key, 3)
    row = pg.execute(sqlfiles.text("restore/user_key_type.sql"),
                     {"schema": schema, "table": table, "column": column}).fetchone()
    if row is None:
        raise RequestRefused(f"restore.user_key {user_key} is not a column of the target database: fix the config")
    return row[0]


# ---- the mapped tables ----------------------------------------------------------------------------------------


def describe_table(pg: psycopg.Connection, qualified: str, user_columns: Sequence[str], key_type_text: str,
                   *, where: str = "the target database") -> dict[str, Any]:
    """What the staging, the counts and the upsert need of one mapped table; RequestRefused naming what is
    missing (the table, a user column, a primary key) or a user column of another type than the key."""
    schema, table = split_path(qualified, 2)
    rows = pg.execute(sqlfiles.text("restore/user_table_columns.sql"), {"schema": schema, "table": table}).fetchall()
    if not rows:
        raise RequestRefused(f"restore.user_tables names {qualified}, which is not a table in {where}")
    types = {r[0]: r[1] for r in rows}
    missing = [c for c in user_columns if c not in types]
    if missing:
        raise RequestRefused(f"restore.user_tables: {qualified} has no column {', '.join(missing)} in {where}")
    wrong = [f"{c} ({types[c]})" for c in user_columns if types[c] != key_type_text]
    if wrong:
        raise RequestRefused(f"restore.user_tables: {qualified}.{', '.join(wrong)} is not of the user key's type "
                             f"{key_type_text}")
    pk = [r[0] for r in sorted((r for r in rows if r[3] is not None), key=lambda r: r[3])]
    if not pk:
        raise RequestRefused(f"{qualified} has no primary key in {where}: its rows cannot be upserted")
    return {"table": qualified, "schema": schema, "name": table, "user_columns": list(user_columns),
            "columns": [r[0] for r in rows if not r[2]], "generated": [r[0] for r in rows if r[2]], "pk": pk,
            "sequences": {r[0]: r[4] for r in rows if r[4]}}


def fk_order(tables: Sequence[str], edges: Sequence[tuple[str, str]]) -> list[str]:
    """``tables`` with every referenced (parent) table before the tables referencing it; otherwise in the given
    order. A cycle among them is refused (one transaction cannot order it without deferrable keys)."""
    parents = {t: {p for c, p in edges if c == t and p != t and p in tables} for t in tables}
    ordered: list[str] = []
    while len(ordered) < len(tables):
        ready = [t for t in tables if t not in ordered and parents[t] <= set(ordered)]
        if not ready:
            rest = [t for t in tables if t not in ordered]
            raise RequestRefused("restore.user_tables: the foreign keys among " + ", ".join(rest) + " form a cycle: "
                                 "no order writes parents first")
        ordered.append(ready[0])
    return ordered


def fk_edges(pg: psycopg.Connection, tables: Sequence[str]) -> list[tuple[str, str]]:
    return [tuple(r) for r in pg.execute(sqlfiles.text("restore/user_fk_edges.sql"), {"tables": list(tables)})]


def staging_schema_name(cfg: Config, run_id: str) -> str:
    """``<restore.staging_schema>_<8 hex of the run id>``: this run's own schema inside the target database."""
    return f"{cfg.restore.staging_schema}_{short_id(run_id)}"


def short_id(run_id: str) -> str:
    return hashlib.sha256(run_id.encode()).hexdigest()[:8]


def safety_table_name(table: str, stamp: str, run_short: str) -> str:
    """``<table>_<stamp>_<run>`` within PostgreSQL's 63 bytes (the table's part shortened)."""
    tail = f"_{stamp}_{run_short}"
    return table[:63 - len(tail)] + tail


# ---- validate ----------------------------------------------------------------------------------------------------


def plan(cfg: Config, params: Mapping[str, Any], *, target: str, target_conn: pgtools.PgConn, run_id: str,
         now_stamp: str, s3: Callable[[], Any], identity: Callable[[], str],
         database_exists: Callable[[str], bool]) -> dict[str, Any]:
    """Everything later steps do, checked: RequestRefused (nothing created) for a bad param or a mismatch."""
    choice = request.parse_backup_choice(params, allow_from_database=True)
    database = target_conn.dbname
    request.check_confirm(request.text_param(params, "confirm"), database)
    dry_run = params.get("dry_run", True)
    dry_run = dry_run if isinstance(dry_run, bool) else str(dry_run).strip().lower() not in ("false", "0", "no", "off")
    mapped = [t for t, _ in cfg.restore.user_tables]
    with pgtools.connect(target_conn, autocommit=True) as pg:
        key = key_type(pg, cfg.restore.user_key)
        user_id = canonical_user_id(params.get("user_id"), key, cast=server_cast(pg))
        tables = {t: describe_table(pg, t, cols, key) for t, cols in cfg.restore.user_tables}
        order = fk_order(mapped, fk_edges(pg, mapped))
        major = pgtools.server_major(pg)
    backup = None
    if choice["from_database"]:
        request.check_from_database(choice["from_database"], target_database=database, exists=database_exists)
        with pgtools.connect(target_conn.with_db(choice["from_database"]), autocommit=True) as src:
            for t in order:
                there = describe_table(src, t, tables[t]["user_columns"], key,
                                       where=f"from_database {choice['from_database']}")
                tables[t]["source_columns"] = [c for c in tables[t]["columns"] if c in there["columns"]]
    else:
        from pg_dataops.common import fetch

        client = s3()
        backup = source.find_backup(client, cfg, target, backup_date=choice["backup_date"],
                                    backup_key=choice["backup_key"])
        encrypted = fetch.prove_identity(backup["manifest"], identity, cfg.encryption.identity_conn_id) is not None
        work = source.work_dir(cfg.local_root, run_id, target)
        source.check_free_space(work, backup["size"] * (2 if encrypted else 1))
    run_short = short_id(run_id)
    return {
        "target": target, "database": database, "expected_confirm": database, "user_id": user_id, "key_type": key,
        "dry_run": dry_run, "backup": backup, "backup_key": backup["key"] if backup else None,
        "from_database": choice["from_database"], "server_major": major,
        "tables": [tables[t] for t in order], "staging_schema": staging_schema_name(cfg, run_id),
        "safety_schema": cfg.restore.safety_schema,
        "safety_tables": {t: safety_table_name(tables[t]["name"], now_stamp, run_short) for t in order},
        "work_dir": source.work_dir(cfg.local_root, run_id, target),
    }


def describe_source(plan_: Mapping[str, Any]) -> str:
    return f"backup {plan_['backup_key']}" if plan_.get("backup_key") else f"database {plan_['from_database']}"


def start_text(plan_: Mapping[str, Any], who: str) -> str:
    what = "dry run (nothing will change)" if plan_["dry_run"] else "restore after approval"
    return (f":arrow_forward: pg_user_data_restore started by {who}: user {plan_['user_id']} in {plan_['target']} "
            f"({plan_['database']}) from {describe_source(plan_)}: {what}")


# ---- SQL pieces (identifiers quoted by psycopg; the user id always a bound parameter) --------------------------


def _ids(names: Sequence[str], alias: str | None = None) -> sql.Composed:
    return sql.SQL(", ").join(sql.Identifier(alias, n) if alias else sql.Identifier(n) for n in names)


def _as_text(names: Sequence[str], alias: str) -> sql.Composed:
    return sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(alias, n)) for n in names)


def _pk_match(pk: Sequence[str], left: str, right: str) -> sql.Composed:
    return sql.SQL(" AND ").join(sql.SQL("{} = {}").format(sql.Identifier(left, c), sql.Identifier(right, c))
                                 for c in pk)


def user_filter(columns: Sequence[str], alias: str | None = None) -> sql.Composed:
    """``c1 = %(user_id)s OR c2 = %(user_id)s``: the user's rows (the id a bound parameter)."""
    return sql.SQL(" OR ").join(
        sql.SQL("{} = %(user_id)s").format(sql.Identifier(alias, c) if alias else sql.Identifier(c)) for c in columns)


def _statement(name: str, **parts: sql.Composable) -> sql.Composed:
    return sql.SQL(sqlfiles.text(f"restore/{name}")).format(**parts)


def _compared(table: Mapping[str, Any], staged: Mapping[str, Any] | None) -> list[str]:
    """The columns restored and compared: the target's writable columns the source has."""
    have = (staged or {}).get("columns") or table.get("source_columns") or table["columns"]
    return [c for c in table["columns"] if c in have]


# ---- stage ---------------------------------------------------------------------------------------------------


def stage(cfg: Config, plan_: Mapping[str, Any], *, target_conn: pgtools.PgConn, s3: Callable[[], Any],
          identity: Callable[[], str], timeout: float | None) -> dict[str, Any]:
    """The user's rows of every mapped table into ``<staging>.<table>`` (created ``LIKE`` the target's table)
    in the target database; returns ``{"staging_schema", "tables": {table: {"rows", "rows_read", "columns"}}}``."""
    staging = plan_["staging_schema"]
    path = None
    if plan_["backup"]:
        got = source.fetch_archive(s3(), cfg, plan_["backup"], plan_["work_dir"], identity=identity, timeout=timeout)
        path = got["path"]
        pg_restore = pgtools.client_binary("pg_restore", plan_["server_major"], cfg.pg_bin_root)
        toc = archive.toc_tables(path, pg_restore)
    out: dict[str, Any] = {}
    with pgtools.connect(target_conn) as pg:
        with pg.transaction():
            archive.create_staging_schema(pg, staging)
            for t in plan_["tables"]:
                pg.execute(sql.SQL("CREATE TABLE {}.{} (LIKE {}.{})").format(
                    sql.Identifier(staging), sql.Identifier(t["name"]), sql.Identifier(t["schema"]),
                    sql.Identifier(t["name"])))
                if path:
                    entry = next((e for e in toc if e.schema == t["schema"] and e.name == t["name"]), None)
                    if entry is None:
                        raise RequestRefused(f"{t['table']} is not in {plan_['backup_key']}'s table of contents: "
                                             "the backup predates it, or it was excluded")
                    # Which rows to keep is decided on the archive's own column list (read from its COPY header).
                    keep = _archive_filter(t["user_columns"], plan_["user_id"])
                    got_rows = archive.copy_into(pg, path, entry, pg_restore, dest_schema=staging, keep=keep,
                                                 timeout=timeout)
                    out[t["table"]] = {"rows": got_rows["rows"], "rows_read": got_rows["rows_read"],
                                       "columns": [c for c in t["columns"] if c in got_rows["columns"]]}
                else:
                    out[t["table"]] = _copy_from_database(pg, target_conn.with_db(plan_["from_database"]), t,
                                                          staging, plan_["user_id"])
    return {"staging_schema": staging, "tables": out, "source": describe_source(plan_)}


def _archive_filter(user_columns: Sequence[str], user_id: str) -> Callable[[list[str], list[bytes]], bool]:
    """A copy_into ``keep`` built on the first row's columns (archive.matches_any needs them up front)."""
    built: list[Callable[[list[str], list[bytes]], bool]] = []

    def keep(columns: list[str], fields: list[bytes]) -> bool:
        if not built:
            built.append(archive.matches_any(columns, user_columns, user_id))
        return built[0](columns, fields)

    return keep


def _copy_from_database(pg: psycopg.Connection, source_conn: pgtools.PgConn, t: Mapping[str, Any], staging: str,
                        user_id: str) -> dict[str, Any]:
    """``COPY (SELECT ... WHERE <user's rows>) TO STDOUT`` on the recovered database, streamed into ``COPY ... FROM
    STDIN`` of the staging table: the rows never leave the two sessions."""
    columns = t["source_columns"]
    out_statement = sql.SQL("COPY (SELECT {} FROM {}.{} WHERE {}) TO STDOUT").format(
        _ids(columns), sql.Identifier(t["schema"]), sql.Identifier(t["name"]), user_filter(t["user_columns"]))
    in_statement = sql.SQL("COPY {}.{} ({}) FROM STDIN").format(
        sql.Identifier(staging), sql.Identifier(t["name"]), _ids(columns))
    with pgtools.connect(source_conn) as src:
        with src.cursor().copy(out_statement, {"user_id": user_id}) as out, pg.cursor().copy(in_statement) as into:
            for block in out:
                into.write(block)
    rows = pg.execute(sql.SQL("SELECT count(*) FROM {}.{}").format(sql.Identifier(staging),
                                                                   sql.Identifier(t["name"]))).fetchone()[0]
    return {"rows": rows, "rows_read": rows, "columns": list(columns)}


# ---- preview ---------------------------------------------------------------------------------------------------


def count_table(pg: psycopg.Connection, t: Mapping[str, Any], staging: str, columns: Sequence[str],
                user_id: str) -> dict[str, int]:
    statement = _statement(
        "user_counts.sql", pk_first=sql.Identifier(t["pk"][0]), staged_text=_as_text(columns, "s"),
        current_text=_as_text(columns, "t"), schema=sql.Identifier(t["schema"]), table=sql.Identifier(t["name"]),
        staging=sql.Identifier(staging), user_filter=user_filter(t["user_columns"], "c"),
        pk_match_c_s2=_pk_match(t["pk"], "s2", "c"), pk_match_s_t=_pk_match(t["pk"], "s", "t"))
    row = pg.execute(statement, {"user_id": user_id}).fetchone()
    return dict(zip(("inserted", "updated", "unchanged", "left_alone"), row, strict=True))


def preview(plan_: Mapping[str, Any], staged: Mapping[str, Any], *, target_conn: pgtools.PgConn) -> dict[str, Any]:
    """Per table, parents first: ``{"inserted", "updated", "unchanged", "left_alone"}``; the approval's Markdown.
    A source without a single row of the user is refused: a mistyped id or a source from before the user existed."""
    if not any(c["rows"] for c in staged["tables"].values()):
        raise RequestRefused(f"user {plan_['user_id']} has no rows in {describe_source(plan_)} (no table of "
                             "restore.user_tables has one): check the id, or choose a later backup")
    counts = {}
    with pgtools.connect(target_conn, autocommit=True) as pg:
        for t in plan_["tables"]:
            counts[t["table"]] = count_table(pg, t, staged["staging_schema"],
                                             _compared(t, staged["tables"].get(t["table"])), plan_["user_id"])
    return {"tables": counts, "markdown": preview_markdown(plan_, counts), "expected_confirm": plan_["expected_confirm"],
            "total": {k: sum(c[k] for c in counts.values()) for k in ("inserted", "updated", "unchanged", "left_alone")}}


def safety_location(plan_: Mapping[str, Any]) -> str:
    return f"{plan_['safety_schema']}.(" + ", ".join(plan_["safety_tables"].values()) + ")"


def preview_markdown(plan_: Mapping[str, Any], counts: Mapping[str, Mapping[str, int]]) -> str:
    lines = [f"**Restore the rows of user `{plan_['user_id']}`** in `{plan_['database']}` ({plan_['target']}) from "
             f"{describe_source(plan_)}.", "",
             "| table | inserted | updated | unchanged | not in the backup (left alone) |", "|---|---:|---:|---:|---:|"]
    for table, c in counts.items():
        lines.append(f"| {table} | {c['inserted']} | {c['updated']} | {c['unchanged']} | {c['left_alone']} |")
    lines += ["", "All columns of those rows are written (upsert on the primary key), parents first, in one "
              "transaction. Rows of the user that exist now but not in the backup are kept as they are.",
              f"Before writing, the rows it changes are copied to `{safety_location(plan_)}` (kept).",
              f"Approve, or set `confirm` to `{plan_['expected_confirm']}` to approve in advance."]
    if plan_["dry_run"]:
        lines.insert(1, "_Dry run: nothing will be written._")
    return "\n".join(lines)


# ---- apply ----------------------------------------------------------------------------------------------------


def _upsert_statement(t: Mapping[str, Any], staging: str, columns: Sequence[str]) -> sql.Composed:
    set_columns = [c for c in columns if c not in t["pk"]]
    common = {"schema": sql.Identifier(t["schema"]), "table": sql.Identifier(t["name"]),
              "staging": sql.Identifier(staging), "columns": _ids(columns), "pk": _ids(t["pk"])}
    if not set_columns:
        return _statement("user_upsert_keys_only.sql", **common)
    return _statement("user_upsert.sql", **common, set_columns=_ids(set_columns),
                      excluded_columns=_ids(set_columns, "excluded"), current_text=_as_text(columns, "t"),
                      excluded_text=_as_text(columns, "excluded"))


def apply(plan_: Mapping[str, Any], staged: Mapping[str, Any], expected: Mapping[str, Any], *,
          target_conn: pgtools.PgConn) -> dict[str, Any]:
    """The approved upsert, in one transaction: safety copies, upserts parents first, counts checked against
    the preview (``expected``), sequences set. Any failure rolls all of it back (ApplyFailed)."""
    staging, safety, user_id = staged["staging_schema"], plan_["safety_schema"], plan_["user_id"]
    params = {"user_id": user_id}
    result: dict[str, Any] = {}
    current = "preparing"
    with pgtools.connect(target_conn) as pg:
        try:
            with pg.transaction():
                pg.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(safety)))
                for t in plan_["tables"]:
                    current = f"the safety copy of {t['table']}"
                    copy = plan_["safety_tables"][t["table"]]
                    pg.execute(sql.SQL("CREATE TABLE {}.{} (LIKE {}.{})").format(
                        sql.Identifier(safety), sql.Identifier(copy), sql.Identifier(t["schema"]),
                        sql.Identifier(t["name"])))
                    saved = pg.execute(_statement(
                        "user_safety_copy.sql", safety=sql.Identifier(safety), copy=sql.Identifier(copy),
                        schema=sql.Identifier(t["schema"]), table=sql.Identifier(t["name"]),
                        staging=sql.Identifier(staging), user_filter=user_filter(t["user_columns"], "c"),
                        pk_match_c_s=_pk_match(t["pk"], "s", "c")), params).rowcount
                    result[t["table"]] = {"safety_rows": saved, "safety_table": f"{safety}.{copy}"}
                for t in plan_["tables"]:
                    current = f"the upsert into {t['table']}"
                    columns = _compared(t, staged["tables"].get(t["table"]))
                    flags = [r[0] for r in pg.execute(_upsert_statement(t, staging, columns)).fetchall()]
                    done = {"inserted": sum(1 for f in flags if f), "updated": sum(1 for f in flags if not f)}
                    want = expected["tables"][t["table"]]
                    if done != {"inserted": want["inserted"], "updated": want["updated"]}:
                        raise ApplyFailed(
                            f"{t['table']}: the upsert would insert {done['inserted']} and update {done['updated']} "
                            f"rows, the approved preview said {want['inserted']} and {want['updated']} (the data "
                            "changed since the preview): rolled back, nothing changed; run again for a new preview")
                    same = pg.execute(_statement(
                        "user_verify.sql", staging=sql.Identifier(staging), schema=sql.Identifier(t["schema"]),
                        table=sql.Identifier(t["name"]), pk_match_s_t=_pk_match(t["pk"], "s", "t"),
                        staged_text=_as_text(columns, "s"), current_text=_as_text(columns, "t"))).fetchone()[0]
                    rows = staged["tables"][t["table"]]["rows"]
                    if same != rows:
                        raise ApplyFailed(f"{t['table']}: after the upsert {same} of the backup's {rows} rows are "
                                          "identical in the table (a trigger or rule changed them?): rolled back")
                    result[t["table"]].update(done, unchanged=want["unchanged"], left_alone=want["left_alone"],
                                              sequences=_set_sequences(pg, t))
        except psycopg.Error as exc:
            # The server's primary message and constraint only: its DETAIL would quote the user's data.
            diag = exc.diag
            what = f" (constraint {diag.constraint_name})" if diag.constraint_name else ""
            raise ApplyFailed(f"{current} failed{what}: {diag.message_primary or type(exc).__name__} "
                              f"[{diag.sqlstate}]; rolled back, nothing changed") from None
        commands = rollback_commands(pg, plan_, staged)
    return {"tables": result, "safety_location": safety_location(plan_), **commands}


def _set_sequences(pg: psycopg.Connection, t: Mapping[str, Any]) -> dict[str, int]:
    """Serial/identity sequences set to the largest id where the restored rows went past them."""
    moved = {}
    for column, sequence in t["sequences"].items():
        top = pg.execute(sql.SQL("SELECT max({}) FROM {}.{}").format(
            sql.Identifier(column), sql.Identifier(t["schema"]), sql.Identifier(t["name"]))).fetchone()[0]
        if top is None:
            continue
        row = pg.execute(sqlfiles.text("restore/user_setval.sql"), {"max": top, "sequence": sequence}).fetchone()
        if row is not None:
            moved[sequence] = int(row[0])
    return moved


def rollback_commands(pg: psycopg.Connection, plan_: Mapping[str, Any], staged: Mapping[str, Any]) -> dict[str, Any]:
    """SQL to undo the restore by hand from the safety tables (children first, then parents), and to drop
    them when no longer needed. Rows the restore inserted are those of the user not in the safety copy."""
    safety = plan_["safety_schema"]
    undo: list[str] = ["BEGIN;"]
    for t in reversed(plan_["tables"]):
        copy = sql.Identifier(safety, plan_["safety_tables"][t["table"]])
        target = sql.Identifier(t["schema"], t["name"])
        users = sql.SQL(" OR ").join(sql.SQL("{} = {}").format(sql.Identifier("x", c), sql.Literal(plan_["user_id"]))
                                     for c in t["user_columns"])
        undo.append(sql.SQL("DELETE FROM {} x WHERE ({}) AND NOT EXISTS (SELECT FROM {} s WHERE {});").format(
            target, users, copy, _pk_match(t["pk"], "s", "x")).as_string(pg))
    for t in plan_["tables"]:
        columns = _compared(t, staged["tables"].get(t["table"]))
        set_columns = [c for c in columns if c not in t["pk"]]
        copy = sql.Identifier(safety, plan_["safety_tables"][t["table"]])
        on_conflict = sql.SQL("DO UPDATE SET ({}) = ROW({})").format(_ids(set_columns), _ids(set_columns, "excluded")) \
            if set_columns else sql.SQL("DO NOTHING")
        undo.append(sql.SQL("INSERT INTO {} ({}) OVERRIDING SYSTEM VALUE SELECT {} FROM {} ON CONFLICT ({}) {};").format(
            sql.Identifier(t["schema"], t["name"]), _ids(columns), _ids(columns), copy, _ids(t["pk"]),
            on_conflict).as_string(pg))
    undo.append("COMMIT;")
    drop = sql.SQL("DROP TABLE {};").format(sql.SQL(", ").join(
        sql.Identifier(safety, name) for name in plan_["safety_tables"].values())).as_string(pg)
    return {"rollback": undo, "drop": drop}


# ---- cleanup and report --------------------------------------------------------------------------------------------


def cleanup(plan_: Mapping[str, Any], *, target_conn: pgtools.PgConn) -> dict[str, Any]:
    """Drop this run's staging schema and remove its download folder, whatever happened before."""
    with pgtools.connect(target_conn, autocommit=True) as pg:
        dropped = archive.drop_staging_schema(pg, plan_["staging_schema"])
    removed = source.remove_files(plan_["work_dir"]) if os.path.isdir(plan_["work_dir"]) else {"removed": None}
    return {"staging_schema": plan_["staging_schema"], "staging_dropped": dropped, **removed}


def log_row(*, plan_: Mapping[str, Any] | None, preview_: Mapping[str, Any] | None,
            applied: Mapping[str, Any] | None, approval: Mapping[str, Any] | None, error: str | None,
            params: Mapping[str, Any], target: str, triggered_by: str | None, dag_id: str, run_id: str,
            seconds: float | None = None) -> dict[str, Any]:
    """The ``restore_logs`` row: changes per table (applied, or the dry run's counts), the safety tables."""
    dry_run = bool(plan_ and plan_["dry_run"])
    status = audit.status_of(planned=plan_ is not None, error=error, dry_run=dry_run, approval=approval,
                             approval_needed=not dry_run, done=applied is not None)
    if applied:
        changes = {t: {k: v for k, v in c.items() if k in ("inserted", "updated", "unchanged", "left_alone")}
                   for t, c in applied["tables"].items()}
    else:
        changes = dict(preview_["tables"]) if preview_ and status == "DRY_RUN" else None
    details: dict[str, Any] = {"user_id": plan_["user_id"] if plan_ else None}
    if preview_:
        details["preview"] = preview_["tables"]
    if applied:
        details.update(rollback=applied["rollback"], drop=applied["drop"],
                       safety_tables={t: c["safety_table"] for t, c in applied["tables"].items()},
                       sequences={t: c["sequences"] for t, c in applied["tables"].items() if c["sequences"]})
    return audit.log_row(
        kind=KIND, target=target, status=status, dag_id=dag_id, run_id=run_id, params=params,
        triggered_by=triggered_by, approval=approval, database_name=plan_["database"] if plan_ else None,
        backup_key=plan_["backup_key"] if plan_ else None, from_database=plan_["from_database"] if plan_ else None,
        changes=changes, safety_location=applied["safety_location"] if applied else None, rto_seconds=seconds,
        error=error, details=details)


def _counts_text(counts: Mapping[str, Mapping[str, int]]) -> str:
    return "; ".join(f"{t}: {c['inserted']} inserted, {c['updated']} updated, {c['unchanged']} unchanged"
                     + (f", {c['left_alone']} not in the backup (left alone)" if c.get("left_alone") else "")
                     for t, c in counts.items())


def report_text(row: Mapping[str, Any], *, plan_: Mapping[str, Any] | None,
                preview_: Mapping[str, Any] | None) -> str:
    """The Slack summary: the user id (opaque), the source, the counts, where the previous rows are kept."""
    status = row["status"]
    who = f" (started by {row['triggered_by']})" if row.get("triggered_by") else ""
    if plan_ is None:
        return f":no_entry: pg_user_data_restore refused{who}: {row['error_message']}. Nothing was changed."
    head = f"user {plan_['user_id']} in {plan_['target']} ({plan_['database']}) from {describe_source(plan_)}"
    if status == "SUCCESS":
        return (f":white_check_mark: pg_user_data_restore restored {head}{who}, approved by {row['approved_by']}: "
                f"{_counts_text(row['changes'])}. Previous rows kept in {row['safety_location']}; rollback and drop "
                f"commands: restore_logs row {row.get('id')} (details.rollback, details.drop).")
    if status == "DRY_RUN":
        return (f":mag: pg_user_data_restore dry run of {head}{who}: would write {_counts_text(row['changes'])}. "
                "Nothing was changed; run again with dry_run off to apply.")
    if status == "REJECTED":
        return (f":no_entry_sign: pg_user_data_restore of {head}{who} was not approved "
                f"({(row['details'].get('approval') or {}).get('decision', 'rejected')}): nothing was changed.")
    counts = f" Preview was: {_counts_text(preview_['tables'])}." if preview_ else ""
    if row.get("safety_location"):  # the upsert was committed; a later step (the cleanup) failed
        return (f":x: pg_user_data_restore of {head}{who}: the rows were restored (previous rows kept in "
                f"{row['safety_location']}), then a step FAILED: {row['error_message']}.{counts}")
    return f":x: pg_user_data_restore of {head}{who} FAILED: {row['error_message']}. Nothing was changed.{counts}"
