"""Findings and their alerts: the planner and delivery loop every check shares. Airflow-free.

A check (the hourly backup monitor, the WAL archive check, ...) returns one :class:`Finding` per rule
and target, passing or not; :func:`deliver` sends what changed and records the new state in the catalog
table ``monitor_alerts`` (:mod:`pg_dataops.catalog.monitor_alerts`), one row per finding key:

- ``page`` findings go to PagerDuty: ``trigger`` on every failing run (PagerDuty dedups by
  ``dedup_key`` and the summary stays current), ``resolve`` once when the key clears.
- ``warn`` findings go to Slack when the key changes state: the message when it starts failing, a
  ``cleared: ...`` line when it passes again.
- A key that was failing and is no longer produced at all (its target left the configuration) is
  cleared or resolved once and forgotten, so no incident stays open forever.

A key's new state is recorded only after its alert was delivered, so a failed post is retried by the
next run instead of being lost. Each check is an :class:`AlertSource`: it plans and records only the
keys under its own prefix, so one check never clears another's incident as "no longer checked".
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import psycopg

from pg_dataops.catalog import monitor_alerts
from pg_dataops.common.errors import BackupError, redact
from pg_dataops.common.formatting import slack_escape

log = logging.getLogger(__name__)

PAGE = "page"  # PagerDuty
WARN = "warn"  # Slack
PD_SUMMARY_CHARS = 1024  # PagerDuty Events API v2 limit
PD_SOURCE = "pg_dataops"
PD_GROUP = "pg_backup_monitor"


class AlertDeliveryFailed(BackupError):
    """Slack or PagerDuty refused or could not be reached; the state was kept, the next run retries."""


@dataclass(frozen=True)
class Finding:
    check: str  # the rule's name
    target: str  # a target name (or local_root for the monitor's free-space check)
    ok: bool
    severity: str  # PAGE or WARN, also on ok findings: where the resolve goes
    message: str  # the fact and the threshold
    dedup_key: str
    details: dict[str, Any] = field(default_factory=dict)  # JSON-safe (XCom)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- the plan -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AlertSource:
    """Who alerts: its dedup keys (and so its ``monitor_alerts`` rows) start with ``key_prefix``."""

    key_prefix: str
    pagerduty_title: str  # the PagerDuty summary starts "{pagerduty_title}: "
    group: str  # PagerDuty's group field
    slack_title: str = "PostgreSQL backups"
    gone_reason: str = "its target or local_root left the configuration"




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
    group: str = PD_GROUP  # PagerDuty's group: the alerting source

    def pagerduty_event(self) -> dict[str, Any]:
        """The Events API v2 fields of a ``pagerduty_*`` step (the routing key comes from the connection)."""
        return {
            "action": "trigger" if self.send == "pagerduty_trigger" else "resolve",
            "summary": self.text,
            "severity": "critical",
            "source": PD_SOURCE,
            "dedup_key": self.dedup_key,
            "custom_details": {"message": self.message, **(self.details or {})},
            "component": self.target,
            "group": self.group,
        }


def plan_alerts(findings: Iterable[Finding], state: Mapping[str, Mapping[str, Any]],
                source: AlertSource) -> list[AlertStep]:
    """One step per finding (and per failing key no finding produced any more), given the last state.

    ``state``: ``{dedup_key: {"failing": bool, "message": str, "severity": str}}`` from monitor_alerts,
    the source's own keys only (:func:`deliver` filters them).
    """
    steps: list[AlertStep] = []
    seen: set[str] = set()
    for f in findings:
        seen.add(f.dedup_key)
        steps.append(_step_for_finding(f, was_failing=bool(state.get(f.dedup_key, {}).get("failing")),
                                       source=source))
    for key, row in sorted(state.items()):
        if key not in seen:
            steps.append(_step_for_gone_key(key, row, source))
    return steps


def _step_for_finding(f: Finding, *, was_failing: bool, source: AlertSource) -> AlertStep:
    details = {"check": f.check, "target": f.target, **f.details}
    common = {"dedup_key": f.dedup_key, "severity": f.severity, "failing": not f.ok, "message": f.message,
              "details": details, "target": f.target, "group": source.group}
    if f.severity == PAGE and not f.ok:
        return AlertStep(send="pagerduty_trigger", text=pagerduty_summary(f"{source.pagerduty_title}: {f.message}"),
                         **common)
    if f.severity == PAGE and was_failing:
        return AlertStep(send="pagerduty_resolve", text=pagerduty_summary(f"cleared: {f.message}"), **common)
    if f.severity == WARN and not f.ok and not was_failing:
        return AlertStep(send="slack", text=f":warning: *{source.slack_title}*: {slack_escape(f.message)}", **common)
    if f.severity == WARN and f.ok and was_failing:
        return AlertStep(send="slack", text=f":white_check_mark: cleared: {slack_escape(f.message)}", **common)
    # An unchanged warning, or a page that passes and passed: just record that it was seen.
    return AlertStep(send=None, **common)


def _step_for_gone_key(key: str, row: Mapping[str, Any], source: AlertSource) -> AlertStep:
    """A key no check produces any more: cleared (if it was failing) and forgotten."""
    if not row.get("failing"):  # gone while passing: nothing to clear, just forget it
        return AlertStep(key, row.get("severity") or WARN, False, row.get("message") or "", None, forget=True,
                         group=source.group)
    message = f"{key} is no longer checked ({source.gone_reason})"
    last = row.get("message") or "no message recorded"
    if row.get("severity") == PAGE:
        return AlertStep(key, PAGE, False, message, "pagerduty_resolve", pagerduty_summary(f"cleared: {message}"),
                         {"last_message": last}, forget=True, group=source.group)
    return AlertStep(key, WARN, False, message, "slack",
                     f":white_check_mark: cleared: {slack_escape(message)}; it last said: {slack_escape(last)}",
                     forget=True, group=source.group)


def pagerduty_summary(text: str) -> str:
    """``text`` cut to the Events API's summary limit."""
    return text if len(text) <= PD_SUMMARY_CHARS else text[: PD_SUMMARY_CHARS - 3] + "..."


