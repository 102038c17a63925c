"""Client-side encryption of pg_backup's dumps (age), against PostgreSQL 15, moto over HTTP and Debian's age.

With throwaway key pairs from age-keygen: the stored object is age (no PGDMP, no row value), decrypts with the
stock `age -d` into a dump that restores table for table; two recipients each decrypt it; the restore test
checks the identity before any restore work and leaves no plaintext behind; every format works encrypted.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import logging
import os
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from pg_dataops.backup import manifest, steps, verify
from pg_dataops.backup.dump import run_dump
from pg_dataops.common import age, sqlfiles
from pg_dataops.common.config import Target, load_config
from pg_dataops.common.errors import ConnectionMissing, DiskFull, DumpFailed

from tests.support.pg import table_digests

pytestmark = pytest.mark.integration

PG_BIN = "/usr/lib/postgresql/15/bin"
SOURCE = "enc_source"
# A row value that must never appear in a stored object (the dumps below are uncompressed: it would).
PROBE = "zq-private-message-4f7c2e9a-encryption-probe"
MOMENT = dt.datetime(2026, 11, 24, 17, 0, tzinfo=dt.UTC)  # 2026-11-25 02:00 in Seoul: a daily
FILE = "glimpse_daily_20261125_020000.dump.age"
CONN_ID = "backup_age_identity"


@dataclass(frozen=True)
class KeyPair:
    key_file: Path
    identity: str  # the key file's text, as the Airflow connection's password holds it
    recipient: str


def keygen(path: Path) -> KeyPair:
    subprocess.run(["age-keygen", "-o", str(path)], check=True, capture_output=True)
    recipient = subprocess.run(["age-keygen", "-y", str(path)], check=True, capture_output=True,
                               text=True).stdout.strip()
    return KeyPair(path, path.read_text(), recipient)


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("age-keys")
    return [keygen(d / f"key{i}.txt") for i in range(3)]


@pytest.fixture(scope="module")
def source(cluster):
    """A small Glimpse database plus one table holding PROBE."""
    cluster.dropdb(SOURCE)
    cluster.createdb(SOURCE)
    cluster.load_demo(SOURCE, 200)
    cluster.psql("-c", f"CREATE TABLE public.private_notes (id int PRIMARY KEY, body text NOT NULL); "
                       f"INSERT INTO public.private_notes VALUES (1, '{PROBE}'), (2, 'second {PROBE} copy');",
                 dbname=SOURCE)
    return cluster.conn(SOURCE)




def age_decrypt(src: str, key: KeyPair, dest: Path) -> subprocess.CompletedProcess:
    """The stock tool, as an operator runs it by hand."""
    return subprocess.run(["age", "-d", "-i", str(key.key_file), "-o", str(dest), src], capture_output=True, text=True)


def restore_into_fresh(cluster, name: str, archive: str) -> dict:
    cluster.dropdb(name)
    cluster.createdb(name)
    env = {**os.environ, "PGPASSWORD": cluster.password}
    subprocess.run([f"{PG_BIN}/pg_restore", "--exit-on-error", "--no-owner", "-h", "127.0.0.1", "-p", str(cluster.port),
                    "-U", "postgres", "-d", name, archive], check=True, capture_output=True, env=env)
    try:
        return table_digests(cluster, name)
    finally:
        cluster.dropdb(name)


def age_children() -> list[int]:
    """Our `age` child processes still alive (or unreaped)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except (FileNotFoundError, NotADirectoryError, PermissionError, ProcessLookupError):
            continue
        comm = stat[stat.index("(") + 1: stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        if comm == "age" and ppid == os.getpid():
            found.append(int(pid))
    return found


def config(tmp_path, bucket: str, recipients: list[str], **env):
    return load_config(environ={"PGBACKUP_LOCAL_ROOT": str(tmp_path / "backups"), "PGBACKUP_BUCKET": bucket,
                                "PGBACKUP_MULTIPART_CHUNK_MB": "5", "PGBACKUP_DUMP_COMPRESSION": "0",
                                "PGBACKUP_ENCRYPTION_RECIPIENTS": ",".join(recipients), **env})


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []


# ---------------------------------------------------------------------------------------------
# The write side
# ---------------------------------------------------------------------------------------------

def test_custom_dump_is_stored_encrypted_and_restores_with_stock_age(cluster, source, keys, tmp_path):
    res = run_dump(source, str(tmp_path / "out"), "enc_daily_x", fmt="custom", compression=0,
                   recipients=[keys[0].recipient])
    assert res.file == "enc_daily_x.dump.age" and os.listdir(tmp_path / "out") == [res.file]
    assert res.encryption == {"format": "age", "recipients": [keys[0].recipient]}
    stored = Path(res.path).read_bytes()
    assert stored.startswith(b"age-encryption.org/v1\n-> X25519 ")
    assert b"PGDMP" not in stored and PROBE.encode() not in stored
    assert res.size == len(stored) and res.sha256 == hashlib.sha256(stored).hexdigest()
    assert res.table_counts["public.private_notes"] == 2

    plain = tmp_path / "plain.dump"
    done = age_decrypt(res.path, keys[0], plain)
    assert done.returncode == 0, done.stderr
    plaintext = plain.read_bytes()
    assert plaintext.startswith(b"PGDMP") and PROBE.encode() in plaintext  # the check above was not vacuous
    assert restore_into_fresh(cluster, "enc_restored_custom", str(plain)) == table_digests(cluster, SOURCE)


def test_a_backup_for_two_recipients_decrypts_with_either_identity_only(source, keys, tmp_path):
    res = run_dump(source, str(tmp_path / "out"), "enc_daily_two", fmt="custom", compression=1,
                   recipients=[keys[0].recipient, keys[1].recipient])
    assert res.encryption == {"format": "age", "recipients": [keys[0].recipient, keys[1].recipient]}
    plains = []
    for i in (0, 1):
        done = age_decrypt(res.path, keys[i], tmp_path / f"plain{i}")
        assert done.returncode == 0, done.stderr
        plains.append((tmp_path / f"plain{i}").read_bytes())
    assert plains[0] == plains[1] and plains[0].startswith(b"PGDMP")
    refused = age_decrypt(res.path, keys[2], tmp_path / "plain2")
    assert refused.returncode != 0 and "no identity matched any of the recipients" in refused.stderr
    assert not (tmp_path / "plain2").exists()


def test_directory_format_is_an_encrypted_tar(cluster, source, keys, tmp_path):
    res = run_dump(source, str(tmp_path / "out"), "enc_daily_dir", fmt="directory", compression=0, jobs=2,
                   recipients=[keys[0].recipient])
    assert res.file == "enc_daily_dir.tar.age" and os.listdir(tmp_path / "out") == [res.file]
    stored = Path(res.path).read_bytes()
    assert stored.startswith(b"age-encryption.org/v1\n") and b"toc.dat" not in stored and PROBE.encode() not in stored
    assert res.sha256 == hashlib.sha256(stored).hexdigest()
    done = age_decrypt(res.path, keys[0], tmp_path / "plain.tar")
    assert done.returncode == 0, done.stderr
    with tarfile.open(tmp_path / "plain.tar") as tar:
        tar.extractall(tmp_path / "dir", filter="data")
    assert (tmp_path / "dir" / "toc.dat").is_file()
    assert restore_into_fresh(cluster, "enc_restored_dir", str(tmp_path / "dir")) == table_digests(cluster, SOURCE)


def test_dump_step_streams_the_encrypted_object_and_records_the_recipients(source, s3, bucket, keys, tmp_path,
                                                                          caplog):
    cfg = config(tmp_path, bucket, [keys[0].recipient, keys[1].recipient])
    client = s3.client()
    with caplog.at_level(logging.WARNING, logger="pg_dataops"):
        dump = steps.dump_step(cfg, Target("glimpse", "glimpse_db"), source, "daily", MOMENT, client,
                               run_marker="pg_backup/r1")
    assert not [r for r in caplog.records if "not client-side encrypted" in r.getMessage()]
    assert dump["file"] == FILE and dump["streamed"] is True
    assert dump["encryption"] == {"format": "age", "recipients": [keys[0].recipient, keys[1].recipient]}
    body = client.get_object(Bucket=bucket, Key=f"database/daily/{FILE}")["Body"].read()
    assert body == Path(dump["path"]).read_bytes() and hashlib.sha256(body).hexdigest() == dump["sha256"]
    assert body.startswith(b"age-encryption.org/v1\n") and b"PGDMP" not in body and PROBE.encode() not in body
    assert files_under(tmp_path / "backups") == [f"daily/2026/11/{FILE}"]

    # The sidecars and the manifest describe the stored (encrypted) object; the manifest says for whom.
    checksum = steps.checksum_step(dump)
    assert Path(checksum["path"]).read_text() == f"{hashlib.sha256(body).hexdigest()}  {FILE}\n"
    check = subprocess.run(["sha256sum", "-c", f"{FILE}.sha256"], cwd=Path(dump["path"]).parent, capture_output=True,
                           text=True)
    assert check.stdout.strip() == f"{FILE}: OK"
    upload = steps.upload_step(client, cfg, dump, checksum)
    doc = steps.manifest_step(client, cfg, dump, upload, {"verified": False, "error": "not run"}, "pg_backup", "r1")
    stored_doc = manifest.loads(client.get_object(Bucket=bucket, Key=f"database/daily/{FILE}.json")["Body"].read())
    assert stored_doc == doc
    assert doc["encryption"] == {"format": "age", "recipients": [keys[0].recipient, keys[1].recipient]}
    assert doc["file"] == FILE and doc["checksum"] == hashlib.sha256(body).hexdigest() and doc["size"] == len(body)
    assert manifest.encryption_of(doc) == doc["encryption"]
    assert PROBE not in json.dumps(doc)
    row = steps.catalog_row(target="glimpse", tier="daily", moment=MOMENT, dump=dump, upload=upload, doc=doc,
                            error=None, failed_step=None, bucket=bucket, dag_id="pg_backup", run_id="r1")
    assert row["encrypted"] is True


def test_without_recipients_the_dump_step_warns_and_writes_plain(source, s3, bucket, tmp_path, caplog):
    cfg = config(tmp_path, bucket, [])
    with caplog.at_level(logging.WARNING, logger="pg_dataops"):
        dump = steps.dump_step(cfg, Target("glimpse", "glimpse_db"), source, "daily", MOMENT, s3.client())
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "backup of glimpse is not client-side encrypted (encryption.recipients is empty)" in warnings
    assert dump["file"] == "glimpse_daily_20261125_020000.dump" and dump["encryption"] is None
    assert Path(dump["path"]).read_bytes().startswith(b"PGDMP")
    row = steps.catalog_row(target="glimpse", tier="daily", moment=MOMENT, dump=dump, upload=None, doc=None,
                            error="x", failed_step="upload", bucket=bucket, dag_id="pg_backup", run_id="r1")
    assert row["encrypted"] is False
    no_dump = steps.catalog_row(target="glimpse", tier="daily", moment=MOMENT, dump=None, upload=None, doc=None,
                                error="x", failed_step="dump", bucket=bucket, dag_id="pg_backup", run_id="r1")
    assert no_dump["encrypted"] is None


def test_a_failed_encrypted_dump_leaves_no_file_and_no_age_process(cluster, source, keys, tmp_path):
    """pg_dump cannot lock a table: the dump fails after age started; nothing is left behind."""
    holder = psycopg.connect(host="127.0.0.1", port=cluster.port, user="postgres", password=cluster.password,
                             dbname=SOURCE)
    holder.execute("LOCK TABLE public.private_notes IN ACCESS EXCLUSIVE MODE")
    try:
        with pytest.raises(DumpFailed, match="could not lock table public.private_notes"):
            run_dump(dataclasses.replace(source, lock_timeout=2), str(tmp_path / "out"), "enc_daily_lock", lock_wait_timeout=2, timeout=120,
                     recipients=[keys[0].recipient])
    finally:
        holder.rollback()
        holder.close()
    assert list((tmp_path / "out").iterdir()) == []
    assert age_children() == []


def test_disk_full_while_encrypting_aborts_age_and_leaves_nothing(source, keys, tiny_disk):
    with pytest.raises(DiskFull, match="local disk full while writing .*partial file was removed"):
        run_dump(source, str(tiny_disk / "daily"), "enc_daily_full", compression=0, recipients=[keys[0].recipient])
    assert os.listdir(tiny_disk / "daily") == []
    assert age_children() == []


def test_a_bad_recipient_is_refused_before_anything(source, tmp_path):
    with pytest.raises(age.EncryptionError, match=r"^encryption.recipients\[0\]: 'age1nope' is not an age X25519 recipient"):
        run_dump(source, str(tmp_path / "out"), "enc_daily_bad", recipients=["age1nope"])
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------
# The restore test decrypts
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def encrypted_dumps(source, keys, tmp_path_factory):
    """One dump per format, encrypted for keys[0] and keys[1], as dump_step describes them."""
    out = tmp_path_factory.mktemp("enc-verify")
    found = {}
    for fmt in ("custom", "directory", "plain"):
        res = run_dump(source, str(out / fmt), f"enc_daily_{fmt}", fmt=fmt, compression=1,
                       recipients=[keys[0].recipient, keys[1].recipient])
        found[fmt] = {**res.to_dict(), "target": "glimpse", "tier": "daily"}
    return found


def scratch_database(cluster) -> str:
    name = verify.temp_database_name("verify", "glimpse")
    verify.create_database(cluster.conn(), name)
    return name


def is_empty(cluster, database: str) -> bool:
    with psycopg.connect(host="127.0.0.1", port=cluster.port, user="postgres", password=cluster.password,
                         dbname=database) as pg:
        return pg.execute(sqlfiles.text("verify/scratch_is_empty.sql")).fetchone()[0]


@pytest.mark.parametrize("fmt", ["custom", "directory", "plain"])
def test_verify_step_decrypts_with_the_identity_and_leaves_no_plaintext(cluster, encrypted_dumps, keys, tmp_path,
                                                                       fmt):
    cfg = config(tmp_path, "unused", [keys[0].recipient], PGBACKUP_RESTORE_JOBS="2")
    dump = encrypted_dumps[fmt]
    db = scratch_database(cluster)
    reads = []
    try:
        result = steps.verify_step(cluster.conn(), db, dump, cfg,
                                   read_identity=lambda: reads.append(1) or keys[1].identity)  # the second key
        assert result["verified"], result["mismatches"]
        assert result["tables_found"] == len(dump["table_counts"])
        assert result["rows_checked"] == sum(dump["table_counts"].values())
        assert reads == [1]
        # The plaintext was only in {local_root}/.scratch/<db>/, removed right after the restore.
        assert not Path(verify.scratch_dir(cfg.local_root, db)).exists()
        assert files_under(tmp_path / "backups") == []
    finally:
        steps.drop_scratch_step(cluster.conn(), db, cfg)
    assert Path(dump["path"]).read_bytes().startswith(b"age-encryption.org/v1\n")  # the stored file is untouched


def test_a_wrong_identity_fails_before_any_restore_work(cluster, encrypted_dumps, keys, tmp_path):
    cfg = config(tmp_path, "unused", [keys[0].recipient])
    dump = encrypted_dumps["custom"]
    db = scratch_database(cluster)
    try:
        with pytest.raises(age.IdentityMismatch) as exc:
            steps.verify_step(cluster.conn(), db, dump, cfg, read_identity=lambda: keys[2].identity)
        msg = str(exc.value)
        assert f"Airflow connection '{CONN_ID}'" in msg and "enc_daily_custom.dump.age" in msg
        assert f"encrypted for {age.describe([keys[0].recipient, keys[1].recipient])}" in msg
        assert f"public key {age.describe([keys[2].recipient])}" in msg
        assert "AGE-SECRET-KEY" not in msg
        assert is_empty(cluster, db)  # nothing was restored
        assert not Path(cfg.local_root, ".scratch").exists()
    finally:
        steps.drop_scratch_step(cluster.conn(), db, cfg)


@pytest.mark.parametrize("case", ["missing connection", "empty password", "not a key"])
def test_a_missing_identity_fails_naming_the_connection_and_the_recipients(cluster, encrypted_dumps, keys,
                                                                           tmp_path, case):
    cfg = config(tmp_path, "unused", [keys[0].recipient])
    dump = encrypted_dumps["directory"]

    def read():
        if case == "missing connection":
            raise ConnectionMissing(f"Airflow connection {CONN_ID!r} (age identity for encrypted backups) is not "
                                    "defined: add it in Admin > Connections or as AIRFLOW_CONN_BACKUP_AGE_IDENTITY")
        return "" if case == "empty password" else "hello"

    db = scratch_database(cluster)
    try:
        with pytest.raises(age.IdentityMismatch) as exc:
            steps.verify_step(cluster.conn(), db, dump, cfg, read_identity=read)
        msg = str(exc.value)
        assert f"'{CONN_ID}'" in msg and "enc_daily_directory.tar.age" in msg, msg
        assert age.describe([keys[0].recipient, keys[1].recipient]) in msg, msg
        assert is_empty(cluster, db)
        assert not Path(cfg.local_root, ".scratch").exists()
    finally:
        steps.drop_scratch_step(cluster.conn(), db, cfg)


def test_the_teardown_removes_a_scratch_directory_left_by_a_killed_restore(cluster, keys, tmp_path):
    cfg = config(tmp_path, "unused", [keys[0].recipient])
    db = scratch_database(cluster)
    left = Path(verify.scratch_dir(cfg.local_root, db))
    left.mkdir(parents=True)
    (left / "enc_daily_custom.dump").write_bytes(b"PGDMP plaintext of a killed restore")
    result = steps.drop_scratch_step(cluster.conn(), db, cfg)
    assert result == {"dropped": db, "scratch_dir_removed": True}
    assert not left.exists()
    with psycopg.connect(host="127.0.0.1", port=cluster.port, user="postgres", password=cluster.password,
                         dbname="postgres") as pg:
        assert pg.execute("SELECT count(*) FROM pg_database WHERE datname = %s", (db,)).fetchone()[0] == 0


def test_an_unencrypted_description_of_an_encrypted_file_is_refused(cluster, encrypted_dumps, tmp_path):
    dump = {**encrypted_dumps["custom"], "encryption": None}
    cfg = config(tmp_path, "unused", [])
    db = scratch_database(cluster)
    try:
        with pytest.raises(age.DecryptionFailed, match="is age-encrypted but its description records no encryption"):
            steps.verify_step(cluster.conn(), db, dump, cfg)
        assert is_empty(cluster, db)
    finally:
        steps.drop_scratch_step(cluster.conn(), db, cfg)
