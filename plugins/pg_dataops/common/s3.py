"""S3 side of a backup: upload without overwriting, then prove the object is the file. Airflow-free.

Works on any boto3 S3 client; the operators get theirs from the amazon provider's ``S3Hook``, so the
endpoint (MinIO, moto) and credentials come from the Airflow connection.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

from boto3.exceptions import Boto3Error
from botocore.exceptions import BotoCoreError, ClientError
from s3transfer.utils import ChunksizeAdjuster

from pg_dataops.common.errors import BackupError, BucketMissing, IntegrityError, ObjectExists, UploadFailed
from pg_dataops.common.naming import TIERS

log = logging.getLogger(__name__)


@dataclass
class UploadResult:
    bucket: str
    key: str
    size: int
    sha256: str
    etag: str
    storage_class: str
    server_side_encryption: str
    checksum_verified: str  # how the object was proven equal to the local file
    already_present: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


# Conditional writes (If-None-Match: *): S3 (since 2024-08), MinIO and moto refuse to create a key
# that exists, so "never overwrite" holds even against a writer racing us between HEAD and PUT.
NO_OVERWRITE = {"IfNoneMatch": "*"}


def _precondition_failed(exc: Exception) -> bool:
    """The key exists (412), or another conditional write to it is in progress (409)."""
    return isinstance(exc, ClientError) and _code(exc) in ("PreconditionFailed", "412", "ConditionalRequestConflict")


def _conditions_unsupported(exc: Exception) -> bool:
    """An endpoint that does not implement conditional writes: fall back to HEAD-then-write."""
    if not isinstance(exc, ClientError):
        return False
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return _code(exc) in ("NotImplemented", "501") or status == 501


def _write_once(call, what: str, **kwargs):
    """``call(**kwargs, IfNoneMatch="*")``; without the condition when the endpoint does not implement it."""
    try:
        return call(**kwargs, **NO_OVERWRITE)
    except ClientError as exc:
        if not _conditions_unsupported(exc):
            raise
        log.warning("%s: the S3 endpoint does not implement conditional writes (%s); relying on the check "
                    "made just before", what, describe_error(exc))
        return call(**kwargs)


def describe_error(exc: Exception) -> str:
    # boto3's S3UploadFailedError wraps the ClientError that says what S3 answered.
    inner = exc.__cause__ or exc.__context__
    if not isinstance(exc, ClientError) and isinstance(inner, ClientError):
        exc = inner
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        return f"{err.get('Code', 'error')}: {err.get('Message', '')}".strip()
    # S3UploadFailedError wraps the ClientError in its text: keep only the cause.
    text = str(exc)
    return text.split(": ", 1)[1] if text.startswith("Failed to upload ") and ": " in text else text


def check_bucket(client, bucket: str) -> None:
    try:
        client.head_bucket(Bucket=bucket)
    except ClientError as exc:
        code = _code(exc)
        if code in ("404", "NoSuchBucket", "NotFound"):
            raise BucketMissing(
                f"S3 bucket {bucket!r} does not exist at {client.meta.endpoint_url}; "
                "create it (with versioning and a lifecycle for incomplete multipart uploads) or fix 'bucket'"
            ) from None
        if code in ("403", "AccessDenied"):
            raise UploadFailed(f"access denied to S3 bucket {bucket!r}: check the backup_s3 credentials") from None
        raise UploadFailed(f"cannot reach S3 bucket {bucket!r}: {describe_error(exc)}") from None
    except BotoCoreError as exc:
        raise UploadFailed(f"cannot reach S3 at {client.meta.endpoint_url}: {exc}") from None


def head(client, bucket: str, key: str) -> dict | None:
    try:
        return client.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    except ClientError as exc:
        if _code(exc) in ("404", "NoSuchKey", "NotFound"):
            return None
        raise


def expected_composite(sha256_hex: str, part_sha256: list[str], size: int, part_size: int,
                       multipart: bool | None = None) -> str:
    """The base64 SHA-256 S3 reports: of the bytes for one PUT, of the part digests for multipart.

    ``multipart`` None means boto3's rule: a single PUT below the multipart threshold.
    """
    if multipart is None:
        multipart = size >= part_size
    if not multipart:
        return base64.b64encode(bytes.fromhex(sha256_hex)).decode()
    joined = b"".join(bytes.fromhex(p) for p in part_sha256)
    return base64.b64encode(hashlib.sha256(joined).digest()).decode()


def abort_incomplete_uploads(client, bucket: str, key: str) -> int:
    """Abort multipart uploads left for ``key``; they cost storage and are invisible in listings."""
    aborted = 0
    try:
        resp = client.list_multipart_uploads(Bucket=bucket, Prefix=key)
        for up in resp.get("Uploads", []):
            if up["Key"] == key:
                client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=up["UploadId"])
                aborted += 1
    except (ClientError, BotoCoreError) as exc:
        log.warning("could not list/abort multipart uploads of %s: %s", key, describe_error(exc))
    return aborted


def abort_uploads_matching(client, bucket: str, prefix: str, is_ours) -> list[dict]:
    """Abort every incomplete multipart upload under ``prefix`` whose key ``is_ours(key)`` accepts.

    What a worker killed mid-upload leaves: invisible in listings, billed until aborted. Returns
    ``[{"key", "upload_id", "initiated"}]`` of the aborted ones.
    """
    aborted = []
    try:
        for page in client.get_paginator("list_multipart_uploads").paginate(Bucket=bucket, Prefix=prefix):
            for up in page.get("Uploads", []):
                if not is_ours(up["Key"]):
                    continue
                try:
                    client.abort_multipart_upload(Bucket=bucket, Key=up["Key"], UploadId=up["UploadId"])
                except ClientError as exc:
                    if _code(exc) not in ("NoSuchUpload", "404"):  # finished or aborted meanwhile: gone anyway
                        raise
                initiated = up.get("Initiated")
                aborted.append({"key": up["Key"], "upload_id": up["UploadId"],
                                "initiated": initiated.isoformat() if hasattr(initiated, "isoformat") else initiated})
    except (ClientError, BotoCoreError) as exc:
        raise UploadFailed(f"cannot list or abort the incomplete multipart uploads under s3://{bucket}/{prefix}: "
                           f"{describe_error(exc)}") from None
    return aborted


def sidecars_present(client, bucket: str, key: str) -> list[str]:
    """Which of the finishing sidecars (.sha256, .json) exist beside ``key``."""
    return [suffix for suffix in (".sha256", ".json") if head(client, bucket, key + suffix) is not None]


def _extra_args(storage_class: str, sse: str, kms_key_id: str | None, sha256_hex: str) -> dict:
    extra = {
        "StorageClass": storage_class,
        "ServerSideEncryption": sse,
        "ChecksumAlgorithm": "SHA256",  # S3 checks every part on arrival
        "Metadata": {"sha256": sha256_hex},
    }
    if sse == "aws:kms" and kms_key_id:
        extra["SSEKMSKeyId"] = kms_key_id
    return extra


def upload_file(
    client,
    path: str,
    bucket: str,
    key: str,
    *,
    size: int,
    sha256_hex: str,
    part_sha256: list[str],
    part_size: int,
    storage_class: str = "STANDARD_IA",
    sse: str = "AES256",
    kms_key_id: str | None = None,
    max_concurrency: int = 4,
) -> UploadResult:
    """Upload ``path`` to ``bucket/key`` (multipart above ``part_size``), never overwriting a key.

    If the key exists with the same SHA-256 and size (a retried task), that object is accepted.
    """
    check_bucket(client, bucket)
    existing = head(client, bucket, key)
    if existing is not None:
        if _same_content(existing, size, sha256_hex, part_sha256, part_size):
            # Streamed during the dump, or a retried task: the object is this file; prove it below.
            log.info("s3://%s/%s already holds this backup (same SHA-256); not uploading again", bucket, key)
            return _verify(client, bucket, key, size, sha256_hex, part_sha256, part_size, already=True)
        raise ObjectExists(f"s3://{bucket}/{key} already exists with other content; refusing to overwrite it")

    adjusted = ChunksizeAdjuster().adjust_chunksize(part_size, size)
    if adjusted != part_size:
        raise UploadFailed(
            f"a {size / 1e9:.1f} GB file needs parts of {adjusted} bytes (S3 allows 10,000 parts); "
            f"raise multipart_chunk_mb above {part_size // (1024 * 1024)}"
        )
    extra = _extra_args(storage_class, sse, kms_key_id, sha256_hex)
    try:
        if size < part_size:  # boto3's rule, which expected_composite follows: one PUT below a part
            _put_file(client, path, bucket, key, size, sha256_hex, extra)
        else:
            _multipart_file(client, path, bucket, key, size, part_sha256, part_size, extra, max_concurrency)
    except ObjectExists:
        # Created by someone else between our HEAD and our write: ours only if the content is.
        existing = head(client, bucket, key)
        if existing is not None and _same_content(existing, size, sha256_hex, part_sha256, part_size):
            return _verify(client, bucket, key, size, sha256_hex, part_sha256, part_size, already=True)
        raise
    except (ClientError, BotoCoreError, Boto3Error, OSError, ValueError, UploadFailed) as exc:
        aborted = abort_incomplete_uploads(client, bucket, key)  # a leftover costs money
        cause = getattr(exc, "cause", None) or describe_error(exc)
        raise UploadFailed(
            f"upload of {path} to s3://{bucket}/{key} failed: {cause}"
            + (f" (aborted {aborted} incomplete multipart upload)" if aborted else "")
        ) from None
    return _verify(client, bucket, key, size, sha256_hex, part_sha256, part_size, already=False)


def _put_file(client, path: str, bucket: str, key: str, size: int, sha256_hex: str, extra: dict) -> None:
    with open(path, "rb") as f:
        body = f.read(size + 1)
    if len(body) != size:
        raise UploadFailed(f"{path} is {len(body)} bytes, not the {size} the dump wrote: it changed")
    checksum = base64.b64encode(bytes.fromhex(sha256_hex)).decode()
    try:
        _write_once(client.put_object, f"s3://{bucket}/{key}", Bucket=bucket, Key=key, Body=body,
                    ChecksumSHA256=checksum, **extra)
    except ClientError as exc:
        if _precondition_failed(exc):
            raise ObjectExists(f"s3://{bucket}/{key} was created by another writer during the upload; "
                               "refusing to overwrite it") from None
        raise


def _multipart_file(client, path: str, bucket: str, key: str, size: int, part_sha256: list[str], part_size: int,
                    extra: dict, max_concurrency: int) -> None:
    """The file's parts, each with the SHA-256 taken while dumping, completed only if the key is still free.

    (boto3's upload_file cannot pass If-None-Match to CompleteMultipartUpload.)"""
    if len(part_sha256) != -(-size // part_size):
        raise UploadFailed(f"{path}: {len(part_sha256)} part digests for {size} bytes in parts of {part_size}")
    up = StreamingUpload(client, bucket, key, storage_class=extra["StorageClass"], sse=extra["ServerSideEncryption"],
                         kms_key_id=extra.get("SSEKMSKeyId"), max_inflight=max_concurrency,
                         metadata=extra.get("Metadata"))
    up.create()
    try:
        up.attach(path)
        for number, digest in enumerate(part_sha256, start=1):
            offset = (number - 1) * part_size
            up.submit_part(number, offset, min(part_size, size - offset), digest)
        up.complete()
    except BaseException:
        up.abort()
        raise


def _is_multipart(meta: dict) -> bool:
    return "-" in meta.get("ETag", "").strip('"')  # S3 (and MinIO, moto) tag multipart objects "<md5>-<parts>"


def _same_content(meta: dict, size: int, sha256_hex: str, part_sha256: list[str], part_size: int) -> bool:
    if meta["ContentLength"] != size:
        return False
    if meta.get("Metadata", {}).get("sha256"):
        return meta["Metadata"]["sha256"] == sha256_hex
    remote = meta.get("ChecksumSHA256", "").split("-")[0]
    return bool(remote) and remote == expected_composite(sha256_hex, part_sha256, size, part_size,
                                                         multipart=_is_multipart(meta))


def _verify(client, bucket, key, size, sha256_hex, part_sha256, part_size, *, already: bool) -> UploadResult:
    meta = head(client, bucket, key)
    problem = None
    if meta is None:
        problem = "object is missing after upload"
    elif meta["ContentLength"] != size:
        problem = f"size {meta['ContentLength']} != local {size}"
    elif meta.get("Metadata", {}).get("sha256") not in (None, sha256_hex):
        problem = "sha256 metadata differs from the local file"
    elif not meta.get("Metadata", {}).get("sha256") and not meta.get("ChecksumSHA256"):
        problem = "the object carries neither sha256 metadata nor an S3 checksum to prove it"
    how = "size+sha256-metadata"
    if problem is None and meta.get("ChecksumSHA256"):
        remote = meta["ChecksumSHA256"].split("-")[0]
        expected = expected_composite(sha256_hex, part_sha256, size, part_size, multipart=_is_multipart(meta))
        if remote != expected:
            problem = f"S3 checksum {remote} != expected {expected} computed while dumping"
        how = "s3-sha256-checksum"
    if problem:
        if not already and meta is not None:
            # Our own upload is wrong: remove it so nobody restores it, and a retry can upload again.
            client.delete_object(Bucket=bucket, Key=key)
        raise IntegrityError(f"s3://{bucket}/{key} failed verification: {problem}")
    return UploadResult(
        bucket=bucket,
        key=key,
        size=size,
        sha256=sha256_hex,
        etag=meta.get("ETag", "").strip('"'),
        storage_class=meta.get("StorageClass", "STANDARD"),
        server_side_encryption=meta.get("ServerSideEncryption", ""),
        checksum_verified=how,
        already_present=already,
    )


def put_small(client, bucket: str, key: str, body: bytes, *, content_type: str, sse: str, kms_key_id: str | None) -> None:
    """Upload a sidecar (.sha256, .json) with the same no-overwrite rule and an S3-checked SHA-256."""
    digest = hashlib.sha256(body).digest()
    existing = head(client, bucket, key)
    if existing is not None:
        if existing.get("Metadata", {}).get("sha256") == digest.hex():
            return
        raise ObjectExists(f"s3://{bucket}/{key} already exists with other content; refusing to overwrite it")
    extra = {"ServerSideEncryption": sse}
    if sse == "aws:kms" and kms_key_id:
        extra["SSEKMSKeyId"] = kms_key_id
    try:
        _write_once(
            client.put_object,
            f"s3://{bucket}/{key}",
            Bucket=bucket,
            Key=key,
            Body=body,
            ContentType=content_type,
            Metadata={"sha256": digest.hex()},
            ChecksumSHA256=base64.b64encode(digest).decode(),
            **extra,
        )
    except ClientError as exc:
        if _precondition_failed(exc):
            # Someone wrote it between our HEAD and our PUT (or our own PUT's lost answer was retried).
            raced = head(client, bucket, key)
            if raced is not None and raced.get("Metadata", {}).get("sha256") == digest.hex():
                return
            raise ObjectExists(f"s3://{bucket}/{key} was created by another writer meanwhile; refusing to "
                               "overwrite it") from None
        raise UploadFailed(f"upload of s3://{bucket}/{key} failed: {describe_error(exc)}") from None
    except BotoCoreError as exc:
        raise UploadFailed(f"upload of s3://{bucket}/{key} failed: {describe_error(exc)}") from None


class StreamingUpload:
    """A multipart upload fed part by part while pg_dump is still writing the file.

    Each part is read back from the file being written (page cache, by ``os.pread`` on a descriptor
    opened at the start, so the later rename does not matter) and sent with its SHA-256, which S3
    checks on arrival. At most ``max_inflight`` parts are in flight: the dump waits rather than
    memory growing. Nothing is visible under the key until :meth:`complete`; :meth:`abort` leaves
    nothing behind.
    """

    def __init__(self, client, bucket: str, key: str, *, storage_class: str, sse: str, kms_key_id: str | None,
                 max_inflight: int = 2, metadata: dict[str, str] | None = None):
        import threading
        from concurrent.futures import ThreadPoolExecutor

        self.client, self.bucket, self.key = client, bucket, key
        self._extra = {"StorageClass": storage_class, "ServerSideEncryption": sse, "ChecksumAlgorithm": "SHA256"}
        if sse == "aws:kms" and kms_key_id:
            self._extra["SSEKMSKeyId"] = kms_key_id
        if metadata:
            self._extra["Metadata"] = metadata
        self._lengths: list[int] = []
        self._pool = ThreadPoolExecutor(max_workers=max_inflight, thread_name_prefix="s3-part")
        self._slots = threading.BoundedSemaphore(max_inflight)
        self._futures: list = []
        self._fd: int | None = None
        self.upload_id: str | None = None

    def start(self) -> None:
        """Before pg_dump starts: the bucket must exist and the key must be free (never overwrite)."""
        check_bucket(self.client, self.bucket)
        if head(self.client, self.bucket, self.key) is not None:
            raise ObjectExists(f"s3://{self.bucket}/{self.key} already exists; refusing to overwrite it")
        self.create()

    def create(self) -> None:
        try:
            resp = self.client.create_multipart_upload(Bucket=self.bucket, Key=self.key, **self._extra)
        except (ClientError, BotoCoreError) as exc:
            raise UploadFailed(f"cannot start the upload to s3://{self.bucket}/{self.key}: {describe_error(exc)}") from None
        self.upload_id = resp["UploadId"]

    def attach(self, path: str) -> None:
        self._fd = os.open(path, os.O_RDONLY)

    def submit_part(self, number: int, offset: int, length: int, sha256_hex: str) -> None:
        self._raise_if_failed()
        self._slots.acquire()  # backpressure: the dump waits for S3 instead of buffering
        self._lengths.append(length)
        future = self._pool.submit(self._put, number, offset, length, sha256_hex)
        future.add_done_callback(lambda _: self._slots.release())
        self._futures.append(future)

    def _put(self, number: int, offset: int, length: int, sha256_hex: str) -> dict:
        body = os.pread(self._fd, length, offset)
        if len(body) != length:
            raise UploadFailed(f"part {number}: read {len(body)} of {length} bytes back from the dump file")
        checksum = base64.b64encode(bytes.fromhex(sha256_hex)).decode()
        resp = self.client.upload_part(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id, PartNumber=number,
                                       Body=body, ChecksumSHA256=checksum)
        return {"PartNumber": number, "ETag": resp["ETag"], "ChecksumSHA256": checksum}

    def _raise_if_failed(self) -> None:
        for f in self._futures:
            if f.done() and f.exception() is not None:
                exc = f.exception()
                raise self._failed(exc) from None

    def complete(self) -> dict:
        """After pg_dump succeeded and every part was submitted: wait, then make the object visible.

        Returns the part count and the two waits that come after pg_dump (the parts still in flight,
        then S3 assembling the object): the only upload time a streamed backup adds to the dump.
        """
        import time

        started = time.monotonic()
        try:
            parts = [f.result() for f in self._futures]
            drained = time.monotonic()
            try:
                # Only if the key is still free: a writer that raced us since start() keeps its object.
                _write_once(self.client.complete_multipart_upload, f"s3://{self.bucket}/{self.key}",
                            Bucket=self.bucket, Key=self.key, UploadId=self.upload_id,
                            MultipartUpload={"Parts": parts})
            except (ClientError, BotoCoreError) as exc:
                # A lost answer (the object was assembled, the reply never came) is a success: the
                # object under the key is exactly our parts. Anything else there is someone else's.
                if not self._completed_as(parts):
                    if _precondition_failed(exc):
                        raise ObjectExists(f"s3://{self.bucket}/{self.key} was created by another writer during "
                                           "this upload; refusing to overwrite it") from None
                    raise
                log.warning("s3://%s/%s: completing the upload answered %s, but the object is there with our "
                            "parts' checksum: completed", self.bucket, self.key, describe_error(exc))
        except (ClientError, BotoCoreError, Boto3Error, OSError) as exc:
            raise self._failed(exc) from None
        finally:
            self._close()
        done = time.monotonic()
        tail = {"parts": len(parts), "drain_seconds": round(drained - started, 3),
                "complete_seconds": round(done - drained, 3)}
        log.info("s3://%s/%s: %d parts; after pg_dump, %.2f s for the last parts and %.2f s for S3 to "
                 "assemble the object", self.bucket, self.key, len(parts), tail["drain_seconds"],
                 tail["complete_seconds"])
        return tail

    def _failed(self, exc: Exception) -> UploadFailed:
        failed = UploadFailed(f"upload of s3://{self.bucket}/{self.key} failed: {describe_error(exc)}")
        failed.cause = describe_error(exc)  # for upload_file's message, which names the local file too
        return failed

    def _completed_as(self, parts: list[dict]) -> bool:
        """Whether the object under the key is the one these parts make (size and composite SHA-256)."""
        try:
            meta = head(self.client, self.bucket, self.key)
        except (ClientError, BotoCoreError):
            return False
        if meta is None or meta["ContentLength"] != sum(self._lengths) or not _is_multipart(meta):
            return False
        joined = b"".join(base64.b64decode(p["ChecksumSHA256"]) for p in parts)
        composite = base64.b64encode(hashlib.sha256(joined).digest()).decode()
        return meta.get("ChecksumSHA256", "").split("-")[0] == composite

    def abort(self) -> None:
        for f in self._futures:
            f.cancel()
        self._pool.shutdown(wait=True, cancel_futures=True)
        if self.upload_id:
            try:
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id)
            except (ClientError, BotoCoreError) as exc:
                log.warning("could not abort the multipart upload of %s: %s", self.key, describe_error(exc))
            abort_incomplete_uploads(self.client, self.bucket, self.key)
        self._close()

    def _close(self) -> None:
        self._pool.shutdown(wait=True)
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def read_small(client, bucket: str, key: str) -> tuple[bytes, str] | None:
    """A sidecar's body and ETag, or None when there is none."""
    try:
        got = client.get_object(Bucket=bucket, Key=key)
        return got["Body"].read(), got["ETag"]
    except ClientError as exc:
        if _code(exc) in ("NoSuchKey", "404", "NotFound"):
            return None
        raise UploadFailed(f"cannot read s3://{bucket}/{key}: {describe_error(exc)}") from None
    except BotoCoreError as exc:
        raise UploadFailed(f"cannot read s3://{bucket}/{key}: {describe_error(exc)}") from None


def replace_manifest(client, bucket: str, key: str, body: bytes, *, etag: str, sse: str,
                     kms_key_id: str | None) -> None:
    """Replace the manifest ``key`` that was read with ``etag``: the one object "never overwrite"
    bends for, and only to update its verification verdict (backup.manifest_step checks that the
    rest is unchanged). If-Match makes a concurrent change fail this write instead of being lost."""
    digest = hashlib.sha256(body).digest()
    extra = {"ServerSideEncryption": sse}
    if sse == "aws:kms" and kms_key_id:
        extra["SSEKMSKeyId"] = kms_key_id
    try:
        client.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/json",
                          Metadata={"sha256": digest.hex()}, ChecksumSHA256=base64.b64encode(digest).decode(),
                          IfMatch=etag, **extra)
    except ClientError as exc:
        if _code(exc) in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
            raise UploadFailed(f"s3://{bucket}/{key} changed while its verdict was being updated; "
                               "not overwriting it (a retry reads it again)") from None
        raise UploadFailed(f"update of s3://{bucket}/{key} failed: {describe_error(exc)}") from None
    except BotoCoreError as exc:
        raise UploadFailed(f"update of s3://{bucket}/{key} failed: {describe_error(exc)}") from None


