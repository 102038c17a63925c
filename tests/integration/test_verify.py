"""Restore tests: the restored database must match the dump's snapshot, table by table."""

import os

import psycopg
import pytest
from pg_dataops import verify
from pg_dataops.dump import run_dump
from pg_dataops.errors import ClientVersionError


@pytest.fixture(scope="module")
def glimpse_dump(cluster, tmp_path_factory):
    out = tmp_path_factory.mktemp("verify")
    return run_dump(cluster.conn("glimpse"), str(out), "glimpse_daily_v", fmt="custom", compression=1)


def scratch(cluster):
    name = verify.temp_database_name("verify", "glimpse")
    verify.create_database(cluster.conn(), name)
    return name


def databases(cluster):
    with psycopg.connect(host="127.0.0.1", port=cluster.port, user="postgres", password=cluster.password,
                         dbname="postgres") as pg:
        return {r[0] for r in pg.execute("SELECT datname FROM pg_database")}


def test_good_backup_verifies(cluster, glimpse_dump):
    name = scratch(cluster)
    try:
        res = verify.verify_backup(cluster.conn(), name, glimpse_dump.path, fmt="custom",
                                   expected_counts=glimpse_dump.table_counts,
                                   backup_server_version_num=glimpse_dump.server_version_num)
    finally:
        verify.drop_database(cluster.conn(), name)
    assert res.verified, res.mismatches
    assert res.tables_found == res.tables_expected == len(glimpse_dump.table_counts)
    assert res.rows_checked == sum(glimpse_dump.table_counts.values())
    assert res.users == glimpse_dump.table_counts["public.users"] > 0
    assert res.amcheck.endswith("btree indexes") and int(res.amcheck.split()[0]) >= 7
    assert name not in databases(cluster)


def test_count_mismatch_is_reported(cluster, glimpse_dump):
    counts = dict(glimpse_dump.table_counts)
    counts["public.users"] += 1
    counts["public.ghost"] = 3
    name = scratch(cluster)
    try:
        res = verify.verify_backup(cluster.conn(), name, glimpse_dump.path, fmt="custom", expected_counts=counts,
                                   backup_server_version_num=150000)
    finally:
        verify.drop_database(cluster.conn(), name)
    assert not res.verified
    n = glimpse_dump.table_counts["public.users"]
    assert f"table public.users: {n} rows restored, {n + 1} in the dump's snapshot" in res.mismatches
    assert "table public.ghost is missing from the restore" in res.mismatches
    assert "schema public: 7 tables restored, 8 in the manifest" in res.mismatches


def test_corrupted_dump_fails_restore(cluster, glimpse_dump, tmp_path):
    data = bytearray(open(glimpse_dump.path, "rb").read())
    data[len(data) // 2] ^= 0xFF
    bad = tmp_path / "bad.dump"
    bad.write_bytes(bytes(data))
    name = scratch(cluster)
    try:
        with pytest.raises(verify.VerificationFailed, match="pg_restore failed"):
            verify.verify_backup(cluster.conn(), name, str(bad), fmt="custom",
                                 expected_counts=glimpse_dump.table_counts, backup_server_version_num=150000)
    finally:
        verify.drop_database(cluster.conn(), name)


def test_newer_major_is_refused_before_restoring(cluster, glimpse_dump):
    name = scratch(cluster)
    try:
        with pytest.raises(ClientVersionError, match="backup comes from PostgreSQL 17, newer than .*PostgreSQL 15"):
            verify.verify_backup(cluster.conn(), name, glimpse_dump.path, fmt="custom",
                                 expected_counts={}, backup_server_version_num=170002)
    finally:
        verify.drop_database(cluster.conn(), name)


def test_drop_refuses_foreign_names(cluster):
    with pytest.raises(ValueError, match="refusing to drop 'glimpse'"):
        verify.drop_database(cluster.conn(), "glimpse")
    assert "glimpse" in databases(cluster)


@pytest.mark.parametrize("fmt", ["directory", "plain"])
def test_other_formats_verify(cluster, tmp_path, fmt):
    d = run_dump(cluster.conn("glimpse"), str(tmp_path), "g", fmt=fmt, compression=1)
    name = scratch(cluster)
    try:
        res = verify.verify_backup(cluster.conn(), name, d.path, fmt=fmt, expected_counts=d.table_counts,
                                   backup_server_version_num=d.server_version_num)
    finally:
        verify.drop_database(cluster.conn(), name)
    assert res.verified, res.mismatches
    assert os.listdir(tmp_path) == [os.path.basename(d.path)]  # the extracted directory was removed
