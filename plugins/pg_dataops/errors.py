"""Errors that name their cause. Every message here may reach Slack and PagerDuty: no secrets."""


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


def redact(text: str, *secrets: str | None) -> str:
    """Remove secrets from a message before it is logged, stored or sent."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "********")
    return text
