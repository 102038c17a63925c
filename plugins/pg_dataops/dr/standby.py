"""Building a streaming standby of a target (pg_standby_provision, ``make standby``). Airflow-free.

The runbook's section 2.1, for PostgreSQL 15: ``wal_keep_segments`` is gone (a physical replication slot
keeps exactly the WAL the standby still needs), ``recovery.conf`` is gone (``pg_basebackup -R`` writes
``standby.signal`` and ``primary_conninfo``; with ``-S`` also ``primary_slot_name``). ``restore_command``
fetches from the WAL archive (Barman's cloud tools, as PITR does) when streaming cannot serve a segment.

Order, each step safe to run again after a failure: refuse a non-empty data directory (nothing is
overwritten) -> check the primary (not in recovery, ``wal_level`` replica, a free WAL sender, the client's
major) -> create the slot if missing -> ``pg_basebackup -X stream -R -S <slot>`` as the ``postgres`` OS user
-> the standby's settings in ``postgresql.auto.conf`` (port, ``hot_standby``, ``restore_command``) -> start
(``pg_ctl`` or the host's own command) -> wait until it streams, then report both sides.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pg_dataops.common import localpg
from pg_dataops.common.errors import BackupError, PermanentError, redact
from pg_dataops.common.pg import PgConn
from pg_dataops.dr import replication

AUTO_CONF_MARK = "# pg_dataops standby settings"
STARTUP_LOG = "pg_dataops-standby.log"  # pg_ctl's log, inside the data directory (the only place we own)


class StandbyRefused(PermanentError):
    """The standby cannot be built as asked (non-empty directory, primary not ready); nothing was changed."""


class StandbyFailed(BackupError):
    """A step of building or starting the standby failed."""


class StandbyNotStarted(StandbyFailed, PermanentError):
    """The base backup is in place but the standby did not start or stream: a retry would only find the
    directory not empty, so this fails at once, saying what is left behind."""


def check_data_directory(path: str | os.PathLike) -> Path:
    """An absolute path whose directory is missing or empty; anything else is refused, untouched."""
    p = Path(path)
    if not p.is_absolute():
        raise StandbyRefused(f"data directory {str(path)!r} must be an absolute path")
    if p.exists() and not p.is_dir():
        raise StandbyRefused(f"{p} exists and is not a directory: refusing to build a standby there")
    if p.exists() and any(p.iterdir()):
        hint = " (it holds a PostgreSQL data directory)" if (p / "PG_VERSION").exists() else ""
        raise StandbyRefused(f"{p} is not empty{hint}: refusing to overwrite it. Stop and move that server aside "
                             "first, or choose an empty directory")
    return p


def check_primary(status: Mapping[str, Any], *, client_major: int) -> None:
    """Refuse a primary that cannot feed a streaming standby, naming the setting to change."""
    if status["in_recovery"]:
        raise StandbyRefused("the target server is in recovery (a standby itself): point the target's connection at "
                             "the primary")
    if status["wal_level"] not in ("replica", "logical"):
        raise StandbyRefused(f"the primary has wal_level = {status['wal_level']}: a standby needs replica (set it "
                             "in postgresql.conf and restart the primary)")
    used = len(status.get("replicas") or ())
    if status["max_wal_senders"] <= used + 1:  # pg_basebackup -X stream needs two senders for a moment
        raise StandbyRefused(f"the primary has max_wal_senders = {status['max_wal_senders']} with {used} in use: "
                             "pg_basebackup -X stream needs two free (raise it and restart the primary)")
    if status["major"] != client_major:
        raise StandbyRefused(f"the primary is PostgreSQL {status['major']} but the worker's binaries are "
                             f"{client_major}: a standby needs the same major version")


def choose_data_directory(given: str | None, configured: str | None, setting: str) -> str:
    """The run's data directory: the form's, else the configured one (``setting``); neither is refused."""
    chosen = (given or "").strip() or configured
    if not chosen:
        raise StandbyRefused(f"no data directory: give data_directory in the form, or set {setting}")
    return chosen


def check_slot(status: Mapping[str, Any], slot: str) -> dict[str, Any] | None:
    """The existing slot ``slot`` on the primary (None: it will be created); a logical slot, or one a connected
    standby streams through, is refused (a second standby on it would take the first one's place)."""
    existing = replication.slot(status, slot)
    if existing is None:
        return None
    if existing.get("slot_type") != "physical":
        raise StandbyRefused(f"replication slot {slot!r} exists on the primary but is {existing.get('slot_type')}, "
                             "not physical: choose another slot name")
    if existing.get("active"):
        replica = replication.replica_for_slot(status, slot) or {}
        who = f" by {replica.get('application_name')} from {replica.get('client_addr')}" if replica else ""
        raise StandbyRefused(f"replication slot {slot!r} is in use{who}: a standby already streams through it. "
                             "Stop that standby first (and drop the slot) or choose another slot name")
    return existing


def server_binaries(pg_bin_root: str, major: int, *, pg_ctl: bool) -> str:
    """``{pg_bin_root}/{major}/bin`` holding pg_basebackup (and pg_ctl when we start the server ourselves)."""
    bin_dir = os.path.join(pg_bin_root, str(major), "bin")
    for name in ("pg_basebackup", *(("pg_ctl",) if pg_ctl else ())):
        if not os.access(os.path.join(bin_dir, name), os.X_OK):
            raise StandbyRefused(f"{bin_dir}/{name} is missing: the standby's host needs the PostgreSQL {major} server "
                                 f"binaries (Debian: apt-get install postgresql-{major})")
    return bin_dir


def address_in_use(host: str, port: int, *, timeout: float = 3) -> bool:
    """Whether something accepts TCP connections at ``host:port`` (a socket directory as host: not checked)."""
    if host.startswith("/"):
        return False
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def preflight(*, primary: PgConn, standby: PgConn, slot: str, data_directory: str | os.PathLike, pg_bin_root: str,
              pg_ctl: bool = True, restore_tool: str | None = None) -> dict[str, Any]:
    """Everything :func:`provision` needs, checked without changing anything: the directory is absolute and
    empty (or missing), the primary answers and can feed a standby, the slot is not in use, this host has the
    primary's major's binaries (and ``restore_tool``, restore_command's program), and nothing listens yet at
    the standby connection's host:port. StandbyRefused naming the first problem; else the plan (JSON-safe)."""
    datadir = check_data_directory(data_directory)
    pg, why = replication.connect_probe(primary, timeout=10)
    if pg is None:
        raise StandbyRefused(f"the primary is not reachable: {why}")
    with pg:
        status = replication.primary_status(pg)
    check_primary(status, client_major=status["major"])
    existing = check_slot(status, slot)
    bin_dir = server_binaries(pg_bin_root, status["major"], pg_ctl=pg_ctl)
    if restore_tool and not os.access(restore_tool, os.X_OK):
        raise StandbyRefused(f"{restore_tool} (restore_command, the WAL archive fallback) is missing or not "
                             "executable on this host: install Barman's cloud tools there (make wal-tools)")
    if address_in_use(standby.host, standby.port):
        raise StandbyRefused(f"something already listens at {standby.host}:{standby.port}, where the standby's "
                             "connection says the new standby will: stop that server, or point the connection at a "
                             "free port")
    return {
        "data_directory": str(datadir), "slot": slot, "slot_exists": existing is not None,
        "slot_retained_bytes": (existing or {}).get("retained_bytes"), "bin_dir": bin_dir,
        "primary": primary.describe(), "primary_major": status["major"],
        "primary_system_identifier": status["system_identifier"], "primary_lsn": status["current_lsn"],
        "standby": standby.describe(), "standby_port": standby.port,
    }


def base_backup_argv(bin_dir: str, data_directory: Path, slot: str) -> list[str]:
    """pg_basebackup writing a standby-ready copy: WAL streamed alongside, -R (standby.signal and
    primary_conninfo), -S (primary_slot_name), a fast checkpoint (the standby is wanted now)."""
    return [os.path.join(bin_dir, "pg_basebackup"), "--pgdata", str(data_directory), "--wal-method", "stream",
            "--write-recovery-conf", "--slot", slot, "--checkpoint", "fast", "--no-password"]


def standby_settings(*, port: int, restore_command: str | None) -> dict[str, str]:
    """The standby's own settings (after -R's primary_conninfo): its port, hot standby, the archive fallback."""
    from pg_dataops.common.wal import conf_literal

    settings = {"port": str(int(port)), "hot_standby": "on"}
    if restore_command:
        settings["restore_command"] = conf_literal(restore_command)
    return settings


def write_settings(data_directory: Path, settings: Mapping[str, str]) -> None:
    """Append ``settings`` to postgresql.auto.conf (the last line of a name wins), once per data directory."""
    auto = data_directory / "postgresql.auto.conf"
    text = auto.read_text() if auto.exists() else ""
    if AUTO_CONF_MARK in text:
        return
    lines = [AUTO_CONF_MARK] + [f"{k} = {v}" for k, v in settings.items()]
    with open(auto, "a") as f:
        f.write(("" if text.endswith("\n") or not text else "\n") + "\n".join(lines) + "\n")


def start_with_pg_ctl(data_directory: Path, bin_dir: str, *, env: Mapping[str, str] | None = None,
                      timeout: int = 120) -> None:
    """``pg_ctl start -w`` as the postgres OS user (when we are root), its log inside the data directory."""
    argv = localpg.as_owner([os.path.join(bin_dir, "pg_ctl"), "-D", str(data_directory), "-l",
                             str(data_directory / STARTUP_LOG), "-w", "-t", str(timeout), "start"])
    done = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, **(env or {})})
    if done.returncode != 0:
        try:
            tail = " | ".join((data_directory / STARTUP_LOG).read_text(errors="replace").strip().splitlines()[-10:])
        except OSError:
            tail = "(no log)"
        raise StandbyFailed(f"the standby did not start: {(done.stderr or done.stdout).strip()}; its log: {tail}")


