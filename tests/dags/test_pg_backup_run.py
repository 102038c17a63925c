"""pg_backup end to end: real pg_dump, moto S3 over HTTP, catalog in PostgreSQL, Slack receiver.

The uploaded object is restored into a fresh database and every table is compared to the source
row by row (digest of all rows), which is what makes a backup a backup.
"""

from __future__ import annotations

import hashlib
import json
import subprocess

import psycopg
import pytest
from pg_dataops.backup import manifest as manifest_mod

from tests.support.pg import PG_BIN, table_digests

from .conftest import catalog_rows, files_under, json_posts

pytestmark = pytest.mark.dagrun




def test_backup_uploads_proves_records_and_restores_row_for_row(run_pg_backup, cluster, s3, bucket, receiver,
                                                                 tmp_path):
    run = run_pg_backup(bucket=bucket, logical_date="2026-11-25T02:00:00+09:00")  # a Wednesday: daily
    assert run.state == "success", run.output[-4000:]
    # Every step ran and succeeded; run_outcome (which fails the run after any failure) was skipped.
    steps = ("dump", "checksum", "upload", "create_verify_db", "verify", "drop_verify_db", "manifest", "record",
             "notify")
    assert run.task_states == {**{f"back_up_target.{s}[0]": "success" for s in steps}, "retention": "success",
                               "run_outcome": "skipped"}
    base = "glimpse_daily_20261125_020000"

    # Local tree as the runbook lays it out, with the sha256sum -c sidecar.
    assert files_under(run.local_root) == [
        f"daily/2026/11/{base}.dump", f"daily/2026/11/{base}.dump.json", f"daily/2026/11/{base}.dump.sha256"
    ]
    local_dir = run.local_root / "daily/2026/11"
    check = subprocess.run(["sha256sum", "-c", f"{base}.dump.sha256"], cwd=local_dir, capture_output=True, text=True)
    assert check.returncode == 0 and check.stdout.strip() == f"{base}.dump: OK"

    # S3: exactly the three objects, encrypted, infrequent-access.
    c = s3.client()
    keys = sorted(o["Key"] for o in c.list_objects_v2(Bucket=bucket)["Contents"])
    assert keys == [f"database/daily/{base}.dump", f"database/daily/{base}.dump.json",
                    f"database/daily/{base}.dump.sha256"]
    head = c.head_object(Bucket=bucket, Key=f"database/daily/{base}.dump")
    assert head["StorageClass"] == "STANDARD_IA" and head["ServerSideEncryption"] == "AES256"

    # The manifest in S3 is self-describing and agrees with the object.
    doc = manifest_mod.loads(c.get_object(Bucket=bucket, Key=f"database/daily/{base}.dump.json")["Body"].read())
    body = c.get_object(Bucket=bucket, Key=f"database/daily/{base}.dump")["Body"].read()
    assert doc["type"] == "daily" and doc["file"] == f"{base}.dump"
    assert doc["size"] == len(body) and doc["checksum"] == hashlib.sha256(body).hexdigest()
    assert doc["format"] == "custom" and doc["compression"] == {"method": "gzip", "level": 1}
    assert doc["db_version"].startswith("PostgreSQL 15") and doc["pg_dump_version"].startswith("pg_dump (PostgreSQL) 15")
    assert doc["database"] == "glimpse" and doc["target"] == "glimpse"
    assert doc["timestamp"].endswith("Z") and doc["verified"] is True
    v = doc["verification"]
    assert v["tables_found"] == v["tables_expected"] == len(doc["table_counts"]) and v["mismatches"] == []
    assert v["rows_checked"] == sum(doc["table_counts"].values()) and v["users"] == doc["table_counts"]["public.users"]
    assert v["amcheck"].endswith("btree indexes") and v["database"].startswith("pgdataops_verify_glimpse_")
    assert v["database"] not in {r[0] for r in psycopg.connect(
        host="127.0.0.1", port=cluster.port, user="postgres", password=cluster.password, dbname="postgres",
        autocommit=True).execute("SELECT datname FROM pg_database")}  # the teardown dropped it
    sidecar = c.get_object(Bucket=bucket, Key=f"database/daily/{base}.dump.sha256")["Body"].read().decode()
    assert sidecar == f"{doc['checksum']}  {base}.dump\n"
    assert "password" not in json.dumps(doc).lower() and cluster.password not in json.dumps(doc)

    # Restore the uploaded object (not the local copy) into a fresh database; compare every table.
    dump_path = tmp_path / "from_s3.dump"
    dump_path.write_bytes(body)
    cluster.createdb("restored_e2e")
    subprocess.run([f"{PG_BIN}/pg_restore", "--exit-on-error", "--no-owner", "-h", "127.0.0.1", "-p",
                    str(cluster.port), "-U", "postgres", "-d", "restored_e2e", str(dump_path)],
                   env={"PGPASSWORD": cluster.password, "PATH": "/usr/bin:/bin"}, check=True, capture_output=True)
    source = table_digests(cluster, "glimpse")
    restored = table_digests(cluster, "restored_e2e")
    assert restored == source
    assert {k: v[0] for k, v in source.items()} == doc["table_counts"]
    assert source["public.messages"][0] > 1000

    # Catalog row and the Slack success message.
    rows = catalog_rows(cluster)
    assert [(r["status"], r["backup_type"], r["s3_key"], r["checksum_sha256"], r["s3_uploaded"], r["verified"])
            for r in rows] == [("SUCCESS", "daily", f"database/daily/{base}.dump", doc["checksum"], True, True)]
    assert rows[0]["verified_at"] is not None
    slack = json_posts(receiver, "/slack")
    assert len(slack) == 1 and slack[0]["text"].startswith(":white_check_mark: Database backup SUCCESS: glimpse (daily)")
    assert f"s3://{bucket}/database/daily/{base}.dump" in slack[0]["text"]
    assert "verified: restored in" in slack[0]["text"] and "rows match the dump snapshot" in slack[0]["text"]
    assert receiver.posts("/pagerduty") == []


