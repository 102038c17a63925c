"""The hourly WAL archive check (DAG ``pg_wal_archive_check``): is every WAL segment reaching S3, in time?

Airflow-free. :func:`check_archive` reads the facts (the server's ``pg_stat_archiver``, its ``.ready``
backlog and current WAL position; the archive and the base backups in S3; ``barman-cloud-check-wal-archive``)
and :func:`evaluate` turns them into one :class:`~pg_dataops.observe.monitor.Finding` per check, passing or
not. :func:`check_and_alert` (the task) sends them through the monitor's alert machinery
(:func:`pg_dataops.common.alerting.deliver`, state in ``monitor_alerts`` under ``pg_wal_archive_check/<target>/``)
and then fails the run when a ``page`` check fails.

Checks (``page``: PagerDuty trigger while failing, resolve under the same ``dedup_key`` when it clears and
the run is red; ``warn``: one Slack post when it starts failing and one when it clears):

- ``archiving_failing`` (page): ``archive_mode`` is off, or pg_stat_archiver's last failure is newer than
  its last success (archive_command is failing right now).
- ``rpo_at_risk`` (page): the newest segment in S3 is older than ``pitr.rpo_minutes`` while the server has
  written WAL after it (an idle server writes nothing and ships nothing: nothing is at risk), or S3 holds
  no segment at all.
- ``wal_gaps`` (page): segments missing in S3 between the oldest kept base backup's start segment (without
  a base backup: the oldest archived segment) and the newest archived one; each gap named.
- ``higher_timeline`` (page): ``barman-cloud-check-wal-archive --timeline <server's timeline + 1>`` fails:
  WAL of a timeline above the server's is in the archive, i.e. another server (a promoted copy, a restored
  clone) archives into the same place, and recovery would follow its history.
- ``archive_age`` (warn): the newest segment in S3 is older than 2 x archive_timeout + 60 s (archiving lags)
  while the server has written WAL after it.
- ``ready_backlog`` (warn): ``BACKLOG_WARN`` or more ``.ready`` files wait in pg_wal/archive_status, or the
  connection's role may not read them (pg_monitor needed).
- ``segments_behind`` (warn): the server's current segment is ``BACKLOG_WARN`` or more complete segments
  past the newest one in S3 (also when archive_command "succeeds" into another place).
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import zoneinfo
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import psycopg
from botocore.exceptions import BotoCoreError, ClientError
from psycopg.rows import dict_row

from pg_dataops.common import alerting as alerts
from pg_dataops.common import pg as pgtools
from pg_dataops.common import sqlfiles, wal
from pg_dataops.common.alerting import PAGE, WARN, Finding
from pg_dataops.common.config import Config
from pg_dataops.common.errors import PermanentError, redact
from pg_dataops.common.formatting import fmt_time
from pg_dataops.common.pg import PgConn
from pg_dataops.pitr.inventory import PitrError, list_base_backups

DEDUP_PREFIX = "pg_wal_archive_check"
SOURCE_GROUP = "pg_wal_archive_check"

CHECK_ARCHIVING = "archiving_failing"
CHECK_RPO = "rpo_at_risk"
CHECK_GAPS = "wal_gaps"
CHECK_TIMELINE = "higher_timeline"
CHECK_AGE = "archive_age"
CHECK_BACKLOG = "ready_backlog"
CHECK_BEHIND = "segments_behind"
CHECKS = (CHECK_ARCHIVING, CHECK_RPO, CHECK_GAPS, CHECK_TIMELINE, CHECK_AGE, CHECK_BACKLOG, CHECK_BEHIND)

# Segments waiting (.ready, or complete on the server but not in S3) before a warning: one or two are the
# segment being uploaded right now; a bulk load writes several per second for a while.
BACKLOG_WARN = 8
AGE_WARN_MARGIN_SECONDS = 60  # on top of 2 x archive_timeout: one upload and some clock skew
BARMAN_TIMEOUT_SECONDS = 300
GAPS_NAMED = 10  # gaps named in a message; the rest are counted
SEGMENT_SIZE_SETTING = "16MB"  # the archive's names and positions assume 16 MiB segments (wal.SEGMENT_SIZE)


class ArchiveCheckFailed(PermanentError):
    """A page-level check failed; alerts were sent. Permanent: the next hourly run is the retry."""


def dedup_key(target: str, check: str) -> str:
    """Target first, so one target's run handles exactly its own keys (see :func:`alert_source`)."""
    return f"{DEDUP_PREFIX}/{target}/{check}"


