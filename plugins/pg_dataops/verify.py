"""Prove a backup by restoring it: into a temporary database, then check it against its manifest.

Airflow-free. Used by pg_backup (right after the upload) and pg_restore_drill (from S3, timed).
Checks, from include/sql/verify/: tables per schema, every table's row count against the counts
taken in the dump's snapshot, the runbook's users count, and amcheck on every B-tree index.
"""

from __future__ import annotations

import datetime as dt
import gzip
import logging
import os
import re
import secrets
import shutil
import subprocess
import tarfile
import tempfile
import time
from dataclasses import asdict, dataclass, field

from pg_dataops import pgtools, sqlfiles
from pg_dataops.errors import BackupError, ClientVersionError, VerificationFailed, redact

__all__ = ["VerificationFailed", "VerifyResult", "create_database", "drop_database", "verify_backup"]

log = logging.getLogger(__name__)


@dataclass
class VerifyResult:
    verified: bool
    checked_at: str
    database: str
    restore_seconds: float
    check_seconds: float
    tables_expected: int
    tables_found: int
    tables_per_schema: dict[str, int]
    rows_checked: int
    users: int | None
    amcheck: str  # "N btree indexes" or why it was skipped
    mismatches: list[str] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def temp_database_name(kind: str, target: str) -> str:
    """Unique and recognisable (pgdataops_verify_glimpse_20261129t020512_a1b2c3), within 63 bytes."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dt%H%M%S")
    name = f"pgdataops_{kind}_{target}"[:40]
    return f"{name}_{stamp}_{secrets.token_hex(3)}"


def create_database(admin: pgtools.PgConn, name: str) -> None:
    pg = pgtools.connect(admin, autocommit=True)
    try:
        pg.execute(sqlfiles.composed("verify/create_database.sql", name=name))
    finally:
        pg.close()


def drop_database(admin: pgtools.PgConn, name: str) -> None:
    if not name.startswith("pgdataops_"):
        # Only ever drop what this module created: a typo here must not drop a real database.
        raise ValueError(f"refusing to drop {name!r}: not a pg_dataops scratch database")
    pg = pgtools.connect(admin, autocommit=True)
    try:
        pg.execute(sqlfiles.composed("verify/drop_database.sql", name=name))
    finally:
        pg.close()


def check_client_can_restore(backup_server_version_num: int, client_major: int) -> None:
    """pg_restore cannot read archives from a newer pg_dump; say so before touching anything."""
    backup_major = backup_server_version_num // 10000
    if backup_major > client_major:
        raise ClientVersionError(
            f"the backup comes from PostgreSQL {backup_major}, newer than the restore server's client "
            f"(PostgreSQL {client_major}): restore it with PostgreSQL {backup_major} or newer"
        )


def restore(conn: pgtools.PgConn, path: str, fmt: str, *, jobs: int, pg_bin_root: str, major: int) -> float:
    """Restore ``path`` into ``conn.dbname``; returns seconds. Stops at the first error."""
    started = time.monotonic()
    env = conn.libpq_env()
    if fmt in ("custom", "directory"):
        pg_restore = pgtools.client_binary("pg_restore", major, pg_bin_root)
        workdir = None
        source = path
        try:
            if fmt == "directory":  # our .tar of a directory-format dump
                workdir = tempfile.mkdtemp(prefix="pgdataops-restore-", dir=os.path.dirname(path))
                with tarfile.open(path) as tar:
                    tar.extractall(workdir, filter="data")
                source = workdir
            argv = [pg_restore, "--exit-on-error", "--no-owner", "--no-privileges", f"--jobs={jobs}",
                    "--no-password", "--dbname", conn.dbname, source]
            _run(argv, env, conn.password)
        finally:
            if workdir:
                shutil.rmtree(workdir, ignore_errors=True)
    elif fmt == "plain":
        psql = pgtools.client_binary("psql", major, pg_bin_root)
        argv = [psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "--no-password", "-d", conn.dbname]
        opener = gzip.open if path.endswith(".gz") else open
        with opener(path, "rb") as src:
            _run(argv, env, conn.password, stdin=src)
    else:
        raise BackupError(f"unknown dump format {fmt!r}")
    return round(time.monotonic() - started, 3)


def _run(argv: list[str], env: dict, secret: str | None, stdin=None) -> None:
    log.info("running %s", " ".join(argv))
    # stderr goes to a file, not a pipe: a chatty child can't block while we feed its stdin.
    with tempfile.TemporaryFile() as errfile:
        proc = subprocess.Popen(argv, env=env, stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=errfile)
        if stdin is not None:
            # Streamed (a gzip file can't be the child's stdin): constant memory whatever the size.
            try:
                for block in iter(lambda: stdin.read(1 << 20), b""):
                    proc.stdin.write(block)
            except BrokenPipeError:
                pass  # the child stopped at an error; its exit code and stderr say which
            finally:
                proc.stdin.close()
        rc = proc.wait()
        errfile.seek(0)
        err = errfile.read().decode(errors="replace")
    if rc != 0:
        lines = [redact(x, secret) for x in err.strip().splitlines()[-8:]]
        raise VerificationFailed(f"{os.path.basename(argv[0])} failed (exit {rc}): {' | '.join(lines)}")


def run_checks(conn: pgtools.PgConn, expected_counts: dict[str, int]) -> dict:
    """Compare the restored database with the manifest's counts; returns facts and mismatches."""
    pg = pgtools.connect(conn, autocommit=True)
    mismatches: list[str] = []
    try:
        per_schema = {s: n for s, n in pg.execute(sqlfiles.text("verify/tables_per_schema.sql")).fetchall()}
        found = {f"{s}.{t}" for s, t in pg.execute(sqlfiles.text("dump/list_tables.sql")).fetchall()}
        expected_schema: dict[str, int] = {}
        for name in expected_counts:
            schema = name.split(".", 1)[0]
            expected_schema[schema] = expected_schema.get(schema, 0) + 1
        for schema in sorted(set(expected_schema) | set(per_schema)):
            if expected_schema.get(schema, 0) != per_schema.get(schema, 0):
                mismatches.append(
                    f"schema {schema}: {per_schema.get(schema, 0)} tables restored, "
                    f"{expected_schema.get(schema, 0)} in the manifest"
                )
        rows = 0
        for name, expected in sorted(expected_counts.items()):
            if name not in found:
                mismatches.append(f"table {name} is missing from the restore")
                continue
            schema, table = name.split(".", 1)
            got = pg.execute(sqlfiles.composed("dump/count_rows.sql", schema=schema, table=table)).fetchone()[0]
            rows += got
            if got != expected:
                mismatches.append(f"table {name}: {got} rows restored, {expected} in the dump's snapshot")
        for name in sorted(found - set(expected_counts)):
            mismatches.append(f"table {name} is restored but not in the manifest")
        users = expected_counts.get("public.users")
        if pg.execute(sqlfiles.text("verify/amcheck_available.sql")).fetchone()[0]:
            pg.execute(sqlfiles.text("verify/amcheck_create.sql"))
            try:
                n = pg.execute(sqlfiles.text("verify/amcheck_btree.sql")).fetchone()[0]
                amcheck = f"{n} btree indexes"
            except Exception as exc:  # amcheck reports corruption as an error
                mismatches.append(f"amcheck: {exc}".strip())
                amcheck = "failed"
        else:
            amcheck = "skipped: amcheck extension not available on the restore server"
    finally:
        pg.close()
    return {
        "tables_per_schema": per_schema,
        "tables_found": len(found),
        "rows_checked": rows,
        "users": users,
        "amcheck": amcheck,
        "mismatches": mismatches,
    }


