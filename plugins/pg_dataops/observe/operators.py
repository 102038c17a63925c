"""Thin Airflow operators for DAGs ``pg_backup_monitor`` and ``pg_backup_report``.

The rules and texts live in ``pg_dataops.observe.monitor`` and ``pg_dataops.observe.report`` (Airflow-free). Here:
fetch connections, call them, and deliver.

Alert state is kept in the catalog table ``monitor_alerts`` (``include/sql/catalog/monitor_alerts.sql``),
one row per finding key, so the hourly monitor does not repeat itself:

- ``page`` findings go to PagerDuty: ``trigger`` on every failing run (PagerDuty dedups by
  ``dedup_key`` and the summary stays current), ``resolve`` once when the key clears.
- ``warn`` findings go to Slack when the key changes state: the message when it starts failing, a
  ``cleared: ...`` line when it passes again.
- A key that was failing and is no longer produced at all (its target or ``local_root`` left the
  configuration) is cleared or resolved once and forgotten, so no incident stays open forever.

A key's new state is recorded only after its alert was delivered, so a failed post is retried by the
next run (or the task's retry) instead of being lost. Delivery failures fail the task after every
other key has been handled.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

from pg_dataops.common.config import Config, ConfigError, load_config
from pg_dataops.common.errors import BackupError, redact
from pg_dataops.common.formatting import slack_escape

# Everything else (psycopg, boto3, the backup operators) is imported when a task runs: the DAG files
# import this module at every parse and must stay fast.
if TYPE_CHECKING:
    import psycopg
    from airflow.sdk import Context

    from pg_dataops.observe.monitor import Finding, MonitorSettings

GiB = 1024**3
PD_SUMMARY_CHARS = 1024  # PagerDuty Events API v2 limit
PD_SOURCE = "pg_dataops"
PD_GROUP = "pg_backup_monitor"


class AlertDeliveryFailed(BackupError):
    """Slack or PagerDuty refused or could not be reached; the state was kept, the next run retries."""


def monitor_settings(cfg: Config) -> MonitorSettings:
    from pg_dataops.observe.monitor import MonitorSettings

    return MonitorSettings(
        max_backup_age_hours=cfg.monitor_max_backup_age_hours,
        size_deviation_pct=cfg.monitor_size_deviation_pct,
        min_free_bytes=cfg.monitor_min_free_gb * GiB,
        targets=tuple(cfg.target_names),
        timezone=cfg.timezone,
    )


def connect_catalog(cfg: Config) -> psycopg.Connection:
    from pg_dataops.airflow.base import pg_conn
    from pg_dataops.common import pg as pgtools

    return pgtools.connect(pg_conn(cfg.catalog_conn_id, None, "backup catalog", cfg=cfg), autocommit=True)


def evaluate(pg: psycopg.Connection, cfg: Config, now: dt.datetime) -> list[Finding]:
    from pg_dataops.observe import monitor

    return monitor.evaluate(pg, now, monitor_settings(cfg), cfg.local_root)


# --- alert state (Airflow-free decisions) ----------------------------------------------------------


@dataclass(frozen=True)
class AlertStep:
    """What to do for one key: maybe send one event, then record (or forget) its state."""

    dedup_key: str
    severity: str  # PAGE or WARN
    failing: bool  # the state to record once sent
    message: str  # the fact and the threshold
    send: str | None  # None, "slack", "pagerduty_trigger" or "pagerduty_resolve"
    text: str = ""  # Slack text or PagerDuty summary
    details: Mapping[str, Any] | None = None
    target: str | None = None
    forget: bool = False  # the key is gone: delete its row once the clear was sent


def plan_alerts(findings: Iterable[Finding], state: Mapping[str, Mapping[str, Any]]) -> list[AlertStep]:
    """One step per finding (and per failing key no finding produced any more), given the last state.

    ``state``: ``{dedup_key: {"failing": bool, "message": str, "severity": str}}`` from monitor_alerts.
    """
    from pg_dataops.observe.monitor import PAGE, WARN

    steps: list[AlertStep] = []
    seen: set[str] = set()
    for f in findings:
        seen.add(f.dedup_key)
        was_failing = bool(state.get(f.dedup_key, {}).get("failing"))
        details = {"check": f.check, "target": f.target, **f.details}
        common = {"dedup_key": f.dedup_key, "severity": f.severity, "failing": not f.ok, "message": f.message,
                  "details": details, "target": f.target}
        if f.severity == PAGE and not f.ok:
            steps.append(AlertStep(send="pagerduty_trigger", text=_summary(f"Backup monitor: {f.message}"), **common))
        elif f.severity == PAGE and was_failing:
            steps.append(AlertStep(send="pagerduty_resolve", text=_summary(f"cleared: {f.message}"), **common))
        elif f.severity == WARN and not f.ok and not was_failing:
            steps.append(AlertStep(send="slack", text=f":warning: *PostgreSQL backups*: {slack_escape(f.message)}",
                                   **common))
        elif f.severity == WARN and f.ok and was_failing:
            steps.append(AlertStep(send="slack", text=f":white_check_mark: cleared: {slack_escape(f.message)}",
                                   **common))
        else:  # unchanged warning, or a page that passes and passed: just record that it was seen
            steps.append(AlertStep(send=None, **common))
    for key, row in sorted(state.items()):
        if key in seen:
            continue
        if not row.get("failing"):  # gone while passing: nothing to clear, just forget it
            steps.append(AlertStep(key, row.get("severity") or WARN, False, row.get("message") or "", None,
                                   forget=True))
            continue
        message = f"{key} is no longer checked (its target or local_root left the configuration)"
        last = row.get("message") or "no message recorded"
        if row.get("severity") == PAGE:
            steps.append(AlertStep(key, PAGE, False, message, "pagerduty_resolve", _summary(f"cleared: {message}"),
                                   {"last_message": last}, forget=True))
        else:
            steps.append(AlertStep(key, WARN, False, message, "slack",
                                   f":white_check_mark: cleared: {slack_escape(message)}; it last said: "
                                   f"{slack_escape(last)}", forget=True))
    return steps


def _summary(text: str) -> str:
    return text if len(text) <= PD_SUMMARY_CHARS else text[: PD_SUMMARY_CHARS - 3] + "..."


def ensure_alert_table(pg: psycopg.Connection) -> None:
    """monitor_alerts, idempotently, under the catalog's schema lock (like catalog.ensure_schema)."""
    from pg_dataops.common import sqlfiles

    with pg.transaction():
        pg.execute(sqlfiles.text("catalog/lock.sql"))
        pg.execute(sqlfiles.text("catalog/monitor_alerts.sql"))


