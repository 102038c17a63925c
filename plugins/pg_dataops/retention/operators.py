"""Thin Airflow operator over ``pg_dataops.retention.core``: list, plan, apply (or dry-run), report.

First this worker's clock is checked against S3's (its ``Date`` header). Both listings (S3 and the
local tree) are planned, and the configured targets' newest verified backups in S3 checked for age,
before anything is deleted, so a refusal in any of them deletes nothing anywhere. A worker without
local copies is normal: an empty local tree is skipped, while an S3 listing without the targets'
backups is a refusal (a wrong bucket, prefix or target, or a failed listing).

The core modules are imported in ``execute``: the DAG file only needs the class, so it parses fast.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

if TYPE_CHECKING:
    from airflow.sdk import Context

    from pg_dataops.common.config import Config
    from pg_dataops.retention.core import ApplyResult, BackupItem, RetentionPlan, RetentionRefused

_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")


def as_bool(value: Any, name: str) -> bool:
    """A rendered template may be a bool or its text; anything else is an error, never a default."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    raise AirflowFailException(f"{name}: expected true or false, got {value!r}")


def as_fraction(value: Any) -> float | None:
    """None (use the config's) or a number in (0, 1]."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "null")):
        return None
    try:
        number = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        number = math.nan
    if not 0 < number <= 1:
        raise AirflowFailException(f"max_delete_fraction: expected a number in (0, 1] or null, got {value!r}")
    return number


def as_targets(value: Any) -> list[str] | None:
    """None (every target found) or target names: a list, a JSON list or comma-separated text."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "null")):
        return None
    if isinstance(value, str):
        text = value.strip()
        value = json.loads(text) if text.startswith("[") else [p.strip() for p in text.split(",")]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v for v in value) or not value:
        raise AirflowFailException(f"targets: expected a list of target names, got {value!r}")
    return list(value)


def minimum_fraction(plan: RetentionPlan) -> float:
    """The smallest max_delete_fraction (two decimals, rounded up) that lets this plan through."""
    return math.ceil(len(plan.delete) / len(plan.judged) * 100) / 100


