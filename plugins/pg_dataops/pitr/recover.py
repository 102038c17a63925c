"""Replaying archived WAL on a restored base backup, to a target time or to the end of the archive. Airflow-free.

The PostgreSQL 12+ way: ``recovery.signal`` in the data directory, and the recovery settings on the
server's command line (``-c``, which overrides the restored postgresql.conf and postgresql.auto.conf):
``restore_command`` runs ``barman-cloud-wal-restore`` (with ``--parallel`` prefetch into the run
folder's spool), ``recovery_target_time`` and ``recovery_target_action`` (``promote`` or ``pause``),
``recovery_target_timeline = latest``. The copy never archives (``archive_mode = off``: it must not
write into production's archive), loads no preloaded libraries (production's extensions may be missing on
the worker; nothing here needs them), uses no TLS files, and logs in English to its own log file, which
:func:`replay` reads to tell what happened.

The server runs until :func:`pg_dataops.pitr.scratch.remove_scratch` stops it: the checks and the copy
connect to it over its socket (:func:`instance`).

When the WAL runs out before the target (``recovery ended before configured recovery target was
reached``), the archive was checked to be complete up to the target, so no commit between its end and the
target is archived anywhere: the state at the target is the end of the archive. The server is started
again without a time target, recovers to the end of the archive, and the result says so
(``archive_ends_before_target``). A segment missing in the middle fails, naming it.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from pg_dataops.common import localpg, sqlfiles, wal
from pg_dataops.common import pg as pgtools
from pg_dataops.common.errors import PermanentError, redact
from pg_dataops.pitr.scratch import LEFTOVERS, ScratchLayout

TARGET_ACTIONS = ("promote", "pause")
# Segments barman-cloud-wal-restore fetches per call (the requested one + the next ones into the spool).
# Measured here (moto, 2 vCPUs, 30 segments): redo 12.7 s one call per segment, 5.4 s with 8 and the
# shell's spool shortcut, 2.2 s with 32. Each call waits for its whole batch: bandwidth-bound either way.
PREFETCH = 32
REQUESTED_MARKER = "recovery.requested"  # in the run folder: recovery.signal was written by an earlier try
ENDED_BEFORE_TARGET = "recovery ended before configured recovery target was reached"
_RESTORED_RE = re.compile(r'restored log file "([0-9A-F]{24})" from archive')
_STOP_RE = re.compile(r"recovery stopping (?:before|after) .*")
_LAST_TX_RE = re.compile(r"last completed transaction was at log time (.+)$", re.M)
# pg_controldata: the primary's settings that a hot standby must match or exceed.
_CONTROL_SETTINGS = {
    "max_connections setting": "max_connections",
    "max_worker_processes setting": "max_worker_processes",
    "max_wal_senders setting": "max_wal_senders",
    "max_prepared_xacts setting": "max_prepared_transactions",
    "max_locks_per_xact setting": "max_locks_per_transaction",
}


class RecoveryFailed(PermanentError):
    """Replay did not reach the target: missing WAL, a server that would not start, or the time limit."""


class MissingWal(RecoveryFailed):
    """A segment recovery needs is not in the archive."""


def control_settings(bin_dir: str, data: Path) -> dict[str, str]:
    """The primary's max_connections & co. from the restored pg_control (pg_controldata): a hot standby
    refuses lower values, and higher ones only cost memory, so the copy uses exactly these."""
    done = subprocess.run(localpg.as_owner([f"{bin_dir}/pg_controldata", "-D", str(data)]), capture_output=True,
                          text=True, timeout=60, env={**os.environ, "LC_ALL": "C"})
    if done.returncode != 0:
        raise RecoveryFailed(f"pg_controldata cannot read the restored data directory {data}: "
                             f"{done.stderr.strip() or done.stdout.strip()}")
    out = {}
    for line in done.stdout.splitlines():
        name, _, value = line.partition(":")
        if name.strip() in _CONTROL_SETTINGS and value.strip().isdigit():
            out[_CONTROL_SETTINGS[name.strip()]] = value.strip()
    return out


def target_literal(moment: dt.datetime) -> str:
    """recovery_target_time in UTC, with microseconds: '2026-12-01 05:29:41.250000+00'."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f+00")