def alert_source(target: str) -> alerts.AlertSource:
    return alerts.AlertSource(key_prefix=f"{DEDUP_PREFIX}/{target}/", pagerduty_title="WAL archive check",
                              group=SOURCE_GROUP, slack_title="PostgreSQL WAL archive",
                              gone_reason="the archive check no longer runs it")


# --- facts -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerFacts:
    """What the server says (include/sql/pitr/archive_server_facts.sql, archive_ready_backlog.sql)."""

    archived_count: int = 0
    last_archived_wal: str | None = None
    last_archived_time: dt.datetime | None = None
    failed_count: int = 0
    last_failed_wal: str | None = None
    last_failed_time: dt.datetime | None = None
    stats_reset: dt.datetime | None = None
    in_recovery: bool = False
    current_lsn: str | None = None  # None on a standby
    timeline: int = 1
    archive_mode: str = "on"
    archive_timeout_seconds: int = 60
    role: str = "postgres"  # the connection's role (named when it lacks pg_monitor)
    ready: int | None = None  # None: not readable (``ready_error`` says why)
    oldest_ready: str | None = None
    oldest_ready_since: dt.datetime | None = None
    ready_error: str | None = None

    @property
    def current_position(self) -> int | None:
        return wal.parse_lsn(self.current_lsn) if self.current_lsn else None


@dataclass(frozen=True)
class BarmanResult:
    """``barman-cloud-check-wal-archive`` as run: its argv (no secrets in it), exit code and last words."""

    argv: tuple[str, ...]
    timeline: int
    returncode: int | None  # None: it could not be run (``output`` says why)
    output: str = ""


