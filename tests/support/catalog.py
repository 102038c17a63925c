"""The one catalog seeder: complete backup_logs and restore_drills rows, with what a test cares about overridden.

A SUCCESS backup has everything pg_backup writes (file, size, checksum, S3 key, uploaded, verified); a FAILED one
has no file, size or duration, is neither uploaded nor verified, and names its step and error. Backups go
through the production upsert (:func:`pg_dataops.catalog.backup_logs.record`), so the same ``run_id`` updates
the row (a fix); drills through a plain INSERT, which can set ``drill_date``.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import psycopg
from pg_dataops.catalog import backup_logs, migrations

MiB = 1024 * 1024
BUCKET = "glimpse-backups"
PREFIX = "database"


def add_backup(pg: psycopg.Connection, when: dt.datetime, *, tier: str = "daily", status: str = "SUCCESS",
               target: str = "glimpse", size: int | None = 100 * MiB, duration: float | None = 60,
               uploaded: bool | None = None, verified: bool | None = None, error: str | None = None,
               step: str | None = None, run_id: str | None = None, encrypted: bool | None = None,
               **overrides: Any) -> int:
    """One backup_logs row at ``when``; returns its id.

    ``size`` and ``duration`` apply to a SUCCESS row only; ``uploaded`` and ``verified`` default to whether
    it succeeded; ``encrypted`` (client-side, age: a ``.dump.age`` file) too, as pg_backup with recipients
    writes it; a FAILED row leaves it NULL. ``run_id`` defaults to one per tier and moment. ``overrides``
    set any other column.
    """
    ok = status == "SUCCESS"
    uploaded = ok if uploaded is None else uploaded
    verified = ok if verified is None else verified
    encrypted = (True if ok else None) if encrypted is None else encrypted
    suffix = ".dump.age" if encrypted else ".dump"
    file_name = f"{target}_{tier}_{when:%Y%m%d_%H%M%S}{suffix}" if ok else None
    row = {
        "backup_date": when, "backup_type": tier, "target": target, "database_name": target,
        "file_name": file_name, "file_size_bytes": size if ok else None,
        "checksum_sha256": "a" * 64 if ok else None, "duration_seconds": duration if ok else None,
        "status": status, "error_message": error, "failed_step": step,
        "s3_bucket": BUCKET, "s3_key": f"{PREFIX}/{tier}/{file_name}" if file_name and uploaded else None,
        "s3_uploaded": uploaded, "verified": verified,
        "verified_at": when + dt.timedelta(minutes=3) if verified else None,
        "dag_id": "pg_backup", "run_id": run_id or f"seed__{tier}__{when.isoformat()}", "encrypted": encrypted,
    }
    unknown = set(overrides) - set(backup_logs.COLUMNS) - set(backup_logs.OPTIONAL_COLUMNS)
    if unknown:
        raise ValueError(f"not backup_logs columns: {', '.join(sorted(unknown))}")
    return backup_logs.record(pg, row | overrides)


def add_drill(pg: psycopg.Connection, when: dt.datetime, status: str, *, target: str = "glimpse",
              total_seconds: float | None = None, error: str | None = None, tier: str = "daily",
              objective_seconds: float = 14400) -> int:
    """One restore_drills row at ``when``; returns its id. A SUCCESS drill splits ``total_seconds``
    into download, restore and checks (10/80/10 %)."""
    migrations.ensure_schema(pg)
    ok = status == "SUCCESS"
    backup_at = when - dt.timedelta(hours=1)
    file_name = f"{target}_{tier}_{backup_at:%Y%m%d_%H%M%S}.dump"
    parts = (None, None, None) if total_seconds is None else (
        total_seconds * 0.1, total_seconds * 0.8, total_seconds * 0.1)
    row = {
        "drill_date": when, "target": target, "backup_type": tier, "backup_file": file_name,
        "s3_key": f"{PREFIX}/{tier}/{file_name}", "backup_timestamp": backup_at,
        "size_bytes": 100 * MiB if ok else None, "download_seconds": parts[0], "restore_seconds": parts[1],
        "check_seconds": parts[2], "total_seconds": total_seconds, "rto_objective_seconds": objective_seconds,
        "status": status, "error_message": error, "dag_id": "pg_restore_drill",
        "run_id": f"seed__{target}__{when.isoformat()}",
    }
    with pg.transaction():
        return pg.execute(
            "INSERT INTO restore_drills (drill_date, target, backup_type, backup_file, s3_key, backup_timestamp, "
            "size_bytes, download_seconds, restore_seconds, check_seconds, total_seconds, rto_objective_seconds, "
            "status, error_message, dag_id, run_id) VALUES (%(drill_date)s, %(target)s, %(backup_type)s, "
            "%(backup_file)s, %(s3_key)s, %(backup_timestamp)s, %(size_bytes)s, %(download_seconds)s, "
            "%(restore_seconds)s, %(check_seconds)s, %(total_seconds)s, %(rto_objective_seconds)s, %(status)s, "
            "%(error_message)s, %(dag_id)s, %(run_id)s) RETURNING id",
            row,
        ).fetchone()[0]


def fresh_catalog(cluster, name: str = "catalog") -> str:
    """A new, empty database on the test cluster, named ``{name}_<random>``."""
    dbname = f"{name}_{uuid.uuid4().hex[:8]}"
    cluster.createdb(dbname)
    return dbname
