"""Failure alerts: their texts and facts, PagerDuty endpoints, redaction, run-level failures."""

from types import SimpleNamespace

from pg_dataops.common import alerts
from pg_dataops.common.errors import redact


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

