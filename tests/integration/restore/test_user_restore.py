"""pg_user_data_restore's core against a real PostgreSQL 15 and a real backup in moto S3: one user's damaged
rows come back (by content digest), another user's damage and every other row stay as they are, the dry run
changes nothing and reports exact counts, the safety tables hold the previous rows, from_database works, and
hostile params are refused before anything is created."""

from __future__ import annotations

import datetime as dt
import os
import uuid

import psycopg
import pytest
from pg_dataops.backup import steps as backup
from pg_dataops.common.config import load_config
from pg_dataops.common.databases import database_exists
from pg_dataops.restore import user
from pg_dataops.restore.request import RequestRefused
from psycopg import sql

from tests.support.age_keys import encrypt_backup_in_s3, keypair

pytestmark = pytest.mark.integration

MOMENT = dt.datetime(2026, 11, 24, 17, 0, tzinfo=dt.UTC)  # 25 Nov 02:00 in Seoul
KEY = "database/daily/glimpse_daily_20261125_020000.dump"
BASE = "hc_user_base"
MAP = dict(load_config(environ={}).restore.user_tables)


def connect(cluster, dbname: str, **kw) -> psycopg.Connection:
    return psycopg.connect(host="127.0.0.1", port=cluster.port, user="postgres", password=cluster.password,
                           dbname=dbname, **kw)


def admin(cluster, *statements):
    with connect(cluster, "postgres", autocommit=True) as pg:
        for s in statements:
            pg.execute(s)


def copy_db(cluster, name: str, template: str = BASE) -> str:
    admin(cluster, sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)),
          sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(template)))
    return name


def pick_users(pg) -> tuple[str, str]:
    """Two users with rows in every mapped table who share no like or match (so neither's damage is the other's)."""
    has_all = ("EXISTS (SELECT FROM likes WHERE from_user_id = u.id) AND EXISTS (SELECT FROM likes WHERE to_user_id "
               "= u.id) AND EXISTS (SELECT FROM messages WHERE sender_id = u.id) AND EXISTS (SELECT FROM user_groups "
               "WHERE user_id = u.id) AND (SELECT count(*) FROM matches WHERE u.id IN (user1_id, user2_id)) >= 2")
    a = pg.execute(f"SELECT id::text FROM users u WHERE {has_all} ORDER BY id LIMIT 1").fetchone()[0]
    b = pg.execute(f"SELECT id::text FROM users u WHERE {has_all} AND u.id <> %(a)s "
                   "AND NOT EXISTS (SELECT FROM likes WHERE (from_user_id, to_user_id) IN ((u.id, %(a)s), (%(a)s, u.id))) "
                   "AND NOT EXISTS (SELECT FROM matches WHERE (user1_id, user2_id) IN ((u.id, %(a)s), (%(a)s, u.id))) "
                   "ORDER BY id DESC LIMIT 1", {"a": a}).fetchone()[0]
    return a, b


def _where(cols, negate=False) -> sql.Composable:
    cond = sql.SQL(" OR ").join(sql.SQL("{} = %(u)s").format(sql.Identifier(c)) for c in cols)
    return sql.SQL("NOT ({})").format(cond) if negate else cond


def user_digests(cluster, db: str, user_id: str, *, others: bool = False) -> dict[str, tuple[int, str]]:
    """Per mapped table: count and md5 over the user's rows (``others``: over every other row)."""
    out = {}
    with connect(cluster, db) as pg:
        for table, cols in MAP.items():
            schema, name = table.split(".")
            q = sql.SQL("SELECT count(*), coalesce(md5(string_agg(t::text, E'\\n' ORDER BY t::text)), '') "
                        "FROM {}.{} t WHERE {}").format(sql.Identifier(schema), sql.Identifier(name),
                                                       _where(cols, others))
            out[table] = tuple(pg.execute(q, {"u": user_id}).fetchone())
    return out


def table_digest(cluster, db: str, qualified: str) -> tuple[int, str]:
    schema, name = qualified.split(".")
    with connect(cluster, db) as pg:
        return tuple(pg.execute(sql.SQL("SELECT count(*), coalesce(md5(string_agg(t::text, E'\\n' ORDER BY t::text)), "
                                        "'') FROM {}.{} t").format(sql.Identifier(schema), sql.Identifier(name)))
                     .fetchone())


