"""The postgresql.conf block we ship for WAL archiving: exact, equal to the renderer, no credentials."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from pg_dataops.common import wal
from pg_dataops.common.config import ConfigError, load_config
from pg_dataops.pitr import archiving

REPO = Path(__file__).resolve().parents[3]
SHIPPED = REPO / "include" / "config" / "postgresql-pitr.conf"


def settings_of(text: str) -> dict[str, str]:
    """name = value lines (comments and trailing comments dropped; values as written)."""
    out = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, value = line.split("=", 1)
        value = value.strip()
        if not value.startswith("'"):
            value = value.split("#", 1)[0].strip()
        out[name.strip()] = value
    return out


def conf_unquote(literal: str) -> str:
    assert literal.startswith("'") and literal.endswith("'"), literal
    return literal[1:-1].replace("''", "'")


def test_the_shipped_file_is_the_rendered_default():
    assert SHIPPED.read_text() == archiving.render_conf(load_config(environ={}), "glimpse"), (
        "include/config/postgresql-pitr.conf is stale: regenerate it with "
        "`python -m pg_dataops.pitr.archiving --target glimpse > include/config/postgresql-pitr.conf`")


def test_the_block_sets_exactly_the_archiving_settings():
    cfg = load_config(environ={})
    text = archiving.render_conf(cfg, "glimpse")
    settings = settings_of(text)
    assert list(settings) == ["wal_level", "archive_mode", "archive_command", "archive_timeout"]
    assert (settings["wal_level"], settings["archive_mode"], settings["archive_timeout"]) == ("replica", "on", "60")
    # What the server's `sh -c` runs: exactly the argv of the kernel, %p left for PostgreSQL.
    argv = shlex.split(conf_unquote(settings["archive_command"]))
    assert argv == wal.archive_command_argv(cfg, "glimpse")
    assert argv == ["/opt/pg-dataops/wal-tools/bin/barman-cloud-wal-archive", "--cloud-provider", "aws-s3", "--gzip",
                    "--encryption", "AES256", "s3://glimpse-backups/database/wal", "glimpse", "%p"]


def test_the_comments_say_what_a_dba_must_know():
    text = archiving.render_conf(load_config(environ={}), "glimpse")
    comments = " ".join(line.lstrip("#").strip() for line in text.splitlines() if line.startswith("#"))
    assert "RESTART PostgreSQL" in comments and "(a reload is not enough)" in comments
    assert "s3://glimpse-backups/database/wal/glimpse/wals/" in comments
    assert "gzip-compressed, S3 server-side encryption AES256" in comments
    assert "Credentials are NOT in this file" in comments and "~postgres/.aws/credentials" in comments
    assert "wal_keep_size" in comments and "wal_keep_segments no longer exists" in comments
    # Only comments mention wal_keep_segments; no setting line does, and no secret-looking value is set.
    assert not re.search(r"^\s*wal_keep_segments\s*=", text, re.M)
    assert not any("AWS_" in value or "--aws-profile" in value for value in settings_of(text).values())


def test_endpoint_kms_and_compression_follow_the_config():
    cfg = load_config(environ={"PGBACKUP_SSE": "aws:kms", "PGBACKUP_KMS_KEY_ID": "alias/pitr",
                               "PGBACKUP_PITR_WAL_COMPRESSION": "none", "PGBACKUP_PITR_ARCHIVE_TIMEOUT_SECONDS": "30",
                               "PGBACKUP_PITR_WAL_PREFIX": "wal-archive"})
    text = archiving.render_conf(cfg, "glimpse", endpoint_url="http://minio:9000")
    settings = settings_of(text)
    argv = shlex.split(conf_unquote(settings["archive_command"]))
    assert argv == ["/opt/pg-dataops/wal-tools/bin/barman-cloud-wal-archive", "--cloud-provider", "aws-s3",
                    "--endpoint-url", "http://minio:9000", "--encryption", "aws:kms", "--sse-kms-key-id",
                    "alias/pitr", "s3://glimpse-backups/database/wal-archive", "glimpse", "%p"]
    assert settings["archive_timeout"] == "30"
    assert "(uncompressed, S3 server-side encryption aws:kms (key alias/pitr))" in text
    assert "--endpoint-url http://minio:9000`" in text  # the generator line says how to reproduce it


def test_a_quote_in_a_path_survives_both_quotings():
    cfg = load_config(environ={"PGBACKUP_PITR_WAL_TOOLS_BIN": "/opt/it's tools/bin"})
    argv = shlex.split(conf_unquote(settings_of(archiving.render_conf(cfg, "glimpse"))["archive_command"]))
    assert argv[0] == "/opt/it's tools/bin/barman-cloud-wal-archive"


def test_bad_input_is_refused_naming_it():
    cfg = load_config(environ={})
    with pytest.raises(ConfigError, match=r"'nope' is not a PITR target \(pitr.targets; configured: glimpse\)"):
        archiving.render_conf(cfg, "nope")
    with pytest.raises(ConfigError, match=r"--endpoint-url: 'minio:9000' is not an http\(s\) URL"):
        archiving.render_conf(cfg, "glimpse", endpoint_url="minio:9000")
    with pytest.raises(ConfigError, match="not an http"):
        archiving.render_conf(cfg, "glimpse", endpoint_url="http://minio:9000' ; rm -rf /")


def test_cli_prints_the_block_or_names_the_error(capsys, monkeypatch):
    for name in [k for k in __import__("os").environ if k.startswith("PGBACKUP_")]:
        monkeypatch.delenv(name)
    assert archiving.main(["--target", "glimpse", "--endpoint-url", "http://minio:9000"]) == 0
    assert capsys.readouterr().out == archiving.render_conf(load_config(environ={}), "glimpse",
                                                            endpoint_url="http://minio:9000")
    assert archiving.main(["--target", "other"]) == 2
    err = capsys.readouterr().err
    assert err == "error: 'other' is not a PITR target (pitr.targets; configured: glimpse)\n"
