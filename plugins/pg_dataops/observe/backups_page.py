"""The Backups page of the Airflow UI: what it shows per target, gathered (:func:`collect`) and drawn
(:func:`render`). Airflow-free; the FastAPI app in ``pg_dataops.airflow.backups_app`` serves both.

:func:`collect` reads the catalog and S3 through the same core functions and SQL the DAGs use (the daily
report's trend, the monitor's alert state, retention's listing and planner, PITR's inventory, the RTO verdict).
It never writes: no ``ensure_schema`` (a missing catalog table is found with ``to_regclass`` and shown as
"nothing recorded"), a catalog session it opens itself is read-only, and retention is only planned. A section
that cannot be read carries ``{"error": "<what>: <why>"}`` (redacted) instead of failing the page.

:func:`render` turns that dict into one complete HTML page: inline CSS and inline SVG charts, no script, no
external resource, so it works without internet (and inside the UI's iframe: links to Airflow's own pages
use ``target="_top"``).

The restore buttons: Airflow 3.3's trigger form takes its initial values from the DAG's params (or, with
"Trigger again with config" on a run's page, from that run's conf); no URL or query parameter fills it in
(checked in the 3.3.2 UI bundle: its routes have no trigger path and the form reads no search parameter).
So each button opens the DAG's page, where Trigger opens the form, and the values to paste are shown next to it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import html
import zoneinfo
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import quote

import psycopg
from botocore.exceptions import BotoCoreError, ClientError
from croniter import croniter
from psycopg.rows import dict_row

from pg_dataops.common import pg as pgmod
from pg_dataops.common import sqlfiles, wal
from pg_dataops.common.config import Config
from pg_dataops.common.errors import redact
from pg_dataops.common.formatting import fmt_bytes, fmt_duration, fmt_instant, fmt_time
from pg_dataops.common.guards import age_text, check_clock, s3_server_time
from pg_dataops.common.naming import TIERS
from pg_dataops.common.pg import PgConn
from pg_dataops.common.rto import assess_rto
from pg_dataops.common.s3 import describe_error
from pg_dataops.dr import check as dr_check
from pg_dataops.dr import replication as dr_replication
from pg_dataops.drill.rto import TREND_WINDOW
from pg_dataops.observe import report
from pg_dataops.observe.monitor import DEDUP_PREFIX as MONITOR_PREFIX
from pg_dataops.pitr import archive_check, inventory
from pg_dataops.pitr import retention as pitr_retention
from pg_dataops.retention import plan as retention_plan
from pg_dataops.retention.apply import list_s3_backups

TREND_DAYS = 30  # the sizes and durations chart
RTO_WINDOW = TREND_WINDOW  # the drills chart: the window the drills' own RTO trend is drawn through (180 days)
CATALOG_CONNECT_TIMEOUT = 5  # seconds: a page waits this long for the catalog, then says it is unreachable
CATALOG_STATEMENT_TIMEOUT = 30  # seconds: a page's query, not a report's
RETENTION_KEYS_SHOWN = 5  # "the first few keys" tonight's retention would delete
ERROR_CHARS = 500  # an error on a page, not a log
MIB, GIB = 1024**2, 1024**3

# The restore DAGs a target's buttons open, and what each form needs from this page.
FULL_RECOVERY, TABLE_RESTORE, PITR_RESTORE = "pg_full_recovery", "pg_table_restore", "pg_pitr_restore"
RESTORE_LABELS = {FULL_RECOVERY: "Full recovery", TABLE_RESTORE: "Table restore", PITR_RESTORE: "Point-in-time restore"}
# Measured recoveries on the drills chart: kind -> (label, SQL, the catalog table it needs).
DRILL_KINDS = {
    "restore_drill": ("restore drill", "page/restore_drills.sql", "restore_drills"),
    "pitr_drill": ("PITR drill", "page/pitr_drills.sql", "pitr_recoveries"),
    "rehearsal": ("full recovery rehearsal", "page/rehearsals.sql", "restore_logs"),
}
# monitor_alerts keys: the monitor's are <prefix>/<check>/<target>, the per-target checks' <prefix>/<target>/<check>.
TARGET_FIRST_PREFIXES = (dr_check.DEDUP_PREFIX, archive_check.DEDUP_PREFIX)

Replication = Callable[[str], Mapping[str, Any] | None]


# --- collect ---------------------------------------------------------------------------------------


def collect(cfg: Config, *, catalog: PgConn | psycopg.Connection, s3_client, now: dt.datetime,
            replication: Replication | None = None) -> dict[str, Any]:
    """Everything the page shows, as of ``now`` (timezone-aware), JSON-safe.

    ``catalog``: a PgConn (connected here, read-only, with a short connect and statement timeout, closed after)
    or an open psycopg connection (used as given, only SELECTs). ``replication(target)``: the standby's facts
    (see :func:`read_replication`) or None when not measured; only asked for targets with a standby.

    Returns ``{"generated_at", "timezone", "rto_objective_seconds", "location", "prefill_supported",
    "retention", "other_alerts", "targets"}``; ``targets`` is one dict per configured target, in config order:
    ``{"name", "newest", "trend", "drills", "pitr", "replication", "alerts", "retention", "restore"}``. Each
    section is a dict, with ``"error"`` when it could not be read.
    """
    if now.tzinfo is None:
        raise ValueError("collect needs a timezone-aware 'now'")
    names = cfg.target_names
    from_catalog = _read_catalog(cfg, catalog, names, now)
    items, listing_error = _guard(f"listing s3://{cfg.bucket}/{cfg.prefix}",
                                  lambda: list_s3_backups(s3_client, cfg.bucket, cfg.prefix, cfg.timezone))
    retention = _retention(cfg, s3_client, items, listing_error, now)
    targets = []
    for name in names:
        targets.append({
            "name": name,
            "newest": from_catalog["newest"][name],
            "trend": from_catalog["trend"][name],
            "drills": from_catalog["drills"][name],
            "pitr": _pitr(cfg, s3_client, name, now),
            "replication": _replication(cfg, name, replication),
            "alerts": from_catalog["alerts"][name],
            "retention": retention["targets"][name],
            "restore": _restore_forms(cfg, name, items, from_catalog["newest"][name]),
        })
    return _jsonable({
        "generated_at": now.astimezone(dt.UTC).isoformat(),
        "timezone": cfg.timezone,
        "rto_objective_seconds": cfg.rto_objective_seconds,
        "location": f"s3://{cfg.bucket}/{cfg.prefix}",
        "prefill_supported": False,  # Airflow 3.3's trigger form cannot be filled in from a link (module docstring)
        "retention": {k: v for k, v in retention.items() if k != "targets"},
        "other_alerts": from_catalog["other_alerts"],
        "targets": targets,
    })


def _guard(what: str, read: Callable[[], Any], *secrets: str | None) -> tuple[Any, str | None]:
    """``(read(), None)``, or ``(None, "<what>: <why>")``: one section failing must not fail the page."""
    try:
        return read(), None
    except Exception as exc:  # any failure of a read becomes the section's text
        return None, _error_text(what, exc, *secrets)


def _error_text(what: str, exc: BaseException, *secrets: str | None) -> str:
    why = describe_error(exc) if isinstance(exc, (ClientError, BotoCoreError)) else (str(exc) or type(exc).__name__)
    text = " ".join(redact(f"{what}: {why}", *secrets).split())  # libpq's messages span lines
    return text if len(text) <= ERROR_CHARS else text[: ERROR_CHARS - 3] + "..."


# --- the catalog -----------------------------------------------------------------------------------


def _read_catalog(cfg: Config, catalog: PgConn | psycopg.Connection, names: list[str],
                  now: dt.datetime) -> dict[str, Any]:
    """``{"newest", "trend", "drills", "alerts": {target: section}, "other_alerts": section}``; a part that
    could not be read gives every target ``{"error": ...}``."""
    password = catalog.password if isinstance(catalog, PgConn) else None
    parts = {"newest": ("backup_logs", _newest), "trend": ("backup_logs", _trend),
             "drills": ("restore drills", _drills), "alerts": ("monitor_alerts", _alerts)}

    def failed(error: str) -> dict[str, Any]:
        return {part: {name: {"error": error} for name in names} for part in parts} | {"other_alerts": {"error": error}}

    pg, error = _guard("catalog", lambda: _open_catalog(catalog), password)
    if pg is None:
        return failed(error)
    try:
        tables, error = _guard("catalog", lambda: _query(pg, "page/catalog_tables.sql", {})[0], password)
        if tables is None:
            return failed(error)
        out: dict[str, Any] = {}
        for part, (what, read) in parts.items():
            result, error = _guard(f"catalog {what}", lambda read=read: read(pg, cfg, names, now, tables), password)
            if error:
                result = failed(error)[part]
                if part == "alerts":
                    out["other_alerts"] = {"error": error}
            elif part == "alerts":
                result, out["other_alerts"] = result
            out[part] = result
        return out
    finally:
        if not isinstance(catalog, psycopg.Connection):
            pg.close()


def _open_catalog(catalog: PgConn | psycopg.Connection) -> psycopg.Connection:
    if isinstance(catalog, psycopg.Connection):
        return catalog
    # A page must answer: a bounded wait for the server and for each query.
    limits = dataclasses.replace(catalog, statement_timeout=min(catalog.statement_timeout or CATALOG_STATEMENT_TIMEOUT,
                                                                CATALOG_STATEMENT_TIMEOUT))
    pg = pgmod.connect(limits, connect_timeout=CATALOG_CONNECT_TIMEOUT)
    pg.read_only = True  # every transaction READ ONLY: the server refuses a write, whatever a query says
    return pg


def _query(pg: psycopg.Connection, name: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One statement in its own transaction, so one part failing leaves the next one a working session."""
    with pg.transaction(), pg.cursor(row_factory=dict_row) as cur:
        return cur.execute(sqlfiles.text(name), params).fetchall()


