"""The manifest (round trip, bad ones named) and the record step's decisions (failed step, catalog outage)."""

import json

import pytest
from pg_dataops.backup import manifest
from pg_dataops.common.errors import ManifestError


def sample_manifest():
    dump = {"snapshot_time": "2026-11-24T17:00:01Z", "file": "g.dump", "size": 10, "sha256": "a" * 64,
            "db_version": "PostgreSQL 15.19 on x86_64\n compiled", "database": "glimpse", "server_version_num": 150019,
            "pg_dump_version": "pg_dump (PostgreSQL) 15.19", "format": "custom", "compression": 1, "jobs": 1,
            "started_at": "2026-11-24T17:00:00Z", "duration_seconds": 1.0, "table_counts": {"public.users": 3},
            "part_size": 5242880}
    upload = {"key": "database/daily/g.dump", "storage_class": "STANDARD_IA", "server_side_encryption": "AES256",
              "etag": "e", "checksum_verified": "s3-sha256-checksum"}
    return manifest.build_manifest(target="glimpse", tier="daily", dump=dump, upload=upload, bucket="b",
                                   prefix="database", dag_id="pg_backup", run_id="r")



def test_manifest_round_trip_has_runbook_fields():
    doc = sample_manifest()
    back = manifest.loads(manifest.dumps(doc))
    assert back == doc
    for field in ("timestamp", "type", "file", "size", "checksum", "db_version"):
        assert field in back
    assert back["db_version"] == "PostgreSQL 15.19 on x86_64 compiled"  # one line
    assert back["s3"]["sha256_key"] == "database/daily/g.dump.sha256"



@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("{not json", "not valid JSON"),
        ("[]", "top level is not an object"),
        (json.dumps({"type": "daily"}), "missing field"),
        (json.dumps({**{k: "x" for k in manifest.REQUIRED}, "size": "12M"}), "size must be a byte count"),
        (json.dumps({**{k: "x" for k in manifest.REQUIRED}, "size": 1}), "checksum is not a SHA-256"),
    ],
)
def test_bad_manifests_are_named(text, match):
    with pytest.raises(ManifestError, match=match):
        manifest.loads(text, source="s3://b/k.json")



ORDER = ["dump", "checksum", "upload", "verify", "manifest"]



def test_the_failed_step_is_the_first_with_an_error_else_the_first_without_a_result():
    from pg_dataops.backup.steps import failed_step

    done = {name: {"ok": True} for name in ORDER}
    no_errors = dict.fromkeys(ORDER, "")
    assert failed_step(done, no_errors, ORDER) == (None, None)
    # The first error in run order wins, even when a later step has one too.
    errors = {**no_errors, "upload": "upload: boom", "manifest": "manifest: later"}
    assert failed_step({**done, "upload": None}, errors, ORDER) == ("upload", "upload: boom")
    # No error pushed (killed, never ran) and no manifest: the first step without a result.
    killed = {**done, "verify": None, "manifest": None}
    assert failed_step(killed, {}, ORDER) == ("verify", "step verify did not complete (see its log)")
    # A missing middle result does not count while the manifest was written.
    assert failed_step({**done, "checksum": None}, no_errors, ORDER) == (None, None)



def test_a_failed_row_the_catalog_cannot_take_is_logged_a_success_row_raises(caplog):
    from pg_dataops.backup.steps import record_outcome
    from pg_dataops.common.errors import DatabaseUnreachable

    def catalog_down():
        raise DatabaseUnreachable("catalog: connection refused")

    failed = {"status": "FAILED", "error_message": "dump: boom"}
    assert record_outcome(catalog_down, failed) == {**failed, "recorded": False}
    assert "could not record the failed backup in the catalog: catalog: connection refused" in caplog.text
    with pytest.raises(DatabaseUnreachable):
        record_outcome(catalog_down, {"status": "SUCCESS", "error_message": None})

