"""pg_pitr_drill's core against a real PostgreSQL 15 archiving to moto through barman-cloud-wal-archive.

- A restored copy with one changed file fails pg_verifybackup, and the drill's error names the file.
- Replay to the end of the archive restores every archived segment and finds every row.
- A corrupt newest segment in S3 fails the drill naming it (PostgreSQL refuses the file barman restored).
- A segment that restore_command cannot fetch (deleted after the plan) would make a recovery to the end of the
  archive stop early and promote as if the archive ended there; the drill fails instead, naming the segment.
- The record step writes the drill's row and judges it: within the objective, or exceeded (which raises).
"""

from __future__ import annotations

import datetime as dt
import gzip
import uuid
from pathlib import Path

import psycopg
import pytest
from pg_dataops.common import wal
from pg_dataops.pitr import drill, inventory, recover, scratch
from pg_dataops.pitr.basebackup import take_base_backup

from tests.support.pitr import TARGET, archiving_cluster, connect, pitr_config, switch_and_wait
from tests.support.pitr_drill import recover_to_end, recovered_conn
from tests.support.pitr_recover import write_rows

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def env(s3, tmp_path_factory):
    bucket = f"dr-{uuid.uuid4().hex[:12]}"
    s3.client().create_bucket(Bucket=bucket)
    root = tmp_path_factory.mktemp("drill")
    c = archiving_cluster(s3, bucket, archive_timeout=60, users=100)
    try:
        cfg = pitr_config(bucket, PGBACKUP_MULTIPART_CHUNK_MB="5", PGBACKUP_PITR_SCRATCH_ROOT=f"/tmp/dr-{bucket[3:9]}")
        doc = take_base_backup(cfg, TARGET, c.conn("glimpse"), s3.client(), recipients=(),
                               spool_dir=str(root / "spool"))
        write_rows(c, "first")
        switch_and_wait(c)
        write_rows(c, "second")
        switch_and_wait(c)
        with connect(c) as pg:
            users = pg.execute("SELECT count(*) FROM users").fetchone()[0]
        yield {"cluster": c, "cfg": cfg, "base": doc, "bucket": bucket, "users": users}
    finally:
        c.stop()
        scratch.remove_scratch(scratch.ScratchLayout(Path(cfg.pitr.scratch_root)))


def plan_of(env, client, run_id):
    window = inventory.recoverable_window(client, env["cfg"], TARGET)
    return drill.plan_drill(env["cfg"], TARGET, window, source_database="glimpse", target_time=None,
                            identity=lambda: "", run_id=run_id)


def test_a_changed_file_in_the_restored_copy_fails_pg_verifybackup_naming_it(env, s3, tmp_path, monkeypatch):
    client = s3.client()
    # Run from a folder the postgres user cannot enter (as a checkout in a 0700 temporary folder): the tools
    # it runs must not print "could not change directory" in place of their result.
    closed = tmp_path / "closed"
    closed.mkdir(mode=0o700)
    monkeypatch.chdir(closed)
    p = plan_of(env, client, "manual__verify")
    layout = scratch.ScratchLayout.from_dict(p["scratch"])
    try:
        scratch.restore_base_backup(client, env["bucket"], p["base_backup_doc"], layout, timeout=300,
                                    bin_dir=p["bin_dir"])
        good = drill.verify_restored(layout, p["bin_dir"], timeout=300, doc=p["base_backup_doc"])
        assert good["verified"] and good["message"] == "backup successfully verified"
        assert good["files"] == p["base_backup_doc"]["backup_manifest"]["files"] and good["files"] > 900
        assert good["wal_ranges"][0]["start_lsn"] == p["base_backup_doc"]["start_lsn"]

        # One byte changed in the users table's file, one file added.
        with psycopg.connect(host="127.0.0.1", port=env["cluster"].port, user="postgres",
                             password=env["cluster"].password, dbname="glimpse") as pg:
            relfile = pg.execute("SELECT pg_relation_filepath('users')").fetchone()[0]
        path = layout.data / relfile
        body = bytearray(path.read_bytes())
        body[200] ^= 0xFF
        path.write_bytes(bytes(body))
        (layout.data / "base" / "stray_file").write_bytes(b"x")
        with pytest.raises(drill.BackupVerificationFailed) as info:
            drill.verify_restored(layout, p["bin_dir"], timeout=300, doc=p["base_backup_doc"])
        message = str(info.value)
        assert f"the restored copy of base backup {p['base_backup']} does not match its backup_manifest" in message
        assert "files differing: " in message
        named = message.split("files differing: ", 1)[1].split(";", 1)[0]
        assert sorted(named.split(", ")) == sorted([relfile, "base/stray_file"])
        assert f'checksum mismatch for file "{relfile}"' in message
    finally:
        scratch.remove_scratch(layout, p["bin_dir"])
    assert not layout.root.exists()