def _newest(pg: psycopg.Connection, cfg: Config, names: list[str], now: dt.datetime,
            tables: Mapping[str, bool]) -> dict[str, dict[str, Any]]:
    rows = _query(pg, "page/newest_backups.sql", {"targets": names, "tiers": list(TIERS), "now": now}) \
        if tables["backup_logs"] else []
    out: dict[str, dict[str, Any]] = {}
    for name in names:
        mine = {r["tier"]: r for r in rows if r["target"] == name}
        out[name] = {"tiers": [_tier_entry(tier, mine.get(tier), now) for tier in TIERS]}
        if not tables["backup_logs"]:
            out[name]["note"] = "no backup recorded yet (the catalog has no backup_logs table)"
    return out


def _tier_entry(tier: str, row: Mapping[str, Any] | None, now: dt.datetime) -> dict[str, Any]:
    entry: dict[str, Any] = {"tier": tier, "backup": None, "failed_after": None}
    if row is None:
        return entry
    if row["backup_date"] is not None:
        entry["backup"] = {
            "backup_date": row["backup_date"], "age_seconds": round((now - row["backup_date"]).total_seconds(), 1),
            "file_name": row["file_name"], "size_bytes": row["file_size_bytes"],
            "duration_seconds": row["duration_seconds"], "verified": row["verified"],
            "verified_at": row["verified_at"], "s3_uploaded": row["s3_uploaded"], "s3_key": row["s3_key"],
            "dag_id": row["dag_id"], "run_id": row["run_id"], "run_url": run_path(row["dag_id"], row["run_id"]),
        }
    if row["attempt_status"] == "FAILED" and (row["backup_date"] is None or row["attempt_date"] > row["backup_date"]):
        # The newest attempt of this tier failed: its cause stands next to the backup that still counts.
        entry["failed_after"] = {
            "at": row["attempt_date"], "failed_step": row["attempt_failed_step"], "error": row["attempt_error"],
            "dag_id": row["attempt_dag_id"], "run_id": row["attempt_run_id"],
            "run_url": run_path(row["attempt_dag_id"], row["attempt_run_id"]),
        }
    return entry


def _trend(pg: psycopg.Connection, cfg: Config, names: list[str], now: dt.datetime,
           tables: Mapping[str, bool]) -> dict[str, dict[str, Any]]:
    """The daily report's 30-day trend (its SQL and its one-value-per-day rule), per target and tier."""
    tz = zoneinfo.ZoneInfo(cfg.timezone)
    today = now.astimezone(tz).date()
    days = [today - dt.timedelta(days=TREND_DAYS - 1 - i) for i in range(TREND_DAYS)]
    since = dt.datetime.combine(days[0], dt.time(0), tzinfo=tz)
    rows = _query(pg, "report/trend.sql", {"since": since, "now": now}) if tables["backup_logs"] else []
    _key, _lines, data = report._trend_section([r for r in rows if r["target"] in names], days, tz)
    series = {(s["target"], s["tier"]): s for s in data["series"]}
    empty = [None] * TREND_DAYS
    return {name: {"days": data["days"], "tiers": {
        tier: {"size_bytes": series.get((name, tier), {}).get("size_bytes", empty),
               "duration_seconds": series.get((name, tier), {}).get("duration_seconds", empty)}
        for tier in TIERS}} for name in names}


def _drills(pg: psycopg.Connection, cfg: Config, names: list[str], now: dt.datetime,
            tables: Mapping[str, bool]) -> dict[str, dict[str, Any]]:
    since, objective = now - RTO_WINDOW, cfg.rto_objective_seconds
    out = {name: {"objective_seconds": objective, "since": since, "until": now, "kinds": {}} for name in names}
    for kind, (label, sql_file, table) in DRILL_KINDS.items():
        rows = _query(pg, sql_file, {"targets": names, "since": since, "now": now}) if tables[table] else []
        for name in names:
            points = [{"at": r["at"], "status": r["status"], "seconds": r["seconds"], "error": r["error_message"],
                       "backup": r["backup_file"], "run_url": run_path(r["dag_id"], r["run_id"])}
                      for r in rows if r["target"] == name]
            out[name]["kinds"][kind] = {"label": label, "points": points, "latest": points[-1] if points else None,
                                        "verdict": _verdict(points, objective)}
    return out


