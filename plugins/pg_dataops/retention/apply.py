"""Retention's I/O: list backups in S3 and the local tree, read S3's clock, carry a plan out. Airflow-free.

:func:`apply_retention` is one whole run, what the task does. First this worker's clock is checked
against S3's (its ``Date`` header). Both listings (S3 and the local tree) are planned, and the
targets' newest verified backups in S3 checked for age, before anything is deleted, so a refusal in
any of them deletes nothing anywhere. A worker without local copies is normal: an empty local tree
is skipped, while an S3 listing without the targets' backups is a refusal (a wrong bucket, prefix or
target, or a failed listing). Anything it cannot read with certainty is kept and reported.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from pg_dataops.common import s3
from pg_dataops.common.config import Config
from pg_dataops.common.guards import s3_server_time  # noqa: F401 - re-exported
from pg_dataops.common.naming import TIERS, parse_name
from pg_dataops.common.s3 import describe_error
from pg_dataops.retention import report
from pg_dataops.retention.plan import (
    BackupItem,
    RetentionError,
    RetentionPlan,
    RetentionRefused,
    RunParams,
    build_item,
    check_clock,
    check_recent_backups,
    minimum_fraction,
    plan_retention,
    run_params,
    split_part,
)

log = logging.getLogger(__name__)


class RetentionDeleteFailed(RetentionError):
    """A delete failed part-way; ``result`` holds exactly what was deleted before it (retried)."""

    def __init__(self, message: str, result: ApplyResult):
        super().__init__(message)
        self.result = result


@dataclass
class ApplyResult:
    dry_run: bool
    deleted: dict[str, list[str]] = field(default_factory=dict)  # item.display -> keys/paths removed
    would_delete: dict[str, list[str]] = field(default_factory=dict)  # dry run: what a real run removes
    already_gone: list[str] = field(default_factory=list)  # local parts that vanished before we got there
    removed_dirs: list[str] = field(default_factory=list)
    error: str | None = None  # why it stopped, when it did

    @property
    def deleted_paths(self) -> list[str]:
        return [p for parts in self.deleted.values() for p in parts]

    def to_dict(self) -> dict:
        """JSON-safe, for XCom."""
        return asdict(self)


def _dry_run_result(plan: RetentionPlan) -> ApplyResult:
    return ApplyResult(dry_run=True, would_delete={d.item.display: d.item.paths for d in plan.delete})


# --- S3 -------------------------------------------------------------------------------------------


def list_s3_backups(client, bucket: str, prefix: str, timezone: str, *, max_workers: int = 8) -> list[BackupItem]:
    """Every backup under ``{prefix}/{tier}/``, grouped into its three parts, manifests read.

    Only the three tier folders are listed, so anything else under the prefix is never touched.
    """
    location = f"s3://{bucket}/{prefix}"
    groups: dict[tuple[str, str], dict[str, str]] = defaultdict(dict)
    sizes: dict[str, int] = {}
    for tier, tier_prefix, obj in s3.list_tiers(client, bucket, prefix, error=RetentionError):
        rest = obj["Key"][len(tier_prefix):]
        part, base = split_part(rest)
        if "/" in rest or parse_name(base, timezone) is None:
            log.warning("retention: ignoring s3://%s/%s (not a backup part)", bucket, obj["Key"])
            continue
        groups[(tier, base)][part] = obj["Key"]
        sizes[obj["Key"]] = obj.get("Size", 0)

    keys = [parts["manifest"] for parts in groups.values() if "manifest" in parts]
    fetched = s3.read_manifests(client, bucket, keys, sizes=sizes, max_workers=max_workers)
    items = []
    for (tier, base), parts in sorted(groups.items()):
        text, error = fetched.get(parts.get("manifest"), (None, None))
        items.append(build_item(tier=tier, base=base, parts=parts, manifest_text=text, manifest_error=error,
                                timezone=timezone, location=location, strip=prefix + "/"))
    return items


def apply_s3(client, bucket: str, plan: RetentionPlan, dry_run: bool) -> ApplyResult:
    """Delete each planned backup's parts in one DeleteObjects request; stop at the first failure.

    Raises RetentionDeleteFailed (with ``result``: what was deleted before) if S3 reports an error or
    does not confirm a key. On a versioned bucket this leaves delete markers; old versions go by lifecycle.
    """
    if dry_run:
        return _dry_run_result(plan)
    result = ApplyResult(dry_run=False)
    for d in plan.delete:
        keys = d.item.paths
        try:
            resp = client.delete_objects(
                Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys], "Quiet": False}
            )
        except (ClientError, BotoCoreError) as exc:
            result.error = f"deleting {d.item.display} from s3://{bucket} failed: {describe_error(exc)}"
            raise RetentionDeleteFailed(result.error, result) from None
        done = [o["Key"] for o in resp.get("Deleted", [])]
        if done:
            result.deleted[d.item.display] = [k for k in keys if k in done]
        errors = resp.get("Errors", [])
        unconfirmed = [k for k in keys if k not in done and all(e.get("Key") != k for e in errors)]
        if errors or unconfirmed:
            what = [f"{e.get('Key')}: {e.get('Code')} {e.get('Message', '')}".strip() for e in errors]
            what += [f"{k}: not confirmed by S3" for k in unconfirmed]
            result.error = (
                f"deleting {d.item.display} from s3://{bucket} failed for {'; '.join(what)}; "
                "its remaining parts will show up as an orphan next time"
            )
            raise RetentionDeleteFailed(result.error, result)
    return result


# --- local tree -----------------------------------------------------------------------------------


def list_local_backups(local_root: str, timezone: str) -> list[BackupItem]:
    """Every backup under ``{local_root}/{tier}/{YYYY}/{MM}/``, grouped into its three parts."""
    root = local_root.rstrip("/") or "/"
    items = []
    for (tier, _month_dir, base), parts in sorted(_local_parts(root, timezone).items()):
        text, error = _read_local_manifest(parts["manifest"]) if "manifest" in parts else (None, None)
        items.append(build_item(tier=tier, base=base, parts=parts, manifest_text=text, manifest_error=error,
                                timezone=timezone, location=root, strip=root.rstrip("/") + "/"))
    return items


def _local_parts(root: str, timezone: str) -> dict[tuple[str, str, str], dict[str, str]]:
    """(tier, month directory, dump name) -> {part: path} of every backup part in the tree."""
    groups: dict[tuple[str, str, str], dict[str, str]] = defaultdict(dict)
    for tier in TIERS:
        tier_dir = os.path.join(root, tier)
        for year in _subdirs(tier_dir, r"\d{4}"):
            for month in _subdirs(os.path.join(tier_dir, year), r"\d{2}"):
                month_dir = os.path.join(tier_dir, year, month)
                with os.scandir(month_dir) as entries:
                    for entry in entries:
                        part, base = split_part(entry.name)
                        # *.partial, *.tmp and the like are a dump or sidecar being written: not ours to judge.
                        if not entry.is_file(follow_symlinks=False) or parse_name(base, timezone) is None:
                            log.warning("retention: ignoring %s (not a backup part)", entry.path)
                            continue
                        groups[(tier, month_dir, base)][part] = entry.path
    return groups


def _read_local_manifest(path: str) -> tuple[bytes | None, str | None]:
    """(its bytes, None) or (None, why it cannot be read)."""
    try:
        if os.path.getsize(path) > s3.MAX_MANIFEST_BYTES:
            return None, "too large for a manifest"
        with open(path, "rb") as f:
            return f.read(), None
    except OSError as exc:
        return None, f"cannot read {path}: {exc.strerror or exc}"


def _subdirs(path: str, pattern: str) -> list[str]:
    try:
        entries = list(os.scandir(path))
    except FileNotFoundError:
        return []
    names = []
    for entry in entries:
        if entry.is_dir(follow_symlinks=False) and re.fullmatch(pattern, entry.name):
            names.append(entry.name)
        else:
            log.warning("retention: ignoring %s (not in the {tier}/{YYYY}/{MM} layout)", entry.path)
    return sorted(names)


def apply_local(plan: RetentionPlan, dry_run: bool) -> ApplyResult:
    """Remove each planned backup's files, then the month and year directories left empty."""
    if dry_run:
        return _dry_run_result(plan)
    result = ApplyResult(dry_run=False)
    touched: set[str] = set()
    for d in plan.delete:
        removed = []
        for path in d.item.paths:
            try:
                os.unlink(path)
            except FileNotFoundError:
                result.already_gone.append(path)
                continue
            except OSError as exc:
                if removed:
                    result.deleted[d.item.display] = removed
                result.error = f"deleting {path} failed: {exc.strerror or exc}"
                raise RetentionDeleteFailed(result.error, result) from None
            removed.append(path)
            touched.add(os.path.dirname(path))
        if removed:
            result.deleted[d.item.display] = removed
    for month_dir in sorted(touched, reverse=True):
        # Only {YYYY}/{MM} under a tier directory: the tier directories and local_root stay.
        for directory in (month_dir, os.path.dirname(month_dir)):
            try:
                os.rmdir(directory)
            except OSError:
                break  # not empty (or already gone): leave it and its parent
            result.removed_dirs.append(directory)
    return result