@dataclass(frozen=True)
class ArchiveFacts:
    target: str
    archive_url: str  # s3://bucket/prefix/wal/target/wals/
    server: ServerFacts
    archive: tuple[wal.ArchivedWal, ...]
    base_start: tuple[str, wal.Segment] | None  # (backup_id, start segment) of the oldest kept base backup
    barman: BarmanResult

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe summary (XCom): the archive is summarised, not listed."""
        segs = wal.segments(self.archive)
        newest = wal.newest_segment(self.archive)
        server = {k: (v.isoformat() if isinstance(v, dt.datetime) else v) for k, v in asdict(self.server).items()}
        return {
            "target": self.target, "archive_url": self.archive_url, "server": server,
            "archived_segments": len(segs),
            "oldest_segment": segs[0].name if segs else None,
            "newest_segment": newest.name if newest else None,
            "newest_uploaded": newest.last_modified.isoformat() if newest else None,
            "history_files": sorted(w.name for w in self.archive if w.name.endswith(".history")),
            "base_backup": ({"backup_id": self.base_start[0], "start_segment": self.base_start[1].name()}
                            if self.base_start else None),
            "barman": {"argv": list(self.barman.argv), "timeline": self.barman.timeline,
                       "returncode": self.barman.returncode, "output": self.barman.output},
        }


@dataclass
class ArchiveCheck:
    facts: ArchiveFacts
    findings: list[Finding] = field(default_factory=list)

    @property
    def failing_pages(self) -> list[Finding]:
        return [f for f in self.findings if not f.ok and f.severity == PAGE]


def read_server(conn: PgConn) -> ServerFacts:
    """pg_stat_archiver, the current position and timeline, and the .ready backlog of the server."""
    with pgtools.connect(conn, autocommit=True) as pg, pg.cursor(row_factory=dict_row) as cur:
        row = cur.execute(sqlfiles.text("pitr/archive_server_facts.sql")).fetchone()
        if row["wal_segment_size"] != SEGMENT_SIZE_SETTING:
            raise PitrError(f"{conn.describe()}: wal_segment_size is {row['wal_segment_size']}; the WAL archive "
                            f"check assumes PostgreSQL's default {SEGMENT_SIZE_SETTING} segments")
        ready: dict[str, Any] = {}
        try:
            backlog = cur.execute(sqlfiles.text("pitr/archive_ready_backlog.sql")).fetchone()
            ready = {"ready": backlog["ready"], "oldest_ready": backlog["oldest_ready"],
                     "oldest_ready_since": backlog["oldest_ready_since"]}
        except psycopg.errors.InsufficientPrivilege as exc:
            ready = {"ready_error": str(exc).strip().splitlines()[0]}
    walfile = row["current_walfile"]
    return ServerFacts(
        archived_count=row["archived_count"], last_archived_wal=row["last_archived_wal"],
        last_archived_time=row["last_archived_time"], failed_count=row["failed_count"],
        last_failed_wal=row["last_failed_wal"], last_failed_time=row["last_failed_time"],
        stats_reset=row["stats_reset"], in_recovery=row["in_recovery"], current_lsn=row["current_lsn"],
        timeline=int(walfile[:8], 16) if walfile else row["checkpoint_timeline"],
        archive_mode=row["archive_mode"], archive_timeout_seconds=_seconds(row["archive_timeout"]),
        role=conn.user, **ready,
    )


def _seconds(setting: str) -> int:
    """current_setting('archive_timeout'): '1min', '60s', '0', '2h' -> seconds."""
    units = {"ms": 0.001, "s": 1, "min": 60, "h": 3600, "d": 86400}
    text = setting.strip()
    for unit in sorted(units, key=len, reverse=True):
        if text.endswith(unit) and text[: -len(unit)].strip().lstrip("-").isdigit():
            return int(int(text[: -len(unit)]) * units[unit])
    return int(text)


# What the Barman tool may inherit from the worker: locale, paths, proxies and CA bundles. Not the rest (the
# worker's environment holds AIRFLOW_CONN_* secrets), nor ambient AWS_* credentials or profiles.
_INHERITED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "HTTP_PROXY", "HTTPS_PROXY",
                  "NO_PROXY", "http_proxy", "https_proxy", "no_proxy", "SSL_CERT_FILE", "SSL_CERT_DIR",
                  "REQUESTS_CA_BUNDLE", "AWS_CA_BUNDLE")


def tool_env(credentials: Mapping[str, str | None]) -> dict[str, str]:
    """The Barman tool's environment: the harmless part of ours plus the S3 connection's credentials."""
    env = {k: os.environ[k] for k in _INHERITED_ENV if k in os.environ}
    env.update(wal.aws_env(credentials))
    return env


def run_barman_check(cfg: Config, target: str, timeline: int, credentials: Mapping[str, str | None], *,
                     run: Callable[..., subprocess.CompletedProcess] = subprocess.run) -> BarmanResult:
    """``barman-cloud-check-wal-archive --timeline <timeline>`` (``cfg.pitr.wal_tools_bin``); credentials in
    its environment only."""
    argv = wal.check_archive_argv(cfg, target, endpoint_url=credentials.get("endpoint_url"), timeline=timeline)
    try:
        proc = run(argv, env=tool_env(credentials), capture_output=True, text=True, timeout=BARMAN_TIMEOUT_SECONDS)
    except FileNotFoundError:
        return BarmanResult(tuple(argv), timeline, None, f"{argv[0]} not found: install the WAL tools on this worker "
                            "(scripts/install-wal-tools.sh, `make wal-tools`) or set pitr.wal_tools_bin")
    except subprocess.TimeoutExpired:
        return BarmanResult(tuple(argv), timeline, None, f"no answer within {BARMAN_TIMEOUT_SECONDS} s")
    words = [line.strip() for line in (proc.stderr + "\n" + proc.stdout).splitlines() if line.strip()]
    secrets = (credentials.get("secret_key"), credentials.get("token"))
    return BarmanResult(tuple(argv), timeline, proc.returncode, redact(" / ".join(words[-3:])[-600:], *secrets))


def check_archive(server: PgConn, client, cfg: Config, target: str, now: dt.datetime, *,
                  credentials: Mapping[str, str | None],
                  run: Callable[..., subprocess.CompletedProcess] = subprocess.run) -> ArchiveCheck:
    """Every check of ``target``'s archive as of ``now`` (timezone-aware): the facts and one finding per check."""
    if now.tzinfo is None:
        raise ValueError("check_archive needs a timezone-aware 'now'")
    facts_server = read_server(server)
    prefix = wal.archive_prefix(cfg, target)
    try:
        archive = wal.list_archive(client, cfg.bucket, prefix)
    except (ClientError, BotoCoreError) as exc:
        raise PitrError(f"cannot list the WAL archive s3://{cfg.bucket}/{prefix}: {exc}") from None
    listing = list_base_backups(client, cfg, target)
    oldest = listing.backups[0] if listing.backups else None
    barman = run_barman_check(cfg, target, facts_server.timeline + 1, credentials, run=run)
    facts = ArchiveFacts(target, f"s3://{cfg.bucket}/{prefix}", facts_server, tuple(archive),
                         (oldest.backup_id, oldest.start_segment) if oldest else None, barman)
    return ArchiveCheck(facts, evaluate(facts, cfg, now))


