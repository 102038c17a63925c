"""pg_user_data_restore end to end with `airflow dags test`: a dry run (green, DRY_RUN row with the counts, the
data untouched), the approved restore with confirm = the database's name (green, the user's rows as before the
damage by digest, SUCCESS row approved by the confirm param, Slack at start and end), and a hostile user id
(red, REFUSED row, PagerDuty, nothing created)."""

from __future__ import annotations

import datetime as dt

import psycopg
import pytest
from pg_dataops.backup import steps as backup
from pg_dataops.common.config import load_config
from psycopg import sql

from .conftest import json_posts

pytestmark = pytest.mark.dagrun
MOMENT = dt.datetime(2026, 11, 24, 17, 0, tzinfo=dt.UTC)  # 25 Nov 02:00 in Seoul
KEY = "database/daily/glimpse_daily_20261125_020000.dump"
DB = "hc_dag_user"
MAP = dict(load_config(environ={}).restore.user_tables)


def connect(cluster, dbname: str = DB, **kw) -> psycopg.Connection:
    return psycopg.connect(host="127.0.0.1", port=cluster.port, user="postgres", password=cluster.password,
                           dbname=dbname, **kw)


def user_digests(cluster, user_id: str) -> dict[str, tuple[int, str]]:
    out = {}
    with connect(cluster) as pg:
        for table, cols in MAP.items():
            where = sql.SQL(" OR ").join(sql.SQL("{} = %(u)s").format(sql.Identifier(c)) for c in cols)
            q = sql.SQL("SELECT count(*), coalesce(md5(string_agg(t::text, E'\\n' ORDER BY t::text)), '') "
                        "FROM {} t WHERE {}").format(sql.Identifier(*table.split(".")), where)
            out[table] = tuple(pg.execute(q, {"u": user_id}).fetchone())
    return out


def restore_log(cluster, run_id: str) -> dict:
    with connect(cluster, "catalog", row_factory=psycopg.rows.dict_row) as pg:
        rows = pg.execute("SELECT * FROM restore_logs WHERE run_id = %s", (run_id,)).fetchall()
    assert len(rows) == 1, rows
    return rows[0]


def leftover_schemas(cluster) -> list[str]:
    with connect(cluster) as pg:
        return [r[0] for r in pg.execute("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'dataops_staging%'")]


@pytest.fixture
def damaged(cluster, s3, bucket, tmp_path):
    """A 300-user demo database backed up to the bucket, then user A's likes and messages deleted and profile
    overwritten. Yields A's id and digests before and after the damage."""
    with connect(cluster, "postgres", autocommit=True) as pg:
        pg.execute(f"DROP DATABASE IF EXISTS {DB}")
    cluster.createdb(DB)
    cluster.load_demo(DB, 300)
    cfg = load_config(environ={"PGBACKUP_BUCKET": bucket, "PGBACKUP_LOCAL_ROOT": str(tmp_path / "src")})
    client = s3.client()
    dump = backup.dump_step(cfg, cfg.target("glimpse"), cluster.conn(DB), "daily", MOMENT)
    upload = backup.upload_step(client, cfg, dump, backup.checksum_step(dump))
    backup.manifest_step(client, cfg, dump, upload, {"verified": True}, "pg_backup", "seed")
    with connect(cluster) as pg:
        a = pg.execute("SELECT id::text FROM users u WHERE EXISTS (SELECT FROM messages WHERE sender_id = u.id) "
                       "AND EXISTS (SELECT FROM likes WHERE from_user_id = u.id) ORDER BY id LIMIT 1").fetchone()[0]
    before = user_digests(cluster, a)
    with connect(cluster) as pg:
        likes = pg.execute("DELETE FROM likes WHERE from_user_id = %(a)s OR to_user_id = %(a)s", {"a": a}).rowcount
        messages = pg.execute("DELETE FROM messages WHERE sender_id = %(a)s OR receiver_id = %(a)s",
                              {"a": a}).rowcount
        pg.execute("UPDATE user_profiles SET bio = 'overwritten' WHERE id = %s", (a,))
    yield {"user_id": a, "before": before, "after": user_digests(cluster, a), "likes": likes, "messages": messages}
    with connect(cluster, "postgres", autocommit=True) as pg:
        pg.execute(f"DROP DATABASE IF EXISTS {DB}")


def run_restore(run_dag, cluster, bucket, tmp_path, **conf):
    return run_dag("pg_user_data_restore", bucket=bucket, conns={"glimpse_db": cluster.airflow_conn(DB)},
                   conf={"target": "glimpse", **conf}, local_root=tmp_path / "restore_root")


TASKS = ("validate", "stage", "preview", "approve_upsert", "apply", "cleanup", "report")


