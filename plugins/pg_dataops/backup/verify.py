"""Prove a backup by restoring it: into a temporary database, then check it against its manifest.

Airflow-free. Used by pg_backup (right after the upload) and pg_restore_drill (from S3, timed).
Checks, from include/sql/verify/: tables per schema, every table's row count against the counts
taken in the dump's snapshot, the required tables (``verify_required_tables``) with their restored
counts, and amcheck (``bt_index_check`` with ``heapallindexed``) on every B-tree index. The counts
and the index checks run in parallel over ``jobs`` connections, one table or index per connection
at a time, largest first.

A restore that fails because of the dump (a constraint, a missing object) raises
``VerificationFailed`` (permanent); one that fails because of the restore-test server (disk full,
out of memory, connection lost or refused, server shutting down) raises ``RestoreServerError``,
which the task retries.

An encrypted backup (age) is checked against the identity before anything else: a missing or wrong key
fails at once, naming the Airflow connection and the backup's recipients. pg_restore --jobs needs a
seekable file, so a custom-format dump is decrypted into the restore's scratch directory
(:func:`scratch_dir`) and removed right after the restore; a directory-format tar is decrypted as a stream
straight into its extraction there, a plain SQL script as a stream into psql.

Exclusions (the target's ``exclude_tables`` / ``exclude_table_data``, recorded in the manifest): an excluded
table must be absent from the restore (present is a mismatch), a table whose data was excluded present
with 0 rows.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gzip
import logging
import os
import re
import secrets
import shutil
import signal
import subprocess
import tarfile
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import psycopg

from pg_dataops.backup.manifest import exclusions as exclusions_of
from pg_dataops.common import age, sqlfiles
from pg_dataops.common import pg as pgtools
from pg_dataops.common.errors import (
    AuthenticationFailed,
    BackupError,
    ClientVersionError,
    ConnectionMissing,
    DatabaseUnreachable,
    RestoreServerError,
    VerificationFailed,
    redact,
)

__all__ = ["RestoreServerError", "VerificationFailed", "VerifyResult", "check_decryptable", "classify_failure",
           "create_database", "drop_database", "exclusions_of", "read_identity", "remove_scratch_dir", "scratch_dir",
           "verify_backup"]

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
    users: int | None  # public.users as restored (counted), None when it is not there
    amcheck: str  # "N btree indexes" or why it was skipped
    mismatches: list[str] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)
    required_tables: list[str] = field(default_factory=list)
    extension_tables: list[str] = field(default_factory=list)  # "schema.table (extension[, config])"
    # seconds: restore, catalog (listing), counts/amcheck (busy time summed over the connections),
    # checks_wall (all checks, in parallel), connections (how many ran them)
    timings: dict[str, float] = field(default_factory=dict)

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


SCRATCH_FOLDER = ".scratch"
_SCRATCH_NAME = re.compile(r"pgdataops_[a-z0-9_]+")


def scratch_dir(local_root: str, database: str) -> str:
    """``{local_root}/.scratch/{database}``: where a restore test of an encrypted backup keeps its plaintext."""
    if not _SCRATCH_NAME.fullmatch(database):
        raise ValueError(f"not a scratch database name: {database!r}")
    return os.path.join(local_root, SCRATCH_FOLDER, database)


def remove_scratch_dir(local_root: str, database: str) -> bool:
    """Removes the scratch directory of ``database`` (the teardown's part); whether there was one."""
    path = scratch_dir(local_root, database)
    if not os.path.lexists(path):
        return False
    shutil.rmtree(path)
    log.info("removed the restore's scratch directory %s", path)
    return True


def _fresh_dir(path: str) -> None:
    """An empty directory only we can read (a retry finds the last attempt's plaintext: removed first)."""
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    os.mkdir(path, mode=0o700)


# ---------------------------------------------------------------------------------------------
# Encrypted backups: the identity first
# ---------------------------------------------------------------------------------------------

def _recipients(encryption: dict, what: str) -> list[str]:
    recipients = encryption.get("recipients") if isinstance(encryption, dict) else None
    if not isinstance(encryption, dict) or encryption.get("format") != age.FORMAT or not recipients \
            or not isinstance(recipients, list):
        raise age.DecryptionFailed(f"cannot decrypt {what}: its encryption record {encryption!r} is not "
                                   f"{{'format': 'age', 'recipients': [...]}}")
    return recipients


def read_identity(read, encryption: dict, conn_id: str, what: str) -> str:
    """The identity ``read()`` returns (an Airflow connection's password); a missing connection fails
    naming it and the recipients ``what`` was encrypted for."""
    recipients = _recipients(encryption, what)
    try:
        identity = read() if read is not None else None
    except ConnectionMissing as exc:
        raise age.IdentityMismatch(f"cannot decrypt {what}: {exc}; put the age identity of one of its recipients "
                                   f"({age.describe(recipients)}), or the escrow key, in its password") from None
    if not identity:
        raise age.IdentityMismatch(f"cannot decrypt {what}: Airflow connection {conn_id!r} holds no age identity; "
                                   f"it was encrypted for {age.describe(recipients)}")
    return identity


def check_decryptable(encryption: dict, identity: str | None, conn_id: str, what: str) -> None:
    """Fails unless ``identity`` opens a backup encrypted for ``encryption['recipients']``; the message
    names the connection and the recipients (checked with age-keygen, no byte of the backup read)."""
    recipients = _recipients(encryption, what)
    try:
        age.check_identity(identity, recipients, conn_id, what=what)
    except age.IdentityMismatch as exc:
        if age.describe(recipients) in str(exc):
            raise
        # a missing or malformed key: age's message names the connection only
        raise age.IdentityMismatch(f"{exc}; {what} was encrypted for {age.describe(recipients)}") from None


def check_client_can_restore(backup_server_version_num: int, client_major: int) -> None:
    """pg_restore cannot read archives from a newer pg_dump; say so before touching anything."""
    backup_major = backup_server_version_num // 10000
    if backup_major > client_major:
        raise ClientVersionError(
            f"the backup comes from PostgreSQL {backup_major}, newer than the restore server's client "
            f"(PostgreSQL {client_major}): restore it with PostgreSQL {backup_major} or newer"
        )


# ---------------------------------------------------------------------------------------------
# Whose fault: the dump's (permanent) or the restore server's (transient)
# ---------------------------------------------------------------------------------------------

# Messages of libpq and the server that say the restore-test server, not the dump, is the problem.
# Matched in lower case, with quoted names removed first (a table called "out of memory" is data).
_SERVER_TROUBLE = (
    ("no space left on device", "the restore server is out of disk space"),
    ("could not extend file", "the restore server is out of disk space"),
    ("disk quota exceeded", "the restore server is out of disk space"),
    ("out of memory", "the restore server is out of memory"),
    ("cannot allocate memory", "the restore server is out of memory"),
    ("could not fork", "the restore server is out of memory or processes"),
    ("server closed the connection unexpectedly", "the connection to the restore server was lost"),
    ("connection to server was lost", "the connection to the restore server was lost"),
    ("could not receive data from server", "the connection to the restore server was lost"),
    ("could not send data to server", "the connection to the restore server was lost"),
    ("ssl syscall error", "the connection to the restore server was lost"),
    ("ssl connection has been closed unexpectedly", "the connection to the restore server was lost"),
    ("connection reset by peer", "the connection to the restore server was lost"),
    ("broken pipe", "the connection to the restore server was lost"),
    ("terminating connection due to administrator command", "the restore server ended the session"),
    ("terminating connection due to unexpected postmaster exit", "the restore server crashed"),
    ("terminating connection because of crash of another server process", "the restore server crashed"),
    ("the database system is shutting down", "the restore server is shutting down"),
    ("the database system is starting up", "the restore server is starting up"),
    ("the database system is in recovery mode", "the restore server is recovering from a crash"),
    ("the database system is not yet accepting connections", "the restore server is starting up"),
    ("sorry, too many clients already", "the restore server has no free connection slot"),
    ("remaining connection slots are reserved", "the restore server has no free connection slot"),
    ("too many connections for", "the restore server has no free connection slot"),
    ("connection refused", "the restore server is not accepting connections"),
    ("could not connect to server", "the restore server is not accepting connections"),
    ("timeout expired", "the restore server did not answer in time"),
    ("no route to host", "the restore server is unreachable"),
    ("network is unreachable", "the restore server is unreachable"),
    ("could not translate host name", "the restore server's host name does not resolve"),
    ("the connection is closed", "the connection to the restore server was lost"),
    ("consuming input failed", "the connection to the restore server was lost"),
)
_AUTH_FAILURE = ("password authentication failed", "no password supplied", "no pg_hba.conf entry")


def _matchable(text: str) -> str:
    """Lower case, without quoted names, DETAIL/CONTEXT lines and pg_restore's "Command was:" echo
    of the SQL (up to its next message): names, keys and SQL are the dump's data, not the server's."""
    lines, in_command = [], False
    for line in text.splitlines():
        low = line.strip().lower()
        if low.startswith("command was:"):
            in_command = True
        elif low.startswith(("pg_restore:", "psql:")):
            in_command = False
        if not in_command and not low.startswith(("detail:", "context:")):  # these quote the data
            lines.append(line)
    return re.sub(r'"[^"\n]*"', '""', "\n".join(lines)).lower()


def server_trouble(text: str) -> str | None:
    """What is wrong with the restore server according to ``text`` (an error output), or None."""
    low = _matchable(text)
    return next((why for needle, why in _SERVER_TROUBLE if needle in low), None)


def classify_failure(what: str, text: str, secret: str | None = None) -> BackupError:
    """The error for a failed restore or check: ``what`` names it, ``text`` is its error output."""
    msg = " | ".join(redact(ln.strip(), secret) for ln in text.strip().splitlines()[-8:] if ln.strip())
    low = _matchable(text)
    if any(needle in low for needle in _AUTH_FAILURE):
        return AuthenticationFailed(f"{what}: the restore server refused the login (check the password of its "
                                    f"Airflow connection): {msg}")
    why = server_trouble(text)
    if why:
        return RestoreServerError(f"{what}: {why}; not a fault of the backup, retrying: {msg}")
    return VerificationFailed(f"{what}: {msg}")


# ---------------------------------------------------------------------------------------------
# The restore
# ---------------------------------------------------------------------------------------------

def restore(conn: pgtools.PgConn, path: str, fmt: str, *, jobs: int, pg_bin_root: str, major: int,
            timeout: float | None = None, identity: str | None = None, scratch: str | None = None,
            sections: Sequence[str] | None = None, owners: bool = False) -> float:
    """Restore ``path`` into ``conn.dbname``; returns seconds. Stops at the first error.

    With ``identity``, ``path`` is age-encrypted: its plaintext goes to the directory ``scratch`` (created
    empty, removed when the restore is over, whatever happened) or streams into the restore client.
    ``sections``: pg_restore ``--section`` values (pre-data, data, post-data); None: the whole archive.
    ``owners``: keep the backup's owners and GRANTs (the roles must exist; a superuser connection); the
    default restores with ``--no-owner --no-privileges``, every object owned by the connection's user."""
    started = time.monotonic()
    env = conn.client_tool_env(major)
    try:
        if identity is None:
            _restore(conn, path, fmt, env, jobs=jobs, pg_bin_root=pg_bin_root, major=major, timeout=timeout,
                     sections=sections, owners=owners)
        else:
            _restore_encrypted(conn, path, fmt, env, jobs=jobs, pg_bin_root=pg_bin_root, major=major,
                               timeout=timeout, identity=identity, scratch=scratch, sections=sections,
                               owners=owners)
    except BaseException:
        # A stopped restore client (time limit, task killed) may leave server sessions that finish their
        # statement first; they are in our scratch database, so end them now.
        _end_sessions(conn)
        raise
    return round(time.monotonic() - started, 3)


def _end_sessions(conn: pgtools.PgConn) -> None:
    try:
        pg = pgtools.connect(conn, autocommit=True)
        try:
            pg.execute(sqlfiles.text("verify/end_sessions.sql"))
        finally:
            pg.close()
    except Exception as exc:  # best effort: the scratch database is dropped WITH (FORCE) afterwards anyway
        log.warning("could not end the restore's sessions in %s: %s", conn.dbname, redact(str(exc), conn.password))


def _restore(conn: pgtools.PgConn, path: str, fmt: str, env: dict, *, jobs: int, pg_bin_root: str, major: int,
             timeout: float | None, sections: Sequence[str] | None = None, owners: bool = False) -> None:
    if sections is not None and fmt not in ("custom", "directory"):
        raise BackupError(f"a {fmt} dump cannot be restored by section: only custom and directory archives can")
    if fmt in ("custom", "directory"):
        workdir = None
        source = path
        try:
            if fmt == "directory":  # our .tar of a directory-format dump
                workdir = tempfile.mkdtemp(prefix="pgdataops-restore-", dir=os.path.dirname(path))
                with tarfile.open(path) as tar:
                    tar.extractall(workdir, filter="data")
                source = workdir
            _pg_restore(conn, source, env, jobs=jobs, pg_bin_root=pg_bin_root, major=major, timeout=timeout,
                        sections=sections, owners=owners)
        finally:
            if workdir:
                shutil.rmtree(workdir, ignore_errors=True)
    elif fmt == "plain":
        opener = gzip.open if path.endswith(".gz") else open
        with opener(path, "rb") as src:
            _psql(conn, src, env, pg_bin_root=pg_bin_root, major=major, timeout=timeout)
    else:
        raise BackupError(f"unknown dump format {fmt!r}")


def _pg_restore(conn: pgtools.PgConn, source: str, env: dict, *, jobs: int, pg_bin_root: str, major: int,
                timeout: float | None, sections: Sequence[str] | None = None, owners: bool = False) -> None:
    pg_restore = pgtools.client_binary("pg_restore", major, pg_bin_root)
    argv = [pg_restore, "--exit-on-error", *(() if owners else ("--no-owner", "--no-privileges")), f"--jobs={jobs}",
            *(f"--section={section}" for section in sections or ()),
            "--no-password", "--dbname", conn.dbname, source]
    _run(argv, env, conn.password, timeout=timeout)


def _psql(conn: pgtools.PgConn, src, env: dict, *, pg_bin_root: str, major: int, timeout: float | None) -> None:
    psql = pgtools.client_binary("psql", major, pg_bin_root)
    argv = [psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "--no-password", "-d", conn.dbname]
    _run(argv, env, conn.password, stdin=src, timeout=timeout)


def _left(deadline: float | None) -> float | None:
    return None if deadline is None else max(deadline - time.monotonic(), 0.001)


def _restore_encrypted(conn: pgtools.PgConn, path: str, fmt: str, env: dict, *, jobs: int, pg_bin_root: str,
                       major: int, timeout: float | None, identity: str, scratch: str | None,
                       sections: Sequence[str] | None = None, owners: bool = False) -> None:
    """Decrypt and restore; the plaintext exists only in ``scratch`` and only until the restore ended."""
    if fmt not in ("custom", "directory", "plain"):
        raise BackupError(f"unknown dump format {fmt!r}")
    if sections is not None and fmt == "plain":
        raise BackupError("a plain dump cannot be restored by section: only custom and directory archives can")
    if scratch is None:
        raise ValueError("an encrypted backup is restored through a scratch directory: none given")
    deadline = None if timeout is None else time.monotonic() + timeout
    plain_name = os.path.basename(path).removesuffix(age.SUFFIX)
    _fresh_dir(scratch)
    try:
        if fmt == "custom":  # pg_restore --jobs seeks in the archive: a file
            plain = os.path.join(scratch, plain_name)
            age.decrypt_file(path, plain, identity, timeout=timeout)
            _pg_restore(conn, plain, env, jobs=jobs, pg_bin_root=pg_bin_root, major=major, timeout=_left(deadline),
                        sections=sections, owners=owners)
        elif fmt == "directory":  # our tar, extracted as it is decrypted: no plaintext tar
            workdir = os.path.join(scratch, "dump")
            with _decrypting(path, identity, timeout) as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
                tar.extractall(workdir, filter="data")
            _pg_restore(conn, workdir, env, jobs=jobs, pg_bin_root=pg_bin_root, major=major, timeout=_left(deadline),
                        sections=sections, owners=owners)
        else:  # plain SQL streams into psql: nothing on disk
            with _decrypting(path, identity, timeout) as stream:
                src = gzip.GzipFile(fileobj=stream) if plain_name.endswith(".gz") else stream
                _psql(conn, src, env, pg_bin_root=pg_bin_root, major=major, timeout=_left(deadline))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


@contextlib.contextmanager
def _decrypting(path: str, identity: str, timeout: float | None):
    """``age -d`` of ``path`` as a readable stream. On leaving, age must have exited 0: when it did not,
    its reason is raised (over the reader's, which only saw the stream end); the reader failing stops it."""
    name = os.path.basename(path)
    proc = age.decrypting_process(path, identity)
    timed_out = threading.Event()

    def stop() -> None:
        timed_out.set()
        proc.kill()

    timer = threading.Timer(timeout, stop) if timeout else None
    if timer:
        timer.daemon = True
        timer.start()
    try:
        try:
            yield proc.stdout
            while proc.stdout.read(1 << 20):  # a tar's padding after its end: let age finish
                pass
        except BaseException:
            if proc.poll() is None:  # the reader gave up, not age
                proc.kill()
                proc.wait()
                raise
            if proc.returncode == 0:
                raise
            _raise_decryption_failed(proc, name, timeout, timed_out.is_set())
        if proc.wait() != 0:
            _raise_decryption_failed(proc, name, timeout, timed_out.is_set())
    finally:
        if timer:
            timer.cancel()
        for stream in (proc.stdout, proc.stderr):
            stream.close()


def _raise_decryption_failed(proc: subprocess.Popen, name: str, timeout: float | None, timed_out: bool) -> None:
    if timed_out:
        raise VerificationFailed(f"age -d of {name} did not finish within {timeout:.0f} s (task_timeout_minutes) "
                                 "and was stopped") from None
    reason = proc.stderr.read().decode(errors="replace").strip()[-500:] or f"exit {proc.returncode}"
    raise age.DecryptionFailed(f"age -d refused {name}: {reason}") from None


def _run(argv: list[str], env: dict, secret: str | None, stdin=None, timeout: float | None = None) -> None:
    """Run a restore client; a failure is classified, a run past ``timeout`` seconds is stopped."""
    tool = os.path.basename(argv[0])
    log.info("running %s", " ".join(argv))
    deadline = None if timeout is None else time.monotonic() + timeout
    # stderr goes to a file, not a pipe: a chatty child can't block while we feed its stdin.
    with tempfile.TemporaryFile() as errfile:
        # Its own process group: pg_restore -j forks workers, and stopping it must stop them too.
        proc = subprocess.Popen(argv, env=env, stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=errfile, start_new_session=True)
        try:
            if stdin is not None:
                _feed(proc, stdin, deadline, tool)
            rc = proc.wait(timeout=None if deadline is None else max(deadline - time.monotonic(), 0.001))
        except subprocess.TimeoutExpired:
            raise VerificationFailed(
                f"{tool} did not finish within {timeout:.0f} s (task_timeout_minutes) and was stopped: the restore "
                "takes longer than the recovery time allowed for it"
            ) from None
        finally:
            if proc.poll() is None:  # timed out, or the task itself was stopped (e.g. execution_timeout)
                _kill_group(proc)
        errfile.seek(0)
        err = errfile.read().decode(errors="replace")
    if rc != 0:
        raise classify_failure(f"{tool} failed (exit {rc})", err or "(no error output)", secret)


def _feed(proc: subprocess.Popen, src, deadline: float | None, tool: str) -> None:
    # Streamed (a gzip file can't be the child's stdin): constant memory whatever the size.
    try:
        for block in iter(lambda: src.read(1 << 20), b""):
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(tool, 0)
            proc.stdin.write(block)
    except BrokenPipeError:
        pass  # the child stopped at an error; its exit code and stderr say which
    finally:
        try:
            proc.stdin.close()
        except BrokenPipeError:
            pass


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()
    proc.wait()


def _prepare_scratch(admin: pgtools.PgConn, database: str) -> None:
    """The scratch database must be empty: a retried restore test finds the last attempt's objects."""
    conn = admin.with_db(database)
    try:
        pg = pgtools.connect(conn, autocommit=True)
    except DatabaseUnreachable as exc:
        if "does not exist" not in str(exc):
            raise
        create_database(admin, database)
        return
    try:
        empty = pg.execute(sqlfiles.text("verify/scratch_is_empty.sql")).fetchone()[0]
    finally:
        pg.close()
    if not empty:
        log.info("scratch database %s holds a previous attempt's restore: starting from a new one", database)
        drop_database(admin, database)
        create_database(admin, database)


# ---------------------------------------------------------------------------------------------
# The checks, in parallel
# ---------------------------------------------------------------------------------------------

@dataclass
class _Job:
    kind: str  # "count" | "amcheck"
    name: str  # schema.table or schema.index
    cost: int  # bytes it reads, for largest-first
    params: dict = field(default_factory=dict)
    schema: str = ""
    table: str = ""


@dataclass
class _Outcome:
    job: _Job
    seconds: float
    value: int | None = None
    error: BaseException | None = None


def _check_error(job: _Job, exc: BaseException, secret: str | None) -> BaseException:
    """What a failed check means: corruption (a mismatch), a time limit, or the server's trouble."""
    what = f"{'row count of table' if job.kind == 'count' else 'amcheck of index'} {job.name}"
    sqlstate = getattr(exc, "sqlstate", None) or ""
    if isinstance(exc, psycopg.errors.QueryCanceled | psycopg.errors.LockNotAvailable):
        return VerificationFailed(f"{what} was stopped by our time limit (statement_timeout_seconds / "
                                  f"lock_wait_timeout_seconds): {redact(str(exc).strip(), secret)}")
    if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError | BackupError) or sqlstate.startswith("53"):
        err = classify_failure(what, str(exc) or type(exc).__name__, secret)
        if isinstance(err, RestoreServerError | AuthenticationFailed):
            return err
        return RestoreServerError(f"{what}: the restore server failed, retrying: {redact(str(exc).strip(), secret)}")
    return exc  # reported as a mismatch by the caller


