"""pg_failover's env file step: the runbook's ``sed -i s/$PRIMARY_HOST/$STANDBY_HOST/g .env.production``, done
exactly: only the named keys' values change, the original is kept once, a rerun changes nothing."""

from __future__ import annotations

import os
import stat

import pytest
from pg_dataops.dr import repoint
from pg_dataops.dr.repoint import RepointError

NEW = {"DB_HOST": "db-standby.internal", "DB_PORT": "5433"}

# What a real .env.production looks like: comments (one mentioning the old host), an exported key, quoted and
# unquoted values, another key holding the old host (sed rewrote it too), a multi-line value with a line that
# looks like an assignment, an inline comment, a byte that is not UTF-8, CRLF nowhere.
ORIGINAL = (
    b"# Glimpse production settings (primary: db-primary.internal)\n"
    b"# DB_HOST=db-old.internal\n"
    b"APP_NAME=\"glimpse api\"\n"
    b"export DB_HOST=\"db-primary.internal\"   # the primary\n"
    b"DB_PORT = 5432\n"
    b"DB_PASSWORD='s3cr#t \"x\" \\n'\n"
    b"REDIS_URL=redis://db-primary.internal:6379/0\n"
    b"TLS_CERT=\"-----BEGIN CERTIFICATE-----\n"
    b"DB_HOST=not-a-key-inside-a-value\n"
    b"-----END CERTIFICATE-----\"\n"
    b"\n"
    b"GREETING=caf\xe9 # latin-1, not UTF-8\n"
)
EXPECTED = ORIGINAL.replace(b"export DB_HOST=\"db-primary.internal\"   # the primary\n",
                            b"export DB_HOST=\"db-standby.internal\"   # the primary\n"
                            ).replace(b"DB_PORT = 5432\n", b"DB_PORT = 5433\n")


@pytest.fixture
def env_file(tmp_path):
    path = tmp_path / ".env.production"
    path.write_bytes(ORIGINAL)
    path.chmod(0o640)
    return path


def files(directory) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_only_the_named_keys_values_change(env_file, tmp_path):
    result = repoint.rewrite_env_file(str(env_file), NEW, stamp="20261125T0300")

    assert env_file.read_bytes() == EXPECTED  # every other byte as it was: export, quotes, comments, other keys
    backup = tmp_path / ".env.production.before_failover_20261125T0300"
    assert result == {"path": str(env_file), "changed": True, "backup": str(backup), "backup_made": True,
                      "before": {"DB_HOST": "db-primary.internal", "DB_PORT": "5432"}, "after": NEW}
    assert backup.read_bytes() == ORIGINAL
    assert files(tmp_path) == [".env.production", ".env.production.before_failover_20261125T0300"]  # no temp left
    assert repoint.read_env_values(str(env_file), ["DB_HOST", "DB_PORT", "REDIS_URL", "TLS_CERT", "NOPE"]) == {
        "DB_HOST": "db-standby.internal", "DB_PORT": "5433", "REDIS_URL": "redis://db-primary.internal:6379/0",
        "TLS_CERT": "-----BEGIN CERTIFICATE-----\nDB_HOST=not-a-key-inside-a-value\n-----END CERTIFICATE-----",
        "NOPE": None}


def test_quoting_styles_and_repeated_keys(tmp_path):
    path = tmp_path / ".env"
    path.write_bytes(b"DB_HOST='old-a'\r\nDB_PORT=\"5432\"\r\nexport  DB_HOST=old-b#not-a-comment\r\n")
    result = repoint.rewrite_env_file(str(path), NEW, stamp="s1")
    # every assignment of a repeated key changes (whichever one the loader takes); the last one was in force
    assert path.read_bytes() == (b"DB_HOST='db-standby.internal'\r\nDB_PORT=\"5433\"\r\n"
                                 b"export  DB_HOST=db-standby.internal\r\n")
    assert result["before"] == {"DB_HOST": "old-b#not-a-comment", "DB_PORT": "5432"}


def test_a_missing_key_is_appended_at_the_end(tmp_path):
    path = tmp_path / ".env"
    path.write_bytes(b"# settings\nDB_HOST=db-primary.internal")  # no final newline
    result = repoint.rewrite_env_file(str(path), NEW, stamp="s1")
    assert path.read_bytes() == b"# settings\nDB_HOST=db-standby.internal\nDB_PORT=5433\n"
    assert result["before"] == {"DB_HOST": "db-primary.internal", "DB_PORT": None}

    sourced = tmp_path / "glimpse.env"  # made for `source`: every variable exported, CRLF line ends
    sourced.write_bytes(b"export DB_HOST=db-primary.internal\r\nexport APP=glimpse\r\n")
    repoint.rewrite_env_file(str(sourced), NEW, stamp="s1")
    assert sourced.read_bytes() == (b"export DB_HOST=db-standby.internal\r\nexport APP=glimpse\r\n"
                                    b"export DB_PORT=5433\r\n")


def test_the_original_is_copied_once_and_a_rerun_does_not_overwrite_it(env_file, tmp_path):
    first = repoint.rewrite_env_file(str(env_file), {"DB_HOST": "db-standby.internal"}, stamp="run1")
    assert (first["changed"], first["backup_made"]) == (True, True)
    # The first try stopped midway; the rerun (same run, same stamp) finds the host already changed and sets
    # the port: the copy still holds the file as it was before the failover.
    rerun = repoint.rewrite_env_file(str(env_file), NEW, stamp="run1")
    assert (rerun["changed"], rerun["backup_made"]) == (True, False)
    assert rerun["before"] == {"DB_HOST": "db-standby.internal", "DB_PORT": "5432"}
    assert rerun["backup"] == first["backup"]
    assert (tmp_path / ".env.production.before_failover_run1").read_bytes() == ORIGINAL
    assert env_file.read_bytes() == EXPECTED