def schemas(cluster, db: str) -> list[str]:
    with connect(cluster, db) as pg:
        return [r[0] for r in pg.execute("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'dataops%' ORDER BY 1")]


@pytest.fixture(scope="module")
def base(cluster):
    """A 300-user demo database with one table outside the map, and its users A and B."""
    admin(cluster, f"DROP DATABASE IF EXISTS {BASE}")
    cluster.createdb(BASE)
    cluster.load_demo(BASE, 300)
    with connect(cluster, BASE, autocommit=True) as pg:
        pg.execute("CREATE TABLE public.app_settings (id int PRIMARY KEY, value text NOT NULL)")
        pg.execute("INSERT INTO public.app_settings SELECT g, 'v' || g FROM generate_series(1, 20) g")
        a, b = pick_users(pg)
    yield {"a": a, "b": b}
    admin(cluster, f"DROP DATABASE IF EXISTS {BASE}")


@pytest.fixture(scope="module")
def stored(cluster, s3, base, tmp_path_factory):
    """A real backup of the base database in its own bucket (the pg_backup steps, without Airflow)."""
    bucket = f"test-{uuid.uuid4().hex[:12]}"
    client = s3.client()
    client.create_bucket(Bucket=bucket)
    root = tmp_path_factory.mktemp("hc_src")
    cfg = load_config(environ={"PGBACKUP_BUCKET": bucket, "PGBACKUP_LOCAL_ROOT": str(root)})
    dump = backup.dump_step(cfg, cfg.target("glimpse"), cluster.conn(BASE), "daily", MOMENT)
    checksum = backup.checksum_step(dump)
    upload = backup.upload_step(client, cfg, dump, checksum)
    backup.manifest_step(client, cfg, dump, upload, {"verified": True}, "pg_backup", "seed")
    return bucket


@pytest.fixture
def cfg(stored, tmp_path):
    return load_config(environ={"PGBACKUP_BUCKET": stored, "PGBACKUP_LOCAL_ROOT": str(tmp_path / "root")})


def damage_a(pg, a: str) -> dict[str, int]:
    """The incident: A's likes and messages deleted, a match deleted, the profile overwritten."""
    likes = pg.execute("DELETE FROM likes WHERE from_user_id = %(a)s OR to_user_id = %(a)s", {"a": a}).rowcount
    messages = pg.execute("DELETE FROM messages WHERE sender_id = %(a)s OR receiver_id = %(a)s", {"a": a}).rowcount
    matches = pg.execute("DELETE FROM matches WHERE id = (SELECT min(id) FROM matches WHERE %(a)s IN (user1_id, "
                         "user2_id))", {"a": a}).rowcount
    pg.execute("UPDATE user_profiles SET bio = 'overwritten', city = NULL WHERE id = %(a)s", {"a": a})
    return {"likes": likes, "messages": messages, "matches": matches}


def damage_b(pg, b: str) -> None:
    pg.execute("DELETE FROM user_groups WHERE user_id = %s", (b,))
    pg.execute("UPDATE user_preferences SET max_distance_km = 999 WHERE id = %s", (b,))
    pg.execute("DELETE FROM likes WHERE from_user_id = %s", (b,))


def run_plan(cfg, s3, cluster, db, *, identity=lambda: pytest.fail("not encrypted"), **params):
    form = {"target": "glimpse", "user_id": "", "backup_date": "", "backup_key": "", "from_database": "",
            "dry_run": True, "confirm": "", **params}
    conn = cluster.conn(db)
    return user.plan(cfg, form, target="glimpse", target_conn=conn, run_id=f"manual__{uuid.uuid4().hex}",
                     now_stamp="20261201060000", s3=s3.client, identity=identity,
                     database_exists=lambda name: database_exists(conn, name))


