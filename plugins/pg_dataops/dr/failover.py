"""pg_failover: promote a target's streaming standby when the primary is lost. Airflow-free.

The runbook's failover.sh (section 2.2) checked ``pg_isready``, ran ``pg_ctl promote`` over SSH, rewrote the
env file with ``sed``, restarted the application and changed the DNS record: all or nothing, unlogged, no
check that the standby was caught up, nothing stopping two primaries. Here:

- :func:`assess` (validate) decides from what both servers say, before anything changes: a healthy primary is
  refused unless ``force``; the standby must be reachable and be the primary's standby; the data a failover
  would lose is computed (exact when the primary still answers, else "what the standby never received after
  its last message from the primary"); the Markdown of the approval says all of it.
- Each later step is idempotent, so a rerun after a failure midway finishes the job: fence (configured
  command), promote (``pg_promote(wait => true)``; a standby already promoted is left as it is), point the
  application (env file, the Airflow connection, Route53) at it, restart the application, verify with writes.
- :func:`report_row` / :func:`report_text`: the ``failovers`` catalog row and the timeline sent to Slack and
  PagerDuty, every step with its duration, and the failover time (trigger to writable new primary).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from pg_dataops.catalog.migrations import ensure_schema
from pg_dataops.common import sqlfiles
from pg_dataops.common.errors import BackupError, PermanentError
from pg_dataops.common.formatting import fmt_bytes
from pg_dataops.common.pg import PgConn
from pg_dataops.dr import replication

STATUSES = ("SUCCESS", "DRY_RUN", "REJECTED", "FAILED", "REFUSED")
# The order of the timeline (the DAG's tasks after the approval).
STEPS = ("validate", "approve", "fence", "promote", "repoint", "restart_app", "dns", "verify")


class FailoverRefused(PermanentError):
    """The failover must not happen as asked (healthy primary without force, wrong confirm, no standby...)."""


class FailoverFailed(BackupError):
    """A failover step did not complete; a rerun of the DAG with the same params continues from it."""


def endpoint(conn: PgConn) -> str:
    return f"{conn.host}:{conn.port}"


# --- validate ---------------------------------------------------------------------------------------


def assess(*, target: str, standby_name: str, slot: str, primary_conn: PgConn, standby_conn: PgConn,
           primary: Mapping[str, Any] | None, primary_error: str | None, standby: Mapping[str, Any] | None,
           standby_error: str | None, force: bool, dry_run: bool, confirm: str,
           failover_cfg: Any, dns_value: str | None, now: dt.datetime) -> dict[str, Any]:
    """The failover plan (JSON-safe), or FailoverRefused naming why, from both servers' state.

    ``primary``: :func:`replication.primary_status` when the primary answered a query (else None and
    ``primary_error``); ``standby``: :func:`replication.standby_status` likewise."""
    confirm = (confirm or "").strip()
    if confirm and confirm != standby_name:
        raise FailoverRefused(f"confirm {confirm!r} is not the standby's name {standby_name!r}: refused before any "
                              "check (leave confirm empty to approve in the Airflow UI)")
    if endpoint(primary_conn) == endpoint(standby_conn):
        raise FailoverRefused(f"the standby's connection points at the primary itself ({endpoint(primary_conn)}): "
                              "fix dr.standbys.<target>.conn_id")
    if standby is None:
        raise FailoverRefused(f"the standby {standby_name} at {endpoint(standby_conn)} does not answer: "
                              f"{standby_error}. There is nothing to fail over to")
    primary_up = primary is not None and not primary.get("in_recovery")
    if primary is not None and standby.get("system_identifier") != primary.get("system_identifier"):
        raise FailoverRefused(f"the standby at {endpoint(standby_conn)} is not a copy of the primary (system "
                              f"identifier {standby.get('system_identifier')} against the primary's "
                              f"{primary.get('system_identifier')}): refusing to promote an unrelated server")
    already_promoted = not standby.get("in_recovery")
    if primary_up and not force:
        lsn = primary.get("current_lsn")
        raise FailoverRefused(
            f"the primary at {endpoint(primary_conn)} is healthy (it answers queries and writes WAL, at {lsn}): a "
            "failover now would leave two primaries and lose what is written meanwhile. For a planned switchover, "
            "run again with force = true (the old primary is fenced first when dr.failover.fence is set)")
    loss = data_loss(primary if primary_up else None, standby)
    plan = {
        "target": target, "standby": standby_name, "slot": slot, "force": bool(force), "dry_run": bool(dry_run),
        "expected_confirm": standby_name, "checked_at": now.astimezone(dt.UTC).isoformat(),
        "old_primary": endpoint(primary_conn), "new_primary": endpoint(standby_conn),
        "new_host": standby_conn.host, "new_port": standby_conn.port, "dns_value": dns_value or standby_conn.host,
        "primary_state": ("healthy" if primary_up else "in recovery" if primary is not None else "down"),
        "primary_error": primary_error, "primary_lsn": (primary or {}).get("current_lsn"),
        "standby_status": {k: standby.get(k) for k in ("in_recovery", "receive_lsn", "replay_lsn", "last_replay_at",
                                                         "replay_paused", "replay_backlog_bytes", "timeline")},
        "receiver": standby.get("receiver"),
        "already_promoted": already_promoted, "loss": loss,
        "steps": planned_steps(failover_cfg, already_promoted=already_promoted),
    }
    plan["markdown"] = plan_markdown(plan)
    return plan


def data_loss(primary: Mapping[str, Any] | None, standby: Mapping[str, Any]) -> dict[str, Any]:
    """What a promotion now would lose. With the primary answering: exactly the WAL it wrote that the standby has
    not received. Without it: what the standby received is kept (its replay finishes before the promotion ends),
    and whatever the primary committed after the standby's last message from it is unknown and lost."""
    received = standby.get("receive_lsn") or standby.get("replay_lsn")
    out: dict[str, Any] = {"received_lsn": received, "replayed_lsn": standby.get("replay_lsn"),
                           "unreplayed_bytes": standby.get("replay_backlog_bytes") or 0}
    if not standby.get("in_recovery"):
        return {**out, "known": True, "bytes": 0, "why": "the standby was promoted already (a rerun)"}
    if primary is not None:
        lost = replication.lsn_bytes(primary.get("current_lsn"), received) or 0
        return {**out, "known": True, "bytes": lost, "primary_lsn": primary.get("current_lsn"),
                "why": f"the primary is at {primary.get('current_lsn')}, the standby received up to {received}"}
    receiver = standby.get("receiver") or {}
    last = receiver.get("last_msg_receipt_time") or standby.get("last_replay_at")
    return {**out, "known": False, "bytes": None, "last_contact": last,
            "primary_reported_lsn": receiver.get("latest_end_lsn"),
            "why": (f"the primary does not answer; the standby received WAL up to {received}"
                    + (f" (last message from the primary at {last})" if last else "")
                    + ". Anything the primary committed and never sent is lost")}


