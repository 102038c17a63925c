"""The steps of one logical backup, as plain functions on plain dicts. Airflow-free.

Each step takes what earlier steps returned (JSON-safe dicts, so they travel as XCom) and returns
its own result; the operators in ``pg_dataops.backup.operators`` only fetch connections and call these.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pg_dataops.backup import manifest, verify
from pg_dataops.backup.dump import artifact_name, run_dump
from pg_dataops.catalog import backup_logs
from pg_dataops.common import age, naming, s3
from pg_dataops.common.config import Config, ConfigError, Target
from pg_dataops.common.errors import BackupError, IntegrityError, ObjectExists, VerificationFailed, redact
from pg_dataops.common.naming import parse_name
from pg_dataops.common.pg import PgConn

log = logging.getLogger(__name__)

# What a killed run leaves locally: pg_dump's output before its rename (a directory for the
# directory format), the tar being packed, a sidecar being written.
LEFTOVER_SUFFIXES = (".partial", ".tarpartial", ".sha256.tmp", ".json.tmp")
# S3 user metadata naming the DAG run that streamed an object: a retry of that run may replace the
# object while it has no .sha256/.json (it never became a backup); nobody else's object is touched.
RUN_METADATA = "pgdataops-run"


def s3_key(cfg: Config, tier: str, file: str) -> str:
    """database/{tier}/{file}, the runbook's layout."""
    return f"{cfg.prefix}/{tier}/{file}"


def _leftover_of(name: str, target: str, timezone: str) -> bool:
    """Whether ``name`` is an unfinished file of ``target`` (by the backup file-name pattern)."""
    for suffix in LEFTOVER_SUFFIXES:
        if name.endswith(suffix):
            parsed = parse_name(name[: -len(suffix)], timezone)
            return parsed is not None and parsed[0] == target
    return False


def _backup_key_of(key: str, cfg: Config, target: str) -> bool:
    """Whether ``key`` is ``{prefix}/{tier}/{file}`` of a backup of ``target``."""
    head_, _, name = key.rpartition("/")
    parsed = parse_name(name, cfg.timezone)
    return parsed is not None and parsed[0] == target and head_ in {s3_key(cfg, t, "")[:-1] for t in naming.TIERS}


def clean_leftovers(cfg: Config, target: str, client=None) -> dict[str, Any]:
    """Remove what killed runs of ``target`` left: local partial files, incomplete multipart uploads.

    Safe because runs of pg_backup never overlap (max_active_runs=1) and each target's names carry
    the target: nothing of another target, and no finished backup, is touched. A cleanup that
    fails is reported, not fatal: the backup itself matters more than its predecessor's litter.
    """
    removed: list[str] = []
    errors: list[str] = []
    # Only the backup tree ({local_root}/{tier}/...): the drill's downloads and anything else stay.
    walks = (os.walk(os.path.join(cfg.local_root, tier)) for tier in naming.TIERS)
    for dirpath, dirnames, filenames in (step for walk in walks for step in walk):
        for name in sorted(filenames) + sorted(dirnames):
            if not _leftover_of(name, target, cfg.timezone):
                continue
            path = os.path.join(dirpath, name)
            try:
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path)
                    dirnames.remove(name)  # not walked into: it is gone
                else:
                    os.unlink(path)
                removed.append(path)
            except FileNotFoundError:
                pass
            except OSError as exc:
                errors.append(f"cannot remove {path}: {exc.strerror}")
    aborted: list[dict] = []
    if client is not None:
        try:
            aborted = s3.abort_uploads_matching(client, cfg.bucket, cfg.prefix.rstrip("/") + "/",
                                                     lambda key: _backup_key_of(key, cfg, target))
        except BackupError as exc:
            errors.append(str(exc))
    cleaned = {"partial_files": removed, "multipart_uploads": [a["key"] for a in aborted], "errors": errors}
    if removed or aborted:
        log.warning("removed what interrupted runs of %s left: %d partial file(s) %s, %d incomplete multipart "
                    "upload(s) %s", target, len(removed), removed, len(aborted),
                    [f"{a['key']} (started {a['initiated']})" for a in aborted])
    for err in errors:
        log.warning("cleaning the leftovers of %s: %s", target, err)
    return cleaned


