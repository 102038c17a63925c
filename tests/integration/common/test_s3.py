"""Uploads to moto server over real HTTP, with a fault-injecting proxy for the midway failure."""

import hashlib
import io
import os

import boto3
import pytest
from botocore.config import Config as BotoConfig
from faultproxy import FaultProxy
from pg_dataops.common import s3 as storage
from pg_dataops.common.errors import BucketMissing, ObjectExists, UploadFailed
from pg_dataops.common.stream import HashingWriter

MB = 1024 * 1024


def make_file(tmp_path, size, part_size=5 * MB, name="b.dump"):
    data = os.urandom(size)
    path = tmp_path / name
    path.write_bytes(data)
    w = HashingWriter(io.BytesIO(), part_size)
    w.write(data)
    sha, parts = w.finish()
    return str(path), sha, parts


def upload(client, path, bucket, key, sha, parts, size, **kw):
    return storage.upload_file(client, path, bucket, key, size=size, sha256_hex=sha, part_sha256=parts,
                               part_size=5 * MB, **kw)


def test_multipart_upload_is_proven_by_composite_checksum(s3, bucket, tmp_path):
    size = 12 * MB + 17
    path, sha, parts = make_file(tmp_path, size)
    c = s3.client()
    res = upload(c, path, bucket, "database/daily/b.dump", sha, parts, size)
    assert res.checksum_verified == "s3-sha256-checksum"
    assert res.etag.endswith("-3")  # three parts: it really was multipart
    head = c.head_object(Bucket=bucket, Key="database/daily/b.dump")
    assert head["StorageClass"] == "STANDARD_IA"
    assert head["ServerSideEncryption"] == "AES256"
    assert head["Metadata"]["sha256"] == sha
    body = c.get_object(Bucket=bucket, Key="database/daily/b.dump")["Body"].read()
    assert hashlib.sha256(body).hexdigest() == sha


def test_single_part_upload(s3, bucket, tmp_path):
    path, sha, parts = make_file(tmp_path, 1000)
    res = upload(s3.client(), path, bucket, "k.dump", sha, parts, 1000)
    assert res.checksum_verified == "s3-sha256-checksum" and not res.etag.endswith("-1")


def test_never_overwrites_but_accepts_its_own_retry(s3, bucket, tmp_path):
    c = s3.client()
    path, sha, parts = make_file(tmp_path, 2000)
    upload(c, path, bucket, "k.dump", sha, parts, 2000)
    again = upload(c, path, bucket, "k.dump", sha, parts, 2000)
    assert again.already_present
    other, sha2, parts2 = make_file(tmp_path, 2000, name="other.dump")
    with pytest.raises(ObjectExists, match="refusing to overwrite"):
        upload(c, other, bucket, "k.dump", sha2, parts2, 2000)
    body = c.get_object(Bucket=bucket, Key="k.dump")["Body"].read()
    assert hashlib.sha256(body).hexdigest() == sha  # the original is untouched


def test_missing_bucket_is_named(s3, tmp_path):
    path, sha, parts = make_file(tmp_path, 100)
    with pytest.raises(BucketMissing, match="S3 bucket 'no-such-bucket-x' does not exist"):
        upload(s3.client(), path, "no-such-bucket-x", "k", sha, parts, 100)


def test_sidecar_put_never_overwrites(s3, bucket):
    c = s3.client()
    storage.put_small(c, bucket, "k.sha256", b"one\n", content_type="text/plain", sse="AES256", kms_key_id=None)
    storage.put_small(c, bucket, "k.sha256", b"one\n", content_type="text/plain", sse="AES256", kms_key_id=None)
    with pytest.raises(ObjectExists):
        storage.put_small(c, bucket, "k.sha256", b"two\n", content_type="text/plain", sse="AES256", kms_key_id=None)


def test_upload_failing_midway_leaves_no_object_and_no_multipart(s3, bucket, tmp_path):
    proxy = FaultProxy(s3.port, fail_from_part=2).start()
    try:
        client = boto3.client(
            "s3", endpoint_url=proxy.endpoint, aws_access_key_id=s3.access_key,
            aws_secret_access_key=s3.secret_key, region_name=s3.region,
            config=BotoConfig(retries={"max_attempts": 2, "mode": "standard"}),
        )
        size = 16 * MB
        path, sha, parts = make_file(tmp_path, size)
        with pytest.raises(UploadFailed, match="upload of .* to s3://.*/database/daily/b.dump failed: .*InternalError"):
            upload(client, path, bucket, "database/daily/b.dump", sha, parts, size)
        assert proxy.failed_requests >= 1
    finally:
        proxy.stop()
    direct = s3.client()
    assert direct.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert direct.list_objects_v2(Bucket=bucket).get("KeyCount") == 0