def wait_streaming(connect_standby: Callable[[], Any], connect_primary: Callable[[], Any], slot: str, *,
                   timeout: float, interval: float = 1.0) -> dict[str, Any]:
    """Poll until the standby is in recovery with its WAL receiver streaming and the primary shows it on
    ``slot``; ``{"standby", "replica", "slot_status"}``. StandbyFailed with the last state seen at the deadline."""
    deadline = time.monotonic() + timeout
    last = "the standby did not answer"
    while True:
        standby_pg, why = connect_standby()
        if standby_pg is not None:
            try:
                standby = replication.standby_status(standby_pg)
            finally:
                standby_pg.close()
            receiver = standby["receiver"] or {}
            last = (f"standby in_recovery={standby['in_recovery']}, receiver {receiver.get('status') or 'not running'}")
            if standby["in_recovery"] and receiver.get("status") == "streaming":
                primary_pg = connect_primary()
                try:
                    primary = replication.primary_status(primary_pg)
                finally:
                    primary_pg.close()
                replica = replication.replica_for_slot(primary, slot)
                if replica and replica.get("state") == "streaming":
                    return {"standby": standby, "replica": replica, "slot_status": replication.slot(primary, slot)}
                last += f"; the primary shows {'no standby' if not replica else replica.get('state')} on slot {slot}"
        else:
            last = f"the standby does not answer yet: {why}"
        if time.monotonic() >= deadline:
            raise StandbyFailed(f"the standby is not streaming after {timeout:g} s: {last}")
        time.sleep(interval)