def verify_backup(
    admin: pgtools.PgConn,
    database: str,
    path: str,
    *,
    fmt: str,
    expected_counts: dict[str, int],
    backup_server_version_num: int,
    jobs: int = 2,
    pg_bin_root: str = "/usr/lib/postgresql",
) -> VerifyResult:
    """Restore ``path`` into the existing empty ``database`` on ``admin``'s server and check it."""
    if not re.fullmatch(r"pgdataops_[a-z0-9_]+", database):
        raise ValueError(f"not a scratch database name: {database!r}")
    pg = pgtools.connect(admin)
    try:
        major = pgtools.server_major(pg)
    finally:
        pg.close()
    check_client_can_restore(backup_server_version_num, major)
    conn = admin.with_db(database)
    restore_seconds = restore(conn, path, fmt, jobs=jobs, pg_bin_root=pg_bin_root, major=major)
    started = time.monotonic()
    facts = run_checks(conn, expected_counts)
    check_seconds = round(time.monotonic() - started, 3)
    result = VerifyResult(
        verified=not facts["mismatches"],
        checked_at=dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z"),
        database=database,
        restore_seconds=restore_seconds,
        check_seconds=check_seconds,
        tables_expected=len(expected_counts),
        tables_found=facts["tables_found"],
        tables_per_schema=facts["tables_per_schema"],
        rows_checked=facts["rows_checked"],
        users=facts["users"],
        amcheck=facts["amcheck"],
        mismatches=facts["mismatches"],
        checks=["pg_restore --exit-on-error", "tables per schema", "row count of every table vs dump snapshot",
                "users count", "amcheck btree (heapallindexed)"],
    )
    return result
