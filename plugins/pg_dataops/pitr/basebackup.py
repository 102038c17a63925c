"""One base backup: pg_basebackup's tar stream, zstd-compressed, hashed, encrypted and uploaded while written.

Airflow-free. :func:`take_base_backup` is the whole job; the S3 contract it writes is
:mod:`pg_dataops.pitr.inventory`'s (``base.tar.zst[.age]``, then ``manifest.json`` last).

The pipeline, bounded memory whatever the database size::

    pg_basebackup -D - -Ft -X fetch  ->  [reader thread: TarScanner]  ->  zstd -c  ->  stream_to_file
                                         captures backup_manifest,                   (SHA-256, age,
                                         backup_label, global/pg_control              spool file,
                                                                                      multipart upload)

Compression is on the worker (zstd), not the server's ``--compress=server-...``: pg_basebackup
refuses to inject its backup_manifest into a server-compressed tar on stdout ("cannot inject
manifest into a compressed tar file"), and without the manifest ``pg_verifybackup`` cannot check a
restore. With ``-X fetch`` the tar holds the WAL from start to stop, so the backup alone is
consistent; recovery past its end needs the archived WAL.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import re
import shutil
import struct
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from botocore.exceptions import BotoCoreError, ClientError

from pg_dataops.common import age, s3, sqlfiles, wal
from pg_dataops.common import pg as pgtools
from pg_dataops.common.age import encryption_block
from pg_dataops.common.config import Config
from pg_dataops.common.errors import BackupError, ClientVersionError, PermanentError, redact
from pg_dataops.common.stream import CHUNK, StderrTail, stream_to_file, widen_pipe
from pg_dataops.pitr import inventory

log = logging.getLogger(__name__)

TAR_BLOCK = 512
BACKUP_MANIFEST = "backup_manifest"
BACKUP_LABEL = "backup_label"
PG_CONTROL = "global/pg_control"
# Members kept in memory as they pass, with the most we accept of each. A backup_manifest is about
# 200 bytes per file of the cluster: 256 MiB is over a million files.
CAPTURE_LIMITS = {BACKUP_MANIFEST: 256 * 1024 * 1024, BACKUP_LABEL: 64 * 1024, PG_CONTROL: 64 * 1024}
EXIT_GRACE = 60  # seconds pg_basebackup and zstd may take to exit once their output is complete
STDERR_GRACE = 10


class BaseBackupFailed(BackupError):
    """The base backup could not be taken; ``phase`` says where (preflight, stream, upload, manifest)."""

    def __init__(self, message: str, phase: str = "stream"):
        super().__init__(message)
        self.phase = phase


class PreflightRefused(BaseBackupFailed, PermanentError):
    """The server, the role, the tools or the bucket cannot make a usable base backup; nothing was started."""

    def __init__(self, message: str):
        super().__init__(message, phase="preflight")


class TarStreamError(BaseBackupFailed):
    """pg_basebackup's output is not the tar stream expected (damaged, truncated, too large a member)."""


# --- the tar stream --------------------------------------------------------------------------------


def _tar_number(field_bytes: bytes) -> int:
    """A tar header number: octal text, or GNU base-256 (high bit set) for sizes of 8 GiB and more."""
    if field_bytes and field_bytes[0] & 0x80:
        value = field_bytes[0] & 0x3F
        for b in field_bytes[1:]:
            value = (value << 8) | b
        return -value if field_bytes[0] & 0x40 else value
    text = field_bytes.split(b"\0", 1)[0].strip(b" \0")
    if not text:
        return 0
    try:
        return int(text, 8)
    except ValueError:
        raise TarStreamError(f"not a tar header: number field {bytes(field_bytes)!r}") from None


def _cstring(field_bytes: bytes) -> str:
    return field_bytes.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _normalize(name: str) -> str:
    while name.startswith("./"):
        name = name[2:]
    return name


def _pax_path(payload: bytes) -> str | None:
    """The ``path`` record of a pax extended header ("<len> path=<name>\\n" records)."""
    pos = 0
    path = None
    while pos < len(payload):
        space = payload.find(b" ", pos)
        if space < 0:
            break
        try:
            length = int(payload[pos:space])
        except ValueError:
            raise TarStreamError("malformed pax extended header") from None
        if length <= 0:
            raise TarStreamError("malformed pax extended header")
        record = payload[space + 1:pos + length]
        key, _, value = record.partition(b"=")
        if key == b"path":
            path = value.rstrip(b"\n").decode("utf-8", "surrogateescape")
        pos += length
    return path


