"""Alerts: failure notifiers that send through the Slack and PagerDuty providers' notifiers.

Every DAG file attaches these as callbacks at parse time, so this module imports no provider: the
providers (and aiohttp, slack_sdk, requests under them: about half a second) are imported when an
alert is actually sent. :func:`slack_post` is the one place a Slack message leaves.

Failure alerts are attached as task-level ``on_failure_callback`` (DAG-level templated notifiers break
under ``dag.test()`` in 3.3.2, apache/airflow#64649); their texts come from ``pg_dataops.common.alerts``.
:func:`send_pagerduty` sends one event a task built itself (the monitor's trigger or resolve).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook, BaseNotifier

from pg_dataops.airflow.base import airflow_connection
from pg_dataops.common import alerts
from pg_dataops.common.errors import redact

if TYPE_CHECKING:
    from pg_dataops.common.config import Config

log = logging.getLogger(__name__)


def facts_from_context(context) -> alerts.FailureFacts:
    ti = context["ti"]
    exc = context.get("exception")
    error = redact(f"{type(exc).__name__}: {exc}") if exc is not None else "unknown error (see the task log)"
    if type(exc).__name__ == "AirflowTaskTimeout" and "timed out after" not in str(exc):
        # The task runner's own text ("Timeout, PID: n") says nothing; name the limit that was hit.
        limit = getattr(context.get("task"), "execution_timeout", None)
        error = f"AirflowTaskTimeout: the task ran longer than its execution_timeout ({limit}; task_timeout_minutes)"
    try:
        log_url = ti.log_url
    except Exception:  # the URL needs [api] base_url; an alert without it is still an alert
        log_url = None
    task = context.get("task")
    target = getattr(task, "backup_target", None)
    return alerts.FailureFacts(
        dag_id=ti.dag_id,
        task_id=ti.task_id,
        run_id=ti.run_id,
        error=error,
        log_url=log_url,
        target=target if isinstance(target, str) else None,
        map_index=getattr(ti, "map_index", -1),
        try_number=getattr(ti, "try_number", None),
    )


def run_ended_by_others(context) -> str | None:
    """The state of this task's DAG run when it is already over while the task is still failing, else None.

    A task fails inside a running run; when the run ended first, the scheduler (dagrun_timeout, alerted by
    the DAG-level ``alert_run_failure``) or a person ended it and killed the task, whose failure ("pg_dump:
    terminated by user") is a consequence, not news: paging for it would page twice."""
    ti = context.get("ti")
    try:
        state = ti.get_dagrun_state(dag_id=ti.dag_id, run_id=ti.run_id)
    except Exception:  # no Execution API here (hand-built context): alert rather than stay silent
        return None
    state = getattr(state, "value", state)  # a DagRunState
    return state if state in ("failed", "success") else None


def slack_post(conn_id: str, context, text: str, attachments: list[dict] | None = None) -> None:
    """One message to the Slack webhook of ``conn_id``; raises if it cannot be posted."""
    from airflow.providers.slack.notifications.slack_webhook import SlackWebhookNotifier

    SlackWebhookNotifier(slack_webhook_conn_id=conn_id, text=text,
                         **({"attachments": attachments} if attachments else {})).notify(context)


class BackupFailureSlackNotifier(BaseNotifier):
    """Posts the failure of any backup task to the Slack webhook connection."""

    template_fields = ()

    def __init__(self, *, slack_webhook_conn_id: str, **kwargs):
        super().__init__(**kwargs)
        self.slack_webhook_conn_id = slack_webhook_conn_id

    def notify(self, context):
        if (ended := run_ended_by_others(context)) is not None:
            log.info("no task alert: the run was already %s when this task was stopped", ended)
            return
        self.send_facts(facts_from_context(context), context)

    def send_facts(self, facts: alerts.FailureFacts, context) -> None:
        slack_post(self.slack_webhook_conn_id, context, alerts.failure_text(facts), [
            {"color": "#ff0000", "title": "Database Backup FAILED", "text": facts.error,
             "footer": "Glimpse Backup System"}
        ])


def events_base_url(conn) -> str | None:
    """PagerDuty events endpoint from the connection's host (EU accounts, tests); None: the default."""
    if not conn.host:
        return None
    host = conn.host.rstrip("/")
    if "://" not in host:
        host = f"{conn.schema or 'https'}://{host}" + (f":{conn.port}" if conn.port else "")
    return host


class BackupPagerdutyNotifier(BaseNotifier):
    """Triggers (or resolves) a PagerDuty incident, one per DAG run, for a failed backup task."""

    template_fields = ()

    def __init__(self, *, pagerduty_events_conn_id: str, severity: str = "critical", **kwargs):
        super().__init__(**kwargs)
        self.pagerduty_events_conn_id = pagerduty_events_conn_id
        self.severity = severity
        self.source = "pg_dataops"
        self.action = "trigger"
        self.summary = ""
        self.dedup_key: str | None = None
        self.custom_details: Any = None
        self.group: str | None = None
        self.component: str | None = None
        self.links: list[dict] | None = None

    def notify(self, context):
        if run_ended_by_others(context) is not None:
            return
        self.send_facts(facts_from_context(context))

    def send_facts(self, facts: alerts.FailureFacts) -> None:
        self.summary = alerts.failure_summary(facts)
        self.dedup_key = alerts.dedup_key(facts.dag_id, facts.run_id)
        self.custom_details = alerts.failure_details(facts)
        self.component = facts.target
        self.group = facts.dag_id
        self.links = [{"href": facts.log_url, "text": "Airflow task log"}] if facts.log_url else None
        self.send()

    def send(self) -> None:
        from airflow.providers.pagerduty.hooks.pagerduty_events import prepare_event_data
        from airflow.providers.pagerduty.notifications.pagerduty import PagerdutyNotifier

        fields = {"summary": self.summary, "severity": self.severity, "source": self.source, "action": self.action,
                  "dedup_key": self.dedup_key, "custom_details": self.custom_details, "group": self.group,
                  "component": self.component, "links": self.links}
        conn = BaseHook.get_connection(self.pagerduty_events_conn_id)
        base = events_base_url(conn)
        if base is None:
            PagerdutyNotifier(pagerduty_events_conn_id=self.pagerduty_events_conn_id, **fields).notify({})
            return
        import requests

        data = prepare_event_data(**fields, action_key_name="event_action")
        data["routing_key"] = conn.password
        # The pagerduty client only accepts https base URLs; this is the same Events API v2 request.
        resp = requests.post(f"{base}/v2/enqueue", json=data, timeout=15)
        if resp.status_code >= 300:
            raise RuntimeError(
                f"PagerDuty events API at {base} answered {resp.status_code}: {redact(resp.text[:300], conn.password)}"
            )
        log.info("PagerDuty event %s sent (dedup_key %s)", self.action, self.dedup_key)


def send_pagerduty(cfg: Config, event: Mapping[str, Any]) -> None:
    """One Events API v2 event to ``pagerduty_conn_id``; raises if it cannot be sent.

    ``event``: ``action``, ``summary``, ``severity``, ``source``, ``dedup_key``, ``custom_details``,
    ``component``, ``group`` (e.g. :meth:`pg_dataops.observe.alerts.AlertStep.pagerduty_event`).
    """
    airflow_connection(cfg.pagerduty_conn_id, "PagerDuty alerts")  # a clear ConnectionMissing; the key is redacted
    notifier = BackupPagerdutyNotifier(pagerduty_events_conn_id=cfg.pagerduty_conn_id, severity=event["severity"])
    notifier.source = event["source"]
    notifier.action = event["action"]
    notifier.summary = event["summary"]
    notifier.dedup_key = event["dedup_key"]
    notifier.custom_details = dict(event["custom_details"])
    notifier.component = event["component"]
    notifier.group = event["group"]
    notifier.send()


def failure_callbacks(slack_conn_id: str, pagerduty_conn_id: str) -> list:
    return [
        BackupFailureSlackNotifier(slack_webhook_conn_id=slack_conn_id),
        BackupPagerdutyNotifier(pagerduty_events_conn_id=pagerduty_conn_id),
    ]


def run_failure_facts(context) -> alerts.FailureFacts | None:
    """Facts for a run that failed without a failed task to alert it, from a DAG-level failure context;
    None when a task failed (``reason`` "task_failure"): that task alerted already."""
    reason = context.get("reason") or "unknown"
    if reason == "task_failure":
        return None
    dag = context.get("dag")
    dag_id = getattr(dag, "dag_id", None) or "unknown"
    ti = context.get("ti")
    waiting = getattr(ti, "task_id", None)  # the scheduler passes the unfinished task started last
    if reason == "timed_out":
        error = f"the run exceeded its dagrun_timeout ({getattr(dag, 'dagrun_timeout', None)}) and was stopped"
    else:
        error = f"the run failed without a failed task (reason: {reason})"
    if waiting:
        error += f"; it was still waiting for task {waiting}"
    if reason == "timed_out":
        error += "; its unfinished tasks were skipped and wrote no catalog row"
    try:
        log_url = ti.log_url if ti is not None else None
    except Exception:  # the URL needs [api] base_url; an alert without it is still an alert
        log_url = None
    return alerts.FailureFacts(
        dag_id=dag_id, task_id=waiting or "(dag run)", run_id=str(context.get("run_id") or "unknown"),
        error=redact(error), log_url=log_url, map_index=getattr(ti, "map_index", -1) if ti is not None else -1,
    )


def alert_run_failure(context) -> None:
    """DAG-level ``on_failure_callback``: Slack and PagerDuty for a run stopped by ``dagrun_timeout`` (or
    any run failure with no failed task). A plain function, not a notifier: DAG-level templated notifiers
    break under ``dag.test()`` (apache/airflow#64649). Task failures are left to the tasks' own alerts."""
    from pg_dataops.common.config import load_config

    facts = run_failure_facts(context)
    if facts is None:
        return
    cfg = load_config()
    slack = BackupFailureSlackNotifier(slack_webhook_conn_id=cfg.slack_conn_id)
    pagerduty = BackupPagerdutyNotifier(pagerduty_events_conn_id=cfg.pagerduty_conn_id)
    errors = []
    for send in (lambda: slack.send_facts(facts, context), lambda: pagerduty.send_facts(facts)):
        try:  # one channel down must not cost the other its alert
            send()
        except Exception as exc:
            errors.append(exc)
            log.exception("could not deliver the run-failure alert for %s/%s", facts.dag_id, facts.run_id)
    if errors:
        raise errors[0]


def default_args(cfg, *, max_retry_delay=None, **extra) -> dict:
    """What every DAG's tasks share: owner, retries with exponential backoff, failure alerts, and a time
    limit (``task_timeout_minutes``, the RTO): a hung task fails and alerts instead of waiting forever."""
    import datetime as dt

    return {
        "owner": cfg.owner,
        "execution_timeout": dt.timedelta(minutes=cfg.task_timeout_minutes),
        "retries": cfg.retries,
        "retry_delay": dt.timedelta(seconds=cfg.retry_delay_seconds),
        "retry_exponential_backoff": True,
        "max_retry_delay": max_retry_delay or dt.timedelta(hours=1),
        "on_failure_callback": failure_callbacks(cfg.slack_conn_id, cfg.pagerduty_conn_id),
        **extra,
    }
