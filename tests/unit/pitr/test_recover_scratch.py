"""Restoring a base backup object into a scratch data directory with the real zstd, tar and age (S3 faked)."""

from __future__ import annotations

import hashlib
import io
import os
import pwd
import subprocess
import tarfile

import pytest
from pg_dataops.common import age
from pg_dataops.common.errors import IntegrityError
from pg_dataops.pitr import scratch

from tests.support import age_keys

FILES = {"PG_VERSION": b"15\n", "global/pg_control": b"\x01" * 8192, "base/1/1259": os.urandom(20000),
         "backup_label": b"START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n"}


class FakeS3:
    def __init__(self, body: bytes):
        self.body = body
        self.reads = 0

    def get_object(self, Bucket, Key):  # noqa: N803 - boto3's names
        self.reads += 1
        return {"Body": io.BytesIO(self.body)}


def tar_zst(files: dict[str, bytes]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o600
            tar.addfile(info, io.BytesIO(data))
    return subprocess.run(["zstd", "-q", "-c"], input=raw.getvalue(), capture_output=True, check=True).stdout


def doc_for(body: bytes, *, recipients=None, sha256: str | None = None) -> dict:
    return {"backup_id": "glimpse_base_20261201T033000Z",
            "archive": {"key": "database/base/glimpse/glimpse_base_20261201T033000Z/base.tar.zst", "size": len(body),
                        "sha256": sha256 or hashlib.sha256(body).hexdigest()},
            "encryption": {"format": "age", "recipients": recipients} if recipients else None}


@pytest.fixture
def layout(tmp_path):
    return scratch.layout_for(str(tmp_path / "scratch"), "manual__2026-12-01T05:00:00+00:00", "glimpse")


def test_layout_is_one_folder_per_run_and_target(tmp_path):
    lay = scratch.layout_for("/var/tmp/pitr", "scheduled__2026-12-01T06:00:00+00:00", "glimpse")
    assert str(lay.root) == "/var/tmp/pitr/scheduled__2026_12_01T06_00_00_00_00_glimpse"
    assert (str(lay.data), str(lay.run), str(lay.spool)) == (f"{lay.root}/data", f"{lay.root}/run",
                                                             f"{lay.root}/run/spool")
    assert scratch.ScratchLayout.from_dict(lay.to_dict()) == lay


def test_restore_unpacks_as_the_scratch_owner_and_proves_the_digest(layout):
    body = tar_zst(FILES)
    (layout.root / "data").mkdir(parents=True)
    (layout.root / "data" / "junk").write_text("an earlier try's leftover")
    got = scratch.restore_base_backup(FakeS3(body), "b", doc_for(body), layout)
    assert (got["bytes"], got["sha256"], got["encrypted"]) == (len(body), hashlib.sha256(body).hexdigest(), False)
    for name, data in FILES.items():
        assert (layout.data / name).read_bytes() == data
    assert not (layout.data / "junk").exists()
    assert (layout.data / "pg_wal" / "archive_status").is_dir()  # added: this tar had no pg_wal/
    assert oct(os.stat(layout.data).st_mode & 0o777) == "0o700"
    if os.geteuid() == 0:  # the server runs as postgres: it must own what tar wrote
        uid = pwd.getpwnam("postgres").pw_uid
        assert {os.stat(layout.data / n).st_uid for n in FILES} == {uid}


def test_a_body_that_is_not_the_manifests_object_is_refused_and_removed(layout):
    body = tar_zst(FILES)
    corrupt = body[:100] + bytes([body[100] ^ 0xFF]) + body[101:]
    with pytest.raises(IntegrityError, match=r"s3://b/database/base/glimpse/glimpse_base_20261201T033000Z/base.tar"
                                             r".zst is corrupt or not the object its manifest describes: SHA-256 .* "
                                             r"the unpacked copy was removed"):
        scratch.restore_base_backup(FakeS3(corrupt), "b", doc_for(body), layout)
    assert not layout.data.exists()


def test_a_tool_failure_is_named(layout):
    garbage = os.urandom(5000)
    with pytest.raises(IntegrityError, match=r"zstd -d \(decompression\) of the base backup failed \(exit 1\)"):
        scratch.restore_base_backup(FakeS3(garbage), "b", doc_for(garbage), layout)
    assert not layout.data.exists()
    not_a_datadir = tar_zst({"hello.txt": b"hi"})
    with pytest.raises(IntegrityError, match="has no PG_VERSION or global/pg_control: it is not a data directory"):
        scratch.restore_base_backup(FakeS3(not_a_datadir), "b", doc_for(not_a_datadir), layout)


def test_an_encrypted_backup_streams_through_age_with_the_identity_in_a_pipe(layout, tmp_path):
    pair, other = age_keys.keypair(tmp_path, "a"), age_keys.keypair(tmp_path, "b")
    plain = tmp_path / "base.tar.zst"
    plain.write_bytes(tar_zst(FILES))
    age_keys.encrypt(plain, tmp_path / "base.tar.zst.age", [pair.recipient])
    body = (tmp_path / "base.tar.zst.age").read_bytes()
    doc = doc_for(body, recipients=[pair.recipient])
    with pytest.raises(age.IdentityMismatch, match="is age-encrypted: an identity is needed"):
        scratch.restore_base_backup(FakeS3(body), "b", doc, layout)
    with pytest.raises(age.IdentityMismatch, match="cannot decrypt base backup glimpse_base_20261201T033000Z"):
        scratch.prove_identity(doc, lambda: other.identity, "backup_age_identity")
    identity = scratch.prove_identity(doc, lambda: pair.identity, "backup_age_identity")
    got = scratch.restore_base_backup(FakeS3(body), "b", doc, layout, identity=identity)
    assert got["encrypted"] is True and (layout.data / "base/1/1259").read_bytes() == FILES["base/1/1259"]
    # The key reached age through a pipe: nothing on disk holds it.
    for root, _dirs, files in os.walk(layout.root):
        for f in files:
            with open(os.path.join(root, f), "rb") as fh:
                assert pair.identity.encode() not in fh.read(), f
    # A wrong key that got this far anyway: age's refusal is named, the key is not.
    with pytest.raises(age.DecryptionFailed, match=r"age -d \(decryption\) of the base backup failed") as wrong:
        scratch.restore_base_backup(FakeS3(body), "b", doc, layout, identity=other.identity)
    assert other.identity not in str(wrong.value)
    assert scratch.prove_identity(doc_for(body), lambda: pytest.fail("not read for a plain backup"), "x") is None


def test_remove_scratch_is_idempotent(layout):
    scratch.prepare(layout)
    assert scratch.remove_scratch(layout) == {"root": str(layout.root), "server_stopped": False, "removed": True}
    assert scratch.remove_scratch(layout)["removed"] is False