def planned_steps(failover_cfg: Any, *, already_promoted: bool) -> list[dict[str, Any]]:
    """Each step after the approval, and whether it will act or say why not."""
    route53 = failover_cfg.route53
    return [
        {"step": "fence", "does": failover_cfg.fence.describe() if failover_cfg.fence else None,
         "skipped": None if failover_cfg.fence else "no dr.failover.fence configured"},
        {"step": "promote", "does": "SELECT pg_promote(wait => true), then a write",
         "skipped": "already promoted (a rerun): only the write is checked" if already_promoted else None},
        {"step": "repoint", "does": ", ".join(filter(None, [
            f"env file {failover_cfg.env_file}" if failover_cfg.env_file else None,
            "the Airflow connection" if failover_cfg.airflow_api_conn_id else None])) or None,
         "skipped": None if (failover_cfg.env_file or failover_cfg.airflow_api_conn_id) else
         "neither dr.failover.env_file nor dr.failover.airflow_api_conn_id configured"},
        {"step": "restart_app", "does": failover_cfg.app_restart.describe() if failover_cfg.app_restart else None,
         "skipped": None if failover_cfg.app_restart else "no dr.failover.app_restart configured"},
        {"step": "dns", "does": f"UPSERT {route53.record_type} {route53.record_name}" if route53 else None,
         "skipped": None if route53 else "no dr.failover.route53 configured"},
        {"step": "verify", "does": "a write through the new primary, its DNS name and the Airflow connection",
         "skipped": None},
    ]


