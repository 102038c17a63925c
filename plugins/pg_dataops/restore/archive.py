"""Reading one table out of a custom-format backup: its table of contents, its definition, its rows. Airflow-free.

The runbook ran ``pg_restore -t $TABLE_NAME`` into a second database and then an ``INSERT ... SELECT`` across
databases, which PostgreSQL cannot do. Here the rows never leave the target database's server session: the
table's definition from the archive creates a staging table in a staging schema of the target database, and
the ``COPY`` data block that ``pg_restore --data-only`` writes for that one table is streamed into it
(optionally keeping only the rows a filter accepts: one user's rows of a large table). Names come from the
archive's table of contents and reach SQL only as quoted identifiers.
"""

from __future__ import annotations

import difflib
import re
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from pg_dataops.common.errors import BackupError, redact
from pg_dataops.restore.request import RequestRefused


class ArchiveError(BackupError):
    """pg_restore could not read the archive, or its output is not what pg_dump writes."""


# A table name as the forms accept it: [schema.]table, each an unquoted SQL identifier (folded to lower case).
_TABLE_PARAM_RE = re.compile(r"^(?:([A-Za-z_][A-Za-z0-9_$]{0,62})\.)?([A-Za-z_][A-Za-z0-9_$]{0,62})$")


@dataclass(frozen=True)
class TocTable:
    dump_id: int
    schema: str
    name: str
    has_data: bool

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"


def parse_table_param(value: str) -> tuple[str | None, str]:
    """(schema or None, table) from the form's ``table``; anything but ``[schema.]table`` is refused."""
    text = (value or "").strip()
    m = _TABLE_PARAM_RE.match(text)
    if not m:
        raise RequestRefused(f"table {value!r} is not a table name: give table or schema.table (letters, digits, _)")
    schema, table = m.group(1), m.group(2)
    return (schema.lower() if schema else None), table.lower()


def _run(argv: list[str], *, timeout: float | None = None) -> str:
    with tempfile.TemporaryFile() as err:
        try:
            proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=err, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise ArchiveError(f"{argv[0]} did not finish within {timeout:g} s") from None
        if proc.returncode != 0:
            err.seek(0)
            text = err.read().decode(errors="replace").strip()[-600:]
            raise ArchiveError(f"{' '.join(argv[:2])} ... exited with {proc.returncode}: {redact(text)}")
        return proc.stdout.decode()


def toc_tables(archive: str, pg_restore: str) -> list[TocTable]:
    """The tables in the archive (``pg_restore -l``): TABLE entries, with whether a TABLE DATA entry exists."""
    tables: dict[tuple[str, str], int] = {}
    data: set[tuple[str, str]] = set()
    for line in _run([pg_restore, "-l", archive]).splitlines():
        if not line or line.startswith(";"):
            continue
        m = re.match(r"^(\d+); \d+ \d+ (TABLE DATA|TABLE) (\S+) (.+) (\S+)$", line)
        if not m:
            continue
        key = (m.group(3), m.group(4))
        if m.group(2) == "TABLE":
            tables[key] = int(m.group(1))
        else:
            data.add(key)
    return [TocTable(dump_id=i, schema=s, name=n, has_data=(s, n) in data) for (s, n), i in sorted(tables.items())]


def near_matches(wanted: str, names: Sequence[str], limit: int = 5) -> list[str]:
    """The names most like ``wanted`` (schema.table), for "did you mean" in an error."""
    table = wanted.split(".")[-1]
    same_name = [n for n in names if n.split(".")[-1] == table]
    close = difflib.get_close_matches(wanted, names, n=limit, cutoff=0.5)
    close += difflib.get_close_matches(table, [n.split(".")[-1] for n in names], n=limit, cutoff=0.6)
    out: list[str] = []
    for n in same_name + close:
        full = n if "." in n else next((m for m in names if m.split(".")[-1] == n), n)
        if full not in out:
            out.append(full)
    return out[:limit]


def resolve_table(value: str, tables: Sequence[TocTable], *, what: str = "the backup") -> TocTable:
    """The archive's table named by the form (``table`` or ``schema.table``), or RequestRefused listing near
    matches (a table in another schema than the one named is not a match)."""
    schema, name = parse_table_param(value)
    found = [t for t in tables if t.name == name and (schema is None or t.schema == schema)]
    if len(found) == 1:
        return found[0]
    names = [t.qualified for t in tables]
    if len(found) > 1:
        raise RequestRefused(f"table {value!r} is in several schemas of {what}: name one of "
                             + ", ".join(t.qualified for t in found))
    near = near_matches(f"{schema or 'public'}.{name}", names)
    hint = f"; near matches: {', '.join(near)}" if near else ""
    raise RequestRefused(f"table {value!r} is not in {what}'s table of contents{hint}")


def table_definition(archive: str, table: TocTable, pg_restore: str) -> str:
    """The ``CREATE TABLE`` statement pg_dump wrote for ``table`` (columns, types, NOT NULL, CHECKs)."""
    text = _run([pg_restore, "--schema-only", "--section=pre-data", "-n", table.schema, "-t", table.name,
                 "-f", "-", archive])
    m = re.search(r"^CREATE (?:UNLOGGED )?TABLE .*?^\)(?: PARTITION BY [^;]*)?;$", text, re.M | re.S)
    if not m:
        raise ArchiveError(f"no CREATE TABLE statement for {table.qualified} in the archive's definition")
    return m.group(0)