class TarScanner:
    """Walks a ustar stream as it passes, without buffering it: counts members and keeps the contents of
    the members named in ``capture`` (name -> most bytes accepted).

    Tolerates pax (``x``/``g``) and GNU long-name (``L``/``K``) headers and base-256 sizes. A header whose
    checksum is wrong, a stream that ends inside a member or before the end-of-archive blocks, and a
    captured member larger than its limit raise :class:`TarStreamError`.
    """

    _META = {b"x", b"g", b"L", b"K"}
    _META_LIMIT = 1024 * 1024

    def __init__(self, capture: Mapping[str, int]):
        self.limits = dict(capture)
        self.captured: dict[str, bytes] = {}
        self.members = 0  # regular files
        self.size = 0  # bytes seen
        self.ended = False
        self._header = bytearray()
        self._remaining = 0
        self._padding = 0
        self._sink: bytearray | None = None
        self._sink_name: str | None = None
        self._meta_kind: bytes | None = None
        self._next_name: str | None = None
        self._member: str | None = None

    def feed(self, data) -> None:
        view = memoryview(data).cast("B")
        self.size += len(view)
        while len(view):
            if self._remaining:
                take = min(len(view), self._remaining)
                if self._sink is not None:
                    self._sink += view[:take]
                view = view[take:]
                self._remaining -= take
                if not self._remaining:
                    self._end_member()
            elif self._padding:
                take = min(len(view), self._padding)
                view = view[take:]
                self._padding -= take
            elif self.ended:
                return  # blocks after the end-of-archive marker: zero padding
            else:
                take = TAR_BLOCK - len(self._header)
                self._header += view[:take]
                view = view[take:]
                if len(self._header) == TAR_BLOCK:
                    header = bytes(self._header)
                    self._header.clear()
                    self._on_header(header)

    def skippable(self) -> int:
        """Bytes that may pass unseen now: data of a member not captured, or padding (see :meth:`skip`)."""
        if self._remaining:
            return self._remaining if self._sink is None and self._meta_kind is None else 0
        return self._padding

    def skip(self, n: int) -> None:
        """``n`` bytes (at most :meth:`skippable`) passed without being looked at."""
        if not 0 < n <= self.skippable():
            raise ValueError(f"cannot skip {n} bytes here ({self.skippable()} may be skipped)")
        self.size += n
        if self._remaining:
            self._remaining -= n
            if not self._remaining:
                self._end_member()
        else:
            self._padding -= n

    def readable(self) -> int:
        """How much to read before the stream may be skipped again: the rest of a header or of a captured member."""
        if self.ended:
            return CHUNK
        return self._remaining or self._padding or TAR_BLOCK - len(self._header)

    def _on_header(self, header: bytes) -> None:
        if header == bytes(TAR_BLOCK):
            self.ended = True  # end of archive (tar writes two zero blocks; one is enough to know)
            return
        stored = _tar_number(header[148:156])
        computed = sum(header[:148]) + 8 * 32 + sum(header[156:])
        if stored != computed:
            raise TarStreamError(f"tar header checksum mismatch after {self.members} members "
                                 f"(offset {self.size}): the stream is damaged or not a tar")
        name = _cstring(header[0:100])
        if header[257:262] == b"ustar" and header[345:500].strip(b"\0"):
            name = _cstring(header[345:500]) + "/" + name
        typeflag = header[156:157]
        size = _tar_number(header[124:136])
        if size < 0:
            raise TarStreamError(f"tar member {name!r} has a negative size")
        self._remaining, self._padding = size, (-size) % TAR_BLOCK
        self._sink, self._sink_name, self._meta_kind = None, None, None
        if typeflag in self._META:
            if size > self._META_LIMIT:
                raise TarStreamError(f"tar extended header of {size} bytes is more than we read")
            self._meta_kind, self._sink = typeflag, bytearray()
        else:
            if self._next_name is not None:
                name, self._next_name = self._next_name, None
            name = _normalize(name)
            self._member = name
            if typeflag in (b"0", b"\0", b"7"):
                self.members += 1
                if name in self.limits:
                    if size > self.limits[name]:
                        raise TarStreamError(f"{name} in pg_basebackup's tar is {size} bytes, more than the "
                                             f"{self.limits[name]} we keep in memory")
                    self._sink, self._sink_name = bytearray(), name
        if not size:
            self._end_member()

    def _end_member(self) -> None:
        if self._meta_kind is not None:
            payload = bytes(self._sink or b"")
            if self._meta_kind == b"x":
                path = _pax_path(payload)
                if path is not None:
                    self._next_name = path
            elif self._meta_kind == b"L":
                self._next_name = payload.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
        elif self._sink_name is not None:
            self.captured[self._sink_name] = bytes(self._sink)
        self._sink, self._sink_name, self._meta_kind = None, None, None

    def close(self) -> None:
        """The stream ended: it must have ended where a tar ends."""
        if self._remaining or self._header or self._padding:
            where = f"inside member {self._member!r}" if self._remaining else "inside a header"
            raise TarStreamError(f"pg_basebackup's tar stream was cut off {where} after {self.size} bytes")
        if not self.ended:
            raise TarStreamError(f"pg_basebackup's tar stream has no end-of-archive marker after {self.size} "
                                 "bytes: it was cut off")


# --- what the backup says about itself ---------------------------------------------------------------


