"""pg_pitr_drill end to end with `airflow dags test`: a real PostgreSQL 15 whose WAL barman-cloud-wal-archive ships
to moto, an age-encrypted base backup by take_base_backup, rows written after it and archived, the catalog in
PostgreSQL, Slack and PagerDuty recorded.

Green: the newest base backup is restored from S3 (SHA-256, age -d, zstd, tar), checked by pg_verifybackup
against its backup_manifest before the server starts, the archived WAL replayed to the end of the archive (the
rows written after the backup are there, counted exactly), the scratch copy removed; the catalog has one
pitr_recoveries row of kind drill with the phase times and their total next to the RTO objective, and the
pg_verifybackup result; Slack got the report; nothing paged.
"""

from __future__ import annotations

import datetime as dt
import json
import tempfile
import uuid
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
from pg_dataops.common import wal
from pg_dataops.pitr.basebackup import take_base_backup

from tests.support import age_keys
from tests.support.pg import table_digests
from tests.support.pitr import TARGET, archiving_cluster, connect, pitr_config, pitr_env, switch_and_wait
from tests.support.pitr_recover import write_rows

from .conftest import json_posts

pytestmark = pytest.mark.dagrun

STEPS = ("plan", "restore_base", "verify_backup", "recover", "check", "teardown", "record_drill")


@pytest.fixture(scope="module")
def drill_env(s3, tmp_path_factory):
    """A bucket, an archiving cluster, an encrypted base backup, then rows written and archived after it."""
    bucket = f"dagdrill-{uuid.uuid4().hex[:10]}"
    s3.client().create_bucket(Bucket=bucket)
    root = tmp_path_factory.mktemp("pitr-drill")
    pair = age_keys.keypair(root, "drill")
    c = archiving_cluster(s3, bucket, archive_timeout=60, users=100)
    try:
        cfg = pitr_config(bucket, PGBACKUP_MULTIPART_CHUNK_MB="5")
        doc = take_base_backup(cfg, TARGET, c.conn("glimpse"), s3.client(), recipients=(pair.recipient,),
                               spool_dir=str(root / "spool"))
        write_rows(c, "after-base")
        with connect(c, autocommit=True) as pg:
            pg.execute("DELETE FROM messages WHERE id IN (SELECT id FROM messages ORDER BY id LIMIT 7)")
        switch_and_wait(c)
        yield {"cluster": c, "bucket": bucket, "base": doc, "pair": pair, "root": root,
               "digests": table_digests(c, "glimpse"), "cfg": cfg}
    finally:
        c.stop()


def drill_rows(cluster) -> list[dict]:
    with psycopg.connect(host="127.0.0.1", port=cluster.port, user="postgres", password=cluster.password,
                         dbname="catalog", row_factory=psycopg.rows.dict_row) as pg:
        return pg.execute("SELECT * FROM pitr_recoveries WHERE kind = 'drill' ORDER BY id").fetchall()


def test_drill_run_recovers_verifies_records_reports_and_cleans_up(run_dag, drill_env, cluster, s3, receiver,
                                                                   tmp_path):
    cluster.psql("-c", "DROP TABLE IF EXISTS pitr_recoveries CASCADE", dbname="catalog")
    e = drill_env
    # Short: the scratch server's socket lives in the run folder (a Unix socket path has at most 107 bytes).
    scratch_root = Path(tempfile.mkdtemp(prefix="pd-", dir="/tmp"))
    env = pitr_env(e["bucket"], PGBACKUP_PITR_SCRATCH_ROOT=str(scratch_root))
    archive_before = [w.key for w in wal.list_archive(s3.client(), e["bucket"], wal.archive_prefix(e["cfg"], TARGET))]

    run = run_dag("pg_pitr_drill", bucket=e["bucket"], env=env,
                  conns={"glimpse_db": e["cluster"].airflow_conn("glimpse"),
                         "backup_age_identity": e["pair"].connection()})
    assert run.state == "success", run.output[-6000:]
    assert run.task_states == {**{f"drill_target.{s}[0]": "success" for s in STEPS}, "run_outcome": "skipped"}

    # The catalog: one drill row with every phase, the total next to the objective, the proof in details.
    rows = drill_rows(cluster)
    assert len(rows) == 1, rows
    row = rows[0]
    assert (row["kind"], row["status"], row["error_message"], row["target"]) == ("drill", "SUCCESS", None, TARGET)
    assert row["base_backup_id"] == e["base"]["backup_id"] and row["target_time"] is None
    assert row["dag_id"] == "pg_pitr_drill" and row["run_id"] == run.run_id
    details = row["details"]
    phases = [row["restore_seconds"], row["verify_seconds"], row["replay_seconds"], row["check_seconds"]]
    assert all(p is not None and p > 0 for p in phases), phases
    assert row["copy_seconds"] is None and row["recovered_database"] is None
    assert abs(row["total_seconds"] - sum(phases)) <= Decimal("0.002")
    assert row["rto_objective_seconds"] == Decimal("14400.000")
    # pg_verifybackup checked every file of the backup's own manifest.
    assert details["pg_verifybackup"]["verified"] is True
    assert details["pg_verifybackup"]["message"] == "backup successfully verified"
    assert details["pg_verifybackup"]["files"] > 900
    assert details["encrypted"] is True
    # Replay reached the end of the archive: the rows written after the base backup are all there.
    assert details["counts"] == {t: n for t, (n, _) in e["digests"].items()}
    assert details["segments_restored"] >= 2
    assert details["last_restored_segment"] == details["newest_segment"]
    assert row["reached_time"] > dt.datetime.fromisoformat(e["base"]["stop_time"])

    # Slack: the drill report (no failure alert, no page).
    posts = json_posts(receiver, "/slack")
    assert len(posts) == 1, posts
    text = json.dumps(posts[0])
    assert f"PITR drill of glimpse: base backup {e['base']['backup_id']}" in text and "age-encrypted" in text
    assert "replayed to the end of the archive (newest segment " + details["newest_segment"] in text
    assert f"pg_verifybackup: {details['pg_verifybackup']['files']:,} files and the backup's WAL match its " \
           "backup_manifest" in text
    assert f"rows in glimpse (users {e['digests']['public.users'][0]:,}" in text
    assert "restore " in text and " + verify " in text and " + replay " in text and " + checks " in text
    assert "is within the objective 4 h" in text
    assert receiver.posts("/pagerduty") == []

    # Teardown: the scratch copy is gone; the promoted copy archived nothing into production's archive.
    assert list(scratch_root.iterdir()) == []
    scratch_root.rmdir()
    archive_after = [w.key for w in wal.list_archive(s3.client(), e["bucket"], wal.archive_prefix(e["cfg"], TARGET))]
    assert not [k for k in archive_after if k not in archive_before and "/00000002" in k]
    assert e["pair"].identity not in run.output