def quote_ident(pg: psycopg.Connection, name: str) -> str:
    """How pg_dump writes an identifier (quoted only when needed): the server's quote_ident."""
    return pg.execute("SELECT quote_ident(%s)", (name,)).fetchone()[0]


def staging_definition(pg: psycopg.Connection, definition: str, table: TocTable, staging_schema: str) -> sql.Composed:
    """The table's definition with its name moved to the staging schema (only the statement's head changes)."""
    head = re.match(r"^CREATE (?:UNLOGGED )?TABLE (.+?) \(\n", definition)
    expected = f"{quote_ident(pg, table.schema)}.{quote_ident(pg, table.name)}"
    if not head or head.group(1) != expected:
        raise ArchiveError(f"the archive's definition of {table.qualified} does not start as pg_dump writes it")
    if " PARTITION BY " in definition or " INHERITS (" in definition:
        raise RequestRefused(f"{table.qualified} is partitioned or inherits: restore it with pg_full_recovery or "
                             "by hand")
    body = definition[head.end():]
    return sql.SQL("CREATE TABLE {}.{} (\n").format(sql.Identifier(staging_schema), sql.Identifier(table.name)) \
        + sql.SQL(body)  # the archive's own text (pg_dump's output), not a form's value


def create_staging_schema(pg: psycopg.Connection, staging_schema: str) -> None:
    pg.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(staging_schema)))


def drop_staging_schema(pg: psycopg.Connection, staging_schema: str) -> bool:
    """Drop the staging schema and what is in it (ours alone); whether it existed."""
    existed = pg.execute("SELECT count(*) FROM pg_namespace WHERE nspname = %s", (staging_schema,)).fetchone()[0]
    pg.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(staging_schema)))
    return bool(existed)


def split_copy_columns(header: str) -> list[str]:
    """The column names of pg_dump's ``COPY schema.table (a, "B c") FROM stdin;`` line, unquoted."""
    m = re.match(r"^COPY .+? \((.*)\) FROM stdin;$", header)
    if not m:
        raise ArchiveError(f"not a COPY header as pg_dump writes it: {header[:120]!r}")
    cols, i, text = [], 0, m.group(1)
    while i < len(text):
        if text[i] == '"':
            j, name = i + 1, []
            while True:
                if text[j] == '"' and j + 1 < len(text) and text[j + 1] == '"':
                    name.append('"')
                    j += 2
                elif text[j] == '"':
                    break
                else:
                    name.append(text[j])
                    j += 1
            cols.append("".join(name))
            i = j + 1
        else:
            j = text.find(",", i)
            j = len(text) if j < 0 else j
            cols.append(text[i:j].strip())
            i = j
        i += 2 if text.startswith(", ", i) else (1 if i < len(text) else 0)
    return cols


def _copy_block(lines: Iterator[bytes], table: TocTable) -> tuple[list[str], Iterator[bytes]]:
    for raw in lines:
        line = raw.decode().rstrip("\n")
        if line.startswith("COPY ") and line.endswith(" FROM stdin;"):
            return split_copy_columns(line), lines
    raise ArchiveError(f"the archive has no data for {table.qualified} (excluded with --exclude-table-data?)")


def copy_into(pg: psycopg.Connection, archive: str, table: TocTable, pg_restore: str, *, dest_schema: str,
              dest_table: str | None = None, keep: Callable[[list[str], list[bytes]], bool] | None = None,
              timeout: float | None = None) -> dict[str, Any]:
    """Stream ``table``'s rows from the archive into ``dest_schema.dest_table`` (COPY, in ``pg``'s transaction).

    ``keep(columns, fields)``: called per row with the raw COPY text fields; only rows it accepts are
    copied (None: all). Returns ``{"columns", "rows_read", "rows"}``."""
    argv = [pg_restore, "--data-only", "-n", table.schema, "-t", table.name, "-f", "-", archive]
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err)
        read = kept = 0
        try:
            columns, lines = _copy_block(iter(proc.stdout.readline, b""), table)
            statement = sql.SQL("COPY {}.{} ({}) FROM STDIN").format(
                sql.Identifier(dest_schema), sql.Identifier(dest_table or table.name),
                sql.SQL(", ").join(sql.Identifier(c) for c in columns))
            with pg.cursor().copy(statement) as copy:
                for raw in lines:
                    if raw == b"\\.\n":
                        break
                    read += 1
                    if keep is not None and not keep(columns, raw.rstrip(b"\n").split(b"\t")):
                        continue
                    copy.write(raw)
                    kept += 1
            proc.stdout.close()
            rc = proc.wait(timeout=timeout)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        if rc != 0:
            err.seek(0)
            raise ArchiveError(f"pg_restore --data-only of {table.qualified} exited with {rc}: "
                               f"{redact(err.read().decode(errors='replace').strip()[-600:])}")
    return {"columns": columns, "rows_read": read, "rows": kept}


def matches_any(columns: list[str], wanted: Sequence[str], value: str) -> Callable[[list[str], list[bytes]], bool]:
    """A ``keep`` for :func:`copy_into`: rows whose text in any of ``wanted`` columns equals ``value``
    (COPY text of a uuid or an integer has no escapes, so the raw field is the value's canonical text)."""
    missing = [c for c in wanted if c not in columns]
    if missing:
        raise ArchiveError(f"the archive's rows have no column {', '.join(missing)}")
    positions = [columns.index(c) for c in wanted]
    target = value.encode()

    def keep(_columns: list[str], fields: list[bytes]) -> bool:
        return any(fields[i] == target for i in positions)

    return keep
