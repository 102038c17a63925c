"""A scratch PostgreSQL instance on the worker: a data directory we own, a free port, a private socket.

Airflow-free. Point-in-time recovery restores a base backup into one and replays WAL there (the drill
too); the DR package builds standbys the same way. The server binaries come from
``{pg_bin_root}/{major}/bin`` (the Dockerfile installs them on the worker). When the worker runs as
root (tests, CI), the server and the files run as the ``postgres`` OS user: PostgreSQL refuses root.

The instance listens on its Unix socket only (``listen_addresses = ''``), in a 0700 directory, with
its own ``pg_hba.conf`` trusting local connections: nothing but this worker's user reaches it, and
the restored production ``pg_hba.conf`` (which may want passwords we do not have) is not used.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pg_dataops.common.errors import BackupError
from pg_dataops.common.pg import PgConn


class ScratchError(BackupError):
    """The scratch instance could not be prepared, started or stopped."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _owner() -> pwd.struct_passwd | None:
    """The OS user that owns scratch files and runs the server: postgres when we are root, else us."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        raise ScratchError("running as root but there is no 'postgres' OS user to run the scratch server "
                           "(PostgreSQL refuses root)") from None


def as_owner(argv: list[str]) -> list[str]:
    """``argv`` run as the scratch owner (``runuser -u postgres --`` when we are root). The environment is
    passed through (runuser keeps it), so credentials travel in the environment, never in argv.

    As postgres it starts in ``/``: our working directory (a checkout under /root, a 0700 temporary folder)
    may be closed to that user, and PostgreSQL's tools then print "could not change directory" among their
    output. Every path we pass them is absolute (the config refuses relative ones)."""
    return ["runuser", "-u", "postgres", "--", "env", "--chdir=/", *argv] if _owner() else list(argv)


# sockaddr_un.sun_path is 108 bytes: the socket's full path (dir + "/.s.PGSQL.<port>") must fit in 107.
SOCKET_PATH_MAX = 107
_SOCKET_NAME_MAX = len("/.s.PGSQL.65535")


def check_socket_dir(path: str | os.PathLike, setting: str = "pitr.scratch_root") -> None:
    """Refuse, before anything is created, a socket directory whose socket path PostgreSQL cannot bind
    (it would fail only at server start, after the restore)."""
    length = len(os.fsencode(str(path))) + _SOCKET_NAME_MAX
    if length > SOCKET_PATH_MAX:
        raise ScratchError(f"the scratch server's Unix socket would be {path}/.s.PGSQL.<port>, {length} bytes, over "
                           f"the {SOCKET_PATH_MAX}-byte limit of a socket path: choose a shorter {setting}")


def short_socket_dir(preferred: str | os.PathLike) -> Path:
    """``preferred`` when a socket path there fits; else a private directory name under /tmp derived from it
    (stable, so every task of a run finds the same one)."""
    import hashlib

    try:
        check_socket_dir(preferred)
        return Path(preferred)
    except ScratchError:
        return Path("/tmp") / f"pgdo-{hashlib.sha256(os.fsencode(str(preferred))).hexdigest()[:16]}"


def make_private_dir(path: str | os.PathLike) -> Path:
    """A new empty 0700 directory owned by the scratch owner; refuses a non-empty existing one."""
    p = Path(path)
    if p.exists() and any(p.iterdir()):
        raise ScratchError(f"{p} exists and is not empty; refusing to use it (left by an earlier run? remove it)")
    p.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(p, 0o700)
    owner = _owner()
    if owner:
        os.chown(p, owner.pw_uid, owner.pw_gid)
        for parent in p.parents:  # the server must reach its data directory
            if str(parent) in ("/", "/tmp", "/var/tmp"):
                break
            mode = os.stat(parent).st_mode
            if not mode & 0o001:
                os.chmod(parent, mode | 0o011)
    return p


def remove_tree(path: str | os.PathLike) -> None:
    shutil.rmtree(path, ignore_errors=True)


@dataclass
class ScratchInstance:
    """A PostgreSQL server on ``datadir`` (already populated: a restored base backup)."""

    datadir: Path
    bin_dir: str
    socket_dir: Path
    port: int = field(default_factory=free_port)
    env: Mapping[str, str] = field(default_factory=dict)  # extra environment (restore_command's credentials)
    run_dir: Path | None = None  # its log, pg_hba.conf and pg_ident.conf; default the socket directory

    @property
    def files_dir(self) -> Path:
        return Path(self.run_dir or self.socket_dir)

    @property
    def log_path(self) -> Path:
        return self.files_dir / "server.log"

    def write_local_hba(self) -> Path:
        """A pg_hba.conf trusting local socket connections only; the instance uses it via ``hba_file``."""
        hba = self.files_dir / "pg_hba.conf"
        hba.write_text("local all all trust\nlocal replication all trust\n")
        owner = _owner()
        if owner:
            os.chown(hba, owner.pw_uid, owner.pw_gid)
        return hba

    def server_options(self, settings: Mapping[str, str]) -> list[str]:
        """``-c name=value`` for the server command line: they override postgresql.conf and .auto.conf."""
        base = {
            "port": str(self.port),
            "listen_addresses": "",
            "unix_socket_directories": str(self.socket_dir),
            "hba_file": str(self.files_dir / "pg_hba.conf"),
            "ident_file": str(self.files_dir / "pg_ident.conf"),
            **settings,
        }
        out: list[str] = []
        for k, v in base.items():
            out += ["-c", f"{k}={v}"]
        return out

    def start(self, settings: Mapping[str, str] | None = None, *, wait: bool = True, timeout: int = 120) -> None:
        """Start the server; with ``wait``, until it accepts connections (pg_ctl -w)."""
        check_socket_dir(self.socket_dir)
        self.write_local_hba()
        (self.files_dir / "pg_ident.conf").touch()
        postgres = os.path.join(self.bin_dir, "postgres")
        if not os.access(postgres, os.X_OK):
            raise ScratchError(f"{postgres} not found: the worker needs the PostgreSQL server binaries "
                               "(Debian: postgresql-<major>; the Dockerfile installs them)")
        opts = " ".join(_quote_option(o) for o in self.server_options(settings or {}))
        argv = as_owner([os.path.join(self.bin_dir, "pg_ctl"), "-D", str(self.datadir), "-l", str(self.log_path),
                         "-o", opts, "-t", str(timeout), *(["-w"] if wait else ["-W"]), "start"])
        done = subprocess.run(argv, env={**os.environ, **self.env}, capture_output=True, text=True)
        if done.returncode != 0:
            raise ScratchError(f"the scratch server did not start: {done.stderr.strip() or done.stdout.strip()}; "
                               f"server log: {self.log_tail()}")

    def is_running(self) -> bool:
        pid = self.pid()
        return pid is not None and process_alive(pid)

    def pid(self) -> int | None:
        return postmaster_pid(self.datadir)

    def stop(self, mode: str = "fast", timeout: int = 60) -> bool:
        """Stop it if it runs (idempotent); SIGKILL of the postmaster when pg_ctl could not. Whether one ran."""
        return stop_server(self.datadir, self.bin_dir, mode=mode, timeout=timeout)

    def conn(self, dbname: str = "postgres", user: str = "postgres") -> PgConn:
        """Connection parameters over the private socket (libpq takes a directory as host)."""
        return PgConn(host=str(self.socket_dir), port=self.port, user=user, dbname=dbname, password=None)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 15) -> str:
        return " | ".join(self.log_text().strip().splitlines()[-lines:]) or "(empty)"


def postmaster_pid(datadir: str | os.PathLike) -> int | None:
    """The postmaster's pid from ``postmaster.pid``; None when there is none (or it is unreadable)."""
    try:
        return int((Path(datadir) / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None


def process_alive(pid: int) -> bool:
    """Whether ``pid`` runs; a zombie (our own child, not yet reaped) counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def stop_server(datadir: str | os.PathLike, bin_dir: str | None, *, mode: str = "fast", timeout: int = 60) -> bool:
    """Stop the server running on ``datadir``, if any: ``pg_ctl stop`` (when ``bin_dir`` is known), then
    SIGKILL of the postmaster if it still runs. Idempotent; returns whether one ran."""
    pid = postmaster_pid(datadir)
    if pid is None or not process_alive(pid):
        return False
    if bin_dir:
        subprocess.run(as_owner([os.path.join(bin_dir, "pg_ctl"), "-D", str(datadir), "-m", mode, "-t", str(timeout),
                                 "-w", "stop"]), capture_output=True, text=True)
    if process_alive(pid):
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while process_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
    return True


def _quote_option(opt: str) -> str:
    """pg_ctl -o passes its string through a shell: quote each word."""
    import shlex

    return shlex.quote(opt)
