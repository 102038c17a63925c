"""WAL segments, the archive's S3 layout, and the Barman cloud tool command lines.

Airflow-free. The archive is written by ``barman-cloud-wal-archive`` on the database host (our
``archive_command``) in Barman's layout and read back by ``barman-cloud-wal-restore`` (our
``restore_command``); this module only names, lists and reasons about what is there:

    s3://{bucket}/{prefix}/{pitr.wal_prefix}/{target}/wals/{TTTTTTTTLLLLLLLL}/{segment}[.gz|.bz2|.xz]
    s3://{bucket}/{prefix}/{pitr.wal_prefix}/{target}/wals/{TTTTTTTT}.history[.gz]

A segment name is TTTTTTTTLLLLLLLLSSSSSSSS (timeline, log, segment; hex). With the default 16 MiB
segments there are 256 segments per log: the segment part runs 00000000..000000FF.
"""

from __future__ import annotations

import datetime as dt
import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from pg_dataops.common.config import Config

SEGMENT_SIZE = 16 * 1024 * 1024  # PostgreSQL's default wal_segment_size; initdb --wal-segsize changes it
_SEGMENT_RE = re.compile(r"^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})$")
_HISTORY_RE = re.compile(r"^([0-9A-F]{8})\.history$")
_COMPRESSION_SUFFIXES = (".gz", ".bz2", ".xz", ".zst", ".lz4", ".snappy")
COMPRESSION_FLAGS = {"gzip": ["--gzip"], "bzip2": ["--bzip2"], "xz": ["--xz"], "none": []}


def segments_per_log(segment_size: int = SEGMENT_SIZE) -> int:
    return 0x100000000 // segment_size


