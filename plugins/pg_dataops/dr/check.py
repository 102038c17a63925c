"""The replication check (DAG ``pg_replication_check``): is the standby there, streaming and caught up? Airflow-free.

The runbook's monthly "DR sync check", done every few minutes. :func:`check_and_alert` (the task) probes the
target's primary (``pg_stat_replication``, ``pg_replication_slots``) and its standby (``pg_is_in_recovery()``,
replay delay, pause) with :mod:`pg_dataops.dr.replication`, turns the facts into findings with :func:`findings`
(pure) and sends them through the shared alert machinery (:func:`pg_dataops.common.alerting.deliver`, state
in the catalog table ``monitor_alerts`` under ``pg_replication_check/<target>/``); then it fails the run when a
``page`` finding fails.

Checks, one finding each per run, passing or not (``page``: PagerDuty trigger while failing, resolve under the
same ``dedup_key`` when it clears; ``warn``: one Slack post when it starts failing and one when it clears):

- ``primary_unreachable`` (page): the target's server does not answer, or answers in recovery (not a primary).
- ``standby_gone`` (page): the standby does not answer; is not in recovery (promoted, or no longer a standby);
  replicates another cluster; or the primary shows no standby streaming through its slot (or has no such slot).
- ``replay_lag`` (page): the standby's replay is more than ``dr.lag_page_seconds`` behind, or more than
  ``dr.lag_page_mb`` of the primary's WAL is not replayed on it.
- ``lag_warning`` (warn): the replay is more than ``dr.lag_warn_seconds`` behind.
- ``replay_paused`` (warn): ``pg_wal_replay_pause()`` is in effect on the standby.
- per replication slot on the primary (keys ``slot_retention/<slot>``, ``slot_inactive/<slot>``): ``slot_retention``
  (page) when its WAL is lost (``wal_status`` lost) or it holds more than ``dr.slot_retained_page_gb``;
  ``slot_inactive`` (warn) when nothing streams from it (it holds WAL until it is dropped: the disk fills).

A check whose facts cannot be read this run (its server is unreachable) is not "cleared" for that: a failing
key stays failing, its last message marked as not measured this run, until it can be measured again.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from typing import Any

import psycopg

from pg_dataops.catalog import monitor_alerts
from pg_dataops.common import alerting as alerts
from pg_dataops.common.alerting import PAGE, WARN, Finding
from pg_dataops.common.config import Config, Dr, Standby
from pg_dataops.common.errors import PermanentError, redact
from pg_dataops.common.formatting import fmt_bytes, fmt_duration
from pg_dataops.common.pg import PgConn
from pg_dataops.dr import replication

DEDUP_PREFIX = "pg_replication_check"
SOURCE_GROUP = "pg_replication_check"

CHECK_PRIMARY = "primary_unreachable"
CHECK_STANDBY = "standby_gone"
CHECK_LAG = "replay_lag"
CHECK_LAG_WARN = "lag_warning"
CHECK_PAUSED = "replay_paused"
CHECK_SLOT_WAL = "slot_retention"
CHECK_SLOT_INACTIVE = "slot_inactive"
CHECKS = (CHECK_PRIMARY, CHECK_STANDBY, CHECK_LAG, CHECK_LAG_WARN, CHECK_PAUSED)  # every run; + two per slot
SLOT_CHECKS = (CHECK_SLOT_WAL, CHECK_SLOT_INACTIVE)

# pg_stat_replication states of a standby that is there: catchup is a reconnected one still catching up
# (its lag is the lag checks' business, not "gone").
CONNECTED_STATES = ("streaming", "catchup")
NOT_MEASURED = " (not measured this run: "  # marks a failing message carried over while its facts are unknown
MIB = 1024 * 1024
GIB = 1024 * MIB
NO_STANDBYS = "no standby configured (dr.standbys is empty): no replication to check"


class ReplicationCheckFailed(PermanentError):
    """A page-level check failed; alerts were sent. Permanent: the next scheduled run is the retry."""


def dedup_key(target: str, check: str, slot: str | None = None) -> str:
    """Target first, so one target's run handles exactly its own keys (see :func:`alert_source`)."""
    return f"{DEDUP_PREFIX}/{target}/{check}" + (f"/{slot}" if slot else "")