def load_alert_state(pg: psycopg.Connection) -> dict[str, dict[str, Any]]:
    from pg_dataops.common import sqlfiles
    from pg_dataops.observe import monitor

    return {r["dedup_key"]: r for r in monitor.fetch_dicts(pg.execute(sqlfiles.text("monitor/alert_state.sql")))}


def record_alert_state(pg: psycopg.Connection, step: AlertStep, now: dt.datetime) -> None:
    from pg_dataops.common import sqlfiles

    with pg.transaction():
        if step.forget:
            pg.execute(sqlfiles.text("monitor/forget_alert.sql"), {"dedup_key": step.dedup_key})
        else:
            pg.execute(sqlfiles.text("monitor/upsert_alert.sql"), {
                "dedup_key": step.dedup_key, "failing": step.failing, "message": step.message,
                "severity": step.severity, "now": now,
            })


# --- S3 storage per tier ---------------------------------------------------------------------------


def storage_by_tier(client, bucket: str, prefix: str) -> dict[str, dict[str, int]]:
    """``{tier: {"bytes": int, "objects": int}}`` of everything under ``{prefix}/{tier}/`` (dumps and sidecars)."""

    from pg_dataops.common import s3
    from pg_dataops.common.naming import TIERS

    s3.check_bucket(client, bucket)  # BucketMissing names the bucket and the endpoint
    out: dict[str, dict[str, int]] = {tier: {"bytes": 0, "objects": 0} for tier in TIERS}
    for tier, _prefix, obj in s3.list_tiers(client, bucket, prefix, error=BackupError):
        out[tier]["bytes"] += int(obj.get("Size", 0))
        out[tier]["objects"] += 1
    return out


# --- operators -------------------------------------------------------------------------------------


def post_slack(cfg: Config, context: Context, text: str) -> None:
    from airflow.providers.slack.notifications.slack_webhook import SlackWebhookNotifier

    from pg_dataops.airflow.base import airflow_connection

    airflow_connection(cfg.slack_conn_id, "Slack notifications")
    SlackWebhookNotifier(slack_webhook_conn_id=cfg.slack_conn_id, text=text).notify(context)


def send_pagerduty(cfg: Config, step: AlertStep) -> None:
    from pg_dataops.airflow.base import airflow_connection
    from pg_dataops.airflow.notifiers import BackupPagerdutyNotifier

    airflow_connection(cfg.pagerduty_conn_id, "PagerDuty alerts")
    notifier = BackupPagerdutyNotifier(pagerduty_events_conn_id=cfg.pagerduty_conn_id)
    notifier.summary = step.text
    notifier.severity = "critical"
    notifier.source = PD_SOURCE
    notifier.action = "trigger" if step.send == "pagerduty_trigger" else "resolve"
    notifier.dedup_key = step.dedup_key
    notifier.custom_details = {"message": step.message, **(step.details or {})}
    notifier.component = step.target
    notifier.group = PD_GROUP
    notifier.send()


