"""pg_table_restore's core against a real PostgreSQL 15 and a real backup in moto S3: damage a copy of the demo
database, restore one table, and compare by content digest (the restored table with its pre-damage state,
every other table with its current one). Hostile params are refused before anything is created."""

from __future__ import annotations

import datetime as dt
import os

import psycopg
import pytest
from pg_dataops.backup import steps as backup
from pg_dataops.common.config import load_config
from pg_dataops.restore import source, table
from pg_dataops.restore.request import RequestRefused

from tests.support.age_keys import encrypt_backup_in_s3, keypair
from tests.support.pg import table_digests

pytestmark = pytest.mark.integration
BASE_DB = "hb_table_base"
DB = "hb_table"
MOMENT = dt.datetime(2026, 11, 24, 17, 0, tzinfo=dt.UTC)  # 25 Nov 02:00 in Seoul
KEY = "database/daily/glimpse_daily_20261125_020000.dump"


def connect(cluster, dbname=DB, autocommit=True):
    return psycopg.connect(host="127.0.0.1", port=cluster.port, user="postgres", password=cluster.password,
                           dbname=dbname, autocommit=autocommit)


@pytest.fixture(scope="module")
def base_db(cluster):
    """The demo data (300 users) plus a second schema, the template of every test's database."""
    cluster.dropdb(BASE_DB)
    cluster.createdb(BASE_DB)
    cluster.load_demo(BASE_DB, 300)
    cluster.psql("-c", "CREATE SCHEMA other; CREATE TABLE other.notes (id int PRIMARY KEY, body text); "
                 "INSERT INTO other.notes VALUES (1, 'a'), (2, 'b')", dbname=BASE_DB)
    yield BASE_DB
    cluster.dropdb(BASE_DB)


class Env:
    def __init__(self, cluster, cfg, client):
        self.cluster, self.cfg, self.client = cluster, cfg, client
        self.conn = cluster.conn(DB)

    def digests(self, dbname=DB):
        return table_digests(self.cluster, dbname)

    def sql(self, statement, dbname=DB):
        with connect(self.cluster, dbname) as pg:
            cur = pg.execute(statement)
            return cur.fetchall() if cur.description else None

    def staging_schemas(self):
        return [r[0] for r in self.sql(f"SELECT nspname FROM pg_namespace WHERE nspname LIKE "
                                       f"'{self.cfg.restore.staging_schema}%'")]

    def plan(self, **params):
        params = {"target": "glimpse", "backup_date": "20261125", "mode": "replace", **params}
        return table.plan_restore(
            self.cfg, params, run_id="manual__hb_test", connect_target=lambda _t: self.conn,
            find_backup=lambda target, date, key: source.find_backup(self.client, self.cfg, target, backup_date=date,
                                                                     backup_key=key),
            prove_identity=table.prove_identity(self.cfg, lambda: ""))

    def stage(self, plan):
        return table.stage(self.cfg, plan, target_conn=self.conn,
                           fetch_archive=lambda: table.fetch_backup_archive(self.cfg, self.client, plan, lambda: ""),
                           source_conn=self.conn.with_db(plan["from_database"]) if plan["from_database"] else None)

    def run(self, **params):
        """validate, stage, preview, apply (unless dry_run), cleanup: the DAG's steps without Airflow."""
        plan = self.plan(**params)
        try:
            staged = self.stage(plan)
            previewed = table.preview(self.cfg, plan, staged, target_conn=self.conn)
            applied = None
            if plan["mode"] != "dry_run":
                applied = table.apply(self.cfg, self.client, plan, staged, previewed, target_conn=self.conn,
                                      stamp="20261201000000")
            return plan, staged, previewed, applied
        finally:
            table.cleanup(plan, target_conn=self.conn)