@dataclass(frozen=True, order=True)
class Segment:
    """One WAL segment: ordered by position (``segno``) first, then timeline."""

    segno: int  # absolute segment number: log * segments_per_log + seg
    timeline: int

    @classmethod
    def parse(cls, name: str, segment_size: int = SEGMENT_SIZE) -> Segment:
        m = _SEGMENT_RE.match(name)
        if not m:
            raise ValueError(f"{name!r} is not a WAL segment name")
        tli, log, seg = (int(g, 16) for g in m.groups())
        return cls(segno=log * segments_per_log(segment_size) + seg, timeline=tli)

    @classmethod
    def from_lsn(cls, lsn: str, timeline: int, segment_size: int = SEGMENT_SIZE) -> Segment:
        """The segment holding ``lsn`` ('16/B374D848')."""
        return cls(segno=parse_lsn(lsn) // segment_size, timeline=timeline)

    def name(self, segment_size: int = SEGMENT_SIZE) -> str:
        per = segments_per_log(segment_size)
        return f"{self.timeline:08X}{self.segno // per:08X}{self.segno % per:08X}"

    def on_timeline(self, timeline: int) -> Segment:
        return Segment(self.segno, timeline)


def parse_lsn(lsn: str) -> int:
    """'16/B374D848' -> the byte position."""
    m = re.fullmatch(r"([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})", lsn.strip())
    if not m:
        raise ValueError(f"{lsn!r} is not an LSN (like 0/3000028)")
    return (int(m.group(1), 16) << 32) | int(m.group(2), 16)


def format_lsn(pos: int) -> str:
    return f"{pos >> 32:X}/{pos & 0xFFFFFFFF:X}"


def is_segment_name(name: str) -> bool:
    return bool(_SEGMENT_RE.match(name))


def strip_compression(name: str) -> str:
    for suffix in _COMPRESSION_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


# --- the archive in S3 ---------------------------------------------------------------------------------

def archive_url(cfg: Config) -> str:
    """The ``destination_url`` / ``source_url`` the Barman tools take (the target name is their server name)."""
    return f"s3://{cfg.bucket}/{cfg.prefix}/{cfg.pitr.wal_prefix}"


def archive_prefix(cfg: Config, target: str) -> str:
    """The S3 key prefix under which a target's WAL lives (ends with '/')."""
    return f"{cfg.prefix}/{cfg.pitr.wal_prefix}/{target}/wals/"


def base_backup_prefix(cfg: Config, target: str) -> str:
    """The S3 key prefix of a target's base backups (ends with '/'): {prefix}/{backup_id}/..."""
    return f"{cfg.prefix}/{cfg.pitr.base_prefix}/{target}/"


@dataclass(frozen=True)
class ArchivedWal:
    """One object of the archive: a segment (``segment`` set) or a timeline history file."""

    key: str
    name: str  # without the compression suffix
    size: int
    last_modified: dt.datetime
    segment: Segment | None  # None for history and other files (.partial, .backup)


def list_archive(client, bucket: str, prefix: str) -> list[ArchivedWal]:
    """Every object under a target's ``wals/`` prefix, segments sorted by position; raises ClientError."""
    out: list[ArchivedWal] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            name = strip_compression(obj["Key"].rsplit("/", 1)[-1])
            seg = Segment.parse(name) if is_segment_name(name) else None
            out.append(ArchivedWal(obj["Key"], name, obj["Size"], obj["LastModified"], seg))
    out.sort(key=lambda w: (w.segment is None, w.segment or Segment(0, 0), w.name))
    return out


def segments(archive: Iterable[ArchivedWal]) -> list[ArchivedWal]:
    return [w for w in archive if w.segment is not None]


@dataclass(frozen=True)
class Gap:
    """Segments missing from the archive: positions ``first``..``last`` (inclusive)."""

    first: Segment
    last: Segment

    @property
    def count(self) -> int:
        return self.last.segno - self.first.segno + 1

    def describe(self) -> str:
        if self.count == 1:
            return self.first.name()
        return f"{self.first.name()}..{self.last.name()} ({self.count} segments)"


def find_gaps(present: Iterable[Segment], start: Segment, end: Segment | None = None) -> list[Gap]:
    """Positions from ``start`` to ``end`` (default: the newest present) held by no timeline.

    A timeline switch continues the sequence on the new timeline at the switch segment, so any
    timeline's copy of a position counts. Missing positions are named on the timeline of the segment
    before them (the one recovery would ask for)."""
    by_pos: dict[int, int] = {}
    for s in present:
        if s.segno >= start.segno:
            by_pos[s.segno] = max(by_pos.get(s.segno, 0), s.timeline)
    if not by_pos:  # nothing from start on: everything up to end (or start itself) is missing
        return [Gap(start, (end or start).on_timeline(start.timeline))]
    last_pos = end.segno if end is not None else max(by_pos)
    gaps: list[Gap] = []
    tli = start.timeline
    pos = start.segno
    while pos <= last_pos:
        if pos in by_pos:
            tli = by_pos[pos]
            pos += 1
            continue
        first = pos
        while pos <= last_pos and pos not in by_pos:
            pos += 1
        gaps.append(Gap(Segment(first, tli), Segment(pos - 1, tli)))
    return gaps


def newest_segment(archive: Iterable[ArchivedWal]) -> ArchivedWal | None:
    segs = segments(archive)
    return max(segs, key=lambda w: (w.segment, w.last_modified)) if segs else None


# --- the Barman cloud tools ----------------------------------------------------------------------------

def _cloud_args(endpoint_url: str | None) -> list[str]:
    args = ["--cloud-provider", "aws-s3"]
    if endpoint_url:
        args += ["--endpoint-url", endpoint_url]
    return args


def archive_command_argv(cfg: Config, target: str, *, endpoint_url: str | None = None,
                         sse: str | None = None) -> list[str]:
    """``archive_command`` as an argument list ending in '%p' (see :func:`archive_command`)."""
    argv = [f"{cfg.pitr.wal_tools_bin}/barman-cloud-wal-archive", *_cloud_args(endpoint_url),
            *COMPRESSION_FLAGS[cfg.pitr.wal_compression]]
    sse = cfg.sse if sse is None else sse
    if sse:
        argv += ["--encryption", sse]
        if sse == "aws:kms" and cfg.kms_key_id:
            argv += ["--sse-kms-key-id", cfg.kms_key_id]
    return [*argv, archive_url(cfg), target, "%p"]


def restore_command_argv(cfg: Config, target: str, *, endpoint_url: str | None = None,
                         spool_dir: str | None = None, parallel: int = 0) -> list[str]:
    """``restore_command`` as an argument list ending in '%f' '%p'.

    ``parallel`` > 0 prefetches that many following segments into ``spool_dir`` in one call
    (one process per segment costs ~0.6 s; a day of idle WAL is ~1,440 segments)."""
    argv = [f"{cfg.pitr.wal_tools_bin}/barman-cloud-wal-restore", *_cloud_args(endpoint_url)]
    if parallel:
        argv += ["--parallel", str(parallel)]
        if spool_dir:
            argv += ["--spool-dir", spool_dir]
    return [*argv, archive_url(cfg), target, "%f", "%p"]


def check_archive_argv(cfg: Config, target: str, *, endpoint_url: str | None = None,
                       timeline: int | None = None) -> list[str]:
    argv = [f"{cfg.pitr.wal_tools_bin}/barman-cloud-check-wal-archive", *_cloud_args(endpoint_url)]
    if timeline is not None:
        argv += ["--timeline", str(timeline)]
    return [*argv, archive_url(cfg), target]


def command_line(argv: Sequence[str]) -> str:
    """An argument list as one shell-quoted line for postgresql.conf (PostgreSQL runs it with sh -c);
    %p and %f stay unquoted placeholders (PostgreSQL substitutes them before the shell sees them)."""
    return " ".join(a if a in ("%p", "%f") else shlex.quote(a) for a in argv)


def conf_literal(value: str) -> str:
    """A postgresql.conf string literal: single quotes, with embedded quotes doubled."""
    return "'" + value.replace("'", "''") + "'"


def archiving_settings(cfg: Config, target: str, *, endpoint_url: str | None = None) -> dict[str, str]:
    """The postgresql.conf settings of a database host whose WAL we archive (values ready to write)."""
    return {
        "wal_level": "replica",
        "archive_mode": "on",
        "archive_command": conf_literal(command_line(archive_command_argv(cfg, target, endpoint_url=endpoint_url))),
        "archive_timeout": str(cfg.pitr.archive_timeout_seconds),
    }


def aws_env(credentials: Mapping[str, str | None]) -> dict[str, str]:
    """The environment the Barman tools read credentials from (never the command line, never the conf):
    ``credentials`` has access_key, secret_key, token (None when absent)."""
    env = {}
    if credentials.get("access_key"):
        env["AWS_ACCESS_KEY_ID"] = credentials["access_key"]
    if credentials.get("secret_key"):
        env["AWS_SECRET_ACCESS_KEY"] = credentials["secret_key"]
    if credentials.get("token"):
        env["AWS_SESSION_TOKEN"] = credentials["token"]
    if credentials.get("region"):
        env["AWS_DEFAULT_REGION"] = credentials["region"]
    return env
