"""What a primary and its streaming standby say about replication. Airflow-free.

Read by pg_replication_check (lag, slots, a standby gone), pg_failover (is the primary down, how far behind
is the standby, what would be lost) and pg_standby_provision (is the new standby streaming). Every function
returns JSON-safe dicts (XCom, alerts, the catalog); LSNs stay as PostgreSQL's text (``0/3000148``) and
byte distances are computed with :func:`lsn_bytes`.
"""

from __future__ import annotations

import datetime as dt
import decimal
from collections.abc import Mapping
from typing import Any

import psycopg
from psycopg.rows import dict_row

from pg_dataops.common import pg as pgmod
from pg_dataops.common import sqlfiles, wal
from pg_dataops.common.errors import BackupError, redact
from pg_dataops.common.pg import PgConn

PROBE_TIMEOUT_SECONDS = 5  # a server that does not answer within this is "not reachable" for the checks


def _jsonable(row: Mapping[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in row.items():
        if isinstance(v, dt.datetime):
            v = v.astimezone(dt.UTC).isoformat()
        elif isinstance(v, decimal.Decimal):
            v = float(v)
        out[k] = v
    return out


def _rows(pg: psycopg.Connection, name: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    with pg.cursor(row_factory=dict_row) as cur:
        cur.execute(sqlfiles.text(name), params)
        return [_jsonable(r) for r in cur.fetchall()]


def lsn_bytes(ahead: str | None, behind: str | None) -> int | None:
    """``ahead - behind`` in bytes (0 when ``behind`` is ahead); None when either is unknown."""
    if not ahead or not behind:
        return None
    return max(0, wal.parse_lsn(ahead) - wal.parse_lsn(behind))


def connect_probe(conn: PgConn, *, timeout: int = PROBE_TIMEOUT_SECONDS) -> tuple[psycopg.Connection | None, str | None]:
    """An autocommit connection, or ``(None, why)`` when the server cannot be reached or refuses us (the
    reason is redacted: it never carries the password)."""
    try:
        return pgmod.connect(conn, autocommit=True, connect_timeout=timeout), None
    except BackupError as exc:
        return None, redact(str(exc), conn.password)
    except psycopg.Error as exc:
        return None, redact(f"{type(exc).__name__}: {exc}".strip(), conn.password)


def primary_status(pg: psycopg.Connection) -> dict[str, Any]:
    """The server as a primary: ``in_recovery``, ``current_lsn``, ``timeline``, ``wal_level``, ``max_wal_senders``,
    ``major``, ``system_identifier``, ``checked_at``; plus ``replicas`` (pg_stat_replication with byte and time
    lags, and the slot each uses) and ``slots`` (every replication slot and the WAL it retains) when it is not
    in recovery."""
    (status,) = _rows(pg, "dr/primary_status.sql")
    status["replicas"] = [] if status["in_recovery"] else _rows(pg, "dr/replicas.sql")
    status["slots"] = [] if status["in_recovery"] else _rows(pg, "dr/slots.sql")
    return status


def standby_status(pg: psycopg.Connection) -> dict[str, Any]:
    """The server as a standby: ``in_recovery``, ``receive_lsn``, ``replay_lsn``, ``last_replay_at``,
    ``replay_paused``, ``replay_delay_seconds`` (0 when all received WAL is replayed), ``replay_backlog_bytes``,
    ``timeline``, ``system_identifier``, ``checked_at``, and ``receiver`` (pg_stat_wal_receiver: ``status``,
    ``latest_end_lsn`` = the primary's WAL end as last reported to it, ``sender_host``, ...; None when no WAL
    receiver runs: not streaming)."""
    (status,) = _rows(pg, "dr/standby_status.sql")
    receivers = _rows(pg, "dr/wal_receiver.sql")
    status["receiver"] = receivers[0] if receivers else None
    return status


def replica_for_slot(primary: Mapping[str, Any], slot: str) -> dict[str, Any] | None:
    """The pg_stat_replication row of the standby streaming through ``slot``, if it is connected."""
    for replica in primary.get("replicas") or ():
        if replica.get("slot_name") == slot:
            return dict(replica)
    return None


def slot(primary: Mapping[str, Any], name: str) -> dict[str, Any] | None:
    for s in primary.get("slots") or ():
        if s.get("slot_name") == name:
            return dict(s)
    return None


def ensure_slot(pg: psycopg.Connection, name: str) -> dict[str, Any]:
    """The physical replication slot ``name`` on the primary, created (reserving WAL now) when missing.
    Idempotent. ``{"slot", "created", "restart_lsn"}``; a logical slot of that name is an error."""
    existing = _rows(pg, "dr/slot_exists.sql", {"slot": name})
    if existing:
        if existing[0]["slot_type"] != "physical":
            raise BackupError(f"replication slot {name!r} exists on the primary but is {existing[0]['slot_type']}, "
                              "not physical: choose another dr.standbys.<target>.slot")
        return {"slot": name, "created": False, "restart_lsn": existing[0]["restart_lsn"]}
    (row,) = _rows(pg, "dr/create_slot.sql", {"slot": name})
    return {"slot": name, "created": True, "restart_lsn": row["lsn"]}


def write_probe(pg: psycopg.Connection) -> dict[str, Any]:
    """Proves the server takes writes (a transaction id is assigned): ``{"xid", "lsn", "at"}``; raises
    psycopg's error on a server in recovery."""
    (row,) = _rows(pg, "dr/write_probe.sql")
    return row
