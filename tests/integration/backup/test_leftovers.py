"""Leftovers of killed runs, lost answers and racing writers, against PostgreSQL 15 and moto over real HTTP.

- the dump step removes this target's partial files and aborts its incomplete multipart uploads, nobody else's;
- a CompleteMultipartUpload whose answer was lost is a success when the object is ours; a retry finds its own
  complete object and finishes the sidecars; an object of another writer is never overwritten;
- "never overwrite" is a conditional write (If-None-Match: *), with a fallback for endpoints without it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import os

import boto3
import pytest
from botocore.exceptions import ConnectionClosedError
from faultproxy import NoConditionalWritesProxy
from pg_dataops.backup import steps
from pg_dataops.common import s3 as storage
from pg_dataops.common.config import Target, load_config
from pg_dataops.common.errors import ObjectExists, UploadFailed
from pg_dataops.common.stream import HashingWriter

MB = 1024 * 1024
MOMENT = dt.datetime(2026, 11, 24, 17, 0, tzinfo=dt.UTC)  # 2026-11-25 02:00 in Seoul: a daily
FILE = "glimpse_daily_20261125_020000.dump"
KEY = f"database/daily/{FILE}"


def config(tmp_path, bucket, **env):
    return load_config(environ={"PGBACKUP_LOCAL_ROOT": str(tmp_path / "backups"), "PGBACKUP_BUCKET": bucket,
                                "PGBACKUP_MULTIPART_CHUNK_MB": "5", "PGBACKUP_DUMP_COMPRESSION": "0", **env})


def hashed(data: bytes, part_size: int = 5 * MB):
    w = HashingWriter(io.BytesIO(), part_size)
    w.write(data)
    return w.finish()


def start_incomplete_upload(client, bucket, key):
    up = client.create_multipart_upload(Bucket=bucket, Key=key)
    client.upload_part(Bucket=bucket, Key=key, UploadId=up["UploadId"], PartNumber=1, Body=b"x" * 1000)
    return up["UploadId"]


def open_uploads(client, bucket):
    return sorted(u["Key"] for u in client.list_multipart_uploads(Bucket=bucket).get("Uploads", []))


def keys(client, bucket):
    return sorted(o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", []))


def lose_answer_once(client, operation: str):
    """S3 does the operation, the client never hears back: what a dropped connection does after the request."""
    state = {"armed": True}

    def drop(**_):
        if state["armed"]:
            state["armed"] = False
            raise ConnectionClosedError(endpoint_url="s3 (answer lost in the test)")

    client.meta.events.register(f"after-call.s3.{operation}", drop)
    return state


def race_once(client, operation: str, rival, bucket: str, key: str, body: bytes):
    """Another writer creates ``key`` just before our ``operation`` reaches S3."""
    state = {"armed": True}

    def write_first(**_):
        if state["armed"]:
            state["armed"] = False
            rival.put_object(Bucket=bucket, Key=key, Body=body)

    client.meta.events.register(f"before-call.s3.{operation}", write_first)
    return state


# ---- leftovers of killed runs ---------------------------------------------------------------------------------


def test_dump_step_cleans_only_this_targets_leftovers_and_reports_them(cluster, s3, bucket, tmp_path):
    cfg = config(tmp_path, bucket)
    c = s3.client()
    month = tmp_path / "backups/daily/2026/11"
    month.mkdir(parents=True)
    weekly = tmp_path / "backups/weekly/2026/11"
    weekly.mkdir(parents=True)
    ours = [month / "glimpse_daily_20261124_020000.dump.partial",   # killed mid-dump yesterday
            month / f"{FILE}.partial",                                # this very slot, an earlier try
            month / "glimpse_daily_20261123_020000.tar.tarpartial",  # killed while packing a directory dump
            month / "glimpse_daily_20261123_020000.dump.sha256.tmp"]  # killed while writing a sidecar
    theirs = [month / "other_daily_20261124_020000.dump.partial",     # another target's: its own run cleans it
              month / "glimpse_eu_daily_20261124_020000.dump.partial",  # a target whose name starts like ours
              month / "glimpse_daily_20261122_020000.dump",             # a finished backup
              month / "glimpse_daily_20261122_020000.dump.sha256",
              month / "notes.partial"]                                  # not a backup name
    for p in ours + theirs:
        p.write_bytes(b"leftover")
    partial_dir = weekly / "glimpse_weekly_20261122_020000.tar.partial"  # a directory-format dump in progress
    partial_dir.mkdir()
    (partial_dir / "toc.dat").write_bytes(b"toc")
    ours_keys = ["database/daily/glimpse_daily_20261124_020000.dump", "database/weekly/glimpse_weekly_20261122_020000.tar"]
    theirs_keys = ["database/daily/other_daily_20261124_020000.dump", "database/daily/glimpse_eu_daily_20261124_020000.dump",
                   "elsewhere/daily/glimpse_daily_20261124_020000.dump", "database/daily/glimpse_notes.txt"]
    for key in ours_keys + theirs_keys:
        start_incomplete_upload(c, bucket, key)

    res = steps.dump_step(cfg, Target("glimpse", "glimpse_db", "glimpse"), cluster.conn("glimpse"), "daily", MOMENT,
                           c, run_marker="pg_backup/manual__1")

    cleaned = res["cleaned"]
    assert sorted(cleaned["partial_files"]) == sorted(str(p) for p in [*ours, partial_dir])
    assert sorted(cleaned["multipart_uploads"]) == sorted(ours_keys)
    assert cleaned["errors"] == [] and cleaned["unfinished_object"] is None
    assert all(not p.exists() for p in [*ours, partial_dir])
    assert all(p.read_bytes() == b"leftover" for p in theirs)
    assert open_uploads(c, bucket) == sorted(theirs_keys)  # the new dump's own upload was completed
    # and the backup itself went through: streamed, complete, marked with its run
    assert keys(c, bucket) == [KEY]
    assert c.head_object(Bucket=bucket, Key=KEY)["Metadata"] == {"pgdataops-run": "pg_backup/manual__1"}
    assert res["path"] == str(month / FILE) and os.path.getsize(res["path"]) == res["size"]


def test_cleanup_that_cannot_list_is_reported_not_fatal(cluster, s3, tmp_path):
    """Without streaming the dump does not need S3; a listing that fails is reported in `cleaned`."""
    cfg = config(tmp_path, "no-such-bucket-h4", PGBACKUP_STREAM_UPLOAD="false")
    res = steps.dump_step(cfg, Target("glimpse", "glimpse_db", "glimpse"), cluster.conn("glimpse"), "daily", MOMENT,
                           s3.client())
    assert len(res["cleaned"]["errors"]) == 1
    assert "cannot list or abort the incomplete multipart uploads under s3://no-such-bucket-h4/database/" in \
        res["cleaned"]["errors"][0]
    assert os.path.exists(res["path"]) and not res["streamed"]


# ---- lost answers and retries --------------------------------------------------------------------------------


def test_streamed_dump_whose_complete_answer_was_lost_succeeds(cluster, s3, bucket, tmp_path):
    c = s3.client()
    lost = lose_answer_once(c, "CompleteMultipartUpload")
    res = steps.dump_step(config(tmp_path, bucket), Target("glimpse", "glimpse_db", "glimpse"),
                           cluster.conn("glimpse"), "daily", MOMENT, c, run_marker="pg_backup/r1")
    assert not lost["armed"]  # the answer really was dropped
    body = c.get_object(Bucket=bucket, Key=KEY)["Body"].read()
    assert hashlib.sha256(body).hexdigest() == res["sha256"]
    assert open_uploads(c, bucket) == []
    # the upload step proves it and writes the .sha256, as after any streamed dump
    checksum = steps.checksum_step(res)
    up = steps.upload_step(c, config(tmp_path, bucket), res, checksum)
    assert up["already_present"] and up["checksum_verified"] == "s3-sha256-checksum"
    assert keys(c, bucket) == [KEY, KEY + ".sha256"]


def test_upload_retry_finds_its_complete_object_and_finishes_the_sidecars(s3, bucket, tmp_path):
    """The try whose CompleteMultipartUpload answer was lost could not even check (S3 unreachable a moment):
    it failed, leaving a complete object without .sha256/.json. The retry proves it by the SHA-256 in its
    metadata and finishes the sidecars instead of refusing "already exists"."""
    cfg = config(tmp_path, bucket, PGBACKUP_STREAM_UPLOAD="false")
    data = os.urandom(12 * MB + 5)
    sha, parts = hashed(data)
    path = tmp_path / FILE
    path.write_bytes(data)
    dump = {"path": str(path), "file": FILE, "size": len(data), "sha256": sha, "part_sha256": parts,
            "part_size": 5 * MB, "tier": "daily", "target": "glimpse"}
    checksum = steps.checksum_step(dump)
    c = s3.client()
    lose_answer_once(c, "CompleteMultipartUpload")
    state = {"heads": 0}

    def unreachable(params, **_):  # the check after the lost answer fails too
        if params.get("Key") == KEY:
            state["heads"] += 1
            if state["heads"] == 2:  # 1: "is the key free?" before uploading; 2: "did it complete?"
                raise ConnectionClosedError(endpoint_url="s3 (unreachable in the test)")

    c.meta.events.register("before-parameter-build.s3.HeadObject", unreachable)
    with pytest.raises(UploadFailed, match=f"upload of {path} to s3://{bucket}/{KEY} failed"):
        steps.upload_step(c, cfg, dump, checksum)
    assert keys(c, bucket) == [KEY]  # complete, no sidecars: what the lost answer left
    assert c.head_object(Bucket=bucket, Key=KEY)["Metadata"]["sha256"] == sha

    retry = steps.upload_step(s3.client(), cfg, dump, checksum)
    assert retry["already_present"] and retry["sha256"] == sha
    assert keys(c, bucket) == [KEY, KEY + ".sha256"]
    assert c.get_object(Bucket=bucket, Key=KEY + ".sha256")["Body"].read().decode() == f"{sha}  {FILE}\n"


def test_streamed_retry_replaces_only_its_own_unfinished_object(cluster, s3, bucket, tmp_path):
    """A streamed object without sidecars left by an earlier try of the same run is not a backup (its row counts
    died with that try): the retry dumps again. Another run's object, or a finished backup, is refused."""
    c = s3.client()
    target, conn = Target("glimpse", "glimpse_db", "glimpse"), cluster.conn("glimpse")
    c.put_object(Bucket=bucket, Key=KEY, Body=b"first try", Metadata={"pgdataops-run": "pg_backup/other_run"})
    with pytest.raises(ObjectExists, match=r"an unfinished object of another run \(no .sha256, no .json\); refusing"):
        steps.dump_step(config(tmp_path, bucket), target, conn, "daily", MOMENT, c, run_marker="pg_backup/r2")
    assert c.get_object(Bucket=bucket, Key=KEY)["Body"].read() == b"first try"

    c.put_object(Bucket=bucket, Key=KEY, Body=b"first try", Metadata={"pgdataops-run": "pg_backup/r2"})
    res = steps.dump_step(config(tmp_path, bucket), target, conn, "daily", MOMENT, c, run_marker="pg_backup/r2")
    assert res["cleaned"]["unfinished_object"] == KEY
    body = c.get_object(Bucket=bucket, Key=KEY)["Body"].read()
    assert hashlib.sha256(body).hexdigest() == res["sha256"]

    c.put_object(Bucket=bucket, Key=KEY + ".sha256", Body=f"{res['sha256']}  {FILE}\n".encode())
    os.unlink(res["path"])
    with pytest.raises(ObjectExists, match=r"a finished backup \(with .sha256\); refusing to overwrite it"):
        steps.dump_step(config(tmp_path, bucket), target, conn, "daily", MOMENT, c, run_marker="pg_backup/r2")
    assert hashlib.sha256(c.get_object(Bucket=bucket, Key=KEY)["Body"].read()).hexdigest() == res["sha256"]


