"""S3 side of a backup: upload without overwriting, then prove the object is the file. Airflow-free.

Works on any boto3 S3 client; the operators get theirs from the amazon provider's ``S3Hook``, so the
endpoint (MinIO, moto) and credentials come from the Airflow connection.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
from dataclasses import asdict, dataclass

from boto3.exceptions import Boto3Error
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import BotoCoreError, ClientError
from s3transfer.utils import ChunksizeAdjuster

from pg_dataops.errors import BucketMissing, IntegrityError, ObjectExists, UploadFailed

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
    config = TransferConfig(
        multipart_threshold=part_size, multipart_chunksize=part_size, max_concurrency=max_concurrency
    )
    try:
        client.upload_file(
            path, bucket, key, ExtraArgs=_extra_args(storage_class, sse, kms_key_id, sha256_hex), Config=config
        )
    except (ClientError, BotoCoreError, Boto3Error, OSError, ValueError) as exc:
        # s3transfer aborts its multipart upload on failure; make sure, since a leftover costs money.
        aborted = abort_incomplete_uploads(client, bucket, key)
        raise UploadFailed(
            f"upload of {path} to s3://{bucket}/{key} failed: {describe_error(exc)}"
            + (f" (aborted {aborted} incomplete multipart upload)" if aborted else "")
        ) from None
    return _verify(client, bucket, key, size, sha256_hex, part_sha256, part_size, already=False)


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
        client.put_object(
            Bucket=bucket,
            Key=key,
            Body=body,
            ContentType=content_type,
            Metadata={"sha256": digest.hex()},
            ChecksumSHA256=base64.b64encode(digest).decode(),
            **extra,
        )
    except (ClientError, BotoCoreError) as exc:
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
                 max_inflight: int = 2):
        import threading
        from concurrent.futures import ThreadPoolExecutor

        self.client, self.bucket, self.key = client, bucket, key
        self._extra = {"StorageClass": storage_class, "ServerSideEncryption": sse, "ChecksumAlgorithm": "SHA256"}
        if sse == "aws:kms" and kms_key_id:
            self._extra["SSEKMSKeyId"] = kms_key_id
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
                raise UploadFailed(f"upload of s3://{self.bucket}/{self.key} failed: {describe_error(exc)}") from None

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
            self.client.complete_multipart_upload(
                Bucket=self.bucket, Key=self.key, UploadId=self.upload_id, MultipartUpload={"Parts": parts})
        except (ClientError, BotoCoreError, Boto3Error, OSError) as exc:
            raise UploadFailed(f"upload of s3://{self.bucket}/{self.key} failed: {describe_error(exc)}") from None
        finally:
            self._close()
        done = time.monotonic()
        tail = {"parts": len(parts), "drain_seconds": round(drained - started, 3),
                "complete_seconds": round(done - drained, 3)}
        log.info("s3://%s/%s: %d parts; after pg_dump, %.2f s for the last parts and %.2f s for S3 to "
                 "assemble the object", self.bucket, self.key, len(parts), tail["drain_seconds"],
                 tail["complete_seconds"])
        return tail

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
