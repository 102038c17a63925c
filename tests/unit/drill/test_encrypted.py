"""The drill's handling of age-encrypted backups, with the real age binaries: the manifest's encryption read and
checked against the name, the identity proven before any download, the plaintext restored and then removed."""

from __future__ import annotations

import datetime as dt
import os

import pytest
from pg_dataops.common import age
from pg_dataops.common.errors import ConnectionMissing, ManifestError, VerificationFailed
from pg_dataops.drill import fetch, restore
from pg_dataops.drill.rto import assess_rto, drill_text

from tests.support.age_keys import encrypt, encryption_block, keypair

CONN = "backup_age_identity"
FILE = "glimpse_daily_20261125_020000.dump"
NOW = dt.datetime(2026, 11, 29, 5, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    return {name: keypair(d, name) for name in ("a", "b", "c")}


def doc_for(recipients=None, file=FILE + ".age"):
    doc = {"file": file, "size": 1, "checksum": "0" * 64, "format": "custom", "table_counts": {},
           "server_version_num": 150019}
    if recipients is not None:
        doc["encryption"] = encryption_block(recipients)
    return doc


def test_encryption_recipients_from_the_manifest(keys):
    a, b = keys["a"].recipient, keys["b"].recipient
    assert fetch.encryption_recipients(doc_for([a, b])) == (a, b)
    assert fetch.encryption_recipients(doc_for(None, file=FILE)) == ()
    assert fetch.encryption_recipients({**doc_for(None, file=FILE), "encryption": None}) == ()


@pytest.mark.parametrize(("doc", "message"), [
    (doc_for(None), f"the manifest of {FILE}.age: file {FILE}.age ends in .age but no encryption is recorded"),
    (doc_for(["age1x"], file=FILE),
     f"the manifest of {FILE}: encryption is recorded but file {FILE!r} does not end in .age"),
    ({**doc_for(None), "encryption": {"format": "gpg", "recipients": ["x"]}},
     f"the manifest of {FILE}.age: encryption must be {{\"format\": \"age\", \"recipients\": [public keys]}}, "
     "got {'format': 'gpg', 'recipients': ['x']}"),
    ({**doc_for(None), "encryption": {"format": "age", "recipients": []}},
     f"the manifest of {FILE}.age: encryption must be {{\"format\": \"age\", \"recipients\": [public keys]}}, "
     "got {'format': 'age', 'recipients': []}"),
], ids=["age-name-without-block", "block-without-age-name", "other-format", "no-recipients"])
def test_a_manifest_that_contradicts_its_name_is_refused(doc, message):
    with pytest.raises(ManifestError) as exc:
        fetch.encryption_recipients(doc)
    assert str(exc.value) == message


def test_a_plaintext_backup_never_reads_the_identity():
    def no_identity():
        raise AssertionError("the identity must not be read for a plaintext backup")

    assert fetch.prove_identity(doc_for(None, file=FILE), no_identity, CONN) is None


def test_the_right_identity_is_proven(keys):
    a, b = keys["a"], keys["b"]
    assert fetch.prove_identity(doc_for([a.recipient, b.recipient]), lambda: b.identity, CONN) == [b.recipient]


def test_a_wrong_identity_names_the_connection_and_the_recipients(keys):
    a, c = keys["a"], keys["c"]
    with pytest.raises(age.IdentityMismatch) as exc:
        fetch.prove_identity(doc_for([a.recipient]), lambda: c.identity, CONN)
    text = str(exc.value)
    assert text == (f"the age identity in Airflow connection {CONN!r} (public key {age.describe([c.recipient])}) "
                    f"cannot decrypt {FILE}.age: it was encrypted for {age.describe([a.recipient])}; put a matching "
                    "identity (or the escrow key) in that connection")
    assert c.identity not in text


def test_a_missing_connection_names_it_and_the_recipients(keys):
    a = keys["a"]

    def missing():
        raise ConnectionMissing(f"Airflow connection {CONN!r} (age identity for encrypted backups) is not defined: "
                                "add it in Admin > Connections or as AIRFLOW_CONN_BACKUP_AGE_IDENTITY")

    with pytest.raises(age.IdentityMismatch) as exc:
        fetch.prove_identity(doc_for([a.recipient]), missing, CONN)
    assert str(exc.value) == (
        f"Airflow connection {CONN!r} (age identity for encrypted backups) is not defined: add it in Admin > "
        f"Connections or as AIRFLOW_CONN_BACKUP_AGE_IDENTITY; {FILE}.age was encrypted for "
        f"{age.describe([a.recipient])}")


def test_an_empty_identity_names_the_connection_and_the_recipients(keys):
    a = keys["a"]
    with pytest.raises(age.IdentityMismatch) as exc:
        fetch.prove_identity(doc_for([a.recipient]), lambda: "", CONN)
    assert str(exc.value).startswith(f"Airflow connection {CONN!r} has no age identity in its password field")
    assert str(exc.value).endswith(f"; {FILE}.age was encrypted for {age.describe([a.recipient])}")


def test_remove_download_takes_the_plaintext_too(tmp_path):
    sealed, plain, other = tmp_path / (FILE + ".age"), tmp_path / FILE, tmp_path / "other.dump"
    for p in (sealed, plain, other):
        p.write_bytes(b"x")
    fetch.remove_download(str(sealed))
    assert sorted(os.listdir(tmp_path)) == ["other.dump"]
    fetch.remove_download(str(sealed))  # already gone: fine
    fetch.remove_download(str(other))
    assert os.listdir(tmp_path) == []


@pytest.fixture
def sealed(tmp_path, keys):
    """A real (small) plaintext encrypted for recipient a, as it lands in the drill's folder."""
    plain = tmp_path / "src.bin"
    plain.write_bytes(b"PGDMP" + os.urandom(200_000))
    dest = tmp_path / "drill" / (FILE + ".age")
    dest.parent.mkdir()
    encrypt(plain, dest, [keys["a"].recipient])
    return dest, plain.read_bytes()


def test_restore_sees_the_decrypted_dump_and_it_is_removed_afterwards(monkeypatch, sealed, keys):
    path, plaintext = sealed
    seen = {}

    class Result:
        def to_dict(self):
            return {"verified": True, "restore_seconds": 2.0, "check_seconds": 1.0, "mismatches": []}

    def fake_verify(admin, database, restore_path, **kwargs):
        with open(restore_path, "rb") as f:
            seen.update(path=restore_path, body=f.read(), kwargs=kwargs)
        return Result()

    monkeypatch.setattr(restore.verify, "verify_backup", fake_verify)
    result = restore.restore_drill(None, "pgdataops_drill_x", str(path), doc_for([keys["a"].recipient]),
                                   identity=lambda: keys["a"].identity, identity_conn_id=CONN, jobs=2,
                                   pg_bin_root="/usr/lib/postgresql", required_tables=("public.users",), timeout=60)
    assert seen["path"] == str(path)[: -len(".age")] and seen["body"] == plaintext
    assert seen["kwargs"]["fmt"] == "custom" and seen["kwargs"]["jobs"] == 2
    assert sorted(os.listdir(path.parent)) == [path.name]  # the plaintext is gone, the download stays for record
    assert result["encrypted"] is True and result["decrypt_seconds"] > 0
    assert result["restore_seconds"] == round(2.0 + result["decrypt_seconds"], 3)


def test_a_failed_restore_still_removes_the_plaintext(monkeypatch, sealed, keys):
    path, _ = sealed

    class Result:
        def to_dict(self):
            return {"verified": False, "restore_seconds": 2.0, "check_seconds": 1.0,
                    "mismatches": ["public.users: 2999 rows, the manifest says 3000"]}

    monkeypatch.setattr(restore.verify, "verify_backup", lambda *a, **k: Result())
    with pytest.raises(VerificationFailed, match=f"{FILE}.age restored but does not match its manifest: public.users"):
        restore.restore_drill(None, "pgdataops_drill_x", str(path), doc_for([keys["a"].recipient]),
                              identity=lambda: keys["a"].identity, identity_conn_id=CONN, jobs=2,
                              pg_bin_root="/usr/lib/postgresql", required_tables=(), timeout=60)
    assert os.listdir(path.parent) == [path.name]

    def crash(*a, **k):
        assert os.path.exists(str(path)[: -len(".age")])  # it was there while pg_restore ran
        raise RuntimeError("pg_restore died")

    monkeypatch.setattr(restore.verify, "verify_backup", crash)
    with pytest.raises(RuntimeError, match="pg_restore died"):
        restore.restore_drill(None, "pgdataops_drill_x", str(path), doc_for([keys["a"].recipient]),
                              identity=lambda: keys["a"].identity, identity_conn_id=CONN, jobs=2,
                              pg_bin_root="/usr/lib/postgresql", required_tables=(), timeout=60)
    assert os.listdir(path.parent) == [path.name]


def test_a_wrong_identity_fails_before_decrypting(monkeypatch, sealed, keys):
    path, _ = sealed
    monkeypatch.setattr(restore.verify, "verify_backup", lambda *a, **k: pytest.fail("nothing may be restored"))
    with pytest.raises(age.IdentityMismatch, match=f"cannot decrypt {FILE}.age: it was encrypted for"):
        restore.restore_drill(None, "pgdataops_drill_x", str(path), doc_for([keys["a"].recipient]),
                              identity=lambda: keys["b"].identity, identity_conn_id=CONN, jobs=2,
                              pg_bin_root="/usr/lib/postgresql", required_tables=(), timeout=60)
    assert os.listdir(path.parent) == [path.name]


def test_drill_text_counts_the_decryption_inside_the_restore():
    doc = {"file": FILE + ".age", "size": 123_456_789}
    download = {"download_seconds": 12.34}
    result = {"verified": True, "restore_seconds": 630.0, "check_seconds": 60.0, "tables_found": 12,
              "rows_checked": 1234567, "amcheck": "passed", "encrypted": True, "decrypt_seconds": 30.0}
    text = drill_text("glimpse", doc, download, result, 2, assess_rto(702.34, 14400, [], NOW))
    assert text.splitlines()[:2] == [
        f":white_check_mark: Restore drill of glimpse: {FILE}.age from S3, age-encrypted, 123.5 MB, 12 tables and "
        "1,234,567 rows match its manifest, amcheck passed",
        "download 12.3 s + restore 10 min 30 s (-j2, of which age -d 30.0 s) + checks 1 min",
    ]
