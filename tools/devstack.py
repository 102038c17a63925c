"""Throwaway servers for the demo, the tests and the benchmark: nothing here runs in production.

- LocalCluster: a PostgreSQL cluster from initdb on a free port (run as the ``postgres`` OS user
  when we are root, since initdb refuses root).
- MotoS3: moto in server mode, so boto3 speaks real HTTP.
- Receiver: an HTTP server that records what Slack / PagerDuty clients post.
- airflow_env: the environment for ``airflow dags test`` against a private SQLite metadata DB.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "plugins"))

from pg_dataops.pgtools import PgConn  # noqa: E402

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_postgres(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


class LocalCluster:
    """A PostgreSQL 15 cluster in a temporary directory; TCP on 127.0.0.1 with a password."""

    def __init__(self, base_dir: str | None = None, *, password: str = "glimpse-test-pw", port: int | None = None,
                 settings: dict[str, str] | None = None):
        self.base = Path(base_dir or tempfile.mkdtemp(prefix="pgcluster-"))
        self.data = self.base / "data"
        self.port = port or free_port()
        self.password = password
        self.user = "postgres"
        self.settings = settings or {}

    def start(self) -> LocalCluster:
        if not (PG_BIN / "initdb").exists():
            raise RuntimeError(f"{PG_BIN}/initdb not found: install postgresql-15 (make deps does)")
        self.base.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(self.base, pw.pw_uid, pw.pw_gid)
            os.chmod(self.base, 0o755)
        pwfile = self.base / "pwfile"
        pwfile.write_text(self.password + "\n")
        if os.geteuid() == 0:
            os.chown(pwfile, pwd.getpwnam("postgres").pw_uid, -1)
        subprocess.run(
            _as_postgres([str(PG_BIN / "initdb"), "-D", str(self.data), "-U", self.user, "--pwfile", str(pwfile),
                          "--auth-local=trust", "--auth-host=scram-sha-256", "--data-checksums", "-E", "UTF8",
                          "--locale=C.UTF-8"]),
            check=True, capture_output=True,
        )
        pwfile.unlink()
        conf = {
            "port": str(self.port),
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": f"'{self.base}'",
            "fsync": "off",  # throwaway cluster: durability is not what the tests measure
            "shared_buffers": "'128MB'",
            "max_connections": "50",
            **self.settings,
        }
        with open(self.data / "postgresql.conf", "a") as f:
            for k, v in conf.items():
                f.write(f"{k} = {v}\n")
        subprocess.run(
            _as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.base / "server.log"),
                          "-w", "-t", "60", "start"]),
            check=True, capture_output=True,
        )
        return self

    def stop(self, remove: bool = True) -> None:
        if (self.data / "postmaster.pid").exists():
            subprocess.run(_as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"]),
                           capture_output=True)
        if remove:
            shutil.rmtree(self.base, ignore_errors=True)

    def conn(self, dbname: str = "postgres", password: str | None = None) -> PgConn:
        return PgConn("127.0.0.1", self.port, self.user, dbname, self.password if password is None else password)

    def psql(self, *args: str, dbname: str = "postgres", input: str | None = None) -> str:
        env = {**os.environ, "PGPASSWORD": self.password}
        out = subprocess.run(
            [str(PG_BIN / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", str(self.port),
             "-U", self.user, "-d", dbname, *args],
            check=True, capture_output=True, text=True, env=env, input=input,
        )
        return out.stdout

    def createdb(self, name: str) -> None:
        import psycopg
        from psycopg import sql

        with psycopg.connect(host="127.0.0.1", port=self.port, user=self.user, password=self.password,
                             dbname="postgres", autocommit=True) as pg:
            pg.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))

    def dropdb(self, name: str) -> None:
        import psycopg
        from psycopg import sql

        with psycopg.connect(host="127.0.0.1", port=self.port, user=self.user, password=self.password,
                             dbname="postgres", autocommit=True) as pg:
            pg.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))

    def database_size(self, name: str) -> int:
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.port, user=self.user, password=self.password,
                             dbname="postgres") as pg:
            return pg.execute("SELECT pg_database_size(%s)", (name,)).fetchone()[0]

    def load_demo(self, dbname: str, users: int) -> None:
        """The Glimpse-like schema and deterministic data (include/sql/demo/)."""
        demo = REPO / "include" / "sql" / "demo"
        self.psql("-f", str(demo / "glimpse_schema.sql"), dbname=dbname)
        self.psql("-v", f"users={int(users)}", "-f", str(demo / "glimpse_data.sql"), dbname=dbname)

    def airflow_conn(self, dbname: str, password: str | None = None) -> str:
        return json.dumps({"conn_type": "postgres", "host": "127.0.0.1", "port": self.port, "login": self.user,
                           "password": self.password if password is None else password, "schema": dbname})


class MotoS3:
    """moto in server mode: a real HTTP S3 endpoint on 127.0.0.1."""

    access_key = "testing-access-key"
    secret_key = "testing-secret-key"
    region = "us-east-1"

    def __init__(self, port: int | None = None):
        self.port = port or free_port()
        self._server = None

    def start(self) -> MotoS3:
        from moto.server import ThreadedMotoServer

        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()
        return self

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=self.access_key,
                            aws_secret_access_key=self.secret_key, region_name=self.region)

    def airflow_conn(self, endpoint: str | None = None) -> str:
        return json.dumps({"conn_type": "aws", "login": self.access_key, "password": self.secret_key,
                           "extra": {"endpoint_url": endpoint or self.endpoint, "region_name": self.region}})

    def stop(self) -> None:
        if self._server:
            self._server.stop()


class Receiver:
    """Records every POST (path and JSON body): stands in for Slack webhooks and PagerDuty's events API."""

    def __init__(self):
        self.requests: list[dict] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server API
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    payload = json.loads(body)
                except ValueError:
                    payload = body.decode(errors="replace")
                with receiver._lock:
                    receiver.requests.append({"path": self.path, "json": payload})
                reply = b'{"status":"success","message":"Event processed","dedup_key":"x"}'
                self.send_response(202 if self.path.startswith("/pagerduty") else 200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args):
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def start(self) -> Receiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()

    def posts(self, prefix: str) -> list[dict]:
        with self._lock:
            return [r for r in self.requests if r["path"].startswith(prefix)]

    def slack_conn(self) -> str:
        # SlackWebhookHook builds {schema}://{host}/{password}
        return json.dumps({"conn_type": "slackwebhook", "schema": "http", "host": f"127.0.0.1:{self.port}/slack",
                           "password": "T000/B000/XXXX"})

    def pagerduty_conn(self) -> str:
        return json.dumps({"conn_type": "pagerduty_events", "host": f"http://127.0.0.1:{self.port}/pagerduty",
                           "password": "test-routing-key"})


