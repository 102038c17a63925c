"""What the hourly monitor sends, and when: the alert planner and its delivery loop. Airflow-free.

Alert state is kept in the catalog table ``monitor_alerts`` (:mod:`pg_dataops.catalog.monitor_alerts`),
one row per finding key, so the hourly monitor does not repeat itself:

- ``page`` findings go to PagerDuty: ``trigger`` on every failing run (PagerDuty dedups by
  ``dedup_key`` and the summary stays current), ``resolve`` once when the key clears.
- ``warn`` findings go to Slack when the key changes state: the message when it starts failing, a
  ``cleared: ...`` line when it passes again.
- A key that was failing and is no longer produced at all (its target or ``local_root`` left the
  configuration) is cleared or resolved once and forgotten, so no incident stays open forever.

A key's new state is recorded only after its alert was delivered, so a failed post is retried by the
next run (or the task's retry) instead of being lost. Delivery failures fail the run after every
other key has been handled. The channels themselves are callables the operator passes in.

The planner and the delivery loop live in :mod:`pg_dataops.common.alerting`, shared with the other checks
(``pg_wal_archive_check``); the monitor is the :data:`MONITOR` source there.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from typing import Any

import psycopg

from pg_dataops.common import alerting
from pg_dataops.common.alerting import (  # noqa: F401 - re-exported: the monitor's tests and callers use them here
    PAGE,
    PD_GROUP,
    PD_SOURCE,
    PD_SUMMARY_CHARS,
    WARN,
    AlertDeliveryFailed,
    AlertSource,
    AlertStep,
    Finding,
    _step_for_finding,
    _step_for_gone_key,
    deliver,
    pagerduty_summary,
)
from pg_dataops.common.config import Config
from pg_dataops.observe.monitor import DEDUP_PREFIX, MonitorSettings, evaluate

log = logging.getLogger(__name__)

GiB = 1024**3


def monitor_settings(cfg: Config) -> MonitorSettings:
    """The monitor's thresholds and targets from the configuration."""
    return MonitorSettings(
        max_backup_age_hours=cfg.monitor_max_backup_age_hours,
        size_deviation_pct=cfg.monitor_size_deviation_pct,
        min_free_bytes=cfg.monitor_min_free_gb * GiB,
        targets=tuple(cfg.target_names),
        timezone=cfg.timezone,
        encryption_recipients=cfg.encryption.recipients,
    )


# The monitor's keys: pg_backup_monitor/<check>/<target>.
MONITOR = AlertSource(key_prefix=f"{DEDUP_PREFIX}/", pagerduty_title="Backup monitor", group=PD_GROUP)


def plan_alerts(findings, state, source: AlertSource = MONITOR) -> list[AlertStep]:
    """:func:`pg_dataops.common.alerting.plan_alerts` for the monitor's keys by default."""
    return alerting.plan_alerts(findings, state, source)


def check_and_alert(pg: psycopg.Connection, now: dt.datetime, settings: MonitorSettings, local_root: str, *,
                    slack: Callable[[str], None], pagerduty: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """One monitor run: evaluate the rules, send what changed, record the new state.

    ``slack(text)`` posts one message, ``pagerduty(event)`` sends one :meth:`AlertStep.pagerduty_event`;
    either raises when it cannot deliver. Returns ``{"evaluated_at", "sent", "failing"}`` (JSON-safe);
    raises AlertDeliveryFailed, once every key was handled, when any alert was not delivered.
    """
    return deliver(pg, evaluate(pg, now, settings, local_root), now, slack=slack, pagerduty=pagerduty,
                   source=MONITOR)