@pytest.mark.parametrize(
    ("logical_date", "conf", "tier", "stamp"),
    [
        ("2026-11-29T02:00:00+09:00", None, "weekly", "20261129_020000"),  # Sunday
        ("2026-12-01T02:00:00+09:00", None, "monthly", "20261201_020000"),  # 1st (a Tuesday)
        ("2026-11-25T02:00:00+09:00", {"tier": "monthly"}, "monthly", "20261125_020000"),  # manual override
    ],
)
def test_tier_decides_the_layout(run_pg_backup, s3, bucket, logical_date, conf, tier, stamp):
    run = run_pg_backup(bucket=bucket, logical_date=logical_date, conf=conf)
    assert run.state == "success", run.output[-3000:]
    assert run.task_states["run_outcome"] == "skipped"
    keys = sorted(o["Key"] for o in s3.client().list_objects_v2(Bucket=bucket)["Contents"])
    assert keys[0] == f"database/{tier}/glimpse_{tier}_{stamp}.dump"
    assert files_under(run.local_root)[0].startswith(f"{tier}/{stamp[:4]}/{stamp[4:6]}/")


def test_fleet_backs_up_every_target_as_mapped_tasks(run_pg_backup, cluster, s3, bucket, tmp_path):
    cluster.createdb("fleet_second")
    cluster.psql("-c", "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 42);",
                 dbname="fleet_second")
    cfg = tmp_path / "fleet.yaml"
    from pg_dataops.common.config import DEFAULT_CONFIG_PATH

    text = DEFAULT_CONFIG_PATH.read_text().replace(
        "targets:\n  - name: glimpse\n    conn_id: glimpse_db\n",
        "targets:\n  - name: glimpse\n    conn_id: glimpse_db\n  - name: second\n    conn_id: second_db\n",
    )
    cfg.write_text(text)
    # The second database has no public.users, the default verify_required_tables: none required here.
    run = run_pg_backup(bucket=bucket, env={"PGBACKUP_CONFIG": str(cfg), "PGBACKUP_VERIFY_REQUIRED_TABLES": ""},
                        conns={"second_db": cluster.airflow_conn("fleet_second")})
    assert run.state == "success", run.output[-3000:]
    keys = sorted(o["Key"] for o in s3.client().list_objects_v2(Bucket=bucket)["Contents"] if o["Key"].endswith(".json"))
    assert keys == ["database/daily/glimpse_daily_20261125_020000.dump.json",
                    "database/daily/second_daily_20261125_020000.dump.json"]
    doc = manifest_mod.loads(s3.client().get_object(Bucket=bucket, Key=keys[1])["Body"].read())
    assert doc["table_counts"] == {"public.t": 42} and doc["database"] == "fleet_second"
    # Really two mapped task instances of each step, both successful.
    states = run.task_states
    assert (states["back_up_target.dump[0]"], states["back_up_target.dump[1]"]) == ("success", "success")
    assert (states["back_up_target.record[0]"], states["back_up_target.record[1]"]) == ("success", "success")
    assert "back_up_target.dump[2]" not in states and states["run_outcome"] == "skipped"