def plan_markdown(plan: Mapping[str, Any]) -> str:
    """The approval's body: what is down, what the standby has, what would be lost, what each step does."""
    loss = plan["loss"]
    st = plan["standby_status"]
    lines = [f"## Fail over {plan['target']} to the standby {plan['standby']}", "",
             f"* **Primary** {plan['old_primary']}: **{plan['primary_state']}**"
             + (f" ({plan['primary_error']})" if plan.get("primary_error") else "")
             + (" - force = true: it will be fenced, if configured, and left running" if plan["force"] else ""),
             f"* **Standby** {plan['new_primary']}: "
             + ("already promoted (a rerun)" if plan["already_promoted"] else
                f"in recovery, received {st.get('receive_lsn')}, replayed {st.get('replay_lsn')}"
                f" (last replayed transaction {st.get('last_replay_at') or 'unknown'})"
                + (", **replay paused** (the promotion resumes it)" if st.get("replay_paused") else "")),
             "* **Data lost by failing over now**: "
             + (f"**{fmt_bytes(loss['bytes'])}** of WAL ({loss['bytes']} bytes): {loss['why']}" if loss["known"]
                else f"**unknown**: {loss['why']}"), "", "Steps:"]
    for s in plan["steps"]:
        lines.append(f"1. **{s['step']}**: " + (f"skipped ({s['skipped']})" if s["skipped"] and not s["does"]
                                                  else (s["does"] or "") + (f" - {s['skipped']}" if s["skipped"] else "")))
    lines += ["", "Afterwards the old primary must not start as a primary again: rebuild it as a standby "
                  "(pg_rewind or pg_standby_provision into an empty directory)."]
    return "\n".join(lines)


# --- the steps --------------------------------------------------------------------------------------


def promote(connect: Callable[[], psycopg.Connection], *, timeout_seconds: int,
            sleep: Callable[[float], None] = time.sleep) -> dict[str, Any]:
    """Promote the standby and return once it accepts a write: ``{"promoted", "already_promoted", "seconds",
    "writable_at", "xid", "lsn", "timeline"}``. A server already out of recovery is not promoted again."""
    started = time.monotonic()
    with connect() as pg:
        status = replication.standby_status(pg)
        already = not status["in_recovery"]
        if not already:
            with pg.cursor() as cur:
                cur.execute(sqlfiles.text("dr/promote.sql"), {"wait_seconds": int(timeout_seconds)})
                (promoted,) = cur.fetchone()
            if not promoted:
                raise FailoverFailed(f"pg_promote did not finish within {timeout_seconds} s "
                                     "(dr.failover.promote_timeout_seconds): the standby is still in recovery; "
                                     "see its log, then run the DAG again")
    deadline = started + timeout_seconds
    last_error = ""
    while True:
        try:
            with connect() as pg:
                probe = replication.write_probe(pg)
                timeline = replication.standby_status(pg)["timeline"]
            break
        except (psycopg.Error, BackupError) as exc:
            last_error = str(exc).strip()
            if time.monotonic() >= deadline:
                raise FailoverFailed(f"the promoted server does not accept writes after {timeout_seconds} s: "
                                     f"{last_error}") from None
            sleep(0.2)
    return {"promoted": not already, "already_promoted": already, "seconds": round(time.monotonic() - started, 3),
            "writable_at": probe["at"], "xid": probe["xid"], "lsn": probe["lsn"], "timeline": timeline}


def verify(checks: Sequence[tuple[str, Callable[[], psycopg.Connection]]], *, identity: tuple[str, int] | None,
           expected_env: Mapping[str, str] | None = None, env_values: Mapping[str, str | None] | None = None
           ) -> dict[str, Any]:
    """A write through each way of reaching the new primary (``(what, connect)``), each landing on the promoted
    server, and the env file's values. FailoverFailed naming every way that failed.

    ``identity``: the new primary's (system identifier, timeline). The old primary has the same system
    identifier (the standby is its copy) but stays on the old timeline: a way that still reaches it (a fenced
    but running old primary, a stale DNS answer) is caught."""
    results, problems = [], []
    for what, connect in checks:
        try:
            with connect() as pg:
                probe = replication.write_probe(pg)
                status = replication.standby_status(pg)
        except (psycopg.Error, BackupError) as exc:
            problems.append(f"{what}: no write possible ({str(exc).strip()[:300]})")
            continue
        found = (status["system_identifier"], status["timeline"])
        if identity and found != tuple(identity):
            problems.append(f"{what}: reaches another server (system identifier {found[0]}, timeline {found[1]}; "
                            f"the new primary is {identity[0]} on timeline {identity[1]})")
            continue
        results.append({"via": what, "xid": probe["xid"], "lsn": probe["lsn"]})
    for key, value in (expected_env or {}).items():
        if (env_values or {}).get(key) != value:
            problems.append(f"env file: {key} is {(env_values or {}).get(key)!r}, expected {value!r}")
    if problems:
        raise FailoverFailed("verification failed: " + "; ".join(problems))
    return {"writes": results, "env": dict(env_values or {})}


# --- the report -------------------------------------------------------------------------------------


