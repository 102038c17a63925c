"""pg_dump into a local file, hashed in the same pass that writes it. Airflow-free.

One exported snapshot is shared by pg_dump (``--snapshot``) and the per-table row counts, so the
manifest's counts are exactly what the dump holds; a restore can be checked against them.

With recipients (``encryption.recipients``), pg_dump's output (the directory format: its tar) passes
through ``age`` (common.age.EncryptingWriter) before the hash, the file and the streaming upload: what is
stored, hashed and uploaded is the encrypted object; no plaintext byte reaches the disk.
"""

from __future__ import annotations

import datetime as dt
import errno
import logging
import os
import re
import shutil
import subprocess
import tarfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import psycopg

from pg_dataops.common import age, sqlfiles
from pg_dataops.common import pg as pgtools
from pg_dataops.common.age import encryption_block
from pg_dataops.common.errors import BackupError, DumpFailed
from pg_dataops.common.stream import CHUNK, Sealed, StderrTail, disk_full, hashing_writer, stream_to_file, widen_pipe

log = logging.getLogger(__name__)

EXTENSIONS = {"custom": ".dump", "directory": ".tar", "plain": ".sql"}


@dataclass
class DumpResult:
    path: str
    file: str
    size: int
    sha256: str
    part_size: int
    part_sha256: list[str]
    format: str
    compression: int
    jobs: int
    database: str
    db_version: str
    server_version_num: int
    pg_dump_version: str
    snapshot_time: str  # UTC ISO-8601: the moment the backup represents
    started_at: str
    duration_seconds: float
    table_counts: dict[str, int] = field(default_factory=dict)
    # streamed upload only: what S3 took after pg_dump ended (StreamingUpload.complete)
    upload_tail: dict[str, float] = field(default_factory=dict)
    # {"format": "age", "recipients": [public keys]} when the file is encrypted, else None
    encryption: dict[str, Any] | None = None
    # the target's pg_dump --exclude-table / --exclude-table-data (schema.table): the first are not in
    # the dump nor in table_counts, the second are there with their definition and 0 rows
    exclude_tables: list[str] = field(default_factory=list)
    exclude_table_data: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def artifact_name(basename: str, fmt: str, compression: int, encrypted: bool = False) -> str:
    ext = EXTENSIONS[fmt]
    if fmt == "plain" and compression > 0:
        ext += ".gz"  # pg_dump -Fp -Z gzips the SQL script
    return basename + ext + (age.SUFFIX if encrypted else "")


def _remove_quietly(path: str) -> None:
    try:
        if os.path.isdir(path):
            shutil.rmtree(path)
        else:
            os.unlink(path)
    except FileNotFoundError:
        pass


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def table_pattern(name: str) -> str:
    """``schema.table`` as a pg_dump pattern that matches exactly that table: both parts double-quoted
    (no wildcards, no case folding; a ``"`` in a name doubled)."""
    schema, table = name.split(".", 1)
    return ".".join('"' + part.replace('"', '""') + '"' for part in (schema, table))


class _RowCounter(threading.Thread):
    """Counts every table's rows in the dump's snapshot (its own session), while pg_dump streams.

    The counts are what the dump holds: an excluded table (``exclude_tables``) is left out, a table whose
    data is excluded (``exclude_table_data``) counts 0, without reading it."""

    def __init__(self, pg: psycopg.Connection, exclude_tables: Sequence[str] = (),
                 exclude_table_data: Sequence[str] = ()):
        super().__init__(daemon=True)
        self.pg = pg
        self.exclude_tables, self.exclude_table_data = set(exclude_tables), set(exclude_table_data)
        self.counts: dict[str, int] = {}
        self.errors: list[Exception] = []

    def run(self) -> None:
        try:
            tables = self.pg.execute(sqlfiles.text("dump/list_tables.sql")).fetchall()
            names = {f"{schema}.{table}" for schema, table in tables}
            for name in sorted((self.exclude_tables | self.exclude_table_data) - names):
                log.warning("%s is excluded from the dump (exclude_tables/exclude_table_data) but is not a table "
                            "of this database", name)
            for schema, table in tables:
                name = f"{schema}.{table}"
                if name in self.exclude_tables:
                    continue
                if name in self.exclude_table_data:
                    self.counts[name] = 0
                    continue
                stmt = sqlfiles.composed("dump/count_rows.sql", schema=schema, table=table)
                self.counts[name] = self.pg.execute(stmt).fetchone()[0]
        except Exception as exc:  # reported by finish(), after pg_dump is done
            self.errors.append(exc)

    def finish(self) -> None:
        """The row counts belong to the backup: it is not complete (nor uploaded) without them."""
        self.join()
        if self.errors:
            raise DumpFailed(f"counting rows in the dump snapshot failed: {self.errors[0]}")