def restore(cfg, s3, cluster, db, *, identity=lambda: "", **params):
    """plan, stage, preview, (apply when not a dry run), cleanup: the DAG's steps without Airflow."""
    plan = run_plan(cfg, s3, cluster, db, identity=identity, **params)
    conn = cluster.conn(db)
    try:
        staged = user.stage(cfg, plan, target_conn=conn, s3=s3.client, identity=identity, timeout=300)
        assert schemas(cluster, db)[-1] == plan["staging_schema"]
        shown = user.preview(plan, staged, target_conn=conn)
        applied = None if plan["dry_run"] else user.apply(plan, staged, shown, target_conn=conn)
    finally:
        cleaned = user.cleanup(plan, target_conn=conn)
    assert cleaned["staging_dropped"] is True and plan["staging_schema"] not in schemas(cluster, db)
    return plan, staged, shown, applied


def counts(table_counts):
    return {t: (c["inserted"], c["updated"], c["unchanged"], c["left_alone"]) for t, c in table_counts.items()}


def test_a_damaged_user_comes_back_from_the_backup_and_nothing_else_moves(cluster, s3, cfg, base):
    a, b = base["a"], base["b"]
    db = copy_db(cluster, "hc_user_backup")
    try:
        before_a = user_digests(cluster, db, a)
        with connect(cluster, db) as pg:
            ups = {k: pg.execute(sql.SQL("SELECT count(*) FROM {} WHERE {}").format(
                sql.Identifier(*k.split(".")), _where(v)), {"u": a}).fetchone()[0] for k, v in MAP.items()}
            gone = damage_a(pg, a)
            damage_b(pg, b)
        after_a = user_digests(cluster, db, a)
        after_b = user_digests(cluster, db, b)
        after_others = user_digests(cluster, db, a, others=True)
        settings = table_digest(cluster, db, "public.app_settings")
        assert after_a != before_a and gone["likes"] > 0 and gone["messages"] > 0 and gone["matches"] == 1

        # The dry run: exact counts, nothing changed, nothing left behind.
        plan, staged, shown, applied = restore(cfg, s3, cluster, db, user_id=a.upper(), backup_date="20261125")
        assert plan["user_id"] == a and plan["backup_key"] == KEY and applied is None
        assert [t["table"] for t in plan["tables"]] == list(MAP)  # the runbook's map is already parents first
        assert {t: c["rows"] for t, c in staged["tables"].items()} == ups
        assert counts(shown["tables"]) == {
            "public.users": (0, 0, 1, 0), "public.user_profiles": (0, 1, 0, 0), "public.user_preferences": (0, 0, 1, 0),
            "public.likes": (gone["likes"], 0, 0, 0), "public.matches": (1, 0, ups["public.matches"] - 1, 0),
            "public.messages": (gone["messages"], 0, 0, 0),
            "public.user_groups": (0, 0, ups["public.user_groups"], 0)}
        assert user_digests(cluster, db, a) == after_a and user_digests(cluster, db, b) == after_b
        assert schemas(cluster, db) == []

        # The restore: A as before the damage; B's damage and every other row untouched.
        plan, staged, shown, applied = restore(cfg, s3, cluster, db, user_id=a, backup_key=KEY, dry_run=False)
        assert user_digests(cluster, db, a) == before_a
        assert user_digests(cluster, db, b) == after_b
        assert user_digests(cluster, db, a, others=True) == after_others
        assert table_digest(cluster, db, "public.app_settings") == settings
        assert {t: (c["inserted"], c["updated"]) for t, c in applied["tables"].items()} == {
            t: (c["inserted"], c["updated"]) for t, c in shown["tables"].items()}
        # The safety tables hold A's rows as they were before the restore (after the damage), and stay.
        assert schemas(cluster, db) == ["dataops_safety"]
        for table, copy in plan["safety_tables"].items():
            assert table_digest(cluster, db, f"dataops_safety.{copy}") == after_a[table], table
            assert applied["tables"][table]["safety_rows"] == after_a[table][0]
        assert applied["safety_location"] == "dataops_safety.(" + ", ".join(plan["safety_tables"].values()) + ")"

        # The rollback commands put the previous rows back exactly; the drop command removes the safety tables.
        with connect(cluster, db, autocommit=True) as pg:
            for statement in applied["rollback"]:
                pg.execute(statement)
        assert user_digests(cluster, db, a) == after_a
        assert user_digests(cluster, db, a, others=True) == after_others
        with connect(cluster, db, autocommit=True) as pg:
            pg.execute(applied["drop"])
            assert pg.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'dataops_safety'").fetchone()[0] == 0
    finally:
        admin(cluster, f"DROP DATABASE IF EXISTS {db}")