# ---- conditional writes --------------------------------------------------------------------------------------


def test_multipart_complete_refused_when_another_writer_created_the_key(s3, bucket, tmp_path):
    data = os.urandom(11 * MB)
    sha, parts = hashed(data)
    path = tmp_path / "b.dump"
    path.write_bytes(data)
    c = s3.client()
    race_once(c, "CompleteMultipartUpload", s3.client(), bucket, "k.dump", b"the rival's object")
    with pytest.raises(ObjectExists, match="created by another writer during this upload; refusing to overwrite"):
        storage.upload_file(c, str(path), bucket, "k.dump", size=len(data), sha256_hex=sha, part_sha256=parts,
                            part_size=5 * MB)
    assert c.get_object(Bucket=bucket, Key="k.dump")["Body"].read() == b"the rival's object"
    assert open_uploads(c, bucket) == []  # ours was aborted


def test_single_put_and_sidecar_refused_when_another_writer_created_the_key(s3, bucket, tmp_path):
    data = os.urandom(1000)
    sha, parts = hashed(data)
    path = tmp_path / "small.dump"
    path.write_bytes(data)
    c = s3.client()
    race_once(c, "PutObject", s3.client(), bucket, "small.dump", b"rival")
    with pytest.raises(ObjectExists, match="created by another writer during the upload"):
        storage.upload_file(c, str(path), bucket, "small.dump", size=1000, sha256_hex=sha, part_sha256=parts,
                            part_size=5 * MB)
    assert c.get_object(Bucket=bucket, Key="small.dump")["Body"].read() == b"rival"

    c2 = s3.client()
    race_once(c2, "PutObject", s3.client(), bucket, "k.sha256", b"rival line\n")
    with pytest.raises(ObjectExists, match="created by another writer meanwhile"):
        storage.put_small(c2, bucket, "k.sha256", b"our line\n", content_type="text/plain", sse="AES256",
                          kms_key_id=None)
    assert c.get_object(Bucket=bucket, Key="k.sha256")["Body"].read() == b"rival line\n"