def alert_source(target: str) -> alerts.AlertSource:
    # The only keys that vanish while the target is checked are a dropped slot's.
    return alerts.AlertSource(key_prefix=f"{DEDUP_PREFIX}/{target}/", pagerduty_title="Replication check",
                              group=SOURCE_GROUP, slack_title="PostgreSQL replication",
                              gone_reason="the slot is gone from the primary")


# --- rules -----------------------------------------------------------------------------------------


def _secs(seconds: float | None) -> str:
    if seconds is None:
        return "an unknown time"
    text = f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
    return text + (f" ({fmt_duration(seconds)})" if seconds >= 120 else "")


def _one_line(text: str | None) -> str:
    return " ".join((text or "unknown error").split())  # libpq's messages span lines


def measure_lag(primary: Mapping[str, Any] | None, standby: Mapping[str, Any] | None,
                replica: Mapping[str, Any] | None) -> dict[str, Any]:
    """How far the standby's replay is behind, from whatever can be read: ``seconds`` (the standby's
    replay delay, or the primary's pg_stat_replication replay_lag when larger) and ``bytes`` (the largest of
    the primary's WAL not replayed by the replica, the primary's position minus the standby's replay position,
    and WAL the standby received but has not replayed); None when nothing measures it. ``primary``: a primary's
    status (not in recovery), ``standby``: a standby's status (in recovery, same cluster), either may be None."""
    delay = standby.get("replay_delay_seconds") if standby else None
    primary_seconds = replica.get("replay_lag_seconds") if replica else None
    primary_bytes = replica.get("replay_lag_bytes") if replica else None
    # pg_stat_replication keeps showing the last measured lag for a while after the standby caught up: it
    # counts only while the primary still sees WAL not replayed.
    if not primary_bytes:
        primary_seconds = None
    behind = replication.lsn_bytes(primary.get("current_lsn"), standby.get("replay_lsn")) \
        if primary and standby else None
    backlog = standby.get("replay_backlog_bytes") if standby else None
    seconds = [v for v in (delay, primary_seconds) if v is not None]
    sizes = [v for v in (primary_bytes, behind, backlog) if v is not None]
    return {"seconds": max(seconds) if seconds else None, "bytes": max(sizes) if sizes else None,
            "standby_replay_delay_seconds": delay, "primary_replay_lag_seconds": primary_seconds,
            "primary_replay_lag_bytes": primary_bytes, "primary_minus_standby_replay_bytes": behind,
            "standby_unreplayed_received_bytes": backlog}


