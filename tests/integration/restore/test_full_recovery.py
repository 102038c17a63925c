"""pg_full_recovery's core against a real cluster and moto S3, without Airflow: a database damaged after its
backup (rows deleted, rows changed, a table dropped) is recovered into a new database, checked, safety-dumped
and swapped in. The production-named database then equals the pre-damage state table by table, the kept one
the damaged state; a failed check leaves production untouched and no database behind."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import subprocess

import psycopg
import pytest
from pg_dataops.backup import steps as backup
from pg_dataops.common import databases
from pg_dataops.common import pg as pgtools
from pg_dataops.common.config import load_config
from pg_dataops.common.errors import VerificationFailed
from pg_dataops.restore import full, source

from tests.support.age_keys import keypair
from tests.support.pg import table_digests

pytestmark = pytest.mark.integration
MOMENT = dt.datetime(2026, 11, 24, 17, 0, tzinfo=dt.UTC)  # 25 Nov 02:00 in Seoul
KEY = "database/daily/glimpse_daily_20261125_020000.dump"
APPROVED = {"approved": True, "responded_by": "test"}


def names_on(cluster) -> set[str]:
    with psycopg.connect(host="127.0.0.1", port=cluster.port, user="postgres", password=cluster.password,
                         dbname="postgres") as pg:
        return {r[0] for r in pg.execute("SELECT datname FROM pg_database")}


def damage(cluster, dbname: str) -> None:
    cluster.psql("-c", "DELETE FROM public.messages WHERE id IN (SELECT id FROM public.messages ORDER BY id LIMIT 40)",
                 "-c", "UPDATE public.users SET email = 'x' || email WHERE id IN "
                       "(SELECT id FROM public.users ORDER BY id LIMIT 25)",
                 "-c", "DROP TABLE public.user_groups", dbname=dbname)


@pytest.fixture
def world(cluster, s3, bucket, tmp_path):
    """Its own small Glimpse database with a real backup in S3 (pg_backup's steps), digests taken before the
    damage and after it; every database the test made is dropped at the end."""
    name = f"fr_{os.urandom(3).hex()}"
    cluster.createdb(name)
    cluster.load_demo(name, 300)
    made = {"name": name}

    def setup(**env):
        cfg = load_config(environ={"PGBACKUP_BUCKET": bucket, "PGBACKUP_LOCAL_ROOT": str(tmp_path / "root"),
                                   "PGBACKUP_MULTIPART_CHUNK_MB": "5", **env})
        client = s3.client()
        dump = backup.dump_step(cfg, cfg.target("glimpse"), cluster.conn(name), "daily", MOMENT)
        upload = backup.upload_step(client, cfg, dump, backup.checksum_step(dump))
        backup.manifest_step(client, cfg, dump, upload, {"verified": True}, "pg_backup", "seed")
        made["before"] = table_digests(cluster, name)
        damage(cluster, name)
        made["damaged"] = table_digests(cluster, name)
        assert made["damaged"] != made["before"] and "public.user_groups" not in made["damaged"]
        return cfg

    made["setup"] = setup
    yield made
    for db in names_on(cluster):
        if db.startswith(name):
            cluster.dropdb(db)


def plan_for(cluster, s3, cfg, database, params, identity=lambda: ""):
    client = s3.client()
    conn = cluster.conn(database)
    return full.plan_recovery(
        cfg, params, target="glimpse", database=database, conn_id="glimpse_db",
        find_backup=lambda date, key: source.find_backup(client, cfg, "glimpse", backup_date=date, backup_key=key),
        identity=identity, database_exists=lambda n: databases.database_exists(conn, n), run_id="manual__it",
        dag_id="pg_full_recovery", started_at=dt.datetime.now(dt.UTC))


def recover(cluster, s3, cfg, plan, identity=lambda: "", swap=True):
    """The DAG's steps in order, the cleanup whatever happened: (results, cleanup result)."""
    client = s3.client()
    out = {}
    try:
        got = full.download(client, cfg, plan, identity=identity, timeout=600)
        out["restore"] = full.restore_new(cluster.conn(), plan, got["path"], pg_bin_root=cfg.pg_bin_root, timeout=600)
        out["check"] = full.check_restored(cluster.conn(plan["new_database"]), plan,
                                           required_tables=cfg.verify_required_tables)
        if swap:
            out["safety"] = full.safety_dump(cluster.conn(plan["database"]), client, cfg, plan, timeout=600)
            out["swap"] = full.swap(cluster.conn(), plan, APPROVED)
            out["analyze"] = full.analyze(cluster.conn(plan["database"]))
    finally:
        out["cleanup"] = full.cleanup(cluster.conn(), plan)
    return out


def test_recovery_brings_back_the_state_before_the_damage_and_keeps_the_damaged_one(cluster, s3, bucket, world):
    cfg = world["setup"]()
    db = world["name"]
    plan = plan_for(cluster, s3, cfg, db, {"backup_date": "20261125", "parallel_jobs": 3, "confirm": db})
    assert plan["backup_key"] == KEY and plan["jobs"] == 3
    out = recover(cluster, s3, cfg, plan)

    assert table_digests(cluster, db) == world["before"]  # deleted, changed and dropped: all back
    assert table_digests(cluster, plan["kept_database"]) == world["damaged"]  # the way back, as it was
    assert out["swap"]["old_database"] == plan["kept_database"]
    assert out["cleanup"] == {"removed_dir": plan["work_dir"], "dropped": None, "left_in_place": None}
    assert plan["new_database"] not in names_on(cluster) and not os.path.exists(plan["work_dir"])
    assert out["check"]["rows_checked"] == sum(plan["backup"]["manifest"]["table_counts"].values())

    # The safety dump: the damaged database, in S3 under the safety prefix, with its .sha256.
    client = s3.client()
    key = f"database/safety/glimpse/{db}_before_recovery_{plan['stamp']}.dump"
    assert out["safety"]["key"] == key and out["safety"]["location"] == f"s3://{bucket}/{key}"
    body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    assert body.startswith(b"PGDMP") and not out["safety"]["encrypted"]
    digest = hashlib.sha256(body).hexdigest()
    sidecar = client.get_object(Bucket=bucket, Key=key + ".sha256")["Body"].read().decode()
    assert digest == out["safety"]["sha256"] and sidecar.split() == [digest, key.rsplit("/", 1)[1]]
    assert out["safety"]["table_counts"]["public.messages"] == world["damaged"]["public.messages"][0]
    assert "public.user_groups" not in out["safety"]["table_counts"]


def test_encrypted_backup_and_an_age_encrypted_safety_dump(cluster, s3, bucket, world, tmp_path):
    a = keypair(tmp_path, "a")
    cfg = world["setup"](PGBACKUP_ENCRYPTION_RECIPIENTS=a.recipient)
    db = world["name"]
    plan = plan_for(cluster, s3, cfg, db, {"backup_key": KEY + ".age"}, identity=lambda: a.identity)
    assert plan["encrypted"] and plan["safety_key"].endswith(".dump.age")
    out = recover(cluster, s3, cfg, plan, identity=lambda: a.identity)

    assert table_digests(cluster, db) == world["before"]
    assert table_digests(cluster, plan["kept_database"]) == world["damaged"]
    stored = tmp_path / "safety.dump.age"
    stored.write_bytes(s3.client().get_object(Bucket=bucket, Key=plan["safety_key"])["Body"].read())
    assert stored.read_bytes().startswith(b"age-encryption.org/v1") and b"PGDMP" not in stored.read_bytes()
    identity_file = tmp_path / "a.identity"
    identity_file.write_text(a.identity + "\n")
    plain = subprocess.run(["age", "-d", "-i", str(identity_file), str(stored)], check=True,
                           capture_output=True).stdout
    assert plain.startswith(b"PGDMP") and out["safety"]["encrypted"]


def test_a_failed_check_leaves_production_untouched_and_nothing_behind(cluster, s3, bucket, world):
    cfg = world["setup"]()
    db = world["name"]
    client = s3.client()
    # The manifest says one more user than the backup holds: the restored copy cannot match it.
    doc_key = KEY + ".json"
    import json

    doc = json.loads(client.get_object(Bucket=bucket, Key=doc_key)["Body"].read())
    doc["table_counts"]["public.users"] += 1
    client.put_object(Bucket=bucket, Key=doc_key, Body=json.dumps(doc).encode())
    before_run = names_on(cluster)
    plan = plan_for(cluster, s3, cfg, db, {"backup_date": "20261125"})
    with pytest.raises(VerificationFailed, match=r"does not match the backup's manifest: table public.users: "
                                                 r"300 rows restored, 301 in the dump's snapshot"):
        recover(cluster, s3, cfg, plan)
    assert table_digests(cluster, db) == world["damaged"]  # production as it was
    assert names_on(cluster) == before_run  # the new database was dropped, no kept one made
    assert not os.path.exists(plan["work_dir"])
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert not [k for k in keys if "/safety/" in k]


def test_schema_only_sections_restore_empty_tables_and_check_only_their_existence(cluster, s3, world):
    cfg = world["setup"]()
    db = world["name"]
    plan = plan_for(cluster, s3, cfg, db, {"backup_date": "20261125", "sections": ["pre-data", "post-data"]})
    client = s3.client()
    try:
        got = full.download(client, cfg, plan, identity=lambda: "", timeout=600)
        full.restore_new(cluster.conn(), plan, got["path"], pg_bin_root=cfg.pg_bin_root, timeout=600)
        digests = table_digests(cluster, plan["new_database"])
        checked = full.check_restored(cluster.conn(plan["new_database"]), plan,
                                      required_tables=cfg.verify_required_tables)
    finally:
        cleaned = full.cleanup(cluster.conn(), plan)
    assert set(digests) == set(world["before"]) and all(count == 0 for count, _ in digests.values())
    assert checked["structure_only"] and checked["rows_checked"] == 0 and "only the tables' existence" in checked["note"]
    assert cleaned["dropped"] == plan["new_database"]
    assert table_digests(cluster, db) == world["damaged"]


def test_cleanup_never_drops_a_database_it_did_not_make(cluster, s3, world):
    cfg = world["setup"]()
    db = world["name"]
    plan = plan_for(cluster, s3, cfg, db, {"backup_date": "20261125"})
    cluster.createdb(plan["new_database"])  # someone else's database under the name (no marker)
    assert full.cleanup(cluster.conn(), plan)["dropped"] is None
    assert plan["new_database"] in names_on(cluster)
    with pytest.raises(full.DatabaseNotOurs, match="exists and was not created by this run"):
        full.restore_new(cluster.conn(), plan, "/nonexistent.dump", pg_bin_root=cfg.pg_bin_root, timeout=60)
    with pytest.raises(ValueError, match="refusing to drop"):
        full.cleanup(cluster.conn(), {**plan, "new_database": db})


def test_owners_and_privileges_are_kept_only_when_asked(cluster, s3, world):
    """The application's role owns a table and has a GRANT: by default the recovered objects belong to the
    connection's user and the GRANT is gone (--no-owner --no-privileges); with owners_and_privileges both
    come back, and the new database has production's owner."""
    role = f"fr_app_{os.urandom(3).hex()}"
    db = world["name"]
    cluster.psql("-c", f'CREATE ROLE "{role}"')
    try:
        cluster.psql("-c", f'ALTER TABLE public.likes OWNER TO "{role}"',
                     "-c", f'GRANT SELECT ON public.users TO "{role}"', dbname=db)
        cluster.psql("-c", f'ALTER DATABASE "{db}" OWNER TO "{role}"')
        cfg = world["setup"]()
        facts = "SELECT tableowner, has_table_privilege(%s, 'public.users', 'SELECT') FROM pg_tables " \
                "WHERE schemaname = 'public' AND tablename = 'likes'"
        seen = {}
        for owners in (False, True):
            plan = plan_for(cluster, s3, cfg, db, {"backup_date": "20261125", "owners_and_privileges": owners})
            assert plan["owners"] is owners
            client = s3.client()
            try:
                got = full.download(client, cfg, plan, identity=lambda: "", timeout=600)
                full.restore_new(cluster.conn(), plan, got["path"], pg_bin_root=cfg.pg_bin_root, timeout=600)
                with pgtools.connect(cluster.conn(plan["new_database"])) as pg:
                    seen[owners] = pg.execute(facts, (role,)).fetchone()
                with pgtools.connect(cluster.conn()) as pg:
                    seen[owners] += pg.execute("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s",
                                               (plan["new_database"],)).fetchone()
            finally:
                full.cleanup(cluster.conn(), plan)
        assert seen[False] == ("postgres", False, "postgres")
        assert seen[True] == (role, True, role)
    finally:
        cluster.psql("-c", f'ALTER DATABASE "{db}" OWNER TO postgres')
        cluster.psql("-c", f'REASSIGN OWNED BY "{role}" TO postgres', "-c", f'DROP OWNED BY "{role}"', dbname=db)
        cluster.psql("-c", f'DROP ROLE "{role}"')
