"""The weekly PITR drill: the newest base backup plus archived WAL recovered on the worker, proven, timed.

Airflow-free. pg_pitr_drill runs, per PITR target, one core function per task; the recovery itself is
pg_pitr_restore's (``scratch``, ``recover``, ``copy``), so the drill proves the code a real recovery runs:

1. :func:`plan_drill` (S3 only, nothing created): the newest base backup (or, with a ``target_time``, the
   newest that ended at or before it), the WAL from its start to the end of the archive (or past the
   target) present without a gap, the worker's server binaries, ``pg_verifybackup`` and disk, the age
   identity of an encrypted backup. The plan has pg_pitr_restore's keys, so the shared steps read it alike.
2. ``scratch.restore_base_backup``: S3 -> SHA-256 -> ``age -d`` -> ``zstd -d`` -> ``tar -x`` into the
   scratch data directory.
3. :func:`verify_restored`: ``pg_verifybackup`` of the restored copy against the backup's own
   ``backup_manifest`` **before the server starts** (a started server changes the files): every file's
   size and checksum, and the WAL inside the backup parsed from start to end with ``pg_waldump``. A
   mismatch fails the drill, naming the files.
4. :func:`replay`: ``recover.replay`` to the end of the archive (no target, ``recovery_target_timeline =
   latest``; promoted) or to ``target_time``. At the end of the archive the server cannot tell "no more
   WAL" from "a segment it could not fetch", so the drill checks that replay restored the newest segment
   the plan saw in S3, else it fails naming the segment after the last one restored.
5. ``copy.check_recovered``: every table of the target's database counted (users, matches, messages).
6. ``scratch.remove_scratch`` (teardown, always).
7. :func:`record_drill`: the ``pitr_recoveries`` row (kind ``drill``; also a failed drill, with the cause),
   the measured time (restore + verify + replay + checks) judged against the RTO objective and the trend
   of earlier drills (``common.rto.assess_rto``), the Slack text. An exceeded RTO fails the run (pages).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import psycopg
from psycopg.rows import dict_row

from pg_dataops.catalog.migrations import ensure_schema
from pg_dataops.common import localpg, sqlfiles, wal
from pg_dataops.common.config import Config
from pg_dataops.common.errors import PermanentError, VerificationFailed
from pg_dataops.common.formatting import fmt_bytes, fmt_duration, fmt_instant, slack_escape
from pg_dataops.common.rto import DrillOutcome, RtoExceeded, RtoVerdict, assess_rto
from pg_dataops.pitr import inventory, recover, recoveries, request, scratch

TREND_WINDOW = dt.timedelta(days=180)  # the earlier drills the RTO trend is drawn through
VERIFY_TOOLS = ("pg_verifybackup", "pg_waldump")  # pg_verifybackup runs pg_waldump from its own directory
_VERIFY_ERROR_RE = re.compile(r"pg_verifybackup: error: (.*)")
_QUOTED_RE = re.compile(r'"([^"]+)"')
_RESTORED_RE = re.compile(r'restored log file "([0-9A-F]{24})" from archive')
END_OF_ARCHIVE = "the end of the archive"


class DrillRefused(PermanentError):
    """The drill cannot start: no base backup, a gap in the WAL, a tool or the disk missing. Nothing was created."""


class BackupVerificationFailed(VerificationFailed, PermanentError):
    """pg_verifybackup found the restored copy different from the backup's backup_manifest."""


class ReplayIncomplete(PermanentError):
    """Replay to the end of the archive stopped before the newest segment that was in S3."""


# --- 1. the plan --------------------------------------------------------------------------------------