def findings(target: str, standby: Standby, primary: Mapping[str, Any] | None, primary_error: str | None,
             standby_status: Mapping[str, Any] | None, standby_error: str | None, dr: Dr, *,
             previous: Mapping[str, Mapping[str, Any]] | None = None) -> list[Finding]:
    """One finding per check (see the module docstring), passing or not, from the two servers' status
    (:func:`~pg_dataops.dr.replication.primary_status` / ``standby_status``) or why each could not be read.

    ``previous``: this target's ``monitor_alerts`` rows (``{dedup_key: {"failing", "message", "severity"}}``);
    a check that cannot be measured this run keeps a failing state instead of being cleared."""
    previous = previous or {}
    usable_primary = primary if primary is not None and not primary.get("in_recovery") else None
    usable_standby = standby_status if standby_status is not None and standby_status.get("in_recovery") else None
    other_cluster = bool(usable_primary and usable_standby and usable_primary.get("system_identifier")
                         and usable_standby.get("system_identifier")
                         and usable_primary["system_identifier"] != usable_standby["system_identifier"])
    if other_cluster:
        usable_standby = None  # its positions mean nothing against this primary's
    replica = replication.replica_for_slot(usable_primary, standby.slot) if usable_primary else None
    lag = measure_lag(usable_primary, usable_standby, replica)
    unknown_standby = _standby_unknown(standby_status, other_cluster)
    unknown_primary = "the primary is unreachable" if primary is None else (
        "the primary is in recovery" if usable_primary is None else None)
    ctx = _Ctx(target, standby, dr, previous)

    out = [
        check_primary(ctx, primary, primary_error),
        check_standby(ctx, usable_primary, unknown_primary, standby_status, standby_error, other_cluster, replica),
    ]
    lag_unknown = " and ".join(w for w in (unknown_standby, unknown_primary) if w) or (
        "the standby has replayed no transaction yet (no replay timestamp)")
    details = dict(lag)
    # Measured on one side only, the lag is what that side knows (the standby: what it received and has not
    # replayed); the message says so.
    partial = f" (measured on the standby alone: {unknown_primary})" if unknown_primary else (
        f" (measured on the primary alone: {unknown_standby})" if unknown_standby else "")
    if lag["seconds"] is None and lag["bytes"] is None:
        out.append(ctx.carried(CHECK_LAG, PAGE, f"replay lag of standby {standby.name}", lag_unknown, details))
    else:
        out.append(check_lag(ctx, lag, partial))
    if lag["seconds"] is None:
        out.append(ctx.carried(CHECK_LAG_WARN, WARN, f"replay delay of standby {standby.name}", lag_unknown, details))
    else:
        out.append(check_lag_warning(ctx, lag, partial))
    if usable_standby is None:
        out.append(ctx.carried(CHECK_PAUSED, WARN, f"replay pause of standby {standby.name}", unknown_standby, {}))
    else:
        out.append(check_paused(ctx, usable_standby))
    if usable_primary is None:
        out.extend(ctx.carried_slots(unknown_primary))
    else:
        for s in sorted(usable_primary.get("slots") or (), key=lambda s: s["slot_name"]):
            out.extend((check_slot_retention(ctx, s), check_slot_inactive(ctx, s)))
    return out


def _standby_unknown(status: Mapping[str, Any] | None, other_cluster: bool) -> str | None:
    """Why the standby's own facts cannot be used this run, or None."""
    if status is None:
        return "the standby is unreachable"
    if not status.get("in_recovery"):
        return "the standby is not in recovery"
    if other_cluster:
        return "the standby replicates another cluster"
    return None


class _Ctx:
    """What every rule of one target's run shares."""

    def __init__(self, target: str, standby: Standby, dr: Dr, previous: Mapping[str, Mapping[str, Any]]):
        self.target, self.standby, self.dr, self.previous = target, standby, dr, previous

    def finding(self, check: str, ok: bool, severity: str, message: str, slot: str | None = None,
                **details: Any) -> Finding:
        return Finding(check, self.target, ok, severity, message, dedup_key(self.target, check, slot),
                       {"standby": self.standby.name, **({"slot": slot} if slot else {}), **details})

    def carried(self, check: str, severity: str, what: str, why: str, details: Mapping[str, Any],
                slot: str | None = None) -> Finding:
        """A check that cannot be measured: still failing (its last message, marked) if it was, else passing."""
        row = self.previous.get(dedup_key(self.target, check, slot)) or {}
        if row.get("failing"):
            last = (row.get("message") or what).split(NOT_MEASURED)[0]
            return self.finding(check, False, severity, f"{last}{NOT_MEASURED}{why})", slot, measured=False,
                                **details)
        return self.finding(check, True, severity, f"{what} not measured: {why}", slot, measured=False, **details)

    def carried_slots(self, why: str) -> list[Finding]:
        """The slots last seen on the primary, while it cannot be read: nothing cleared for that."""
        prefix = f"{DEDUP_PREFIX}/{self.target}/"
        out = []
        for key, row in sorted(self.previous.items()):
            check, _, slot = key[len(prefix):].partition("/") if key.startswith(prefix) else ("", "", "")
            if check in SLOT_CHECKS and slot:
                severity = row.get("severity") or (PAGE if check == CHECK_SLOT_WAL else WARN)
                out.append(self.carried(check, severity, f"replication slot {slot} on primary {self.target}", why, {},
                                        slot))
        return out


