"""The age kernel (common/age.py) and the `encryption:` config, against Debian's real `age` and `age-keygen`.

What one side encrypts, the stock tool decrypts (and the reverse): an operator at 3 a.m. has only `age -d`.
"""

from __future__ import annotations

import array
import hashlib
import io
import os
import subprocess
from pathlib import Path

import pytest
import yaml
from pg_dataops.common import age
from pg_dataops.common.config import DEFAULT_CONFIG_PATH, ConfigError, load_config

CONN = "backup_age_identity"


class KeyPair:
    """A throwaway key pair from age-keygen: the identity file, its text and its secret line, the recipient."""

    def __init__(self, directory: Path, name: str):
        self.path = directory / f"{name}.txt"
        subprocess.run(["age-keygen", "-o", str(self.path)], check=True, capture_output=True)
        self.text = self.path.read_text()  # with age-keygen's "# created" and "# public key" comments
        self.secret = next(ln for ln in self.text.splitlines() if ln.startswith("AGE-SECRET-KEY-1"))
        self.recipient = subprocess.run(["age-keygen", "-y", str(self.path)], check=True, capture_output=True,
                                        text=True).stdout.strip()


@pytest.fixture
def keys(tmp_path) -> tuple[KeyPair, KeyPair, KeyPair]:
    d = tmp_path / "keys"
    d.mkdir()
    return KeyPair(d, "a"), KeyPair(d, "b"), KeyPair(d, "c")


