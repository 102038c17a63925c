"""A point-in-time recovery's outcome: its ``pitr_recoveries`` row, its measured time, its report. Airflow-free.

pg_pitr_restore writes kind ``restore``, pg_pitr_drill kind ``drill`` (:func:`record`). The measured
recovery time is restore (base backup from S3) + replay (WAL to the target) + checks + copy (into the
target server; a drill has none), judged against the RTO objective (``common.rto``). Failed and refused
recoveries are recorded too, with the cause.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from pg_dataops.catalog.migrations import ensure_schema
from pg_dataops.common import sqlfiles
from pg_dataops.common.formatting import fmt_duration, slack_escape
from pg_dataops.common.rto import assess_rto

KINDS = ("restore", "drill")
PHASES = ("restore_seconds", "verify_seconds", "replay_seconds", "check_seconds", "copy_seconds")


def first_error(step_errors: Iterable[tuple[str, str | None]]) -> tuple[str, str] | None:
    """The first failed step (name, its error XCom) in run order."""
    return next(((name, e) for name, e in step_errors if e), None)


def recovery_row(*, kind: str, target: str, plan: Mapping[str, Any] | None, restored: Mapping | None,
                 recovered: Mapping | None, checked: Mapping | None, copied: Mapping | None,
                 swapped: Mapping | None, approval: Mapping | None, error: tuple[str, str] | None,
                 objective_seconds: float, dag_id: str, run_id: str, details: Mapping | None = None,
                 verified: Mapping | None = None) -> dict[str, Any]:
    """The ``pitr_recoveries`` row from the steps' results (None for a step that returned nothing).

    SUCCESS needs no failed step and a recovered, checked database (a restore: also copied); REFUSED is a
    failure at validation, before anything started; otherwise FAILED with the first failing step's error.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    plan, restored, recovered = plan or {}, restored or {}, recovered or {}
    checked, copied, swapped = checked or {}, copied or {}, swapped or {}
    done = bool(recovered) and bool(checked) and (kind == "drill" or bool(copied))
    if error is None and done:
        status = "SUCCESS"
    elif not plan:
        status = "REFUSED"
    else:
        status = "FAILED"
    # verified: the drill's pg_verifybackup step (pg_pitr_restore has none).
    phases = {"restore_seconds": restored.get("restore_seconds"),
              "verify_seconds": (verified or {}).get("verify_seconds"),
              "replay_seconds": recovered.get("replay_seconds"),
              "check_seconds": checked.get("check_seconds"), "copy_seconds": copied.get("copy_seconds")}
    total = round(sum(v for v in phases.values() if v is not None), 3) if status == "SUCCESS" else None
    message = None
    if status != "SUCCESS":
        if error is None:
            message = "a recovery step did not complete"
        else:  # a step's error XCom already starts with its task id
            message = error[1] if error[1].startswith(f"{error[0]}: ") else f"{error[0]}: {error[1]}"
    return {
        "kind": kind, "target": target, "base_backup_id": plan.get("base_backup"),
        "target_time": plan.get("target_time"), "reached_time": recovered.get("reached_time"),
        "archive_ends_before_target": recovered.get("archive_ends_before_target"),
        "stop_message": recovered.get("stop_message"), **phases, "total_seconds": total,
        "rto_objective_seconds": objective_seconds, "recovered_database": copied.get("database"),
        "swapped": bool(swapped.get("swapped")) if kind == "restore" else None,
        "old_database": swapped.get("old_database"),
        "approved_by": (approval or {}).get("responded_by") if (approval or {}).get("approved") else None,
        "status": status, "error_message": message, "details": dict(details or {}), "dag_id": dag_id,
        "run_id": run_id,
    }


def record(pg: psycopg.Connection, row: Mapping[str, Any]) -> int:
    """Insert one row (see :func:`recovery_row`); returns its id."""
    ensure_schema(pg)
    with pg.transaction():
        return pg.execute(sqlfiles.text("pitr/recover_record.sql"),
                          {**row, "details": Jsonb(row.get("details") or {})}).fetchone()[0]