# --- rules -----------------------------------------------------------------------------------------


def evaluate(facts: ArchiveFacts, cfg: Config, now: dt.datetime) -> list[Finding]:
    """One finding per check (see the module docstring), passing or not."""
    tz = zoneinfo.ZoneInfo(cfg.timezone)
    newest = wal.newest_segment(facts.archive)
    unarchived = _unarchived_bytes(facts.server, newest)
    return [
        check_archiving(facts, tz),
        check_rpo(facts, newest, unarchived, cfg, now, tz),
        check_gaps(facts),
        check_timeline(facts),
        check_age(facts, newest, unarchived, now, tz),
        check_backlog(facts, tz),
        check_behind(facts, newest),
    ]


def _finding(facts: ArchiveFacts, check: str, ok: bool, severity: str, message: str, **details: Any) -> Finding:
    return Finding(check, facts.target, ok, severity, message, dedup_key(facts.target, check), details)


def _iso(t: dt.datetime | None) -> str | None:
    return t.isoformat() if t else None


def _unarchived_bytes(server: ServerFacts, newest: wal.ArchivedWal | None) -> int | None:
    """WAL the server wrote after the end of the newest segment in S3 (<= 0: nothing; None: unknown).

    An idle server's write position stays on the boundary after its last switch: nothing to ship, and
    archive_timeout forces no switch, so the newest segment ages without any data being at risk."""
    pos = server.current_position
    if pos is None or newest is None:
        return None
    return pos - (newest.segment.segno + 1) * wal.SEGMENT_SIZE