def parse_backup_label(text: str) -> dict[str, Any]:
    """backup_label's START WAL LOCATION, CHECKPOINT LOCATION, START TIME, LABEL and START TIMELINE."""
    out: dict[str, Any] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(": ")
        if not sep:
            continue
        key, value = key.strip(), value.strip()
        if key == "START WAL LOCATION":
            m = re.match(r"([0-9A-Fa-f]+/[0-9A-Fa-f]+) \(file ([0-9A-F]{24})\)", value)
            if not m:
                raise BaseBackupFailed(f"backup_label: cannot read START WAL LOCATION {value!r}")
            out["start_lsn"], out["start_wal"] = m.group(1), m.group(2)
        elif key == "CHECKPOINT LOCATION":
            out["checkpoint_lsn"] = value
        elif key == "START TIME":
            out["start_time"] = value
        elif key == "LABEL":
            out["label"] = value
        elif key == "START TIMELINE":
            out["timeline"] = int(value)
    missing = [k for k in ("start_lsn", "start_wal", "timeline") if k not in out]
    if missing:
        raise BaseBackupFailed(f"backup_label lacks {', '.join(missing)}")
    return out


def manifest_checksum_ok(raw: bytes) -> tuple[str, bool]:
    """(Manifest-Checksum, whether it is the SHA-256 of the manifest up to its last line), as pg_verifybackup
    checks it: the checksum covers every byte before the line that holds it."""
    m = re.search(rb'\n"Manifest-Checksum": "([0-9a-f]{64})"}\s*$', raw)
    if not m:
        raise BaseBackupFailed("backup_manifest has no Manifest-Checksum line")
    covered = raw[:m.start() + 1]
    return m.group(1).decode(), hashlib.sha256(covered).hexdigest() == m.group(1).decode()