def airflow_env(home: str | os.PathLike, *, conns: dict[str, str], extra: dict[str, str] | None = None) -> dict:
    """Environment for an isolated Airflow: private SQLite metadata DB, this repo's dags and plugins."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "PGBACKUP_", "AWS_"))}
    # `airflow standalone` starts its components as `airflow ...` subprocesses: the venv must be on PATH.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}"
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(REPO / "dags"),
        AIRFLOW__CORE__PLUGINS_FOLDER=str(REPO / "plugins"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__UNIT_TEST_MODE="False",
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{Path(home) / 'airflow.db'}",
        AIRFLOW__API__BASE_URL="http://localhost:8080",
        AIRFLOW__LOGGING__LOGGING_LEVEL="INFO",
        # No ambient AWS credentials: everything must come from the backup_s3 connection.
        AWS_SHARED_CREDENTIALS_FILE="/nonexistent",
        AWS_CONFIG_FILE="/nonexistent",
        AWS_EC2_METADATA_DISABLED="true",
    )
    for conn_id, value in conns.items():
        env["AIRFLOW_CONN_" + conn_id.upper()] = value
    env.update(extra or {})
    return env


def airflow_bin() -> str:
    return str(Path(sys.executable).with_name("airflow"))


def migrate(env: dict) -> None:
    subprocess.run([airflow_bin(), "db", "migrate"], env=env, check=True, capture_output=True, timeout=300)


def dags_test(env: dict, dag_id: str, logical_date: str | None = None, conf: dict | None = None,
              timeout: int = 600) -> subprocess.CompletedProcess:
    argv = [airflow_bin(), "dags", "test", dag_id]
    if logical_date:
        argv.append(logical_date)
    if conf is not None:
        argv += ["-c", json.dumps(conf)]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.1) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()
