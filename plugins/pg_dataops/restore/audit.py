"""The ``restore_logs`` catalog row every restore run writes, whatever its outcome. Airflow-free.

Who triggered and who approved, the params, what changed (per table), where the previous data is kept
(the safety copy), the measured time against the RTO objective, and the first failed step's error. A run
refused by its validation is REFUSED; a dry run DRY_RUN; a rejected or timed-out approval REJECTED.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from pg_dataops.catalog.migrations import ensure_schema
from pg_dataops.common import sqlfiles

KINDS = ("full", "rehearsal", "table", "user")
STATUSES = ("SUCCESS", "DRY_RUN", "REJECTED", "FAILED", "REFUSED")


def first_error(step_errors: Iterable[tuple[str, str | None]]) -> str | None:
    """The first failed step's error XCom (it starts with its task id), in run order."""
    for name, error in step_errors:
        if error:
            return error if error.startswith(f"{name}: ") else f"{name}: {error}"
    return None


def status_of(*, planned: bool, error: str | None, dry_run: bool = False, approval: Mapping | None = None,
              approval_needed: bool = False, done: bool = True) -> str:
    """REFUSED (validation failed: nothing planned), FAILED (a step failed, or did not complete), REJECTED (the
    gate said no or timed out), DRY_RUN, or SUCCESS."""
    if not planned:
        return "REFUSED"
    if error:
        return "FAILED"
    if dry_run:
        return "DRY_RUN"
    if approval_needed and not (approval or {}).get("approved"):
        return "REJECTED" if approval else "FAILED"
    return "SUCCESS" if done else "FAILED"


def log_row(*, kind: str, target: str, status: str, dag_id: str, run_id: str, params: Mapping[str, Any],
            triggered_by: str | None = None, approval: Mapping | None = None, database_name: str | None = None,
            backup_key: str | None = None, from_database: str | None = None, changes: Any = None,
            safety_location: str | None = None, rto_seconds: float | None = None,
            rto_objective_seconds: float | None = None, error: str | None = None,
            details: Mapping | None = None) -> dict[str, Any]:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if status not in STATUSES:
        raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
    approved = (approval or {}).get("approved")
    return {
        "kind": kind, "target": target, "database_name": database_name, "backup_key": backup_key,
        "from_database": from_database, "status": status, "triggered_by": triggered_by,
        "approved_by": (approval or {}).get("responded_by") if approved else None,
        "params": {k: v for k, v in params.items()}, "changes": changes, "safety_location": safety_location,
        "rto_seconds": rto_seconds, "rto_objective_seconds": rto_objective_seconds,
        "error_message": error if status in ("FAILED", "REFUSED") else None,
        "details": {**(details or {}), "approval": approval} if approval else dict(details or {}),
        "dag_id": dag_id, "run_id": run_id,
    }


def record(pg: psycopg.Connection, row: Mapping[str, Any]) -> int:
    """Insert one ``restore_logs`` row (see :func:`log_row`); returns its id."""
    ensure_schema(pg)
    with pg.transaction():
        return pg.execute(sqlfiles.text("restore/record_restore_log.sql"),
                          {**row, "params": Jsonb(row.get("params") or {}),
                           "changes": Jsonb(row.get("changes")) if row.get("changes") is not None else None,
                           "details": Jsonb(row.get("details") or {})}).fetchone()[0]
