"""Alert texts and keys, built from plain facts so they are testable without Airflow."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FailureFacts:
    dag_id: str
    task_id: str
    run_id: str
    error: str
    log_url: str | None = None
    target: str | None = None
    map_index: int = -1
    try_number: int | None = None


# What failed, in words, per DAG: a refused retention or a failed drill is not a failed backup.
JOB_TITLES = {
    "pg_backup": "Database backup",
    "pg_restore_drill": "Restore drill",
    "pg_backup_retention": "Backup retention",
    "pg_backup_monitor": "Backup monitor",
    "pg_backup_report": "Backup report",
    "pg_backup_catalog_rebuild": "Backup catalog rebuild",
    "pg_standby_provision": "Standby provisioning",
    "pg_replication_check": "Replication check",
    "pg_failover": "Failover",
}


def job_title(dag_id: str) -> str:
    return JOB_TITLES.get(dag_id, f"Airflow job {dag_id}")


def dedup_key(dag_id: str, run_id: str) -> str:
    """One incident per DAG run: the same key lets a later 'resolve' close it."""
    return f"{dag_id}/{run_id}"


def failure_summary(f: FailureFacts) -> str:
    """PagerDuty summary (<= 1024 chars): what failed and why, in one line."""
    where = f"{f.dag_id}.{f.task_id}" + (f"[{f.target}]" if f.target else "")
    text = f"{job_title(f.dag_id)} FAILED: {where} in run {f.run_id}: {f.error}"
    return text if len(text) <= 1024 else text[:1021] + "..."


def failure_text(f: FailureFacts) -> str:
    """Slack text: the runbook's 'Database backup failed! Please check immediately.' with the facts."""
    lines = [
        f":red_circle: *{job_title(f.dag_id)} FAILED* - please check immediately.",
        f"DAG: `{f.dag_id}`  task: `{f.task_id}`" + (f"  target: `{f.target}`" if f.target else ""),
        f"run: `{f.run_id}`" + (f"  try: {f.try_number}" if f.try_number else ""),
        f"error: {f.error}",
    ]
    if f.log_url:
        lines.append(f"log: {f.log_url}")
    return "\n".join(lines)


def failure_details(f: FailureFacts) -> dict:
    return {
        "dag_id": f.dag_id,
        "task_id": f.task_id,
        "run_id": f.run_id,
        "target": f.target,
        "map_index": f.map_index,
        "try_number": f.try_number,
        "error": f.error,
        "log_url": f.log_url,
    }