# --- one run --------------------------------------------------------------------------------------

Listings = dict[str, tuple[str, list[BackupItem]]]  # "s3" / "local" -> (source, backups listed)


@dataclass(frozen=True)
class RetentionOutcome:
    summary: dict  # JSON-safe, for XCom: counts, and the keys (or paths) deleted or that a real run would delete
    slack_text: str  # the short summary for Slack


def apply_retention(cfg: Config, client, *, dry_run: Any, max_delete_fraction: Any = None,
                    targets: Any = None) -> RetentionOutcome:
    """GFS retention of the targets' backups in S3 and under ``local_root``: one run, as the task does it.

    Params as templates render them (see :func:`~pg_dataops.retention.plan.run_params`; None: the
    config's). Raises RetentionRefused (``...; nothing was deleted``) when this clock and S3's
    disagree, when a target's newest verified backup in S3 is too old, or when a plan is refused;
    a dry run whose plan only exceeds ``max_delete_fraction`` still succeeds, with its report.
    Raises RetentionError or RetentionDeleteFailed when S3 or the tree fails (retried).
    """
    params = run_params(cfg, dry_run=dry_run, max_delete_fraction=max_delete_fraction, targets=targets)
    now, server_time = _checked_now(client, cfg, params)
    listings: Listings = {
        "s3": (f"s3://{cfg.bucket}/{cfg.prefix}", list_s3_backups(client, cfg.bucket, cfg.prefix, cfg.timezone)),
        "local": (cfg.local_root, list_local_backups(cfg.local_root, cfg.timezone)),
    }
    plans, refused = _plan_listings(listings, now, cfg, params)
    try:
        # Asked of configured targets only: a removed target named by hand has stopped on purpose. S3 is
        # where every verified backup ends up; a worker's local tree may be partial.
        newest = check_recent_backups(
            listings["s3"][1], now, [t for t in params.targets if t in cfg.target_names],
            dt.timedelta(hours=cfg.monitor_max_backup_age_hours), source=listings["s3"][0], timezone=cfg.timezone)
    except RetentionRefused as exc:
        newest, refused["recent"] = {}, exc  # no plan: fails dry runs too
    _settle_refusals(refused, plans, params.dry_run)
    results = {where: _apply(client, cfg.bucket, where, plan, params.dry_run) for where, plan in plans.items()}

    summary = {
        "dry_run": params.dry_run,
        "now": now.isoformat(),
        "s3_server_time": server_time.isoformat(),
        "max_delete_fraction": params.max_delete_fraction,
        "targets": params.targets,
        "targets_from": params.targets_from,
        "newest_verified": {t: b.display for t, b in sorted(newest.items())},
        **{where: report.listing_summary(source, items, params.targets, plans.get(where), results.get(where),
                                         refused.get(where))
           for where, (source, items) in listings.items()},
    }
    return RetentionOutcome(summary=summary, slack_text=report.slack_summary(summary, plans, results))