def test_dry_run_then_the_confirmed_restore(run_dag, cluster, bucket, receiver, tmp_path, damaged):
    a = damaged["user_id"]

    dry = run_restore(run_dag, cluster, bucket, tmp_path, user_id=a, backup_date="20261125")
    assert dry.state == "success", dry.output[-3000:]
    assert dry.task_states == {**dict.fromkeys(TASKS, "success"), "approve_upsert": "skipped", "apply": "skipped",
                               "run_outcome": "skipped"}
    row = restore_log(cluster, dry.run_id)
    assert (row["kind"], row["status"], row["database_name"], row["backup_key"]) == ("user", "DRY_RUN", DB, KEY)
    assert row["changes"]["public.likes"] == {"inserted": damaged["likes"], "updated": 0, "unchanged": 0,
                                              "left_alone": 0}
    assert row["changes"]["public.messages"]["inserted"] == damaged["messages"]
    assert row["changes"]["public.user_profiles"] == {"inserted": 0, "updated": 1, "unchanged": 0, "left_alone": 0}
    assert row["changes"]["public.users"] == {"inserted": 0, "updated": 0, "unchanged": 1, "left_alone": 0}
    assert row["approved_by"] is None and row["safety_location"] is None and row["details"]["user_id"] == a
    assert user_digests(cluster, a) == damaged["after"] and leftover_schemas(cluster) == []
    slack = [p["text"] for p in json_posts(receiver, "/slack")]
    assert len(slack) == 2 and slack[0].startswith(":arrow_forward: pg_user_data_restore started by ")
    assert slack[1].startswith(f":mag: pg_user_data_restore dry run of user {a} in glimpse ({DB}) from backup {KEY}")

    done = run_restore(run_dag, cluster, bucket, tmp_path, user_id=a, backup_date="20261125", dry_run=False,
                       confirm=DB)
    assert done.state == "success", done.output[-3000:]
    assert done.task_states == {**dict.fromkeys(TASKS, "success"), "run_outcome": "skipped"}
    assert user_digests(cluster, a) == damaged["before"]
    row = restore_log(cluster, done.run_id)
    assert (row["status"], row["approved_by"]) == ("SUCCESS", "confirm param")
    assert row["changes"]["public.likes"]["inserted"] == damaged["likes"]
    assert row["changes"]["public.user_profiles"]["updated"] == 1
    assert row["safety_location"].startswith("dataops_safety.(users_") and row["details"]["rollback"][0] == "BEGIN;"
    with connect(cluster) as pg:  # the safety copy of the profile holds the overwritten row
        profile = row["details"]["safety_tables"]["public.user_profiles"]
        bio = pg.execute(sql.SQL("SELECT bio FROM {}").format(sql.Identifier(*profile.split("."))))
        assert bio.fetchall() == [("overwritten",)]
    assert leftover_schemas(cluster) == []
    slack = [p["text"] for p in json_posts(receiver, "/slack")]
    assert len(slack) == 2 and slack[0].endswith("restore after approval")
    assert slack[1].startswith(f":white_check_mark: pg_user_data_restore restored user {a} in glimpse ({DB})")
    assert "approved by confirm param" in slack[1] and receiver.posts("/pagerduty") == []


def test_a_hostile_user_id_is_refused_red_with_nothing_created(run_dag, cluster, bucket, receiver, tmp_path,
                                                               damaged):
    run = run_restore(run_dag, cluster, bucket, tmp_path, user_id="users; DROP TABLE x", backup_date="20261125",
                      dry_run=False, confirm=DB)
    assert run.state == "failed", run.output[-3000:]
    assert run.task_states == {"validate": "failed", "stage": "upstream_failed", "preview": "upstream_failed",
                               "approve_upsert": "upstream_failed", "apply": "upstream_failed",
                               "cleanup": "skipped", "report": "success", "run_outcome": "failed"}
    row = restore_log(cluster, run.run_id)
    assert row["status"] == "REFUSED" and row["kind"] == "user" and row["changes"] is None
    assert row["error_message"] == ("validate: user_id 'users; DROP TABLE x' is not a UUID (the user key is uuid), "
                                    "e.g. 6f1c2a4e-8d3b-4c7a-9e2f-0a1b2c3d4e5f")
    assert user_digests(cluster, damaged["user_id"]) == damaged["after"] and leftover_schemas(cluster) == []
    slack = [p["text"] for p in json_posts(receiver, "/slack")]
    assert any(t.startswith(":no_entry: pg_user_data_restore refused") and "is not a UUID" in t for t in slack)
    assert len(receiver.posts("/pagerduty")) >= 1