def _free_key_for_stream(client, cfg: Config, key: str, run_marker: str | None) -> str | None:
    """Before streaming to ``key``: remove our own run's unfinished object there, refuse anything else.

    An object with no .sha256 and no .json, streamed by this same DAG run (its metadata says so), is
    what an earlier try left when it died after S3 assembled the object (e.g. the answer to
    CompleteMultipartUpload was lost): it never became a backup and its row counts died with that
    try, so this try dumps again. Returns the key removed, or None.
    """
    meta = s3.head(client, cfg.bucket, key)
    if meta is None:
        return None
    sidecars = s3.sidecars_present(client, cfg.bucket, key)
    own = run_marker is not None and meta.get("Metadata", {}).get(RUN_METADATA) == run_marker
    if own and not sidecars:
        log.warning("s3://%s/%s was left unfinished (no .sha256, no .json) by an earlier try of this run (%s); "
                    "removing it to dump again", cfg.bucket, key, run_marker)
        client.delete_object(Bucket=cfg.bucket, Key=key)
        return key
    state = (f"a finished backup (with {' and '.join(sidecars)})" if sidecars else
             "an unfinished object of another run (no .sha256, no .json)")
    raise ObjectExists(f"s3://{cfg.bucket}/{key} already exists, {state}; refusing to overwrite it")


def _metadata_value(text: str) -> str:
    """S3 user metadata is ASCII: a run id with other characters is escaped, not refused."""
    return text.encode("ascii", "backslashreplace").decode()


def dump_step(cfg: Config, target: Target, conn: PgConn, tier: str, moment: dt.datetime,
              client=None, run_marker: str | None = None) -> dict[str, Any]:
    """pg_dump to the local tree; with ``stream_upload`` (and a client) the object reaches S3 as it is
    written, so the upload costs almost no extra time; the upload step then proves it.

    First, what killed runs of this target left is removed (``cleaned`` in the result). ``run_marker``
    ("dag_id/run_id") is written on the streamed object, so a retry of the same run can tell its own
    unfinished object from anyone else's.

    With ``encryption.recipients`` the dump is encrypted as it is written (``.age``); without, the run
    says so with a warning: no client-side encryption is a visible choice."""
    basename = naming.backup_basename(target.name, tier, moment, cfg.timezone)
    out_dir = naming.local_dir(cfg.local_root, tier, moment, cfg.timezone)
    recipients = cfg.encryption.recipients
    if not recipients:
        log.warning("backup of %s is not client-side encrypted (encryption.recipients is empty)", target.name)
    file = artifact_name(basename, cfg.dump_format, cfg.dump_compression, encrypted=bool(recipients))
    streaming = cfg.stream_upload and client is not None
    if streaming:
        s3.check_bucket(client, cfg.bucket)  # a missing bucket is named before anything is touched
    cleaned = clean_leftovers(cfg, target.name, client)
    uploader = None
    if streaming:
        key = s3_key(cfg, tier, file)
        cleaned["unfinished_object"] = _free_key_for_stream(client, cfg, key, run_marker)
        local = os.path.join(out_dir, file)
        if cleaned["unfinished_object"] and os.path.isfile(local) and not os.path.exists(local + ".sha256"):
            # The same try renamed its file before dying: unchecksummed, it is that unfinished dump.
            os.unlink(local)
            cleaned["partial_files"].append(local)
        uploader = s3.StreamingUpload(client, cfg.bucket, key,
                                           storage_class=cfg.storage_class, sse=cfg.sse, kms_key_id=cfg.kms_key_id,
                                           metadata={RUN_METADATA: _metadata_value(run_marker)} if run_marker else None)
    result = run_dump(
        conn,
        out_dir,
        basename,
        fmt=cfg.dump_format,
        compression=cfg.dump_compression,
        jobs=cfg.dump_jobs,
        part_size=cfg.multipart_chunk_mb * 1024 * 1024,
        pg_bin_root=cfg.pg_bin_root,
        uploader=uploader,
        lock_wait_timeout=cfg.lock_wait_timeout_seconds,
        timeout=cfg.task_timeout_minutes * 60,
        recipients=recipients,
        exclude_tables=target.exclude_tables,
        exclude_table_data=target.exclude_table_data,
    )
    if recipients:
        log.info("%s is encrypted (age) for %d recipient(s): %s", result.file, len(recipients),
                 age.describe(recipients))
    return {**result.to_dict(), "target": target.name, "tier": tier, "streamed": uploader is not None,
            "cleaned": cleaned}


