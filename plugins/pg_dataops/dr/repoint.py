"""Pointing everything at the new primary after a failover (pg_failover). Airflow-free.

The runbook (2.2) did ``sed -i s/$PRIMARY_HOST/$STANDBY_HOST/g .env.production``: every occurrence of the old
host anywhere in the file, a comment or another key's value included, with no copy and no way to tell a rerun
from a first run. Here each target is changed exactly and only when it differs, so a rerun after a partial
failure finishes the job and changes nothing twice:

- the application's env file: the named keys' lines (:func:`rewrite_env_file`), the original kept beside it;
- the Airflow connection of the target (``glimpse_db``), through Airflow's REST API (:class:`AirflowApi`,
  :func:`point_connection`), so that every DAG, the backups included, follows the new primary;
- the database's DNS record in Route53, UPSERTed through a boto3 ``route53`` client (:func:`upsert_record`).

Every function returns a JSON-safe dict for the failover's timeline; bad input fails with :class:`RepointError`
naming the cause before anything is changed.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import stat
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from pg_dataops.common.config import Route53Record
from pg_dataops.common.errors import AuthenticationFailed, BackupError, PermanentError, redact

BODY_TAIL = 300  # characters of an error answer kept in the message


class RepointError(PermanentError):
    """A target cannot be pointed at the new primary as asked (missing file, connection not in the metadata
    database, refused credentials, bad value); retrying cannot change that."""


# ==== the env file =========================================================================================

_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# A value we write: a host name, an address or a port. Nothing a dotenv or shell parser would read differently
# quoted or unquoted (whitespace, quotes, backslash, #, $, backtick), so the existing quoting can be kept as is.
_SAFE_VALUE_RE = re.compile(r"^[^\s\"'\\#$`]*$")
_ASSIGN_RE = re.compile(r"^(?P<lead>[ \t]*)(?P<export>export[ \t]+)?(?P<key>[A-Za-z_][A-Za-z0-9_.-]*)"
                        r"(?P<eq>[ \t]*=[ \t]*)(?P<rest>.*)$", re.DOTALL)
_UNQUOTED_RE = re.compile(r"^(?P<value>.*?)(?P<suffix>(?:[ \t]+#.*)?[ \t]*)$", re.DOTALL)
_LINE_RE = re.compile(r"[^\n]*\n|[^\n]+")
BACKUP_INFIX = ".before_failover_"


@dataclass
class _Entry:
    """One ``KEY=value`` assignment: lines ``first``..``last`` of the file (more than one: a multi-line quoted
    value), split so that only ``value`` changes when it is rewritten."""

    key: str
    first: int
    last: int
    head: str  # leading blanks, "export ", the key and "=" with its blanks
    quote: str  # '"', "'" or ""
    raw: str  # the value as written between the quotes
    suffix: str  # after the value: closing quote, blanks, an inline comment (without the line ending)

    @property
    def multiline(self) -> bool:
        return self.first != self.last

    def value(self) -> str:
        if self.quote == '"':  # the escapes dotenv parsers and shells agree on
            return re.sub(r"\\([\\\"$`n])", lambda m: "\n" if m[1] == "n" else m[1], self.raw)
        return self.raw


def _split_ending(line: str) -> tuple[str, str]:
    if line.endswith("\r\n"):
        return line[:-2], "\r\n"
    if line.endswith("\n"):
        return line[:-1], "\n"
    return line, ""


def _closing_quote(text: str, quote: str, start: int) -> int:
    """Index of the quote closing a value that opened before ``start``, or -1 (double quotes honour backslash
    escapes, single quotes none)."""
    i = start
    while i < len(text):
        if quote == '"' and text[i] == "\\":
            i += 2
            continue
        if text[i] == quote:
            return i
        i += 1
    return -1


def _parse(lines: list[str]) -> list[_Entry]:
    """Every assignment of the file, in order. Comments, blank lines and anything else are not entries (and are
    never touched); a quoted value spanning lines is one entry, so a line inside it is never taken for a key."""
    entries: list[_Entry] = []
    i = 0
    while i < len(lines):
        body, _ = _split_ending(lines[i])
        m = _ASSIGN_RE.match(body)
        if not m:
            i += 1
            continue
        head = body[:m.start("rest")]
        rest = m["rest"]
        if rest[:1] in ('"', "'"):
            q = rest[0]
            text, first = rest, i
            end = _closing_quote(text, q, 1)
            while end < 0 and i + 1 < len(lines):  # a multi-line value: read on to its closing quote
                text += _split_ending(lines[i])[1]
                i += 1
                text += _split_ending(lines[i])[0]
                end = _closing_quote(text, q, 1)
            if end < 0:  # unterminated to the end of the file
                entries.append(_Entry(m["key"], first, i, head, q, text[1:], ""))
            else:
                entries.append(_Entry(m["key"], first, i, head, q, text[1:end], text[end:]))
        else:
            u = _UNQUOTED_RE.match(rest)
            entries.append(_Entry(m["key"], i, i, head, "", u["value"], u["suffix"]))
        i += 1
    return entries


def _read_text(path: str) -> tuple[str, os.stat_result]:
    """The file's text (undecodable bytes kept as surrogates, so writing it back keeps every byte) and stat."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise RepointError(f"env file {path} does not exist (dr.failover.env_file)") from None
    except OSError as exc:
        raise RepointError(f"env file {path} cannot be read: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise RepointError(f"env file {path} is not a regular file (dr.failover.env_file)")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise RepointError(f"env file {path} cannot be read: {exc.strerror}") from None
    return data.decode("utf-8", "surrogateescape"), st


def read_env_values(path: str, keys: Sequence[str]) -> dict[str, str | None]:
    """Each key's value in the env file as a dotenv parser reads it (the last assignment wins), None when the
    key is not assigned; a missing file or not a regular file: RepointError."""
    text, _ = _read_text(path)
    found: dict[str, str] = {}
    for entry in _parse(_LINE_RE.findall(text)):
        found[entry.key] = entry.value()
    return {k: found.get(k) for k in keys}


def _check_values(path: str, values: Mapping[str, str]) -> None:
    if not values:
        raise RepointError(f"env file {path}: no keys to set")
    for key, value in values.items():
        if not isinstance(key, str) or not _KEY_RE.match(key):
            raise RepointError(f"env file {path}: {key!r} is not a valid variable name (dr.failover.env_host_key / "
                               "env_port_key)")
        if not isinstance(value, str) or not value or not _SAFE_VALUE_RE.match(value):
            raise RepointError(f"env file {path}: refusing to set {key} to {value!r}: a host name, address or port "
                               "has no whitespace, quotes, backslash, '#', '$' or '`'")


def _temp_copy(directory: str, name: str, content: bytes, st: os.stat_result) -> str:
    """A temporary file in ``directory`` holding ``content`` with ``st``'s mode and owner, synced to disk; its
    path. The owner cannot be kept (not root, someone else's file): RepointError, nothing left behind."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".pg_dataops.tmp", dir=directory)
    except OSError as exc:
        raise RepointError(f"cannot write {os.path.join(directory, name)}: cannot create a file in {directory}: "
                           f"{exc.strerror}") from None
    try:
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(content)
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:
            raise RepointError(f"cannot write {os.path.join(directory, name)}: {exc.strerror}") from None
        os.chmod(tmp, st.st_mode & 0o7777)
        mine = os.stat(tmp)
        if (mine.st_uid, mine.st_gid) != (st.st_uid, st.st_gid):
            try:
                os.chown(tmp, st.st_uid, st.st_gid)
            except PermissionError:
                raise RepointError(f"cannot keep the owner ({st.st_uid}:{st.st_gid}) of {os.path.join(directory, name)}"
                                   f" when rewriting it (running as uid {os.geteuid()}); run the task as that user "
                                   "or root, or change the file by hand") from None
            os.chmod(tmp, st.st_mode & 0o7777)  # chown clears setuid/setgid bits
    except BaseException:
        os.unlink(tmp)
        raise
    return tmp


def _fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _keep_backup(path: str, real: str, original: bytes, st: os.stat_result, stamp: str) -> tuple[str, bool]:
    """``<path>.before_failover_<stamp>`` with the original bytes, mode and owner; an existing one is kept (a
    rerun's file is already changed: it must not replace the original). Whether this call made it."""
    backup = f"{path}{BACKUP_INFIX}{stamp}"
    if os.path.lexists(backup):
        return backup, False
    directory = os.path.dirname(os.path.abspath(backup))
    tmp = _temp_copy(directory, os.path.basename(backup), original, st)
    try:
        try:
            os.link(tmp, backup)  # never replaces an existing file, and the copy appears whole or not at all
        except FileExistsError:
            return backup, False
        except OSError:  # a file system without hard links
            if os.path.lexists(backup):
                return backup, False
            os.replace(tmp, backup)
            tmp = ""
    finally:
        if tmp:
            os.unlink(tmp)
    shutil.copystat(real, backup)  # the original's times too: when it was last changed before the failover
    _fsync_dir(directory)
    return backup, True


def rewrite_env_file(path: str, values: Mapping[str, str], *, stamp: str) -> dict:
    """Set ``KEY=value`` for each of ``values`` in the env file; every other byte stays as it was.

    Only the named keys' assignment lines change (all of them when a key is assigned more than once), and only
    their value: an ``export`` prefix, the blanks around ``=``, the value's quotes and an inline comment are
    kept. A key not in the file is appended at the end. Before the first change the original is copied to
    ``<path>.before_failover_<stamp>`` (same mode and owner; an existing copy is kept, so a rerun never
    overwrites the original with an already changed file). The file is replaced atomically (a temporary file in
    its directory, then ``os.replace``) with its mode and owner; a symbolic link is followed and stays a link.

    Nothing to change: ``changed`` False and no copy (``backup`` names an earlier try's copy if there is one).
    Returns ``{"path", "changed", "backup", "backup_made", "before": {key: old or None}, "after": {key: new}}``.
    """
    _check_values(path, values)
    if not stamp or "/" in stamp or "\0" in stamp or stamp in (".", ".."):
        raise RepointError(f"env file {path}: {stamp!r} cannot name the copy of the original")
    real = os.path.realpath(path)
    text, st = _read_text(path)
    lines = _LINE_RE.findall(text)
    entries = _parse(lines)
    before = {key: None for key in values}
    for entry in entries:
        if entry.key in values:
            if entry.multiline:
                raise RepointError(f"env file {path}: {entry.key} (line {entry.first + 1}) has a multi-line value; "
                                   "not rewriting it")
            before[entry.key] = entry.value()
    new_lines = list(lines)
    for entry in entries:
        if entry.key in values:
            ending = _split_ending(lines[entry.first])[1]
            new_lines[entry.first] = f"{entry.head}{entry.quote}{values[entry.key]}{entry.suffix}{ending}"
    missing = [key for key in values if key not in {e.key for e in entries}]
    if missing:
        newline = "\r\n" if re.match(r"[^\n]*\r\n", text) else "\n"
        if new_lines and not new_lines[-1].endswith("\n"):
            new_lines[-1] += newline
        # a file made to be sourced by a shell exports every variable: so do ours
        export = "export " if entries and all(re.match(r"[ \t]*export[ \t]", e.head) for e in entries) else ""
        new_lines += [f"{export}{key}={values[key]}{newline}" for key in missing]
    new_text = "".join(new_lines)
    result = {"path": path, "changed": new_text != text, "backup": None, "backup_made": False,
              "before": before, "after": dict(values)}
    existing_backup = f"{path}{BACKUP_INFIX}{stamp}"
    if new_text == text:
        result["backup"] = existing_backup if os.path.lexists(existing_backup) else None
        return result
    directory, name = os.path.split(real)
    tmp = _temp_copy(directory, name, new_text.encode("utf-8", "surrogateescape"), st)
    try:
        original = text.encode("utf-8", "surrogateescape")
        result["backup"], result["backup_made"] = _keep_backup(path, real, original, st, stamp)
        os.replace(tmp, real)
        tmp = ""
    finally:
        if tmp:
            os.unlink(tmp)
    _fsync_dir(directory)
    return result


# ==== Airflow's connection, through its REST API ===========================================================


class AirflowApi:
    """Airflow 3's public REST API (``/api/v2``), authenticated with a JWT from ``POST /auth/token``.

    ``base_url``: the api-server's address (``http://airflow-apiserver:8080``). The user needs the right to read
    and edit connections. Neither the password nor the token is ever shown (repr, errors)."""

    def __init__(self, base_url: str, username: str, password: str, *, timeout: float = 30,
                 attempts: int = 3, pause: float = 2.0):
        base = base_url.strip().rstrip("/")
        if base.endswith("/api/v2"):
            base = base[: -len("/api/v2")]
        if not re.match(r"^https?://[^/\s]+", base):
            raise RepointError(f"Airflow API address {base_url!r} is not an http(s) URL (dr.failover."
                               "airflow_api_conn_id: its host, with the scheme, and port)")
        self.base_url = base
        self.username = username
        self._password = password
        self._token: str | None = None
        self.timeout = timeout
        self.attempts = max(1, attempts)
        self.pause = pause

    def __repr__(self) -> str:
        return f"AirflowApi(base_url={self.base_url!r}, username={self.username!r})"

    def _redact(self, text: str) -> str:
        return redact(text, self._password, self._token)

    def _send(self, method: str, url: str, **kwargs):
        """One request, sent again (``attempts`` in all, ``pause`` doubling between them) while it gets no
        answer: a busy or restarting api-server, and the failover steps have no retries. Safe because every call
        here is idempotent: GETs, a token, a PATCH of host and port to fixed values."""
        import requests

        for attempt in range(1, self.attempts + 1):
            try:
                return requests.request(method, url, timeout=self.timeout, **kwargs)
            except requests.RequestException as exc:
                if attempt < self.attempts:
                    time.sleep(self.pause * 2 ** (attempt - 1))
                    continue
                raise BackupError(self._redact(
                    f"Airflow API at {self.base_url}: {method} {url[len(self.base_url):]} got no answer in "
                    f"{self.attempts} tries ({self.timeout:.0f} s each): {type(exc).__name__}: {exc}")) from None
        raise AssertionError("unreachable")

    def _error(self, what: str, resp) -> RepointError:
        body = " ".join((resp.text or "").split())[:BODY_TAIL]
        hint = (f" (user {self.username!r} needs the permission to read and edit connections)"
                if resp.status_code == 403 else "")
        return RepointError(self._redact(f"Airflow API at {self.base_url}: {what}: HTTP {resp.status_code}"
                                         + (f": {body}" if body else "") + hint))

    def token(self) -> str:
        if self._token is None:
            resp = self._send("POST", f"{self.base_url}/auth/token",
                              json={"username": self.username, "password": self._password})
            if resp.status_code in (400, 401, 403):
                raise RepointError(self._redact(
                    f"Airflow API at {self.base_url} refused the credentials of user {self.username!r} "
                    f"(HTTP {resp.status_code}): check the login and password of the Airflow API connection "
                    "(dr.failover.airflow_api_conn_id)"))
            if resp.status_code not in (200, 201):
                raise self._error("getting a token (POST /auth/token)", resp)
            try:
                self._token = str(resp.json()["access_token"])
            except (ValueError, KeyError, TypeError):
                raise self._error("getting a token (POST /auth/token): no access_token in the answer", resp) from None
        return self._token

    def _call(self, method: str, path: str, *, ok: tuple[int, ...] = (200,), **kwargs):
        """``method`` on ``/api/v2/<path>``; the answer when its status is in ``ok``, else RepointError."""
        url = f"{self.base_url}/api/v2/{path}"
        for attempt in (1, 2):
            resp = self._send(method, url, headers={"Authorization": f"Bearer {self.token()}"}, **kwargs)
            if resp.status_code == 401 and attempt == 1:  # an expired token: get a new one, once
                self._token = None
                continue
            break
        if resp.status_code not in ok:
            raise self._error(f"{method} /api/v2/{path.split('?')[0]}", resp)
        return resp

    def get_connection(self, conn_id: str) -> dict | None:
        """The connection as the API shows it (password masked), or None when it is not in the metadata DB."""
        resp = self._call("GET", f"connections/{quote(conn_id, safe='')}", ok=(200, 404))
        return None if resp.status_code == 404 else resp.json()

    def set_host_port(self, conn_id: str, host: str, port: int) -> dict:
        """PATCH only the connection's host and port (``update_mask``); login, password and extras stay. The API
        validates a whole connection body, so its id and conn_type are sent as they are."""
        current = self.get_connection(conn_id)
        if current is None:
            raise RepointError(_not_in_db(conn_id, host, port))
        body = {"connection_id": conn_id, "conn_type": current["conn_type"], "host": host, "port": int(port)}
        resp = self._call("PATCH", f"connections/{quote(conn_id, safe='')}", json=body,
                          params=[("update_mask", "host"), ("update_mask", "port")])
        return resp.json()


def _not_in_db(conn_id: str, host: str, port: int) -> str:
    return (f"Airflow connection {conn_id!r} is not in Airflow's metadata database (the REST API answers 404): it "
            f"is defined by the environment variable AIRFLOW_CONN_{conn_id.upper()} or a secrets backend, which the "
            f"API cannot change. Update it there (host {host}, port {port}) on every Airflow component and restart "
            "them, or move it to Admin > Connections so that pg_failover can repoint it")


def point_connection(api: AirflowApi, conn_id: str, host: str, port: int) -> dict:
    """Point the Airflow connection ``conn_id`` at ``host:port`` (only those two fields change).

    Already pointing there: ``changed`` False and no PATCH. Returns ``{"conn_id", "changed", "before": {"host",
    "port"}, "after": {"host", "port"}}``. Not in the metadata DB (an ``AIRFLOW_CONN_*`` variable, a secrets
    backend): RepointError saying what to update instead. Tasks look in secrets backends and ``AIRFLOW_CONN_*``
    variables before the metadata DB, so one of those with the same id would still win over this change: the
    caller checks the connection as tasks see it afterwards."""
    if not host or not isinstance(port, int) or not 0 < port < 65536:
        raise RepointError(f"Airflow connection {conn_id!r}: refusing host {host!r} port {port!r}")
    current = api.get_connection(conn_id)
    if current is None:
        raise RepointError(_not_in_db(conn_id, host, port))
    before = {"host": current.get("host"), "port": current.get("port")}
    wanted = {"host": host, "port": port}
    if before == wanted:
        return {"conn_id": conn_id, "changed": False, "before": before, "after": before}
    answer = api.set_host_port(conn_id, host, port)
    after = {"host": answer.get("host"), "port": answer.get("port")}
    if after != wanted:
        raise RepointError(f"Airflow API: connection {conn_id!r} reads {after} after the update to {wanted}")
    return {"conn_id": conn_id, "changed": True, "before": before, "after": after}


# ==== Route53 ==============================================================================================

RECORD_TYPES = ("A", "CNAME")
_AUTH_CODES = {"AccessDenied", "AccessDeniedException", "InvalidClientTokenId", "SignatureDoesNotMatch",
               "UnrecognizedClientException", "ExpiredToken", "ExpiredTokenException"}
_HOSTNAME_RE = re.compile(r"^(?=.{1,253}\.?$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
                          r"(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?$")


def _dns_name(name: str) -> str:
    return name.rstrip(".").lower() + "."


def _normal(record_type: str, value: str) -> str:
    """A value as Route53 compares it: addresses canonical, host names lower case with the final dot."""
    if record_type == "A":
        try:
            return str(ipaddress.IPv4Address(value.strip()))
        except ValueError:
            return value
    return _dns_name(value.strip())


def _check_record(record: Route53Record, value: str | None = None) -> None:
    where = f"Route53 record {record.record_name} (dr.failover.route53)"
    if record.record_type not in RECORD_TYPES:
        raise RepointError(f"{where}: record_type {record.record_type!r} is not one of {', '.join(RECORD_TYPES)}")
    if not record.zone_id or not record.record_name.endswith("."):
        raise RepointError(f"{where}: needs a zone_id and a record_name ending with '.'")
    if value is None:
        return
    if record.record_type == "A":
        try:
            ipaddress.IPv4Address(value)
        except ValueError:
            raise RepointError(f"{where}: an A record needs an IPv4 address, not {value!r} (the standby's "
                               "dns_value); use record_type CNAME for a host name") from None
    else:
        try:
            ipaddress.ip_address(value)
            is_address = True
        except ValueError:
            is_address = False
        if is_address or not _HOSTNAME_RE.match(value):
            raise RepointError(f"{where}: a CNAME record needs a host name, not {value!r} (the standby's dns_value)"
                               "; use record_type A for an address")


def _aws_error(exc: Exception, what: str, record: Route53Record) -> Exception:
    from botocore.exceptions import ClientError

    if not isinstance(exc, ClientError):
        return BackupError(f"{what}: {type(exc).__name__}: {exc}")
    error = (getattr(exc, "response", None) or {}).get("Error") or {}
    code, message = str(error.get("Code", "")), str(error.get("Message", ""))
    if code in _AUTH_CODES:
        return AuthenticationFailed(f"{what}: AWS refused the credentials of the Route53 connection "
                                    f"{record.conn_id!r} ({code})")
    if code in ("NoSuchHostedZone", "InvalidInput", "InvalidChangeBatch", "NoSuchChange"):
        return RepointError(f"{what}: {code}: {message}")
    return BackupError(f"{what}: {code or type(exc).__name__}: {message or exc}")  # throttling etc.: retries


def record_value(client, record: Route53Record) -> str | None:
    """The record's current value in its hosted zone (several values joined by ","; an alias as
    ``ALIAS <target>``), or None when there is no such record."""
    from botocore.exceptions import BotoCoreError, ClientError

    _check_record(record)
    try:
        sets = client.list_resource_record_sets(HostedZoneId=record.zone_id, StartRecordName=record.record_name,
                                                StartRecordType=record.record_type, MaxItems="1")
    except (ClientError, BotoCoreError) as exc:
        raise _aws_error(exc, f"reading Route53 record {record.record_name} in zone {record.zone_id}",
                         record) from None
    for item in sets.get("ResourceRecordSets", []):
        # the listing starts at the name: the first set is another record when ours does not exist
        if _dns_name(item["Name"]) != _dns_name(record.record_name) or item["Type"] != record.record_type:
            return None
        if item.get("AliasTarget"):
            return f"ALIAS {item['AliasTarget'].get('DNSName')}"
        values = [r["Value"] for r in item.get("ResourceRecords", [])]
        return ",".join(values) if values else None
    return None


def upsert_record(client, record: Route53Record, value: str, *, wait_seconds: float = 120, interval: float = 2,
                  sleep: Callable[[float], None] = time.sleep) -> dict:
    """UPSERT the record to ``value`` (TTL from the config), then wait for Route53 to report the change INSYNC
    on all its name servers (at most ``wait_seconds``: ``status`` is then still PENDING; the change is made and
    propagates by itself).

    Already that value: ``changed`` False and no change batch. Returns ``{"record", "type", "before", "after",
    "changed", "change_id", "status", "waited_seconds"}``."""
    from botocore.exceptions import BotoCoreError, ClientError

    _check_record(record, value)
    before = record_value(client, record)
    result: dict[str, Any] = {"record": record.record_name, "type": record.record_type, "before": before,
                              "after": value, "changed": False, "change_id": None, "status": None,
                              "waited_seconds": 0.0}
    if before is not None and _normal(record.record_type, before) == _normal(record.record_type, value):
        result["after"] = before
        return result
    change = {"Action": "UPSERT", "ResourceRecordSet": {
        "Name": record.record_name, "Type": record.record_type, "TTL": int(record.ttl),
        "ResourceRecords": [{"Value": value}]}}
    comment = f"pg_dataops failover: {record.record_name} {record.record_type} -> {value}"[:256]
    what = f"UPSERT of Route53 record {record.record_name} in zone {record.zone_id}"
    try:
        info = client.change_resource_record_sets(HostedZoneId=record.zone_id,
                                                  ChangeBatch={"Comment": comment, "Changes": [change]})["ChangeInfo"]
    except (ClientError, BotoCoreError) as exc:
        raise _aws_error(exc, what, record) from None
    result.update(changed=True, change_id=info["Id"], status=info["Status"])
    started, slept = time.monotonic(), 0.0
    while result["status"] != "INSYNC":
        if max(time.monotonic() - started, slept) + interval > wait_seconds:
            break
        sleep(interval)
        slept += interval
        try:
            result["status"] = client.get_change(Id=info["Id"])["ChangeInfo"]["Status"]
        except (ClientError, BotoCoreError) as exc:
            raise _aws_error(exc, f"{what}: waiting for change {info['Id']}", record) from None
    result["waited_seconds"] = round(time.monotonic() - started, 3)
    return result