def check_archiving(facts: ArchiveFacts, tz: dt.tzinfo) -> Finding:
    s = facts.server
    t = facts.target
    details = {"failed_count": s.failed_count, "last_failed_wal": s.last_failed_wal,
               "last_failed_time": _iso(s.last_failed_time), "archived_count": s.archived_count,
               "last_archived_wal": s.last_archived_wal, "last_archived_time": _iso(s.last_archived_time),
               "archive_mode": s.archive_mode}
    since = f" since {fmt_time(s.stats_reset, tz)}" if s.stats_reset else ""
    success = (f"{s.last_archived_wal} at {fmt_time(s.last_archived_time, tz)}" if s.last_archived_time
               else f"none{since}")
    if s.archive_mode == "off":
        message = (f"WAL archiving of {t} is off (archive_mode = off): no WAL reaches S3; set the settings of "
                   "include/config/postgresql-pitr.conf and restart the server")
        return _finding(facts, CHECK_ARCHIVING, False, PAGE, message, **details)
    failing = s.last_failed_time is not None and (s.last_archived_time is None
                                                  or s.last_failed_time > s.last_archived_time)
    if failing:
        message = (f"WAL archiving of {t} is failing: archive_command failed for {s.last_failed_wal} at "
                   f"{fmt_time(s.last_failed_time, tz)}, after the last success ({success}); "
                   f"{s.failed_count} failed attempts{since} (pg_stat_archiver; the reason is in the server log)")
    elif s.last_archived_time is None:
        message = f"WAL archiving of {t}: nothing archived or failed yet{since} (pg_stat_archiver)"
    else:
        message = f"WAL archiving of {t} works: last archived {success}"
        if s.failed_count:
            message += (f"; {s.failed_count} failed attempts{since}, the last for {s.last_failed_wal} at "
                        f"{fmt_time(s.last_failed_time, tz)}")
    return _finding(facts, CHECK_ARCHIVING, not failing, PAGE, message, **details)


def _age_text(facts: ArchiveFacts, newest: wal.ArchivedWal, age: float, tz: dt.tzinfo) -> str:
    return (f"the newest WAL segment of {facts.target} in S3 ({newest.name}, uploaded "
            f"{fmt_time(newest.last_modified, tz)}) is {age / 60:.1f} min old")


def _idle_text(unarchived: int | None) -> str | None:
    if unarchived is not None and unarchived <= 0:
        return "the server has written no WAL since (idle): nothing is waiting to be archived"
    return None


