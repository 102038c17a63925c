"""The catalog follows production through a swap: the kept database's catalog rows replace the new one's."""

from __future__ import annotations

import psycopg
from pg_dataops.catalog import carry, migrations
from pg_dataops.common import pg as pgtools

from tests.support.pg import table_digests


def _rows(cluster, dbname, statements):
    with psycopg.connect(host="127.0.0.1", port=cluster.port, user="postgres", password=cluster.password,
                         dbname=dbname, autocommit=True) as pg:
        for statement in statements:
            pg.execute(statement)


def test_carry_over_replaces_the_catalog_and_keeps_the_ids_going(cluster):
    kept, new = "carry_kept", "carry_new"
    for name in (kept, new):
        cluster.createdb(name)
    try:
        for name in (kept, new):
            pg = pgtools.connect(cluster.conn(name), autocommit=True)
            migrations.ensure_schema(pg)
            pg.close()
        # The kept database has the recent history; the new one (the restored backup) has older rows of its own
        # and a table that is not in the catalog at all, which must stay as it is.
        _rows(cluster, kept, [
            "INSERT INTO backup_logs (backup_date, backup_type, target, status) SELECT now(), 'daily', 'glimpse', "
            "'SUCCESS' FROM generate_series(1, 5)",
            "INSERT INTO monitor_alerts (dedup_key, failing, changed_at, last_seen_at) VALUES "
            "('pg_backup_monitor/freshness/glimpse', true, now(), now())",
        ])
        _rows(cluster, new, [
            "INSERT INTO backup_logs (backup_date, backup_type, target, status) VALUES (now(), 'daily', 'glimpse', "
            "'FAILED')",
            "CREATE TABLE users_keep (id int PRIMARY KEY)", "INSERT INTO users_keep VALUES (1), (2)",
        ])
        before_other = table_digests(cluster, new)["public.users_keep"]

        result = carry.carry_over(cluster.conn(kept), cluster.conn(new))

        assert result["rows"]["backup_logs"] == 5 and result["rows"]["monitor_alerts"] == 1
        ours, theirs = table_digests(cluster, new), table_digests(cluster, kept)
        for table in ("public.backup_logs", "public.monitor_alerts", "public.restore_logs"):
            assert ours[table] == theirs[table], table
        assert ours["public.users_keep"] == before_other
        # The next catalog row of the new production database continues after the carried ids.
        _rows(cluster, new, ["INSERT INTO backup_logs (backup_date, backup_type, target, status) VALUES (now(), "
                             "'daily', 'glimpse', 'SUCCESS')"])
        with psycopg.connect(host="127.0.0.1", port=cluster.port, user="postgres", password=cluster.password,
                             dbname=new) as pg:
            assert pg.execute("SELECT max(id), count(*) FROM backup_logs").fetchone() == (6, 6)
    finally:
        for name in (kept, new):
            cluster.dropdb(name)


def test_same_database_compares_server_and_name(cluster):
    a = cluster.conn("glimpse")
    assert carry.same_database(a, cluster.conn("glimpse"))
    assert not carry.same_database(a, cluster.conn("catalog"))
