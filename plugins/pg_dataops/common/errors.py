"""Errors that name their cause. Every message here may reach Slack and PagerDuty: no secrets."""

import re
import sys


class BackupError(RuntimeError):
    """A backup step failed; ``str()`` is the operator-facing reason."""


class PermanentError(BackupError):
    """A failure that retrying cannot change (e.g. a measured RTO above its objective)."""


class ConnectionMissing(BackupError):
    pass


class DatabaseUnreachable(BackupError):
    pass


class AuthenticationFailed(BackupError):
    pass


class ClientVersionError(BackupError):
    pass


class DumpFailed(BackupError):
    pass


class DiskFull(BackupError):
    pass


class BucketMissing(BackupError):
    pass


class ObjectExists(BackupError):
    pass


class UploadFailed(BackupError):
    pass


class IntegrityError(BackupError):
    pass


class ManifestError(BackupError):
    pass


class VerificationFailed(BackupError):
    """The backup restored, or failed to, and does not match what was dumped."""


class RestoreServerError(BackupError):
    """A restore test failed because of the restore-test server, not the dump (disk full, out of
    memory, connection lost or refused, server shutting down): retrying can succeed."""


MASK = "********"
MIN_SECRET_LENGTH = 4  # shorter "secrets" would mask ordinary words; nobody's real password is that short
_registered: set[str] = set()
# Secrets in a shape that needs no registry: key=value options and user:password@ in URLs.
_SHAPES = (
    re.compile(r"(?i)\b((?:pg)?passw(?:or)?d|pwd)(\s*[=:]\s*)('[^']*'|\"[^\"]*\"|[^\s'\",;&]+)"),
    re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^/:@\s]+:)([^@/\s]+)(@)"),
)


def register_secret(secret: str | None) -> None:
    """Remember a secret (a connection's password) so that every later :func:`redact` removes it.

    Called where connections are read; it lives as long as the (task) process.
    """
    if isinstance(secret, str) and len(secret) >= MIN_SECRET_LENGTH:
        _registered.add(secret)


def redact(text: str, *secrets: str | None) -> str:
    """Remove secrets from a message before it is logged, stored or sent.

    ``secrets`` plus every registered one (longest first, so a secret containing another goes
    whole), then passwords in ``password=...`` options and ``scheme://user:password@`` URLs.
    """
    text = str(text)
    known = {s for s in secrets if s} | _registered
    for secret in sorted(known, key=len, reverse=True):
        text = text.replace(secret, MASK)
    text = _SHAPES[0].sub(lambda m: f"{m[1]}{m[2]}{MASK}", text)
    text = _SHAPES[1].sub(lambda m: f"{m[1]}{MASK}{m[3]}", text)
    # In an Airflow process, also what Airflow masks (every connection password and extra it handed
    # out, sensitive Variables). Looked up, not imported: this module stays Airflow-free.
    masker = sys.modules.get("airflow.sdk._shared.secrets_masker")
    if masker is not None:
        try:
            text = str(masker.redact(text, replacement=MASK))
        except Exception:  # noqa: S110 - our own redaction above already ran; never fail an alert over it
            pass
    return text
