"""Connecting to PostgreSQL and choosing client binaries of the server's major version. Airflow-free."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import psycopg

from pg_dataops.common.errors import (
    AuthenticationFailed,
    ClientVersionError,
    DatabaseUnreachable,
    redact,
)

# libpq connection parameters an Airflow connection's extras may carry, and the environment variable
# each has for the client tools (pg_dump, pg_restore, pg_basebackup, psql).
LIBPQ_EXTRAS = {
    "sslmode": "PGSSLMODE", "sslrootcert": "PGSSLROOTCERT", "sslcert": "PGSSLCERT", "sslkey": "PGSSLKEY",
    "sslcrl": "PGSSLCRL", "sslpassword": None, "sslcompression": "PGSSLCOMPRESSION",
    "ssl_min_protocol_version": "PGSSLMINPROTOCOLVERSION", "gssencmode": "PGGSSENCMODE",
    "connect_timeout": "PGCONNECT_TIMEOUT", "options": "PGOPTIONS", "application_name": "PGAPPNAME",
    "target_session_attrs": "PGTARGETSESSIONATTRS", "keepalives": None, "keepalives_idle": None,
    "keepalives_interval": None, "keepalives_count": None, "tcp_user_timeout": None,
    "channel_binding": "PGCHANNELBINDING", "krbsrvname": "PGKRBSRVNAME",
}
# Extras the Airflow UI and the providers use for themselves: not libpq's, dropped without a word.
_AIRFLOW_EXTRAS = {"cursor", "iam", "redshift", "aws_conn_id", "cluster-identifier", "region_name",
                   "sqlalchemy_scheme", "sqlalchemy_options", "enable_log_db_messages", "client_encoding",
                   "schema", "description"}


def libpq_extras(extra: Mapping[str, object] | None) -> dict[str, str]:
    """The libpq parameters of an Airflow connection's extras, as text; an unknown key is an error (a
    typo in ``sslmode`` must not silently connect without TLS)."""
    out: dict[str, str] = {}
    unknown = []
    for key, value in (extra or {}).items():
        if key in _AIRFLOW_EXTRAS or value is None or value == "":
            continue
        if key not in LIBPQ_EXTRAS:
            unknown.append(key)
            continue
        out[key] = str(value).lower() if isinstance(value, bool) else str(value)
    if unknown:
        what = "extra {} is not a libpq connection parameter" if len(unknown) == 1 else \
            "extras {} are not libpq connection parameters"
        raise ValueError(what.format(", ".join(sorted(unknown))) + f" (known: {', '.join(sorted(LIBPQ_EXTRAS))})")
    return out


@dataclass(frozen=True)
class PgConn:
    """What libpq needs. ``password`` never goes into argv, logs, XCom, manifests or this repr.

    ``statement_timeout`` and ``lock_timeout`` (seconds; None: the server's) bound every query of
    our own sessions (:func:`connect`); pg_dump and pg_restore get their own limits.
    """

    host: str
    port: int
    user: str
    dbname: str
    password: str | None = field(default=None, repr=False)
    statement_timeout: int | None = None
    lock_timeout: int | None = None
    # libpq parameters from the connection's extras (sslmode, sslrootcert, options, ...); see LIBPQ_EXTRAS.
    extras: Mapping[str, str] = field(default_factory=dict, repr=False)

    def __repr__(self) -> str:
        secret = ", password=********" if self.password else ""
        ssl = f", sslmode={self.extras['sslmode']}" if self.extras.get("sslmode") else ""
        return f"PgConn({self.describe()}{ssl}{secret})"

    __str__ = __repr__

    def describe(self) -> str:
        return f"{self.user}@{self.host}:{self.port}/{self.dbname}"

    def with_db(self, dbname: str) -> PgConn:
        return replace(self, dbname=dbname)

    def session_options(self) -> str | None:
        """libpq ``options``: the connection's own, then the time limits every session of ours runs under."""
        opts = [self.extras["options"]] if self.extras.get("options") else []
        if self.statement_timeout:
            opts.append(f"-c statement_timeout={int(self.statement_timeout) * 1000}")
        if self.lock_timeout:
            opts.append(f"-c lock_timeout={int(self.lock_timeout) * 1000}")
        return " ".join(opts) or None

    def libpq_env(self) -> dict[str, str]:
        """Environment for pg_dump & co: the password travels in the child's environment only."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(PGHOST=self.host, PGPORT=str(self.port), PGUSER=self.user, PGDATABASE=self.dbname)
        if self.password:
            env["PGPASSWORD"] = self.password
        env["PGCONNECT_TIMEOUT"] = "10"
        env["PGAPPNAME"] = "pg_dataops"
        for key, value in self.extras.items():
            if LIBPQ_EXTRAS.get(key):
                env[LIBPQ_EXTRAS[key]] = value
        return env

    def client_tool_env(self, server_major: int) -> dict[str, str]:
        """:meth:`libpq_env` for pg_dump / pg_restore / psql, which we may kill at a time limit: the
        server then checks every 5 s that the client is still there (PostgreSQL 14+), so a killed
        tool's session does not run on, or stay queued for a lock, without it."""
        env = self.libpq_env()
        if server_major >= 14:
            own = self.extras.get("options")
            env["PGOPTIONS"] = ((own + " ") if own else "") + "-c client_connection_check_interval=5000"
        return env


def connect(conn: PgConn, *, autocommit: bool = False, connect_timeout: int = 10) -> psycopg.Connection:
    """Open a connection, turning libpq's errors into ones that name the cause."""
    params = {"connect_timeout": connect_timeout, "application_name": "pg_dataops", **conn.extras}
    params.pop("options", None)  # merged into session_options()
    if conn.session_options():
        params["options"] = conn.session_options()
    try:
        return psycopg.connect(
            host=conn.host,
            port=conn.port,
            user=conn.user,
            dbname=conn.dbname,
            password=conn.password or None,
            autocommit=autocommit,
            **params,
        )
    except psycopg.OperationalError as exc:
        raise classify_connect_error(conn, str(exc)) from None


def classify_connect_error(conn: PgConn, message: str) -> Exception:
    msg = redact(message.strip(), conn.password)
    low = msg.lower()
    if "password authentication failed" in low or "no password supplied" in low:
        return AuthenticationFailed(
            f"authentication failed for user {conn.user!r} on {conn.host}:{conn.port} "
            f"(wrong password in the Airflow connection?): {msg}"
        )
    if "does not exist" in low and "database" in low:
        return DatabaseUnreachable(f"database {conn.dbname!r} does not exist on {conn.host}:{conn.port}: {msg}")
    return DatabaseUnreachable(f"cannot reach PostgreSQL at {conn.host}:{conn.port} ({conn.describe()}): {msg}")


def server_major(pg: psycopg.Connection) -> int:
    return int(pg.execute("SHOW server_version_num").fetchone()[0]) // 10000


def client_binary(name: str, major: int, pg_bin_root: str) -> str:
    """The client binary matching the server's major version, or a clear error.

    pg_dump refuses servers newer than itself, and an older server dumped by a newer client makes
    a dump the old server may not restore; so we require the same major.
    """
    path = os.path.join(pg_bin_root, str(major), "bin", name)
    if not os.access(path, os.X_OK):
        raise ClientVersionError(
            f"the server is PostgreSQL {major} but {path} is missing: install the PostgreSQL {major} "
            f"client (Debian: apt-get install postgresql-client-{major})"
        )
    return path


def binary_version(path: str) -> str:
    """'pg_dump (PostgreSQL) 15.19 (Debian 15.19-0+deb12u1)'"""
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, check=True, timeout=30)
    except subprocess.TimeoutExpired:
        raise ClientVersionError(f"{path} --version did not answer within 30 s") from None
    return out.stdout.strip()


def binary_major(path: str) -> int:
    m = re.search(r"\(PostgreSQL\) (\d+)", binary_version(path))
    if not m:
        raise ClientVersionError(f"cannot tell the version of {path}")
    return int(m.group(1))
