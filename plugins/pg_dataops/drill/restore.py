"""The drill's restore: the downloaded backup into the scratch database, with pg_backup's checks. Airflow-free.

An encrypted download is decrypted first (``age -d``) into the drill's folder, because ``pg_restore --jobs``
needs a seekable file; that plaintext exists only for the restore and is removed whatever happens (and
again by the record step, :func:`pg_dataops.common.fetch.remove_download`, should this process die). The
decryption is part of getting the data back, so its time counts in ``restore_seconds`` (the measured RTO);
``decrypt_seconds`` says how much of it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from pg_dataops.backup import verify
from pg_dataops.common import fetch
from pg_dataops.common.errors import VerificationFailed
from pg_dataops.common.naming import is_encrypted_name
from pg_dataops.common.pg import PgConn


def restore_drill(admin: PgConn, database: str, download_path: str, doc: dict, *, identity: Callable[[], str],
                  identity_conn_id: str, jobs: int, pg_bin_root: str, required_tables: Sequence[str],
                  timeout: float | None) -> dict[str, Any]:
    """Restore the download (decrypted first if the manifest says it is encrypted) and check it against
    its manifest; VerificationFailed when it does not match. ``identity`` reads the age key; it is only
    called for an encrypted backup."""
    path, decrypt_seconds = download_path, 0.0
    try:  # the plaintext never outlives the restore, also when age -d or pg_restore is interrupted
        path, decrypt_seconds = fetch.decrypt_download(download_path, doc, identity, identity_conn_id, timeout=timeout)
        result = verify.verify_backup(
            admin, database, path, fmt=doc.get("format", "custom"), expected_counts=doc.get("table_counts", {}),
            backup_server_version_num=int(doc.get("server_version_num") or 0), jobs=jobs, pg_bin_root=pg_bin_root,
            required_tables=tuple(required_tables), timeout=timeout,
            **verify.exclusions_of(doc),  # the manifest's exclusions: absent / empty tables are expected
        ).to_dict()
    finally:
        if is_encrypted_name(download_path):
            fetch.remove_plaintext(download_path)
    if not result["verified"]:
        raise VerificationFailed(f"{doc['file']} restored but does not match its manifest: "
                                 + "; ".join(result["mismatches"][:5]))
    if decrypt_seconds:
        result["restore_seconds"] = round(result["restore_seconds"] + decrypt_seconds, 3)
    result["decrypt_seconds"] = decrypt_seconds
    result["encrypted"] = path != download_path
    return result
