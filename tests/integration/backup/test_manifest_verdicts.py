"""A later verification of the same dump updates its manifest's verdict, locally and in moto S3; nothing else
of a manifest may change (issue 7: the one place "never overwrite" bends)."""

import copy
import hashlib
import json

import pytest
from pg_dataops.backup import manifest, steps
from pg_dataops.common.config import load_config
from pg_dataops.common.errors import ObjectExists

SHA = "ab" * 32
KEY = "database/daily/glimpse_daily_20261125_020000.dump"


@pytest.fixture
def setup(s3, bucket, tmp_path):
    cfg = load_config(environ={"PGBACKUP_BUCKET": bucket, "PGBACKUP_LOCAL_ROOT": str(tmp_path)})
    path = tmp_path / "glimpse_daily_20261125_020000.dump"
    path.write_bytes(b"x" * 10)
    dump = {"snapshot_time": "2026-11-24T17:00:00Z", "file": path.name, "size": 10, "sha256": SHA,
            "db_version": "PostgreSQL 15.19", "database": "glimpse", "server_version_num": 150019,
            "pg_dump_version": "pg_dump (PostgreSQL) 15.19", "format": "custom", "compression": 1, "jobs": 1,
            "started_at": "2026-11-24T17:00:00Z", "duration_seconds": 1.0, "table_counts": {"public.users": 3},
            "part_size": 5 * 1024 * 1024, "target": "glimpse", "tier": "daily", "path": str(path)}
    upload = {"key": KEY, "storage_class": "STANDARD_IA", "server_side_encryption": "AES256", "etag": '"e"',
              "checksum_verified": "s3-sha256-checksum"}
    client = s3.client()
    client.put_object(Bucket=bucket, Key=KEY + ".sha256", Body=f"{SHA}  {path.name}\n".encode())
    return cfg, client, dump, upload, path


def read_both(client, bucket, path):
    s3_doc = json.loads(client.get_object(Bucket=bucket, Key=KEY + ".json")["Body"].read())
    local_doc = json.loads((path.parent / (path.name + ".json")).read_text())
    return s3_doc, local_doc


FAILED = {"verified": False, "error": "pg_restore failed (exit 1): the connection to the restore server was lost; "
          "not a fault of the backup, retrying: ...", "transient": True, "checked_at": "2026-11-24T17:01:00Z",
          "try_number": 1}
PASSED = {"verified": True, "checked_at": "2026-11-24T17:07:00Z", "tables_found": 1, "mismatches": [],
          "checks": ["required table public.users: 3 rows restored vs 3 in the dump's snapshot"]}


def test_later_success_updates_the_verdict_and_keeps_the_failed_one(setup, bucket):
    cfg, client, dump, upload, path = setup
    first = steps.manifest_step(client, cfg, dump, upload, FAILED, "pg_backup", "run1")
    assert first["verified"] is False and first["verifications"] == [FAILED]
    etag_before = client.head_object(Bucket=bucket, Key=KEY + ".json")["ETag"]

    doc = steps.manifest_step(client, cfg, dump, upload, PASSED, "pg_backup", "run1")
    s3_doc, local_doc = read_both(client, bucket, path)
    assert s3_doc == local_doc == doc
    assert doc["verified"] is True
    assert doc["verification"] == PASSED
    assert doc["verifications"] == [FAILED, PASSED]
    assert (doc["file"], doc["checksum"], doc["size"]) == (path.name, SHA, 10)
    head = client.head_object(Bucket=bucket, Key=KEY + ".json")
    assert head["ETag"] != etag_before
    assert head["Metadata"]["sha256"] == hashlib.sha256(manifest.dumps(doc).encode()).hexdigest()
    # one manifest, and the .sha256 beside the dump untouched
    keys = sorted(o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"])
    assert keys == [KEY + ".json", KEY + ".sha256"]

    # The same verdict again (a retried manifest task) changes nothing.
    again = steps.manifest_step(client, cfg, dump, upload, PASSED, "pg_backup", "run1")
    assert again == doc
    assert client.head_object(Bucket=bucket, Key=KEY + ".json")["ETag"] == head["ETag"]

    # A later failure is kept in the history but does not unprove a file that restored and checked out.
    later = dict(FAILED, checked_at="2026-11-25T00:00:00Z", try_number=1)
    doc3 = steps.manifest_step(client, cfg, dump, upload, later, "pg_backup", "run1")
    assert doc3["verified"] is True and doc3["verification"] == PASSED
    assert doc3["verifications"] == [FAILED, PASSED, later]


@pytest.mark.parametrize("field, value", [("sha256", "cd" * 32), ("size", 11), ("table_counts", {"public.users": 4})])
def test_anything_but_the_verdict_differing_is_refused(setup, bucket, field, value):
    cfg, client, dump, upload, path = setup
    steps.manifest_step(client, cfg, dump, upload, FAILED, "pg_backup", "run1")
    before = read_both(client, bucket, path)
    other = copy.deepcopy(dump)
    other[field] = value
    with pytest.raises(ObjectExists, match=r"already exists and describes another dump or upload .* differ\); "
                                           r"refusing to overwrite it"):
        steps.manifest_step(client, cfg, other, upload, PASSED, "pg_backup", "run1")
    assert read_both(client, bucket, path) == before


def test_other_run_is_refused_too(setup, bucket):
    cfg, client, dump, upload, path = setup
    steps.manifest_step(client, cfg, dump, upload, FAILED, "pg_backup", "run1")
    with pytest.raises(ObjectExists, match=r"\(airflow differ\)"):
        steps.manifest_step(client, cfg, dump, upload, PASSED, "pg_backup", "run2")


def test_s3_copy_missing_is_completed_from_the_local_one(setup, bucket):
    # A manifest task that wrote the local file and then lost S3: its retry merges and uploads.
    cfg, client, dump, upload, path = setup
    steps.manifest_step(client, cfg, dump, upload, FAILED, "pg_backup", "run1")
    client.delete_object(Bucket=bucket, Key=KEY + ".json")
    doc = steps.manifest_step(client, cfg, dump, upload, PASSED, "pg_backup", "run1")
    s3_doc, local_doc = read_both(client, bucket, path)
    assert s3_doc == local_doc == doc and doc["verifications"] == [FAILED, PASSED]


def test_manifest_from_before_the_history_list(setup, bucket):
    cfg, client, dump, upload, path = setup
    old = manifest.build_manifest(target="glimpse", tier="daily", dump=dump, upload=upload, bucket=bucket,
                                  prefix=cfg.prefix, dag_id="pg_backup", run_id="run1", verification=FAILED)
    del old["verifications"]
    merged = manifest.with_verdicts(old, manifest.build_manifest(
        target="glimpse", tier="daily", dump=dump, upload=upload, bucket=bucket, prefix=cfg.prefix,
        dag_id="pg_backup", run_id="run1", verification=PASSED))
    assert merged["verified"] is True and merged["verifications"] == [FAILED, PASSED]