def check_primary(ctx: _Ctx, primary: Mapping[str, Any] | None, error: str | None) -> Finding:
    t = ctx.target
    if primary is None:
        return ctx.finding(CHECK_PRIMARY, False, PAGE, f"primary {t} is unreachable: {_one_line(error)}",
                           error=_one_line(error))
    details = {k: primary.get(k) for k in ("in_recovery", "current_lsn", "timeline", "system_identifier")}
    if primary.get("in_recovery"):
        message = (f"primary {t} is in recovery: the target's connection reaches a standby, not a primary "
                   "(no replication to check from it)")
        return ctx.finding(CHECK_PRIMARY, False, PAGE, message, **details)
    message = f"primary {t} answers (WAL at {primary.get('current_lsn')}, timeline {primary.get('timeline')})"
    return ctx.finding(CHECK_PRIMARY, True, PAGE, message, **details)


def check_standby(ctx: _Ctx, primary: Mapping[str, Any] | None, unknown_primary: str | None,
                  status: Mapping[str, Any] | None, error: str | None, other_cluster: bool,
                  replica: Mapping[str, Any] | None) -> Finding:
    """``primary``: the usable primary's status or None (``unknown_primary`` says why)."""
    t, name, slot = ctx.target, ctx.standby.name, ctx.standby.slot
    who = f"standby {name} of {t}"
    if status is None:
        return ctx.finding(CHECK_STANDBY, False, PAGE, f"{who} is unreachable: {_one_line(error)}",
                           error=_one_line(error))
    details: dict[str, Any] = {"in_recovery": status.get("in_recovery"), "receiver": status.get("receiver"),
                               "replica": dict(replica) if replica else None}
    if not status.get("in_recovery"):
        message = f"{who} is not in recovery: it was promoted (or is no longer a standby), so {t} has no standby"
        return ctx.finding(CHECK_STANDBY, False, PAGE, message, **details)
    if other_cluster:
        message = (f"{who} replicates another cluster (system identifier {status.get('system_identifier')}, the "
                   f"primary's is {primary.get('system_identifier')})")
        return ctx.finding(CHECK_STANDBY, False, PAGE, message, **details)
    if primary is None:
        message = f"{who} answers and is in recovery (streaming not checked: {unknown_primary})"
        return ctx.finding(CHECK_STANDBY, True, PAGE, message, **details)
    receiver = status.get("receiver")
    receiver_text = f"its WAL receiver is {receiver.get('status')}" if receiver else "its WAL receiver is not running"
    if replication.slot(primary, slot) is None:
        message = f"{who} is gone: replication slot {slot} does not exist on the primary ({receiver_text})"
        return ctx.finding(CHECK_STANDBY, False, PAGE, message, **details)
    if replica is None:
        message = (f"{who} is gone: the primary shows no standby streaming through slot {slot} ({receiver_text})")
        return ctx.finding(CHECK_STANDBY, False, PAGE, message, **details)
    if replica.get("state") not in CONNECTED_STATES:
        message = f"{who} is not streaming: its connection on slot {slot} is in state {replica.get('state')}"
        return ctx.finding(CHECK_STANDBY, False, PAGE, message, **details)
    message = f"{who} streams through slot {slot} (state {replica.get('state')}, in recovery)"
    return ctx.finding(CHECK_STANDBY, True, PAGE, message, **details)


