"""take_base_backup against a real PostgreSQL 15 whose WAL barman-cloud-wal-archive ships to moto over HTTP.

Every manifest field is checked against the server's own record of the backup (the ``.backup`` history file
it archives at backup stop, pg_control_system(), pg_database_size, pg_stat_archiver); the object is
downloaded, proven by SHA-256, decompressed and unpacked, and ``pg_verifybackup`` passes on it. Refusals name
their cause and leave S3 empty; a failure in mid-stream leaves no object, no multipart upload, no spool
file and no child process.
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import json
import os
import pwd
import re
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest
from pg_dataops.common import pg as pgtools
from pg_dataops.common import wal
from pg_dataops.common.errors import AuthenticationFailed, BucketMissing
from pg_dataops.pitr import basebackup, inventory
from pg_dataops.pitr.basebackup import BaseBackupFailed, PreflightRefused, take_base_backup

from tests.support import age_keys
from tests.support.pitr import TARGET, archiving_cluster, connect, pitr_config, switch_and_wait

pytestmark = pytest.mark.integration

PG_BIN = "/usr/lib/postgresql/15/bin"


@pytest.fixture(scope="module")
def pitr_bucket(s3):
    name = f"bb-{uuid.uuid4().hex[:12]}"
    s3.client().create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="module")
def archiving(s3, pitr_bucket):
    c = archiving_cluster(s3, pitr_bucket, archive_timeout=60, users=300)
    yield c
    c.stop()


def _cfg(bucket: str, **extra: str):
    return pitr_config(bucket, PGBACKUP_MULTIPART_CHUNK_MB="5", **extra)


def _server_now(cluster) -> dt.datetime:
    with connect(cluster, "postgres") as pg:
        return pg.execute("SELECT now()").fetchone()[0]


def _children() -> list[str]:
    """Our child processes that the backup starts (pg_basebackup, zstd, age), still running."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        comm = text[text.index("(") + 1:text.rindex(")")]
        ppid = int(text[text.rindex(")") + 2:].split()[1])
        if ppid == os.getpid() and comm in ("pg_basebackup", "zstd", "age"):
            out.append(f"{comm}[{stat.parent.name}]")
    return out


def _keys(client, bucket: str, prefix: str) -> list[str]:
    return [o["Key"] for p in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            for o in p.get("Contents", [])]


def _uploads(client, bucket: str, prefix: str) -> list[str]:
    return [u["Key"] for u in client.list_multipart_uploads(Bucket=bucket, Prefix=prefix).get("Uploads", [])]


def _backup_history(client, bucket: str, cfg, label: str, timeout: float = 60) -> dict[str, str]:
    """The server's own record of the backup: the ``.backup`` history file it archived at backup stop."""
    prefix = wal.archive_prefix(cfg, TARGET)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for key in _keys(client, bucket, prefix):
            if ".backup" in key:
                body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
                text = gzip.decompress(body).decode() if key.endswith(".gz") else body.decode()
                fields = dict(line.split(": ", 1) for line in text.splitlines() if ": " in line)
                if fields.get("LABEL") == label:
                    return fields
        time.sleep(0.5)
    raise AssertionError(f"no .backup history file with LABEL {label} archived under {prefix}")


def _unpack(client, bucket: str, key: str, dest: Path, identity_file: Path | None = None) -> bytes:
    """Download the object (returning its bytes), then [age -d |] zstd -d | tar -x into ``dest``."""
    body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    dest.mkdir(parents=True)
    data = body
    if identity_file is not None:
        data = subprocess.run(["age", "-d", "-i", str(identity_file)], input=data, capture_output=True,
                              check=True).stdout
    tar = subprocess.run(["zstd", "-d", "-q", "-c"], input=data, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=tar, check=True)
    return body


