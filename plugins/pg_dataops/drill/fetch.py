"""Fetching the drill's backup: the newest one of a target in S3 (not the local copy), downloaded and proven.

Airflow-free. The download lands in the drill's own folder under ``local_root`` (:func:`drill_dir`) and
is removed when the drill is recorded (:func:`remove_download`), whatever happened. An encrypted backup
(``.age``, its manifest's ``encryption``) is only downloaded once the identity is proven to open it
(:func:`prove_identity`): a missing or wrong key fails before any transfer or restore work.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable

from botocore.exceptions import BotoCoreError, ClientError

from pg_dataops.backup import manifest
from pg_dataops.common import age, s3
from pg_dataops.common.errors import BackupError, ConnectionMissing, IntegrityError, ManifestError
from pg_dataops.common.naming import is_encrypted_name, parse_name
from pg_dataops.common.s3 import describe_error

CHUNK = 1024 * 1024


def latest_backup(client, bucket: str, prefix: str, target: str, timezone: str) -> dict:
    """The newest backup of ``target`` in S3 (by the time in its name), with its parsed manifest.

    The newest is taken even when its manifest is broken: a drill that quietly fell back to an
    older backup would hide exactly the problem it exists to find. An object with neither .sha256
    nor .json is not a backup yet (an upload whose run died before proving it) and is passed over.
    """
    newest = None
    candidates, listed = [], set()
    for _tier, _prefix, obj in s3.list_tiers(client, bucket, prefix, error=BackupError):
        listed.add(obj["Key"])
        parsed = parse_name(obj["Key"].rsplit("/", 1)[1], timezone)
        if parsed and parsed[0] == target:
            candidates.append((obj["Key"], parsed[2], obj["Size"]))
    for key, moment, size in candidates:
        if (key + ".json" in listed or key + ".sha256" in listed) and (newest is None or moment > newest[1]):
            newest = (key, moment, size)
    if newest is None:
        raise BackupError(f"no backup of {target!r} under s3://{bucket}/{prefix}/ to drill")
    key = newest[0]
    manifest_key = key + ".json"
    try:
        raw = client.get_object(Bucket=bucket, Key=manifest_key)["Body"].read()
    except ClientError as exc:
        raise ManifestError(f"s3://{bucket}/{manifest_key} cannot be read ({describe_error(exc)}): the newest "
                            f"backup {key} has no usable manifest") from None
    doc = manifest.loads(raw, source=f"s3://{bucket}/{manifest_key}")
    if doc["file"] != key.rsplit("/", 1)[1]:
        raise ManifestError(f"s3://{bucket}/{manifest_key} describes {doc['file']!r}, not {key}")
    return {"key": key, "manifest": doc}


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


def drill_dir(local_root: str, run_id: str, target: str) -> str:
    """``{local_root}/.drill/{target}_{run_id}``, the run id made safe as a folder name."""
    safe = "".join(c if c.isalnum() else "_" for c in run_id)
    return os.path.join(local_root, ".drill", f"{target}_{safe}")