def status_of(*, plan: Mapping | None, error: str | None, approval: Mapping | None, done: bool) -> str:
    if not plan:
        return "REFUSED"
    if error:
        return "FAILED"
    if plan.get("dry_run"):
        return "DRY_RUN"
    if not (approval or {}).get("approved"):
        return "REJECTED" if approval else "FAILED"
    return "SUCCESS" if done else "FAILED"


def _parse_ts(value: Any) -> dt.datetime | None:
    if isinstance(value, dt.datetime):
        return value
    if isinstance(value, str) and value:
        try:
            return dt.datetime.fromisoformat(value)
        except ValueError:
            return None
    return None


def report_row(*, plan: Mapping | None, results: Mapping[str, Any], timings: Mapping[str, Mapping[str, Any]],
               error: str | None, approval: Mapping | None, target: str, params: Mapping[str, Any],
               triggered_by: str | None, triggered_at: dt.datetime, dag_id: str, run_id: str) -> dict[str, Any]:
    """The ``failovers`` row. ``timings``: {step: {"state", "seconds"}} from the task instances;
    ``results``: each step's return value where it succeeded."""
    status = status_of(plan=plan, error=error, approval=approval, done=bool(results.get("verify")))
    promoted = results.get("promote") or {}
    writable = _parse_ts(promoted.get("writable_at"))
    failover_seconds = round((writable - triggered_at).total_seconds(), 3) if writable else None
    timeline = [{"step": s, **dict(timings.get(s) or {"state": "not run"})} for s in STEPS]
    approved = (approval or {}).get("approved")
    return {
        "target": target, "standby": (plan or {}).get("standby") or params.get("standby"), "status": status,
        "dry_run": bool(params.get("dry_run")), "forced": bool(params.get("force")), "triggered_by": triggered_by,
        "approved_by": (approval or {}).get("responded_by") if approved else None,
        "params": dict(params), "old_primary": (plan or {}).get("old_primary"),
        "new_primary": (plan or {}).get("new_primary"), "primary_state": (plan or {}).get("primary_state"),
        "loss": (plan or {}).get("loss"), "failover_seconds": failover_seconds,
        "total_seconds": round(sum(float(t.get("seconds") or 0) for t in timeline), 3),
        "timeline": timeline, "results": {k: v for k, v in results.items() if k != "validate"},
        "error_message": error if status in ("FAILED", "REFUSED") else None, "dag_id": dag_id, "run_id": run_id,
    }


def report_text(row: Mapping[str, Any]) -> str:
    """Slack's text (and PagerDuty's summary's first line): the outcome, the loss, the timeline."""
    head = {
        "SUCCESS": f":rotating_light: Failover of {row['target']} done: {row['new_primary']} is the primary",
        "DRY_RUN": f":mag: Failover of {row['target']} dry run: nothing was changed",
        "REJECTED": f":no_entry_sign: Failover of {row['target']} not approved: nothing was changed",
        "FAILED": f":x: Failover of {row['target']} FAILED midway: run the DAG again with the same params to finish",
        "REFUSED": f":no_entry: Failover of {row['target']} refused, nothing was changed",
    }[row["status"]]
    lines = [head]
    if row.get("error_message"):
        lines.append(f"Cause: {row['error_message']}")
    if row.get("failover_seconds") is not None:
        lines.append(f"Failover time (trigger to writable new primary): {row['failover_seconds']:.1f} s")
    loss = row.get("loss") or {}
    if loss:
        lines.append("Data lost: " + (f"{fmt_bytes(loss['bytes'])} of WAL" if loss.get("known") else "unknown")
                     + f" ({loss.get('why')})")
    lines.append("Timeline:")
    for t in row["timeline"]:
        secs = f"{float(t['seconds']):.1f} s" if t.get("seconds") is not None else "-"
        lines.append(f"  {t['step']}: {t['state']} ({secs})")
    if row["status"] == "SUCCESS":
        lines.append("Next: keep the old primary stopped; rebuild it as a standby (pg_rewind, or pg_standby_provision "
                     "into an empty directory) and update dr.standbys.")
    lines.append(f"triggered by {row.get('triggered_by')}; run {row['run_id']}")
    return "\n".join(lines)


def record(pg: psycopg.Connection, row: Mapping[str, Any]) -> int:
    """Insert one ``failovers`` row; returns its id."""
    ensure_schema(pg)
    with pg.transaction():
        return pg.execute(sqlfiles.text("dr/record_failover.sql"), {
            **row, "params": Jsonb(row.get("params") or {}), "loss": Jsonb(row.get("loss")),
            "timeline": Jsonb(row.get("timeline") or []), "results": Jsonb(row.get("results") or {}),
        }).fetchone()[0]