def test_base_backup_matches_the_server_and_verifies(archiving, s3, pitr_bucket, tmp_path):
    cfg = _cfg(pitr_bucket)
    client = s3.client()
    spool = tmp_path / "spool"
    before = _server_now(archiving)
    doc = take_base_backup(cfg, TARGET, archiving.conn("glimpse"), client, recipients=(), spool_dir=str(spool))
    after = _server_now(archiving)
    bid = doc["backup_id"]
    folder = inventory.backup_folder(cfg, TARGET, bid)

    # What S3 holds: the archive and manifest.json, the latter equal to what the call returned.
    assert sorted(_keys(client, pitr_bucket, folder)) == [folder + "base.tar.zst", folder + "manifest.json"]
    stored = json.loads(client.get_object(Bucket=pitr_bucket, Key=folder + "manifest.json")["Body"].read())
    assert stored == {k: v for k, v in doc.items() if k not in ("manifest_key", "total_seconds")}
    assert inventory.parse_backup_id(bid)[0] == TARGET
    assert before <= inventory.parse_backup_id(bid)[1] + dt.timedelta(seconds=1)
    assert os.listdir(spool) == [] and _uploads(client, pitr_bucket, folder) == [] and _children() == []

    # The server's record of this backup (archived .backup file): LSNs, WAL files, label, timeline.
    switch_and_wait(archiving)
    history = _backup_history(client, pitr_bucket, cfg, bid)
    start_lsn, start_file = re.match(r"(\S+) \(file (\w+)\)", history["START WAL LOCATION"]).groups()
    stop_lsn, stop_file = re.match(r"(\S+) \(file (\w+)\)", history["STOP WAL LOCATION"]).groups()
    assert (doc["start_lsn"], doc["start_wal"]) == (start_lsn, start_file)
    assert (doc["stop_lsn"], doc["stop_wal"]) == (stop_lsn, stop_file)
    assert doc["checkpoint_lsn"] == history["CHECKPOINT LOCATION"]
    assert doc["timeline"] == int(history["START TIMELINE"]) == int(history["STOP TIMELINE"]) == 1
    assert doc["wal_ranges"] == [{"timeline": 1, "start_lsn": start_lsn, "end_lsn": stop_lsn}]

    # Times from the server's clock, bracketing the backup; the backup's stop is within them.
    start, stop = inventory.parse_time(doc["start_time"]), inventory.parse_time(doc["stop_time"])
    assert before <= start <= stop <= after
    stop_written = dt.datetime.strptime(history["STOP TIME"], "%Y-%m-%d %H:%M:%S %Z").replace(tzinfo=dt.UTC)
    assert start - dt.timedelta(seconds=1) <= stop_written <= stop

    with connect(archiving, "postgres") as pg:
        version, version_num, sysid, size = pg.execute(
            "SELECT current_setting('server_version'), current_setting('server_version_num')::int, "
            "(SELECT system_identifier::text FROM pg_control_system()), "
            "(SELECT sum(pg_database_size(oid))::bigint FROM pg_database WHERE datallowconn)").fetchone()
        last_archived = pg.execute("SELECT last_archived_wal FROM pg_stat_archiver").fetchone()[0]
    assert doc["server_version"] == version.split()[0] and doc["server_version_num"] == version_num
    assert doc["system_identifier"] == sysid
    # between the backup's sizes and a later one (the database grows only by a few pages meanwhile)
    assert abs(doc["database_size"] - size) < 1024 * 1024
    assert last_archived >= doc["stop_wal"]  # pg_stat_archiver: the WAL the backup ends in is archived

    # The object is what the manifest says, and the backup inside it verifies.
    body = _unpack(client, pitr_bucket, doc["archive"]["key"], tmp_path / "restored")
    assert len(body) == doc["archive"]["size"]
    assert hashlib.sha256(body).hexdigest() == doc["archive"]["sha256"]
    raw = (tmp_path / "restored" / "backup_manifest").read_bytes()
    bm = json.loads(raw)
    assert bm["Manifest-Checksum"] == doc["backup_manifest"]["checksum"]
    assert hashlib.sha256(raw[:raw.rindex(b'"Manifest-Checksum"')]).hexdigest() == doc["backup_manifest"]["checksum"]
    assert len(bm["Files"]) == doc["backup_manifest"]["files"]
    assert "LABEL: " + bid in (tmp_path / "restored" / "backup_label").read_text()
    verify = subprocess.run([f"{PG_BIN}/pg_verifybackup", str(tmp_path / "restored")], capture_output=True,
                            text=True)
    assert verify.returncode == 0, verify.stderr
    assert "backup successfully verified" in verify.stdout
    assert doc["encryption"] is None
    assert doc["pg_basebackup"]["argv"][-3:] == ["--label", bid, "-v"]
    assert archiving.password not in json.dumps(doc)
    assert doc["timings"]["pg_basebackup_seconds"] > 0 and doc["duration_seconds"] >= doc["timings"][
        "pg_basebackup_seconds"]

    # The inventory lists it as a complete base backup.
    listing = inventory.list_base_backups(client, cfg, TARGET)
    assert [b.backup_id for b in listing.backups] == [bid] and listing.incomplete == []