@dataclass
class _DumpPlan:
    """What run_dump was asked for, and where it writes."""

    conn: pgtools.PgConn
    out_dir: str
    final: str
    fmt: str
    compression: int
    jobs: int
    part_size: int
    pg_bin_root: str
    uploader: Any  # a common.s3.StreamingUpload, or None
    lock_wait_timeout: int | None
    timeout: float | None
    recipients: tuple[str, ...] = ()  # age public keys; empty: not encrypted
    exclude_tables: tuple[str, ...] = ()  # schema.table names (the target's config)
    exclude_table_data: tuple[str, ...] = ()

    @property
    def partial(self) -> str:
        """pg_dump's output (a directory for the directory format) before its rename."""
        return self.final + ".partial"

    @property
    def tar_partial(self) -> str:
        """The tar of a directory-format dump, being packed."""
        return self.final + ".tarpartial"

    @property
    def finished_file(self) -> str:
        """The file renamed to ``final`` once the dump, its counts and its upload succeeded."""
        return self.tar_partial if self.fmt == "directory" else self.partial


def run_dump(
    conn: pgtools.PgConn,
    out_dir: str,
    basename: str,
    *,
    fmt: str = "custom",
    compression: int = 1,
    jobs: int = 2,
    part_size: int = 64 * 1024 * 1024,
    pg_bin_root: str = "/usr/lib/postgresql",
    uploader=None,
    lock_wait_timeout: int | None = None,
    timeout: float | None = None,
    recipients: Sequence[str] = (),
    exclude_tables: Sequence[str] = (),
    exclude_table_data: Sequence[str] = (),
) -> DumpResult:
    """Dump ``conn.dbname`` to ``out_dir/basename.<ext>``; on any failure nothing is left behind.

    With ``uploader`` (a common.s3.StreamingUpload) each part goes to S3 while pg_dump is still
    running, and the object is completed only when the dump and its row counts succeeded.

    ``lock_wait_timeout`` (seconds): pg_dump's ``--lock-wait-timeout``; a table locked by another
    session fails the dump after that long, naming the table, instead of waiting. ``timeout``
    (seconds): pg_dump is killed, and the dump fails, if it has not finished by then.

    ``recipients`` (age public keys): the file, its digest and the upload are of the encrypted stream,
    named ``basename.<ext>.age``; empty: as before, not encrypted.

    ``exclude_tables`` / ``exclude_table_data`` (exact ``schema.table`` names): pg_dump
    ``--exclude-table`` / ``--exclude-table-data``; the row counts say the same (absent / 0).
    """
    try:
        recipients = age.check_recipients(recipients)
    except ValueError as exc:
        raise age.EncryptionError(str(exc)) from None
    if recipients:
        age.binary("age")  # not installed: said before any dump work
    started = time.monotonic()
    started_at = dt.datetime.now(dt.UTC)
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise disk_full(out_dir) from None
        raise BackupError(f"cannot create local backup directory {out_dir}: {exc.strerror}") from None

    final = os.path.join(out_dir, artifact_name(basename, fmt, compression, encrypted=bool(recipients)))
    if os.path.exists(final):
        raise BackupError(f"{final} already exists; refusing to overwrite a backup")
    plan = _DumpPlan(conn, out_dir, final, fmt, compression, jobs, part_size, pg_bin_root, uploader,
                     lock_wait_timeout, timeout, recipients, tuple(exclude_tables), tuple(exclude_table_data))
    if uploader is not None:
        uploader.start()  # a missing bucket or an existing key fails here, before any dump work

    try:
        return _dump(plan, started, started_at)
    except BaseException:
        if uploader is not None:
            uploader.abort()
        raise