def checksum_step(dump: dict[str, Any]) -> dict[str, Any]:
    """Write the `sha256sum -c` sidecar from the digest computed while dumping (no second read)."""
    size = os.stat(dump["path"]).st_size
    if size != dump["size"]:
        raise IntegrityError(f"{dump['path']} is {size} bytes, but the dump wrote {dump['size']}: it changed")
    sidecar = dump["path"] + ".sha256"
    tmp = sidecar + ".tmp"
    with open(tmp, "w") as f:
        f.write(manifest.sha256_line(dump["sha256"], dump["file"]))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, sidecar)
    return {"path": sidecar, "sha256": dump["sha256"], "file": dump["file"]}


def upload_step(client, cfg: Config, dump: dict[str, Any], checksum: dict[str, Any]) -> dict[str, Any]:
    key = s3_key(cfg, dump["tier"], dump["file"])
    result = s3.upload_file(
        client,
        dump["path"],
        cfg.bucket,
        key,
        size=dump["size"],
        sha256_hex=dump["sha256"],
        part_sha256=dump["part_sha256"],
        part_size=dump["part_size"],
        storage_class=cfg.storage_class,
        sse=cfg.sse,
        kms_key_id=cfg.kms_key_id,
    )
    with open(checksum["path"], "rb") as f:
        s3.put_small(
            client, cfg.bucket, key + ".sha256", f.read(), content_type="text/plain", sse=cfg.sse,
            kms_key_id=cfg.kms_key_id,
        )
    return result.to_dict()


def manifest_step(
    client, cfg: Config, dump: dict[str, Any], upload: dict[str, Any], verification: dict[str, Any] | None,
    dag_id: str | None, run_id: str | None,
) -> dict[str, Any]:
    """Write the manifest locally and in S3, or add this verdict to the one already there.

    A manifest is never overwritten, except for its verdict: a later verification of the same dump
    (a retry or a re-run; same file, same SHA-256, every other field equal, else ObjectExists) is
    added to ``verifications`` and may turn ``verified`` true.
    """
    doc = manifest.build_manifest(
        target=dump["target"], tier=dump["tier"], dump=dump, upload=upload, bucket=cfg.bucket,
        prefix=cfg.prefix, dag_id=dag_id, run_id=run_id, verification=verification,
    )
    key = upload["key"] + ".json"
    local = dump["path"] + ".json"
    in_s3 = s3.read_small(client, cfg.bucket, key)
    final = doc
    if os.path.exists(local):
        with open(local, "rb") as f:
            final = manifest.with_verdicts(manifest.loads(f.read(), source=local), final, source=local)
    if in_s3 is not None:
        source = f"s3://{cfg.bucket}/{key}"
        final = manifest.with_verdicts(manifest.loads(in_s3[0], source=source), final, source=source)
    text = manifest.dumps(final)
    tmp = local + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, local)
    if in_s3 is None:
        s3.put_small(
            client, cfg.bucket, key, text.encode(), content_type="application/json",
            sse=cfg.sse, kms_key_id=cfg.kms_key_id,
        )
    elif in_s3[0] != text.encode():
        s3.replace_manifest(client, cfg.bucket, key, text.encode(), etag=in_s3[1], sse=cfg.sse,
                                 kms_key_id=cfg.kms_key_id)
    return final


