"""The approval, the Airflow way, end to end: each restore DAG triggered through the REST API without `confirm`
waits in Required Actions (task state `awaiting_input`) with the preview in the approval's body; a person
answers through the REST API (what the UI's Approve / Reject buttons call) and the run goes on.

One real Airflow (api-server, scheduler, dag-processor; LocalExecutor on the test's SQLite metadata DB), four
runs on one damaged copy of the demo database: pg_table_restore Approve (the damaged public.likes is back to its
pre-damage digest, restore_logs says who approved) and Reject (a green run that changed nothing, restore_logs
REJECTED); pg_user_data_restore Approve (one user's deleted likes and messages are back); pg_full_recovery
Approve (the swap: every table as in the backup, the damaged database kept). `airflow dags test` cannot do
this: it blocks on the wait."""

from __future__ import annotations

import datetime as dt
import hashlib
import time

import devstack
import psycopg
import pytest
from pg_dataops.backup import steps as backup
from pg_dataops.common.config import load_config
from psycopg import sql

from tests.support.hitl import Run as _Run
from tests.support.pg import table_digests

from .conftest import json_posts

pytestmark = pytest.mark.dagrun

DAG_ID = "pg_table_restore"
GATE = "approve_apply"
DB = "hd_approval_glimpse"
MOMENT = dt.datetime(2026, 11, 24, 17, 0, tzinfo=dt.UTC)  # 25 Nov 02:00 in Seoul
BACKUP_DATE = "20261125"
WAIT_SECONDS = 150  # a step of the run, scheduled and executed by a LocalExecutor on a busy 2-vCPU machine


def pg(cluster, dbname: str = DB):
    return psycopg.connect(host="127.0.0.1", port=cluster.port, user="postgres", password=cluster.password,
                           dbname=dbname, autocommit=True)


def damage_likes(cluster, *, delete: int, change: int) -> None:
    with pg(cluster) as c:
        c.execute("DELETE FROM public.likes WHERE id IN (SELECT id FROM public.likes ORDER BY id LIMIT %s)", (delete,))
        c.execute("UPDATE public.likes SET is_super = NOT is_super, updated_at = now() "
                  "WHERE id IN (SELECT id FROM public.likes ORDER BY id DESC LIMIT %s)", (change,))


def md5_empty() -> str:
    return hashlib.md5(b"").hexdigest()


def restore_log(cluster, run_id: str) -> dict | None:
    with psycopg.connect(host="127.0.0.1", port=cluster.port, user="postgres", password=cluster.password,
                         dbname="catalog", row_factory=psycopg.rows.dict_row) as c:
        if not c.execute("SELECT to_regclass('public.restore_logs') IS NOT NULL AS e").fetchone()["e"]:
            return None
        return c.execute("SELECT * FROM restore_logs WHERE run_id = %s", (run_id,)).fetchone()


@pytest.fixture
def damaged(cluster, s3, bucket, tmp_path):
    """A copy of the demo database, backed up to the test's bucket, then public.likes damaged (40 rows deleted,
    25 changed); yields the pre-damage digest of public.likes."""
    cluster.dropdb(DB)
    cluster.createdb(DB)
    cluster.load_demo(DB, 300)
    cfg = load_config(environ={"PGBACKUP_BUCKET": bucket, "PGBACKUP_LOCAL_ROOT": str(tmp_path / "seed"),
                               "PGBACKUP_MULTIPART_CHUNK_MB": "5"})
    client = s3.client()
    dump = backup.dump_step(cfg, cfg.target("glimpse"), cluster.conn(DB), "daily", MOMENT)
    upload = backup.upload_step(client, cfg, dump, backup.checksum_step(dump))
    backup.manifest_step(client, cfg, dump, upload, {"verified": True}, "pg_backup", "seed")
    backup_state.update(table_digests(cluster, DB))
    with pg(cluster) as c:  # a user with likes and messages, and its rows as the backup has them
        user_id = str(c.execute("SELECT sender_id FROM public.messages m WHERE EXISTS (SELECT 1 FROM public.likes l "
                                "WHERE l.from_user_id = m.sender_id) ORDER BY id LIMIT 1").fetchone()[0])
    backup_user.update(id=user_id, rows=user_rows(cluster, user_id))
    before = backup_state["public.likes"]
    damage_likes(cluster, delete=40, change=25)
    yield before
    with pg(cluster, "postgres") as c:
        made = [r[0] for r in c.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (DB + "%",))]
    for name in made:
        cluster.dropdb(name)