class ApplyRetentionOperator(BaseOperator):
    """GFS retention of the targets' backups in S3 and under ``local_root``, by each backup's own timestamp.

    Refuses (fails, deleting nothing anywhere) when this worker's clock and S3's differ by more than
    ``retention.max_future_skew_minutes``, when a configured target's newest verified backup in S3 is
    older than ``monitor_max_backup_age_hours``, and when :func:`pg_dataops.retention.core.plan_retention`
    refuses. Other targets' backups are kept and listed as "not ours".

    :param dry_run: plan and report only. A dry run whose plan exceeds ``max_delete_fraction``
        still succeeds (the report is what a human needs to decide); a real run fails.
    :param max_delete_fraction: overrides ``retention.max_delete_fraction`` for this run (None: config).
    :param targets: only these targets' backups (None: the configured targets).
    :param notify: post a short summary to Slack (best effort: a failed post is logged, not raised).
    """

    template_fields: Sequence[str] = ("dry_run", "max_delete_fraction", "targets")
    ui_color = "#f8e8d8"

    def __init__(self, *, dry_run: Any, max_delete_fraction: Any = None, targets: Any = None, notify: bool = True,
                 **kwargs):
        super().__init__(**kwargs)
        self.dry_run = dry_run
        self.max_delete_fraction = max_delete_fraction
        self.targets = targets
        self.notify = notify

    def execute(self, context: Context) -> dict:
        from pg_dataops.airflow.base import PERMANENT
        from pg_dataops.common.config import load_config

        try:
            return self.run_step(load_config(), context)
        except PERMANENT as exc:  # the one list of what retrying cannot fix
            raise AirflowFailException(str(exc)) from exc

    def run_step(self, cfg: Config, context: Context) -> dict:
        from pg_dataops.airflow.base import s3_client
        from pg_dataops.retention import core as retention
        from pg_dataops.retention.core import RetentionDeleteFailed, RetentionRefused

        dry_run = as_bool(self.dry_run, "dry_run")
        fraction = as_fraction(self.max_delete_fraction)
        fraction = cfg.retention.max_delete_fraction if fraction is None else fraction
        named = as_targets(self.targets)
        # Only this deployment's targets, unless a human names others (e.g. a removed target's backups):
        # the bucket and prefix may hold backups this config knows nothing about.
        targets = sorted(set(named)) if named is not None else sorted(cfg.target_names)
        skew = dt.timedelta(minutes=cfg.retention.max_future_skew_minutes)
        s3_source, local_source = f"s3://{cfg.bucket}/{cfg.prefix}", cfg.local_root

        client = s3_client(cfg.s3_conn_id)
        try:
            # Every age is measured from this clock: check it against S3's before anything else.
            server_time = retention.s3_server_time(client, cfg.bucket)
            now = dt.datetime.now(dt.UTC)  # retention is about what exists now, not the run's logical date
            retention.check_clock(now, server_time, skew, server=f"S3 at {client.meta.endpoint_url}")
        except RetentionRefused as exc:
            raise AirflowFailException(f"{exc}; nothing was deleted") from exc
        listings = {
            "s3": (s3_source, retention.list_s3_backups(client, cfg.bucket, cfg.prefix, cfg.timezone)),
            "local": (local_source, retention.list_local_backups(cfg.local_root, cfg.timezone)),
        }

        plans: dict[str, RetentionPlan] = {}
        refused: dict[str, RetentionRefused] = {}
        newest: dict[str, BackupItem] = {}
        for where, (source, items) in listings.items():
            if where == "local" and not any(i.target in targets for i in items):
                self.log.info("no local backups of %s under %s: nothing to do locally (a worker without local "
                              "copies)", ", ".join(targets), source)
                continue
            try:
                plans[where] = retention.plan_retention(
                    items, now, cfg.retention, max_delete_fraction=fraction, max_future_skew=skew,
                    timezone=cfg.timezone, source=source, targets=targets,
                )
            except RetentionRefused as exc:
                refused[where] = exc

        try:
            # Asked of configured targets only: a removed target named by hand has stopped on purpose. S3 is
            # where every verified backup ends up; a worker's local tree may be partial.
            newest = retention.check_recent_backups(
                listings["s3"][1], now, [t for t in targets if t in cfg.target_names],
                dt.timedelta(hours=cfg.monitor_max_backup_age_hours), source=s3_source, timezone=cfg.timezone)
        except RetentionRefused as exc:
            refused["recent"] = exc  # no plan: fails dry runs too

        # A plan that only exceeds max_delete_fraction is still shown by a dry run: that report is how a
        # human decides to raise it once. Anything else (empty listing, future timestamps, no recent
        # verified backup) fails any run.
        if refused and (not dry_run or any(exc.plan is None for exc in refused.values())):
            reasons = []
            for exc in refused.values():
                hint = ""
                if exc.plan is not None:
                    self.log.error("%s\n%s", exc, retention.format_report(exc.plan))
                    hint = (f" (a one-off run of this DAG with max_delete_fraction {minimum_fraction(exc.plan)} "
                            "or more lets it through)")
                reasons.append(f"{exc}{hint}")
            raise AirflowFailException("; ".join(reasons) + "; nothing was deleted")
        for where, exc in refused.items():
            self.log.warning("a real run would be refused: %s", exc)
            plans[where] = exc.plan

        results: dict[str, ApplyResult] = {}
        for where, plan in plans.items():
            try:
                if where == "s3":
                    results[where] = retention.apply_s3(client, cfg.bucket, plan, dry_run)
                else:
                    results[where] = retention.apply_local(plan, dry_run)
            except RetentionDeleteFailed as exc:
                self.log.error("%s", retention.format_report(plan, exc.result))
                raise
            self.log.info("%s", retention.format_report(plan, results[where]))

        summary = {
            "dry_run": dry_run,
            "now": now.isoformat(),
            "s3_server_time": server_time.isoformat(),
            "max_delete_fraction": fraction,
            "targets": targets,
            "targets_from": "param" if named is not None else "config",
            "newest_verified": {t: b.display for t, b in sorted(newest.items())},
            **{where: self._summary(source, items, targets, plans.get(where), results.get(where), refused.get(where))
               for where, (source, items) in listings.items()},
        }
        if self.notify:
            self._post(cfg, context, summary, plans, results)
        return summary

    @staticmethod
    def _summary(source: str, items: list[BackupItem], targets: list[str], plan: RetentionPlan | None,
                 result: ApplyResult | None, refused: RetentionRefused | None) -> dict:
        """JSON-safe, for XCom: counts, and the keys (or paths) deleted or that a real run would delete."""
        from pg_dataops.retention import core as retention

        # Other targets' backups are listed whether or not there was anything of ours to plan.
        not_ours = [i.display for i in items if i.target not in targets]
        if plan is None or result is None:
            return {"source": source, "backups": 0, "kept": 0, "deleted": 0, "deleted_keys": [], "would_delete": 0,
                    "would_delete_keys": [], "attention": [], "refused": None, "minimum_max_delete_fraction": None,
                    "removed_dirs": [], "report": None, "not_ours": not_ours}
        return {
            "source": source,
            "backups": len(plan.judged),
            "kept": len(plan.keep) - len(plan.not_ours),
            "deleted": len(result.deleted),
            "deleted_keys": result.deleted_paths,
            "would_delete": len(result.would_delete),
            "would_delete_keys": [p for parts in result.would_delete.values() for p in parts],
            "attention": [f"{d.item.display}: {d.reason}" for d in plan.attention],
            "refused": str(refused) if refused else None,
            "minimum_max_delete_fraction": minimum_fraction(plan) if refused else None,
            "removed_dirs": result.removed_dirs,
            "report": retention.format_report(plan, result).splitlines()[0],
            "not_ours": not_ours,
        }

    def _post(self, cfg: Config, context: Context, summary: dict, plans: dict, results: dict) -> None:
        from airflow.providers.slack.notifications.slack_webhook import SlackWebhookNotifier

        from pg_dataops.airflow.base import airflow_connection
        from pg_dataops.retention import core as retention

        mode = "DRY RUN, nothing deleted" if summary["dry_run"] else "applied"
        lines = [f":wastebasket: Backup retention ({mode})"]
        policy = None
        for where in ("s3", "local"):
            if where in plans:
                first, policy = retention.format_report(plans[where], results[where]).splitlines()[:2]
                lines.append(first)
                if summary[where]["refused"]:
                    lines.append(f"a real run would be refused: needs max_delete_fraction >= "
                                 f"{summary[where]['minimum_max_delete_fraction']}")
            else:
                lines.append(f"no local backups of {', '.join(summary['targets'])} under {summary[where]['source']}")
        lines.append(policy)
        text = "\n".join(lines)
        try:
            airflow_connection(cfg.slack_conn_id, "Slack notifications")
            SlackWebhookNotifier(slack_webhook_conn_id=cfg.slack_conn_id, text=text).notify(context)
        except Exception as exc:  # the retention is done and logged; a lost summary must not fail it
            self.log.warning("could not post the retention summary to Slack: %s", exc)