def _alert_secrets(cfg: Config) -> list[str]:
    """The webhook token and routing key, so a delivery error can never carry them into an alert."""
    from airflow.sdk import BaseHook

    secrets = []
    for conn_id in (cfg.slack_conn_id, cfg.pagerduty_conn_id):
        try:
            password = BaseHook.get_connection(conn_id).password
        except Exception:  # a missing connection is the error being reported
            continue
        if password:
            secrets.append(password)
    return secrets


class MonitoringStepOperator(BaseOperator):
    """Like ``operators.BackupStepOperator`` (clear failures, an ``error`` XCom, no retry of permanent
    errors), without importing the backup operators when a DAG file is parsed."""

    def execute(self, context: Context) -> Any:
        from pg_dataops.airflow.base import PERMANENT

        try:
            return self.run_step(load_config(), context)
        except (BackupError, ConfigError) as exc:
            context["ti"].xcom_push(key="error", value=redact(f"{self.task_id}: {exc}"))
            if isinstance(exc, PERMANENT):
                raise AirflowFailException(redact(str(exc))) from exc
            raise

    def run_step(self, cfg: Config, context: Context) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError


class MonitorBackupsOperator(MonitoringStepOperator):
    """Evaluates the monitoring rules on the catalog and the local disk, then alerts on changes.

    ``page`` findings: PagerDuty trigger while failing, resolve once cleared (same ``dedup_key``).
    ``warn`` findings: one Slack post when a key starts failing, one ``cleared:`` post when it passes.
    """

    ui_color = "#f8e8d8"

    def run_step(self, cfg: Config, context: Context) -> dict:
        now = dt.datetime.now(dt.UTC)  # the wall clock: what is overdue now, not at the logical date
        pg = connect_catalog(cfg)
        try:
            findings = evaluate(pg, cfg, now)
            ensure_alert_table(pg)
            steps = plan_alerts(findings, load_alert_state(pg))
            sent, failures = [], []
            for step in steps:
                if step.send is not None:
                    try:
                        self._deliver(cfg, context, step)
                    except Exception as exc:  # one unreachable channel must not hide the other alerts
                        reason = redact(f"{type(exc).__name__}: {exc}", *_alert_secrets(cfg))
                        self.log.error("could not send %s for %s: %s", step.send, step.dedup_key, reason)
                        failures.append(f"{step.send} for {step.dedup_key}: {reason}")
                        continue  # keep the old state: the next run sends it again
                    sent.append({"dedup_key": step.dedup_key, "send": step.send})
                    self.log.info("%s sent for %s: %s", step.send, step.dedup_key, step.message)
                record_alert_state(pg, step, now)
        finally:
            pg.close()
        for f in findings:
            self.log.info("%s %s [%s] %s", "ok     " if f.ok else "FAILING", f.dedup_key, f.severity, f.message)
        if failures:
            raise AlertDeliveryFailed(f"{len(failures)} alert(s) not delivered: " + "; ".join(failures))
        return {"evaluated_at": now.isoformat(), "sent": sent,
                "failing": [f.to_dict() for f in findings if not f.ok]}

    def _deliver(self, cfg: Config, context: Context, step: AlertStep) -> None:
        if step.send == "slack":
            post_slack(cfg, context, step.text)
        else:
            send_pagerduty(cfg, step)


class BackupReportOperator(MonitoringStepOperator):
    """Builds the daily report (catalog, monitor findings, S3 storage per tier) and posts it to Slack."""

    ui_color = "#e8f8d8"

    def run_step(self, cfg: Config, context: Context) -> dict:
        from pg_dataops.airflow.base import s3_client
        from pg_dataops.observe import report

        now = dt.datetime.now(dt.UTC)
        storage = storage_by_tier(s3_client(cfg.s3_conn_id), cfg.bucket, cfg.prefix)
        pg = connect_catalog(cfg)
        try:
            findings = evaluate(pg, cfg, now)
            built = report.build_report(pg, now, rto_objective_seconds=cfg.rto_objective_seconds,
                                        storage_by_tier=storage, findings=findings, timezone=cfg.timezone)
        finally:
            pg.close()
        post_slack(cfg, context, built.text)
        self.log.info("report posted to Slack:\n%s", built.text)
        return built.data