def catalog_row(
    *,
    target: str,
    tier: str | None,
    moment: dt.datetime,
    dump: dict | None,
    upload: dict | None,
    doc: dict | None,
    error: str | None,
    failed_step: str | None,
    bucket: str,
    dag_id: str | None,
    run_id: str | None,
) -> dict[str, Any]:
    """One backup_logs row: SUCCESS only when the manifest was written and the restore test passed."""
    ok = doc is not None and bool(doc.get("verified")) and error is None
    return {
        "backup_date": (dump or {}).get("snapshot_time") or moment.isoformat(),
        "backup_type": tier or "daily",
        "target": target,
        "database_name": (dump or {}).get("database"),
        "file_name": (dump or {}).get("file"),
        "file_size_bytes": (dump or {}).get("size"),
        "checksum_sha256": (dump or {}).get("sha256"),
        "duration_seconds": (dump or {}).get("duration_seconds"),
        "status": "SUCCESS" if ok else "FAILED",
        "error_message": None if ok else (error or "an upstream step failed"),
        "failed_step": None if ok else failed_step,
        "s3_bucket": bucket,
        "s3_key": (upload or {}).get("key"),
        "s3_uploaded": upload is not None,
        "verified": bool(doc and doc.get("verified")),
        "verified_at": (doc or {}).get("verification", {}).get("checked_at") if doc and doc.get("verified") else None,
        "dag_id": dag_id,
        "run_id": run_id,
        # NULL: no dump, so nothing to say (the monitor reads this column)
        "encrypted": None if dump is None else bool(dump.get("encryption")),
    }


def record_step(pg, row: dict[str, Any]) -> int:
    return backup_logs.record(pg, row)


def failed_step(results: Mapping[str, Any], errors: Mapping[str, str | None],
                order: Sequence[str]) -> tuple[str | None, str | None]:
    """``(step, error)`` of the run's failure, or ``(None, None)`` when every step completed.

    The first step in ``order`` that pushed an error is the one that failed; a step with no error
    but no result either (killed, or never run) counts when the last step, whose result completes
    the backup, has none: then the first step without a result did not complete.
    """
    for name in order:
        if errors.get(name):
            return name, errors[name]
    if results.get(order[-1]) is None:
        step = next((name for name in order if results.get(name) is None), None)
        return step, f"step {step} did not complete (see its log)"
    return None, None


def run_tier(tier_param: str, moment: dt.datetime, timezone: str, dump: dict | None) -> str | None:
    """The tier of the run: the dump's, else the one the run would have had (None if the param is bad)."""
    if isinstance(dump, dict) and "tier" in dump:
        return dump["tier"]
    try:
        return naming.resolve_tier(tier_param, moment, timezone)
    except ValueError:
        return None


def outcome_row(*, target: str, tier_param: str, moment: dt.datetime, cfg: Config, results: Mapping[str, Any],
                errors: Mapping[str, str | None], order: Sequence[str], dag_id: str | None,
                run_id: str | None) -> dict[str, Any]:
    """The run's backup_logs row from every step's result and error (see :func:`failed_step`)."""
    step, error = failed_step(results, errors, order)
    dump = results.get("dump")
    return catalog_row(
        target=target, tier=run_tier(tier_param, moment, cfg.timezone, dump), moment=moment, dump=dump,
        upload=results.get("upload"), doc=results.get("manifest"), error=error, failed_step=step,
        bucket=cfg.bucket, dag_id=dag_id, run_id=run_id,
    )


def record_outcome(connect: Callable[[], Any], row: dict[str, Any]) -> dict[str, Any]:
    """Write ``row`` into the catalog (``connect()`` opens it); returns the row with ``recorded`` (and ``id``).

    A FAILED row that cannot be written is logged, not raised: the failure itself was already alerted
    by the failing task, and losing its row (often the catalog is the database that is down) must not
    page a second time. A SUCCESS row that cannot be written raises.
    """
    try:
        pg = connect()
        try:
            row_id = record_step(pg, row)
        finally:
            pg.close()
    except BackupError as exc:
        if row["status"] == "FAILED":
            log.error("could not record the failed backup in the catalog: %s", exc)
            return {**row, "recorded": False}
        raise
    log.info("backup_logs row %s: %s %s", row_id, row["status"], row["error_message"] or "")
    return {**row, "recorded": True, "id": row_id}


