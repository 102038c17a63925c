"""Real age key pairs and encrypted artifacts for tests, made with Debian's ``age`` and ``age-keygen``.

Until pg_backup writes encrypted dumps itself, an encrypted backup is a real plaintext dump encrypted with
the stock CLI (``age -r ... -o x.dump.age x.dump``), with its ``.sha256`` of the stored object and its
manifest's ``encryption`` block, as the issue specifies them.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class KeyPair:
    identity: str  # AGE-SECRET-KEY-1... (the private key: the identity connection's password)
    recipient: str  # age1... (the public key: config and manifest)

    def connection(self) -> str:
        """An Airflow connection (AIRFLOW_CONN_* JSON) holding this identity in its password field."""
        return json.dumps({"conn_type": "generic", "password": self.identity})


def keypair(directory: Path, name: str) -> KeyPair:
    """A fresh X25519 key pair; the key file is written by age-keygen under ``directory``."""
    path = Path(directory) / f"{name}.key"
    subprocess.run(["age-keygen", "-o", str(path)], check=True, capture_output=True)
    text = path.read_text()
    identity = next(ln for ln in text.splitlines() if ln.startswith("AGE-SECRET-KEY-1"))
    recipient = subprocess.run(["age-keygen", "-y", str(path)], check=True, capture_output=True,
                               text=True).stdout.strip()
    return KeyPair(identity=identity, recipient=recipient)


def encrypt(src: Path, dest: Path, recipients: list[str]) -> None:
    """``age -r R1 [-r R2 ...] -o dest src``, the stock CLI."""
    argv = ["age"]
    for r in recipients:
        argv += ["-r", r]
    subprocess.run([*argv, "-o", str(dest), str(src)], check=True, capture_output=True)


def decrypt(src: Path, identity: str, tmp: Path) -> bytes:
    """``age -d -i key.txt src``: the plaintext, as an operator recovers it by hand."""
    key = Path(tmp) / "decrypt.key"
    key.write_text(identity + "\n")
    key.chmod(0o600)
    try:
        return subprocess.run(["age", "-d", "-i", str(key), str(src)], check=True, capture_output=True).stdout
    finally:
        key.unlink()


def encryption_block(recipients: list[str]) -> dict:
    """The manifest's ``encryption`` field of a backup encrypted to ``recipients``."""
    return {"format": "age", "recipients": list(recipients)}


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def encrypt_backup_in_s3(client, bucket: str, key: str, recipients: list[str], tmp: Path) -> dict:
    """Replace the plaintext backup at ``key`` (dump, .sha256, .json) by the encrypted one pg_backup writes
    with recipients: ``key + '.age'`` encrypted with the stock ``age`` CLI, its .sha256 of the stored
    object, its manifest naming it with the ``encryption`` block. Returns that manifest."""
    tmp = Path(tmp)
    tmp.mkdir(parents=True, exist_ok=True)
    name = key.rsplit("/", 1)[1]
    plain, sealed = tmp / name, tmp / (name + ".age")
    plain.write_bytes(client.get_object(Bucket=bucket, Key=key)["Body"].read())
    doc = json.loads(client.get_object(Bucket=bucket, Key=key + ".json")["Body"].read())
    encrypt(plain, sealed, recipients)
    body = sealed.read_bytes()
    plain.unlink()
    sealed.unlink()
    digest = sha256_hex(body)
    new_key = key + ".age"
    doc.update(file=name + ".age", size=len(body), checksum=digest, encryption=encryption_block(recipients))
    if isinstance(doc.get("s3"), dict):
        doc["s3"].update(key=new_key, sha256_key=new_key + ".sha256", manifest_key=new_key + ".json")
    client.put_object(Bucket=bucket, Key=new_key, Body=body)
    client.put_object(Bucket=bucket, Key=new_key + ".sha256", Body=f"{digest}  {name}.age\n".encode())
    client.put_object(Bucket=bucket, Key=new_key + ".json", Body=json.dumps(doc, indent=2).encode())
    for suffix in ("", ".sha256", ".json"):
        client.delete_object(Bucket=bucket, Key=key + suffix)
    return doc