def recovery_settings(restore_command: str, *, target_time: dt.datetime | None, target_action: str,
                      control: Mapping[str, str] | None = None) -> dict[str, str]:
    """The scratch server's ``-c`` settings for replay (values as the server reads them, no quoting).

    ``target_time`` None: recover to the end of the archive (and promote: there is no target to pause at).
    """
    if target_action not in TARGET_ACTIONS:
        raise ValueError(f"target_action must be one of {', '.join(TARGET_ACTIONS)}, got {target_action!r}")
    settings = {
        "restore_command": restore_command,
        "recovery_target_timeline": "latest",
        # Never archive: the copy's WAL (a new timeline after promotion) must not reach production's archive.
        "archive_mode": "off",
        "archive_command": "",
        # Production's libraries (pg_stat_statements, ...) may be missing on the worker; replay needs none.
        "shared_preload_libraries": "",
        "hot_standby": "on",  # so we can ask how far replay got, and the checks can read a paused copy
        "primary_conninfo": "",
        "primary_slot_name": "",
        "recovery_min_apply_delay": "0",
        "synchronous_standby_names": "",
        # Production's TLS files and log destination are not on the worker; we read the log ourselves.
        "ssl": "off",
        "logging_collector": "off",
        "log_destination": "stderr",
        "log_min_messages": "warning",
        "lc_messages": "C",
        "huge_pages": "off",
        "shared_buffers": "128MB",
        "max_wal_size": "1GB",
        "autovacuum": "off",
        "statement_timeout": "0",
        "idle_in_transaction_session_timeout": "0",
        "jit": "off",
        "max_connections": "20",
        **(control or {}),
    }
    if target_time is not None:
        settings["recovery_target_time"] = target_literal(target_time)
        settings["recovery_target_action"] = target_action
    return settings


def restore_command(cfg, target: str, layout: ScratchLayout, *, endpoint_url: str | None = None,
                    parallel: int = PREFETCH) -> str:
    """barman-cloud-wal-restore as one shell line, prefetching ``parallel`` segments into the spool.

    A segment already in the spool is moved into place by the shell (what barman-cloud-wal-restore would do
    itself, minus the ~0.35 s of starting Python): the tool runs once per ``parallel`` segments. The spool
    holds only complete files (the tool joins its downloads before it exits), on the data directory's file
    system (``mv`` is a rename), and PostgreSQL rejects a segment of the wrong size anyway."""
    spool = wal.command_line([str(layout.spool)])
    barman = wal.command_line(wal.restore_command_argv(cfg, target, endpoint_url=endpoint_url, parallel=parallel,
                                                       spool_dir=str(layout.spool)))
    return f"test -f {spool}/%f && mv -f {spool}/%f %p || {barman}"


def instance(layout: ScratchLayout, bin_dir: str, port: int, env: Mapping[str, str] | None = None
             ) -> localpg.ScratchInstance:
    """The scratch server of ``layout`` (running or not), socket in the run folder."""
    return localpg.ScratchInstance(layout.data, bin_dir, layout.socket, port=port, env=dict(env or {}),
                                   run_dir=layout.run)


def request_recovery(layout: ScratchLayout) -> list[str]:
    """Remove the restored copy's leftovers and write ``recovery.signal``, once per run: a retried recovery
    finds the marker and leaves the data directory as the earlier try left it (replay is restartable; a
    promoted copy has no recovery.signal any more). Returns the leftovers removed."""
    marker = layout.run / REQUESTED_MARKER
    if marker.exists():
        return []
    removed = []
    for name in LEFTOVERS:
        p = layout.data / name
        if p.exists():
            p.unlink()
            removed.append(name)
    signal_file = layout.data / "recovery.signal"
    signal_file.touch(mode=0o600)
    owner = localpg._owner()
    if owner:
        os.chown(signal_file, owner.pw_uid, owner.pw_gid)
    marker.write_text("recovery.signal written\n")
    return removed


def ensure_config_file(data: Path) -> bool:
    """A data directory from a host that keeps postgresql.conf elsewhere (Debian: /etc/postgresql) has none,
    and the server refuses to start without one: an empty one (every setting we need is on the command
    line). Whether it was added."""
    conf = data / "postgresql.conf"
    if conf.exists():
        return False
    conf.write_text("# written by pg_dataops: the backup had no postgresql.conf; settings come from the command "
                    "line\n")
    owner = localpg._owner()
    if owner:
        os.chown(conf, owner.pw_uid, owner.pw_gid)
    return True


# --- what the server log says -------------------------------------------------------------------------

def last_restored_segment(log: str) -> str | None:
    """The last WAL segment (not a history file) the server restored from the archive."""
    found = _RESTORED_RE.findall(log)
    return found[-1] if found else None


def stop_message(log: str) -> str | None:
    """'recovery stopping before commit of transaction 1234, time 2026-12-01 05:29:41.25+00'."""
    found = _STOP_RE.findall(log)
    return found[-1].strip() if found else None