def test_from_database_restores_all_columns_and_sequences_follow(cluster, s3, cfg, base):
    a = base["a"]
    src = copy_db(cluster, "hc_user_src")
    db = copy_db(cluster, "hc_user_target")
    try:
        before_a = user_digests(cluster, db, a)
        with connect(cluster, db) as pg:
            damage_a(pg, a)
            # Every column of the user's row changed (the runbook restored only updated_at), and the likes'
            # identity reset below the restored ids.
            pg.execute("UPDATE users SET email = 'x@y.example', status = 'deleted', last_login_at = NULL, "
                       "updated_at = '2030-01-01' WHERE id = %s", (a,))
            top = pg.execute("SELECT max(id) FROM likes").fetchone()[0]
            pg.execute("DELETE FROM likes WHERE id = %s", (top,))  # now the restored rows may need the sequence
            pg.execute("SELECT setval(pg_get_serial_sequence('public.likes', 'id'), 1)")
        after_others = user_digests(cluster, db, a, others=True)
        plan, staged, shown, applied = restore(cfg, s3, cluster, db, user_id=a, from_database=src, dry_run=False)
        assert plan["from_database"] == src and plan["backup"] is None
        assert shown["tables"]["public.users"]["updated"] == 1
        assert user_digests(cluster, db, a) == before_a
        assert user_digests(cluster, db, a, others=True) == after_others
        with connect(cluster, db) as pg:
            last = pg.execute("SELECT last_value FROM likes_id_seq").fetchone()[0]
            biggest_a = pg.execute("SELECT max(id) FROM likes WHERE %(a)s IN (from_user_id, to_user_id)", {"a": a})
            assert last >= biggest_a.fetchone()[0] and last > 1
        assert applied["tables"]["public.likes"]["sequences"] == {"public.likes_id_seq": last}
        assert applied["tables"]["public.messages"]["sequences"] == {}  # already past every id: left as it was
    finally:
        admin(cluster, f"DROP DATABASE IF EXISTS {db}", f"DROP DATABASE IF EXISTS {src}")


def test_data_changed_after_the_preview_rolls_the_whole_upsert_back(cluster, s3, cfg, base):
    a = base["a"]
    db = copy_db(cluster, "hc_user_race")
    try:
        with connect(cluster, db) as pg:
            damage_a(pg, a)
        plan = run_plan(cfg, s3, cluster, db, user_id=a, backup_key=KEY, dry_run=False)
        conn = cluster.conn(db)
        staged = user.stage(cfg, plan, target_conn=conn, s3=s3.client, identity=lambda: "", timeout=300)
        shown = user.preview(plan, staged, target_conn=conn)
        with connect(cluster, db) as pg:  # the application writes one of the user's rows meanwhile
            pg.execute("UPDATE user_preferences SET max_age = 77 WHERE id = %s", (a,))
        before = user_digests(cluster, db, a)
        with pytest.raises(user.ApplyFailed, match="public.user_preferences: the upsert would insert 0 and update 1"):
            user.apply(plan, staged, shown, target_conn=conn)
        assert user_digests(cluster, db, a) == before
        assert schemas(cluster, db) == [plan["staging_schema"]]  # no safety schema: the transaction rolled back
        user.cleanup(plan, target_conn=conn)
        assert schemas(cluster, db) == []
    finally:
        admin(cluster, f"DROP DATABASE IF EXISTS {db}")


