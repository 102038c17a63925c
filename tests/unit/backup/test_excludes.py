"""Per-target exclusions (exclude_tables / exclude_table_data): pg_dump's argv, the manifest's keys (old
manifests still load and still take a verdict), and what verification expects of them."""

import json

import pytest
from pg_dataops.backup import dump, manifest, verify
from pg_dataops.common import pg as pgtools
from pg_dataops.common.errors import ManifestError, ObjectExists


def plan(**kw):
    conn = pgtools.PgConn(host="h", port=5432, user="u", password="secret", dbname="glimpse")
    return dump._DumpPlan(conn, "/tmp/x", "/tmp/x/g.dump", "custom", 1, 2, 1024, "/usr/lib/postgresql", None, None,
                          None, **kw)


def test_exact_quoted_patterns():
    assert dump.table_pattern("public.audit_logs") == '"public"."audit_logs"'
    # wildcards and upper case stay literal inside the quotes; a quote in a name is doubled
    assert dump.table_pattern("App.Log*") == '"App"."Log*"'
    assert dump.table_pattern('public.we"ird') == '"public"."we""ird"'


def test_argv_has_one_element_per_exclusion_before_the_database():
    argv = dump._pg_dump_argv(plan(exclude_tables=("public.audit_logs", "ops.Big"),
                                   exclude_table_data=("public.events",)), "/bin/pg_dump", "snap-1")
    assert '--exclude-table="public"."audit_logs"' in argv
    assert '--exclude-table="ops"."Big"' in argv
    assert '--exclude-table-data="public"."events"' in argv
    assert argv.index('--exclude-table-data="public"."events"') < argv.index("--dbname")
    assert argv[-2:] == ["--dbname", "glimpse"]


def test_no_exclusions_no_flags():
    argv = dump._pg_dump_argv(plan(), "/bin/pg_dump", "snap-1")
    assert not [a for a in argv if a.startswith("--exclude")]


def sample_dump(**extra):
    return {"snapshot_time": "2026-11-24T17:00:01Z", "file": "g.dump", "size": 10, "sha256": "a" * 64,
            "db_version": "PostgreSQL 15.19", "database": "glimpse", "server_version_num": 150019,
            "pg_dump_version": "pg_dump (PostgreSQL) 15.19", "format": "custom", "compression": 1, "jobs": 1,
            "started_at": "2026-11-24T17:00:00Z", "duration_seconds": 1.0,
            "table_counts": {"public.users": 3, "public.audit_logs": 0}, "part_size": 5242880, **extra}


UPLOAD = {"key": "database/daily/g.dump", "storage_class": "STANDARD_IA", "server_side_encryption": "AES256",
          "etag": "e", "checksum_verified": "s3-sha256-checksum"}


def build(dump_dict, verification=None):
    return manifest.build_manifest(target="glimpse", tier="daily", dump=dump_dict, upload=UPLOAD, bucket="b",
                                   prefix="database", dag_id="pg_backup", run_id="r", verification=verification)


def test_manifest_records_the_exclusions():
    doc = build(sample_dump(exclude_tables=["public.secrets"], exclude_table_data=["public.audit_logs"]))
    back = manifest.loads(manifest.dumps(doc))
    assert back["exclude_tables"] == ["public.secrets"]
    assert back["exclude_table_data"] == ["public.audit_logs"]
    assert manifest.exclusions(back) == {"exclude_tables": ["public.secrets"],
                                         "exclude_table_data": ["public.audit_logs"]}
    assert build(sample_dump())["exclude_tables"] == []


def test_an_old_manifest_without_the_keys_loads_and_takes_a_new_verdict():
    old = build(sample_dump())
    del old["exclude_tables"], old["exclude_table_data"]
    loaded = manifest.loads(json.dumps(old))
    assert manifest.exclusions(loaded) == {"exclude_tables": [], "exclude_table_data": []}
    # a re-verification of the same dump (its new manifest has the keys, empty) is the same dump
    merged = manifest.with_verdicts(loaded, build(sample_dump(), verification={"verified": True}))
    assert merged["verified"] is True
    # but exclusions that differ describe another dump
    with pytest.raises(ObjectExists, match="exclude_table_data"):
        manifest.with_verdicts(loaded, build(sample_dump(exclude_table_data=["public.audit_logs"])))


def test_a_malformed_exclusion_is_named():
    doc = build(sample_dump())
    doc["exclude_tables"] = "public.audit_logs"
    with pytest.raises(ManifestError, match="exclude_tables must be a list"):
        manifest.loads(json.dumps(doc))


def restored(*names):
    return verify._Restored(per_schema={"public": len(names)}, tables={n: tuple(n.split(".")) for n in names},
                            sizes={}, extension_rows=[], indexes=[], seconds=0.0)


def test_verification_expects_an_excluded_table_absent():
    counts = {"public.users": 3}
    assert verify._structure_mismatches(restored("public.users"), counts, (), ("public.audit_logs",), ()) == []
    found = verify._structure_mismatches(restored("public.users", "public.audit_logs"), counts, (),
                                         ("public.audit_logs",), ())
    assert "table public.audit_logs is restored but the backup excludes it (exclude_tables)" in found
    assert not [m for m in found if "not in the manifest" in m]  # said once, with its cause
    # the same restore without the exclusion is only an unexplained extra table
    plain = verify._structure_mismatches(restored("public.users", "public.audit_logs"), counts, ())
    assert "table public.audit_logs is restored but not in the manifest" in plain


def test_verification_expects_an_excluded_data_table_present_and_counted_zero():
    counts = {"public.users": 3, "public.audit_logs": 0}
    both = restored("public.users", "public.audit_logs")
    assert verify._structure_mismatches(both, counts, (), (), ("public.audit_logs",)) == []
    missing = verify._structure_mismatches(restored("public.users"), counts, (), (), ("public.audit_logs",))
    assert any("public.audit_logs (exclude_table_data" in m and "missing" in m for m in missing)
    wrong = verify._structure_mismatches(both, {**counts, "public.audit_logs": 7}, (), (), ("public.audit_logs",))
    assert any("its data is excluded" in m and "7 rows" in m for m in wrong)


def test_restored_rows_in_an_excluded_data_table_are_a_count_mismatch():
    job = verify._Job("count", "public.audit_logs", 0, schema="public", table="audit_logs")
    _, mismatches, _ = verify._judge_outcomes([verify._Outcome(job, 0.1, value=5)], {"public.audit_logs": 0})
    assert mismatches == ["table public.audit_logs: 5 rows restored, 0 in the dump's snapshot"]