# --- the backup tree in S3: {prefix}/{tier}/ ----------------------------------------------------------

MAX_MANIFEST_BYTES = 4 * 1024 * 1024  # a real manifest is a few kB; anything bigger is not one


def list_tiers(client, bucket: str, prefix: str, *, error: type[Exception] = BackupError) -> Iterator[tuple[str, str, dict]]:
    """``(tier, tier_prefix, object)`` for every object under ``{prefix}/{tier}/``, the three tiers in order.

    Only the tier folders are listed, so anything else under the prefix is never touched. A listing that
    fails raises ``error`` naming the folder.
    """
    for tier in TIERS:
        tier_prefix = f"{prefix}/{tier}/"
        try:
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=tier_prefix):
                for obj in page.get("Contents", []):
                    yield tier, tier_prefix, obj
        except (ClientError, BotoCoreError) as exc:
            raise error(f"cannot list s3://{bucket}/{tier_prefix}: {describe_error(exc)}") from None


def read_manifests(client, bucket: str, keys: list[str], *, sizes: Mapping[str, int] | None = None,
                   max_workers: int = 8) -> dict[str, tuple[bytes | None, str | None]]:
    """``{key: (body, None) or (None, why not)}`` for many small manifest objects, fetched in parallel.

    An object larger than MAX_MANIFEST_BYTES is not read (by its listed size when ``sizes`` has it, else by
    the GET's ContentLength). Hundreds of small GETs; boto3 clients are thread-safe.
    """
    def fetch(key: str) -> tuple[bytes | None, str | None]:
        if sizes is not None and sizes.get(key, 0) > MAX_MANIFEST_BYTES:
            return None, f"{sizes[key]} bytes is too large for a manifest"
        try:
            resp = client.get_object(Bucket=bucket, Key=key)
            if resp.get("ContentLength", 0) > MAX_MANIFEST_BYTES:
                resp["Body"].close()
                return None, f"{resp['ContentLength']} bytes is too large for a manifest"
            return resp["Body"].read(), None
        except (ClientError, BotoCoreError) as exc:
            return None, f"cannot read s3://{bucket}/{key}: {describe_error(exc)}"

    with ThreadPoolExecutor(max_workers=max_workers) as pool:
        return dict(zip(keys, pool.map(fetch, keys), strict=True))


def usage_by_tier(client, bucket: str, prefix: str) -> dict[str, dict[str, int]]:
    """``{tier: {"bytes": int, "objects": int}}`` of everything under ``{prefix}/{tier}/`` (dumps and sidecars)."""
    check_bucket(client, bucket)  # BucketMissing names the bucket and the endpoint
    usage: dict[str, dict[str, int]] = {tier: {"bytes": 0, "objects": 0} for tier in TIERS}
    for tier, _tier_prefix, obj in list_tiers(client, bucket, prefix):
        usage[tier]["bytes"] += int(obj.get("Size", 0))
        usage[tier]["objects"] += 1
    return usage
