"""A base backup restored from S3 into a scratch data directory on the worker. Airflow-free.

Point-in-time recovery (pg_pitr_restore), the PITR drill and the RPO crash test all start here:
:func:`restore_base_backup` streams the archive object out of S3 and unpacks it as it arrives::

    S3 GetObject body -> SHA-256 (checked against the manifest at the end)
        -> age -d -i /dev/fd/N        (encrypted backups: the identity through a pipe, never argv or a file)
        -> zstd -dcq
        -> tar -x -C {data}           (run as the scratch owner: the postgres OS user when we are root)

No plaintext file is written except the data directory itself, and nothing is downloaded first: a 1 GB
base backup needs no extra 1 GB of disk. A digest or size that differs from the manifest removes what was
unpacked and fails (the object is corrupt or not the one the manifest describes).

:class:`ScratchLayout` names the folders of one recovery: ``{scratch_root}/{run}_{target}/`` with
``data/`` (the data directory) and ``run/`` (the server's socket, log, pg_hba.conf and the WAL prefetch
spool). :func:`remove_scratch` stops a server still running there and removes the whole folder.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from pg_dataops.common import age, localpg
from pg_dataops.common.errors import BackupError, DiskFull, IntegrityError, PermanentError, redact
from pg_dataops.common.s3 import describe_error

CHUNK = 1024 * 1024
# Files a data directory copied from a running server may carry that must not reach the scratch
# server: a stale lock file, production's start options, and a standby's or a recovery's signal file
# (we write our own recovery.signal).
LEFTOVERS = ("postmaster.pid", "postmaster.opts", "recovery.signal", "standby.signal")


class RestoreFailed(BackupError):
    """The base backup could not be fetched or unpacked (S3, age, zstd or tar failed)."""


class ToolMissing(PermanentError):
    """A program the restore needs is not installed on the worker."""


@dataclass(frozen=True)
class ScratchLayout:
    """The folders of one recovery on the worker (all created 0700, owned by the scratch owner)."""

    root: Path

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def run(self) -> Path:
        """The server's socket directory, its log and pg_hba.conf, the restore's tool logs."""
        return self.root / "run"

    @property
    def socket(self) -> Path:
        """The server's socket directory: ``run`` unless its socket path would pass the 107-byte limit (a long
        ``pitr.scratch_root``), then a short private directory under /tmp, removed with the folder."""
        return localpg.short_socket_dir(self.run)

    @property
    def spool(self) -> Path:
        """barman-cloud-wal-restore --spool-dir: segments prefetched ahead of replay."""
        return self.run / "spool"

    def to_dict(self) -> dict[str, str]:
        return {"root": str(self.root), "data": str(self.data), "run": str(self.run)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ScratchLayout:
        return cls(Path(d["root"]))


def layout_for(scratch_root: str, run_id: str, target: str) -> ScratchLayout:
    """``{scratch_root}/{run id made safe}_{target}``: one folder per run and target, known before it exists
    (the teardown finds it from the plan alone)."""
    safe = "".join(c if c.isalnum() else "_" for c in run_id).strip("_")
    return ScratchLayout(Path(scratch_root) / f"{safe}_{target}")


def server_bin_dir(pg_bin_root: str, server_version_num: int) -> str:
    """``{pg_bin_root}/{major}/bin`` of the backup's major version, or a clear error: a base backup only
    starts under the server binaries of its own major version."""
    major = int(server_version_num) // 10000
    bin_dir = os.path.join(pg_bin_root, str(major), "bin")
    for name in ("postgres", "pg_ctl", "pg_controldata"):
        if not os.access(os.path.join(bin_dir, name), os.X_OK):
            raise ToolMissing(f"{bin_dir}/{name} is missing: recovering a PostgreSQL {major} base backup needs the "
                              f"PostgreSQL {major} server binaries on the worker (Debian: apt-get install "
                              f"postgresql-{major}; the Dockerfile installs them)")
    return bin_dir


def _tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise ToolMissing(f"{name} is not installed on the worker: apt-get install {package}")
    return path


def prepare(layout: ScratchLayout, bin_dir: str | None = None) -> None:
    """Fresh, empty folders for this recovery. What an earlier try of the same run left (a half-unpacked
    data directory, a server it started) is ours and is removed first."""
    if layout.root.exists():
        remove_scratch(layout, bin_dir)
    localpg.make_private_dir(layout.root)
    localpg.make_private_dir(layout.data)
    localpg.make_private_dir(layout.run)
    if layout.socket != layout.run:
        localpg.remove_tree(layout.socket)
        localpg.make_private_dir(layout.socket)
    localpg.make_private_dir(layout.spool)


def remove_scratch(layout: ScratchLayout, bin_dir: str | None = None) -> dict[str, Any]:
    """Stop a server still running on the layout's data directory, then remove the whole folder (the
    teardown's work; idempotent). Returns what it did."""
    stopped = stop_server(layout, bin_dir)
    existed = layout.root.exists()
    if layout.socket != layout.run:
        localpg.remove_tree(layout.socket)
    localpg.remove_tree(layout.root)
    if layout.root.exists():
        raise BackupError(f"could not remove the scratch folder {layout.root}")
    return {"root": str(layout.root), "server_stopped": stopped, "removed": existed}


