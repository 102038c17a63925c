"""Thin Airflow operators for DAGs ``pg_backup_monitor`` and ``pg_backup_report``.

Each fetches its connections and calls one core function: :func:`pg_dataops.observe.alerts.check_and_alert`
(rules, alert state, delivery through the channels passed in) and
:func:`pg_dataops.observe.report.daily_report`, whose text is then posted to Slack.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from pg_dataops.airflow.base import StepOperator, catalog_connection, post_slack, s3_client
from pg_dataops.common.config import Config

# The core modules (psycopg, boto3) are imported when a task runs: the DAG files import this module at
# every parse and must stay fast.
if TYPE_CHECKING:
    from airflow.sdk import Context


class MonitorBackupsOperator(StepOperator):
    """Evaluates the monitoring rules on the catalog and the local disk, then alerts on changes.

    ``page`` findings: PagerDuty trigger while failing, resolve once cleared (same ``dedup_key``).
    ``warn`` findings: one Slack post when a key starts failing, one ``cleared:`` post when it passes.
    """

    ui_color = "#f8e8d8"

    def run_step(self, cfg: Config, context: Context) -> dict:
        from pg_dataops.airflow.notifiers import send_pagerduty
        from pg_dataops.observe import alerts

        now = dt.datetime.now(dt.UTC)  # the wall clock: what is overdue now, not at the logical date
        pg = catalog_connection(cfg)
        try:
            return alerts.check_and_alert(
                pg, now, alerts.monitor_settings(cfg), cfg.local_root,
                slack=lambda text: post_slack(cfg, context, text),
                pagerduty=lambda event: send_pagerduty(cfg, event),
            )
        finally:
            pg.close()


class BackupReportOperator(StepOperator):
    """Builds the daily report (catalog, monitor findings, S3 storage per tier) and posts it to Slack."""

    ui_color = "#e8f8d8"

    def run_step(self, cfg: Config, context: Context) -> dict:
        from pg_dataops.observe import report

        now = dt.datetime.now(dt.UTC)
        client = s3_client(cfg.s3_conn_id)
        pg = catalog_connection(cfg)
        try:
            built = report.daily_report(cfg, pg, client, now)
        finally:
            pg.close()
        post_slack(cfg, context, built.text)
        self.log.info("report posted to Slack:\n%s", built.text)
        return built.data