def test_the_end_of_the_archive_is_reached_and_counted(env, s3):
    client = s3.client()
    result = recover_to_end(env["cfg"], s3, client, run_id="manual__end")
    try:
        rec, p = result["recovered"], result["plan"]
        assert rec["state"] == "promoted" and rec["last_restored_segment"] == p["newest_segment"]
        assert rec["segments_restored"] >= 3 and rec["first_restored_segment"] == env["base"]["start_wal"]
        with psycopg.connect(**{"host": str(result["layout"].run), "port": rec["port"], "user": "postgres",
                                "dbname": "glimpse"}) as pg:
            assert pg.execute("SELECT count(*) FROM users").fetchone()[0] == env["users"]
        assert recovered_conn(result).dbname == "glimpse"
    finally:
        scratch.remove_scratch(result["layout"], result["plan"]["bin_dir"])


def test_a_corrupt_newest_segment_fails_the_drill_naming_it(env, s3):
    client = s3.client()
    newest = wal.segments(wal.list_archive(client, env["bucket"], wal.archive_prefix(env["cfg"], TARGET)))[-1]
    original = client.get_object(Bucket=env["bucket"], Key=newest.key)["Body"].read()
    client.put_object(Bucket=env["bucket"], Key=newest.key, Body=gzip.compress(b"not a WAL segment")[:20])
    try:
        with pytest.raises(recover.RecoveryFailed, match=f"WAL segment {newest.name} is in the archive but could not "
                                                         "be restored"):
            recover_to_end(env["cfg"], s3, client, run_id="manual__corrupt")
    finally:
        client.put_object(Bucket=env["bucket"], Key=newest.key, Body=original)
        scratch.remove_scratch(scratch.layout_for(env["cfg"].pitr.scratch_root, "manual__corrupt", TARGET),
                               "/usr/lib/postgresql/15/bin")


def test_a_segment_gone_after_the_plan_fails_the_drill_instead_of_ending_recovery_early(env, s3):
    """restore_command failing for a segment that was there (deleted, or S3 refusing it) looks to PostgreSQL
    like the end of the archive: it promotes there. The drill compares with what the plan saw."""
    client, cfg = s3.client(), env["cfg"]
    p = plan_of(env, client, "manual__gone")
    layout = scratch.ScratchLayout.from_dict(p["scratch"])
    newest = wal.segments(wal.list_archive(client, env["bucket"], wal.archive_prefix(cfg, TARGET)))[-1]
    assert newest.name == p["newest_segment"]
    original = client.get_object(Bucket=env["bucket"], Key=newest.key)["Body"].read()
    try:
        scratch.restore_base_backup(client, env["bucket"], p["base_backup_doc"], layout, timeout=300,
                                    bin_dir=p["bin_dir"])
        drill.verify_restored(layout, p["bin_dir"], timeout=300, doc=p["base_backup_doc"])
        client.delete_object(Bucket=env["bucket"], Key=newest.key)
        creds = {"access_key": s3.access_key, "secret_key": s3.secret_key, "region": s3.region}
        with pytest.raises(drill.ReplayIncomplete) as info:
            drill.replay(cfg, p, env=wal.aws_env(creds), endpoint_url=s3.endpoint, timeout_seconds=300,
                         list_archive=lambda: wal.list_archive(client, cfg.bucket, wal.archive_prefix(cfg, TARGET)))
    finally:
        client.put_object(Bucket=env["bucket"], Key=newest.key, Body=original)
        scratch.remove_scratch(layout, p["bin_dir"])
    before = wal.Segment(newest.segment.segno - 1, newest.segment.timeline).name()
    assert f"replay ended after segment {before}, but the archive held segments up to {newest.name} when the drill " \
           f"started: segment {newest.name} could not be restored" in str(info.value)


