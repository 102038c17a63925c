import datetime as dt

import psycopg
from pg_dataops.backup import steps
from pg_dataops.catalog import backup_logs, migrations
from pg_dataops.common import pg as pgtools


def row(status="SUCCESS", run_id="r1", **kw):
    base = steps.catalog_row(
        target="glimpse", tier="daily", moment=dt.datetime(2026, 11, 25, 2, tzinfo=dt.UTC),
        dump={"snapshot_time": "2026-11-24T17:00:01Z", "database": "glimpse", "file": "f.dump", "size": 3 * 1048576,
              "sha256": "a" * 64, "duration_seconds": 1.5},
        upload={"key": "database/daily/f.dump"},
        doc={"verified": True, "verification": {"checked_at": "2026-11-24T17:01:00Z"}} if status == "SUCCESS" else None,
        error=None if status == "SUCCESS" else "dump: boom", failed_step=None if status == "SUCCESS" else "dump",
        bucket="b", dag_id="pg_backup", run_id=run_id,
    )
    base.update(kw)
    return base


def test_schema_is_idempotent_and_rows_upsert(cluster):
    cluster.createdb("catalog_t1")
    pg = pgtools.connect(cluster.conn("catalog_t1"))
    try:
        migrations.ensure_schema(pg)
        migrations.ensure_schema(pg)  # twice: no error
        first = backup_logs.record(pg, row("FAILED"))
        second = backup_logs.record(pg, row("SUCCESS"))  # the same run re-recorded
        assert first == second
        backup_logs.record(pg, row("SUCCESS", run_id="r2"))
        rows = pg.execute("SELECT run_id, status, file_size_mb, error_message, failed_step, s3_uploaded "
                          "FROM backup_logs ORDER BY run_id").fetchall()
    finally:
        pg.close()
    assert rows == [("r1", "SUCCESS", 3, None, None, True), ("r2", "SUCCESS", 3, None, None, True)]


def test_failed_row_keeps_the_reason(cluster):
    cluster.createdb("catalog_t2")
    with psycopg.connect(host="127.0.0.1", port=cluster.port, user="postgres", password=cluster.password,
                         dbname="catalog_t2") as pg:
        backup_logs.record(pg, row("FAILED"))
        assert pg.execute("SELECT status, error_message, failed_step FROM backup_logs").fetchall() == [
            ("FAILED", "dump: boom", "dump")
        ]
