"""The drill's outcome: its ``restore_drills`` row, the measured RTO judged, and the Slack text. Airflow-free.

The measured RTO of a logical restore is download + restore + checks; for an encrypted backup the
restore includes its decryption (``age -d``), which the restore step counts in ``restore_seconds``. It is recorded next to the
objective (a failed drill is recorded too, with its cause), and judged against the objective and against
its own least-squares trend over the earlier drills.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

import psycopg

from pg_dataops.catalog import restore_drills
from pg_dataops.common.formatting import fmt_duration
from pg_dataops.common.rto import (  # noqa: F401 - the verdict and the outcome live in the kernel; re-exported
    DrillOutcome,
    RtoExceeded,
    RtoVerdict,
    assess_rto,
)

TREND_WINDOW = dt.timedelta(days=180)  # the earlier drills the trend is drawn through


def drill_row(*, target: str, latest: dict | None, download: dict | None, restore: dict | None,
              error: str | None, objective_seconds: float, dag_id: str, run_id: str) -> dict[str, Any]:
    """The ``restore_drills`` row from the steps' results (None for a step that returned nothing).

    The drill succeeded when the restore was verified and no step reported an error; only then is
    there a measured RTO (``total_seconds``).
    """
    doc = (latest or {}).get("manifest") or {}
    ok = bool(restore and restore.get("verified")) and not error
    total = None
    if ok:
        total = round(download["download_seconds"] + restore["restore_seconds"] + restore["check_seconds"], 3)
    return {
        "target": target, "backup_type": doc.get("type"), "backup_file": doc.get("file"),
        "s3_key": (latest or {}).get("key"), "backup_timestamp": doc.get("timestamp"),
        "size_bytes": doc.get("size"), "download_seconds": (download or {}).get("download_seconds"),
        "restore_seconds": (restore or {}).get("restore_seconds"),
        "check_seconds": (restore or {}).get("check_seconds"),
        "total_seconds": total, "rto_objective_seconds": objective_seconds,
        "status": "SUCCESS" if ok else "FAILED", "error_message": None if ok else (error or "a drill step failed"),
        "dag_id": dag_id, "run_id": run_id,
    }


def drill_text(target: str, doc: dict, download: dict, restore: dict, restore_jobs: int,
               verdict: RtoVerdict) -> str:
    """The Slack report of a successful drill: what was restored and proven, where the time went, the verdict."""
    icon = ":white_check_mark:" if verdict.status == "ok" else ":warning:"
    encrypted = ", age-encrypted" if restore.get("encrypted") else ""
    # The decryption is part of the restore's time (the RTO): shown inside it, not beside it.
    decrypted = (f", of which age -d {fmt_duration(restore['decrypt_seconds'])}"
                 if restore.get("encrypted") else "")
    return (f"{icon} Restore drill of {target}: {doc['file']} from S3{encrypted}, {doc['size'] / 1e6:,.1f} MB, "
            f"{restore['tables_found']} tables and {restore['rows_checked']:,} rows match its manifest, "
            f"amcheck {restore['amcheck']}\n"
            f"download {fmt_duration(download['download_seconds'])} + restore "
            f"{fmt_duration(restore['restore_seconds'])} (-j{restore_jobs}{decrypted}) + checks "
            f"{fmt_duration(restore['check_seconds'])}\n{verdict.message}")


def record_drill_outcome(pg: psycopg.Connection, *, target: str, latest: dict | None, download: dict | None,
                         restore: dict | None, step_errors: Iterable[str | None], objective_seconds: float,
                         restore_jobs: int, dag_id: str, run_id: str, now: dt.datetime | None = None) -> DrillOutcome:
    """Record the drill in ``restore_drills`` (also a failed one) and judge its RTO.

    ``step_errors``: the ``error`` XComs of the drill's steps in their order; the first non-empty one is
    the cause. The trend is read before the row is written, so it holds only the earlier drills.
    """
    error = next((e for e in step_errors if e), None)
    row = drill_row(target=target, latest=latest, download=download, restore=restore, error=error,
                    objective_seconds=objective_seconds, dag_id=dag_id, run_id=run_id)
    now = now or dt.datetime.now(dt.UTC)
    ok = row["status"] == "SUCCESS"
    history = restore_drills.rto_history(pg, target, now - TREND_WINDOW) if ok else []
    row["id"] = restore_drills.record(pg, row)
    if not ok:
        return DrillOutcome(row, None, f"drill of {target} failed and was recorded (row {row['id']}): "
                                       f"{row['error_message']}")
    verdict = assess_rto(row["total_seconds"], objective_seconds, history, now)
    return DrillOutcome(row, verdict, drill_text(target, latest["manifest"], download, restore, restore_jobs, verdict))
