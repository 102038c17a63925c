"""An Airflow connection's libpq extras reach our sessions and the client tools (sslmode, options, ...).

RDS (sslmode=verify-full, sslrootcert) and standbys need them; a typo in one is an error, not a silent
connection without TLS.
"""

from __future__ import annotations

import json
import subprocess

import pytest
from pg_dataops.airflow.base import pg_conn
from pg_dataops.common import pg as pgtools
from pg_dataops.common.config import ConfigError, load_config
from pg_dataops.common.errors import DatabaseUnreachable

PSQL = "/usr/lib/postgresql/15/bin/psql"


def define(monkeypatch, cluster, conn_id: str, extra: dict) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_" + conn_id.upper(), json.dumps({
        "conn_type": "postgres", "host": "127.0.0.1", "port": cluster.port, "login": cluster.user,
        "password": cluster.password, "schema": "glimpse", "extra": extra,
    }))


def psql_show(conn, setting: str) -> str:
    out = subprocess.run([PSQL, "-X", "-At", "-c", f"SHOW {setting}"], env=conn.client_tool_env(15),
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_extras_reach_our_sessions_and_the_client_tools(cluster, monkeypatch):
    define(monkeypatch, cluster, "extras_probe", {
        "options": "-c search_path=probe_schema", "application_name": "extras_probe", "sslmode": "disable",
        "connect_timeout": "7",
    })
    cfg = load_config()
    conn = pg_conn("extras_probe", None, "probe", cfg=cfg)
    assert "sslmode=disable" in repr(conn) and cluster.password not in repr(conn)
    with pgtools.connect(conn) as pg:
        show = dict(pg.execute("SELECT name, setting FROM pg_settings WHERE name IN "
                               "('search_path', 'application_name', 'statement_timeout')").fetchall())
    # the connection's options and ours (the config's statement_timeout) both apply
    assert show == {"search_path": "probe_schema", "application_name": "extras_probe",
                    "statement_timeout": str(cfg.statement_timeout_seconds * 1000)}
    assert psql_show(conn, "search_path") == "probe_schema"
    assert psql_show(conn, "application_name") == "extras_probe"
    assert psql_show(conn, "client_connection_check_interval") == "5s"
    assert conn.libpq_env()["PGCONNECT_TIMEOUT"] == "7"


def test_sslmode_is_applied(cluster, monkeypatch):
    # The test cluster has no TLS: sslmode=require must refuse to connect, in psycopg and in the tools.
    define(monkeypatch, cluster, "needs_tls", {"sslmode": "require"})
    conn = pg_conn("needs_tls", None, "probe")
    with pytest.raises(DatabaseUnreachable, match="server does not support SSL"):
        pgtools.connect(conn)
    out = subprocess.run([PSQL, "-X", "-At", "-c", "SELECT 1"], env=conn.client_tool_env(15),
                         capture_output=True, text=True, timeout=30)
    assert out.returncode != 0 and "server does not support SSL" in out.stderr


def test_an_unknown_extra_is_an_error_naming_it(cluster, monkeypatch):
    define(monkeypatch, cluster, "typo", {"sslmdoe": "verify-full"})
    with pytest.raises(ConfigError, match=r"Airflow connection 'typo' \(probe\): extra sslmdoe is not a libpq"):
        pg_conn("typo", None, "probe")