def last_completed_transaction(log: str) -> str | None:
    found = _LAST_TX_RE.findall(log)
    return found[-1].strip() if found else None


def next_segment(name: str) -> wal.Segment:
    seg = wal.Segment.parse(name)
    return wal.Segment(seg.segno + 1, seg.timeline)


def missing_after(log: str, archive: Sequence[wal.ArchivedWal]) -> tuple[str, wal.Segment | None, bool]:
    """Why replay stopped for want of WAL: ``(kind, segment, later_exist)``.

    kind ``end``: the segment after the last restored one is not archived and nothing after it is (the end
    of the archive); ``missing``: it is not archived but later segments are (a gap); ``unreadable``: it is
    archived but was not restored (read the log); ``unknown``: no segment was restored at all.
    """
    last = last_restored_segment(log)
    if last is None:
        return "unknown", None, False
    nxt = next_segment(last)
    positions = {w.segment.segno for w in wal.segments(archive)}
    if nxt.segno in positions:
        return "unreadable", nxt, True
    later = any(p > nxt.segno for p in positions)
    return ("missing" if later else "end"), nxt, later


# --- replay -------------------------------------------------------------------------------------------

@dataclass
class ReplayState:
    state: str  # "promoted" | "paused"
    in_recovery: bool
    last_replay_time: dt.datetime | None
    last_replay_lsn: str | None


def _probe(inst: localpg.ScratchInstance) -> ReplayState | None:
    """The server's replay state, or None while it does not accept connections yet."""
    try:
        pg = psycopg.connect(host=str(inst.socket_dir), port=inst.port, user="postgres", dbname="postgres",
                             connect_timeout=5, autocommit=True)
    except psycopg.OperationalError:
        return None
    try:
        in_recovery, pause_state, replay_time, replay_lsn = pg.execute(
            sqlfiles.text("pitr/recover_replay_state.sql")).fetchone()
    except psycopg.Error:
        return None
    finally:
        pg.close()
    if not in_recovery:
        return ReplayState("promoted", False, replay_time, str(replay_lsn) if replay_lsn else None)
    if pause_state == "paused":
        return ReplayState("paused", True, replay_time, str(replay_lsn) if replay_lsn else None)
    return ReplayState("replaying", True, replay_time, str(replay_lsn) if replay_lsn else None)


def wait_for_replay(inst: localpg.ScratchInstance, *, action: str, deadline: float, poll: float = 1.0,
                    started_grace: float = 15.0, sleep: Callable[[float], None] = time.sleep) -> ReplayState | None:
    """Poll until the server is promoted, or paused when ``action`` is pause; None when the server died
    (read its log). Raises RecoveryFailed at ``deadline`` (time.monotonic())."""
    started = time.monotonic()
    seen_running = False
    while True:
        state = _probe(inst)
        if state is not None:
            seen_running = True
            if state.state == "promoted":
                return state
            if state.state == "paused":
                if action == "pause":
                    return state
                # Paused without being asked: PostgreSQL does so when the copy's settings are too low for
                # hot standby; the log says why.
                raise RecoveryFailed(f"recovery paused although recovery_target_action is promote: "
                                     f"{inst.log_tail(8)}")
        running = inst.is_running()
        seen_running = seen_running or running
        if not running and (seen_running or time.monotonic() - started > started_grace):
            return None
        if time.monotonic() > deadline:
            where = f"; last replayed commit at {state.last_replay_time}" if state and state.last_replay_time else ""
            raise RecoveryFailed(f"recovery did not finish within its time limit (pitr.recovery_timeout_minutes)"
                                 f"{where}; server log: {inst.log_tail(8)}")
        sleep(poll)