def _verdict(points: list[dict[str, Any]], objective: float) -> dict[str, Any] | None:
    """The RTO verdict of the newest measured recovery against the objective and the earlier ones' trend."""
    measured = [p for p in points if p["status"] == "SUCCESS" and p["seconds"] is not None]
    if not measured:
        return None
    last = measured[-1]
    verdict = assess_rto(last["seconds"], objective, [(p["at"], p["seconds"]) for p in measured[:-1]], last["at"])
    return {"status": verdict.status, "message": verdict.message, "measured_seconds": last["seconds"],
            "measured_at": last["at"]}


def _alerts(pg: psycopg.Connection, cfg: Config, names: list[str], now: dt.datetime,
            tables: Mapping[str, bool]) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """(per target ``{"open": [...]}``, the open alerts no configured target owns: free space, a removed target)."""
    rows = _query(pg, "monitor/alert_state.sql", {}) if tables["monitor_alerts"] else []
    per_target: dict[str, dict[str, Any]] = {name: {"open": []} for name in names}
    other: dict[str, Any] = {"open": []}
    for r in rows:
        if not r["failing"]:
            continue
        source, check, target = alert_parts(r["dedup_key"], names)
        entry = {"dedup_key": r["dedup_key"], "source": source, "check": check, "severity": r["severity"],
                 "message": r["message"], "since": r["changed_at"], "last_seen": r["last_seen_at"]}
        (per_target[target] if target is not None else other)["open"].append(entry)
    for section in (*per_target.values(), other):
        section["open"].sort(key=lambda a: (a["severity"] != "page", a["since"]))
    return per_target, other


def alert_parts(dedup_key: str, targets: Sequence[str]) -> tuple[str, str, str | None]:
    """``(source, check, target)`` of a monitor_alerts key; target None when no configured target owns it."""
    source, _, rest = dedup_key.partition("/")
    if source in TARGET_FIRST_PREFIXES:
        target, _, check = rest.partition("/")
    elif source == MONITOR_PREFIX:
        check, _, target = rest.partition("/")
    else:
        return source, rest, None
    return source, check, target if target in targets else None


# --- S3: retention, PITR ---------------------------------------------------------------------------


def _retention(cfg: Config, client, items, listing_error: str | None, now: dt.datetime) -> dict[str, Any]:
    """What a pg_backup_retention run would delete now: its own run params, S3 clock check, planner and
    recent-backup guard, on the S3 listing (the API server's disk is not the workers' local tree)."""
    params = retention_plan.run_params(cfg, dry_run=True)
    source = f"s3://{cfg.bucket}/{cfg.prefix}"
    out: dict[str, Any] = {"as_of": now, "source": source,
                           "policy": {t: retention_plan.window_text(cfg.retention, t) for t in TIERS},
                           "max_delete_fraction": params.max_delete_fraction, "refused": []}
    if items is None:
        out["error"] = listing_error
        out["targets"] = {name: {"error": listing_error} for name in cfg.target_names}
        return out
    refused = out["refused"]

    def clock() -> None:
        check_clock(now, s3_server_time(client, cfg.bucket), params.max_future_skew, server="S3")

    _, error = _guard("S3 clock", clock)
    if error:
        refused.append(error)
    plan = None
    try:
        plan = retention_plan.plan_retention(
            items, now, cfg.retention, max_delete_fraction=params.max_delete_fraction,
            max_future_skew=params.max_future_skew, timezone=cfg.timezone, source=source, targets=params.targets)
    except retention_plan.RetentionRefused as exc:
        refused.append(str(exc))
        plan = exc.plan  # a plan that is only too large is still what a real run would want to delete
    try:
        retention_plan.check_recent_backups(items, now, params.targets,
                                            dt.timedelta(hours=cfg.monitor_max_backup_age_hours), source=source,
                                            timezone=cfg.timezone)
    except retention_plan.RetentionRefused as exc:
        refused.append(str(exc))
    out["targets"] = {name: _retention_of(plan, name, refused) for name in cfg.target_names}
    return out


def _retention_of(plan: retention_plan.RetentionPlan | None, name: str, refused: list[str]) -> dict[str, Any]:
    section: dict[str, Any] = {"refused": list(refused), "planned": plan is not None}
    if plan is None:
        return section
    mine = [d for d in plan.decisions if d.item.target == name]
    delete = sorted((d for d in mine if d.action == retention_plan.DELETE),
                    key=lambda d: (d.item.timestamp, d.item.file))
    keys = [d.item.data or d.item.paths[0] for d in delete]
    section.update(
        delete={tier: sum(d.item.tier == tier for d in delete) for tier in TIERS}, delete_total=len(delete),
        keep=sum(d.action == retention_plan.KEEP for d in mine), attention=sum(d.attention for d in mine),
        first_keys=keys[:RETENTION_KEYS_SHOWN], more=max(0, len(keys) - RETENTION_KEYS_SHOWN))
    return section


def _pitr(cfg: Config, client, name: str, now: dt.datetime) -> dict[str, Any]:
    if not cfg.pitr.covers(name):
        return {"configured": False}
    window, error = _guard("PITR", lambda: _window(cfg, client, name))
    if window is None:
        return {"configured": True, "error": error}
    listing, window = window
    retention, error = _guard("PITR retention", lambda: _pitr_retention(cfg, client, name, listing, window, now))
    newest = window.newest_segment
    backups = window.backups
    segments = [w.segment for w in wal.segments(window.archive)]
    gaps = wal.find_gaps(segments, backups[0].start_segment) if backups and segments else []
    rpo = (now - newest.last_modified).total_seconds() if newest is not None else None
    objective = cfg.pitr.rpo_minutes * 60
    return {
        "configured": True, "window_days": cfg.pitr.window_days,
        "window_start": window.start, "window_end": window.end,
        "recoverable": bool(backups) and window.end is not None and window.end >= window.start,
        "base_backups": len(backups),
        "oldest_base_backup": _base(backups[0]) if backups else None,
        "newest_base_backup": _base(backups[-1]) if backups else None,
        "incomplete_base_backups": len(listing.incomplete), "problems": listing.problems,
        "archived_segments": len(segments),
        "newest_segment": newest.name if newest else None,
        "newest_segment_at": newest.last_modified if newest else None,
        "rpo_seconds": round(rpo, 1) if rpo is not None else None, "rpo_objective_seconds": objective,
        "within_rpo": rpo is not None and rpo <= objective,
        "gaps": [g.describe() for g in gaps[:5]], "missing_segments": sum(g.count for g in gaps),
        "retention": retention if error is None else {"error": error},
    }


