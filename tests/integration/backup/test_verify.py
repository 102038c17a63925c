"""Restore tests: the restored database must match the dump's snapshot, table by table."""

import os
import subprocess
from dataclasses import replace

import devstack
import psycopg
import pytest
from faultproxy import TcpCutProxy
from pg_dataops.backup import verify
from pg_dataops.backup.dump import run_dump
from pg_dataops.common.errors import ClientVersionError, RestoreServerError


@pytest.fixture(scope="module")
def glimpse_dump(cluster, tmp_path_factory):
    out = tmp_path_factory.mktemp("verify")
    return run_dump(cluster.conn("glimpse"), str(out), "glimpse_daily_v", fmt="custom", compression=1)


def scratch(cluster):
    name = verify.temp_database_name("verify", "glimpse")
    verify.create_database(cluster.conn(), name)
    return name


def verify_in_scratch(cluster, dump, counts: dict, **kwargs):
    """verify_backup of ``dump`` against ``counts`` in a scratch database, dropped afterwards."""
    name = scratch(cluster)
    try:
        return verify.verify_backup(cluster.conn(), name, dump.path, fmt="custom", expected_counts=counts,
                                    backup_server_version_num=kwargs.pop("backup_server_version_num", 150000),
                                    **kwargs)
    finally:
        verify.drop_database(cluster.conn(), name)


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
    res = verify_in_scratch(cluster, glimpse_dump, counts)
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


# --- Verification floors, extension tables, restore-server failures, parallel checks (issue 7) ---

def test_checks_name_what_ran_and_compare_users_for_real(cluster, glimpse_dump):
    counts = dict(glimpse_dump.table_counts)
    n = counts["public.users"]
    res = verify_in_scratch(cluster, glimpse_dump, counts, backup_server_version_num=glimpse_dump.server_version_num,
                            jobs=2)
    assert res.verified, res.mismatches
    assert res.users == n  # counted in the restore, not copied from the manifest
    assert f"required table public.users: {n:,} rows restored vs {n:,} in the dump's snapshot" in res.checks
    assert "no extension-owned tables" in res.checks
    assert "counts and amcheck in parallel over 2 connection(s)" in res.checks
    assert res.required_tables == ["public.users"]
    assert res.timings["connections"] == 2
    assert res.timings["counts"] > 0 and res.timings["amcheck"] > 0
    assert res.timings["restore"] == res.restore_seconds


def test_users_count_is_compared(cluster, glimpse_dump):
    # The dump's snapshot says one user fewer than the restore holds: the users line is a real comparison.
    counts = dict(glimpse_dump.table_counts)
    counts["public.users"] -= 1
    res = verify_in_scratch(cluster, glimpse_dump, counts)
    n = glimpse_dump.table_counts["public.users"]
    assert not res.verified
    assert res.mismatches == [f"table public.users: {n} rows restored, {n - 1} in the dump's snapshot"]
    assert res.users == n


@pytest.fixture
def source_db(cluster):
    """A scratch source database, dropped afterwards."""
    name = f"src_{os.getpid()}_{len(databases(cluster))}"
    cluster.createdb(name)
    yield name
    cluster.dropdb(name)


def test_empty_database_is_not_verified(cluster, source_db, tmp_path):
    d = run_dump(cluster.conn(source_db), str(tmp_path), "empty", fmt="custom", compression=1)
    assert d.table_counts == {}
    name = scratch(cluster)
    try:
        res = verify.verify_backup(cluster.conn(), name, d.path, fmt="custom", expected_counts=d.table_counts,
                                   backup_server_version_num=d.server_version_num)
    finally:
        verify.drop_database(cluster.conn(), name)
    assert not res.verified
    assert res.mismatches == [
        "the restore holds no tables: nothing was verified (was an empty or the wrong database dumped?)",
        "required table public.users is missing from the restore (verify_required_tables)",
    ]
    assert "required table public.users: missing" in res.checks


def test_missing_required_table_is_not_verified(cluster, source_db, tmp_path):
    cluster.psql("-c", "CREATE TABLE orders (id int PRIMARY KEY); INSERT INTO orders SELECT generate_series(1, 5);"
                 "CREATE SCHEMA billing; CREATE TABLE billing.invoices (id int);", dbname=source_db)
    d = run_dump(cluster.conn(source_db), str(tmp_path), "nousers", fmt="custom", compression=1)
    assert d.table_counts == {"billing.invoices": 0, "public.orders": 5}
    name = scratch(cluster)
    try:
        res = verify.verify_backup(cluster.conn(), name, d.path, fmt="custom", expected_counts=d.table_counts,
                                   backup_server_version_num=d.server_version_num,
                                   required_tables=("public.users", "billing.invoices"))
    finally:
        verify.drop_database(cluster.conn(), name)
    assert not res.verified
    assert res.mismatches == ["required table public.users is missing from the restore (verify_required_tables)"]
    assert "required table billing.invoices: 0 rows restored vs 0 in the dump's snapshot" in res.checks
    assert res.users is None
    # with no required tables, the same restore verifies
    name = scratch(cluster)
    try:
        res = verify.verify_backup(cluster.conn(), name, d.path, fmt="custom", expected_counts=d.table_counts,
                                   backup_server_version_num=d.server_version_num, required_tables=())
    finally:
        verify.drop_database(cluster.conn(), name)
    assert res.verified, res.mismatches