def read_backup_manifest(raw: bytes) -> dict[str, Any]:
    """The facts of pg_basebackup's backup_manifest: its checksum (proven), WAL ranges, files and their size."""
    checksum, ok = manifest_checksum_ok(raw)
    if not ok:
        raise BaseBackupFailed("backup_manifest's Manifest-Checksum does not match its contents: damaged in transit")
    try:
        doc = json.loads(raw)
        files = doc["Files"]
        ranges = [{"timeline": int(r["Timeline"]), "start_lsn": r["Start-LSN"], "end_lsn": r["End-LSN"]}
                  for r in doc["WAL-Ranges"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise BaseBackupFailed(f"backup_manifest is not pg_basebackup's JSON manifest: {exc}") from None
    if not ranges:
        raise BaseBackupFailed("backup_manifest has no WAL-Ranges")
    return {"checksum": checksum, "files": len(files), "size": sum(int(f.get("Size", 0)) for f in files),
            "bytes": len(raw), "version": doc.get("PostgreSQL-Backup-Manifest-Version"), "wal_ranges": ranges}


def control_system_identifier(pg_control: bytes) -> str:
    """ControlFileData starts with the uint64 system identifier (the server's byte order; little-endian
    on every platform we run). Used when the role may not call pg_control_system()."""
    if len(pg_control) < 8:
        raise BaseBackupFailed("global/pg_control in the backup is too short")
    return str(struct.unpack("<Q", pg_control[:8])[0])


_START_RE = re.compile(r"write-ahead log start point: ([0-9A-F]+/[0-9A-F]+) on timeline (\d+)")
_END_RE = re.compile(r"write-ahead log end point: ([0-9A-F]+/[0-9A-F]+)")


def parse_pg_basebackup_log(lines: Sequence[str]) -> dict[str, Any]:
    """What ``pg_basebackup -v`` said about the WAL range (cross-checked against the manifest)."""
    out: dict[str, Any] = {}
    for line in lines:
        if m := _START_RE.search(line):
            out["start_lsn"], out["timeline"] = m.group(1), int(m.group(2))
        elif m := _END_RE.search(line):
            out["stop_lsn"] = m.group(1)
    return out


def iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def build_manifest(*, cfg: Config, target: str, bid: str, facts: ServerFacts, label: dict[str, Any],
                   bmanifest: dict[str, Any], system_identifier: str, start_time: dt.datetime,
                   stop_time: dt.datetime, archive: dict[str, Any], argv: Sequence[str],
                   recipients: Sequence[str], pg_basebackup_version: str, timings: dict[str, Any]) -> dict[str, Any]:
    """manifest.json of one base backup (the contract in :mod:`pg_dataops.pitr.inventory`)."""
    ranges = bmanifest["wal_ranges"]
    seg = facts.wal_segment_size
    timeline = label["timeline"]
    start_lsn, stop_lsn = ranges[0]["start_lsn"], ranges[-1]["end_lsn"]
    if wal.parse_lsn(start_lsn) != wal.parse_lsn(label["start_lsn"]):
        raise BaseBackupFailed(f"backup_label starts at {label['start_lsn']} but backup_manifest at {start_lsn}")
    start_wal = wal.Segment.from_lsn(start_lsn, timeline, seg).name(seg)
    if start_wal != label["start_wal"]:
        raise BaseBackupFailed(f"backup_label names {label['start_wal']} but the start LSN is in {start_wal}")
    stop_wal = wal.Segment.from_lsn(stop_lsn, ranges[-1]["timeline"], seg).name(seg)
    doc = {
        "kind": inventory.KIND,
        "version": 1,
        "target": target,
        "backup_id": bid,
        "server_version": facts.server_version,
        "server_version_num": facts.server_version_num,
        "system_identifier": system_identifier,
        "timeline": timeline,
        "start_lsn": start_lsn,
        "stop_lsn": stop_lsn,
        "start_wal": start_wal,
        "stop_wal": stop_wal,
        "wal_segment_size": seg,
        "checkpoint_lsn": label.get("checkpoint_lsn"),
        "start_time": iso(start_time),
        "stop_time": iso(stop_time),
        "duration_seconds": timings["duration_seconds"],
        "archive": archive,
        "backup_manifest": {k: bmanifest[k] for k in ("checksum", "files", "size", "bytes", "version")},
        "wal_ranges": ranges,
        "database_size": facts.database_size,
        "encryption": encryption_block(recipients),
        "pg_basebackup": {"argv": list(argv), "version": pg_basebackup_version},
        "timings": timings,
        "bucket": cfg.bucket,
        "created_by": "pg_dataops pg_base_backup",
    }
    return inventory.check_manifest(doc, bid, target)


# --- preflight --------------------------------------------------------------------------------------


@dataclass
class ServerFacts:
    server_version: str
    server_version_num: int
    wal_level: str
    archive_mode: str
    max_wal_senders: int
    wal_segment_size: int
    superuser: bool
    replication: bool
    role_name: str
    system_identifier: str | None
    database_size: int
    server_now: dt.datetime
    tablespaces: list[tuple[str, str]] = field(default_factory=list)

    @property
    def major(self) -> int:
        return self.server_version_num // 10000


def read_server_facts(pg: psycopg.Connection) -> ServerFacts:
    row = pg.execute(sqlfiles.text("pitr/base_server_facts.sql")).fetchone()
    if row is None:
        raise PreflightRefused("cannot read the connecting role from pg_roles")
    (version, version_num, wal_level, archive_mode, senders, seg_size, superuser, replication, role,
     can_read_control, server_now) = row
    sysid = pg.execute(sqlfiles.text("pitr/base_system_identifier.sql")).fetchone()[0] if can_read_control else None
    size = pg.execute(sqlfiles.text("pitr/base_database_size.sql")).fetchone()[0]
    spaces = [(r[0], r[1]) for r in pg.execute(sqlfiles.text("pitr/base_user_tablespaces.sql")).fetchall()]
    return ServerFacts(version.split()[0], int(version_num), wal_level, archive_mode, int(senders), int(seg_size),
                       bool(superuser), bool(replication), role, sysid, int(size), server_now, spaces)


def check_server(facts: ServerFacts, conn: pgtools.PgConn) -> None:
    """PreflightRefused naming the first reason this server cannot give a base backup fit for PITR."""
    where = f"{conn.host}:{conn.port}"
    if facts.tablespaces:
        names = ", ".join(f"{n} ({loc})" for n, loc in facts.tablespaces)
        raise PreflightRefused(f"the server at {where} has user tablespaces ({names}): pg_basebackup's tar on "
                               "stdout carries one tablespace only; refusing a base backup that would miss them")
    if facts.wal_level not in ("replica", "logical"):
        raise PreflightRefused(f"wal_level is {facts.wal_level!r} on {where}: a base backup and WAL archiving "
                               "need 'replica' (set wal_level = replica and restart)")
    if facts.archive_mode not in ("on", "always"):
        raise PreflightRefused(f"archive_mode is {facts.archive_mode!r} on {where}: a base backup without "
                               "archived WAL cannot recover to a point in time (set archive_mode = on and "
                               "archive_command; see the PITR settings in the README)")
    if not (facts.superuser or facts.replication):
        raise PreflightRefused(f"role {facts.role_name!r} on {where} is neither superuser nor has the REPLICATION "
                               f"attribute: pg_basebackup needs it (ALTER ROLE {facts.role_name} REPLICATION) and a "
                               "'replication' line in pg_hba.conf")
    if facts.max_wal_senders < 1:
        raise PreflightRefused(f"max_wal_senders is 0 on {where}: pg_basebackup needs a WAL sender")


def check_client(facts: ServerFacts, pg_bin_root: str) -> tuple[str, str]:
    """(pg_basebackup path, its version) of the server's major version, or PreflightRefused."""
    try:
        path = pgtools.client_binary("pg_basebackup", facts.major, pg_bin_root)
        version = pgtools.binary_version(path)
    except ClientVersionError as exc:
        raise PreflightRefused(str(exc)) from None
    m = re.search(r"\(PostgreSQL\) (\d+)", version)
    major = int(m.group(1)) if m else None
    if major != facts.major:
        raise PreflightRefused(f"{path} is PostgreSQL {major}, the server is {facts.major}: a base backup needs "
                               f"pg_basebackup of the server's major version")
    return path, version


def zstd_binary() -> str:
    path = shutil.which("zstd")
    if path is None:
        raise PreflightRefused("zstd is not installed on this worker: apt-get install zstd")
    return path


def check_folder_free(client, cfg: Config, folder: str) -> None:
    try:
        resp = client.list_objects_v2(Bucket=cfg.bucket, Prefix=folder, MaxKeys=1)
    except (ClientError, BotoCoreError) as exc:
        raise BaseBackupFailed(f"cannot list s3://{cfg.bucket}/{folder}: {s3.describe_error(exc)}",
                               phase="preflight") from None
    if resp.get("KeyCount", len(resp.get("Contents", []))):
        raise PreflightRefused(f"s3://{cfg.bucket}/{folder} already holds objects; refusing to write a base "
                               "backup into it")


# --- the run ----------------------------------------------------------------------------------------


def pg_basebackup_argv(binary: str, conn: pgtools.PgConn, label: str) -> list[str]:
    """No password, no secret: libpq reads those from the environment (PgConn.client_tool_env)."""
    return [binary, "-h", conn.host, "-p", str(conn.port), "-U", conn.user, "--no-password", "-D", "-", "-Ft",
            "-X", "fetch", "-c", "fast", "--label", label, "-v"]


def zstd_argv(binary: str, level: int, workers: int) -> list[str]:
    return [binary, "-q", f"-{level}", f"-T{workers}", "-c"]


# os.splice moves pipe data inside the kernel: the gigabytes of relation files and WAL in pg_basebackup's
# tar go to zstd without a copy through this process, which only reads the tar headers and the members it
# keeps (measured on 1 GB: the Python copy cost ~0.4 s of 3 s). Linux; elsewhere every byte is read.
SPLICE = hasattr(os, "splice")


class _Feeder(threading.Thread):
    """pg_basebackup's stdout, through the TarScanner, into zstd's stdin; closes zstd's stdin at the end."""

    def __init__(self, source, sink, scanner: TarScanner, *, splice: bool = SPLICE):
        super().__init__(daemon=True, name="basebackup-feeder")
        self.source, self.sink, self.scanner, self.splice = source, sink, scanner, splice
        self.error: BaseException | None = None
        self.bytes = 0
        self.eof_at: float | None = None  # time.monotonic() when pg_basebackup's output ended

    def run(self) -> None:
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        src, dst = self.source.fileno(), self.sink.fileno()
        try:
            while True:
                skip = self.scanner.skippable() if self.splice else 0
                if skip:
                    n = os.splice(src, dst, min(skip, CHUNK))
                    if not n:
                        break
                    self.scanner.skip(n)
                else:
                    want = min(self.scanner.readable(), CHUNK) if self.splice else CHUNK
                    n = self.source.readinto(view[:want])
                    if not n:
                        break
                    chunk = view[:n]
                    self.scanner.feed(chunk)
                    done = 0
                    while done < n:
                        done += self.sink.write(chunk[done:]) or 0
                self.bytes += n
            self.eof_at = time.monotonic()
        except BaseException as exc:  # reported by the main thread
            self.error = exc
        finally:
            try:
                self.sink.close()
            except OSError:
                pass


@dataclass
class _Run:
    bb: subprocess.Popen | None = None
    zstd: subprocess.Popen | None = None
    feeder: _Feeder | None = None
    uploader: Any = None
    spool: str | None = None
    completed_key: str | None = None  # the archive object, once S3 assembled it

    def kill(self) -> None:
        for proc in (self.bb, self.zstd):
            if proc is not None and proc.poll() is None:
                proc.kill()
        for proc in (self.bb, self.zstd):
            if proc is not None:
                try:
                    proc.wait(EXIT_GRACE)
                except subprocess.TimeoutExpired:
                    log.warning("pid %s did not exit after SIGKILL", proc.pid)
        if self.feeder is not None:
            self.feeder.join(EXIT_GRACE)


def take_base_backup(cfg: Config, target_name: str, pg: pgtools.PgConn, client, *, recipients: Sequence[str],
                     spool_dir: str, now: dt.datetime | None = None) -> dict[str, Any]:
    """Take a base backup of ``target_name``'s server (``pg``) into S3; returns its manifest doc.

    Preflight (nothing started, nothing written, :class:`PreflightRefused` naming the cause): the
    pg_basebackup client of the server's major version, zstd (and age with ``recipients``), no user
    tablespaces, wal_level replica or logical, archive_mode on, a superuser or REPLICATION role, the
    bucket, and a free backup folder. Then pg_basebackup streams into
    ``{folder}base.tar.zst[.age]`` (multipart, SHA-256 per part and whole), the object is proven
    against the digest, and ``manifest.json`` is written last. On any failure the children are
    killed, the multipart upload aborted, the spool file removed, and no manifest.json exists.

    ``now`` names the backup (``backup_id``); default: the server's clock at preflight.
    """
    started = time.monotonic()
    try:
        recipients = age.check_recipients(recipients)
    except ValueError as exc:
        raise PreflightRefused(str(exc)) from None
    if recipients:
        try:
            age.binary("age")
        except age.EncryptionError as exc:
            raise PreflightRefused(str(exc)) from None
    zstd = zstd_binary()
    session = pgtools.connect(pg, autocommit=True)
    try:
        facts = read_server_facts(session)
    finally:
        session.close()
    check_server(facts, pg)
    bb_path, bb_version = check_client(facts, cfg.pg_bin_root)
    s3.check_bucket(client, cfg.bucket)
    bid = inventory.backup_id(target_name, now or facts.server_now)
    folder = inventory.backup_folder(cfg, target_name, bid)
    check_folder_free(client, cfg, folder)
    file = inventory.ARCHIVE_FILE + (age.SUFFIX if recipients else "")
    key = folder + file
    try:
        os.makedirs(spool_dir, exist_ok=True)
    except OSError as exc:
        raise PreflightRefused(f"cannot create the spool directory {spool_dir}: {exc.strerror}") from None
    _remove_stale_spool(spool_dir, target_name)
    run = _Run(spool=os.path.join(spool_dir, f"{bid}.{file}.partial"))
    run.uploader = s3.StreamingUpload(client, cfg.bucket, key, storage_class=cfg.storage_class, sse=cfg.sse,
                                      kms_key_id=cfg.kms_key_id, metadata={"pgdataops-backup-id": bid})
    preflight_seconds = time.monotonic() - started
    argv = pg_basebackup_argv(bb_path, pg, bid)
    try:
        run.uploader.start()  # the key is free (checked again) and the multipart upload exists
        return _stream_and_describe(cfg, target_name, pg, client, run, facts, bid, key, file, argv, zstd,
                                    recipients, bb_version, started, preflight_seconds)
    except BaseException:
        _clean_up(client, cfg, run, folder)
        raise


def _stream_and_describe(cfg: Config, target: str, pg: pgtools.PgConn, client, run: _Run, facts: ServerFacts,
                         bid: str, key: str, file: str, argv: list[str], zstd: str, recipients: Sequence[str],
                         bb_version: str, started: float, preflight_seconds: float) -> dict[str, Any]:
    part_size = cfg.multipart_chunk_mb * 1024 * 1024
    start_time = _server_clock(pg)["server_now"]
    log.info("running %s | %s", " ".join(argv), " ".join(zstd_argv(zstd, cfg.pitr.base_compression_level,
                                                                    cfg.pitr.base_compression_workers)))
    bb_started = time.monotonic()
    scanner = TarScanner(CAPTURE_LIMITS)
    try:
        run.bb = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0,
                                  env=pg.client_tool_env(facts.major))
        run.zstd = subprocess.Popen(zstd_argv(zstd, cfg.pitr.base_compression_level,
                                              cfg.pitr.base_compression_workers),
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0)
    except OSError as exc:
        raise BaseBackupFailed(f"cannot start {exc.filename or argv[0]}: {exc.strerror}") from None
    for pipe in (run.bb.stdout, run.zstd.stdin, run.zstd.stdout):
        widen_pipe(pipe.fileno())
    bb_err = StderrTail(run.bb.stderr, pg.password, "pg_basebackup")
    z_err = StderrTail(run.zstd.stderr, None, "zstd")
    bb_err.start()
    z_err.start()
    run.feeder = _Feeder(run.bb.stdout, run.zstd.stdin, scanner)
    run.feeder.start()

    # The spool only feeds the multipart upload and is removed once S3 holds the proven object: no fsync.
    sha, parts, size = stream_to_file(run.zstd.stdout, run.spool, part_size, run.uploader, recipients,
                                      durable=False)
    # zstd's output ended: the feeder closed its input, at pg_basebackup's end or at an error of its own.
    run.feeder.join(EXIT_GRACE)
    if run.feeder.error is not None and run.bb.poll() is None:
        raise _feeder_failed(run.feeder.error)  # pg_basebackup may still be writing: cleaned up, killed
    stream_seconds = time.monotonic() - bb_started
    bb_rc = _wait(run.bb, "pg_basebackup")
    # Until pg_basebackup's output ended: it writes no faster than zstd (and S3) take it.
    bb_seconds = (run.feeder.eof_at or time.monotonic()) - bb_started
    z_rc = _wait(run.zstd, "zstd")
    bb_err.join(STDERR_GRACE)
    z_err.join(STDERR_GRACE)
    if bb_rc != 0:
        raise BaseBackupFailed(f"pg_basebackup exited with {bb_rc}: {bb_err.text()}")
    if run.feeder.error is not None:
        raise _feeder_failed(run.feeder.error)
    if z_rc != 0:
        raise BaseBackupFailed(f"zstd exited with {z_rc}: {z_err.text()}")
    scanner.close()
    clock = _server_clock(pg)
    stop_time = clock["server_now"]
    for name in (BACKUP_MANIFEST, BACKUP_LABEL):
        if name not in scanner.captured:
            raise TarStreamError(f"pg_basebackup's tar has no {name}")
    bmanifest = read_backup_manifest(scanner.captured[BACKUP_MANIFEST])
    label = parse_backup_label(scanner.captured[BACKUP_LABEL].decode("utf-8", "replace"))
    said = parse_pg_basebackup_log(list(bb_err.lines))
    if said.get("stop_lsn") and wal.parse_lsn(said["stop_lsn"]) != wal.parse_lsn(bmanifest["wal_ranges"][-1]["end_lsn"]):
        raise BaseBackupFailed(f"pg_basebackup reported the end point {said['stop_lsn']} but its backup_manifest "
                               f"says {bmanifest['wal_ranges'][-1]['end_lsn']}")
    sysid = facts.system_identifier
    if PG_CONTROL in scanner.captured:
        from_control = control_system_identifier(scanner.captured[PG_CONTROL])
        if sysid is not None and sysid != from_control:
            raise BaseBackupFailed(f"pg_control_system() says system identifier {sysid}, the backup's "
                                   f"global/pg_control {from_control}")
        sysid = from_control

    upload_started = time.monotonic()
    try:
        tail = run.uploader.complete()
    except BackupError as exc:
        raise BaseBackupFailed(str(exc), phase="upload") from None
    run.completed_key = key
    try:
        proof = s3.upload_file(client, run.spool, cfg.bucket, key, size=size, sha256_hex=sha, part_sha256=parts,
                               part_size=part_size, storage_class=cfg.storage_class, sse=cfg.sse,
                               kms_key_id=cfg.kms_key_id)
    except BackupError as exc:
        raise BaseBackupFailed(str(exc), phase="upload") from None
    upload_tail_seconds = time.monotonic() - upload_started
    os.unlink(run.spool)
    run.spool = None

    archive = {"key": key, "file": file, "size": size, "sha256": sha, "part_size": part_size, "part_sha256": parts,
               "compression": "zstd", "compression_level": cfg.pitr.base_compression_level,
               "tar_size": scanner.size, "tar_members": scanner.members,
               "checksum_verified": proof.checksum_verified}
    timings = {"duration_seconds": round(time.monotonic() - started, 3),
               "preflight_seconds": round(preflight_seconds, 3),
               "pg_basebackup_seconds": round(bb_seconds, 3), "stream_seconds": round(stream_seconds, 3),
               "upload_tail_seconds": round(upload_tail_seconds, 3), "upload_tail": tail}
    doc = build_manifest(cfg=cfg, target=target, bid=bid, facts=facts, label=label, bmanifest=bmanifest,
                         system_identifier=sysid, start_time=start_time, stop_time=stop_time, archive=archive,
                         argv=argv, recipients=recipients, pg_basebackup_version=bb_version, timings=timings)
    doc["archiver"] = {k: (iso(v) if isinstance(v, dt.datetime) else v) for k, v in clock.items()
                       if k != "server_now"}
    manifest_key = key.rsplit("/", 1)[0] + "/" + inventory.MANIFEST
    body = json.dumps(doc, indent=2, sort_keys=True).encode()
    try:
        s3.put_small(client, cfg.bucket, manifest_key, body, content_type="application/json", sse=cfg.sse,
                     kms_key_id=cfg.kms_key_id)
    except BackupError as exc:
        raise BaseBackupFailed(str(exc), phase="manifest") from None
    total = round(time.monotonic() - started, 3)
    log.info("base backup %s: %d bytes (tar %d), sha256 %s, LSN %s..%s, %.1f s (pg_basebackup %.1f s)",
             bid, size, scanner.size, sha, doc["start_lsn"], doc["stop_lsn"], total, bb_seconds)
    return {**doc, "manifest_key": manifest_key, "total_seconds": total}


STALE_SPOOL = 3600  # seconds without a write: a spool file of a killed worker (a live run writes every second)


def _remove_stale_spool(spool_dir: str, target: str) -> list[str]:
    """Spool files of ``target`` that a killed run left (they can be as large as a compressed backup)."""
    removed = []
    for entry in os.scandir(spool_dir):
        named = inventory.parse_backup_id(entry.name.split(".", 1)[0])
        if (entry.is_file(follow_symlinks=False) and entry.name.endswith(".partial") and named
                and named[0] == target and time.time() - entry.stat().st_mtime > STALE_SPOOL):
            try:
                os.unlink(entry.path)
            except FileNotFoundError:
                continue
            removed.append(entry.path)
            log.warning("removed %s, left by an interrupted base backup", entry.path)
    return removed


def _feeder_failed(err: BaseException) -> BaseBackupFailed:
    return err if isinstance(err, BaseBackupFailed) else BaseBackupFailed(f"passing pg_basebackup's output to zstd "
                                                                          f"failed: {err}")


def _server_clock(pg: pgtools.PgConn) -> dict[str, Any]:
    try:
        session = pgtools.connect(pg, autocommit=True)
    except BackupError as exc:
        raise BaseBackupFailed(f"cannot read the server's clock: {exc}") from None
    try:
        cur = session.execute(sqlfiles.text("pitr/base_server_clock.sql"))
        names = [d.name for d in cur.description]
        return dict(zip(names, cur.fetchone(), strict=True))
    finally:
        session.close()


def _wait(proc: subprocess.Popen, name: str) -> int:
    try:
        return proc.wait(EXIT_GRACE)
    except subprocess.TimeoutExpired:
        raise BaseBackupFailed(f"{name} did not exit within {EXIT_GRACE} s after its output ended") from None


def _clean_up(client, cfg: Config, run: _Run, folder: str) -> None:
    """After a failure: no child left running, no multipart upload, no spool file, no half backup in S3."""
    run.kill()
    if run.uploader is not None and not run.completed_key:
        run.uploader.abort()
    if run.spool:
        try:
            os.unlink(run.spool)
        except FileNotFoundError:
            pass
    if run.completed_key:
        # The archive was assembled but the backup did not finish: remove it, unless a manifest.json made it
        # (a lost answer to its PUT): then the backup is complete and must stay whole.
        try:
            if s3.head(client, cfg.bucket, folder + inventory.MANIFEST) is None:
                client.delete_object(Bucket=cfg.bucket, Key=run.completed_key)
        except (ClientError, BotoCoreError) as exc:  # retention removes an incomplete folder after a day
            log.warning("could not remove s3://%s/%s after the failure: %s", cfg.bucket, run.completed_key,
                        s3.describe_error(exc))


# --- the catalog row and the Slack summary ----------------------------------------------------------


def catalog_row(*, target: str, doc: Mapping[str, Any] | None, error: str | None, phase: str | None,
                bucket: str, dag_id: str | None, run_id: str | None) -> dict[str, Any]:
    """One base_backups row: SUCCESS when the backup's manifest was written, else FAILED with the step and why."""
    ok = isinstance(doc, Mapping) and error is None
    d: Mapping[str, Any] = doc if ok else {}
    archive = d.get("archive") or {}
    step = None if ok else "base_backup" + (f" ({phase})" if phase else "")
    return {
        "target": target, "backup_id": d.get("backup_id"), "status": "SUCCESS" if ok else "FAILED",
        "error_message": None if ok else redact(error or "step base_backup did not complete (see its log)"),
        "failed_step": step, "start_time": d.get("start_time"), "stop_time": d.get("stop_time"),
        "duration_seconds": d.get("duration_seconds"),
        "pg_basebackup_seconds": (d.get("timings") or {}).get("pg_basebackup_seconds"),
        "timeline": d.get("timeline"), "start_lsn": d.get("start_lsn"), "stop_lsn": d.get("stop_lsn"),
        "start_wal": d.get("start_wal"), "stop_wal": d.get("stop_wal"), "server_version": d.get("server_version"),
        "system_identifier": d.get("system_identifier"), "database_size_bytes": d.get("database_size"),
        "backup_size_bytes": (d.get("backup_manifest") or {}).get("size"), "archive_size_bytes": archive.get("size"),
        "checksum_sha256": archive.get("sha256"), "manifest_checksum": (d.get("backup_manifest") or {}).get("checksum"),
        "s3_bucket": bucket, "s3_key": archive.get("key"), "encrypted": bool(d.get("encryption")) if ok else None,
        "dag_id": dag_id, "run_id": run_id,
    }


def record_outcome(connect, row: dict[str, Any]) -> dict[str, Any]:
    """Write ``row`` into base_backups (``connect()`` opens the catalog); returns it with ``recorded`` and ``id``.

    A FAILED row that cannot be written is logged, not raised (the failure was alerted already, and
    the catalog may be what is down); a SUCCESS row that cannot be written raises."""
    from pg_dataops.catalog.migrations import ensure_schema

    try:
        pg = connect()
        try:
            ensure_schema(pg)
            with pg.transaction():
                row_id = pg.execute(sqlfiles.text("pitr/base_record.sql"), row).fetchone()[0]
        finally:
            pg.close()
    except (BackupError, psycopg.Error) as exc:
        if row["status"] == "FAILED":
            log.error("could not record the failed base backup in the catalog: %s", redact(str(exc)))
            return {**row, "recorded": False}
        if isinstance(exc, psycopg.Error):
            raise BackupError(f"cannot record the base backup in the catalog: {redact(str(exc))}") from None
        raise
    log.info("base_backups row %s: %s %s", row_id, row["status"], row["error_message"] or "")
    return {**row, "recorded": True, "id": row_id}


def success_text(doc: Mapping[str, Any], timezone: str, retention_line: str | None = None) -> str:
    """The Slack post of a base backup that was made (failures are posted by the failure callbacks)."""
    from pg_dataops.common.formatting import fmt_bytes, fmt_time

    archive = doc["archive"]
    enc = "age-encrypted" if doc.get("encryption") else "not client-side encrypted"
    lines = [
        f":white_check_mark: Base backup SUCCESS: {doc['target']} {doc['backup_id']}",
        f"s3://{doc.get('bucket', '')}/{archive['key']} ({fmt_bytes(archive['size'])}, {enc}; "
        f"{fmt_bytes(doc['backup_manifest']['size'])} in {doc['backup_manifest']['files']:,} files) in "
        f"{doc['duration_seconds']:.1f} s",
        f"WAL {doc['start_lsn']}..{doc['stop_lsn']} (timeline {doc['timeline']}), consistent from "
        f"{fmt_time(inventory.parse_time(doc['stop_time']), timezone, seconds=True)}",
    ]
    if retention_line:
        lines.append(retention_line)
    return "\n".join(lines)