def _dump(plan: _DumpPlan, started: float, started_at: dt.datetime) -> DumpResult:
    """Export a snapshot, run pg_dump in it while counting rows, and describe what was written."""
    pg = pgtools.connect(plan.conn)
    try:
        pg.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        pg.read_only = True
        facts = pg.execute(sqlfiles.text("dump/snapshot_facts.sql")).fetchone()
        snapshot_id, snapshot_time, db_version, version_num, database = facts
        major = version_num // 10000
        pg_dump = pgtools.client_binary("pg_dump", major, plan.pg_bin_root)
        pg_dump_version = pgtools.binary_version(pg_dump)
        argv = _pg_dump_argv(plan, pg_dump, snapshot_id)
        log.info("running %s", " ".join(argv))  # argv holds no secret: the password is in the env
        (sha, parts, size), counts, upload_tail = _dump_in_snapshot(plan, pg, argv, major)
    finally:
        pg.close()  # ends the snapshot transaction

    return DumpResult(
        path=plan.final,
        file=os.path.basename(plan.final),
        size=size,
        sha256=sha,
        part_size=plan.part_size,
        part_sha256=parts,
        format=plan.fmt,
        compression=plan.compression,
        jobs=plan.jobs if plan.fmt == "directory" else 1,
        database=database,
        db_version=db_version.strip(),
        server_version_num=version_num,
        pg_dump_version=pg_dump_version,
        snapshot_time=snapshot_time.astimezone(dt.UTC).isoformat().replace("+00:00", "Z"),
        started_at=started_at.isoformat().replace("+00:00", "Z"),
        duration_seconds=round(time.monotonic() - started, 3),
        table_counts=counts,
        upload_tail=upload_tail,
        encryption=encryption_block(plan.recipients),
        exclude_tables=list(plan.exclude_tables),
        exclude_table_data=list(plan.exclude_table_data),
    )


def _pg_dump_argv(plan: _DumpPlan, pg_dump: str, snapshot_id: str) -> list[str]:
    argv = [pg_dump, f"--snapshot={snapshot_id}", f"--format={plan.fmt}", f"--compress={plan.compression}"]
    if plan.lock_wait_timeout:
        argv.append(f"--lock-wait-timeout={int(plan.lock_wait_timeout)}s")
    # one argv element each (no shell): the quoted pattern reaches pg_dump as written
    argv += [f"--exclude-table={table_pattern(name)}" for name in plan.exclude_tables]
    argv += [f"--exclude-table-data={table_pattern(name)}" for name in plan.exclude_table_data]
    argv += ["--no-password", "--dbname", plan.conn.dbname]
    if plan.fmt == "directory":
        argv += [f"--jobs={plan.jobs}", f"--file={plan.partial}"]
    return argv


def _dump_in_snapshot(plan: _DumpPlan, pg: psycopg.Connection, argv: list[str],
                      major: int) -> tuple[tuple[str, list[str], int], dict[str, int], dict[str, float]]:
    """pg_dump and the row counts side by side; returns (sha256, part digests, size), counts, upload tail.

    On any failure pg_dump is killed, the partial files are removed and a count still running is
    cancelled."""
    counter = _RowCounter(pg, plan.exclude_tables, plan.exclude_table_data)
    proc = _start_pg_dump(plan, argv, major)
    stderr = StderrTail(proc.stderr, plan.conn.password, "pg_dump", keep=20)
    stderr.start()
    counter.start()  # counts run in the snapshot transaction while pg_dump streams
    watchdog = _Watchdog(proc, plan.timeout)
    try:
        finish = _finish_directory if plan.fmt == "directory" else _finish_stream
        written = finish(plan, proc, stderr, watchdog)
        counter.finish()
        upload_tail = plan.uploader.complete() if plan.uploader is not None else {}
        os.rename(plan.finished_file, plan.final)
        _fsync_dir(plan.out_dir)
    except BaseException:
        _clean_up_failed_dump(plan, proc, pg, counter)
        raise
    finally:
        watchdog.cancel()
        # The counts' session runs under statement_timeout and lock_timeout (PgConn): bounded.
        counter.join()
    return written, counter.counts, upload_tail


def _start_pg_dump(plan: _DumpPlan, argv: list[str], major: int) -> subprocess.Popen:
    try:
        proc = subprocess.Popen(
            argv,
            stdout=subprocess.DEVNULL if plan.fmt == "directory" else subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=plan.conn.client_tool_env(major),
        )
    except OSError as exc:
        raise DumpFailed(f"cannot start {argv[0]}: {exc.strerror}") from None
    if proc.stdout is not None:
        widen_pipe(proc.stdout.fileno())
    return proc


def _finish_directory(plan: _DumpPlan, proc: subprocess.Popen, stderr: StderrTail,
                      watchdog: _Watchdog) -> tuple[str, list[str], int]:
    """pg_dump wrote a directory: once it exited cleanly, pack it into one tar, hashed while written."""
    _check_exit(plan, proc, watchdog.remaining(), stderr, watchdog, disk_full_at=plan.partial)
    written = _tar_directory(plan.partial, plan.tar_partial, plan.part_size, plan.uploader, plan.recipients)
    shutil.rmtree(plan.partial)
    return written