def replay(layout: ScratchLayout, *, bin_dir: str, restore_command_line: str, target_time: dt.datetime | None,
           target_action: str = "promote", env: Mapping[str, str] | None = None, timeout_seconds: float,
           list_archive: Callable[[], Sequence[wal.ArchivedWal]], port: int | None = None,
           poll: float = 1.0) -> dict[str, Any]:
    """Start the scratch server on the restored ``layout`` and replay archived WAL to ``target_time`` (None:
    to the end of the archive). The server keeps running (paused or promoted) for the checks and the copy.

    ``env``: the server's extra environment (the Barman tool's S3 credentials: ``wal.aws_env``).
    ``list_archive``: the archive's objects, read again only when replay runs out of WAL, to tell the end
    of the archive from a missing segment. Returns the replay's facts (see :func:`replay_result`).
    """
    started = time.monotonic()
    deadline = started + timeout_seconds
    removed = request_recovery(layout)
    added_conf = ensure_config_file(layout.data)
    control = control_settings(bin_dir, layout.data)
    inst = instance(layout, bin_dir, port or localpg.free_port(), env)
    inst.stop()  # an earlier try's server, if any: replay restarts from its last restartpoint
    settings = recovery_settings(restore_command_line, target_time=target_time, target_action=target_action,
                                 control=control)
    inst.start(settings, wait=False)
    state = wait_for_replay(inst, action=target_action, deadline=deadline, poll=poll)
    ends_before_target = False
    if state is None:
        log = inst.log_text()
        if target_time is None or ENDED_BEFORE_TARGET not in log:
            raise _replay_failure(log, list_archive, inst)
        kind, segment, _ = missing_after(log, list_archive())
        if kind != "end":
            raise _replay_failure(log, list_archive, inst)
        # The archive ends before the target: everything archived is before it. Recover to its end.
        ends_before_target = True
        inst.stop()
        settings = recovery_settings(restore_command_line, target_time=None, target_action=target_action,
                                     control=control)
        inst.start(settings, wait=False)
        state = wait_for_replay(inst, action="promote", deadline=deadline, poll=poll)
        if state is None:
            raise _replay_failure(inst.log_text(), list_archive, inst)
    log = inst.log_text()
    return replay_result(state, log, port=inst.port, target_time=target_time, target_action=target_action,
                         ends_before_target=ends_before_target, seconds=time.monotonic() - started,
                         removed=removed, added_conf=added_conf, control=control)


def replay_result(state: ReplayState, log: str, *, port: int, target_time: dt.datetime | None, target_action: str,
                  ends_before_target: bool, seconds: float, removed: list[str] | None = None,
                  added_conf: bool = False, control: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The replay's facts, JSON-ready (the recover task's XCom and the catalog's source)."""
    reached = state.last_replay_time
    return {
        "state": state.state,  # promoted | paused
        "port": port,
        "target_time": target_time.astimezone(dt.UTC).isoformat() if target_time else None,
        "target_action": target_action,
        "reached_time": reached.astimezone(dt.UTC).isoformat() if reached else None,
        "last_replay_lsn": state.last_replay_lsn,
        "stop_message": stop_message(log),
        "last_completed_transaction": last_completed_transaction(log),
        "last_restored_segment": last_restored_segment(log),
        "archive_ends_before_target": ends_before_target,
        "replay_seconds": round(seconds, 3),
        "leftovers_removed": list(removed or []),
        "empty_config_written": added_conf,
        "hot_standby_settings": dict(control or {}),
    }


def _replay_failure(log: str, list_archive: Callable[[], Sequence[wal.ArchivedWal]],
                    inst: localpg.ScratchInstance) -> RecoveryFailed:
    """Name why the server stopped: a missing segment, one that could not be restored, or the log's FATAL."""
    try:
        kind, segment, _ = missing_after(log, list_archive())
    except Exception as exc:  # noqa: BLE001 - the listing only sharpens the message
        kind, segment = "unknown", None
        log += f"\n(listing the archive failed: {exc})"
    fatal = [ln.split("FATAL:", 1)[1].strip() for ln in log.splitlines() if "FATAL:" in ln]
    why = fatal[-1] if fatal else inst.log_tail(6)
    if kind == "missing":
        return MissingWal(f"WAL segment {segment.name()} is missing from the archive (later segments exist): "
                          f"recovery cannot replay past it; the server said: {why}")
    if kind == "unreadable":
        return RecoveryFailed(f"WAL segment {segment.name()} is in the archive but could not be restored "
                              f"(restore_command failed: S3 credentials, network, a corrupt object?); the server "
                              f"said: {redact(why)}; log: {redact(inst.log_tail(8))}")
    if kind == "end" and segment is not None:
        return MissingWal(f"the archive ends at {segment.name()} (not archived yet): recovery needs WAL beyond "
                          f"it; the server said: {why}")
    return RecoveryFailed(f"the scratch server stopped during recovery: {redact(why)}; log: "
                          f"{redact(inst.log_tail(8))}")


def connect_scratch(inst: localpg.ScratchInstance, dbname: str = "postgres") -> psycopg.Connection:
    """A connection to the scratch server over its socket, as its bootstrap superuser (trusted locally)."""
    return pgtools.connect(inst.conn(dbname), autocommit=True)


__all__ = ["ENDED_BEFORE_TARGET", "MissingWal", "RecoveryFailed", "ReplayState", "control_settings",
           "instance", "missing_after", "recovery_settings", "replay", "request_recovery", "restore_command",
           "stop_message", "target_literal", "wait_for_replay"]