# --- delivery ---------------------------------------------------------------------------------------


def deliver(pg: psycopg.Connection, findings: list[Finding], now: dt.datetime, *, slack: Callable[[str], None],
            pagerduty: Callable[[dict[str, Any]], None], source: AlertSource) -> dict[str, Any]:
    """Send what changed for ``findings`` (every key of ``source``, passing or not) and record the new state.

    Only the source's own keys (``source.key_prefix``) are read, cleared or forgotten. ``slack(text)`` posts
    one message, ``pagerduty(event)`` sends one :meth:`AlertStep.pagerduty_event`; either raises when it
    cannot deliver. Returns ``{"evaluated_at", "sent", "failing"}`` (JSON-safe); raises
    AlertDeliveryFailed, once every key was handled, when any alert was not delivered."""
    state = {k: v for k, v in monitor_alerts.load_state(pg).items() if k.startswith(source.key_prefix)}
    sent, failures = [], []
    for step in plan_alerts(findings, state, source):
        if step.send is not None:
            try:
                if step.send == "slack":
                    slack(step.text)
                else:
                    pagerduty(step.pagerduty_event())
            except Exception as exc:  # one unreachable channel must not hide the other alerts
                reason = redact(f"{type(exc).__name__}: {exc}")
                log.error("could not send %s for %s: %s", step.send, step.dedup_key, reason)
                failures.append(f"{step.send} for {step.dedup_key}: {reason}")
                continue  # keep the old state: the next run sends it again
            sent.append({"dedup_key": step.dedup_key, "send": step.send})
            log.info("%s sent for %s: %s", step.send, step.dedup_key, step.message)
        _record(pg, step, now)
    for f in findings:
        log.info("%s %s [%s] %s", "ok     " if f.ok else "FAILING", f.dedup_key, f.severity, f.message)
    if failures:
        raise AlertDeliveryFailed(f"{len(failures)} alert(s) not delivered: " + "; ".join(failures))
    return {"evaluated_at": now.isoformat(), "sent": sent, "failing": [f.to_dict() for f in findings if not f.ok]}


def _record(pg: psycopg.Connection, step: AlertStep, now: dt.datetime) -> None:
    if step.forget:
        monitor_alerts.forget(pg, step.dedup_key)
    else:
        monitor_alerts.record(pg, step.dedup_key, failing=step.failing, message=step.message,
                              severity=step.severity, now=now)
