"""Client-side encryption of backup artifacts in the age format (age-encryption.org/v1). Airflow-free.

The work is done by Debian's ``age`` and ``age-keygen`` (Go, streaming, constant memory), the same tool an
operator uses by hand at 3 a.m.: ``age -d -i key.txt glimpse_daily_....dump.age | pg_restore ...``.

- Backup workers hold only recipients (public keys, ``age1...``): :class:`EncryptingWriter`.
- Restore-side tasks hold the identity (``AGE-SECRET-KEY-1...``, from an Airflow connection): it reaches
  ``age`` through an inherited pipe (``-i /dev/fd/N``), never a file, argv or the environment.
- :func:`check_identity` proves, before any restore work, that the identity opens a backup made for
  these recipients, and names both sides when it does not.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
from collections.abc import Iterable, Sequence

from pg_dataops.common.errors import PermanentError, redact

FORMAT = "age"
HEADER = b"age-encryption.org/v1\n"
SUFFIX = ".age"
# X25519 recipients: Bech32 ("age1" + 58 characters of the Bech32 alphabet).
RECIPIENT_RE = re.compile(r"^age1[02-9ac-hj-np-z]{58}$")
IDENTITY_RE = re.compile(r"^AGE-SECRET-KEY-1[02-9AC-HJ-NP-Z]{58}$")
CHUNK = 1024 * 1024


class EncryptionError(PermanentError):
    """age could not encrypt (not installed, a bad recipient, it exited non-zero)."""


class IdentityMismatch(PermanentError):
    """The identity is missing, malformed, or opens none of the recipients a backup was made for."""


class DecryptionFailed(PermanentError):
    """age -d refused the file: not age, damaged, or not for this identity."""


def binary(name: str) -> str:
    """``age`` or ``age-keygen`` on PATH (Debian package ``age``), or a clear error."""
    path = shutil.which(name) or (f"/usr/bin/{name}" if os.access(f"/usr/bin/{name}", os.X_OK) else None)
    if path is None:
        raise EncryptionError(f"{name} is not installed: apt-get install age (Debian/Ubuntu package 'age')")
    return path


def check_recipients(recipients: Iterable[str], where: str = "encryption.recipients") -> tuple[str, ...]:
    """The recipients, validated as age X25519 public keys; the error names the bad one."""
    out = []
    for i, r in enumerate(recipients):
        if not isinstance(r, str) or not RECIPIENT_RE.match(r.strip()):
            raise ValueError(f"{where}[{i}]: {r!r} is not an age X25519 recipient (age1..., from age-keygen -y)")
        out.append(r.strip())
    if len(set(out)) != len(out):
        raise ValueError(f"{where}: a recipient is listed twice")
    return tuple(out)


def is_age_file(path: str) -> bool:
    """The file starts with the age header (a plaintext pg_dump archive starts with PGDMP)."""
    with open(path, "rb") as f:
        return f.read(len(HEADER)) == HEADER


def describe(recipients: Sequence[str]) -> str:
    """For messages: the recipients, shortened (public keys, not secrets)."""
    return ", ".join(f"{r[:12]}...{r[-6:]}" for r in recipients) or "(none)"


def identity_lines(identity: str | None, conn_id: str) -> list[str]:
    """The AGE-SECRET-KEY lines of an identity file's text (comments and blank lines dropped)."""
    lines = [ln.strip() for ln in (identity or "").splitlines() if ln.strip() and not ln.strip().startswith("#")]
    if not lines:
        raise IdentityMismatch(f"Airflow connection {conn_id!r} has no age identity in its password field "
                               "(AGE-SECRET-KEY-1..., the content of age-keygen's key file)")
    bad = [i for i, ln in enumerate(lines) if not IDENTITY_RE.match(ln)]
    if bad:
        raise IdentityMismatch(f"Airflow connection {conn_id!r}: line {bad[0] + 1} of its password is not an age "
                               "identity (AGE-SECRET-KEY-1...)")
    return lines


def identity_recipients(identity: str, conn_id: str) -> list[str]:
    """The public keys of an identity (``age-keygen -y``), read through stdin."""
    lines = identity_lines(identity, conn_id)
    out = []
    for line in lines:
        done = subprocess.run([binary("age-keygen"), "-y"], input=line + "\n", capture_output=True, text=True,
                              timeout=30)
        if done.returncode != 0:
            raise IdentityMismatch(f"Airflow connection {conn_id!r}: age-keygen refused its identity: "
                                   f"{redact(done.stderr.strip(), line)}")
        out.append(done.stdout.strip())
    return out


def check_identity(identity: str | None, recipients: Sequence[str], conn_id: str, what: str) -> list[str]:
    """Fails unless the identity holds a key for one of ``recipients`` (a backup's, from its manifest).

    Returns the identity's public keys. ``what`` names the backup in the message."""
    mine = identity_recipients(identity or "", conn_id)
    if not set(mine) & set(recipients):
        raise IdentityMismatch(
            f"the age identity in Airflow connection {conn_id!r} (public key {describe(mine)}) cannot decrypt "
            f"{what}: it was encrypted for {describe(recipients)}; put a matching identity (or the escrow key) "
            f"in that connection")
    return mine


