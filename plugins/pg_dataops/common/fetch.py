"""Fetching a backup from S3 for a restore (the drill, the recoveries): downloaded, proven, decrypted. Airflow-free.

The object is hashed while it streams to disk and must match its ``.sha256`` and its manifest
(:func:`download_and_check`). An encrypted backup (``.age``, its manifest's ``encryption``) is only
downloaded once the identity is proven to open it (:func:`prove_identity`): a missing or wrong key fails
before any transfer or restore work; :func:`decrypt_download` writes the plaintext beside the download
(``pg_restore --jobs`` needs a seekable file) and :func:`remove_download` removes both, already gone or not.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable

from botocore.exceptions import BotoCoreError, ClientError

from pg_dataops.backup import manifest
from pg_dataops.common import age
from pg_dataops.common.errors import BackupError, ConnectionMissing, IntegrityError
from pg_dataops.common.naming import is_encrypted_name
from pg_dataops.common.s3 import describe_error

CHUNK = 1024 * 1024


def _read_sha256_sidecar(client, bucket: str, key: str) -> str:
    sidecar = key + ".sha256"
    try:
        text = client.get_object(Bucket=bucket, Key=sidecar)["Body"].read().decode()
    except ClientError as exc:
        raise IntegrityError(f"s3://{bucket}/{sidecar} is missing or unreadable ({describe_error(exc)}): "
                             "the backup cannot be proven, so it is not restored") from None
    parts = text.split()
    if len(parts) != 2 or len(parts[0]) != 64 or parts[1].lstrip("*") != key.rsplit("/", 1)[1]:
        raise IntegrityError(f"s3://{bucket}/{sidecar} is not a sha256sum line for {key.rsplit('/', 1)[1]}")
    return parts[0]


def download_and_check(client, bucket: str, key: str, doc: dict, dest_dir: str) -> dict:
    """Stream the object to ``dest_dir`` while hashing it; it must match the .sha256 and the manifest."""
    expected = _read_sha256_sidecar(client, bucket, key)
    if expected != doc["checksum"]:
        raise IntegrityError(f"{key}: the .sha256 ({expected[:12]}...) and the manifest ({doc['checksum'][:12]}...) "
                             "disagree")
    os.makedirs(dest_dir, exist_ok=True)
    path = os.path.join(dest_dir, doc["file"])
    started = time.monotonic()
    h = hashlib.sha256()
    size = 0
    try:
        body = client.get_object(Bucket=bucket, Key=key)["Body"]
        with open(path, "wb") as out:
            for block in iter(lambda: body.read(CHUNK), b""):
                h.update(block)
                out.write(block)
                size += len(block)
    except (ClientError, BotoCoreError) as exc:
        remove_download(path)
        raise BackupError(f"download of s3://{bucket}/{key} failed: {describe_error(exc)}") from None
    except BaseException:
        remove_download(path)
        raise
    digest = h.hexdigest()
    if digest != expected or size != doc["size"]:
        remove_download(path)
        raise IntegrityError(
            f"s3://{bucket}/{key} is corrupt: SHA-256 {digest[:16]}... and {size} bytes, but .sha256 and the "
            f"manifest say {expected[:16]}... and {doc['size']} bytes; nothing was restored or deleted"
        )
    return {"path": path, "size": size, "sha256": digest, "download_seconds": round(time.monotonic() - started, 3)}


def fetch_backup(client, bucket: str, key: str, doc: dict, dest_dir: str, *, identity: Callable[[], str],
                 identity_conn_id: str) -> dict:
    """The download step: for an encrypted backup the identity is proven first (:func:`prove_identity`),
    then the object is downloaded and checked (:func:`download_and_check`). ``encrypted`` in the result
    says whether it still needs decrypting."""
    encrypted = prove_identity(doc, identity, identity_conn_id) is not None
    return {**download_and_check(client, bucket, key, doc, dest_dir), "encrypted": encrypted}


def encryption_recipients(doc: dict) -> tuple[str, ...]:
    """The recipients an encrypted backup was made for (its manifest's ``encryption``); () when not encrypted.

    A name and a manifest that disagree (a ``.age`` file without an encryption block, or the reverse)
    are a ManifestError (:func:`pg_dataops.backup.manifest.encryption_of`), never guessed at."""
    block = manifest.encryption_of(doc, source=f"the manifest of {doc['file']}")
    return tuple(block["recipients"]) if block else ()


def prove_identity(doc: dict, identity: Callable[[], str], conn_id: str) -> list[str] | None:
    """For an encrypted backup, prove that the identity opens it, before any download or restore work.

    ``identity`` reads the key (called only when the backup is encrypted, so a plaintext drill needs no
    connection). A missing connection, an empty or malformed key, or a key for other recipients raises
    IdentityMismatch naming the connection and the backup's recipients. Returns the identity's public
    keys, or None when the backup is not encrypted.
    """
    recipients = encryption_recipients(doc)
    if not recipients:
        return None
    what = doc["file"]
    try:
        text = identity()
        age.identity_lines(text, conn_id)  # missing or malformed: say for whom the backup was made, too
    except (ConnectionMissing, age.IdentityMismatch) as exc:
        raise age.IdentityMismatch(f"{exc}; {what} was encrypted for {age.describe(recipients)}") from None
    return age.check_identity(text, recipients, conn_id, what=what)


def plaintext_path(download_path: str) -> str:
    """Where the decrypted dump of a downloaded ``.age`` file goes: beside it, without the suffix."""
    if not is_encrypted_name(download_path):
        raise ValueError(f"{download_path} is not an age-encrypted download")
    return download_path[: -len(age.SUFFIX)]


def remove_download(path: str) -> None:
    """Delete a downloaded copy (it is only for this drill), and its decrypted plaintext if any; already
    gone is fine."""
    paths = [path, plaintext_path(path)] if is_encrypted_name(path) else [path]
    for p in paths:
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass


def decrypt_download(download_path: str, doc: dict, identity: Callable[[], str], identity_conn_id: str, *,
                     timeout: float | None) -> tuple[str, float]:
    """(the path to restore, seconds spent decrypting): the download itself when it is not encrypted."""
    if prove_identity(doc, identity, identity_conn_id) is None:
        return download_path, 0.0
    plaintext = plaintext_path(download_path)
    _remove(plaintext)  # a retried restore finds its earlier try's plaintext: age -d writes a new one
    started = time.monotonic()
    age.decrypt_file(download_path, plaintext, identity(), timeout=timeout)
    return plaintext, round(time.monotonic() - started, 3)


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def remove_plaintext(download_path: str) -> None:
    """Remove the decrypted plaintext of an encrypted download (kept: the download itself)."""
    if is_encrypted_name(download_path):
        _remove(plaintext_path(download_path))
