"""pg_backup with a config whose target excludes tables (PGBACKUP_CONFIG: an operator's edited yaml): one DAG
run, judged by its state and by the manifest it wrote to S3 (the exclusions recorded, the counts what the dump
holds, the verification's checks naming them)."""

from __future__ import annotations

import pytest
from pg_dataops.backup import manifest as manifest_mod

from tests.support.excludes import demo_with_audit_logs, write_config

from .conftest import catalog_rows

pytestmark = pytest.mark.dagrun
DB = "hd_excl_dag"


@pytest.fixture
def source(cluster):
    demo_with_audit_logs(cluster, DB)
    yield DB
    cluster.dropdb(DB)


def test_pg_backup_run_with_exclusions(run_pg_backup, cluster, s3, bucket, tmp_path, source):
    config = write_config(tmp_path / "pgbackup.yaml", exclude_tables=["public.AuditArchive"],
                          exclude_table_data=["public.audit_logs"])
    run = run_pg_backup(bucket=bucket, logical_date="2026-11-25T02:00:00+09:00",
                        conns={"glimpse_db": cluster.airflow_conn(DB)}, env={"PGBACKUP_CONFIG": str(config)})
    assert run.state == "success", run.output[-4000:]
    assert run.task_states["back_up_target.verify[0]"] == "success"

    key = "database/daily/glimpse_daily_20261125_020000.dump.json"
    doc = manifest_mod.loads(s3.client().get_object(Bucket=bucket, Key=key)["Body"].read())
    assert doc["exclude_tables"] == ["public.AuditArchive"]
    assert doc["exclude_table_data"] == ["public.audit_logs"]
    assert "public.AuditArchive" not in doc["table_counts"]
    assert doc["table_counts"]["public.audit_logs"] == 0
    assert doc["table_counts"]["public.auditarchive"] == 7 and doc["table_counts"]["public.users"] == 300
    assert doc["verified"] is True
    checks = doc["verification"]["checks"]
    assert "excluded from the backup (exclude_tables), absent from the restore: public.AuditArchive" in checks
    assert "data excluded from the backup (exclude_table_data), restored empty: public.audit_logs" in checks
    assert [r["status"] for r in catalog_rows(cluster)] == ["SUCCESS"]