def test_encrypted_base_backup_opens_with_age(archiving, s3, pitr_bucket, tmp_path):
    pair = age_keys.keypair(tmp_path, "base")
    cfg = _cfg(pitr_bucket)
    client = s3.client()
    doc = take_base_backup(cfg, TARGET, archiving.conn("glimpse"), client, recipients=[pair.recipient],
                           spool_dir=str(tmp_path / "spool"), now=dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC))
    assert doc["backup_id"] == "glimpse_base_20260102T030405Z"
    assert doc["archive"]["key"].endswith("/base.tar.zst.age")
    assert doc["encryption"] == {"format": "age", "recipients": [pair.recipient]}
    body = _unpack(client, pitr_bucket, doc["archive"]["key"], tmp_path / "restored", tmp_path / "base.key")
    assert body.startswith(b"age-encryption.org/v1\n")
    assert hashlib.sha256(body).hexdigest() == doc["archive"]["sha256"]
    raw = (tmp_path / "restored" / "backup_manifest").read_bytes()
    assert json.loads(raw)["Manifest-Checksum"] == doc["backup_manifest"]["checksum"]
    listed = {b.backup_id: b for b in inventory.list_base_backups(client, cfg, TARGET).backups}
    assert listed[doc["backup_id"]].encrypted


def _assert_nothing_written(client, bucket: str, cfg, spool: Path) -> None:
    prefix = wal.base_backup_prefix(cfg, TARGET)
    assert _keys(client, bucket, prefix) == []
    assert _uploads(client, bucket, prefix) == []
    assert not spool.exists() or os.listdir(spool) == []
    assert _children() == []