def approval_text(approval: Mapping[str, Any] | None, requested: bool) -> str:
    if not requested:
        return "swap not requested"
    if not approval:
        return "swap not approved (the approval step did not answer)"
    who = approval.get("responded_by") or "nobody"
    if approval.get("approved"):
        return f"swap approved by {who}"
    if approval.get("timed_out"):
        return "swap rejected: nobody answered the approval in time (approval_timeout_minutes)"
    return f"swap rejected by {who}"


def report_text(row: Mapping[str, Any], *, plan: Mapping[str, Any] | None, recovered: Mapping | None,
                checked: Mapping | None, copied: Mapping | None, swapped: Mapping | None,
                approval: Mapping | None, window_text: str | None, now: dt.datetime | None = None,
                asked_time: str | None = None) -> str:
    """The Slack report: what was recovered to when, the proof, where the time went, the switch-over.
    ``asked_time``: the form's target_time as typed, for a refusal (there is no plan to quote)."""
    plan, recovered, checked = plan or {}, recovered or {}, checked or {}
    copied, swapped = copied or {}, swapped or {}
    target = row["target"]
    when = plan.get("target_time_text") or asked_time or row.get("target_time") or "(no target_time)"
    lines: list[str] = []
    if row["status"] != "SUCCESS":
        refused = row["status"] == "REFUSED"
        verb = "refused before anything started" if refused else "failed"
        lines.append(f":x: Point-in-time recovery of {target} to {when} {verb}: {row['error_message']}")
        if window_text and window_text not in (row["error_message"] or ""):
            lines.append(f"Recoverable window: {window_text}")
        lines.append(f"Nothing of {plan.get('source_database') or target} was changed; "
                     + ("no scratch copy was made." if refused else "the scratch copy on the worker was removed."))
        return slack_escape("\n".join(lines))
    database = copied.get("database") or plan.get("database_name")
    lines.append(f":white_check_mark: Point-in-time recovery of {target} to {when}: {database} is ready on the "
                 "target server")
    reached = recovered.get("reached_time")
    stop = recovered.get("stop_message") or "no commit after the target was found"
    lines.append(f"base backup {row['base_backup_id']} + WAL replayed; {stop}; last replayed commit: "
                 f"{reached or 'none after the base backup'}")
    if recovered.get("archive_ends_before_target"):
        lines.append(":warning: the WAL archive ends before the target: recovered to the end of the archive "
                     f"(last restored segment {recovered.get('last_restored_segment')}); commits after it were never "
                     "archived")
    runbook = ", ".join(f"{k} {v:,}" for k, v in (checked.get("runbook") or {}).items())
    lines.append(f"{checked.get('tables')} tables, {checked.get('rows', 0):,} rows" + (f" ({runbook})" if runbook
                 else "") + "; the copy's counts match the recovered database's (pg_restore --exit-on-error)")
    times = " + ".join(f"{name} {fmt_duration(row[f'{name}_seconds'])}"
                       for name in ("restore", "replay", "check", "copy") if row.get(f"{name}_seconds") is not None)
    verdict = assess_rto(float(row["total_seconds"]), float(row["rto_objective_seconds"]), [],
                         now or dt.datetime.now(dt.UTC))
    lines.append(f"{times} = {fmt_duration(row['total_seconds'])} ({verdict.message})")
    production = plan.get("source_database")
    requested = bool(plan.get("swap"))
    if swapped.get("swapped"):
        kept = swapped.get("old_database")
        lines.append(f"Swapped ({approval_text(approval, True)}): {production} is now the recovered copy; "
                     + (f"the previous database is kept as {kept}." if kept else "there was no previous database."))
        ran = copied.get("commands") or []
        if ran:
            lines.append("It did the same as:\n```\n" + "\n".join(ran) + "\n```")
        rollback = copied.get("rollback") or []
        if rollback:
            lines.append("To roll back (psql as a superuser, database postgres):\n```\n" + "\n".join(rollback)
                         + "\n```")
    else:
        lines.append(f"Not swapped ({approval_text(approval, requested)}). To switch over (psql as a superuser, "
                     "database postgres):\n```\n" + "\n".join(copied.get("commands") or []) + "\n```")
    return slack_escape("\n".join(lines))