def random_payload(size: int) -> bytes:
    # Half random (incompressible, like a -Z dump), half repetitive; not a multiple of any chunk size.
    half = size // 2
    return os.urandom(half) + b"glimpse row data\n" * ((size - half) // 17) + b"tail"


def encrypt(payload: bytes, recipients, *, chunk: int = 200_003) -> bytes:
    sink = io.BytesIO()
    writer = age.EncryptingWriter(recipients, sink)
    for i in range(0, len(payload), chunk):
        assert writer.write(payload[i:i + chunk]) == len(payload[i:i + chunk])
    writer.close()
    return sink.getvalue()


def stock_decrypt(path: Path, identity: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["age", "-d", "-i", str(identity), str(path)], capture_output=True)


# --------------------------------------------------------------------------- encrypting


def test_encrypting_writer_output_is_age_and_stock_age_gives_back_the_exact_bytes(keys, tmp_path):
    a, _, _ = keys
    payload = random_payload(6 * 1024 * 1024 + 12_345)
    stored = encrypt(payload, [a.recipient])
    assert stored.startswith(b"age-encryption.org/v1\n")
    assert stored.startswith(age.HEADER)
    assert b"glimpse row data" not in stored
    assert len(stored) >= len(payload)  # no compression: age adds a header and 16 bytes per 64 KiB chunk
    path = tmp_path / "x.dump.age"
    path.write_bytes(stored)
    assert age.is_age_file(str(path))

    done = stock_decrypt(path, a.path)
    assert done.returncode == 0, done.stderr
    assert hashlib.sha256(done.stdout).hexdigest() == hashlib.sha256(payload).hexdigest()
    assert done.stdout == payload


def test_encrypting_writer_into_a_real_file(keys, tmp_path):
    a, _, _ = keys
    payload = random_payload(3 * 1024 * 1024)
    path = tmp_path / "y.dump.age"
    with open(path, "wb") as f:
        writer = age.EncryptingWriter([a.recipient], f)
        writer.write(memoryview(payload)[:1000])  # memoryviews, as a pipe relay hands them over
        writer.write(memoryview(payload)[1000:])
        writer.close()
    assert stock_decrypt(path, a.path).stdout == payload


def test_write_takes_any_buffer_and_counts_bytes(keys, tmp_path):
    a, _, _ = keys
    numbers = array.array("I", range(300_000))  # a multi-byte item format: counted and sent as bytes
    sink = io.BytesIO()
    writer = age.EncryptingWriter([a.recipient], sink)
    assert writer.write(numbers) == len(numbers) * numbers.itemsize
    assert writer.write(bytearray(b"end")) == 3
    writer.close()
    path = tmp_path / "numbers.age"
    path.write_bytes(sink.getvalue())
    assert stock_decrypt(path, a.path).stdout == numbers.tobytes() + b"end"


def test_two_recipients_either_identity_decrypts_a_third_does_not(keys, tmp_path):
    a, b, c = keys
    payload = random_payload(2 * 1024 * 1024 + 1)
    path = tmp_path / "two.dump.age"
    path.write_bytes(encrypt(payload, [a.recipient, b.recipient]))
    for pair in (a, b):
        done = stock_decrypt(path, pair.path)
        assert done.returncode == 0, done.stderr
        assert done.stdout == payload
    refused = stock_decrypt(path, c.path)
    assert refused.returncode != 0
    assert refused.stdout == b""
    assert b"no identity matched" in refused.stderr


def test_empty_input_still_makes_a_decryptable_file(keys, tmp_path):
    a, _, _ = keys
    path = tmp_path / "empty.age"
    path.write_bytes(encrypt(b"", [a.recipient]))
    assert age.is_age_file(str(path))
    done = stock_decrypt(path, a.path)
    assert (done.returncode, done.stdout) == (0, b"")


def test_wrap_is_the_sink_itself_without_recipients(keys):
    a, _, _ = keys
    sink = io.BytesIO()
    assert age.wrap(sink, ()) is sink
    writer = age.wrap(sink, [a.recipient])
    assert isinstance(writer, age.EncryptingWriter)
    writer.write(b"x")
    writer.close()
    assert sink.getvalue().startswith(age.HEADER)
    with pytest.raises(age.EncryptionError, match="no recipients"):
        age.EncryptingWriter([], io.BytesIO())


def test_a_failing_sink_surfaces_its_own_error(keys):
    a, _, _ = keys

    class FullDisk:
        def write(self, data):
            raise OSError(28, "No space left on device")

    writer = age.EncryptingWriter([a.recipient], FullDisk())
    with pytest.raises(OSError, match="No space left on device"):
        for _ in range(64):  # 64 MiB: far more than the pipes hold, so age must have hit the sink
            writer.write(os.urandom(1024 * 1024))
        writer.close()
    writer.abort()
    assert writer.proc.returncode is not None


def test_abort_stops_age_and_leaves_no_complete_stream(keys, tmp_path):
    a, _, _ = keys
    sink = io.BytesIO()
    writer = age.EncryptingWriter([a.recipient], sink)
    writer.write(os.urandom(300_000))
    writer.abort()
    assert writer.proc.returncode != 0
    path = tmp_path / "cut.age"
    path.write_bytes(sink.getvalue())
    assert stock_decrypt(path, a.path).returncode != 0  # a cut stream never passes for a whole one


# --------------------------------------------------------------------------- identities


def test_check_identity_accepts_a_matching_identity_file_with_its_comments(keys):
    a, b, _ = keys
    assert age.check_identity(a.text, [b.recipient, a.recipient], CONN, "the backup") == [a.recipient]
    assert age.identity_recipients(a.secret, CONN) == [a.recipient]
    both = a.text + "\n" + b.secret + "\n"  # one connection may hold the current key and the escrow key
    assert age.check_identity(both, [b.recipient], CONN, "the backup") == [a.recipient, b.recipient]


def test_wrong_identity_names_the_connection_and_the_recipients_not_the_secret(keys):
    a, b, c = keys
    what = "glimpse_daily_20260105_020000.dump.age"
    with pytest.raises(age.IdentityMismatch) as err:
        age.check_identity(c.text, [a.recipient, b.recipient], CONN, what)
    msg = str(err.value)
    assert repr(CONN) in msg
    assert what in msg
    assert age.describe([a.recipient, b.recipient]) in msg  # the backup's recipients, shortened
    assert age.describe([c.recipient]) in msg  # and the identity's own public key
    assert c.secret not in msg
    assert c.secret[len("AGE-SECRET-KEY-1"):][:20] not in msg
    assert isinstance(err.value, age.PermanentError)


@pytest.mark.parametrize("identity", ["", None, "   \n\n", "# created: 2026-01-05\n# only comments\n"])
def test_empty_identity_is_named(identity, keys):
    a, _, _ = keys
    with pytest.raises(age.IdentityMismatch, match=rf"Airflow connection '{CONN}' has no age identity"):
        age.check_identity(identity, [a.recipient], CONN, "the backup")


def test_malformed_identity_is_named_without_echoing_it(keys):
    a, _, _ = keys
    malformed = "AGE-SECRET-KEY-1NOTAKEYATALL"
    with pytest.raises(age.IdentityMismatch) as err:
        age.check_identity(a.secret + "\n" + malformed, [a.recipient], CONN, "the backup")
    msg = str(err.value)
    assert f"Airflow connection '{CONN}': line 2 of its password is not an age identity" in msg
    assert malformed not in msg and a.secret not in msg
    # A recipient pasted where the identity belongs: a common mistake, named the same way.
    with pytest.raises(age.IdentityMismatch, match="line 1 of its password is not an age identity"):
        age.check_identity(a.recipient, [a.recipient], CONN, "the backup")


def test_identity_with_a_bad_checksum_is_refused_by_age_keygen_and_redacted(keys):
    a, _, _ = keys
    last = a.secret[-1]
    damaged = a.secret[:-1] + ("Q" if last != "Q" else "P")  # still matches the shape, checksum broken
    assert age.IDENTITY_RE.match(damaged)
    with pytest.raises(age.IdentityMismatch) as err:
        age.check_identity(damaged, [a.recipient], CONN, "the backup")
    msg = str(err.value)
    assert f"Airflow connection '{CONN}': age-keygen refused its identity" in msg
    assert "invalid checksum" in msg
    assert damaged not in msg


# --------------------------------------------------------------------------- decrypting


@pytest.fixture
def stored(keys, tmp_path) -> tuple[Path, bytes]:
    a, _, _ = keys
    payload = random_payload(8 * 1024 * 1024)
    path = tmp_path / "glimpse_daily_20260105_020000.dump.age"
    path.write_bytes(encrypt(payload, [a.recipient]))
    return path, payload


def test_decrypt_file_gives_back_the_plaintext(keys, stored, tmp_path):
    a, _, _ = keys
    path, payload = stored
    dest = tmp_path / "plain.dump"
    age.decrypt_file(str(path), str(dest), a.text, timeout=120)
    assert dest.read_bytes() == payload
    assert dest.stat().st_mode & 0o777 == 0o600  # plaintext of a backup: readable by its owner only


def test_decrypt_file_with_a_wrong_identity_fails_and_leaves_no_dest(keys, stored, tmp_path):
    _, b, _ = keys
    path, _ = stored
    dest = tmp_path / "plain.dump"
    with pytest.raises(age.DecryptionFailed) as err:
        age.decrypt_file(str(path), str(dest), b.text, timeout=120)
    msg = str(err.value)
    assert f"age -d refused {path.name}" in msg
    assert "no identity matched" in msg
    assert b.secret not in msg
    assert not dest.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["keys", path.name])


