"""Throwaway servers for the demo, the tests and the benchmark: nothing here runs in production.

- LocalCluster: a PostgreSQL cluster from initdb on a free port (run as the ``postgres`` OS user
  when we are root, since initdb refuses root).
- MotoS3: moto in server mode, so boto3 speaks real HTTP.
- Receiver: an HTTP server that records what Slack / PagerDuty clients post.
- airflow_env: the environment for ``airflow dags test`` against a private SQLite metadata DB.
- AirflowServices: a real api-server + scheduler + dag-processor (LocalExecutor) on such a home, for what
  ``airflow dags test`` does not do (dagrun_timeout, DAG-level callbacks) and for browser tests.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
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

from pg_dataops.common.pg import PgConn  # noqa: E402

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
                 settings: dict[str, str] | None = None, env: dict[str, str] | None = None):
        self.base = Path(base_dir or tempfile.mkdtemp(prefix="pgcluster-"))
        self.env = env or {}  # the server's extra environment (archive_command's S3 credentials)
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
        self.pg_ctl_start()
        return self

    def pg_ctl_start(self) -> None:
        subprocess.run(
            _as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.base / "server.log"),
                          "-w", "-t", "60", "start"]),
            check=True, capture_output=True, env={**os.environ, **self.env},
        )

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
    """Run `airflow dags test`; the result also carries `airflow_home`, `dag_id` and `dag_run` (the newest
    dag_run row of that DAG in the metadata DB after the run: its run_id and state), since the run's state is
    the metadata DB's, not whatever the output says."""
    argv = [airflow_bin(), "dags", "test", dag_id]
    if logical_date:
        argv.append(logical_date)
    if conf is not None:
        argv += ["-c", json.dumps(conf)]
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)
    proc.airflow_home = Path(env["AIRFLOW_HOME"])
    proc.dag_id = dag_id
    proc.dag_run = latest_dag_run(proc.airflow_home, dag_id)
    return proc


def latest_dag_run(airflow_home: str | os.PathLike, dag_id: str) -> dict | None:
    """The newest dag_run row of `dag_id` in that home's SQLite metadata DB ({"run_id", "state", ...}), or None.

    `airflow dags test` replaces a run with the same logical date, so the newest row is the last run's."""
    import sqlite3

    db = Path(airflow_home) / "airflow.db"
    if not db.exists():
        return None
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        con.row_factory = sqlite3.Row
        row = con.execute("SELECT id, run_id, state, start_date, end_date FROM dag_run WHERE dag_id = ? "
                          "ORDER BY id DESC LIMIT 1", (dag_id,)).fetchone()
    return dict(row) if row else None


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.1) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