def _finish_stream(plan: _DumpPlan, proc: subprocess.Popen, stderr: StderrTail,
                   watchdog: _Watchdog) -> tuple[str, list[str], int]:
    """pg_dump writes to its stdout: into the partial file, hashed (and streamed) as it comes."""
    written = stream_to_file(proc.stdout, plan.partial, plan.part_size, plan.uploader, plan.recipients)
    # Its output is closed: pg_dump is exiting, give it a moment, not forever.
    _check_exit(plan, proc, EXIT_GRACE, stderr, watchdog)
    return written


def _check_exit(plan: _DumpPlan, proc: subprocess.Popen, wait: float | None, stderr: StderrTail,
                watchdog: _Watchdog, disk_full_at: str | None = None) -> None:
    """pg_dump exited with 0 in time, or the error that says why not."""
    rc = _wait(proc, wait)
    stderr.join(STDERR_GRACE)
    watchdog.check()
    if rc != 0:
        if disk_full_at and "No space left on device" in stderr.text():
            raise disk_full(disk_full_at)
        raise _dump_failed(rc, stderr.text(), plan.lock_wait_timeout)


def _clean_up_failed_dump(plan: _DumpPlan, proc: subprocess.Popen, pg: psycopg.Connection,
                          counter: _RowCounter) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(EXIT_GRACE)  # a SIGKILLed child is reaped at once
    for leftover in (plan.partial, plan.tar_partial):
        _remove_quietly(leftover)
    if counter.is_alive():
        _cancel_quietly(pg)  # e.g. a count waiting on the same lock: its result is not wanted


EXIT_GRACE = 60  # seconds pg_dump may take to exit once its output is complete (or after SIGKILL)
STDERR_GRACE = 10  # seconds to read the rest of its stderr once it exited


class DumpTimedOut(DumpFailed):
    pass


class _Watchdog:
    """Kills pg_dump when the dump's overall ``timeout`` (seconds; None: none) has passed."""

    def __init__(self, proc: subprocess.Popen, timeout: float | None):
        self.proc, self.timeout, self.fired = proc, timeout, False
        self.deadline = time.monotonic() + timeout if timeout else None
        self._timer = threading.Timer(timeout, self._kill) if timeout else None
        if self._timer:
            self._timer.daemon = True
            self._timer.start()

    def _kill(self) -> None:
        if self.proc.poll() is None:
            self.fired = True
            self.proc.kill()

    def remaining(self) -> float | None:
        # a little past the deadline: the timer kills pg_dump first, so wait() returns
        return None if self.deadline is None else max(0.0, self.deadline - time.monotonic()) + EXIT_GRACE

    def check(self) -> None:
        if self.fired:
            raise DumpTimedOut(f"pg_dump did not finish within {self.timeout:g} s and was killed")

    def cancel(self) -> None:
        if self._timer:
            self._timer.cancel()


def _cancel_quietly(pg: psycopg.Connection) -> None:
    try:
        pg.cancel_safe(timeout=10)
    except Exception as exc:  # the count then ends at its own statement_timeout / lock_timeout
        log.warning("could not cancel the row counts: %s", exc)


def _wait(proc: subprocess.Popen, timeout: float | None) -> int:
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        raise DumpTimedOut(f"pg_dump did not exit within {timeout:g} s (pid {proc.pid}); killed") from None


def _dump_failed(rc: int, stderr: str, lock_wait_timeout: int | None) -> DumpFailed:
    """pg_dump's own message, led by the cause when it is a lock it could not get in time."""
    lock = re.search(r"LOCK TABLE (\S+) IN ACCESS SHARE MODE", stderr)
    if lock and ("timeout" in stderr or "could not obtain lock" in stderr):
        limit = f" within lock_wait_timeout_seconds ({lock_wait_timeout} s)" if lock_wait_timeout else ""
        return DumpFailed(f"pg_dump could not lock table {lock.group(1)}{limit}: another session holds a "
                          f"conflicting lock on it; pg_dump exited with {rc}: {stderr}")
    return DumpFailed(f"pg_dump exited with {rc}: {stderr}")


def _tar_directory(src: str, path: str, part_size: int, uploader=None,
                   recipients: Sequence[str] = ()) -> tuple[str, list[str], int]:
    """Pack a directory-format dump into one uncompressed tar (its members are already compressed)."""
    try:
        with open(path, "xb", buffering=0) as raw:
            out = hashing_writer(raw, path, part_size, uploader)
            with Sealed(out, recipients) as sink, tarfile.open(fileobj=sink, mode="w|", bufsize=CHUNK) as tar:
                for name in sorted(os.listdir(src)):
                    tar.add(os.path.join(src, name), arcname=name)
            os.fsync(raw.fileno())
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise disk_full(path) from None
        raise
    sha, parts = out.finish()
    return sha, parts, out.size
