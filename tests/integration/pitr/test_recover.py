"""Point-in-time recovery's core against a real PostgreSQL 15 archiving to moto through barman-cloud-wal-archive.

Rows are written, the moment noted (server clock) with every table's digest, then rows are deleted and
updated (the logical damage) and the WAL archived. The base backup from take_base_backup is restored from
S3 into a scratch instance, WAL replayed by barman-cloud-wal-restore to the moment, the result copied into
glimpse_recovery and compared table by table, by content digest, with the state at the moment. Refusals
happen before any work (no scratch folder, no database); a segment deleted from S3 is named.
"""

from __future__ import annotations

import datetime as dt
import os
import uuid

import psycopg
import pytest
from pg_dataops.common import age, localpg, wal
from pg_dataops.pitr import copy, recover, scratch
from pg_dataops.pitr.basebackup import take_base_backup
from pg_dataops.pitr.request import RecoveryRefused

from tests.support import age_keys
from tests.support.pg import table_digests
from tests.support.pitr import TARGET, archiving_cluster, connect, pitr_config, switch_and_wait
from tests.support.pitr_recover import (
    damage,
    databases,
    digests_of,
    note_moment,
    plan,
    restore_and_replay,
    scratch_conn,
    server_now,
    write_rows,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def env(s3, tmp_path_factory):
    """A bucket, an archiving cluster (autovacuum off: the only commits are the test's), the config, and one
    plain base backup taken by take_base_backup."""
    bucket = f"rc-{uuid.uuid4().hex[:12]}"
    s3.client().create_bucket(Bucket=bucket)
    root = tmp_path_factory.mktemp("recover")
    cluster = archiving_cluster(s3, bucket, archive_timeout=60, users=300, settings={"autovacuum": "off"})
    try:
        cfg = pitr_config(bucket, PGBACKUP_MULTIPART_CHUNK_MB="5", PGBACKUP_PITR_SCRATCH_ROOT=str(root / "scratch"))
        doc = take_base_backup(cfg, TARGET, cluster.conn("glimpse"), s3.client(), recipients=(),
                               spool_dir=str(root / "spool"))
        yield {"cluster": cluster, "cfg": cfg, "base": doc, "root": root, "bucket": bucket}
    finally:
        cluster.stop()


def _scratch_entries(cfg) -> list[str]:
    return sorted(os.listdir(cfg.pitr.scratch_root)) if os.path.isdir(cfg.pitr.scratch_root) else []


def _archive_keys(client, cfg) -> list[str]:
    return [w.key for w in wal.list_archive(client, cfg.bucket, wal.archive_prefix(cfg, TARGET))]


def test_recovers_to_the_noted_moment_copies_and_swaps(env, s3):
    c, cfg, client = env["cluster"], env["cfg"], s3.client()
    write_rows(c, "before")
    moment, at_moment = note_moment(c)
    hits = damage(c)
    assert hits == {"messages_deleted": 40, "users_updated": 30, "user_groups_deleted": 10}
    damaged = table_digests(c, "glimpse")
    changed = sorted(t for t in at_moment if at_moment[t] != damaged[t])
    assert changed == ["public.messages", "public.user_groups", "public.users"]
    switch_and_wait(c)

    p = plan(cfg, c, client, moment.isoformat(), run_id="manual__core_test")
    assert p["base_backup"] == env["base"]["backup_id"] and p["database_name"] == "glimpse_recovery"
    assert p["encrypted"] is False and p["source_exists"] is True
    assert p["wal_needed"]["from"] == env["base"]["start_wal"]
    restored, recovered = restore_and_replay(cfg, s3, client, p)
    assert restored["sha256"] == env["base"]["archive"]["sha256"] and restored["bytes"] == env["base"]["archive"]["size"]
    assert recovered["state"] == "promoted" and recovered["archive_ends_before_target"] is False
    # The first commit after the moment is the damage: recovery stops right before it.
    assert recovered["stop_message"].startswith("recovery stopping before commit of transaction")
    reached = dt.datetime.fromisoformat(recovered["reached_time"])
    assert reached <= moment
    assert set(recovered["hot_standby_settings"]) >= {"max_connections", "max_worker_processes"}

    # The recovered database, on the scratch server: exactly the state at the moment.
    assert digests_of(scratch_conn(p, recovered)) == at_moment
    checked = copy.check_recovered(scratch_conn(p, recovered))
    assert checked["runbook"] == {"users": at_moment["public.users"][0], "matches": at_moment["public.matches"][0],
                                  "messages": at_moment["public.messages"][0]}
    assert checked["counts"] == {t: n for t, (n, _) in at_moment.items()}

    copied = copy.copy_database(scratch_conn(p, recovered), c.conn("postgres"), "glimpse_recovery",
                                expected=checked["counts"], marker="pg_dataops test run core", protected=("glimpse",),
                                pg_bin_root=cfg.pg_bin_root, timeout=300)
    assert copied["counts_match"] and copied["tables"] == len(at_moment) and copied["warnings"] == []
    assert table_digests(c, "glimpse_recovery") == at_moment  # every table, by content
    assert table_digests(c, "glimpse") == damaged  # production untouched

    # The promoted copy archived nothing: no new timeline in production's archive.
    assert not [k for k in _archive_keys(client, cfg) if "/00000002" in k]

    # Teardown: the server stopped, the folder gone.
    layout = scratch.ScratchLayout.from_dict(p["scratch"])
    pid = int((layout.data / "postmaster.pid").read_text().split()[0])
    assert scratch.remove_scratch(layout, p["bin_dir"]) == {"root": str(layout.root), "server_stopped": True,
                                                            "removed": True}
    assert not layout.root.exists() and _scratch_entries(cfg) == []
    assert not localpg.process_alive(pid), open(f"/proc/{pid}/stat").read() if os.path.exists(f"/proc/{pid}") else ""

    # The swap: the recovered copy takes the name, the damaged database is kept; sessions on it are ended.
    old = "glimpse_before_pitr_20261201_143000"
    holder = connect(c, "glimpse")
    swapped = copy.swap_databases(c.conn("postgres"), production="glimpse", recovered="glimpse_recovery", old=old)
    assert swapped["swapped"] and swapped["old_database"] == old and swapped["sessions_ended"] >= 1
    with pytest.raises(psycopg.OperationalError):
        holder.execute("SELECT 1")
    holder.close()
    assert table_digests(c, "glimpse") == at_moment and table_digests(c, old) == damaged
    assert "glimpse_recovery" not in databases(c)
    # A retried swap task finds its own copy (the run's mark) already in place: reported, not failed.
    again = copy.swap_databases(c.conn("postgres"), production="glimpse", recovered="glimpse_recovery", old=old,
                                marker="pg_dataops test run core")
    assert again["swapped"] and again["note"] == "already swapped by an earlier try of this run"
    with pytest.raises(copy.SwapFailed, match="the recovered database 'glimpse_recovery' does not exist"):
        copy.swap_databases(c.conn("postgres"), production="glimpse", recovered="glimpse_recovery", old=old)

    # The rollback commands, as a person runs them, put everything back.
    with connect(c, "postgres", autocommit=True) as pg:
        for command in copy.rollback_commands("glimpse", "glimpse_recovery", old):
            pg.execute(command)
        assert pg.execute("SELECT datallowconn FROM pg_database WHERE datname = 'glimpse'").fetchone()[0] is True
    assert table_digests(c, "glimpse") == damaged and table_digests(c, "glimpse_recovery") == at_moment
    c.dropdb("glimpse_recovery")


def test_refusals_happen_before_any_work(env, s3):
    c, cfg, client = env["cluster"], env["cfg"], s3.client()
    before_dbs = databases(c)
    assert "recovery_taken" not in before_dbs
    stop = dt.datetime.fromisoformat(env["base"]["stop_time"])
    with pytest.raises(RecoveryRefused) as early:
        plan(cfg, c, client, (stop - dt.timedelta(hours=1)).isoformat())
    assert "is before the recoverable window glimpse: " in str(early.value)
    assert env["base"]["backup_id"] in str(early.value)
    late = server_now(c) + dt.timedelta(hours=1)
    with pytest.raises(RecoveryRefused) as after:
        plan(cfg, c, client, late.isoformat())
    assert "is after the recoverable window glimpse: " in str(after.value)
    assert "newest archived WAL was uploaded at" in str(after.value)
    moment = stop  # inside the window: the base backup's end
    c.createdb("recovery_taken")
    with pytest.raises(RecoveryRefused, match="database 'recovery_taken' already exists on the target server"):
        plan(cfg, c, client, moment.isoformat(), database_name="recovery_taken")
    with pytest.raises(RecoveryRefused, match="is the target's own database"):
        plan(cfg, c, client, moment.isoformat(), database_name="glimpse")
    with pytest.raises(RecoveryRefused, match=r"base_backup 'glimpse_base_20200101T000000Z' is not a complete base "
                                              r"backup of glimpse in S3; the ones that exist: glimpse_base_"):
        plan(cfg, c, client, moment.isoformat(), base_backup="glimpse_base_20200101T000000Z")
    with pytest.raises(RecoveryRefused, match="confirm 'glimpse_prod' does not match the database the swap replaces"):
        plan(cfg, c, client, moment.isoformat(), swap=True, confirm="glimpse_prod")
    c.dropdb("recovery_taken")
    assert _scratch_entries(cfg) == [] and databases(c) == before_dbs


def test_missing_segment_is_named_at_validation_and_at_replay(env, s3):
    c, cfg, client = env["cluster"], env["cfg"], s3.client()
    write_rows(c, "seg1")
    first = switch_and_wait(c)
    write_rows(c, "seg2")
    switch_and_wait(c)
    moment, _ = note_moment(c)
    damage(c)
    switch_and_wait(c)
    key = next(k for k in _archive_keys(client, cfg) if k.rsplit("/", 1)[1].startswith(first))
    body = client.get_object(Bucket=cfg.bucket, Key=key)["Body"].read()

    ok = plan(cfg, c, client, moment.isoformat(), run_id="manual__missing_test")  # complete archive: planned
    client.delete_object(Bucket=cfg.bucket, Key=key)
    try:
        with pytest.raises(RecoveryRefused) as refused:
            plan(cfg, c, client, moment.isoformat())
        assert f"is missing from s3://.../glimpse/wals/: {first} (needed: " in str(refused.value)
        assert _scratch_entries(cfg) == []

        # Deleted after validation: replay stops there and names it.
        with pytest.raises(recover.MissingWal) as missing:
            restore_and_replay(cfg, s3, client, ok)
        assert str(missing.value).startswith(f"WAL segment {first} is missing from the archive (later segments "
                                             "exist)")
    finally:
        client.put_object(Bucket=cfg.bucket, Key=key, Body=body)
        print(scratch.remove_scratch(scratch.ScratchLayout.from_dict(ok["scratch"]), ok["bin_dir"]))
    assert _scratch_entries(cfg) == []


def test_encrypted_base_backup_and_an_archive_that_ends_before_the_target(env, s3, tmp_path):
    """An age-encrypted base backup (chosen by base_backup) restored with the identity through a pipe; the
    target lies after the last commit but before the newest segment's upload, so WAL runs out before it:
    recovered to the end of the archive, which is the state at the target, and said so."""
    c, cfg, client = env["cluster"], env["cfg"], s3.client()
    pair, other = age_keys.keypair(tmp_path, "base"), age_keys.keypair(tmp_path, "other")
    doc = take_base_backup(cfg, TARGET, c.conn("glimpse"), client, recipients=[pair.recipient],
                           spool_dir=str(env["root"] / "spool"))
    write_rows(c, "late")
    moment, at_moment = note_moment(c)  # no commit after it
    switch_and_wait(c)

    with pytest.raises(age.IdentityMismatch) as wrong:
        plan(cfg, c, client, moment.isoformat(), base_backup=doc["backup_id"], identity=other.identity)
    assert pair.recipient[:12] in str(wrong.value) and other.identity not in str(wrong.value)
    p = plan(cfg, c, client, moment.isoformat(), base_backup=doc["backup_id"], identity=pair.identity,
             run_id="manual__encrypted")
    assert p["encrypted"] is True and p["base_backup"] == doc["backup_id"]
    assert pair.identity not in repr(p)
    try:
        restored, recovered = restore_and_replay(cfg, s3, client, p, identity=pair.identity)
        assert restored["encrypted"] is True and restored["sha256"] == doc["archive"]["sha256"]
        assert recovered["archive_ends_before_target"] is True and recovered["state"] == "promoted"
        assert recovered["stop_message"] is None
        assert digests_of(scratch_conn(p, recovered)) == at_moment
        layout = scratch.ScratchLayout.from_dict(p["scratch"])
        assert recover.ENDED_BEFORE_TARGET in (layout.run / "server.log").read_text()
        # No plaintext beside the data directory: the run folder holds the server's files and tool logs only.
        assert sorted(n for n in os.listdir(layout.run) if not n.startswith(".s.PGSQL.")) == ["pg_hba.conf", "pg_ident.conf", "recovery.requested",
                                                  "restore-age.log", "restore-tar.log", "restore-zstd.log",
                                                  "server.log", "spool"]
    finally:
        scratch.remove_scratch(scratch.ScratchLayout.from_dict(p["scratch"]), p["bin_dir"])


def test_pause_leaves_a_read_only_copy_at_the_target_that_can_be_copied(env, s3):
    c, cfg, client = env["cluster"], env["cfg"], s3.client()
    write_rows(c, "paused")
    moment, at_moment = note_moment(c)
    damage(c)
    switch_and_wait(c)
    p = plan(cfg, c, client, moment.isoformat(), target_action="pause", database_name="glimpse_paused",
             run_id="manual__pause", base_backup=env["base"]["backup_id"])  # the plain one
    try:
        _, recovered = restore_and_replay(cfg, s3, client, p)
        assert recovered["state"] == "paused" and recovered["stop_message"].startswith("recovery stopping before")
        with psycopg.connect(host=str(scratch.ScratchLayout.from_dict(p["scratch"]).run), port=recovered["port"],
                             user="postgres", dbname="glimpse") as pg:
            assert pg.execute("SELECT pg_is_in_recovery(), pg_get_wal_replay_pause_state()").fetchone() == (
                True, "paused")
        checked = copy.check_recovered(scratch_conn(p, recovered))
        copy.copy_database(scratch_conn(p, recovered), c.conn("postgres"), "glimpse_paused", expected=checked["counts"],
                           marker="pg_dataops test run pause", protected=("glimpse",), pg_bin_root=cfg.pg_bin_root)
        assert table_digests(c, "glimpse_paused") == at_moment
    finally:
        scratch.remove_scratch(scratch.ScratchLayout.from_dict(p["scratch"]), p["bin_dir"])
        c.dropdb("glimpse_paused")


def test_a_failed_copy_drops_only_its_own_database(env, s3):
    """pg_restore fails (a role the dump needs is missing on the target): the half-made database is dropped;
    an existing database of the same name that this run did not create is refused and left alone; one marked
    as this run's (an earlier try's) is replaced."""
    c, cfg, client = env["cluster"], env["cfg"], s3.client()
    switch_and_wait(c)
    moment = dt.datetime.fromisoformat(env["base"]["stop_time"])
    p = plan(cfg, c, client, moment.isoformat(), run_id="manual__copyfail", database_name="glimpse_copyfail")
    try:
        _, recovered = restore_and_replay(cfg, s3, client, p)
        with psycopg.connect(host=str(scratch.ScratchLayout.from_dict(p["scratch"]).run), port=recovered["port"],
                             user="postgres", dbname="glimpse", autocommit=True) as pg:
            pg.execute("CREATE ROLE only_in_the_copy")
            pg.execute("CREATE TABLE owned_elsewhere (id int)")
            pg.execute("ALTER TABLE owned_elsewhere OWNER TO only_in_the_copy")
        counts = copy.table_counts(scratch_conn(p, recovered))
        with pytest.raises(copy.CopyFailed, match='pg_restore exited with 1: .*role "only_in_the_copy" does not exist'):
            copy.copy_database(scratch_conn(p, recovered), c.conn("postgres"), "glimpse_copyfail", expected=counts,
                               marker="run copyfail", protected=("glimpse",), pg_bin_root=cfg.pg_bin_root)
        assert "glimpse_copyfail" not in databases(c)
        c.createdb("glimpse_copyfail")  # someone else's now
        with pytest.raises(copy.DatabaseExists, match="exists on the target server now"):
            copy.copy_database(scratch_conn(p, recovered), c.conn("postgres"), "glimpse_copyfail", expected=counts,
                               marker="run copyfail", protected=("glimpse",), pg_bin_root=cfg.pg_bin_root)
        assert "glimpse_copyfail" in databases(c)
        # A database left by an earlier try of this very run (its mark) is replaced by the retry.
        with connect(c, "postgres", autocommit=True) as pg:
            pg.execute("COMMENT ON DATABASE glimpse_copyfail IS 'run copyfail'")
        with psycopg.connect(host=str(scratch.ScratchLayout.from_dict(p["scratch"]).run), port=recovered["port"],
                             user="postgres", dbname="glimpse", autocommit=True) as pg:
            pg.execute("DROP TABLE owned_elsewhere")
        counts = copy.table_counts(scratch_conn(p, recovered))
        done = copy.copy_database(scratch_conn(p, recovered), c.conn("postgres"), "glimpse_copyfail", expected=counts,
                                  marker="run copyfail", protected=("glimpse",), pg_bin_root=cfg.pg_bin_root)
        assert done["tables"] == len(counts) and copy.table_counts(c.conn("glimpse_copyfail")) == counts
        with pytest.raises(copy.DatabaseExists, match="it is the target's own database"):
            copy.copy_database(scratch_conn(p, recovered), c.conn("postgres"), "glimpse", expected=counts,
                               marker="run copyfail", protected=("glimpse",), pg_bin_root=cfg.pg_bin_root)
    finally:
        scratch.remove_scratch(scratch.ScratchLayout.from_dict(p["scratch"]), p["bin_dir"])
        c.dropdb("glimpse_copyfail")