def parse_target_time(value: Any) -> dt.datetime | None:
    """The optional ``target_time`` param: empty means the end of the archive; otherwise a date-time with a
    zone (pg_pitr_restore's rule and message)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        return request.parse_target_time(value)
    except request.RecoveryRefused as exc:
        raise DrillRefused(str(exc)) from None


def check_verify_tools(bin_dir: str) -> str:
    """pg_verifybackup (and the pg_waldump it runs) of the backup's major version; its path."""
    for name in VERIFY_TOOLS:
        if not os.access(os.path.join(bin_dir, name), os.X_OK):
            major = os.path.basename(os.path.dirname(bin_dir.rstrip("/")))
            raise DrillRefused(f"{bin_dir}/{name} is missing: the drill checks the restored copy with pg_verifybackup "
                               f"of the backup's major version (Debian: apt-get install postgresql-{major})")
    return os.path.join(bin_dir, "pg_verifybackup")


def plan_drill(cfg: Config, target: str, window: inventory.Window, *, source_database: str,
               target_time: dt.datetime | None, identity: Callable[[], str], run_id: str) -> dict[str, Any]:
    """What the drill recovers and where (JSON-ready), or :class:`DrillRefused` before anything is created.

    ``target_time`` None: the newest base backup, replayed to the end of the archive as listed now;
    otherwise the newest base backup that ended at or before it, replayed to it (it must lie in the window).
    ``source_database``: the target's database, counted after replay. ``identity`` is read only for an
    encrypted backup, proven to open it, and never returned.
    """
    tz = cfg.timezone
    window_text = request.describe_window(window, tz)
    if not window.backups:
        raise DrillRefused(f"nothing to drill: {window_text}")
    newest = window.newest_segment
    if target_time is None:
        base = window.backups[-1]
        if newest is None or newest.segment.segno < base.start_segment.segno:
            raise DrillRefused(f"the WAL archive holds nothing from the newest base backup {base.backup_id} on "
                               f"(it starts at {base.start_segment.name()}): {window_text}")
        moment = window.end
    else:
        if window.end is None or window.end < window.start:
            raise DrillRefused(f"nothing to recover to yet: {window_text}")
        if not window.start <= target_time <= window.end:
            raise DrillRefused(f"target_time {fmt_instant(target_time, tz)} is outside the recoverable window "
                               f"{window_text}")
        base = request.choose_base_backup(window, target_time, None, tz)
        moment = target_time
    try:
        end = request.check_wal(window, base, moment)
        worker = request.check_worker(cfg, base)
        identity_proven = scratch.prove_identity(base.doc, identity, cfg.encryption.identity_conn_id) is not None
    except request.RecoveryRefused as exc:
        raise DrillRefused(str(exc)) from None
    check_verify_tools(worker["bin_dir"])
    layout = scratch.layout_for(cfg.pitr.scratch_root, run_id, target)
    if target_time is None:
        aim = (f"{END_OF_ARCHIVE} (newest segment {newest.name}, uploaded {fmt_instant(newest.last_modified, tz)})")
    else:
        aim = request.when(target_time, tz)
    return {
        "kind": "drill",
        "target": target,
        "target_time": target_time.astimezone(dt.UTC).isoformat() if target_time else None,
        "target_time_text": aim,
        "target_action": "promote",
        "source_database": source_database,
        "window": {"start": window.start.astimezone(dt.UTC).isoformat(),
                   "end": window.end.astimezone(dt.UTC).isoformat() if window.end else None, "text": window_text},
        "base_backup": base.backup_id,
        "base_backup_doc": base.doc,
        "base_backup_stop_time": base.stop_time.astimezone(dt.UTC).isoformat(),
        "wal_needed": {"from": base.start_segment.name(), "to": end.name()},
        "newest_segment": newest.name if newest else None,
        "newest_segment_uploaded": newest.last_modified.astimezone(dt.UTC).isoformat() if newest else None,
        "encrypted": identity_proven,
        "bin_dir": worker["bin_dir"],
        "scratch": layout.to_dict(),
        "run_id": run_id,
    }


# --- 3. pg_verifybackup -----------------------------------------------------------------------------


