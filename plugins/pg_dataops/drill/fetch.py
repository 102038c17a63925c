"""Finding the drill's backup: the newest one of a target in S3 (not the local copy). Airflow-free.

The download lands in the drill's own folder under ``local_root`` (:func:`drill_dir`) and is removed when
the drill is recorded (:func:`remove_download`), whatever happened. Downloading, proving and decrypting
are the kernel's (:mod:`pg_dataops.common.fetch`), shared with the recoveries.
"""

from __future__ import annotations

import os

from botocore.exceptions import ClientError

from pg_dataops.backup import manifest
from pg_dataops.common import s3
from pg_dataops.common.errors import BackupError, ManifestError
from pg_dataops.common.fetch import (  # noqa: F401 - the drill's steps and tests use fetch.*
    decrypt_download,
    download_and_check,
    encryption_recipients,
    fetch_backup,
    plaintext_path,
    prove_identity,
    remove_download,
)
from pg_dataops.common.naming import parse_name
from pg_dataops.common.s3 import describe_error


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


def drill_dir(local_root: str, run_id: str, target: str) -> str:
    """``{local_root}/.drill/{target}_{run_id}``, the run id made safe as a folder name."""
    safe = "".join(c if c.isalnum() else "_" for c in run_id)
    return os.path.join(local_root, ".drill", f"{target}_{safe}")