def _checked_now(client, cfg: Config, params: RunParams) -> tuple[dt.datetime, dt.datetime]:
    """(now, S3's clock), once they agree: every age is measured from this clock, so it is checked first."""
    try:
        server_time = s3_server_time(client, cfg.bucket)
        now = dt.datetime.now(dt.UTC)  # retention is about what exists now, not the run's logical date
        check_clock(now, server_time, params.max_future_skew, server=f"S3 at {client.meta.endpoint_url}")
    except RetentionRefused as exc:
        raise RetentionRefused(f"{exc}; nothing was deleted") from exc
    return now, server_time


def _plan_listings(listings: Listings, now: dt.datetime, cfg: Config,
                   params: RunParams) -> tuple[dict[str, RetentionPlan], dict[str, RetentionRefused]]:
    """A plan, or its refusal, per listing; an empty local tree is skipped (a worker without local copies)."""
    plans: dict[str, RetentionPlan] = {}
    refused: dict[str, RetentionRefused] = {}
    for where, (source, items) in listings.items():
        if where == "local" and not any(i.target in params.targets for i in items):
            log.info("no local backups of %s under %s: nothing to do locally (a worker without local copies)",
                     ", ".join(params.targets), source)
            continue
        try:
            plans[where] = plan_retention(
                items, now, cfg.retention, max_delete_fraction=params.max_delete_fraction,
                max_future_skew=params.max_future_skew, timezone=cfg.timezone, source=source, targets=params.targets,
            )
        except RetentionRefused as exc:
            refused[where] = exc
    return plans, refused


def _settle_refusals(refused: dict[str, RetentionRefused], plans: dict[str, RetentionPlan], dry_run: bool) -> None:
    """Raise the refusals as one (nothing deleted anywhere), or, in a dry run, report their plans instead.

    A plan that only exceeds max_delete_fraction is still shown by a dry run: that report is how a
    human decides to raise it once. Anything else (empty listing, future timestamps, no recent
    verified backup) fails any run.
    """
    if refused and (not dry_run or any(exc.plan is None for exc in refused.values())):
        reasons = []
        for exc in refused.values():
            hint = ""
            if exc.plan is not None:
                log.error("%s\n%s", exc, report.format_report(exc.plan))
                hint = (f" (a one-off run of this DAG with max_delete_fraction {minimum_fraction(exc.plan)} "
                        "or more lets it through)")
            reasons.append(f"{exc}{hint}")
        raise RetentionRefused("; ".join(reasons) + "; nothing was deleted")
    for where, exc in refused.items():
        log.warning("a real run would be refused: %s", exc)
        plans[where] = exc.plan


def _apply(client, bucket: str, where: str, plan: RetentionPlan, dry_run: bool) -> ApplyResult:
    """One listing's plan carried out (or dry-run), its report logged either way."""
    try:
        result = apply_s3(client, bucket, plan, dry_run) if where == "s3" else apply_local(plan, dry_run)
    except RetentionDeleteFailed as exc:
        log.error("%s", report.format_report(plan, exc.result))
        raise
    log.info("%s", report.format_report(plan, result))
    return result