EXT_CONTROL = """comment = 'pg_dataops test: an extension whose install script creates tables'
default_version = '1.0'
relocatable = false
schema = public
"""
EXT_SQL = """\\echo Use "CREATE EXTENSION pgdataops_testext" to load this file. \\quit
CREATE TABLE ext_lookup (code int PRIMARY KEY, label text NOT NULL);
INSERT INTO ext_lookup SELECT g, 'code ' || g FROM generate_series(1, 40) g;
-- a config table: pg_dump dumps the rows the filter selects (the user's), not the script's
CREATE TABLE ext_settings (name text PRIMARY KEY, value text, user_added boolean NOT NULL DEFAULT true);
INSERT INTO ext_settings VALUES ('shipped', 'yes', false);
SELECT pg_catalog.pg_extension_config_dump('ext_settings', 'WHERE user_added');
"""


@pytest.fixture
def test_extension():
    """pgdataops_testext installed into the server's extension directory (tests run as root)."""
    pg_config = "/usr/lib/postgresql/15/bin/pg_config"
    sharedir = subprocess.run([pg_config, "--sharedir"], capture_output=True, text=True, check=True).stdout.strip()
    files = {os.path.join(sharedir, "extension", "pgdataops_testext.control"): EXT_CONTROL,
             os.path.join(sharedir, "extension", "pgdataops_testext--1.0.sql"): EXT_SQL}
    if not os.access(os.path.join(sharedir, "extension"), os.W_OK):
        pytest.skip(f"{sharedir}/extension is not writable (the tests need root to install a test extension)")
    for path, text in files.items():
        with open(path, "w") as f:
            f.write(text)
    try:
        yield "pgdataops_testext"
    finally:
        for path in files:
            os.unlink(path)


def test_extension_tables_are_treated_alike_on_both_sides(cluster, source_db, tmp_path, test_extension):
    cluster.psql("-c", "CREATE EXTENSION pgdataops_testext;"
                 "CREATE TABLE users (id int PRIMARY KEY, email text); INSERT INTO users VALUES (1, 'a@x'), (2, 'b@x');"
                 "INSERT INTO ext_settings (name, value) VALUES ('mine', 'kept');", dbname=source_db)
    d = run_dump(cluster.conn(source_db), str(tmp_path), "ext", fmt="custom", compression=1)
    assert d.table_counts == {"public.users": 2}  # the extension's tables are not in the dump's counts
    name = scratch(cluster)
    try:
        res = verify.verify_backup(cluster.conn(), name, d.path, fmt="custom", expected_counts=d.table_counts,
                                   backup_server_version_num=d.server_version_num)
        with psycopg.connect(host="127.0.0.1", port=cluster.port, user="postgres", password=cluster.password,
                             dbname=name) as pg:
            settings = pg.execute("SELECT name, value FROM ext_settings ORDER BY name").fetchall()
            lookup = pg.execute("SELECT count(*) FROM ext_lookup").fetchone()[0]
    finally:
        verify.drop_database(cluster.conn(), name)
    assert res.verified, res.mismatches
    assert res.tables_per_schema == {"public": 1}
    assert res.extension_tables == ["public.ext_lookup (pgdataops_testext)",
                                    "public.ext_settings (pgdataops_testext, config table)"]
    assert ("extension-owned tables, recreated by CREATE EXTENSION, not counted on either side (a config table's "
            "user rows are restored from the dump): public.ext_lookup (pgdataops_testext), "
            "public.ext_settings (pgdataops_testext, config table)") in res.checks
    # the config table's user row came back from the dump, the script's rows from CREATE EXTENSION
    assert settings == [("mine", "kept"), ("shipped", "yes")]
    assert lookup == 40
    # its indexes were checked too (users_pkey, ext_lookup_pkey, ext_settings_pkey)
    assert res.amcheck == "3 btree indexes"


def test_lost_restore_connection_is_transient_and_a_retry_verifies(cluster, glimpse_dump):
    proxy = TcpCutProxy(cluster.port, cut_after_bytes=256 * 1024, cuts=1).start()
    via_proxy = replace(cluster.conn(), port=proxy.port)
    name = scratch(cluster)
    try:
        with pytest.raises(RestoreServerError) as info:
            verify.verify_backup(via_proxy, name, glimpse_dump.path, fmt="custom",
                                 expected_counts=glimpse_dump.table_counts,
                                 backup_server_version_num=glimpse_dump.server_version_num)
        assert proxy.cut == 1
        msg = str(info.value)
        assert msg.startswith("pg_restore failed (exit 1): the connection to the restore server was lost; "
                              "not a fault of the backup, retrying: "), msg
        assert cluster.password not in msg
        # The retry finds the first attempt's half-restored objects: it starts from an empty database.
        res = verify.verify_backup(via_proxy, name, glimpse_dump.path, fmt="custom",
                                   expected_counts=glimpse_dump.table_counts,
                                   backup_server_version_num=glimpse_dump.server_version_num)
    finally:
        verify.drop_database(cluster.conn(), name)
        proxy.stop()
    assert res.verified, res.mismatches
    assert res.rows_checked == sum(glimpse_dump.table_counts.values())


def test_restore_past_its_time_limit_is_stopped(cluster, glimpse_dump):
    name = scratch(cluster)
    try:
        with pytest.raises(verify.VerificationFailed, match=r"pg_restore did not finish within 0 s "
                                                            r"\(task_timeout_minutes\) and was stopped"):
            verify.verify_backup(cluster.conn(), name, glimpse_dump.path, fmt="custom",
                                 expected_counts=glimpse_dump.table_counts,
                                 backup_server_version_num=glimpse_dump.server_version_num, timeout=0.05)
        with psycopg.connect(host="127.0.0.1", port=cluster.port, user="postgres", password=cluster.password,
                             dbname="postgres") as pg:
            assert devstack.wait_for(lambda: pg.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (name,)).fetchone()[0] == 0, timeout=10)
    finally:
        verify.drop_database(cluster.conn(), name)