def test_refusals_name_the_cause_and_write_nothing(archiving, cluster, s3, tmp_path):
    client = s3.client()
    bucket = f"bb-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket)
    cfg = _cfg(bucket)
    spool = tmp_path / "spool"

    def attempt(conn, **kw):
        return take_base_backup(cfg, TARGET, conn, client, recipients=(), spool_dir=str(spool), **kw)

    # A role without REPLICATION.
    with connect(archiving, "postgres", autocommit=True) as pg:
        pg.execute("DROP ROLE IF EXISTS plain_reader")
        pg.execute("CREATE ROLE plain_reader LOGIN PASSWORD 'plain-reader-pw'")
    with pytest.raises(PreflightRefused, match=r"role 'plain_reader' .* neither superuser nor has the REPLICATION"):
        attempt(pgtools.PgConn("127.0.0.1", archiving.port, "plain_reader", "glimpse", "plain-reader-pw"))
    _assert_nothing_written(client, bucket, cfg, spool)

    # A wrong password: the connection names it.
    with pytest.raises(AuthenticationFailed, match="authentication failed for user 'postgres'"):
        attempt(archiving.conn("glimpse", password="wrong-password"))
    _assert_nothing_written(client, bucket, cfg, spool)

    # A user tablespace: the tar on stdout would miss it.
    ts_dir = archiving.base / "ts_extra"
    ts_dir.mkdir()
    pw = pwd.getpwnam("postgres")
    os.chown(ts_dir, pw.pw_uid, pw.pw_gid)
    with connect(archiving, "postgres", autocommit=True) as pg:
        pg.execute(f"CREATE TABLESPACE ts_extra LOCATION '{ts_dir}'")
    try:
        with pytest.raises(PreflightRefused, match=r"user tablespaces \(ts_extra .*\).*one tablespace only"):
            attempt(archiving.conn("glimpse"))
    finally:
        with connect(archiving, "postgres", autocommit=True) as pg:
            pg.execute("DROP TABLESPACE ts_extra")
    _assert_nothing_written(client, bucket, cfg, spool)

    # archive_mode off (the session's plain cluster): no PITR from such a backup.
    with pytest.raises(PreflightRefused, match="archive_mode is 'off'.*cannot recover to a point in time"):
        attempt(cluster.conn("glimpse"))
    _assert_nothing_written(client, bucket, cfg, spool)

    # A missing bucket.
    with pytest.raises(BucketMissing, match="no-such-bucket-bb.*does not exist"):
        take_base_backup(_cfg("no-such-bucket-bb"), TARGET, archiving.conn("glimpse"), client, recipients=(),
                         spool_dir=str(spool))

    # A folder that already holds something: never written into.
    moment = dt.datetime(2026, 3, 4, 5, 6, 7, tzinfo=dt.UTC)
    folder = inventory.backup_folder(cfg, TARGET, inventory.backup_id(TARGET, moment))
    client.put_object(Bucket=bucket, Key=folder + "stray.txt", Body=b"someone else's")
    with pytest.raises(PreflightRefused, match=f"s3://{bucket}/{folder} already holds objects"):
        attempt(archiving.conn("glimpse"), now=moment)
    assert _keys(client, bucket, wal.base_backup_prefix(cfg, TARGET)) == [folder + "stray.txt"]


def test_failure_in_mid_stream_leaves_nothing(archiving, s3, tmp_path, monkeypatch):
    """zstd is killed while it compresses the stream (at -19 that takes seconds): the backup fails naming it,
    and leaves no object, no multipart upload, no spool file and no child."""
    client = s3.client()
    bucket = f"bb-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket)
    cfg = _cfg(bucket, PGBACKUP_PITR_BASE_COMPRESSION_LEVEL="19")
    spool = tmp_path / "spool"
    killed: list[str] = []
    stop = threading.Event()

    def kill_zstd():
        while not stop.is_set():
            running = [c for c in _children() if c.startswith("zstd[")]
            if running:
                time.sleep(1.0)  # well into the stream
                killed.append(f"{running[0]}, spool {os.listdir(spool)}")
                os.kill(int(running[0].split("[")[1].rstrip("]")), signal.SIGKILL)
                return
            time.sleep(0.02)

    watcher = threading.Thread(target=kill_zstd, daemon=True)
    watcher.start()
    try:
        with pytest.raises(BaseBackupFailed, match="zstd exited with -9|output to zstd failed"):
            take_base_backup(cfg, TARGET, archiving.conn("glimpse"), client, recipients=(), spool_dir=str(spool))
    finally:
        stop.set()
        watcher.join(10)
    assert killed and killed[0].endswith(".base.tar.zst.partial']"), killed
    _assert_nothing_written(client, bucket, cfg, spool)

    # A damaged stream (here: backup_label larger than we accept) fails while pg_basebackup is still running;
    # it is killed and nothing remains either.
    monkeypatch.setitem(basebackup.CAPTURE_LIMITS, basebackup.BACKUP_LABEL, 10)
    cfg = _cfg(bucket)
    with pytest.raises(BaseBackupFailed, match="backup_label in pg_basebackup's tar is .* more than the 10"):
        take_base_backup(cfg, TARGET, archiving.conn("glimpse"), client, recipients=(), spool_dir=str(spool))
    _assert_nothing_written(client, bucket, cfg, spool)
