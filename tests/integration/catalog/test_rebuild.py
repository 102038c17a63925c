"""backup_logs rebuilt from the manifests in S3 (moto over HTTP) into a fresh catalog database.

The manifests (tests/support/s3_manifests.py) are built with pg_dataops.backup.manifest.build_manifest, as
pg_backup writes them; beside them sit an unverified one, one from outside Airflow, and several that must be
skipped with their reason.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pg_dataops.backup import manifest
from pg_dataops.catalog import backup_logs, rebuild
from pg_dataops.catalog.rebuild import NoManifestsFound
from pg_dataops.common import pg as pgtools

from tests.support.catalog import fresh_catalog
from tests.support.s3_manifests import (
    COLUMNS,
    EXPECTED_SKIPPED,
    GOOD,
    MISSING,
    PREFIX,
    UTC,
    doc,
    expected_dump_problems,
    expected_rows,
    put_manifests,
    rebuilt_rows,
)

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def manifests(s3, bucket):
    client = s3.client()
    put_manifests(client, bucket)
    return client


def test_rebuild_exact_rows_skipped_list_and_idempotent(cluster, manifests, bucket):
    dbname = fresh_catalog(cluster, "catalog_rebuild")
    pg = pgtools.connect(cluster.conn(dbname))
    try:
        first = rebuild.rebuild_catalog(manifests, bucket, PREFIX, pg)
        after_first = rebuilt_rows(cluster, dbname)
        second = rebuild.rebuild_catalog(manifests, bucket, PREFIX, pg)
    finally:
        pg.close()
    assert first.to_dict() == {"bucket": bucket, "prefix": PREFIX, "manifests": 10, "recorded": 5, "success": 1,
                               "failed": 4, "skipped": EXPECTED_SKIPPED, "dump_problems": expected_dump_problems(bucket)}
    assert [r[1:] for r in after_first] == expected_rows(bucket)
    # Twice: the same rows, the same ids (upserted, not duplicated).
    assert second.to_dict() == first.to_dict()
    assert rebuilt_rows(cluster, dbname) == after_first


def test_rebuild_updates_a_surviving_catalog_row_of_the_same_run(cluster, manifests, bucket):
    dbname = fresh_catalog(cluster, "catalog_rebuild")
    pg = pgtools.connect(cluster.conn(dbname))
    try:
        stale = dict(zip(COLUMNS, expected_rows(bucket)[0], strict=True))
        stale.update(status="FAILED", error_message="record: catalog was down", failed_step="record",
                     verified=False, verified_at=None)
        backup_logs.record(pg, stale)
        rebuild.rebuild_catalog(manifests, bucket, PREFIX, pg)
    finally:
        pg.close()
    assert [r[1:] for r in rebuilt_rows(cluster, dbname)] == expected_rows(bucket)


class HeadDenied:
    """The moto client, except that HEAD of one key answers 403 (a policy, a lost connection): not a 404."""

    def __init__(self, client, deny: str):
        self._client, self._deny = client, deny

    def __getattr__(self, name):
        return getattr(self._client, name)

    def head_object(self, *, Bucket, Key, **kw):  # noqa: N803 - boto3's parameter names
        if Key == self._deny:
            from botocore.exceptions import ClientError

            raise ClientError({"Error": {"Code": "403", "Message": "Forbidden"}}, "HeadObject")
        return self._client.head_object(Bucket=Bucket, Key=Key, **kw)


def test_a_surviving_success_row_whose_dump_is_gone_becomes_failed(cluster, manifests, bucket):
    """The catalog said SUCCESS for two backups; one dump was deleted since, the other cannot be checked."""
    dbname = fresh_catalog(cluster, "catalog_rebuild")
    pg = pgtools.connect(cluster.conn(dbname))
    expected = {r[4]: r for r in expected_rows(bucket)}
    good_row = dict(zip(COLUMNS, expected[GOOD], strict=True))
    missing_was = {**dict(zip(COLUMNS, expected[MISSING], strict=True)), "status": "SUCCESS", "error_message": None,
                   "failed_step": None, "s3_uploaded": True, "verified": True,
                   "verified_at": dt.datetime(2026, 11, 25, 17, 3, 10, tzinfo=UTC)}
    try:
        backup_logs.record(pg, {**good_row, "duration_seconds": 99.0})  # what pg_backup wrote, slightly different
        backup_logs.record(pg, missing_was)
        result = rebuild.rebuild_catalog(HeadDenied(manifests, f"{PREFIX}/daily/{GOOD}"), bucket, PREFIX, pg)
    finally:
        pg.close()
    assert {"key": f"{PREFIX}/daily/{GOOD}.json",
            "reason": f"cannot check its dump s3://{bucket}/{PREFIX}/daily/{GOOD}: 403: Forbidden"} in result.skipped
    assert result.success == 0 and result.dump_problems == expected_dump_problems(bucket)
    by_file = {r[5]: r[1:] for r in rebuilt_rows(cluster, dbname)}
    # The row that could not be checked is left as it was; the one whose dump is gone is FAILED now.
    assert by_file[GOOD] == (*expected[GOOD][:7], 99.0, *expected[GOOD][8:])
    assert by_file[MISSING] == expected[MISSING]


def test_duplicate_run_identity_is_skipped_not_guessed(cluster, s3, bucket):
    client = s3.client()
    a = doc("glimpse_daily_20261124_020000.dump", "daily", "2026-11-23T17:00:01Z",
            verification={"verified": True, "checked_at": "2026-11-23T17:03:10Z"}, run_id="manual__x")
    b = doc("glimpse_daily_20261125_020000.dump", "daily", "2026-11-24T17:00:01Z",
            verification={"verified": True, "checked_at": "2026-11-24T17:03:10Z"}, run_id="manual__x")
    for d in (a, b):
        client.put_object(Bucket=bucket, Key=d["s3"]["key"] + ".json", Body=manifest.dumps(d).encode())
    dbname = fresh_catalog(cluster, "catalog_rebuild")
    pg = pgtools.connect(cluster.conn(dbname))
    try:
        result = rebuild.rebuild_catalog(client, bucket, PREFIX, pg)
    finally:
        pg.close()
    assert result.recorded == 0 and [s["key"] for s in result.skipped] == [a["s3"]["key"] + ".json",
                                                                          b["s3"]["key"] + ".json"]
    assert result.skipped[0]["reason"] == (f"same dag_id/run_id/target (pg_backup, manual__x, glimpse) as "
                                           f"{b['s3']['key']}.json")


def test_no_manifests_is_an_error_and_writes_nothing(cluster, s3, bucket):
    s3.client().put_object(Bucket=bucket, Key="elsewhere/daily/x.json", Body=b"{}")
    dbname = fresh_catalog(cluster, "catalog_rebuild")
    pg = pgtools.connect(cluster.conn(dbname))
    try:
        with pytest.raises(NoManifestsFound, match=rf"no manifests found under s3://{bucket}/database/"
                                                   r"\{daily,weekly,monthly\}/"):
            rebuild.rebuild_catalog(s3.client(), bucket, PREFIX, pg)
        assert pg.execute("SELECT to_regclass('public.backup_logs')").fetchone()[0] is None
    finally:
        pg.close()


def test_command_line(cluster, s3, manifests, bucket):
    dbname = fresh_catalog(cluster, "catalog_rebuild")
    env = {**os.environ, "PYTHONPATH": str(REPO / "plugins"), "AWS_ACCESS_KEY_ID": s3.access_key,
           "AWS_SECRET_ACCESS_KEY": s3.secret_key, "AWS_DEFAULT_REGION": s3.region,
           "CATALOG_DSN": f"host=127.0.0.1 port={cluster.port} user=postgres password={cluster.password} "
                          f"dbname={dbname}"}
    out = subprocess.run([sys.executable, "-m", "pg_dataops.catalog_rebuild", "--bucket", bucket, "--prefix", PREFIX,
                          "--endpoint-url", s3.endpoint, "--dsn-env", "CATALOG_DSN"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["skipped"] == EXPECTED_SKIPPED
    assert [r[1:] for r in rebuilt_rows(cluster, dbname)] == expected_rows(bucket)