backup_state: dict = {}  # every table's digest in the backup (filled by the fixture)
backup_user: dict = {}  # a user with likes and messages, and the digest of its rows in the backup


def user_rows(cluster, user_id: str) -> dict:
    """A digest of one user's rows in likes and messages (what pg_user_data_restore must bring back)."""
    query = sql.SQL("SELECT count(*), md5(coalesce(string_agg(x::text, ',' ORDER BY x::text), '')) FROM {} x "
                    "WHERE {} = %s OR {} = %s")
    with pg(cluster) as c:
        return {t: c.execute(query.format(sql.Identifier("public", t), sql.Identifier(a), sql.Identifier(b)),
                             (user_id, user_id)).fetchone()
                for t, a, b in (("likes", "from_user_id", "to_user_id"), ("messages", "sender_id", "receiver_id"))}


class Run(_Run):
    def __init__(self, airflow, run_id: str, dag_id: str = DAG_ID, gate: str = GATE):
        super().__init__(airflow, run_id, dag_id=dag_id, gate=gate)


def test_table_restore_waits_for_an_approval_answered_through_the_rest_api(dag_env, cluster, bucket, receiver,
                                                                           damaged):
    before_damage = damaged
    damaged_now = table_digests(cluster, DB)["public.likes"]
    assert damaged_now != before_damage and damaged_now[0] == before_damage[0] - 40
    receiver.clear()
    env = dag_env(bucket=bucket, conns={"glimpse_db": cluster.airflow_conn(DB)})
    airflow = devstack.AirflowServices(env)
    started = time.monotonic()
    try:
        airflow.start()
        airflow.wait_for_dag(DAG_ID)
        up = time.monotonic()
        conf = {"table": "public.likes", "backup_date": BACKUP_DATE, "mode": "replace"}  # no confirm

        # --- Approve ---------------------------------------------------------------------------------------
        run = Run(airflow, airflow.trigger(DAG_ID, conf))
        run.wait_awaiting_input()
        assert run.task_state("apply") in (None, "none", "scheduled")  # nothing applied while it waits
        assert table_digests(cluster, DB)["public.likes"] == damaged_now
        pending = run.pending_approval()
        assert pending["subject"] == "Apply the table restore?"
        assert pending["options"] == ["Approve", "Reject"] and pending["response_received"] is False
        body = pending["body"]
        assert "public.likes" in body and "mode **replace**" in body, body
        # the preview's counts: what is there now, what the backup has, what the apply would do
        assert f"| in the table now | {damaged_now[0]:,} |" in body, body
        assert f"| in the backup | {before_damage[0]:,} |" in body, body
        assert "| to insert (missing now) | 40 |" in body, body
        assert "| to replace (changed since, all columns) | 25 |" in body, body
        assert "| to delete (not in the backup) | 0 |" in body, body
        assert "safety dump of the table goes to `s3://" in body, body
        assert any("Approval needed: Apply the table restore?" in p.get("text", "")
                   for p in json_posts(receiver, "/slack")), receiver.requests

        answered = run.answer("Approve")
        assert answered["chosen_options"] == ["Approve"] and answered["responded_by"]["name"] == "admin"
        assert run.wait_end() == "success", run.explain()
        states = run.task_states()
        assert states[GATE] == "success" and states["apply"] == "success" and states["report"] == "success", states
        assert table_digests(cluster, DB)["public.likes"] == before_damage
        row = restore_log(cluster, run.run_id)
        assert row is not None and row["status"] == "SUCCESS", row
        assert row["approved_by"] == "admin" and row["kind"] == "table", row
        assert row["safety_location"].startswith(f"s3://{bucket}/"), row
        approved_at = time.monotonic()

        # --- Reject: a green run that changes nothing --------------------------------------------------------
        damage_likes(cluster, delete=10, change=0)
        damaged_again = table_digests(cluster, DB)["public.likes"]
        run = Run(airflow, airflow.trigger(DAG_ID, conf))
        run.wait_awaiting_input()
        assert "| to insert (missing now) | 10 |" in run.pending_approval()["body"]
        run.answer("Reject")
        assert run.wait_end() == "success", run.explain()  # a rejection is not a failure
        states = run.task_states()
        assert states[GATE] == "success" and states["apply"] == "skipped", states
        assert states["cleanup"] == "success" and states["report"] == "success", states
        assert table_digests(cluster, DB)["public.likes"] == damaged_again
        row = restore_log(cluster, run.run_id)
        assert row is not None and row["status"] == "REJECTED" and row["approved_by"] is None, row
        assert row["details"]["approval"]["responded_by"] == "admin", row["details"]
        with pg(cluster) as c:  # the staging schemas of both runs were dropped
            assert c.execute("SELECT count(*) FROM pg_namespace WHERE nspname LIKE %s",
                             (load_config().restore.staging_schema + "%",)).fetchone()[0] == 0
        rejected_at = time.monotonic()

        # --- pg_user_data_restore: one user's likes and messages deleted, then brought back ---------------
        user_id = backup_user["id"]
        airflow.wait_for_dag("pg_user_data_restore")
        with pg(cluster) as c:
            c.execute("DELETE FROM public.likes WHERE from_user_id = %s OR to_user_id = %s", (user_id, user_id))
            c.execute("DELETE FROM public.messages WHERE sender_id = %s OR receiver_id = %s", (user_id, user_id))
        run = Run(airflow, airflow.trigger("pg_user_data_restore", {"user_id": user_id, "backup_date": BACKUP_DATE,
                                                                    "dry_run": False}),
                  dag_id="pg_user_data_restore", gate="approve_upsert")
        run.wait_awaiting_input()
        assert user_rows(cluster, user_id) == {"likes": (0, md5_empty()), "messages": (0, md5_empty())}
        assert user_id in run.pending_approval()["body"]
        run.answer("Approve")
        assert run.wait_end() == "success", run.explain()
        assert user_rows(cluster, user_id) == backup_user["rows"]
        row = restore_log(cluster, run.run_id)
        assert (row["kind"], row["status"], row["approved_by"]) == ("user", "SUCCESS", "admin"), row
        user_done = time.monotonic()

        # --- pg_full_recovery: the swap approved in Required Actions ----------------------------------------
        airflow.wait_for_dag("pg_full_recovery")
        run = Run(airflow, airflow.trigger("pg_full_recovery", {"backup_date": BACKUP_DATE}),
                  dag_id="pg_full_recovery", gate="approve_swap")
        run.wait_awaiting_input()
        assert run.task_state("swap") in (None, "none", "scheduled") and run.task_state("stop_app") in (
            None, "none", "scheduled")
        body = run.pending_approval()["body"]
        assert f"### Swap the recovered database into place: {DB}" in body and "Rollback afterwards" in body
        damaged_db = table_digests(cluster, DB)
        run.answer("Approve")
        assert run.wait_end() == "success", run.explain()
        assert table_digests(cluster, DB) == backup_state  # every table as in the backup
        row = restore_log(cluster, run.run_id)
        assert (row["kind"], row["status"], row["approved_by"]) == ("full", "SUCCESS", "admin"), row
        assert table_digests(cluster, row["changes"]["kept_as"]) == damaged_db
        print(f"\n[timing] airflow up {up - started:.0f} s, table approve {approved_at - up:.0f} s, "
              f"table reject {rejected_at - approved_at:.0f} s, user {user_done - rejected_at:.0f} s, "
              f"full {time.monotonic() - user_done:.0f} s")
    finally:
        airflow.stop()
