"""The self-describing .json beside every backup: enough to restore and check it without Airflow.

It stays readable when the dump is encrypted (it holds no row data) and says how: ``encryption`` is
``{"format": "age", "recipients": [public keys]}``, or null; a manifest from before it has no such key
and describes a dump that is not encrypted.

``exclude_tables`` / ``exclude_table_data`` (schema.table lists) say what pg_dump left out: those tables
are not in the dump (nor in ``table_counts``) / are there empty (counted 0). A manifest from before these
keys excluded nothing (:func:`exclusions`).
"""

from __future__ import annotations

import json
from typing import Any

from pg_dataops.common.errors import ManifestError, ObjectExists
from pg_dataops.common.naming import ENCRYPTED_SUFFIX

MANIFEST_VERSION = 1
# The runbook's fields first, then what a restore needs to prove itself.
REQUIRED = ("timestamp", "type", "file", "size", "checksum", "db_version")


def build_manifest(*, target: str, tier: str, dump: dict, upload: dict, bucket: str, prefix: str,
                   dag_id: str | None, run_id: str | None, verification: dict | None = None) -> dict[str, Any]:
    return {
        "timestamp": dump["snapshot_time"],  # UTC ISO-8601 of the snapshot the dump holds
        "type": tier,
        "file": dump["file"],
        "size": dump["size"],  # bytes (the runbook stored du -h text)
        "checksum": dump["sha256"],
        "checksum_algorithm": "sha256",
        "db_version": " ".join(dump["db_version"].split()),
        "manifest_version": MANIFEST_VERSION,
        "target": target,
        "database": dump["database"],
        "server_version_num": dump["server_version_num"],
        "pg_dump_version": dump["pg_dump_version"],
        "format": dump["format"],
        "compression": {"method": "gzip" if dump["compression"] else "none", "level": dump["compression"]},
        # client-side encryption of the stored object (size and checksum are of the encrypted bytes)
        "encryption": dump.get("encryption"),
        "jobs": dump["jobs"],
        "started_at": dump["started_at"],
        "duration_seconds": dump["duration_seconds"],
        "table_counts": dump["table_counts"],
        # pg_dump --exclude-table / --exclude-table-data of the target (verification expects them absent / empty)
        "exclude_tables": list(dump.get("exclude_tables") or []),
        "exclude_table_data": list(dump.get("exclude_table_data") or []),
        "s3": {
            "bucket": bucket,
            "key": upload["key"],
            "sha256_key": upload["key"] + ".sha256",
            "manifest_key": upload["key"] + ".json",
            "storage_class": upload["storage_class"],
            "server_side_encryption": upload["server_side_encryption"],
            "etag": upload["etag"],
            "part_size": dump["part_size"],
            "checksum_verified": upload["checksum_verified"],
        },
        "prefix": prefix,
        "airflow": {"dag_id": dag_id, "run_id": run_id},
        # The restore test's verdict and what it checked (pg_backup's verify step); every verdict
        # of this file, oldest first, in verifications (a later one may update the manifest).
        "verified": bool(verification and verification.get("verified")),
        "verification": verification,
        "verifications": [verification] if verification else [],
    }


# What a later verification of the same dump may change in its manifest; nothing else.
VERDICT_FIELDS = ("verified", "verification", "verifications")
# Keys added later, with what a manifest without them means (compared as that, so an older manifest of
# the same dump still takes a new verdict).
DEFAULTS = {"exclude_tables": [], "exclude_table_data": []}


def exclusions(doc: dict) -> dict[str, list[str]]:
    """``{"exclude_tables": [...], "exclude_table_data": [...]}`` of a manifest (or a dump result); empty
    lists for one written before the keys existed."""
    return {key: list(doc.get(key) or default) for key, default in DEFAULTS.items()}


