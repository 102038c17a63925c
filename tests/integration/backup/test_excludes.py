"""exclude_tables / exclude_table_data end to end without Airflow: pg_backup's steps dump a database with an
audit log (and a mixed-case table beside its lower-case namesake: the names are exact), the manifest in S3
records the exclusions, verification and the drill pass on what the dump holds and fail on what it must not."""

from __future__ import annotations

import datetime as dt

import psycopg
import pytest
from pg_dataops.backup import manifest, verify
from pg_dataops.backup import steps as backup
from pg_dataops.common.config import load_config
from pg_dataops.drill.restore import restore_drill

from tests.support.excludes import demo_with_audit_logs, write_config
from tests.support.pg import table_digests

DB = "hd_excl_glimpse"
MOMENT = dt.datetime(2026, 11, 24, 17, 0, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def source(cluster):
    demo_with_audit_logs(cluster, DB)
    yield DB
    cluster.dropdb(DB)


def backup_with(cluster, s3, bucket, tmp_path, source, **excludes):
    """pg_backup's steps (dump, checksum, upload, verify, manifest) for the target with ``excludes``;
    returns (dump result, manifest in S3, digests of the verified restore)."""
    cfg = load_config(write_config(tmp_path / "pgbackup.yaml", **excludes), environ={
        "PGBACKUP_BUCKET": bucket, "PGBACKUP_LOCAL_ROOT": str(tmp_path / "root"), "PGBACKUP_MULTIPART_CHUNK_MB": "5"})
    target = cfg.target("glimpse")
    assert (target.exclude_tables, target.exclude_table_data) == (tuple(excludes.get("exclude_tables", ())),
                                                                 tuple(excludes.get("exclude_table_data", ())))
    client = s3.client()
    dump = backup.dump_step(cfg, target, cluster.conn(source), "daily", MOMENT)
    upload = backup.upload_step(client, cfg, dump, backup.checksum_step(dump))
    scratch = verify.temp_database_name("verify", "glimpse")
    try:
        verdict = backup.verify_step(cluster.conn(), scratch, dump, cfg)
        restored = table_digests(cluster, scratch)
    finally:
        backup.drop_scratch_step(cluster.conn(), scratch, cfg)
    assert verdict["verified"], verdict["mismatches"]
    backup.manifest_step(client, cfg, dump, upload, verdict, "pg_backup", "test")
    body = client.get_object(Bucket=bucket, Key=upload["key"] + ".json")["Body"].read()
    return dump, manifest.loads(body), restored


def test_excluded_data_is_backed_up_empty(cluster, s3, bucket, tmp_path, source):
    before = table_digests(cluster, source)
    assert before["public.audit_logs"][0] == 300
    dump, doc, restored = backup_with(cluster, s3, bucket, tmp_path, source,
                                      exclude_table_data=["public.audit_logs"])
    assert doc["exclude_table_data"] == ["public.audit_logs"] and doc["exclude_tables"] == []
    assert doc["table_counts"]["public.audit_logs"] == 0  # what the dump holds, not what the table held
    assert doc["table_counts"]["public.users"] == 300
    assert any("restored empty: public.audit_logs" in c for c in doc["verification"]["checks"])
    # the restored copy: audit_logs there and empty, every other table as in the source
    assert restored["public.audit_logs"] == (0, "")
    assert {k: v for k, v in restored.items() if k != "public.audit_logs"} == \
           {k: v for k, v in before.items() if k != "public.audit_logs"}
    # the drill checks the same through the manifest (its exclusions, its counts)
    drill_db = verify.temp_database_name("drill", "glimpse")
    verify.create_database(cluster.conn(), drill_db)
    try:
        result = restore_drill(cluster.conn(), drill_db, dump["path"], doc, identity=lambda: None,
                               identity_conn_id="backup_age_identity", jobs=2, pg_bin_root="/usr/lib/postgresql",
                               required_tables=("public.users",), timeout=300)
    finally:
        verify.drop_database(cluster.conn(), drill_db)
    assert result["verified"] and result["mismatches"] == []


def test_excluded_tables_are_not_backed_up(cluster, s3, bucket, tmp_path, source):
    before = table_digests(cluster, source)
    dump, doc, restored = backup_with(cluster, s3, bucket, tmp_path, source,
                                      exclude_tables=["public.audit_logs", "public.AuditArchive"])
    assert doc["exclude_tables"] == ["public.audit_logs", "public.AuditArchive"]
    assert "public.audit_logs" not in doc["table_counts"] and "public.AuditArchive" not in doc["table_counts"]
    assert "public.audit_logs" not in restored and "public.AuditArchive" not in restored
    # exact names: the lower-case namesake of the mixed-case table is backed up with its rows
    assert doc["table_counts"]["public.auditarchive"] == 7
    assert restored == {k: v for k, v in before.items() if k not in ("public.audit_logs", "public.AuditArchive")}

    # the restore holds what the manifest says it must not: verification names it
    scratch = verify.temp_database_name("verify", "glimpse")
    verify.create_database(cluster.conn(), scratch)
    try:
        conn = cluster.conn(scratch)
        verify.restore(conn, dump["path"], "custom", jobs=2, pg_bin_root="/usr/lib/postgresql", major=15)
        with psycopg.connect(host="127.0.0.1", port=cluster.port, user="postgres", password=cluster.password,
                             dbname=scratch) as pg:
            pg.execute("CREATE TABLE public.audit_logs (id int)")
        facts = verify.run_checks(conn, doc["table_counts"], **verify.exclusions_of(doc))
    finally:
        verify.drop_database(cluster.conn(), scratch)
    assert facts["mismatches"][:1] == ["table public.audit_logs is restored but the backup excludes it "
                                       "(exclude_tables)"]
