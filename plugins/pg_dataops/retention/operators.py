"""Thin Airflow operator over :func:`pg_dataops.retention.apply.apply_retention`: S3 client, the run, Slack.

The core modules are imported in ``run_step``: the DAG files only need the class, so they parse fast.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pg_dataops.airflow.base import StepOperator

if TYPE_CHECKING:
    from airflow.sdk import Context

    from pg_dataops.common.config import Config


class ApplyRetentionOperator(StepOperator):
    """GFS retention of the targets' backups in S3 and under ``local_root``, by each backup's own timestamp.

    Refuses (fails at once, deleting nothing anywhere) when this worker's clock and S3's differ by more
    than ``retention.max_future_skew_minutes``, when a configured target's newest verified backup in S3
    is older than ``monitor_max_backup_age_hours``, and when
    :func:`pg_dataops.retention.plan.plan_retention` refuses. Other targets' backups are kept and
    listed as "not ours".

    :param dry_run: plan and report only. A dry run whose plan exceeds ``max_delete_fraction``
        still succeeds (the report is what a human needs to decide); a real run fails.
    :param max_delete_fraction: overrides ``retention.max_delete_fraction`` for this run (None: config).
    :param targets: only these targets' backups (None: the configured targets).
    :param notify: post a short summary to Slack (best effort: a failed post is logged, not raised).
    """

    template_fields: Sequence[str] = ("dry_run", "max_delete_fraction", "targets")
    max_delete_fraction: Any = None
    targets: Any = None
    ui_color = "#f8e8d8"

    def __init__(self, *, notify: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.notify = notify

    def run_step(self, cfg: Config, context: Context) -> dict:
        from pg_dataops.airflow.base import post_slack, s3_client
        from pg_dataops.retention.apply import apply_retention

        outcome = apply_retention(cfg, s3_client(cfg.s3_conn_id), dry_run=self.dry_run,
                                  max_delete_fraction=self.max_delete_fraction, targets=self.targets)
        if self.notify:
            try:
                post_slack(cfg, context, outcome.slack_text)
            except Exception as exc:  # the retention is done and logged; a lost summary must not fail it
                self.log.warning("could not post the retention summary to Slack: %s", exc)
        return outcome.summary