def test_decrypt_file_of_a_plain_dump_fails_clearly(keys, tmp_path):
    a, _, _ = keys
    plain = tmp_path / "glimpse_daily_20260105_020000.dump"
    plain.write_bytes(b"PGDMP" + os.urandom(4096))
    assert not age.is_age_file(str(plain))
    dest = tmp_path / "out"
    with pytest.raises(age.DecryptionFailed, match=f"age -d refused {plain.name}"):
        age.decrypt_file(str(plain), str(dest), a.text, timeout=60)
    assert not dest.exists()


def test_decrypt_file_never_touches_an_existing_dest(keys, stored, tmp_path):
    a, b, _ = keys
    path, _ = stored
    dest = tmp_path / "someone_elses_file"
    dest.write_bytes(b"keep me")
    for identity in (b.text, a.text):  # refused before age runs: neither removed (wrong key) nor truncated
        with pytest.raises(age.DecryptionFailed, match=f"{dest} already exists; refusing to overwrite it"):
            age.decrypt_file(str(path), str(dest), identity, timeout=60)
        assert dest.read_bytes() == b"keep me"


def test_decrypting_process_streams_and_keeps_the_identity_out_of_argv(keys, stored):
    a, _, _ = keys
    path, payload = stored
    proc = age.decrypting_process(str(path), a.text)
    try:
        assert a.secret not in " ".join(proc.args)
        assert any(arg.startswith("/dev/fd/") for arg in proc.args)
        first = proc.stdout.read(65536)
        assert first == payload[:65536]
        # 8 MiB cannot fit in a pipe: age is still running, blocked on us, so the output is streamed.
        assert proc.poll() is None
        digest = hashlib.sha256(first)
        while chunk := proc.stdout.read(1024 * 1024):
            digest.update(chunk)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    assert digest.hexdigest() == hashlib.sha256(payload).hexdigest()


def test_decrypting_process_with_a_wrong_identity_exits_non_zero_with_no_output(keys, stored):
    _, _, c = keys
    path, _ = stored
    proc = age.decrypting_process(str(path), c.text)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert out == b""
    assert b"no identity matched" in err


# --------------------------------------------------------------------------- small helpers


def test_describe_shortens_public_keys(keys):
    a, b, _ = keys
    assert age.describe([a.recipient]) == f"{a.recipient[:12]}...{a.recipient[-6:]}"
    assert age.describe([a.recipient, b.recipient]).count("...") == 2
    assert age.describe([]) == "(none)"


