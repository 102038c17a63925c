"""pg_backup_catalog_rebuild end to end with `airflow dags test`: manifests in moto's S3, a fresh catalog."""

from __future__ import annotations

import psycopg
import pytest

from tests.support.catalog import fresh_catalog
from tests.support.s3_manifests import (
    EXPECTED_SKIPPED,
    PREFIX,
    expected_dump_problems,
    expected_rows,
    put_manifests,
    rebuilt_rows,
)

from .conftest import BackupRun, json_posts

pytestmark = pytest.mark.dagrun

DAG_ID = "pg_backup_catalog_rebuild"


@pytest.fixture
def run_rebuild(run_dag, cluster):
    def run(*, bucket: str, catalog_db: str) -> BackupRun:
        return run_dag(DAG_ID, bucket=bucket, conns={"backup_catalog": cluster.airflow_conn(catalog_db)})

    return run


def test_rebuild_into_a_fresh_catalog(run_rebuild, cluster, s3, bucket, receiver):
    put_manifests(s3.client(), bucket)
    dbname = fresh_catalog(cluster, "catalog_lost")
    run = run_rebuild(bucket=bucket, catalog_db=dbname)
    assert run.state == "success", run.output[-3000:]
    # SUCCESS only for the verified manifest whose dump is in S3 at its size; a missing or resized dump is FAILED.
    assert [r[1:] for r in rebuilt_rows(cluster, dbname)] == expected_rows(bucket)
    for skipped in EXPECTED_SKIPPED:
        assert f"skipped s3://{bucket}/{skipped['key']}: {skipped['reason']}" in run.output
    for problem in expected_dump_problems(bucket):
        assert f"recorded FAILED for s3://{bucket}/{problem['key']}: {problem['problem']}" in run.output
    assert "10 manifests, 5 rows (1 SUCCESS, 4 FAILED), 5 skipped" in run.output
    assert receiver.requests == []


def test_no_manifests_fails_and_alerts(run_rebuild, cluster, bucket, receiver):
    dbname = fresh_catalog(cluster, "catalog_lost")
    run = run_rebuild(bucket=bucket, catalog_db=dbname)
    assert run.state == "failed", run.output[-3000:]
    cause = f"no manifests found under s3://{bucket}/{PREFIX}/{{daily,weekly,monthly}}/"
    (slack,) = json_posts(receiver, "/slack")
    assert f"DAG: `{DAG_ID}`  task: `rebuild_catalog`" in slack["text"] and cause in slack["text"]
    (event,) = json_posts(receiver, "/pagerduty")
    assert cause in event["payload"]["summary"] and event["dedup_key"].startswith(f"{DAG_ID}/")
    with psycopg.connect(host="127.0.0.1", port=cluster.port, user="postgres", password=cluster.password,
                         dbname=dbname) as pg:
        assert pg.execute("SELECT to_regclass('public.backup_logs')").fetchone()[0] is None