def _pitr_retention(cfg: Config, client, name: str, listing: inventory.Listing, window: inventory.Window,
                    now: dt.datetime) -> dict[str, Any]:
    """What pg_base_backup's PITR retention (its last task) would delete at its next scheduled run: its planner
    on today's listing, dated then. The backup that run makes first is left out: being the newest it is kept,
    and it changes nothing else the planner decides."""
    tz = zoneinfo.ZoneInfo(cfg.timezone)
    at = croniter(cfg.pitr.base_backup_schedule, now.astimezone(tz)).get_next(dt.datetime)
    incomplete = pitr_retention.list_incomplete(client, cfg, listing.incomplete)
    try:
        plan = pitr_retention.plan_pitr_retention(
            name, listing.backups, incomplete, window.archive, at, window_days=cfg.pitr.window_days,
            max_delete_fraction=cfg.retention.max_delete_fraction,
            max_future_skew=dt.timedelta(minutes=cfg.retention.max_future_skew_minutes), dry_run=True,
            where=f"s3://{cfg.bucket}/{wal.base_backup_prefix(cfg, name)}")
    except retention_plan.RetentionRefused as exc:
        return {"at": at, "refused": str(exc), "planned": False}
    return {"at": at, "refused": plan.refusal, "planned": True,
            "delete_base_backups": [d.backup.backup_id for d in plan.delete],
            "delete_folders": [d.folder.folder for d in plan.folders_to_delete],
            "delete_wal": len(plan.wal_delete),
            "wal_keep_from": plan.wal_keep_from.name() if plan.wal_keep_from else None}


def _window(cfg: Config, client, name: str) -> tuple[inventory.Listing, inventory.Window]:
    listing = inventory.list_base_backups(client, cfg, name)
    return listing, inventory.recoverable_window(client, cfg, name, listing=listing)


def _base(b: inventory.BaseBackup) -> dict[str, Any]:
    return {"backup_id": b.backup_id, "stop_time": b.stop_time, "encrypted": b.encrypted}


# --- replication -----------------------------------------------------------------------------------


def _replication(cfg: Config, name: str, replication: Replication | None) -> dict[str, Any]:
    standby = next((s for s in cfg.dr.standbys if s.target == name), None)
    if standby is None:
        return {"configured": False}
    section: dict[str, Any] = {
        "configured": True, "standby": standby.name, "slot": standby.slot,
        "warn_seconds": cfg.dr.lag_warn_seconds, "page_seconds": cfg.dr.lag_page_seconds,
        "page_bytes": cfg.dr.lag_page_mb * MIB, "slot_page_bytes": cfg.dr.slot_retained_page_gb * GIB,
    }
    if replication is None:
        return section | {"error": "replication: not measured (the page was given no replication reader)"}
    facts, error = _guard("replication", lambda: replication(name))
    if error:
        return section | {"error": error}
    if facts is None:
        return section | {"error": "replication: not measured"}
    return section | {"facts": dict(facts)}


def replication_facts(slot: str, primary: Mapping[str, Any] | None, primary_error: str | None,
                      standby: Mapping[str, Any] | None, standby_error: str | None) -> dict[str, Any]:
    """What the page shows of one standby, from what :mod:`pg_dataops.dr.replication` read of both servers
    (``primary_status`` / ``standby_status``, or None and why not), measured as pg_replication_check does
    (:func:`pg_dataops.dr.check.measure_lag`).

    ``{"state", "lag_seconds", "lag_bytes", "slot_exists", "slot_active", "slot_retained_bytes", "wal_status",
    "replay_paused", "errors"}``; ``state`` is the primary's pg_stat_replication state of the slot's standby
    ("streaming", "catchup", ...) or why there is none.
    """
    usable_primary = primary if primary is not None and not primary.get("in_recovery") else None
    usable_standby = standby if standby is not None and standby.get("in_recovery") else None
    replica = dr_replication.replica_for_slot(usable_primary, slot) if usable_primary else None
    lag = dr_check.measure_lag(usable_primary, usable_standby, replica)
    slot_row = dr_replication.slot(usable_primary, slot) if usable_primary else None
    if replica is not None:
        state = replica.get("state")
    elif standby is None:
        state = "standby unreachable"
    elif usable_standby is None:
        state = "standby not in recovery (promoted?)"
    elif primary is None:
        state = "primary unreachable"
    elif usable_primary is None:
        state = "primary in recovery"
    else:
        state = "not streaming"
    return {
        "state": state, "lag_seconds": lag["seconds"], "lag_bytes": lag["bytes"],
        "slot_exists": slot_row is not None if usable_primary else None,
        "slot_active": slot_row.get("active") if slot_row else None,
        "slot_retained_bytes": slot_row.get("retained_bytes") if slot_row else None,
        "wal_status": slot_row.get("wal_status") if slot_row else None,
        "replay_paused": usable_standby.get("replay_paused") if usable_standby else None,
        "errors": [e for e in (primary_error, standby_error) if e],
    }


def read_replication(cfg: Config, target: str, primary_conn: PgConn, standby_conn: PgConn) -> dict[str, Any]:
    """:func:`replication_facts` of ``target``'s standby, read now (each server probed with a short timeout,
    as pg_replication_check does); a ``replication`` callable for :func:`collect` is this with the target's and
    its standby's connections."""
    standby = cfg.dr.standby(target)
    primary, primary_error = dr_check.probe(primary_conn, dr_replication.primary_status)
    status, status_error = dr_check.probe(standby_conn, dr_replication.standby_status)
    return replication_facts(standby.slot, primary, primary_error, status, status_error)


# --- restore forms ---------------------------------------------------------------------------------


def _restore_forms(cfg: Config, name: str, items, newest: Mapping[str, Any] | None) -> dict[str, Any]:
    """The restore DAGs' forms with what to fill in: the newest verified backup (else the newest) of the target,
    as the restores find it in S3, else as the catalog names it."""
    backup, source = None, None
    mine = [i for i in items or () if i.target == name and i.complete and i.timestamp is not None]
    if mine:
        best = max(mine, key=lambda i: (i.verified, i.timestamp, i.file))
        backup, source = {"key": best.data, "tier": best.tier, "taken_at": best.timestamp,
                          "verified": best.verified}, "s3"
    elif newest and "tiers" in newest:
        known = [t["backup"] | {"tier": t["tier"]} for t in newest["tiers"] if t["backup"] and t["backup"]["s3_key"]]
        if known:
            best = max(known, key=lambda b: (bool(b["verified"]), b["backup_date"]))
            backup, source = {"key": best["s3_key"], "tier": best["tier"], "taken_at": best["backup_date"],
                              "verified": bool(best["verified"])}, "catalog"
    key = backup["key"] if backup else ""
    forms = [{"dag_id": FULL_RECOVERY, "params": {"target": name, "backup_key": key}},
             {"dag_id": TABLE_RESTORE, "params": {"target": name, "backup_key": key}}]
    if cfg.pitr.covers(name):
        forms.append({"dag_id": PITR_RESTORE, "params": {"target": name}})
    for form in forms:
        form.update(label=RESTORE_LABELS[form["dag_id"]], url=dag_path(form["dag_id"]))
    return {"backup": backup, "backup_source": source, "forms": forms}


def dag_path(dag_id: str) -> str:
    """The DAG's page in Airflow's UI (its Trigger button opens the form)."""
    return f"/dags/{quote(dag_id, safe='')}"


def run_path(dag_id: str | None, run_id: str | None) -> str | None:
    """A run's page in Airflow's UI; None for a row that names no run (one rebuilt from S3, a hand-made one)."""
    if not dag_id or not run_id:
        return None
    return f"{dag_path(dag_id)}/runs/{quote(run_id, safe=':+~@')}"