def check_lag(ctx: _Ctx, lag: Mapping[str, Any], partial: str = "") -> Finding:
    dr = ctx.dr
    seconds, size = lag["seconds"], lag["bytes"]
    failing = (seconds is not None and seconds > dr.lag_page_seconds) or (
        size is not None and size > dr.lag_page_mb * MIB)
    behind = f"replay is {_secs(seconds)} behind the primary" if seconds is not None else "replay delay unknown"
    unreplayed = f"{fmt_bytes(size)} of WAL not replayed" if size is not None else "WAL not replayed unknown"
    message = (f"standby {ctx.standby.name} {behind}, {unreplayed} "
               f"(page above {dr.lag_page_seconds} s or {dr.lag_page_mb} MB){partial}")
    return ctx.finding(CHECK_LAG, not failing, PAGE, message, page_seconds=dr.lag_page_seconds,
                       page_mb=dr.lag_page_mb, measured=True, **lag)


def check_lag_warning(ctx: _Ctx, lag: Mapping[str, Any], partial: str = "") -> Finding:
    seconds, warn = lag["seconds"], ctx.dr.lag_warn_seconds
    message = (f"standby {ctx.standby.name} replay is {_secs(seconds)} behind the primary (warning above {warn} s)"
               f"{partial}")
    return ctx.finding(CHECK_LAG_WARN, seconds <= warn, WARN, message, warn_seconds=warn, measured=True,
                       seconds=seconds)


def check_paused(ctx: _Ctx, status: Mapping[str, Any]) -> Finding:
    name = ctx.standby.name
    paused = bool(status.get("replay_paused"))
    if paused:
        message = (f"standby {name}: WAL replay is paused (pg_wal_replay_pause()); it falls behind the primary until "
                   "SELECT pg_wal_replay_resume() on it")
    else:
        message = f"standby {name}: WAL replay is not paused"
    return ctx.finding(CHECK_PAUSED, not paused, WARN, message, replay_paused=paused, measured=True)


def _slot_details(s: Mapping[str, Any]) -> dict[str, Any]:
    return {k: s.get(k) for k in ("slot_type", "active", "wal_status", "restart_lsn", "retained_bytes")}


def check_slot_retention(ctx: _Ctx, s: Mapping[str, Any]) -> Finding:
    name, limit = s["slot_name"], ctx.dr.slot_retained_page_gb
    retained = s.get("retained_bytes")
    where = f"replication slot {name} on primary {ctx.target}"
    if s.get("wal_status") == "lost":
        message = (f"{where} has lost WAL it needed (wal_status lost): whatever streams from it cannot catch up; "
                   "drop the slot and rebuild its standby (pg_standby_provision)")
        return ctx.finding(CHECK_SLOT_WAL, False, PAGE, message, name, page_gb=limit, **_slot_details(s))
    held = f"holds {fmt_bytes(retained)} of WAL" if retained is not None else "holds no WAL (none reserved)"
    failing = retained is not None and retained > limit * GIB
    message = f"{where} {held} (page above {limit} GB)"
    return ctx.finding(CHECK_SLOT_WAL, not failing, PAGE, message, name, page_gb=limit, **_slot_details(s))


def check_slot_inactive(ctx: _Ctx, s: Mapping[str, Any]) -> Finding:
    name, retained = s["slot_name"], s.get("retained_bytes")
    where = f"replication slot {name} on primary {ctx.target}"
    if s.get("active"):
        return ctx.finding(CHECK_SLOT_INACTIVE, True, WARN, f"{where} is active", name, **_slot_details(s))
    if retained is None:
        message = f"{where} is inactive: nothing streams from it (it reserves no WAL yet); drop it if unused"
    else:
        message = (f"{where} is inactive: nothing streams from it, and the WAL it holds ({fmt_bytes(retained)}) "
                   "grows until it is used again or dropped; the disk fills")
    return ctx.finding(CHECK_SLOT_INACTIVE, False, WARN, message, name, **_slot_details(s))


# --- the task --------------------------------------------------------------------------------------