def _run_job(pg: psycopg.Connection, job: _Job) -> int | None:
    """One check: a table's row count (returned), or amcheck of one index (None: it raises if corrupt)."""
    if job.kind == "count":
        return pg.execute(sqlfiles.composed("dump/count_rows.sql", schema=job.schema, table=job.table)).fetchone()[0]
    pg.execute(sqlfiles.text("verify/amcheck_index.sql"), job.params).fetchone()
    return None


def _run_jobs(conn: pgtools.PgConn, jobs: list[_Job], connections: int) -> list[_Outcome]:
    """Run ``jobs`` largest first over up to ``connections`` sessions, one job per session at a time.

    A corruption (any SQL error of a check) is an outcome; the restore server's trouble stops
    every session and is raised.
    """
    queue = sorted(jobs, key=lambda j: -j.cost)
    lock = threading.Lock()
    outcomes: list[_Outcome] = []
    fatal: list[BaseException] = []

    def worker() -> None:
        try:
            pg = pgtools.connect(conn, autocommit=True)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            with lock:
                fatal.append(exc)
            return
        try:
            if workers > 1:
                pg.execute(sqlfiles.text("verify/check_session.sql"))
            while True:
                with lock:
                    if fatal or not queue:
                        return
                    job = queue.pop(0)
                started = time.monotonic()
                try:
                    value = _run_job(pg, job)
                    out = _Outcome(job, time.monotonic() - started, value=value)
                except Exception as exc:  # noqa: BLE001 - classified below
                    err = _check_error(job, exc, conn.password)
                    with lock:
                        if isinstance(err, BackupError):
                            fatal.append(err)
                            return
                    out = _Outcome(job, time.monotonic() - started, error=err)
                with lock:
                    outcomes.append(out)
        finally:
            pg.close()

    workers = max(1, min(connections, len(queue)))
    threads = [threading.Thread(target=worker, name=f"verify-check-{i}", daemon=True) for i in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if fatal:
        raise fatal[0]
    return outcomes


@dataclass
class _Restored:
    """What the restored database's catalog says: its tables, their sizes, the indexes to check."""

    per_schema: dict[str, int]
    tables: dict[str, tuple[str, str]]  # schema.table -> (schema, table)
    sizes: dict[str, int]
    extension_rows: list[tuple]  # (schema, table, extension, is a config table)
    indexes: list[tuple] | None  # (oid, schema, index, table, bytes); None: amcheck not available
    seconds: float


def _list_restored(conn: pgtools.PgConn) -> _Restored:
    started = time.monotonic()
    pg = pgtools.connect(conn, autocommit=True)
    try:
        per_schema = {s: n for s, n in pg.execute(sqlfiles.text("verify/tables_per_schema.sql")).fetchall()}
        found_rows = pg.execute(sqlfiles.text("dump/list_tables.sql")).fetchall()
        sizes = {f"{s}.{t}": b for s, t, b in pg.execute(sqlfiles.text("verify/table_sizes.sql")).fetchall()}
        ext_rows = pg.execute(sqlfiles.text("verify/extension_tables.sql")).fetchall()
        if pg.execute(sqlfiles.text("verify/amcheck_available.sql")).fetchone()[0]:
            pg.execute(sqlfiles.text("verify/amcheck_create.sql"))
            indexes = pg.execute(sqlfiles.text("verify/btree_indexes.sql")).fetchall()
        else:
            indexes = None
    except psycopg.Error as exc:
        raise classify_failure("listing the restored tables", str(exc), conn.password) from None
    finally:
        pg.close()
    return _Restored(per_schema, {f"{s}.{t}": (s, t) for s, t in found_rows}, sizes, ext_rows, indexes,
                     time.monotonic() - started)


def _exclusion_mismatches(found: dict, expected_counts: dict[str, int], exclude_tables: tuple[str, ...],
                          exclude_table_data: tuple[str, ...]) -> list[str]:
    """What the exclusions promise: an excluded table absent (from the restore and the counts), a table
    whose data is excluded counted 0 and restored (its rows are checked against that 0 with the others)."""
    mismatches: list[str] = []
    for name in exclude_tables:
        if name in found:
            mismatches.append(f"table {name} is restored but the backup excludes it (exclude_tables)")
        if name in expected_counts:
            mismatches.append(f"table {name} is excluded (exclude_tables) but the manifest counts its rows")
    for name in exclude_table_data:
        if expected_counts.get(name, 0) != 0:
            mismatches.append(f"table {name}: its data is excluded (exclude_table_data) but the manifest counts "
                              f"{expected_counts[name]} rows")
        if name in expected_counts and name not in found:
            mismatches.append(f"table {name} (exclude_table_data: its definition is backed up) is missing from the "
                              "restore")
    return mismatches


def _structure_mismatches(restored: _Restored, expected_counts: dict[str, int],
                          required_tables: tuple[str, ...], exclude_tables: tuple[str, ...] = (),
                          exclude_table_data: tuple[str, ...] = ()) -> list[str]:
    """Tables missing, extra, or in other numbers per schema than the manifest says."""
    mismatches: list[str] = _exclusion_mismatches(restored.tables, expected_counts, exclude_tables,
                                                  exclude_table_data)
    found, per_schema = restored.tables, restored.per_schema
    if not found:
        mismatches.append("the restore holds no tables: nothing was verified (was an empty or the wrong database "
                          "dumped?)")
    for name in required_tables:
        if name not in found:
            mismatches.append(f"required table {name} is missing from the restore (verify_required_tables)")
    expected_schema = Counter(name.split(".", 1)[0] for name in expected_counts)
    for schema in sorted(set(expected_schema) | set(per_schema)):
        if expected_schema.get(schema, 0) != per_schema.get(schema, 0):
            mismatches.append(
                f"schema {schema}: {per_schema.get(schema, 0)} tables restored, "
                f"{expected_schema.get(schema, 0)} in the manifest"
            )
    for name in sorted(expected_counts):
        if name not in found and name not in exclude_table_data:  # those: said above
            mismatches.append(f"table {name} is missing from the restore")
    for name in sorted(set(found) - set(expected_counts) - set(exclude_tables)):  # excluded ones: said above
        mismatches.append(f"table {name} is restored but not in the manifest")
    return mismatches


def _judge_outcomes(outcomes: list[_Outcome],
                    expected_counts: dict[str, int]) -> tuple[dict[str, int], list[str], list[str]]:
    """The restored row counts, the counts that failed or differ from the snapshot's, amcheck's findings."""
    restored: dict[str, int] = {}
    mismatches: list[str] = []
    amcheck_errors: list[str] = []
    for out in sorted(outcomes, key=lambda o: (o.job.kind, o.job.name)):
        if out.error is not None:
            text = str(out.error).strip().splitlines()[0] if str(out.error).strip() else type(out.error).__name__
            if out.job.kind == "count":
                mismatches.append(f"table {out.job.name} could not be counted: {text}")
            else:
                amcheck_errors.append(f"amcheck: index {out.job.name}: {text}")
            continue
        if out.job.kind == "count":
            restored[out.job.name] = out.value
    for name, got in sorted(restored.items()):
        expected = expected_counts.get(name)
        if expected is not None and got != expected:
            mismatches.append(f"table {name}: {got} rows restored, {expected} in the dump's snapshot")
    return restored, mismatches, amcheck_errors


def run_checks(conn: pgtools.PgConn, expected_counts: dict[str, int], *, required_tables: tuple[str, ...] = (),
               jobs: int = 2, exclude_tables: Sequence[str] = (), exclude_table_data: Sequence[str] = ()) -> dict:
    """Compare the restored database with the manifest's counts; returns facts and mismatches.

    ``exclude_tables`` / ``exclude_table_data``: the manifest's (:func:`exclusions_of`); those tables must
    be absent / restored empty."""
    listed = _list_restored(conn)
    mismatches = _structure_mismatches(listed, expected_counts, required_tables, tuple(exclude_tables),
                                       tuple(exclude_table_data))
    work = [_Job("count", name, listed.sizes.get(name, 0), schema=s, table=t)
            for name, (s, t) in listed.tables.items() if name in expected_counts or name in required_tables]
    for oid, schema, index, _table, nbytes in listed.indexes or []:
        work.append(_Job("amcheck", f"{schema}.{index}", nbytes, params={"index_oid": oid}))
    checks_started = time.monotonic()
    outcomes = _run_jobs(conn, work, jobs)
    checks_wall = time.monotonic() - checks_started

    restored, count_mismatches, amcheck_errors = _judge_outcomes(outcomes, expected_counts)
    mismatches += count_mismatches + amcheck_errors
    if listed.indexes is None:
        amcheck = "skipped: amcheck extension not available on the restore server"
    else:
        amcheck = "failed" if amcheck_errors else f"{len(listed.indexes)} btree indexes"
    busy = {"count": 0.0, "amcheck": 0.0}
    for out in outcomes:
        busy[out.job.kind] += out.seconds
    extension_tables = [f"{s}.{t} ({ext}{', config table' if cfg else ''})" for s, t, ext, cfg in listed.extension_rows]
    return {
        "tables_per_schema": listed.per_schema,
        "tables_found": len(listed.tables),
        "rows_checked": sum(restored.values()),
        "restored_counts": restored,
        "users": restored.get("public.users"),
        "amcheck": amcheck,
        "index_count": len(listed.indexes or []),
        "extension_tables": extension_tables,
        "exclude_tables": list(exclude_tables),
        "exclude_table_data": list(exclude_table_data),
        "mismatches": mismatches,
        "timings": {"catalog": round(listed.seconds, 3), "counts": round(busy["count"], 3),
                    "amcheck": round(busy["amcheck"], 3), "checks_wall": round(checks_wall, 3),
                    "connections": max(1, min(jobs, len(work)))},
    }


def describe_checks(facts: dict, expected_counts: dict[str, int], required_tables: tuple[str, ...],
                    jobs: int) -> list[str]:
    """What was checked, with the figures: only checks that really ran are listed."""
    checks = [f"pg_restore --exit-on-error (--jobs={jobs})",
              f"tables per schema vs the manifest: {facts['tables_per_schema'] or 'none restored'}",
              f"row count of each of {len(expected_counts)} tables vs the dump's snapshot "
              f"({facts['rows_checked']:,} rows restored)"]
    restored = facts["restored_counts"]
    for name in required_tables:
        if name in restored and name in expected_counts:
            checks.append(f"required table {name}: {restored[name]:,} rows restored vs "
                          f"{expected_counts[name]:,} in the dump's snapshot")
        elif name in restored:
            checks.append(f"required table {name}: {restored[name]:,} rows restored, not in the dump's counts")
        else:
            checks.append(f"required table {name}: missing")
    checks.append(f"amcheck bt_index_check(heapallindexed) on {facts['index_count']} btree indexes"
                  if not facts["amcheck"].startswith("skipped") else f"amcheck {facts['amcheck']}")
    if facts["extension_tables"]:
        checks.append("extension-owned tables, recreated by CREATE EXTENSION, not counted on either side (a "
                      "config table's user rows are restored from the dump): " + ", ".join(facts["extension_tables"]))
    else:
        checks.append("no extension-owned tables")
    if facts.get("exclude_tables"):
        checks.append("excluded from the backup (exclude_tables), absent from the restore: "
                      + ", ".join(facts["exclude_tables"]))
    if facts.get("exclude_table_data"):
        checks.append("data excluded from the backup (exclude_table_data), restored empty: "
                      + ", ".join(facts["exclude_table_data"]))
    checks.append(f"counts and amcheck in parallel over {facts['timings']['connections']} connection(s)")
    return checks


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
    required_tables: tuple[str, ...] | list[str] = ("public.users",),
    timeout: float | None = None,
    check_connections: int | None = None,
    encryption: dict | None = None,
    identity: str | None = None,
    identity_conn_id: str = "backup_age_identity",
    decrypt_dir: str | None = None,
    exclude_tables: Sequence[str] = (),
    exclude_table_data: Sequence[str] = (),
) -> VerifyResult:
    """Restore ``path`` into the scratch ``database`` on ``admin``'s server and check it.

    ``jobs``: pg_restore --jobs, and the connections the checks run on (``check_connections``
    overrides the latter; the benchmark's one-at-a-time comparison). ``timeout``: seconds the
    restore client may run. ``required_tables``: schema.table names the restore must hold.

    ``encryption`` (the manifest's block, None: not encrypted): ``identity`` (the private key, from
    Airflow connection ``identity_conn_id``) must open it, checked first; the plaintext lives in
    ``decrypt_dir`` (the restore's :func:`scratch_dir`) for the restore only.

    ``exclude_tables`` / ``exclude_table_data``: the manifest's exclusions (``**exclusions_of(doc)``).
    """
    if not _SCRATCH_NAME.fullmatch(database):
        raise ValueError(f"not a scratch database name: {database!r}")
    required = tuple(required_tables)
    what = os.path.basename(path)
    if encryption:
        check_decryptable(encryption, identity, identity_conn_id, what)  # before any restore work
    elif os.path.isfile(path) and age.is_age_file(path):
        raise age.DecryptionFailed(f"{what} is age-encrypted but its description records no encryption: "
                                   "restore it by hand with age -d")
    pg = pgtools.connect(admin)
    try:
        major = pgtools.server_major(pg)
    finally:
        pg.close()
    check_client_can_restore(backup_server_version_num, major)
    _prepare_scratch(admin, database)
    conn = admin.with_db(database)
    restore_seconds = restore(conn, path, fmt, jobs=jobs, pg_bin_root=pg_bin_root, major=major, timeout=timeout,
                              identity=identity if encryption else None, scratch=decrypt_dir)
    started = time.monotonic()
    facts = run_checks(conn, expected_counts, required_tables=required, jobs=check_connections or jobs,
                       exclude_tables=exclude_tables, exclude_table_data=exclude_table_data)
    check_seconds = round(time.monotonic() - started, 3)
    return VerifyResult(
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
        checks=describe_checks(facts, expected_counts, required, jobs),
        required_tables=list(required),
        extension_tables=facts["extension_tables"],
        timings={"restore": restore_seconds, **facts["timings"]},
    )