def _jsonable(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


# --- render ----------------------------------------------------------------------------------------

CSS = """
:root { color-scheme: light; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0 1.5rem 2rem;
       color: #1a202c; background: #fff; }
h1 { font-size: 1.5rem; margin: 1rem 0 0.2rem; }
h2 { font-size: 1.25rem; margin: 0 0 0.5rem; }
h3 { font-size: 1rem; margin: 1.2rem 0 0.4rem; color: #2d3748; }
.meta, .note { color: #4a5568; }
nav a { margin-right: 0.8rem; }
section.target { border: 1px solid #e2e8f0; border-radius: 6px; padding: 1rem 1.2rem; margin: 1rem 0; }
table { border-collapse: collapse; }
th, td { text-align: left; padding: 0.25rem 0.8rem 0.25rem 0; vertical-align: top; }
th { font-weight: 600; color: #4a5568; border-bottom: 1px solid #e2e8f0; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.num, td.when { white-space: nowrap; }
.ok { color: #276749; }
.bad { color: #c53030; font-weight: 600; }
.warn { color: #b7791f; font-weight: 600; }
.error { color: #c53030; background: #fff5f5; padding: 0.3rem 0.5rem; border-radius: 4px; }
code { font: 12px ui-monospace, SFMono-Regular, Menlo, monospace; background: #f7fafc; padding: 0 0.2rem;
       user-select: all; }
a.button { display: inline-block; padding: 0.3rem 0.8rem; border-radius: 4px; background: #2b6cb0; color: #fff;
           text-decoration: none; margin: 0.2rem 0.6rem 0.2rem 0; }
a.button:hover { background: #2c5282; }
.forms div { margin: 0.2rem 0; }
.charts { display: flex; flex-wrap: wrap; gap: 0.4rem 1.6rem; }
figure { margin: 0; }
figcaption { font-size: 12px; color: #4a5568; }
svg text { font: 10px system-ui, sans-serif; fill: #4a5568; }
svg.chart { margin-right: 1.5rem; }
svg .bar { fill: #4299e1; }
svg .bar.duration { fill: #9f7aea; }
svg .gap { fill: #cbd5e0; }
svg .objective { stroke: #c53030; stroke-dasharray: 5 3; }
svg .axis { stroke: #a0aec0; }
ul.alerts { padding-left: 1.2rem; margin: 0.2rem 0; }
dl { display: grid; grid-template-columns: max-content auto; gap: 0.15rem 1rem; margin: 0; }
dt { color: #4a5568; }
dd { margin: 0; }
footer { color: #4a5568; font-size: 12px; margin-top: 2rem; }
"""
KIND_COLORS = {"restore_drill": "#2b6cb0", "pitr_drill": "#2f855a", "rehearsal": "#805ad5"}
LEGEND = (
    ("Age", "time since the snapshot the newest successful backup of a tier holds."),
    ("Verified", "a test restore of that backup passed (every table's rows, amcheck); NOT verified: no such proof."),
    ("Last 30 days", "one bar per day: the size of the stored dump and the time pg_backup took (grey: no success)."),
    ("Measured RTO", "download + restore + checks of a drill (a PITR drill: restore + replay + checks; a rehearsal: "
                     "trigger to healthy), against the objective (dashed line)."),
    ("Recoverable window", "from the end of the oldest base backup to the newest archived WAL segment: any moment in "
                           "it can be restored with pg_pitr_restore."),
    ("Current RPO", "the age of the newest archived WAL segment: the writes a loss of the server now would lose, at "
                    "most."),
    ("Replication lag", "how far the standby's replay is behind the primary, in time and in WAL bytes; slot "
                        "retention: WAL the primary keeps for the standby's slot."),
    ("Open alerts", "monitor checks failing now (page: PagerDuty, warn: Slack), since they started failing."),
    ("Retention", "what pg_backup_retention would delete if it ran now (it runs only when triggered; S3 only), "
                  "per tier; and what the PITR retention at the end of the next pg_base_backup run would delete."),
)


def render(data: Mapping[str, Any], *, ui_base: str = "") -> str:
    """The page: one complete HTML document (inline CSS and SVG, no script, no external resource).

    ``ui_base``: prefix of links to Airflow's own pages (runs, DAGs), e.g. "" for the same origin."""
    tz = zoneinfo.ZoneInfo(data["timezone"])
    base = ui_base.rstrip("/")
    generated = _moment(data["generated_at"])
    out = [
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">",
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">",
        f"<title>Backups</title><style>{CSS}</style></head><body>",
        "<header><h1>Backups</h1>",
        f"<p class=\"meta\">As of {_e(fmt_time(generated, tz))} · times in {_e(data['timezone'])} · RTO objective "
        f"{_e(fmt_duration(data['rto_objective_seconds']))} · backups in <code>{_e(data['location'])}</code></p>",
        "<nav>" + "".join(f"<a href=\"#target-{_e(t['name'])}\">{_e(t['name'])}</a>" for t in data["targets"])
        + "</nav></header>",
    ]
    other = data.get("other_alerts") or {}
    if other.get("error") or other.get("open"):
        out.append("<section id=\"other-alerts\"><h3>Open alerts not tied to a target</h3>")
        out.append(_alerts_html(other, tz))
        out.append("</section>")
    for target in data["targets"]:
        out.append(_target_html(target, data, tz, base))
    out.append("<footer><h3>What the numbers mean</h3><dl>")
    out.extend(f"<dt>{_e(term)}</dt><dd>{_e(text)}</dd>" for term, text in LEGEND)
    out.append("</dl></footer></body></html>\n")
    return "".join(out)


def _target_html(t: Mapping[str, Any], data: Mapping[str, Any], tz: dt.tzinfo, base: str) -> str:
    name = t["name"]
    return "".join([
        f"<section class=\"target\" id=\"target-{_e(name)}\"><h2>{_e(name)}</h2>",
        f"<h3>Newest backups</h3>{_newest_html(name, t['newest'], tz, base)}",
        f"<h3>Restore</h3>{_restore_html(t['restore'], data, tz, base)}",
        f"<h3>Last {TREND_DAYS} days</h3>{_trend_html(name, t['trend'])}",
        f"<h3>Restore drills: measured RTO</h3>{_drills_html(name, t['drills'], tz, base)}",
        f"<h3>Point-in-time recovery</h3>{_pitr_html(name, t['pitr'], tz)}",
        f"<h3>Replication</h3>{_replication_html(name, t['replication'], tz)}",
        f"<h3>Open alerts</h3><div id=\"alerts-{_e(name)}\">{_alerts_html(t['alerts'], tz)}</div>",
        f"<h3>Retention (dry run)</h3>{_retention_html(name, t['retention'], t['pitr'], data, tz)}",
        "</section>",
    ])


def _newest_html(name: str, section: Mapping[str, Any], tz: dt.tzinfo, base: str) -> str:
    if section.get("error"):
        return _error_html(section["error"])
    rows = ["<table id=\"newest-" + _e(name) + "\"><tr><th>Tier</th><th>Taken</th><th>Age</th><th>Size</th>"
            "<th>Duration</th><th>Verified</th><th>Run</th></tr>"]
    for entry in section["tiers"]:
        b, failed = entry["backup"], entry["failed_after"]
        cells = [f"<td>{_e(entry['tier'])}</td>"]
        if b is None:
            cells.append("<td colspan=\"6\" class=\"warn\">none yet</td>")
        else:
            verified = ("<span class=\"ok\">verified</span>" if b["verified"]
                        else "<span class=\"bad\">NOT verified</span>")
            if not b["s3_uploaded"]:
                verified += " <span class=\"bad\">not in S3</span>"
            cells += [f"<td class=\"when\">{_e(fmt_time(_moment(b['backup_date']), tz))}</td>",
                      f"<td class=\"num\">{_e(_age(b['age_seconds']))}</td>",
                      f"<td class=\"num\">{_e(fmt_bytes(b['size_bytes']))}</td>",
                      f"<td class=\"num\">{_e(fmt_duration(b['duration_seconds']))}</td>",
                      f"<td>{verified}</td>",
                      f"<td>{_run_link(base, b['run_url'], b['dag_id'], b['run_id'])}</td>"]
        row = f"<tr id=\"tier-{_e(name)}-{_e(entry['tier'])}\">{''.join(cells)}</tr>"
        if failed:
            step = f" in {failed['failed_step']}" if failed["failed_step"] else ""
            row += (f"<tr class=\"failed-after\"><td></td><td colspan=\"6\" class=\"bad\">newer attempt "
                    f"{_e(fmt_time(_moment(failed['at']), tz))} FAILED{_e(step)}: "
                    f"{_e(failed['error'] or 'no error recorded')} "
                    f"{_run_link(base, failed['run_url'], failed['dag_id'], failed['run_id'])}</td></tr>")
        rows.append(row)
    rows.append("</table>")
    if section.get("note"):
        rows.append(f"<p class=\"note\">{_e(section['note'])}</p>")
    return "".join(rows)


def _run_link(base: str, url: str | None, dag_id: str | None, run_id: str | None) -> str:
    if not url:
        return "<span class=\"note\">no run recorded</span>"
    return f"<a href=\"{_e(base + url)}\" target=\"_top\">{_e(dag_id)} / {_e(run_id)}</a>"


def _restore_html(section: Mapping[str, Any], data: Mapping[str, Any], tz: dt.tzinfo, base: str) -> str:
    backup = section["backup"]
    if backup:
        which = (f"the newest {'verified ' if backup['verified'] else 'UNVERIFIED '}backup, {_e(backup['tier'])} "
                 f"{_e(fmt_time(_moment(backup['taken_at']), tz))}")
    else:
        which = "no backup of this target is known"
    out = [f"<p class=\"note\">Filled in below: {which}. "]
    if not data.get("prefill_supported"):
        out.append("Airflow 3.3's trigger form cannot be filled in from a link: the button opens the DAG, click "
                   "<b>Trigger</b> there and paste these values.")
    out.append("</p><div class=\"forms\">")
    for form in section["forms"]:
        values = " ".join(f"{_e(k)} <code>{_e(v)}</code>" for k, v in form["params"].items())
        out.append(f"<div><a class=\"button\" data-testid=\"restore-{_e(form['dag_id'])}\" "
                   f"href=\"{_e(base + form['url'])}\" target=\"_top\">{_e(form['label'])} ({_e(form['dag_id'])})</a>"
                   f"<span class=\"paste\">{values}</span></div>")
    out.append("</div>")
    return "".join(out)


def _trend_html(name: str, section: Mapping[str, Any]) -> str:
    if section.get("error"):
        return _error_html(section["error"])
    days = section["days"]
    out = [f"<div class=\"charts\" id=\"trend-{_e(name)}\">"]
    for tier, series in section["tiers"].items():
        sizes, durations = series["size_bytes"], series["duration_seconds"]
        out.append(f"<figure><figcaption>{_e(tier)}: size {_e(report._range(sizes, fmt_bytes))} · duration "
                   f"{_e(report._range(durations, fmt_duration))}</figcaption>"
                   f"{_bars_svg(sizes, days, fmt_bytes, f'{tier} size', 'size')}"
                   f"{_bars_svg(durations, days, fmt_duration, f'{tier} duration', 'duration')}</figure>")
    out.append("</div>")
    return "".join(out)


def _bars_svg(values: Sequence[float | None], days: Sequence[str], fmt: Callable[[Any], str], label: str,
              css: str) -> str:
    """One bar per day, scaled to the largest value; a day without a value is a grey tick."""
    width, height, top_pad, bottom_pad = 300, 64, 12, 12
    plot = height - top_pad - bottom_pad
    present = [v for v in values if v is not None]
    top = max(present) if present else 0
    step = width / max(len(values), 1)
    shapes = []
    for i, (v, day) in enumerate(zip(values, days, strict=True)):
        x = f"{i * step + 1:.1f}"
        w = f"{max(step - 2, 1):.1f}"
        if v is None:
            shapes.append(f"<rect class=\"gap\" x=\"{x}\" y=\"{height - bottom_pad - 1}\" width=\"{w}\" height=\"1\">"
                          f"<title>{_e(day)}: no successful backup</title></rect>")
            continue
        h = max(plot * v / top, 1.0) if top > 0 else 1.0
        shapes.append(f"<rect class=\"bar {css}\" x=\"{x}\" y=\"{height - bottom_pad - h:.1f}\" width=\"{w}\" "
                      f"height=\"{h:.1f}\"><title>{_e(day)}: {_e(fmt(v))}</title></rect>")
    axis = (f"<line class=\"axis\" x1=\"0\" y1=\"{height - bottom_pad}\" x2=\"{width}\" y2=\"{height - bottom_pad}\"/>"
            f"<text x=\"0\" y=\"9\">{_e(label)}{' (max ' + _e(fmt(top)) + ')' if present else ': no data'}</text>"
            f"<text x=\"0\" y=\"{height - 1}\">{_e(days[0] if days else '')}</text>"
            f"<text x=\"{width}\" y=\"{height - 1}\" text-anchor=\"end\">{_e(days[-1] if days else '')}</text>")
    return (f"<svg class=\"chart\" viewBox=\"0 0 {width} {height}\" width=\"{width}\" height=\"{height}\" role=\"img\" "
            f"aria-label=\"{_e(label)}, one bar per day\">{axis}{''.join(shapes)}</svg>")


def _drills_html(name: str, section: Mapping[str, Any], tz: dt.tzinfo, base: str) -> str:
    if section.get("error"):
        return _error_html(section["error"])
    kinds = section["kinds"]
    out = [f"<div id=\"drills-{_e(name)}\">", _rto_svg(section, tz)]
    rows = []
    for kind, k in kinds.items():
        latest, verdict = k["latest"], k["verdict"]
        if latest is None:
            rows.append(f"<tr id=\"drill-{_e(name)}-{_e(kind)}\"><td>{_e(k['label'])}</td>"
                        "<td colspan=\"3\" class=\"note\">none in the window</td></tr>")
            continue
        if latest["status"] == "SUCCESS":
            status = "<span class=\"ok\">SUCCESS</span>"
        else:
            status = f"<span class=\"bad\">{_e(latest['status'])}</span>: {_e(latest['error'] or 'no error recorded')}"
        if verdict is None:
            judged = "<span class=\"warn\">no measured recovery in the window</span>"
        else:
            css = {"ok": "ok", "trend": "warn"}.get(verdict["status"], "bad")
            judged = (f"<span class=\"{css}\">{_e(fmt_duration(verdict['measured_seconds']))}</span> "
                      f"({_e(fmt_time(_moment(verdict['measured_at']), tz))}): {_e(verdict['message'])}")
        rows.append(f"<tr id=\"drill-{_e(name)}-{_e(kind)}\"><td>{_e(k['label'])}</td>"
                    f"<td>{_e(fmt_time(_moment(latest['at']), tz))} {status}</td><td>{judged}</td>"
                    f"<td>{_link(base, latest['run_url'], 'run') if latest['run_url'] else ''}</td></tr>")
    out.append("<table><tr><th>Kind</th><th>Latest</th><th>Newest measured RTO</th><th></th></tr>")
    out.extend(rows)
    out.append("</table></div>")
    return "".join(out)


def _link(base: str, url: str, text: str) -> str:
    return f"<a href=\"{_e(base + url)}\" target=\"_top\">{_e(text)}</a>"


def _rto_svg(section: Mapping[str, Any], tz: dt.tzinfo) -> str:
    """Measured RTO over the window, one series per kind, failed recoveries as red crosses on the axis, and the
    objective as a dashed line."""
    width, height, left, right, top_pad, bottom_pad = 640, 190, 64, 12, 24, 20
    until = _moment(section["until"])
    objective = section["objective_seconds"]
    every = [p for k in section["kinds"].values() for p in k["points"]]
    points = [p for p in every if p["seconds"] is not None]
    # From the first recovery in the window (at least the last 30 days), not the whole empty half year.
    first = min([until - dt.timedelta(days=TREND_DAYS), *(_moment(p["at"]) for p in every)])
    since = max(_moment(section["since"]), first - (until - first) * 0.03)
    y_max = max([objective, *(p["seconds"] for p in points)]) * 1.15
    span = max((until - since).total_seconds(), 1.0)

    def x(at: str) -> float:
        return left + (width - left - right) * min(max((_moment(at) - since).total_seconds() / span, 0.0), 1.0)

    def y(seconds: float) -> float:
        return height - bottom_pad - (height - top_pad - bottom_pad) * seconds / y_max

    base_y = height - bottom_pad
    parts = [f"<line class=\"axis\" x1=\"{left}\" y1=\"{base_y}\" x2=\"{width - right}\" y2=\"{base_y}\"/>",
             f"<line class=\"axis\" x1=\"{left}\" y1=\"{top_pad}\" x2=\"{left}\" y2=\"{base_y}\"/>",
             f"<text x=\"{left - 4}\" y=\"{base_y}\" text-anchor=\"end\">0</text>",
             f"<line class=\"objective\" x1=\"{left}\" y1=\"{y(objective):.1f}\" x2=\"{width - right}\" "
             f"y2=\"{y(objective):.1f}\"/>",
             f"<text x=\"{left - 4}\" y=\"{y(objective) + 3:.1f}\" text-anchor=\"end\">"
             f"{_e(fmt_duration(objective))}</text>",
             f"<text x=\"{width - right}\" y=\"{y(objective) - 3:.1f}\" text-anchor=\"end\">objective</text>",
             f"<text x=\"{left}\" y=\"{height - 6}\">{_e(fmt_time(since, tz)[:10])}</text>",
             f"<text x=\"{width - right}\" y=\"{height - 6}\" text-anchor=\"end\">"
             f"{_e(fmt_time(until, tz)[:10])}</text>"]
    legend_x = left + 8
    for kind, k in section["kinds"].items():
        color = KIND_COLORS.get(kind, "#4a5568")
        measured = [p for p in k["points"] if p["seconds"] is not None]
        if len(measured) > 1:
            line = " ".join(f"{x(p['at']):.1f},{y(p['seconds']):.1f}" for p in measured)
            parts.append(f"<polyline points=\"{line}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"1.5\"/>")
        for p in k["points"]:
            when = fmt_time(_moment(p["at"]), tz)
            if p["seconds"] is not None:
                parts.append(f"<circle cx=\"{x(p['at']):.1f}\" cy=\"{y(p['seconds']):.1f}\" r=\"3.5\" fill=\"{color}\">"
                             f"<title>{_e(k['label'])} {_e(when)}: {_e(fmt_duration(p['seconds']))}</title></circle>")
            else:
                cx = x(p["at"])
                parts.append(f"<path d=\"M{cx - 4:.1f},{base_y - 4} l8,-8 m-8,0 l8,8\" stroke=\"#c53030\" "
                             f"stroke-width=\"2\"><title>{_e(k['label'])} {_e(when)}: {_e(p['status'])}: "
                             f"{_e(p['error'] or 'no error recorded')}</title></path>")
        parts.append(f"<circle cx=\"{legend_x}\" cy=\"8\" r=\"3.5\" fill=\"{color}\"/>"
                     f"<text x=\"{legend_x + 6}\" y=\"12\">{_e(k['label'])} ({len(measured)})</text>")
        legend_x += 170
    return (f"<svg class=\"chart rto\" viewBox=\"0 0 {width} {height}\" width=\"{width}\" height=\"{height}\" "
            f"role=\"img\" aria-label=\"measured RTO against the objective\">{''.join(parts)}</svg>")


def _pitr_html(name: str, s: Mapping[str, Any], tz: dt.tzinfo) -> str:
    if not s["configured"]:
        return f"<p id=\"pitr-{_e(name)}\" class=\"note\">not configured (pitr.targets does not include it)</p>"
    if s.get("error"):
        return f"<div id=\"pitr-{_e(name)}\">{_error_html(s['error'])}</div>"
    rows = []
    if s["base_backups"] == 0:
        window = "<span class=\"bad\">no base backup yet: nothing to recover to (run pg_base_backup)</span>"
    elif not s["recoverable"]:
        window = (f"<span class=\"bad\">base backups from {_e(fmt_instant(_moment(s['window_start']), tz))}, but no "
                  "WAL archived after them</span>")
    else:
        window = (f"{_e(fmt_instant(_moment(s['window_start']), tz))} to "
                  f"{_e(fmt_instant(_moment(s['window_end']), tz))}")
    rows.append(("Recoverable window", window))
    if s["gaps"]:
        rows.append(("Missing WAL", f"<span class=\"bad\">{s['missing_segments']} segment(s): "
                                    f"{_e(', '.join(s['gaps']))}</span>"))
    if s["base_backups"]:
        rows.append(("Base backups", f"{s['base_backups']}: oldest <code>{_e(s['oldest_base_backup']['backup_id'])}"
                                     f"</code>, newest <code>{_e(s['newest_base_backup']['backup_id'])}</code> "
                                     f"(kept for {s['window_days']} days)"))
    if s["incomplete_base_backups"] or s["problems"]:
        rows.append(("Incomplete", f"<span class=\"warn\">{s['incomplete_base_backups']} folder(s) without a readable "
                                   f"manifest.json</span> {_e('; '.join(s['problems']))}"))
    if s["newest_segment"]:
        rows.append(("Newest archived WAL", f"<code>{_e(s['newest_segment'])}</code> at "
                                            f"{_e(fmt_time(_moment(s['newest_segment_at']), tz, seconds=True))} "
                                            f"({s['archived_segments']} segments archived)"))
        css = "ok" if s["within_rpo"] else "bad"
        rows.append(("Current RPO", f"<span class=\"{css}\">{_e(fmt_duration(max(s['rpo_seconds'], 0)))}</span> "
                                    f"(objective {_e(fmt_duration(s['rpo_objective_seconds']))})"))
    else:
        rows.append(("Current RPO", "<span class=\"bad\">no WAL segment archived yet</span>"))
    return f"<dl id=\"pitr-{_e(name)}\">" + "".join(f"<dt>{_e(k)}</dt><dd>{v}</dd>" for k, v in rows) + "</dl>"


def _replication_html(name: str, s: Mapping[str, Any], tz: dt.tzinfo) -> str:
    if not s["configured"]:
        return f"<p id=\"replication-{_e(name)}\" class=\"note\">no standby configured (dr.standbys)</p>"
    head = f"standby <code>{_e(s['standby'])}</code>, slot <code>{_e(s['slot'])}</code>"
    if s.get("error"):
        return f"<div id=\"replication-{_e(name)}\"><p>{head}</p>{_error_html(s['error'])}</div>"
    f = s["facts"]
    rows = [("Standby", head), ("State", _e(f.get("state") or "unknown"))]
    seconds = f.get("lag_seconds")
    if seconds is None:
        lag = "<span class=\"warn\">not measured</span>"
    else:
        css = "bad" if seconds > s["page_seconds"] else "warn" if seconds > s["warn_seconds"] else "ok"
        lag = (f"<span class=\"{css}\">{_e(fmt_duration(seconds))}</span> (warning above "
               f"{_e(fmt_duration(s['warn_seconds']))}, page above {_e(fmt_duration(s['page_seconds']))})")
    rows.append(("Replay lag", lag))
    size = f.get("lag_bytes")
    if size is not None:
        css = "bad" if size > s["page_bytes"] else "ok"
        rows.append(("WAL not replayed", f"<span class=\"{css}\">{_e(fmt_bytes(size))}</span> (page above "
                                         f"{_e(fmt_bytes(s['page_bytes']))})"))
    retained = f.get("slot_retained_bytes")
    if f.get("slot_exists") is False:
        rows.append(("Slot retention",
                     f"<span class=\"bad\">slot {_e(s['slot'])} does not exist on the primary</span>"))
    elif retained is not None or f.get("wal_status"):
        css = "bad" if f.get("wal_status") == "lost" or (retained or 0) > s["slot_page_bytes"] else "ok"
        active = "active" if f.get("slot_active") else "INACTIVE"
        rows.append(("Slot retention", f"<span class=\"{css}\">{_e(fmt_bytes(retained))}</span> of WAL held, "
                                       f"{active}, wal_status {_e(f.get('wal_status'))} (page above "
                                       f"{_e(fmt_bytes(s['slot_page_bytes']))})"))
    if f.get("replay_paused"):
        rows.append(("Replay", "<span class=\"warn\">paused</span>"))
    for error in f.get("errors") or ():
        rows.append(("Could not read", f"<span class=\"bad\">{_e(error)}</span>"))
    return f"<dl id=\"replication-{_e(name)}\">" + "".join(f"<dt>{_e(k)}</dt><dd>{v}</dd>" for k, v in rows) + "</dl>"


def _alerts_html(s: Mapping[str, Any], tz: dt.tzinfo) -> str:
    if s.get("error"):
        return _error_html(s["error"])
    if not s["open"]:
        return "<p class=\"ok\">none</p>"
    items = []
    for a in s["open"]:
        css = "bad" if a["severity"] == "page" else "warn"
        items.append(f"<li><span class=\"{css}\">{_e(a['severity'] or 'alert')}</span> <code>{_e(a['check'])}</code> "
                     f"{_e(a['message'] or '')} <span class=\"note\">(failing since "
                     f"{_e(fmt_time(_moment(a['since']), tz))})</span></li>")
    return "<ul class=\"alerts\">" + "".join(items) + "</ul>"


def _retention_html(name: str, s: Mapping[str, Any], pitr: Mapping[str, Any], data: Mapping[str, Any],
                    tz: dt.tzinfo) -> str:
    out = [f"<div id=\"retention-{_e(name)}\"><div id=\"retention-{_e(name)}-dumps\">"
           "<p class=\"note\">pg_backup_retention (runs when triggered), if it ran now:</p>"]
    if s.get("error"):
        out.append(_error_html(s["error"]))
    elif not s["planned"]:
        out.append("<p class=\"warn\">no plan: a real run would be refused (below)</p>")
    else:
        policy = data["retention"].get("policy") or {}
        counts = ", ".join(f"{tier} {s['delete'][tier]}" for tier in TIERS)
        out.append(f"<p>would delete <b>{s['delete_total']}</b> backup(s) ({_e(counts)}) and keep "
                   f"{s['keep']}" + (f", {s['attention']} of them kept for a look" if s["attention"] else "")
                   + f". Policy: {_e(', '.join(f'{t} {w}' for t, w in policy.items()))}.</p>")
        if s["first_keys"]:
            out.append("<ul>" + "".join(f"<li><code>{_e(k)}</code></li>" for k in s["first_keys"]) + "</ul>")
        if s["more"]:
            out.append(f"<p class=\"note\">and {s['more']} more</p>")
    for reason in s.get("refused") or ():
        out.append(f"<p class=\"bad\">A real run would be refused: {_e(reason)}</p>")
    out.append("</div>")
    r = pitr.get("retention") if pitr.get("configured") else None
    if r is not None:
        out.append(f"<div id=\"retention-{_e(name)}-pitr\">")
        if r.get("error"):
            out.append(_error_html(r["error"]))
        else:
            out.append(f"<p class=\"note\">PITR retention (pg_base_backup's last task), at its next run "
                       f"{_e(fmt_time(_moment(r['at']), tz))}:</p>")
            if r["planned"]:
                gone = [f"{len(r['delete_base_backups'])} base backup(s)"
                        + (f" ({', '.join(r['delete_base_backups'])})" if r["delete_base_backups"] else ""),
                        f"{len(r['delete_folders'])} incomplete folder(s)",
                        f"{r['delete_wal']} WAL file(s)"
                        + (f" before {r['wal_keep_from']}" if r["wal_keep_from"] and r["delete_wal"] else "")]
                out.append(f"<p>would delete {_e(', '.join(gone))}.</p>")
            if r["refused"]:
                out.append(f"<p class=\"bad\">A real run would be refused: {_e(r['refused'])}</p>")
        out.append("</div>")
    out.append("</div>")
    return "".join(out)


def _error_html(text: str) -> str:
    return f"<p class=\"error\">could not read: {_e(text)}</p>"


def _age(seconds: float | None) -> str:
    return "unknown" if seconds is None else age_text(dt.timedelta(seconds=max(seconds, 0)))


def _moment(iso: str | dt.datetime) -> dt.datetime:
    return iso if isinstance(iso, dt.datetime) else dt.datetime.fromisoformat(iso)


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


__all__ = ["collect", "render", "read_replication", "replication_facts", "alert_parts", "run_path", "dag_path"]