def stop_server(layout: ScratchLayout, bin_dir: str | None = None) -> bool:
    """Stop the scratch server of this layout if one runs (pg_ctl stop -m fast, then SIGKILL); whether one ran."""
    return localpg.stop_server(layout.data, bin_dir)


def backup_recipients(doc: Mapping[str, Any]) -> tuple[str, ...]:
    """The age recipients a base backup was encrypted for (its manifest's ``encryption``); () when plain."""
    block = doc.get("encryption")
    if not block:
        return ()
    recipients = block.get("recipients") if isinstance(block, dict) else None
    if not recipients or block.get("format", "age") != "age":
        raise IntegrityError(f"base backup {doc.get('backup_id')}: its manifest's encryption block is not an age "
                             f"block with recipients ({block!r}); refusing to guess how to decrypt it")
    return tuple(recipients)


def prove_identity(doc: Mapping[str, Any], identity: Callable[[], str], conn_id: str) -> str | None:
    """For an encrypted base backup: the identity (read through ``identity``, only now) proven to open one of
    its recipients, before anything is fetched. None when the backup is not encrypted."""
    recipients = backup_recipients(doc)
    if not recipients:
        return None
    what = f"base backup {doc.get('backup_id')}"
    try:
        text = identity()
        age.identity_lines(text, conn_id)
    except age.IdentityMismatch as exc:
        raise age.IdentityMismatch(f"{exc}; {what} was encrypted for {age.describe(recipients)}") from None
    except BackupError as exc:  # the connection is missing
        raise age.IdentityMismatch(f"{exc}; {what} was encrypted for {age.describe(recipients)}") from None
    age.check_identity(text, recipients, conn_id, what)
    return text


def restore_base_backup(client, bucket: str, doc: Mapping[str, Any], layout: ScratchLayout, *,
                        identity: str | None = None, timeout: float | None = None,
                        bin_dir: str | None = None) -> dict[str, Any]:
    """Stream the base backup of ``doc`` (its manifest.json) from S3 into ``layout.data``.

    ``identity``: the age private key, for an encrypted backup (prove it first: :func:`prove_identity`).
    ``timeout``: seconds the whole restore may take. Returns bytes read, their SHA-256, seconds.
    On any failure the data directory is removed; the error names the failing stage.
    """
    archive = doc["archive"]
    key = archive["key"]
    encrypted = bool(backup_recipients(doc))
    if encrypted and not identity:
        raise age.IdentityMismatch(f"base backup {doc['backup_id']} is age-encrypted: an identity is needed")
    prepare(layout, bin_dir)
    started = time.monotonic()
    try:
        got = _stream_into(client, bucket, key, layout, identity if encrypted else None,
                           None if timeout is None else started + timeout)
        # The digest first: a corrupt object also breaks zstd or tar, and the digest names the real cause.
        if got["sha256"] != archive["sha256"] or got["bytes"] != int(archive["size"]):
            raise IntegrityError(
                f"s3://{bucket}/{key} is corrupt or not the object its manifest describes: SHA-256 "
                f"{got['sha256'][:16]}... and {got['bytes']} bytes, the manifest says {archive['sha256'][:16]}... and "
                f"{archive['size']} bytes; the unpacked copy was removed")
        if got["failures"]:
            raise _stage_failed(got["failures"], layout, identity)
        _finish_data_dir(layout.data)
    except BaseException:
        localpg.remove_tree(layout.data)
        raise
    return {"bytes": got["bytes"], "sha256": got["sha256"], "key": key, "encrypted": encrypted,
            "data": str(layout.data), "restore_seconds": round(time.monotonic() - started, 3)}


STAGES = ("age", "zstd", "tar")


