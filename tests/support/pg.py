"""Comparing databases by content: what a restore test asserts."""

from __future__ import annotations

import psycopg
from psycopg import sql

PG_BIN = "/usr/lib/postgresql/15/bin"


def table_digests(cluster, dbname: str) -> dict[str, tuple[int, str]]:
    """Row count and md5 over every row's text, for every ordinary table outside system schemas."""
    with psycopg.connect(host="127.0.0.1", port=cluster.port, user="postgres", password=cluster.password,
                         dbname=dbname) as pg:
        return digests_over(pg)


def digests_over(pg: psycopg.Connection) -> dict[str, tuple[int, str]]:
    """:func:`table_digests` over an open connection (e.g. a scratch server's socket)."""
    tables = pg.execute("SELECT schemaname, tablename FROM pg_tables WHERE schemaname NOT IN "
                        "('pg_catalog', 'information_schema') ORDER BY 1, 2").fetchall()
    out = {}
    for schema, table in tables:
        q = sql.SQL("SELECT count(*), coalesce(md5(string_agg(t::text, E'\\n' ORDER BY t::text)), '') "
                    "FROM {}.{} t").format(sql.Identifier(schema), sql.Identifier(table))
        out[f"{schema}.{table}"] = tuple(pg.execute(q).fetchone())
    return out
