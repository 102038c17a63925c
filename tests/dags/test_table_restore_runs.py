"""pg_table_restore end to end with `airflow dags test` (3 runs): a dry run (green, nothing changed, the gate
skipped, a DRY_RUN row), a replace approved in advance by confirm (green, the table's digest back to the
backup's, a SUCCESS row approved by the confirm param, the staging schema gone, Slack at start and end) and a
hostile table name (red, REFUSED, nothing created)."""

from __future__ import annotations

import datetime as dt

import psycopg
import pytest
from pg_dataops.backup import steps as backup
from pg_dataops.common.config import load_config

from tests.support.pg import table_digests

from .conftest import json_posts

pytestmark = pytest.mark.dagrun
DB = "hb_dag"
MOMENT = dt.datetime(2026, 11, 24, 17, 0, tzinfo=dt.UTC)


@pytest.fixture
def seeded(cluster, s3, bucket, tmp_path):
    """A copy of the demo data (300 users) and its backup in S3 (pg_backup's steps without Airflow)."""
    cluster.dropdb(DB)
    cluster.createdb(DB)
    cluster.load_demo(DB, 300)
    cfg = load_config(environ={"PGBACKUP_BUCKET": bucket, "PGBACKUP_LOCAL_ROOT": str(tmp_path / "src"),
                               "PGBACKUP_MULTIPART_CHUNK_MB": "5"})
    client = s3.client()
    dump = backup.dump_step(cfg, cfg.target("glimpse"), cluster.conn(DB), "daily", MOMENT)
    upload = backup.upload_step(client, cfg, dump, backup.checksum_step(dump))
    backup.manifest_step(client, cfg, dump, upload, {"verified": True}, "pg_backup", "seed")
    cluster.psql("-c", "DROP TABLE IF EXISTS restore_logs CASCADE", dbname="catalog")
    yield
    cluster.dropdb(DB)


def sql(cluster, statement):
    with psycopg.connect(host="127.0.0.1", port=cluster.port, user="postgres", password=cluster.password,
                         dbname=DB, autocommit=True) as pg:
        cur = pg.execute(statement)
        return cur.fetchall() if cur.description else None


def staging_schemas(cluster):
    prefix = load_config().restore.staging_schema
    return [r[0] for r in sql(cluster, "SELECT nspname FROM pg_namespace WHERE nspname LIKE '" + prefix + "%'")]


def restore_logs(cluster):
    with psycopg.connect(host="127.0.0.1", port=cluster.port, user="postgres", password=cluster.password,
                         dbname="catalog", row_factory=psycopg.rows.dict_row) as pg:
        return pg.execute("SELECT * FROM restore_logs ORDER BY id").fetchall()


def run(run_dag, cluster, bucket, tmp_path, **conf):
    return run_dag("pg_table_restore", bucket=bucket, conns={"glimpse_db": cluster.airflow_conn(DB)},
                   conf={"target": "glimpse", "backup_date": "20261125", **conf}, local_root=tmp_path / "root")


def test_dry_run_then_replace_with_confirm(run_dag, cluster, s3, bucket, receiver, tmp_path, seeded):
    pre = table_digests(cluster, DB)
    sql(cluster, "DELETE FROM public.likes WHERE id IN (SELECT id FROM public.likes ORDER BY id LIMIT 7)")
    sql(cluster, "UPDATE public.likes SET is_super = NOT is_super WHERE id IN "
                 "(SELECT id FROM public.likes ORDER BY id DESC LIMIT 2)")
    post = table_digests(cluster, DB)

    dry = run(run_dag, cluster, bucket, tmp_path, table="likes")
    assert dry.state == "success", dry.output[-3000:]
    assert dry.task_states["approve_apply"] == "skipped" and dry.task_states["apply"] == "skipped"
    assert dry.task_states["cleanup"] == "success" and dry.task_states["report"] == "success"
    assert table_digests(cluster, DB) == post
    rows = restore_logs(cluster)
    assert [(r["kind"], r["status"], r["database_name"]) for r in rows] == [("table", "DRY_RUN", DB)]
    preview = rows[0]["changes"]["preview"]
    assert (preview["to_insert"], preview["to_replace"], preview["to_delete"]) == (7, 2, 0)

    receiver.clear()
    done = run(run_dag, cluster, bucket, tmp_path, table="public.likes", mode="replace", confirm=DB)
    assert done.state == "success", done.output[-3000:]
    assert {done.task_states[t] for t in ("validate", "stage", "preview", "approve_apply", "apply", "cleanup",
                                          "report")} == {"success"}
    after = table_digests(cluster, DB)
    assert after["public.likes"] == pre["public.likes"]
    assert {k: v for k, v in after.items() if k != "public.likes"} == \
        {k: v for k, v in post.items() if k != "public.likes"}
    row = restore_logs(cluster)[-1]
    assert (row["status"], row["approved_by"], row["backup_key"]) == \
        ("SUCCESS", "confirm param", "database/daily/glimpse_daily_20261125_020000.dump")
    assert row["changes"]["applied"] == {"child_rows_deleted": {}, "deleted": 0, "updated": 2, "inserted": 7}
    assert row["safety_location"].startswith(f"s3://{bucket}/database/safety/glimpse/{DB}_public.likes_before_"
                                             "table_restore_")
    key = row["safety_location"].split("/", 3)[3]
    assert s3.client().head_object(Bucket=bucket, Key=key)["ContentLength"] > 0
    assert staging_schemas(cluster) == []
    texts = [p["text"] for p in json_posts(receiver, "/slack")]
    assert texts[0].startswith(":arrows_counterclockwise: pg_table_restore started by ")
    assert "table public.likes of glimpse" in texts[0] and "mode replace" in texts[0]
    assert texts[-1].startswith(":white_check_mark: pg_table_restore SUCCESS: public.likes of glimpse")
    assert "approved by confirm param" in texts[-1]


def test_hostile_table_name_is_refused_red(run_dag, cluster, s3, bucket, receiver, tmp_path, seeded):
    before = table_digests(cluster, DB)
    bad = run(run_dag, cluster, bucket, tmp_path, table="users; DROP TABLE x", mode="replace", confirm=DB)
    assert bad.state == "failed", bad.output[-3000:]
    assert bad.task_states["validate"] == "failed" and bad.task_states["report"] == "success"
    assert bad.task_states["apply"] == "upstream_failed"
    row = restore_logs(cluster)[-1]
    assert row["status"] == "REFUSED" and "is not a table name" in row["error_message"]
    assert table_digests(cluster, DB) == before
    assert staging_schemas(cluster) == []
    slack = [p["text"] for p in json_posts(receiver, "/slack")]
    assert any(t.startswith(":x: pg_table_restore REFUSED") and "is not a table name" in t for t in slack)