def history(doc: dict) -> list[dict]:
    """Every verdict a manifest holds, oldest first (a manifest from before the list has one)."""
    if isinstance(doc.get("verifications"), list):
        return [v for v in doc["verifications"] if isinstance(v, dict)]
    return [doc["verification"]] if isinstance(doc.get("verification"), dict) else []


def with_verdicts(existing: dict, new: dict, source: str = "manifest") -> dict:
    """``existing`` with the verdicts of ``new`` added: the same dump (file, size, SHA-256, upload and
    every other field equal) or ObjectExists. Verified once any verification of the file passed;
    ``verification`` is the newest passing verdict, else the newest one."""
    differ = sorted(k for k in set(existing) | set(new)
                    if k not in VERDICT_FIELDS and existing.get(k, DEFAULTS.get(k)) != new.get(k, DEFAULTS.get(k)))
    if differ:
        raise ObjectExists(f"{source} already exists and describes another dump or upload ({', '.join(differ)} "
                           "differ); refusing to overwrite it: only the verification verdict of a manifest may change")
    verdicts = history(existing)
    for v in history(new):
        if v not in verdicts:
            verdicts.append(v)
    passed = [v for v in verdicts if v.get("verified")]
    current = passed[-1] if passed else (verdicts[-1] if verdicts else None)
    return {**existing, "verified": bool(passed), "verification": current, "verifications": verdicts}


def dumps(manifest: dict) -> str:
    return json.dumps(manifest, indent=2, sort_keys=False, ensure_ascii=False) + "\n"


def loads(text: str | bytes, source: str = "manifest") -> dict[str, Any]:
    """Parse and check a manifest; a bad one raises ManifestError naming what is wrong."""
    try:
        data = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{source} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ManifestError(f"{source}: top level is not an object")
    missing = [k for k in REQUIRED if k not in data]
    if missing:
        raise ManifestError(f"{source}: missing field(s) {', '.join(missing)}")
    if not isinstance(data["size"], int) or data["size"] < 0:
        raise ManifestError(f"{source}: size must be a byte count, got {data['size']!r}")
    chk = data["checksum"]
    if not isinstance(chk, str) or len(chk) != 64 or any(c not in "0123456789abcdef" for c in chk):
        raise ManifestError(f"{source}: checksum is not a SHA-256 hex digest")
    encryption_of(data, source)
    for key in DEFAULTS:
        value = data.get(key)
        if value is not None and (not isinstance(value, list) or not all(isinstance(t, str) for t in value)):
            raise ManifestError(f"{source}: {key} must be a list of schema.table names, got {value!r}")
    return data


def encryption_of(doc: dict, source: str = "manifest") -> dict[str, Any] | None:
    """The manifest's encryption block (format "age", recipients), or None: not encrypted (also when the
    manifest predates the key). A block that is malformed, or that disagrees with the file name's
    ``.age`` suffix, raises ManifestError."""
    block = doc.get("encryption")
    encrypted_name = isinstance(doc.get("file"), str) and doc["file"].endswith(ENCRYPTED_SUFFIX)
    if block is None:
        if encrypted_name:
            raise ManifestError(f"{source}: file {doc['file']} ends in {ENCRYPTED_SUFFIX} but no encryption is "
                                "recorded")
        return None
    recipients = block.get("recipients") if isinstance(block, dict) else None
    if not isinstance(block, dict) or block.get("format") != "age" or not isinstance(recipients, list) \
            or not recipients or not all(isinstance(r, str) and r for r in recipients):
        raise ManifestError(f"{source}: encryption must be {{\"format\": \"age\", \"recipients\": [public keys]}}, "
                            f"got {block!r}")
    if not encrypted_name:
        raise ManifestError(f"{source}: encryption is recorded but file {doc.get('file')!r} does not end in "
                            f"{ENCRYPTED_SUFFIX}")
    return block


def sha256_line(sha256_hex: str, file: str) -> str:
    """One line in `sha256sum -c` format (two spaces: text mode, as sha256sum writes it)."""
    return f"{sha256_hex}  {file}\n"