@pytest.fixture
def env(cluster, s3, bucket, tmp_path, base_db):
    cluster.dropdb(DB)
    cluster.psql("-c", f"CREATE DATABASE {DB} TEMPLATE {base_db}")
    cfg = load_config(environ={"PGBACKUP_BUCKET": bucket, "PGBACKUP_LOCAL_ROOT": str(tmp_path / "root"),
                               "PGBACKUP_MULTIPART_CHUNK_MB": "5"})
    client = s3.client()
    dump = backup.dump_step(cfg, cfg.target("glimpse"), cluster.conn(DB), "daily", MOMENT)
    upload = backup.upload_step(client, cfg, dump, backup.checksum_step(dump))
    backup.manifest_step(client, cfg, dump, upload, {"verified": True}, "pg_backup", "seed")
    yield Env(cluster, cfg, client)
    cluster.dropdb(DB)
    cluster.dropdb("hb_table_src")


def damage_likes(e: Env) -> dict:
    """Delete 5 likes, change 3 (not only updated_at), add one the backup does not have."""
    ids = [r[0] for r in e.sql("SELECT id FROM public.likes ORDER BY id LIMIT 20")]
    e.sql(f"DELETE FROM public.likes WHERE id IN ({', '.join(map(str, ids[:5]))})")
    e.sql(f"UPDATE public.likes SET is_super = NOT is_super, updated_at = now() "
          f"WHERE id IN ({', '.join(map(str, ids[5:8]))})")
    e.sql("INSERT INTO public.likes (from_user_id, to_user_id) SELECT a.id, b.id FROM public.users a, public.users b "
          "WHERE a.id <> b.id AND NOT EXISTS (SELECT 1 FROM public.likes l WHERE l.from_user_id = a.id AND "
          "l.to_user_id = b.id) LIMIT 1")
    return {"deleted": ids[:5], "changed": ids[5:8]}


def test_replace_puts_back_exactly_the_backup_rows_and_nothing_else(env):
    pre = env.digests()
    damage_likes(env)
    post = env.digests()
    plan, staged, previewed, applied = env.run(table="likes")
    assert staged["staging_schema"].startswith(env.cfg.restore.staging_schema + "_")
    c = previewed["counts"]
    assert (c["to_insert"], c["to_replace"], c["to_delete"]) == (5, 3, 1)
    assert c["backup_rows"] == pre["public.likes"][0] and c["current_rows"] == pre["public.likes"][0] - 4
    assert "| to replace (changed since, all columns) | 3 |" in previewed["markdown"]
    assert applied["applied"] == {"child_rows_deleted": {}, "deleted": 1, "updated": 3, "inserted": 5}
    after = env.digests()
    assert after["public.likes"] == pre["public.likes"]
    assert {k: v for k, v in after.items() if k != "public.likes"} == \
        {k: v for k, v in post.items() if k != "public.likes"}
    key = "database/safety/glimpse/hb_table_public.likes_before_table_restore_20261201000000.dump"
    assert applied["safety"]["key"] == key
    head = env.client.head_object(Bucket=env.cfg.bucket, Key=key)
    assert head["ContentLength"] == applied["safety"]["size"] > 0
    assert env.client.head_object(Bucket=env.cfg.bucket, Key=key + ".sha256")
    assert env.staging_schemas() == []
    # the sequence does not hand out a restored id again
    env.sql("INSERT INTO public.likes (from_user_id, to_user_id) SELECT a.id, b.id FROM public.users a, "
            "public.users b WHERE a.id <> b.id AND NOT EXISTS (SELECT 1 FROM public.likes l WHERE "
            "l.from_user_id = a.id AND l.to_user_id = b.id) LIMIT 1")


def test_merge_missing_adds_only_the_deleted_rows(env):
    pre_rows = dict(env.sql("SELECT id, l::text FROM public.likes l"))
    hurt = damage_likes(env)
    post_rows = dict(env.sql("SELECT id, l::text FROM public.likes l"))
    other_before = {k: v for k, v in env.digests().items() if k != "public.likes"}
    _, _, previewed, applied = env.run(table="public.likes", mode="merge_missing")
    assert previewed["counts"]["to_insert"] == 5 and applied["applied"]["inserted"] == 5
    rows = dict(env.sql("SELECT id, l::text FROM public.likes l"))
    assert {i: rows[i] for i in hurt["deleted"]} == {i: pre_rows[i] for i in hurt["deleted"]}
    assert {i: rows[i] for i in hurt["changed"]} == {i: post_rows[i] for i in hurt["changed"]}  # still changed
    new = set(post_rows) - set(pre_rows)
    assert len(new) == 1 and new <= set(rows)  # the new row stays
    assert len(rows) == len(post_rows) + 5
    assert {k: v for k, v in env.digests().items() if k != "public.likes"} == other_before