class AirflowServices:
    """A real Airflow on ``env``'s home (see :func:`airflow_env`): api-server, scheduler and dag-processor as
    separate processes, LocalExecutor on the home's SQLite metadata DB, the simple auth manager.

    For what `airflow dags test` does not do (it never enforces dagrun_timeout, runs no scheduler and no
    dag-processor callbacks) and for browser tests. Each component runs in its own process group, logging to
    ``<home>/<component>.log``; :meth:`stop` ends those groups and the task processes the executor started.
    The execution API URL follows the api-server's (free) port, else every task fails with "Connection
    refused"."""

    COMPONENTS = ("api-server", "scheduler", "dag-processor")

    def __init__(self, env: dict, *, port: int | None = None, components: tuple[str, ...] = COMPONENTS,
                 username: str = "admin", password: str = "admin"):
        import secrets

        self.home = Path(env["AIRFLOW_HOME"])
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.components = components
        self.username, self.password = username, password
        self.env = {
            **env,
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__AUTH_MANAGER":
                "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{username}:admin",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
            "AIRFLOW__API__BASE_URL": self.url,
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__WORKERS": "1",  # one uvicorn worker is plenty for a test and saves the cores
            # Shared by the api-server (checks task tokens) and the scheduler (issues them); else each
            # component that finds no airflow.cfg would make up its own.
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
        }
        self.procs: dict[str, subprocess.Popen] = {}
        self._token: str | None = None

    def log(self, component: str) -> Path:
        return self.home / f"{component}.log"

    def start(self, timeout: float = 180) -> AirflowServices:
        """Start the components and wait until the api-server answers and reports the scheduler and the
        dag-processor healthy; a component that exits meanwhile fails with the tail of its log."""
        self.home.mkdir(parents=True, exist_ok=True)
        # Components started together would each write a default airflow.cfg (with its own secrets) when
        # none exists; everything they need comes from the environment.
        (self.home / "airflow.cfg").touch()
        (self.home / "simple_auth_manager_passwords.json.generated").write_text(
            json.dumps({self.username: self.password}))
        for component in self.components:
            with open(self.log(component), "ab") as out:
                self.procs[component] = subprocess.Popen(
                    [airflow_bin(), component], env=self.env, stdout=out, stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            self.wait_healthy(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_healthy(self, timeout: float = 180) -> None:
        """Until the api-server answers and reports the scheduler and the dag-processor healthy (also for an
        Airflow this object did not start, e.g. `airflow standalone`)."""
        import requests

        want = {"api-server": None, "scheduler": "scheduler", "dag-processor": "dag_processor"}
        end = time.monotonic() + timeout
        health: dict = {}
        while time.monotonic() < end:
            self.check_running()
            try:
                health = requests.get(f"{self.url}/api/v2/monitor/health", timeout=5).json()
            except (requests.RequestException, ValueError):
                health = {}
            if health and all((health.get(key) or {}).get("status") == "healthy"
                              for c, key in want.items() if key and c in self.components):
                return
            time.sleep(1)
        raise TimeoutError(f"Airflow was not healthy within {timeout:.0f} s: {health or 'api-server not answering'}")

    def check_running(self) -> None:
        """Raise (with the tail of its log) when a component has exited."""
        for component, proc in self.procs.items():
            if proc.poll() is not None:
                tail = self.log(component).read_text(errors="replace")[-3000:]
                raise RuntimeError(f"airflow {component} exited with {proc.returncode}:\n{tail}")

    def token(self) -> str:
        import requests

        if self._token is None:
            resp = requests.post(f"{self.url}/auth/token", json={"username": self.username,
                                                                 "password": self.password}, timeout=30)
            resp.raise_for_status()
            self._token = resp.json()["access_token"]
        return self._token

    def api(self, method: str, path: str, body: dict | None = None, *, ok: tuple[int, ...] = (200, 201)):
        """Call the REST API (``path`` under /api/v2) as the admin; the JSON answer, or an error with its text."""
        import requests

        resp = requests.request(method, f"{self.url}/api/v2/{path.lstrip('/')}", json=body, timeout=30,
                                headers={"Authorization": f"Bearer {self.token()}"})
        if resp.status_code not in ok:
            raise RuntimeError(f"{method} {path}: {resp.status_code} {resp.text[:1000]}")
        return resp.json() if resp.content else None

    def wait_for_dag(self, dag_id: str, timeout: float = 120) -> dict:
        """The DAG once the dag-processor has parsed and stored it; fails at once on an import error of
        ``dags/<dag_id>.py``, and names every import error on a timeout."""
        end = time.monotonic() + timeout
        errors: list = []
        while time.monotonic() < end:
            self.check_running()
            found = self.api("GET", f"dags/{dag_id}", ok=(200, 404))
            if found and found.get("dag_id") == dag_id:
                return found
            errors = self.api("GET", "importErrors")["import_errors"]
            own = [e for e in errors if Path(str(e.get("filename", ""))).name == f"{dag_id}.py"]
            if own:
                raise RuntimeError(f"DAG {dag_id} does not import: {own[0].get('stack_trace', own[0])}")
            time.sleep(1)
        raise TimeoutError(f"the dag-processor did not store DAG {dag_id} within {timeout:.0f} s "
                           f"(import errors: {errors or 'none'})")

    def trigger(self, dag_id: str, conf: dict | None = None) -> str:
        """Unpause ``dag_id`` and trigger a manual run of it; its run_id."""
        self.api("PATCH", f"dags/{dag_id}", {"is_paused": False})
        run = self.api("POST", f"dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf or {}})
        return run["dag_run_id"]

    def task_processes(self) -> list:
        """The live task processes the scheduler's executor started (each in a process group of its own)."""
        import psutil

        proc = self.procs.get("scheduler")
        if proc is None or proc.poll() is not None:
            return []
        try:
            children = psutil.Process(proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        out = []
        for p in children:
            try:
                if os.getpgid(p.pid) != proc.pid and _alive(p):
                    out.append(p)
            except ProcessLookupError:
                pass
        return out

    def stop(self, grace: float = 20) -> None:
        """End every component's process group, then any task process (its own group) they left behind."""
        stop_process_groups(list(self.procs.values()), grace)
        self.procs.clear()


def stop_process_groups(roots: list[subprocess.Popen], grace: float = 20) -> None:
    """End the process group of each of ``roots`` (each started with ``start_new_session``) and the groups of
    all their descendants: SIGTERM, then SIGKILL after ``grace`` seconds. An executor starts each task process
    in a group of its own, which a signal to its parent's group alone would leave running."""
    import psutil

    leftovers: list[psutil.Process] = []
    for proc in roots:
        try:
            leftovers += psutil.Process(proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            pass
    groups = {proc.pid for proc in roots}
    for p in leftovers:
        try:
            groups.add(os.getpgid(p.pid))
        except ProcessLookupError:
            pass
    groups.discard(os.getpgrp())  # never the caller's own group (make's, pytest's)
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5)):
        for pgid in groups:
            try:
                os.killpg(pgid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        end = time.monotonic() + wait
        while time.monotonic() < end and (any(p.poll() is None for p in roots) or any(_alive(p) for p in leftovers)):
            time.sleep(0.2)
    for proc in roots:
        if proc.poll() is None:
            proc.wait(5)


def _alive(p) -> bool:
    import psutil

    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