def provision(*, primary: PgConn, standby: PgConn, slot: str, data_directory: str | os.PathLike, bin_dir: str,
              restore_command: str | None = None, start: Callable[[Path], dict[str, Any]] | None = None,
              server_env: Mapping[str, str] | None = None, timeout: float = 600) -> dict[str, Any]:
    """Build, start and wait for a streaming standby of ``primary`` (a role with REPLICATION) in
    ``data_directory`` on this machine, listening on ``standby.port``. ``start(data_directory)`` starts it the
    host's way (None: pg_ctl as the postgres user, with ``server_env``: restore_command's S3 credentials).

    Returns ``{"data_directory", "slot", "seconds", "base_backup_seconds", "standby", "replica", ...}``.
    A non-empty directory or an unready primary is refused before anything is created."""
    started = time.monotonic()
    datadir = check_data_directory(data_directory)
    client_major = int(Path(bin_dir).parent.name) if Path(bin_dir).parent.name.isdigit() else None
    primary_pg = replication.connect_probe(primary, timeout=10)
    if primary_pg[0] is None:
        raise StandbyRefused(f"the primary is not reachable: {primary_pg[1]}")
    with primary_pg[0] as pg:
        status = replication.primary_status(pg)
        check_primary(status, client_major=client_major or status["major"])
        slot_info = replication.ensure_slot(pg, slot)
    localpg.make_private_dir(datadir)
    t0 = time.monotonic()
    env = primary.client_tool_env(status["major"])
    if not primary.extras.get("application_name"):
        # primary_conninfo (-R) keeps it: the primary's pg_stat_replication then names this standby by its
        # slot (synchronous_standby_names matches on it), not "pg_dataops" like every other session of ours.
        env["PGAPPNAME"] = slot
    done = subprocess.run(localpg.as_owner(base_backup_argv(bin_dir, datadir, slot)), capture_output=True, text=True,
                          env=env, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise StandbyFailed(f"pg_basebackup failed (exit {done.returncode}): "
                            f"{redact(done.stderr.strip()[-1500:], primary.password)}; the slot {slot!r} is kept "
                            f"for the next try; empty {datadir} before it")
    base_seconds = time.monotonic() - t0
    write_settings(datadir, standby_settings(port=standby.port, restore_command=restore_command))
    try:
        start_result = start(datadir) if start else None
        if start is None:
            start_with_pg_ctl(datadir, bin_dir, env=server_env)
        remaining = max(10.0, timeout - (time.monotonic() - started))
        state = wait_streaming(lambda: replication.connect_probe(standby), lambda: _connect(primary), slot,
                               timeout=remaining)
    except BackupError as exc:
        raise StandbyNotStarted(f"{exc}. The base backup stays in {datadir} and slot {slot!r} keeps the primary's "
                                "WAL for it: fix the cause and start it (it then catches up), or stop it, empty "
                                f"{datadir}, drop the slot if unwanted, and run again") from exc
    return {
        "data_directory": str(datadir), "slot": slot, "slot_created": slot_info["created"],
        "primary_system_identifier": status["system_identifier"],
        "restore_command": bool(restore_command), "started_by": "start step" if start else "pg_ctl",
        "start": start_result, "base_backup_seconds": round(base_seconds, 3),
        "seconds": round(time.monotonic() - started, 3), **state,
    }


def _connect(conn: PgConn):
    from pg_dataops.common import pg as pgmod

    return pgmod.connect(conn, autocommit=True)


def describe(result: Mapping[str, Any], standby_name: str) -> str:
    """One paragraph for Slack and the log: where the standby is and how far behind it streams."""
    replica = result.get("replica") or {}
    standby = result.get("standby") or {}
    lag = replica.get("replay_lag_bytes")
    return (f"Standby {standby_name} is streaming from the primary through slot {result['slot']} "
            f"(data directory {result['data_directory']}, built in {result['seconds']:.0f} s, base backup "
            f"{result['base_backup_seconds']:.0f} s). Replayed up to {standby.get('replay_lsn')}"
            f"{f', {lag} bytes behind' if lag is not None else ''}; "
            f"{'restore_command from the WAL archive as the fallback' if result.get('restore_command') else 'no WAL archive fallback (not a PITR target)'}.")
