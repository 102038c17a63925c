import json
from types import SimpleNamespace

import pytest
from pg_dataops.backup import manifest
from pg_dataops.common import alerts
from pg_dataops.common.errors import ManifestError, redact


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


def test_alert_texts_carry_the_facts():
    f = alerts.FailureFacts(dag_id="pg_backup", task_id="back_up_target.dump", run_id="manual__1",
                            error="DatabaseUnreachable: cannot reach PostgreSQL at h:5432", log_url="http://x/log",
                            target="glimpse", try_number=2)
    text = alerts.failure_text(f)
    assert "`pg_backup`" in text and "`back_up_target.dump`" in text and "`glimpse`" in text
    assert "cannot reach PostgreSQL at h:5432" in text and "log: http://x/log" in text and "try: 2" in text
    assert alerts.failure_summary(f) == (
        "Database backup FAILED: pg_backup.back_up_target.dump[glimpse] in run manual__1: "
        "DatabaseUnreachable: cannot reach PostgreSQL at h:5432"
    )
    long = alerts.FailureFacts(dag_id="d", task_id="t", run_id="r", error="x" * 5000)
    assert len(alerts.failure_summary(long)) == 1024
    assert alerts.dedup_key("pg_backup", "r1") == "pg_backup/r1"


def test_pagerduty_base_url_from_connection_host():
    from pg_dataops.airflow.notifiers import events_base_url

    assert events_base_url(SimpleNamespace(host=None, schema=None, port=None)) is None
    assert events_base_url(SimpleNamespace(host="https://events.eu.pagerduty.com/", schema=None, port=None)) == (
        "https://events.eu.pagerduty.com"
    )
    assert events_base_url(SimpleNamespace(host="127.0.0.1", schema="http", port=9000)) == "http://127.0.0.1:9000"
    assert events_base_url(SimpleNamespace(host="events.eu.pagerduty.com", schema=None, port=None)) == (
        "https://events.eu.pagerduty.com"
    )


def test_redact():
    assert redact("password=hunter2 failed", "hunter2", None) == "password=******** failed"


def test_a_task_timeout_alert_names_the_limit():
    """The task runner's AirflowTaskTimeout says only "Timeout, PID: n": the alert names the limit instead;
    our own steps' timeout texts (they say what they waited for) are kept as they are."""
    import datetime as dt

    from airflow.sdk.exceptions import AirflowTaskTimeout
    from pg_dataops.airflow.notifiers import facts_from_context

    ti = SimpleNamespace(dag_id="pg_backup_monitor", task_id="check_and_alert", run_id="scheduled__1",
                         log_url="http://x/log", map_index=-1, try_number=1)
    task = SimpleNamespace(execution_timeout=dt.timedelta(minutes=10))
    facts = facts_from_context({"ti": ti, "task": task, "exception": AirflowTaskTimeout("Timeout, PID: 4242")})
    assert facts.error == ("AirflowTaskTimeout: the task ran longer than its execution_timeout (0:10:00; "
                           "task_timeout_minutes)")
    own = AirflowTaskTimeout("timed out after 240 min waiting for pg_dump of database 'glimpse' (target glimpse)")
    facts = facts_from_context({"ti": ti, "task": task, "exception": own})
    assert facts.error == f"AirflowTaskTimeout: {own}"


def test_run_failure_facts_only_for_runs_no_task_alerted():
    from pg_dataops.airflow.notifiers import run_failure_facts

    dag = SimpleNamespace(dag_id="pg_restore_drill", dagrun_timeout=None)
    assert run_failure_facts({"dag": dag, "run_id": "r", "reason": "task_failure"}) is None
    facts = run_failure_facts({"dag": dag, "run_id": "r", "reason": "all_tasks_deadlocked"})
    assert (facts.dag_id, facts.task_id, facts.run_id) == ("pg_restore_drill", "(dag run)", "r")
    assert facts.error == "the run failed without a failed task (reason: all_tasks_deadlocked)"


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