def test_replace_of_a_referenced_table_is_refused_without_cascade(env):
    pre = env.digests()
    env.sql("INSERT INTO public.users (email, password_hash) VALUES ('new@example.com', 'x')")
    env.sql("INSERT INTO public.likes (from_user_id, to_user_id) SELECT (SELECT id FROM public.users WHERE "
            "email = 'new@example.com'), id FROM public.users WHERE email <> 'new@example.com' LIMIT 2")
    # A message the new user sent in someone else's match: messages.sender_id is NO ACTION, so neither the user's
    # delete nor the match's cascade removes it; only cascade=true deletes it first.
    env.sql("INSERT INTO public.messages (match_id, sender_id, receiver_id, body, sent_at) SELECT m.id, "
            "(SELECT id FROM public.users WHERE email = 'new@example.com'), m.user1_id, 'hi', now() "
            "FROM public.matches m ORDER BY m.id LIMIT 1")
    post = env.digests()
    with pytest.raises(RequestRefused) as refused:
        env.run(table="users")
    text = str(refused.value)
    for referencing in ("public.likes", "public.matches", "public.messages", "public.user_groups",
                        "public.user_preferences", "public.user_profiles"):
        assert referencing in text
    assert "likes_from_user_id_fkey): 2 of its rows reference rows the restore deletes: deleted with them" in text
    assert "replace needs cascade=true" in text
    assert env.digests() == post
    assert env.staging_schemas() == []
    # a dry run shows the same plan and changes nothing
    _, _, previewed, applied = env.run(table="users", mode="dry_run")
    assert applied is None and previewed["requested"] is False and previewed["counts"]["to_delete"] == 1
    assert "replace would be refused unless cascade is set" in previewed["markdown"]
    assert env.digests() == post
    assert "messages_sender_id_fkey): 1 of its rows reference rows the restore deletes: the apply would fail" in text
    # with cascade: the new user goes, its likes with it (ON DELETE CASCADE), its NO ACTION message deleted first,
    # the rest as it was
    _, _, previewed, applied = env.run(table="users", cascade=True)
    assert ("messages_sender_id_fkey): 1 of its rows reference rows the restore deletes: deleted first, because "
            "cascade is set (ON DELETE NO ACTION)") in previewed["markdown"]
    assert applied["applied"]["deleted"] == 1 and applied["applied"]["child_rows_deleted"] == {
        "public.messages (messages_sender_id_fkey)": 1}
    assert env.digests() == pre


def test_a_dropped_table_is_recreated_with_its_indexes_and_constraints(env):
    pre = env.digests()
    want_idx = env.sql("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'user_groups' ORDER BY 1")
    want_con = env.sql("SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
                       "WHERE conrelid = 'public.user_groups'::regclass ORDER BY 1")
    env.sql("DROP TABLE public.user_groups")
    with pytest.raises(RequestRefused, match="does not exist in the target database: merge_missing needs"):
        env.run(table="user_groups", mode="merge_missing")
    _, staged, previewed, applied = env.run(table="user_groups")
    assert staged["exists"] is False and previewed["counts"]["to_insert"] == pre["public.user_groups"][0]
    assert applied["safety"] is None and applied["recreated"]["not_recreated_foreign_keys"] == []
    assert env.digests() == pre
    assert env.sql("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'user_groups' ORDER BY 1") == want_idx
    assert env.sql("SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
                   "WHERE conrelid = 'public.user_groups'::regclass ORDER BY 1") == want_con
    env.sql("INSERT INTO public.user_groups (user_id, group_name) SELECT id, 'hb-new' FROM public.users LIMIT 1")