def test_the_record_step_writes_the_row_and_judges_it(cluster):
    cluster.psql("-c", "DROP TABLE IF EXISTS pitr_recoveries CASCADE", dbname="catalog")
    plan = {"target": TARGET, "base_backup": "glimpse_base_20261201T033000Z", "target_time": None,
            "target_time_text": "the end of the archive", "encrypted": False, "newest_segment": "x",
            "base_backup_doc": {"archive": {"size": 1}}, "window": {"text": "glimpse: a .. b"}}
    steps = {"restored": {"restore_seconds": 2.0}, "verified": {"verified": True, "verify_seconds": 1.0, "files": 9},
             "recovered": {"replay_seconds": 3.0, "reached_time": None, "segments_restored": 2},
             "checked": {"check_seconds": 0.5, "tables": 7, "rows": 10, "database": "glimpse", "runbook": {}}}
    now = dt.datetime(2026, 12, 6, 21, 0, tzinfo=dt.UTC)
    with psycopg.connect(host="127.0.0.1", port=cluster.port, user="postgres", password=cluster.password,
                         dbname="catalog", autocommit=True) as pg:
        ok = drill.record_drill(pg, target=TARGET, plan=plan, **steps, step_errors=[("plan", ""), ("check", None)],
                                objective_seconds=60.0, timezone="Asia/Seoul", dag_id="pg_pitr_drill", run_id="r1",
                                now=now)
        assert ok.verdict.status == "ok" and ok.row["total_seconds"] == 6.5
        ok.raise_if_exceeded()
        slow = drill.record_drill(pg, target=TARGET, plan=plan, **steps, step_errors=[], objective_seconds=5.0,
                                  timezone="Asia/Seoul", dag_id="pg_pitr_drill", run_id="r2", now=now)
        assert slow.verdict.status == "exceeded" and "exceeds the objective 5.0 s" in slow.text
        with pytest.raises(drill.RtoExceeded):
            slow.raise_if_exceeded()
        failed = drill.record_drill(pg, target=TARGET, plan=plan, restored=steps["restored"], verified=None,
                                    recovered=None, checked=None,
                                    step_errors=[("verify_backup", "pg_verifybackup: checksum mismatch")],
                                    objective_seconds=60.0, timezone="Asia/Seoul", dag_id="pg_pitr_drill",
                                    run_id="r3", now=now)
        assert failed.verdict is None
        rows = pg.execute("SELECT run_id, kind, status, total_seconds::float, restore_seconds::float, "
                          "verify_seconds::float, error_message FROM pitr_recoveries ORDER BY id").fetchall()
        history = drill.rto_history(pg, TARGET, dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    assert rows == [("r1", "drill", "SUCCESS", 6.5, 2.0, 1.0, None), ("r2", "drill", "SUCCESS", 6.5, 2.0, 1.0, None),
                    ("r3", "drill", "FAILED", None, 2.0, None, "verify_backup: pg_verifybackup: checksum mismatch")]
    assert [seconds for _, seconds in history] == [6.5, 6.5]  # the successful drills: the trend's points
