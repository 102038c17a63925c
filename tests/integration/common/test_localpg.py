"""The scratch instance kernel: a private data directory, a socket-only server, an idempotent stop."""

import os
import stat
import subprocess

import psycopg
import pytest
from pg_dataops.common import localpg
from pg_dataops.common.pg import connect

PG_BIN = "/usr/lib/postgresql/15/bin"


def test_scratch_instance_lifecycle(tmp_path):
    root = tmp_path / "scratch"
    data = localpg.make_private_dir(root / "data")
    run = localpg.make_private_dir(root / "run")
    assert stat.S_IMODE(os.stat(data).st_mode) == 0o700
    subprocess.run(localpg.as_owner([f"{PG_BIN}/initdb", "-D", str(data), "-U", "postgres", "--auth=scram-sha-256",
                                     "--pwfile=/dev/null"]), check=False, capture_output=True)
    if not (data / "PG_VERSION").exists():  # initdb refuses an empty password file: use md5-less trust
        subprocess.run(localpg.as_owner([f"{PG_BIN}/initdb", "-D", str(data), "-U", "postgres"]), check=True,
                       capture_output=True)
    inst = localpg.ScratchInstance(datadir=data, bin_dir=PG_BIN, socket_dir=run)
    inst.start({"shared_buffers": "16MB"})
    try:
        assert inst.is_running()
        # its own pg_hba trusts the socket whatever the data directory's pg_hba.conf says
        with connect(inst.conn()) as pg:
            assert pg.execute("SHOW listen_addresses").fetchone()[0] == ""
            assert pg.execute("SHOW shared_buffers").fetchone()[0] == "16MB"
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(host="127.0.0.1", port=inst.port, user="postgres", dbname="postgres", connect_timeout=3)
    finally:
        inst.stop()
    assert not inst.is_running()
    inst.stop()  # idempotent


def test_a_non_empty_directory_is_refused(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "PG_VERSION").write_text("15\n")
    with pytest.raises(localpg.ScratchError, match="exists and is not empty"):
        localpg.make_private_dir(tmp_path / "data")


def test_a_missing_server_binary_is_named(tmp_path):
    inst = localpg.ScratchInstance(datadir=localpg.make_private_dir(tmp_path / "d"), bin_dir=str(tmp_path),
                                   socket_dir=localpg.make_private_dir(tmp_path / "r"))
    with pytest.raises(localpg.ScratchError, match="needs the PostgreSQL server binaries"):
        inst.start()


def test_a_socket_path_over_the_limit_is_refused_before_anything_starts(tmp_path):
    long_dir = tmp_path / ("d" * 90)
    with pytest.raises(localpg.ScratchError, match=r"over the 107-byte limit of a socket path: choose a shorter"):
        localpg.check_socket_dir(long_dir)
    localpg.check_socket_dir("/var/tmp/pg-dataops-pitr/manual__2026_12_01T03_30_00_000000_00_00_glimpse/run")
