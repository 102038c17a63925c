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
        m = re.match(r"^(\d+); \d+ \d+ (TABLE DATA|TABLE(?! ATTACH )) (\S+) (.+) (\S+)$", line)
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
    # By the table's own name: compared as "schema.table", a common "public." made unrelated names look close.
    table = wanted.split(".")[-1]
    bare = list(dict.fromkeys(n.split(".")[-1] for n in names))
    out: list[str] = []
    for close in [table] + difflib.get_close_matches(table, bare, n=limit, cutoff=0.6):
        out += [n for n in names if n.split(".")[-1] == close and n not in out]
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
    # pg_dump ends the statement with ")" and, each on its own line, INHERITS / PARTITION BY / WITH (...), then ";"
    m = re.search(r"^CREATE (?:UNLOGGED )?TABLE .*?^\)(?:\n(?:INHERITS|PARTITION BY|WITH|SERVER|OPTIONS) [^;]*)?;$",
                  text, re.M | re.S)
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
    if "\nPARTITION BY " in definition or "\nINHERITS (" in definition:
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
            for _ in lines:  # read pg_restore's output to its end: closing the pipe early would kill it (SIGPIPE)
                pass
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


# ---- the entries that make up one table (to re-create a dropped table with its indexes, constraints, ...) ----

@dataclass(frozen=True)
class TocEntry:
    dump_id: int
    type: str  # pg_dump's entry type: TABLE, INDEX, CONSTRAINT, FK CONSTRAINT, DEFAULT, SEQUENCE, ...
    schema: str
    name: str  # pg_dump's tag: "likes", "likes likes_pkey", "COLUMN likes.id", ...
    statement: str


_ENTRY_HEAD_RE = re.compile(r"^-- TOC entry (\d+) \(class \d+ OID \d+\)\n(?:-- Dependencies: [^\n]*\n)?"
                            r"-- Name: (.*?); Type: (.*?); Schema: (.*?); Owner: [^\n]*\n(?:-- [^\n]*\n)*--\n", re.M)


def schema_entries(archive: str, pg_restore: str) -> list[TocEntry]:
    """Every schema entry of the archive with its SQL (``pg_restore --schema-only -v``: each statement under
    its "-- TOC entry N" / "-- Name: ..; Type: ..; Schema: .." header)."""
    text = _run([pg_restore, "--schema-only", "-v", "-f", "-", archive])
    heads = list(_ENTRY_HEAD_RE.finditer(text))
    out = []
    for i, m in enumerate(heads):
        end = heads[i + 1].start() if i + 1 < len(heads) else len(text)
        body = text[m.end():end]
        body = re.sub(r"\n--\n\Z", "\n", body.rstrip("\n") + "\n").strip()  # the next header's leading "--"
        out.append(TocEntry(int(m.group(1)), m.group(3), m.group(4), m.group(2), body))
    return out


def _mentions(statement: str, qualified: str) -> bool:
    return re.search(r"(?<![\w\".])" + re.escape(qualified) + r"(?![\w\"])", statement) is not None


def table_entries(entries: Sequence[TocEntry], table: TocTable, quoted: str) -> dict[str, list[TocEntry]]:
    """The schema entries of ``table`` (``quoted``: its name as pg_dump writes it, e.g. ``public.likes``):

    - ``own``: the TABLE and what is defined on it (indexes, its constraints and foreign keys, defaults,
      identity / owned sequences, triggers, rules, policies, comments); privileges are left out.
    - ``referencing``: foreign keys of OTHER tables that point at it (listed, never re-created here).
    """
    own, referencing, sequences = [], [], set()
    for e in entries:
        if e.type == "ACL":
            continue
        if e.type == "TABLE":
            if e.schema == table.schema and e.name == table.name:
                own.append(e)
            continue
        if not _mentions(e.statement, quoted):
            continue
        if e.type == "FK CONSTRAINT":
            head = re.match(r"ALTER TABLE (?:ONLY )?(\S+)\n", e.statement)
            (own if head and head.group(1) == quoted else referencing).append(e)
            continue
        own.append(e)
        m = re.match(r"ALTER SEQUENCE (\S+) OWNED BY ", e.statement)
        if m:
            sequences.add(m.group(1))
    # a serial column's sequence: CREATE SEQUENCE does not name the table, its OWNED BY entry does
    own += [e for e in entries if e.type == "SEQUENCE" and e not in own
            and f"{_quote_name(e.schema)}.{_quote_name(e.name)}" in sequences]
    own.sort(key=lambda e: e.dump_id)
    return {"own": own, "referencing": referencing}


def _quote_name(name: str) -> str:
    """pg_dump's quoting for the common case (lower-case identifiers stay bare); used only to match names."""
    return name if re.fullmatch(r"[a-z_][a-z0-9_$]*", name) else '"' + name.replace('"', '""') + '"'


def use_list(archive: str, pg_restore: str, dump_ids: set[int], *, data_of: TocTable | None = None,
             sequences: Sequence[str] = ()) -> str:
    """The lines of ``pg_restore -l`` for ``dump_ids`` (plus ``data_of``'s TABLE DATA and the SEQUENCE SET
    of ``sequences``, schema.name), for ``pg_restore -L``."""
    keep = []
    for line in _run([pg_restore, "-l", archive]).splitlines():
        m = re.match(r"^(\d+); \d+ \d+ (.+)$", line)
        if not m:
            continue
        rest = m.group(2)
        if int(m.group(1)) in dump_ids \
                or (data_of is not None and rest.startswith(f"TABLE DATA {data_of.schema} {data_of.name} ")) \
                or any(rest.startswith(f"SEQUENCE SET {s.replace('.', ' ', 1)} ") for s in sequences):
            keep.append(line)
    return "\n".join(keep) + "\n"