def test_lost_put_answer_of_a_sidecar_is_accepted(s3, bucket):
    c = s3.client()
    lose_answer_once(c, "PutObject")
    with pytest.raises(UploadFailed):  # a lost answer is an error for this try...
        storage.put_small(c, bucket, "k.json", b"{}", content_type="application/json", sse="AES256", kms_key_id=None)
    # ...and the retry finds the same bytes there: done, not "already exists"
    storage.put_small(s3.client(), bucket, "k.json", b"{}", content_type="application/json", sse="AES256",
                      kms_key_id=None)
    assert c.get_object(Bucket=bucket, Key="k.json")["Body"].read() == b"{}"


def test_endpoint_without_conditional_writes_falls_back(s3, bucket, tmp_path):
    proxy = NoConditionalWritesProxy(s3.port).start()
    try:
        c = boto3.client("s3", endpoint_url=proxy.endpoint, aws_access_key_id=s3.access_key,
                         aws_secret_access_key=s3.secret_key, region_name=s3.region)
        data = os.urandom(7 * MB)
        sha, parts = hashed(data)
        path = tmp_path / "b.dump"
        path.write_bytes(data)
        res = storage.upload_file(c, str(path), bucket, "b.dump", size=len(data), sha256_hex=sha,
                                  part_sha256=parts, part_size=5 * MB)
        storage.put_small(c, bucket, "b.dump.sha256", b"line\n", content_type="text/plain", sse="AES256",
                          kms_key_id=None)
        assert proxy.refused == 2  # both writes were tried with the condition first
    finally:
        proxy.stop()
    assert res.checksum_verified == "s3-sha256-checksum" and res.etag.endswith("-2")
    direct = s3.client()
    assert hashlib.sha256(direct.get_object(Bucket=bucket, Key="b.dump")["Body"].read()).hexdigest() == sha
    assert keys(direct, bucket) == ["b.dump", "b.dump.sha256"]