def _position_text(facts: ArchiveFacts, newest: wal.ArchivedWal) -> str:
    pos = facts.server.current_position
    if pos is None:
        return "the server's position is unknown (in recovery)"
    current = wal.Segment(pos // wal.SEGMENT_SIZE, facts.server.timeline)
    behind = current.segno - newest.segment.segno - 1
    return f"the server writes {current.name()}, {behind} complete segment(s) after it"


def check_rpo(facts: ArchiveFacts, newest: wal.ArchivedWal | None, unarchived: int | None, cfg: Config,
              now: dt.datetime, tz: dt.tzinfo) -> Finding:
    rpo = cfg.pitr.rpo_minutes
    details: dict[str, Any] = {"rpo_minutes": rpo}
    if newest is None:
        message = (f"no WAL segment of {facts.target} in {facts.archive_url}: nothing to recover with "
                   f"(RPO {rpo} min)")
        return _finding(facts, CHECK_RPO, False, PAGE, message, **details)
    age = (now - newest.last_modified).total_seconds()
    details.update(newest_segment=newest.name, newest_uploaded=_iso(newest.last_modified),
                   age_minutes=round(age / 60, 2), unarchived_bytes=unarchived)
    idle = _idle_text(unarchived)
    at_risk = age > rpo * 60 and idle is None
    if at_risk:
        message = (f"RPO at risk: {_age_text(facts, newest, age, tz)}, above the RPO of {rpo} min; "
                   f"{_position_text(facts, newest)}")
    else:
        message = f"{_age_text(facts, newest, age, tz)} (RPO {rpo} min)" + (f"; {idle}" if idle else "")
    return _finding(facts, CHECK_RPO, not at_risk, PAGE, message, **details)


def check_age(facts: ArchiveFacts, newest: wal.ArchivedWal | None, unarchived: int | None, now: dt.datetime,
              tz: dt.tzinfo) -> Finding:
    timeout = facts.server.archive_timeout_seconds
    limit = 2 * timeout + AGE_WARN_MARGIN_SECONDS
    rule = f"warning above 2 x archive_timeout ({timeout} s) + {AGE_WARN_MARGIN_SECONDS} s = {limit / 60:g} min"
    details: dict[str, Any] = {"warn_seconds": limit, "archive_timeout_seconds": timeout}
    if newest is None:
        message = f"no WAL segment of {facts.target} in {facts.archive_url} ({rule})"
        return _finding(facts, CHECK_AGE, False, WARN, message, **details)
    age = (now - newest.last_modified).total_seconds()
    details.update(newest_segment=newest.name, age_seconds=round(age, 1))
    idle = _idle_text(unarchived)
    lagging = timeout > 0 and age > limit and idle is None
    if timeout == 0:
        rule = "archive_timeout is 0 on the server: a quiet server may hold WAL unarchived for any time"
    message = f"{_age_text(facts, newest, age, tz)} ({rule})"
    if lagging:
        message = f"WAL archiving lags: {message}; {_position_text(facts, newest)}"
    elif idle:
        message += f"; {idle}"
    return _finding(facts, CHECK_AGE, not lagging, WARN, message, **details)


def check_gaps(facts: ArchiveFacts) -> Finding:
    present = [w.segment for w in wal.segments(facts.archive)]
    t = facts.target
    if facts.base_start:
        start, origin = facts.base_start[1], f"start of base backup {facts.base_start[0]}"
    elif present:
        start, origin = present[0], "the oldest archived; no base backup yet"
    else:
        return _finding(facts, CHECK_GAPS, True, PAGE, f"no WAL of {t} archived yet and no base backup: no "
                        "sequence to check")
    if not present or max(present).segno < start.segno:
        gaps = [wal.Gap(start, start)]
        end = None
    else:
        end = max(present)
        gaps = wal.find_gaps(present, start)
    details: dict[str, Any] = {"start": start.name(), "start_origin": origin, "end": end.name() if end else None,
                               "gaps": [{"first": g.first.name(), "last": g.last.name(), "count": g.count}
                                        for g in gaps]}
    if not gaps:
        count = end.segno - start.segno + 1
        message = f"WAL archive of {t} is continuous from {start.name()} ({origin}) to {end.name()} ({count} segments)"
        return _finding(facts, CHECK_GAPS, True, PAGE, message, **details)
    named = ", ".join(g.describe() for g in gaps[:GAPS_NAMED])
    if len(gaps) > GAPS_NAMED:
        named += f" and {len(gaps) - GAPS_NAMED} more gap(s)"
    missing = sum(g.count for g in gaps)
    upto = f"to {end.name()}" if end else "on (nothing archived from there)"
    last_good = wal.Segment(gaps[0].first.segno - 1, gaps[0].first.timeline).name() \
        if gaps[0].first.segno > start.segno else None
    stop = f"recovery from there stops at {last_good}" if last_good else "recovery from there cannot start"
    message = (f"WAL archive of {t} is missing {missing} segment(s) from {start.name()} ({origin}) {upto}: "
               f"{named}; {stop}")
    return _finding(facts, CHECK_GAPS, False, PAGE, message, **details)


def _higher_timeline_files(facts: ArchiveFacts) -> list[str]:
    """Objects of the archive whose timeline is above the server's (history files and segments)."""
    out = []
    for w in facts.archive:
        tli = w.segment.timeline if w.segment else (int(w.name[:8], 16) if w.name.endswith(".history") else 0)
        if tli > facts.server.timeline:
            out.append(w.name)
    return sorted(out)


def check_timeline(facts: ArchiveFacts) -> Finding:
    b = facts.barman
    command = f"barman-cloud-check-wal-archive --timeline {b.timeline}"
    details: dict[str, Any] = {"timeline": facts.server.timeline, "returncode": b.returncode, "output": b.output}
    if b.returncode == 0:
        message = (f"{command}: no WAL of a timeline above {facts.server.timeline} (the server's) in the archive "
                   f"of {facts.target}")
        return _finding(facts, CHECK_TIMELINE, True, PAGE, message, **details)
    if b.returncode is None:
        message = f"{command} could not run for {facts.target}: {b.output}"
        return _finding(facts, CHECK_TIMELINE, False, PAGE, message, **details)
    foreign = _higher_timeline_files(facts)
    details["higher_timeline_files"] = foreign
    message = f"{command} failed for {facts.target} (exit {b.returncode}): {b.output}"
    if foreign:
        shown = ", ".join(foreign[:GAPS_NAMED]) + (f" and {len(foreign) - GAPS_NAMED} more" if
                                                    len(foreign) > GAPS_NAMED else "")
        message += (f"; in {facts.archive_url} above timeline {facts.server.timeline}: {shown}. Another server "
                    "(a promoted copy or a restored clone?) archives into this place: stop its archiving or give it "
                    "its own pitr target, or recovery will follow its timeline")
    return _finding(facts, CHECK_TIMELINE, False, PAGE, message, **details)


def check_backlog(facts: ArchiveFacts, tz: dt.tzinfo) -> Finding:
    s = facts.server
    t = facts.target
    details: dict[str, Any] = {"ready": s.ready, "warn_at": BACKLOG_WARN, "oldest_ready": s.oldest_ready}
    if s.ready is None:
        message = (f"cannot read the .ready backlog of {t}: pg_ls_archive_statusdir() needs superuser or the "
                   f"pg_monitor role (GRANT pg_monitor TO {s.role}); the server said: {s.ready_error}")
        return _finding(facts, CHECK_BACKLOG, False, WARN, message, **details)
    message = f"{s.ready} WAL file(s) of {t} wait to be archived (.ready; warning at {BACKLOG_WARN})"
    if s.ready:
        message += f", the oldest {s.oldest_ready} since {fmt_time(s.oldest_ready_since, tz)}"
    return _finding(facts, CHECK_BACKLOG, s.ready < BACKLOG_WARN, WARN, message, **details)


def check_behind(facts: ArchiveFacts, newest: wal.ArchivedWal | None) -> Finding:
    pos = facts.server.current_position
    t = facts.target
    if pos is None:
        return _finding(facts, CHECK_BEHIND, True, WARN, f"{t} is in recovery: no current WAL position to compare "
                        "with S3")
    current = wal.Segment(pos // wal.SEGMENT_SIZE, facts.server.timeline)
    if newest is None:
        return _finding(facts, CHECK_BEHIND, True, WARN, f"{t} writes {current.name()}; no segment in S3 to "
                        "compare with", current_segment=current.name())
    behind = current.segno - newest.segment.segno - 1
    details = {"current_segment": current.name(), "newest_archived": newest.name, "segments_behind": behind,
               "warn_at": BACKLOG_WARN}
    message = (f"{t} writes {current.name()}: {max(behind, 0)} complete segment(s) after the newest in S3 "
               f"({newest.name}; warning at {BACKLOG_WARN})")
    return _finding(facts, CHECK_BEHIND, behind < BACKLOG_WARN, WARN, message, **details)


# --- the task --------------------------------------------------------------------------------------


def check_and_alert(server: PgConn, client, cfg: Config, target: str, now: dt.datetime, *,
                    credentials: Mapping[str, str | None], catalog: psycopg.Connection,
                    slack: Callable[[str], None], pagerduty: Callable[[dict[str, Any]], None],
                    run: Callable[..., subprocess.CompletedProcess] = subprocess.run) -> dict[str, Any]:
    """One run for one target: check, alert what changed (state in ``monitor_alerts``), then raise
    :class:`ArchiveCheckFailed` when a page-level check fails. Returns the facts and the findings."""
    result = check_archive(server, client, cfg, target, now, credentials=credentials, run=run)
    delivered = alerts.deliver(catalog, result.findings, now, slack=slack, pagerduty=pagerduty,
                               source=alert_source(target))
    if result.failing_pages:
        raise ArchiveCheckFailed(f"WAL archive check of {target}: " + "; ".join(
            f"[{f.check}] {f.message}" for f in result.failing_pages))
    return {"target": target, "evaluated_at": now.isoformat(), "facts": result.facts.to_dict(),
            "findings": [f.to_dict() for f in result.findings], "sent": delivered["sent"]}