def _stream_into(client, bucket: str, key: str, layout: ScratchLayout, identity: str | None,
                 deadline: float | None) -> dict[str, Any]:
    """Feed the object through the stages; the digest and size of every byte read, and the stages that
    failed as ``[(name, exit status)]`` in pipeline order."""
    zstd = _tool("zstd", "zstd")
    tar = _tool("tar", "tar")
    try:
        body = client.get_object(Bucket=bucket, Key=key)["Body"]
    except (ClientError, BotoCoreError) as exc:
        raise RestoreFailed(f"cannot read s3://{bucket}/{key}: {describe_error(exc)}") from None
    logs = {name: open(layout.run / f"restore-{name}.log", "wb") for name in STAGES}
    procs: dict[str, subprocess.Popen] = {}
    try:
        upstream = subprocess.PIPE
        if identity is not None:
            fd = age._identity_pipe(identity)
            try:
                procs["age"] = subprocess.Popen([age.binary("age"), "-d", "-i", f"/dev/fd/{fd}"], pass_fds=(fd,),
                                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=logs["age"],
                                                start_new_session=True)
            finally:
                os.close(fd)
            upstream = procs["age"].stdout
        procs["zstd"] = subprocess.Popen([zstd, "-dcq"], stdin=upstream, stdout=subprocess.PIPE, stderr=logs["zstd"],
                                         start_new_session=True)
        procs["tar"] = subprocess.Popen(localpg.as_owner([tar, "-x", "-f", "-", "-C", str(layout.data)]),
                                        stdin=procs["zstd"].stdout, stdout=subprocess.DEVNULL, stderr=logs["tar"],
                                        start_new_session=True)
        for name in ("age", "zstd"):  # the next process holds these pipe ends now
            if name in procs:
                procs[name].stdout.close()
        digest, size = _feed(body, procs.get("age") or procs["zstd"], deadline, bucket, key)
        failures = []
        for name, proc in procs.items():
            try:
                rc = proc.wait(timeout=_left(deadline, floor=30))
            except subprocess.TimeoutExpired:
                raise RestoreFailed(f"unpacking s3://{bucket}/{key}: {name} did not finish in time") from None
            if rc != 0:
                failures.append((name, rc))
        return {"bytes": size, "sha256": digest, "failures": failures}
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                _kill_group(proc)
        for f in logs.values():
            f.close()
        body.close()


def _feed(body, first: subprocess.Popen, deadline: float | None, bucket: str, key: str) -> tuple[str, int]:
    """Every byte of the object into the hash, and into ``first`` while it reads; when a stage stops early
    the rest is still read and hashed, so a corrupt object is told apart from a failing tool."""
    h = hashlib.sha256()
    size = 0
    sink = first.stdin
    try:
        while True:
            if deadline is not None and time.monotonic() > deadline:
                raise RestoreFailed(f"restoring s3://{bucket}/{key} took longer than its time limit")
            block = body.read(CHUNK)
            if not block:
                break
            h.update(block)
            size += len(block)
            if sink is not None:
                try:
                    sink.write(block)
                except BrokenPipeError:
                    sink = None
    except (ClientError, BotoCoreError) as exc:
        raise RestoreFailed(f"reading s3://{bucket}/{key} failed after {size} bytes: {describe_error(exc)}") from None
    finally:
        try:
            first.stdin.close()
        except BrokenPipeError:
            pass
    return h.hexdigest(), size


def _stage_failed(failures: list[tuple[str, int]], layout: ScratchLayout, identity: str | None) -> BackupError:
    """The error of the stage that caused the failure: a stage killed by a broken pipe (SIGPIPE, "Broken
    pipe") only followed the one after it."""
    texts = {}
    for name, rc in failures:
        try:
            text = (layout.run / f"restore-{name}.log").read_text(errors="replace").strip()[-800:]
        except OSError:
            text = ""
        texts[name] = redact(text, identity) or f"exit status {rc}"
    causes = [(n, rc) for n, rc in failures if rc != -signal.SIGPIPE and "broken pipe" not in texts[n].lower()]
    name, rc = (causes or failures)[0]
    text = texts[name]
    what = {"age": "age -d (decryption)", "zstd": "zstd -d (decompression)", "tar": "tar -x (unpacking)"}[name]
    if name == "tar" and ("No space left" in text or "Disk quota" in text):
        return DiskFull(f"{what} into {layout.data} failed: the worker's disk is full: {text}")
    if name == "age":
        return age.DecryptionFailed(f"{what} of the base backup failed: {text}")
    return IntegrityError(f"{what} of the base backup failed (exit {rc}): {text}")


def _left(deadline: float | None, floor: float = 0) -> float | None:
    return None if deadline is None else max(floor, deadline - time.monotonic())


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


def _finish_data_dir(data: Path) -> None:
    """What PostgreSQL needs that a tar-format base backup may lack: pg_wal/ (and archive_status/) when it
    was left out (pg_basebackup -X none, or WAL shipped separately); the data directory 0700."""
    owner = localpg._owner()
    for sub in ("pg_wal", "pg_wal/archive_status"):
        p = data / sub
        if not p.exists():
            p.mkdir(mode=0o700)
            if owner:
                os.chown(p, owner.pw_uid, owner.pw_gid)
    os.chmod(data, 0o700)
    if not (data / "PG_VERSION").is_file() or not (data / "global" / "pg_control").is_file():
        raise IntegrityError(f"the unpacked base backup in {data} has no PG_VERSION or global/pg_control: it is "
                             "not a data directory")