def test_drill_passes_over_an_object_that_never_became_a_backup(s3, bucket):
    """What a lost CompleteMultipartUpload answer left (no .sha256, no .json) is not the newest backup; a newer
    object with a broken manifest still is (the drill must not hide it)."""
    from pg_dataops.common.errors import ManifestError
    from pg_dataops.drill import fetch as drill

    c = s3.client()
    older = "database/daily/glimpse_daily_20261124_020000.dump"
    c.put_object(Bucket=bucket, Key=older, Body=b"dump")
    c.put_object(Bucket=bucket, Key=older + ".sha256", Body=b"x  glimpse_daily_20261124_020000.dump\n")
    c.put_object(Bucket=bucket, Key=older + ".json", Body=b"[]")  # unreadable: the error names the chosen key
    c.put_object(Bucket=bucket, Key=KEY, Body=b"unfinished")  # newer, no sidecars
    with pytest.raises(ManifestError) as chosen:
        drill.latest_backup(c, bucket, "database", "glimpse", "Asia/Seoul")
    assert older in str(chosen.value) and KEY not in str(chosen.value)
    c.put_object(Bucket=bucket, Key=KEY + ".json", Body=b"[]")
    with pytest.raises(ManifestError) as chosen:
        drill.latest_backup(c, bucket, "database", "glimpse", "Asia/Seoul")
    assert KEY + ".json" in str(chosen.value)