def probe(conn: PgConn, read: Callable[[psycopg.Connection], dict[str, Any]]) -> tuple[dict | None, str | None]:
    """``(read(connection), None)``, or ``(None, why)`` when the server cannot be reached or the read fails."""
    pg, why = replication.connect_probe(conn)
    if pg is None:
        return None, _one_line(why)
    try:
        return read(pg), None
    except psycopg.Error as exc:
        return None, _one_line(redact(f"{conn.describe()}: {type(exc).__name__}: {exc}", conn.password))
    finally:
        pg.close()


def check_and_alert(primary_conn: PgConn, standby_conn: PgConn, cfg: Config, target: str, now: dt.datetime, *,
                    catalog: psycopg.Connection, slack: Callable[[str], None],
                    pagerduty: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """One run for one target with a standby: probe both servers, alert what changed (state in
    ``monitor_alerts``), then raise :class:`ReplicationCheckFailed` when a page-level check fails. Returns the
    measured facts and the findings (JSON-safe)."""
    if now.tzinfo is None:
        raise ValueError("check_and_alert needs a timezone-aware 'now'")
    standby = cfg.dr.standby(target)
    primary, primary_error = probe(primary_conn, replication.primary_status)
    standby_status, standby_error = probe(standby_conn, replication.standby_status)
    source = alert_source(target)
    previous = {k: v for k, v in monitor_alerts.load_state(catalog).items() if k.startswith(source.key_prefix)}
    result = findings(target, standby, primary, primary_error, standby_status, standby_error, cfg.dr,
                      previous=previous)
    delivered = alerts.deliver(catalog, result, now, slack=slack, pagerduty=pagerduty, source=source)
    pages = [f for f in result if f.severity == PAGE and not f.ok]
    if pages:
        raise ReplicationCheckFailed(f"replication check of {target}: " + "; ".join(
            f"[{f.check}] {f.message}" for f in pages))
    usable = primary if primary is not None and not primary.get("in_recovery") else None
    replica = replication.replica_for_slot(usable, standby.slot) if usable else None
    lag = next((f.details for f in result if f.check == CHECK_LAG), {})
    return {
        "target": target, "standby": standby.name, "slot": standby.slot, "evaluated_at": now.isoformat(),
        "lag": {k: lag.get(k) for k in ("seconds", "bytes", "standby_replay_delay_seconds",
                                        "primary_replay_lag_seconds", "primary_replay_lag_bytes",
                                        "primary_minus_standby_replay_bytes", "standby_unreplayed_received_bytes")},
        "replica": replica,
        "slots": (usable or {}).get("slots") or [],
        "standby_status": standby_status,
        "findings": [f.to_dict() for f in result], "sent": delivered["sent"],
    }


def no_standbys(cfg: Config, now: dt.datetime, *, catalog: psycopg.Connection, slack: Callable[[str], None],
                pagerduty: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """The run when no target has a standby: says so, and clears (PagerDuty resolve, Slack) and forgets
    whatever a standby removed from ``dr.standbys`` left failing, so no incident stays open forever."""
    configured = {s.target for s in cfg.dr.standbys}
    gone = sorted({k.split("/")[1] for k in monitor_alerts.load_state(catalog)
                   if k.startswith(f"{DEDUP_PREFIX}/") and k.count("/") >= 2 and k.split("/")[1] not in configured})
    sent: list[dict[str, Any]] = []
    for target in gone:
        source = alerts.AlertSource(key_prefix=f"{DEDUP_PREFIX}/{target}/", pagerduty_title="Replication check",
                                    group=SOURCE_GROUP, slack_title="PostgreSQL replication",
                                    gone_reason=f"{target} has no standby in dr.standbys any more")
        sent += alerts.deliver(catalog, [], now, slack=slack, pagerduty=pagerduty, source=source)["sent"]
    message = NO_STANDBYS if not configured else (
        f"dr.standbys names {', '.join(sorted(configured))}, but this DAG was parsed without them: the next parse "
        "adds one check per standby")
    return {"message": message, "evaluated_at": now.isoformat(), "cleared_targets": gone, "sent": sent,
            "findings": []}