def verify_step(admin: PgConn, database: str, dump: dict[str, Any], cfg: Config,
                read_identity: Callable[[], str] | None = None) -> dict[str, Any]:
    """Restore ``dump`` into the scratch ``database`` on ``admin``'s server and check it (the verdict as a dict).

    An encrypted dump is decrypted with the identity ``read_identity()`` returns (the Airflow connection
    ``encryption.identity_conn_id``; called only for an encrypted dump): a missing or wrong identity fails
    here, naming the connection and the dump's recipients, before any restore work. The plaintext lives
    in :func:`verify.scratch_dir` only while pg_restore reads it."""
    encryption = dump.get("encryption")
    identity = None
    if encryption:
        identity = verify.read_identity(read_identity, encryption, cfg.encryption.identity_conn_id, dump["file"])
    return verify.verify_backup(
        admin, database, dump["path"], fmt=dump["format"], expected_counts=dump["table_counts"],
        backup_server_version_num=dump["server_version_num"], jobs=cfg.restore_jobs,
        pg_bin_root=cfg.pg_bin_root, required_tables=cfg.verify_required_tables,
        timeout=cfg.task_timeout_minutes * 60, encryption=encryption, identity=identity,
        identity_conn_id=cfg.encryption.identity_conn_id, decrypt_dir=verify.scratch_dir(cfg.local_root, database),
        **verify.exclusions_of(dump),
    ).to_dict()


def drop_scratch_step(admin: PgConn, database: str, cfg: Config) -> dict[str, Any]:
    """Teardown of a restore test: its decryption directory is removed (whatever happened), then the database."""
    try:
        removed = verify.remove_scratch_dir(cfg.local_root, database)
    finally:
        verify.drop_database(admin, database)
    return {"dropped": database, "scratch_dir_removed": removed}


def require_verified(dump: dict[str, Any], result: dict[str, Any]) -> None:
    """A verdict that is not ``verified`` fails the backup, naming the first mismatches."""
    if result["verified"]:
        return
    mismatches = result["mismatches"]
    more = f" (+{len(mismatches) - 5} more)" if len(mismatches) > 5 else ""
    raise VerificationFailed(f"{dump['file']} failed verification: " + "; ".join(mismatches[:5]) + more)


def failed_verdict(error: str, *, transient: bool, try_number: int) -> dict[str, Any]:
    """The verdict of a verification that raised: ``transient`` when the restore server, not the dump, failed."""
    return {"verified": False, "error": redact(error), "transient": transient,
            "checked_at": dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z"), "try_number": try_number}


def record_interim_verdict(client: Callable[[], Any], cfg: Config, dump: dict[str, Any], upload: dict | None,
                           verdict: dict[str, Any], dag_id: str | None, run_id: str | None) -> bool:
    """A failed verdict into the manifest now, while the retry waits, so the object is described.

    Best effort (``client()`` opens S3): the verification's own error is what counts. Nothing is
    written when nothing was uploaded. Returns whether the manifest took it.
    """
    if not isinstance(upload, dict):
        return False
    try:
        manifest_step(client(), cfg, dump, upload, verdict, dag_id, run_id)
    except (BackupError, ConfigError) as exc:
        log.warning("could not record the failed verification in the manifest: %s", exc)
        return False
    log.info("recorded the failed verification (try %s) in the manifest", verdict.get("try_number"))
    return True


def manifest_verdict(verification: dict | None, error: str | None) -> dict[str, Any]:
    """The verdict the manifest records: the verify step's, else why there is none."""
    return verification or {"verified": False, "error": error or "verification did not run"}


SUCCESS_COLOR = "#36a64f"


def success_attachments(text: str) -> list[dict[str, str]]:
    """The Slack attachment of the success post (the runbook's notify_slack SUCCESS)."""
    return [{"color": SUCCESS_COLOR, "title": "Database Backup SUCCESS", "text": text, "footer": "Glimpse Backup System"}]


def success_text(doc: dict[str, Any]) -> str:
    """The Slack success message, the runbook's notify_slack SUCCESS with the facts that matter."""
    size_mb = doc["size"] / 1e6
    dur = doc["duration_seconds"]
    rate = size_mb / dur if dur else 0.0
    v = doc.get("verification") or {}
    return (
        f":white_check_mark: Database backup SUCCESS: {doc['target']} ({doc['type']})\n"
        f"s3://{doc['s3']['bucket']}/{doc['s3']['key']}\n"
        f"size {size_mb:,.1f} MB, dump {dur:.1f} s ({rate:,.1f} MB/s), "
        f"{sum(doc['table_counts'].values()):,} rows in {len(doc['table_counts'])} tables\n"
        f"verified: restored in {v.get('restore_seconds', 0):.1f} s, {v.get('tables_found', 0)} tables and "
        f"{v.get('rows_checked', 0):,} rows match the dump snapshot, amcheck {v.get('amcheck', 'n/a')}\n"
        f"sha256 {doc['checksum']}"
    )