def verify_problems(output: str) -> tuple[list[str], list[str]]:
    """(the error lines, the files they name) of pg_verifybackup's output, in its order, files once each.

    The lines look like ``checksum mismatch for file "base/5/1247"``, ``"base/5/99999" is present on disk
    but not in the manifest``, ``WAL parsing failed for timeline 1``."""
    errors, files = [], []
    for line in output.splitlines():
        m = _VERIFY_ERROR_RE.search(line)
        if not m:
            continue
        errors.append(m.group(1).strip())
        for name in _QUOTED_RE.findall(m.group(1)):
            if not name.endswith("backup_manifest") and name not in files:
                files.append(name)
    return errors, files


def _last_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[-1] if lines else ""


def verify_restored(layout: scratch.ScratchLayout, bin_dir: str, *, timeout: float | None = None,
                    doc: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``pg_verifybackup`` of the restored data directory against the ``backup_manifest`` inside it: every
    file's size and checksum, and the backup's WAL (in ``pg_wal``) parsed from its start to its end.

    Run before the server starts. Returns the counts and the time; raises
    :class:`BackupVerificationFailed` naming the files (and the WAL) that differ.
    """
    tool = check_verify_tools(bin_dir)
    data = layout.data
    manifest = data / "backup_manifest"
    what = f"base backup {doc.get('backup_id')}" if doc else "the base backup"
    if not manifest.is_file():
        raise BackupVerificationFailed(f"the restored copy of {what} has no backup_manifest: pg_verifybackup has "
                                       "nothing to check it against (was it taken by pg_base_backup?)")
    try:
        listed = json.loads(manifest.read_bytes())
        files = len(listed.get("Files") or [])
        wal_ranges = listed.get("WAL-Ranges") or []
    except (OSError, ValueError) as exc:
        raise BackupVerificationFailed(f"the restored backup_manifest of {what} cannot be read: {exc}") from None
    started = time.monotonic()
    try:
        done = subprocess.run(localpg.as_owner([tool, str(data)]), capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, "LC_ALL": "C"})
    except subprocess.TimeoutExpired:
        raise BackupVerificationFailed(f"pg_verifybackup of {what} did not finish within {timeout:.0f} s") from None
    seconds = round(time.monotonic() - started, 3)
    output = (done.stdout + "\n" + done.stderr).strip()
    if done.returncode != 0:
        errors, named = verify_problems(output)
        shown = "; ".join(errors[:10]) + (f"; ... ({len(errors)} problems)" if len(errors) > 10 else "")
        files_text = f" files differing: {', '.join(named[:20])}{' ...' if len(named) > 20 else ''};" if named \
            else ""
        raise BackupVerificationFailed(
            f"pg_verifybackup: the restored copy of {what} does not match its backup_manifest "
            f"(exit {done.returncode}):{files_text} {shown or output[-1500:]}")
    return {"verified": True, "verify_seconds": seconds, "files": files,
            "wal_ranges": [{"timeline": r.get("Timeline"), "start_lsn": r.get("Start-LSN"),
                            "end_lsn": r.get("End-LSN")} for r in wal_ranges],
            "message": _last_line(done.stdout) or _last_line(output), "tool": tool}


# --- 4. replay ----------------------------------------------------------------------------------------


def restored_segments(log: str) -> list[str]:
    """The WAL segments (not history files) the server restored from the archive, in order, once each."""
    seen: dict[str, None] = {}
    for name in _RESTORED_RE.findall(log):
        seen.setdefault(name)
    return list(seen)


def check_reached_end(plan: Mapping[str, Any], result: Mapping[str, Any]) -> None:
    """At the end of the archive, replay must have restored the newest segment the plan saw: PostgreSQL ends
    recovery at the first segment ``restore_command`` cannot fetch, a missing or unreadable one included."""
    if plan.get("target_time") or not plan.get("newest_segment"):
        return
    need = wal.Segment.parse(plan["newest_segment"])
    last = result.get("last_restored_segment")
    if last is not None and wal.Segment.parse(last).segno >= need.segno:
        return
    after = recover.next_segment(last).name() if last else plan["wal_needed"]["from"]
    raise ReplayIncomplete(
        f"replay ended after {'segment ' + last if last else 'the backup alone (no segment restored from S3)'}, but "
        f"the archive held segments up to {need.name()} when the drill started: segment {after} could not be "
        "restored (missing, corrupt, or S3 refused it; see the recover task's log). A real recovery to the end "
        "of the archive would have stopped there, silently losing everything after it")


def replay(cfg: Config, plan: Mapping[str, Any], *, env: Mapping[str, str], endpoint_url: str | None,
           list_archive: Callable[[], Sequence[wal.ArchivedWal]], timeout_seconds: float) -> dict[str, Any]:
    """Start the scratch server on the verified copy and replay archived WAL (``recover.replay``): to the end
    of the archive, promoted, or to the plan's ``target_time``. Adds the segments restored from S3, and at
    the end of the archive checks that the newest segment was reached (:func:`check_reached_end`)."""
    layout = scratch.ScratchLayout.from_dict(plan["scratch"])
    target_time = dt.datetime.fromisoformat(plan["target_time"]) if plan.get("target_time") else None
    result = recover.replay(
        layout, bin_dir=plan["bin_dir"],
        restore_command_line=recover.restore_command(cfg, plan["target"], layout, endpoint_url=endpoint_url),
        target_time=target_time, target_action="promote", env=env, timeout_seconds=timeout_seconds,
        list_archive=list_archive)
    log = recover.instance(layout, plan["bin_dir"], result["port"]).log_text()
    segments = restored_segments(log)
    result["segments_restored"] = len(segments)
    result["first_restored_segment"] = segments[0] if segments else None
    check_reached_end(plan, result)
    return result


# --- 7. the outcome -----------------------------------------------------------------------------------


def drill_row(*, target: str, plan: Mapping | None, restored: Mapping | None, verified: Mapping | None,
              recovered: Mapping | None, checked: Mapping | None, error: tuple[str, str] | None,
              objective_seconds: float, dag_id: str, run_id: str, details: Mapping | None = None) -> dict[str, Any]:
    """The ``pitr_recoveries`` row of a drill (``recoveries.recovery_row``, kind ``drill``): SUCCESS needs
    the copy verified by pg_verifybackup, recovered and counted, and no failed step; the measured time is
    restore + verify + replay + checks."""
    row = recoveries.recovery_row(
        kind="drill", target=target, plan=plan, restored=restored, verified=verified, recovered=recovered,
        checked=checked, copied=None, swapped=None, approval=None, error=error, objective_seconds=objective_seconds,
        dag_id=dag_id, run_id=run_id, details=details)
    if row["status"] == "SUCCESS" and not (verified or {}).get("verified"):
        row.update(status="FAILED", total_seconds=None,
                   error_message="verify_backup: the restored copy was not checked with pg_verifybackup")
    return row


def rto_history(pg: psycopg.Connection, target: str, since: dt.datetime) -> list[tuple[dt.datetime, float]]:
    """``(recorded_at, total_seconds)`` of the successful drills of ``target`` since ``since``, oldest first."""
    ensure_schema(pg)
    with pg.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(sqlfiles.text("pitr/drill_rto_history.sql"), {"target": target, "since": since}).fetchall()
    return [(r["recorded_at"], float(r["total_seconds"])) for r in rows]


def drill_text(row: Mapping[str, Any], *, plan: Mapping[str, Any], restored: Mapping[str, Any],
               verified: Mapping[str, Any], recovered: Mapping[str, Any], checked: Mapping[str, Any],
               verdict: RtoVerdict, timezone: str) -> str:
    """The Slack report of a successful drill: what was recovered and proven, where the time went, the verdict."""
    icon = ":white_check_mark:" if verdict.status == "ok" else ":warning:"
    doc = plan.get("base_backup_doc") or {}
    size = fmt_bytes((doc.get("archive") or {}).get("size"))
    encrypted = ", age-encrypted" if plan.get("encrypted") else ""
    reached = recovered.get("reached_time")
    reached_text = fmt_instant(dt.datetime.fromisoformat(reached), timezone) if reached else \
        "none after the base backup"
    lines = [
        f"{icon} PITR drill of {row['target']}: base backup {row['base_backup_id']} ({size}{encrypted}) + "
        f"{recovered.get('segments_restored', 0)} WAL segment(s) from S3, replayed to {plan['target_time_text']}; "
        f"last replayed commit {reached_text}",
        f"pg_verifybackup: {verified.get('files', 0):,} files and the backup's WAL match its backup_manifest; "
        f"{checked.get('tables')} tables, {checked.get('rows', 0):,} rows in {checked.get('database')}"
        + (" (" + ", ".join(f"{k} {v:,}" for k, v in (checked.get("runbook") or {}).items()) + ")"
           if checked.get("runbook") else ""),
        "restore " + fmt_duration(restored.get("restore_seconds")) + " + verify "
        + fmt_duration(verified.get("verify_seconds")) + " + replay " + fmt_duration(recovered.get("replay_seconds"))
        + " + checks " + fmt_duration(checked.get("check_seconds")) + " = " + fmt_duration(row["total_seconds"])
        + f"; {verdict.message}. A real recovery adds the copy into the target server (pg_dump | pg_restore).",
    ]
    return slack_escape("\n".join(lines))


def record_drill(pg: psycopg.Connection, *, target: str, plan: Mapping | None, restored: Mapping | None,
                 verified: Mapping | None, recovered: Mapping | None, checked: Mapping | None,
                 step_errors: Iterable[tuple[str, str | None]], objective_seconds: float, timezone: str,
                 dag_id: str, run_id: str, window_text: str | None = None,
                 now: dt.datetime | None = None) -> DrillOutcome:
    """Record the drill in ``pitr_recoveries`` (kind ``drill``; a failed one too, with its first failing step)
    and judge its time against the objective and the trend of the earlier drills (read before the insert)."""
    error = recoveries.first_error(step_errors)
    details = {"window": window_text or ((plan or {}).get("window") or {}).get("text"),
               "newest_segment": (plan or {}).get("newest_segment"),
               "segments_restored": (recovered or {}).get("segments_restored"),
               "last_restored_segment": (recovered or {}).get("last_restored_segment"),
               "pg_verifybackup": {k: (verified or {}).get(k) for k in ("verified", "files", "message")}
               if verified else None,
               "counts": (checked or {}).get("counts"), "runbook_counts": (checked or {}).get("runbook"),
               "encrypted": (plan or {}).get("encrypted")}
    row = drill_row(target=target, plan=plan, restored=restored, verified=verified, recovered=recovered,
                    checked=checked, error=error, objective_seconds=objective_seconds, dag_id=dag_id, run_id=run_id,
                    details=details)
    now = now or dt.datetime.now(dt.UTC)
    ok = row["status"] == "SUCCESS"
    history = rto_history(pg, target, now - TREND_WINDOW) if ok else []
    row["id"] = recoveries.record(pg, row)
    if not ok:
        return DrillOutcome(row, None, f"PITR drill of {target} {row['status'].lower()} and was recorded (row "
                                       f"{row['id']}): {row['error_message']}", what="PITR drill")
    verdict = assess_rto(float(row["total_seconds"]), objective_seconds, history, now)
    text = drill_text(row, plan=plan, restored=restored, verified=verified, recovered=recovered, checked=checked,
                      verdict=verdict, timezone=timezone)
    return DrillOutcome(row, verdict, text, what="PITR drill")


__all__ = ["BackupVerificationFailed", "DrillOutcome", "DrillRefused", "ReplayIncomplete", "RtoExceeded",
           "check_reached_end", "drill_row", "drill_text", "parse_target_time", "plan_drill", "record_drill",
           "replay", "restored_segments", "verify_problems", "verify_restored"]
