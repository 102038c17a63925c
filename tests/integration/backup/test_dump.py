"""run_dump against a real PostgreSQL 15 cluster."""

import hashlib
import os
import subprocess
import tarfile

import psycopg
import pytest
from pg_dataops.backup.dump import run_dump
from pg_dataops.common.errors import AuthenticationFailed, ClientVersionError, DatabaseUnreachable, DiskFull
from pg_dataops.common.pg import PgConn

DEMO_TABLES = {"users", "user_profiles", "user_preferences", "likes", "matches", "messages", "user_groups"}


def file_sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def live_counts(cluster):
    with psycopg.connect(host="127.0.0.1", port=cluster.port, user="postgres", password=cluster.password,
                         dbname="glimpse") as pg:
        return {t: pg.execute(f"SELECT count(*) FROM public.{t}").fetchone()[0] for t in DEMO_TABLES}  # noqa: S608 - test-only constant names


def test_custom_dump_hash_counts_and_restorable(cluster, tmp_path):
    res = run_dump(cluster.conn("glimpse"), str(tmp_path / "out"), "glimpse_daily_x", fmt="custom", compression=1,
                   part_size=5 * 1024 * 1024)
    assert res.path.endswith("glimpse_daily_x.dump")
    assert os.listdir(tmp_path / "out") == ["glimpse_daily_x.dump"]
    assert res.size == os.path.getsize(res.path)
    assert res.sha256 == file_sha256(res.path)
    counts = {k.split(".", 1)[1]: v for k, v in res.table_counts.items() if k.startswith("public.")}
    assert counts == live_counts(cluster)
    assert all(v > 0 for v in counts.values())
    assert res.pg_dump_version.startswith("pg_dump (PostgreSQL) 15")
    assert res.db_version.startswith("PostgreSQL 15")
    assert res.server_version_num // 10000 == 15
    assert res.snapshot_time.endswith("Z")
    # pg_restore can read it: the table of contents lists every demo table's data.
    toc = subprocess.run(["/usr/lib/postgresql/15/bin/pg_restore", "--list", res.path], capture_output=True,
                         text=True, check=True).stdout
    for t in DEMO_TABLES:
        assert f"TABLE DATA public {t} " in toc


def test_counts_come_from_the_dump_snapshot(cluster, tmp_path):
    """Rows committed while pg_dump runs are in neither the dump nor the counts."""
    cluster.psql("-c", "CREATE TABLE IF NOT EXISTS snap_probe (id int); TRUNCATE snap_probe;", dbname="glimpse")
    conn = cluster.conn("glimpse")
    res = run_dump(conn, str(tmp_path), "probe", fmt="custom", compression=0)
    assert res.table_counts["public.snap_probe"] == 0
    cluster.psql("-c", "INSERT INTO snap_probe SELECT generate_series(1, 5)", dbname="glimpse")
    res2 = run_dump(conn, str(tmp_path / "2"), "probe", fmt="custom", compression=0)
    assert res2.table_counts["public.snap_probe"] == 5
    cluster.psql("-c", "DROP TABLE snap_probe", dbname="glimpse")


def test_directory_and_plain_formats(cluster, tmp_path):
    d = run_dump(cluster.conn("glimpse"), str(tmp_path / "d"), "g", fmt="directory", compression=1, jobs=2)
    assert d.path.endswith("g.tar") and d.sha256 == file_sha256(d.path)
    with tarfile.open(d.path) as tar:
        assert "toc.dat" in tar.getnames()
    assert sorted(os.listdir(tmp_path / "d")) == ["g.tar"]  # the dump directory was packed and removed
    p = run_dump(cluster.conn("glimpse"), str(tmp_path / "p"), "g", fmt="plain", compression=0)
    assert p.path.endswith("g.sql")
    with open(p.path) as f:
        head = f.read(4096)
    assert "PostgreSQL database dump" in head


def test_wrong_password_is_named(cluster, tmp_path):
    with pytest.raises(AuthenticationFailed, match="authentication failed for user 'postgres'") as exc:
        run_dump(cluster.conn("glimpse", password="wrong-pw"), str(tmp_path), "x")
    assert "wrong-pw" not in str(exc.value)
    assert os.listdir(tmp_path) == []


def test_unreachable_database_is_named(tmp_path):
    import devstack

    port = devstack.free_port()
    with pytest.raises(DatabaseUnreachable, match=f"cannot reach PostgreSQL at 127.0.0.1:{port}"):
        run_dump(PgConn("127.0.0.1", port, "postgres", "glimpse", "pw"), str(tmp_path), "x")
    assert os.listdir(tmp_path) == []


def test_missing_client_major_is_named(cluster, tmp_path):
    with pytest.raises(ClientVersionError, match="server is PostgreSQL 15 but .*/15/bin/pg_dump is missing"):
        run_dump(cluster.conn("glimpse"), str(tmp_path / "o"), "x", pg_bin_root=str(tmp_path / "nobin"))
    assert os.listdir(tmp_path / "o") == []


def test_disk_full_leaves_nothing(cluster, tiny_disk):
    with pytest.raises(DiskFull, match="local disk full while writing .*partial file was removed"):
        run_dump(cluster.conn("glimpse"), str(tiny_disk / "daily"), "glimpse_daily_x", compression=0)
    assert os.listdir(tiny_disk / "daily") == []


def test_streamed_upload_is_the_file(cluster, s3, bucket, tmp_path):
    """Parts go to S3 while pg_dump writes; the completed object is byte for byte the local file."""
    from pg_dataops.common import s3 as storage

    client = s3.client()
    up = storage.StreamingUpload(client, bucket, "database/daily/s.dump", storage_class="STANDARD_IA", sse="AES256",
                                 kms_key_id=None)
    res = run_dump(cluster.conn("glimpse"), str(tmp_path), "s", compression=0, part_size=5 * 1024 * 1024,
                   uploader=up)
    body = client.get_object(Bucket=bucket, Key="database/daily/s.dump")["Body"].read()
    assert hashlib.sha256(body).hexdigest() == res.sha256 == file_sha256(res.path)
    assert len(res.part_sha256) == -(-res.size // (5 * 1024 * 1024)) > 1
    # what S3 took after pg_dump ended, kept for the logs and the benchmark
    assert res.upload_tail["parts"] == len(res.part_sha256)
    assert res.upload_tail["drain_seconds"] >= 0 and res.upload_tail["complete_seconds"] > 0
    proof = storage.upload_file(client, res.path, bucket, "database/daily/s.dump", size=res.size,
                                sha256_hex=res.sha256, part_sha256=res.part_sha256, part_size=5 * 1024 * 1024)
    assert proof.already_present and proof.checksum_verified == "s3-sha256-checksum"
    assert client.head_object(Bucket=bucket, Key="database/daily/s.dump")["StorageClass"] == "STANDARD_IA"


def test_streamed_upload_refuses_an_existing_key_before_dumping(cluster, s3, bucket, tmp_path):
    from pg_dataops.common import s3 as storage
    from pg_dataops.common.errors import ObjectExists

    client = s3.client()
    client.put_object(Bucket=bucket, Key="k.dump", Body=b"older backup")
    up = storage.StreamingUpload(client, bucket, "k.dump", storage_class="STANDARD_IA", sse="AES256", kms_key_id=None)
    with pytest.raises(ObjectExists, match="refusing to overwrite"):
        run_dump(cluster.conn("glimpse"), str(tmp_path / "o"), "k", uploader=up)
    assert client.get_object(Bucket=bucket, Key="k.dump")["Body"].read() == b"older backup"
    assert not (tmp_path / "o").exists() or os.listdir(tmp_path / "o") == []
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