class EncryptingWriter:
    """A writer whose bytes leave encrypted to ``recipients``: ``write`` feeds ``age``, a thread moves its
    output into ``sink`` (anything with ``write``). ``close`` finishes the stream and raises if age failed;
    ``abort`` kills it. Memory stays flat: pipes of CHUNK bytes."""

    def __init__(self, recipients: Sequence[str], sink):
        if not recipients:
            raise EncryptionError("no recipients: nothing to encrypt to")
        argv = [binary("age")]
        for r in recipients:
            argv += ["-r", r]
        self.sink = sink
        self.errors: list[BaseException] = []
        try:
            self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                         bufsize=0)
        except OSError as exc:
            raise EncryptionError(f"cannot start age: {exc.strerror}") from None
        self._pump = threading.Thread(target=self._copy_out, name="age-output", daemon=True)
        self._pump.start()

    def _copy_out(self) -> None:
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        try:
            while True:
                n = self.proc.stdout.readinto(buf)
                if not n:
                    return
                self.sink.write(view[:n])
        except BaseException as exc:  # e.g. disk full in the sink: reported by write/close
            self.errors.append(exc)
            self.proc.kill()

    def _raise_sink_error(self) -> None:
        if self.errors:
            raise self.errors[0]

    def write(self, data) -> int:
        self._raise_sink_error()
        view = memoryview(data).cast("B")
        try:
            while view:  # a raw pipe may take part of a chunk (a signal, a full pipe): write the rest
                written = self.proc.stdin.write(view)
                view = view[written or 0:]
        except BrokenPipeError:
            self._pump.join()
            self._raise_sink_error()
            raise EncryptionError(f"age stopped while encrypting: {self._stderr()}") from None
        return len(memoryview(data).cast("B"))

    def close(self) -> None:
        """The end of the plaintext: wait for age to write its last chunk and exit."""
        self.proc.stdin.close()
        self._pump.join()
        rc = self.proc.wait()
        self._raise_sink_error()
        if rc != 0:
            raise EncryptionError(f"age exited with {rc} while encrypting: {self._stderr()}")

    def abort(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._pump.join(5)

    def _stderr(self) -> str:
        try:
            return self.proc.stderr.read().decode(errors="replace").strip()[-500:]
        except (OSError, ValueError):
            return ""


def encryption_block(recipients: Sequence[str]) -> dict | None:
    """What a manifest and the catalog record about the encryption: format and public keys, or None."""
    return {"format": FORMAT, "recipients": list(recipients)} if recipients else None


def _identity_pipe(identity: str) -> int:
    """A pipe holding the identity, for ``age -i /dev/fd/N``; returns its read end (the caller closes it)."""
    read_fd, write_fd = os.pipe()
    try:
        os.write(write_fd, (identity.strip() + "\n").encode())  # a few hundred bytes: fits the pipe buffer
    finally:
        os.close(write_fd)
    return read_fd


def decrypt_file(src: str, dest: str, identity: str, *, timeout: float | None = None) -> None:
    """``age -d`` of ``src`` into ``dest``: created here (mode 0600, never an existing file), removed on failure."""
    try:
        out = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # plaintext: readable by us only
    except FileExistsError:
        raise DecryptionFailed(f"{dest} already exists; refusing to overwrite it with the plaintext of "
                               f"{os.path.basename(src)}") from None
    fd = _identity_pipe(identity)
    try:
        done = subprocess.run([binary("age"), "-d", "-i", f"/dev/fd/{fd}", src], pass_fds=(fd,), stdout=out,
                              stderr=subprocess.PIPE, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        _remove(dest)
        raise DecryptionFailed(f"age -d of {os.path.basename(src)} did not finish within {timeout:g} s") from None
    finally:
        os.close(fd)
        os.close(out)
    if done.returncode != 0:
        _remove(dest)
        raise DecryptionFailed(f"age -d refused {os.path.basename(src)}: {redact(done.stderr.strip(), identity)}")


def decrypting_process(src: str, identity: str) -> subprocess.Popen:
    """``age -d`` of ``src`` with the plaintext on the process's stdout (to stream into pg_restore or psql).

    The caller reads stdout, then checks ``returncode``; stderr holds age's reason if it failed."""
    fd = _identity_pipe(identity)
    try:
        return subprocess.Popen([binary("age"), "-d", "-i", f"/dev/fd/{fd}", src], pass_fds=(fd,),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    finally:
        os.close(fd)


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def wrap(sink, recipients: Sequence[str]):
    """``sink`` itself without recipients, else an :class:`EncryptingWriter` in front of it."""
    return EncryptingWriter(recipients, sink) if recipients else sink


__all__ = ["FORMAT", "SUFFIX", "DecryptionFailed", "EncryptingWriter", "EncryptionError",
           "IdentityMismatch", "check_identity", "check_recipients", "decrypt_file", "decrypting_process",
           "describe", "encryption_block", "identity_recipients", "is_age_file", "wrap"]