def test_an_encrypted_backup_needs_the_right_identity_before_any_download(cluster, s3, stored, base, tmp_path):
    client = s3.client()
    sealed = f"test-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=sealed)
    for suffix in ("", ".sha256", ".json"):
        client.copy_object(Bucket=sealed, Key=KEY + suffix, CopySource={"Bucket": stored, "Key": KEY + suffix})
    mine, other = keypair(tmp_path, "mine"), keypair(tmp_path, "other")
    encrypt_backup_in_s3(client, sealed, KEY, [mine.recipient], tmp_path / "seal")
    cfg = load_config(environ={"PGBACKUP_BUCKET": sealed, "PGBACKUP_LOCAL_ROOT": str(tmp_path / "root")})
    a = base["a"]
    db = copy_db(cluster, "hc_user_sealed")
    try:
        with connect(cluster, db) as pg:
            gone = damage_a(pg, a)
        with pytest.raises(Exception, match="encrypted for") as wrong:
            run_plan(cfg, s3, cluster, db, identity=lambda: other.identity, user_id=a, backup_date="20261125")
        assert other.identity not in str(wrong.value)
        assert not os.path.exists(os.path.join(cfg.local_root, ".restore")) and schemas(cluster, db) == []
        plan, staged, shown, _ = restore(cfg, s3, cluster, db, identity=lambda: mine.identity, user_id=a,
                                         backup_date="20261125")
        assert plan["backup_key"] == KEY + ".age"
        assert shown["tables"]["public.likes"]["inserted"] == gone["likes"]
        assert not os.listdir(os.path.join(cfg.local_root, ".restore"))  # download and plaintext removed
    finally:
        admin(cluster, f"DROP DATABASE IF EXISTS {db}")


def test_a_user_not_in_the_source_is_refused_at_the_preview(cluster, s3, cfg, hostile_db):
    nobody = str(uuid.UUID(int=1))
    plan = run_plan(cfg, s3, cluster, hostile_db, user_id=nobody, backup_key=KEY)
    conn = cluster.conn(hostile_db)
    try:
        staged = user.stage(cfg, plan, target_conn=conn, s3=s3.client, identity=lambda: "", timeout=300)
        assert all(c["rows"] == 0 and c["rows_read"] > 0 for c in staged["tables"].values())
        with pytest.raises(RequestRefused, match=f"user {nobody} has no rows in backup {KEY}"):
            user.preview(plan, staged, target_conn=conn)
    finally:
        user.cleanup(plan, target_conn=conn)
    assert schemas(cluster, hostile_db) == []


@pytest.mark.parametrize(("params", "cause"), [
    ({"user_id": "42"}, "user_id '42' is not a UUID"),
    ({"user_id": "x' OR '1'='1"}, "is not a UUID"),
    ({"user_id": "users; DROP TABLE x"}, "user_id 'users; DROP TABLE x' is not a UUID"),
    ({"user_id": "'; --"}, "is not a UUID"),
    ({"backup_date": "20261124"}, "no backup of 'glimpse' on 2026-11-24; backups exist on: 2026-11-25"),
    ({"backup_date": "", "backup_key": "users; DROP TABLE x"}, "is not an S3 key of a backup"),
    ({"confirm": "glimpse"}, "confirm 'glimpse' does not match the target database 'hc_user_hostile'"),
    ({"backup_date": "", "from_database": "glimpse_nope"}, "from_database 'glimpse_nope' does not exist"),
    ({"backup_date": "", "from_database": "hc_user_hostile"}, "is the target database itself"),
    ({"backup_date": "", "from_database": '"; --'}, "is not a database name"),
    ({"backup_date": ""}, "no backup chosen"),
], ids=["number", "quote-or", "drop-table", "quote-comment", "date-without-backup", "key-injection", "wrong-confirm",
        "missing-from-database", "from-database-is-target", "from-database-injection", "no-source"])
def test_hostile_params_are_refused_before_anything_is_created(cluster, s3, cfg, base, hostile_db, params, cause):
    db = hostile_db
    before = {t: table_digest(cluster, db, t) for t in MAP}
    form = {"user_id": base["a"], "backup_date": "20261125", "dry_run": False, **params}
    with pytest.raises(RequestRefused) as refused:
        run_plan(cfg, s3, cluster, db, **form)
    assert cause in str(refused.value)
    assert schemas(cluster, db) == [] and {t: table_digest(cluster, db, t) for t in MAP} == before
    assert not os.path.exists(os.path.join(cfg.local_root, ".restore"))  # nothing downloaded


@pytest.fixture(scope="module")
def hostile_db(cluster, base):
    yield copy_db(cluster, "hc_user_hostile")
    admin(cluster, "DROP DATABASE IF EXISTS hc_user_hostile")