def test_nothing_to_change_writes_nothing(env_file, tmp_path):
    repoint.rewrite_env_file(str(env_file), NEW, stamp="run1")
    changed_at = env_file.stat().st_mtime_ns
    again = repoint.rewrite_env_file(str(env_file), NEW, stamp="run2")
    assert again == {"path": str(env_file), "changed": False, "backup": None, "backup_made": False,
                     "before": NEW, "after": NEW}
    assert env_file.read_bytes() == EXPECTED and env_file.stat().st_mtime_ns == changed_at
    assert files(tmp_path) == [".env.production", ".env.production.before_failover_run1"]  # no copy for run2
    # the same run again: names the copy its first try made
    assert repoint.rewrite_env_file(str(env_file), NEW, stamp="run1")["backup"] == \
        str(tmp_path / ".env.production.before_failover_run1")


def test_mode_is_kept_on_the_file_and_its_copy(env_file, tmp_path):
    repoint.rewrite_env_file(str(env_file), NEW, stamp="run1")
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o640
    assert stat.S_IMODE((tmp_path / ".env.production.before_failover_run1").stat().st_mode) == 0o640


@pytest.mark.skipif(os.geteuid() != 0, reason="changing a file's owner needs root")
def test_owner_is_kept_on_the_file_and_its_copy(env_file, tmp_path):
    os.chown(env_file, 65534, 65534)  # nobody: the application's user, not the task's
    repoint.rewrite_env_file(str(env_file), NEW, stamp="run1")
    for path in (env_file, tmp_path / ".env.production.before_failover_run1"):
        assert (path.stat().st_uid, path.stat().st_gid) == (65534, 65534)


@pytest.mark.skipif(os.geteuid() != 0, reason="giving the file to another user needs root")
def test_an_owner_that_cannot_be_kept_refuses_and_writes_nothing(env_file, tmp_path, monkeypatch):
    os.chown(env_file, 65534, 65534)

    def chown(*args):  # what a task running as anyone but root gets
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(repoint.os, "chown", chown)
    with pytest.raises(RepointError, match=r"^cannot keep the owner \(65534:65534\) of .*/\.env\.production when "
                                           r"rewriting it \(running as uid 0\); run the task as that user or "
                                           r"root, or change the file by hand$"):
        repoint.rewrite_env_file(str(env_file), NEW, stamp="run1")
    assert env_file.read_bytes() == ORIGINAL
    assert files(tmp_path) == [".env.production"]


def test_a_symbolic_link_stays_a_link(env_file, tmp_path):
    link = tmp_path / "current.env"
    link.symlink_to(env_file.name)
    result = repoint.rewrite_env_file(str(link), NEW, stamp="run1")
    assert link.is_symlink() and os.readlink(link) == env_file.name
    assert env_file.read_bytes() == EXPECTED
    assert (tmp_path / "current.env.before_failover_run1").read_bytes() == ORIGINAL
    assert result["backup"] == str(tmp_path / "current.env.before_failover_run1")


def test_missing_file_or_not_a_file(tmp_path):
    missing = tmp_path / "nope.env"
    with pytest.raises(RepointError) as err:
        repoint.rewrite_env_file(str(missing), NEW, stamp="run1")
    assert str(err.value) == f"env file {missing} does not exist (dr.failover.env_file)"
    with pytest.raises(RepointError) as err:
        repoint.read_env_values(str(missing), ["DB_HOST"])
    assert str(err.value) == f"env file {missing} does not exist (dr.failover.env_file)"
    with pytest.raises(RepointError) as err:
        repoint.rewrite_env_file(str(tmp_path), NEW, stamp="run1")
    assert str(err.value) == f"env file {tmp_path} is not a regular file (dr.failover.env_file)"
    assert files(tmp_path) == []


@pytest.mark.parametrize(("values", "message"), [
    ({"DB_HOST": "db standby"}, "refusing to set DB_HOST to 'db standby': a host name, address or port has no "
                                "whitespace, quotes, backslash, '#', '$' or '`'"),
    ({"DB_HOST": "$(reboot)"}, "refusing to set DB_HOST to '$(reboot)'"),
    ({"DB_HOST": ""}, "refusing to set DB_HOST to ''"),
    ({"DB-HOST": "x"}, "'DB-HOST' is not a valid variable name"),
    ({}, "no keys to set"),
])
def test_bad_values_are_refused_before_anything_changes(env_file, tmp_path, values, message):
    with pytest.raises(RepointError, match="^env file .*: " + message.replace("(", r"\(").replace(")", r"\)")
                       .replace("$", r"\$")):
        repoint.rewrite_env_file(str(env_file), values, stamp="run1")
    assert env_file.read_bytes() == ORIGINAL
    assert files(tmp_path) == [".env.production"]


def test_a_multi_line_value_of_a_named_key_is_not_rewritten(tmp_path):
    path = tmp_path / ".env"
    path.write_bytes(b'DB_HOST="db-primary\ninternal"\n')
    with pytest.raises(RepointError, match=r"^env file .*: DB_HOST \(line 1\) has a multi-line value; "
                                           r"not rewriting it$"):
        repoint.rewrite_env_file(str(path), NEW, stamp="run1")
    assert path.read_bytes() == b'DB_HOST="db-primary\ninternal"\n'
    with pytest.raises(RepointError, match="cannot name the copy"):
        repoint.rewrite_env_file(str(path), NEW, stamp="../x")