def test_check_recipients_names_the_bad_one_and_refuses_duplicates(keys):
    a, b, _ = keys
    assert age.check_recipients([f" {a.recipient} ", b.recipient]) == (a.recipient, b.recipient)
    with pytest.raises(ValueError, match=r"encryption.recipients\[1\]: 'age1nope' is not an age X25519 recipient"):
        age.check_recipients([a.recipient, "age1nope"])
    with pytest.raises(ValueError, match="is not an age X25519 recipient"):
        age.check_recipients([a.secret])  # the private key pasted by mistake: refused
    with pytest.raises(ValueError, match="listed twice"):
        age.check_recipients([a.recipient, b.recipient, a.recipient])


# --------------------------------------------------------------------------- config


def config_file(tmp_path: Path, encryption) -> Path:
    data = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
    if encryption is None:
        data.pop("encryption", None)
    else:
        data["encryption"] = encryption
    p = tmp_path / "cfg.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def test_encryption_is_off_by_default():
    cfg = load_config(environ={})
    assert cfg.encryption.recipients == ()
    assert cfg.encryption.enabled is False
    assert cfg.encryption.identity_conn_id == "backup_age_identity"


def test_encryption_recipients_from_the_file_and_the_env(keys, tmp_path):
    a, b, c = keys
    p = config_file(tmp_path, {"recipients": [a.recipient, b.recipient], "identity_conn_id": "vault_age"})
    cfg = load_config(p, environ={})
    assert cfg.encryption.recipients == (a.recipient, b.recipient)
    assert cfg.encryption.enabled is True
    assert cfg.encryption.identity_conn_id == "vault_age"

    env = {"PGBACKUP_ENCRYPTION_RECIPIENTS": f" {c.recipient} ,, {a.recipient},",
           "PGBACKUP_ENCRYPTION_IDENTITY_CONN_ID": "other_identity"}
    cfg = load_config(p, environ=env)
    assert cfg.encryption.recipients == (c.recipient, a.recipient)  # the env replaces the file's list
    assert cfg.encryption.identity_conn_id == "other_identity"

    off = load_config(p, environ={"PGBACKUP_ENCRYPTION_RECIPIENTS": ""})  # empty: a visible way to turn it off
    assert off.encryption.recipients == ()
    assert off.encryption.enabled is False
    assert load_config(config_file(tmp_path, None), environ={}).encryption.enabled is False


def test_a_bad_recipient_in_the_env_is_named(keys):
    a, _, _ = keys
    env = {"PGBACKUP_ENCRYPTION_RECIPIENTS": f"{a.recipient},age1typo"}
    with pytest.raises(ConfigError, match=r"PGBACKUP_ENCRYPTION_RECIPIENTS\[1\]: 'age1typo' is not an age"):
        load_config(environ=env)


def test_a_bad_recipient_in_the_file_is_named(keys, tmp_path):
    a, _, _ = keys
    p = config_file(tmp_path, {"recipients": [a.recipient, "ssh-ed25519 AAAAC3Nza"]})
    with pytest.raises(ConfigError, match=r"encryption.recipients\[1\]: 'ssh-ed25519 AAAAC3Nza' is not an age"):
        load_config(p, environ={})


def test_duplicate_recipients_are_refused(keys, tmp_path):
    a, _, _ = keys
    with pytest.raises(ConfigError, match="PGBACKUP_ENCRYPTION_RECIPIENTS: a recipient is listed twice"):
        load_config(environ={"PGBACKUP_ENCRYPTION_RECIPIENTS": f"{a.recipient},{a.recipient}"})
    with pytest.raises(ConfigError, match="encryption.recipients: a recipient is listed twice"):
        load_config(config_file(tmp_path, {"recipients": [a.recipient, a.recipient]}), environ={})


@pytest.mark.parametrize(
    ("encryption", "message"),
    [
        ({"recipients": [], "cipher": "aes"}, r"encryption.cipher: unknown setting"),
        ({"recipient": ["age1x"]}, r"encryption.recipient: unknown setting"),
        (["age1x"], r"encryption: must be a mapping"),
        ({"recipients": "age1x"}, r"encryption.recipients: must be a list"),
        ({"recipients": [], "identity_conn_id": 5}, r"encryption.identity_conn_id: must be a non-empty"),
        ({"recipients": [], "identity_conn_id": "  "}, r"encryption.identity_conn_id: must be a non-empty"),
    ],
)
def test_bad_encryption_settings_are_refused_naming_them(tmp_path, encryption, message):
    with pytest.raises(ConfigError, match=message):
        load_config(config_file(tmp_path, encryption), environ={})
