"""Retention's texts: the per-backup report (task log), the per-listing summary (XCom), the Slack summary. Airflow-free."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pg_dataops.common.formatting import fmt_time
from pg_dataops.common.naming import TIERS
from pg_dataops.retention.plan import KEEP, BackupItem, Decision, RetentionPlan, minimum_fraction, window_text

if TYPE_CHECKING:
    from pg_dataops.retention.apply import ApplyResult
    from pg_dataops.retention.plan import RetentionRefused


def format_report(plan: RetentionPlan, applied: ApplyResult | None = None) -> str:
    """One summary line, the policy, then one line per backup: what happened to it and why."""
    tz = plan.now.tzinfo
    lines = [_headline(plan, applied),
             "policy: " + ", ".join(f"{tier} {window_text(plan.policy, tier)} (after {fmt_time(plan.cutoffs[tier], tz)})"
                                    for tier in TIERS)]
    if applied and applied.error:
        lines.append(f"STOPPED: {applied.error}")
    for d in plan.decisions:
        b = d.item
        when = fmt_time(b.timestamp, tz) if b.timestamp else "no timestamp"
        origin = "" if b.timestamp_source == "manifest" else f", time from {b.timestamp_source}"
        verified = ", verified" if b.verified else ""
        lines.append(f"{_label(d, applied):<14} {b.target} {b.tier:<7} {when}  {b.display}  {d.reason}{origin}{verified}")
    if applied and applied.already_gone:
        lines.append("already gone before deletion: " + ", ".join(applied.already_gone))
    if applied and applied.removed_dirs:
        lines.append("removed empty directories: " + ", ".join(applied.removed_dirs))
    return "\n".join(lines)


def _headline(plan: RetentionPlan, applied: ApplyResult | None) -> str:
    if applied is None:
        mode, verb = "plan only", "to delete"
    elif applied.dry_run:
        mode, verb = "DRY RUN, nothing deleted", "would delete"
    else:
        mode, verb = "applied", "deleted"
    n_deleted = len(applied.deleted) if applied and not applied.dry_run else len(plan.delete)
    not_ours = plan.not_ours
    return (
        f"Retention of {plan.source} at {fmt_time(plan.now, plan.now.tzinfo)} ({mode}): {len(plan.decisions)} backups, "
        f"keep {len(plan.keep)}, {verb} {n_deleted}"
        + (f", {len(plan.attention)} need attention" if plan.attention else "")
        + (f", {len(not_ours)} not ours ({', '.join(sorted({d.item.target for d in not_ours}))})" if not_ours else "")
    )


def _label(d: Decision, applied: ApplyResult | None) -> str:
    if d.not_ours:
        return "NOT OURS"
    if d.action == KEEP:
        return "KEEP!" if d.attention else "KEEP"
    if applied is None:
        return "DELETE"
    if applied.dry_run:
        return "WOULD DELETE"
    deleted = applied.deleted.get(d.item.display)
    if deleted is None:
        return "NOT DELETED"
    return "DELETED" if len(deleted) == len(d.item.paths) else "PARTLY DELETED"


def listing_summary(source: str, items: list[BackupItem], targets: list[str], plan: RetentionPlan | None,
                    result: ApplyResult | None, refused: RetentionRefused | None) -> dict:
    """One listing's part of the run's XCom (JSON-safe): counts, and the keys (or paths) deleted or that a
    real run would delete."""
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
        "report": format_report(plan, result).splitlines()[0],
        "not_ours": not_ours,
    }


def slack_summary(summary: dict, plans: dict[str, RetentionPlan], results: dict[str, ApplyResult]) -> str:
    """The run in a few lines: each listing's headline (or why it had nothing to do) and the policy."""
    mode = "DRY RUN, nothing deleted" if summary["dry_run"] else "applied"
    lines = [f":wastebasket: Backup retention ({mode})"]
    policy = None
    for where in ("s3", "local"):
        if where in plans:
            first, policy = format_report(plans[where], results[where]).splitlines()[:2]
            lines.append(first)
            if summary[where]["refused"]:
                lines.append(f"a real run would be refused: needs max_delete_fraction >= "
                             f"{summary[where]['minimum_max_delete_fraction']}")
        else:
            lines.append(f"no local backups of {', '.join(summary['targets'])} under {summary[where]['source']}")
    lines.append(policy)
    return "\n".join(lines)