def test_from_database_restores_the_table_as_it_is_there(env):
    env.sql(f"CREATE DATABASE hb_table_src TEMPLATE {DB}", dbname="postgres")
    pre = env.digests()
    damage_likes(env)
    post = env.digests()
    plan, staged, previewed, applied = env.run(table="likes", backup_date="", from_database="hb_table_src")
    assert plan["backup"] is None and plan["source_text"] == "database hb_table_src"
    after = env.digests()
    assert after["public.likes"] == pre["public.likes"]
    assert {k: v for k, v in after.items() if k != "public.likes"} == \
        {k: v for k, v in post.items() if k != "public.likes"}


@pytest.mark.parametrize(("params", "cause"), [
    ({"table": "users; DROP TABLE x"}, "is not a table name"),
    ({"table": '"; --'}, "is not a table name"),
    ({"table": "other.likes"}, "'other.likes' is not in backup .*near matches: public.likes"),
    ({"table": "public.notes"}, "'public.notes' is not in backup .*near matches: other.notes"),
    ({"table": "no_such_table"}, "'no_such_table' is not in backup"),
    ({"table": "likes", "backup_date": "20200101"}, "no backup of 'glimpse' on 2020-01-01; backups exist on: "
                                                    "2026-11-25"),
    ({"table": "likes", "confirm": "glimpse_prod"}, "confirm 'glimpse_prod' does not match the target database "
                                                    "'hb_table'"),
    ({"table": "likes", "backup_date": "", "from_database": "no_such_db"}, "from_database 'no_such_db' does not "
                                                                           "exist"),
    ({"table": "likes", "backup_date": "", "from_database": DB}, "is the target database itself"),
], ids=["semicolon", "quote-comment", "other-schema", "schema-not-named", "not-in-backup", "no-backup-that-day",
        "wrong-confirm", "from-db-missing", "from-db-is-target"])
def test_hostile_params_are_refused_before_anything_changes(env, params, cause):
    env.sql("CREATE TABLE public.x (id int)")
    before = env.digests()
    with pytest.raises(RequestRefused, match=cause):
        plan = env.plan(**params)
        env.stage(plan)
    assert env.staging_schemas() == []
    assert env.digests() == before


def test_an_encrypted_backup_needs_the_right_identity_before_any_download(env, tmp_path):
    """The backup encrypted for one key: another key is refused at validate (nothing downloaded, no staging
    schema); the right one restores the table and leaves no plaintext behind."""
    mine, other = keypair(tmp_path, "mine"), keypair(tmp_path, "other")
    encrypt_backup_in_s3(env.client, env.cfg.bucket, KEY, [mine.recipient], tmp_path / "seal")
    for suffix in ("", ".sha256", ".json"):  # only the encrypted backup is left
        env.client.delete_object(Bucket=env.cfg.bucket, Key=KEY + suffix)
    pre = env.digests()
    damage_likes(env)
    params = {"target": "glimpse", "backup_date": "20261125", "mode": "replace", "table": "likes"}

    def plan(identity):
        return table.plan_restore(
            env.cfg, params, run_id="manual__hb_test", connect_target=lambda _t: env.conn,
            find_backup=lambda target, date, key: source.find_backup(env.client, env.cfg, target, backup_date=date,
                                                                     backup_key=key),
            prove_identity=table.prove_identity(env.cfg, identity))

    with pytest.raises(Exception, match="encrypted for") as wrong:
        plan(lambda: other.identity)
    assert other.identity not in str(wrong.value) and env.staging_schemas() == []
    assert not os.path.exists(os.path.join(env.cfg.local_root, ".restore"))
    good = plan(lambda: mine.identity)
    assert good["backup_key"] == KEY + ".age"
    try:
        staged = table.stage(env.cfg, good, target_conn=env.conn, source_conn=None,
                             fetch_archive=lambda: table.fetch_backup_archive(env.cfg, env.client, good,
                                                                              lambda: mine.identity))
        previewed = table.preview(env.cfg, good, staged, target_conn=env.conn)
        table.apply(env.cfg, env.client, good, staged, previewed, target_conn=env.conn, stamp="20261201000000")
    finally:
        table.cleanup(good, target_conn=env.conn)
    assert env.digests()["public.likes"] == pre["public.likes"]
    assert not os.listdir(os.path.join(env.cfg.local_root, ".restore"))  # download and plaintext removed
