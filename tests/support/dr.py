"""A primary and its streaming standby for the DR tests: two real PostgreSQL 15 clusters on this machine, the
standby built by the provisioning code under test (``pg_dataops.dr.standby.provision``)."""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import devstack
import psycopg
from pg_dataops.common.localpg import postmaster_pid, process_alive, stop_server
from pg_dataops.common.pg import PgConn
from pg_dataops.dr import standby as standby_mod

PG_BIN = str(devstack.PG_BIN)


def new_primary(settings: dict[str, str] | None = None, env: dict[str, str] | None = None) -> devstack.LocalCluster:
    """A primary ready for a streaming standby (PostgreSQL 15's defaults: wal_level replica, 10 WAL senders)."""
    return devstack.LocalCluster(settings={"wal_level": "replica", "max_wal_senders": "10",
                                           "wal_sender_timeout": "'10s'", **(settings or {})}, env=env).start()


@dataclass
class StandbyServer:
    """A standby built next to ``primary`` (same password: its roles are the primary's)."""

    primary: devstack.LocalCluster
    port: int = field(default_factory=devstack.free_port)
    base: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="pgstandby-")))
    result: dict | None = None

    def __post_init__(self):
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(self.base, pw.pw_uid, pw.pw_gid)
        os.chmod(self.base, 0o755)

    @property
    def password(self) -> str:
        return self.primary.password

    @property
    def data(self) -> Path:
        return self.base / "data"

    def conn(self, dbname: str = "postgres") -> PgConn:
        return PgConn("127.0.0.1", self.port, "postgres", dbname, self.primary.password)

    def airflow_conn(self, dbname: str) -> str:
        return json.dumps({"conn_type": "postgres", "host": "127.0.0.1", "port": self.port, "login": "postgres",
                           "password": self.primary.password, "schema": dbname})

    def provision(self, slot: str, **kwargs) -> dict:
        self.result = standby_mod.provision(primary=self.primary.conn(), standby=self.conn(), slot=slot,
                                            data_directory=self.data, bin_dir=PG_BIN, timeout=120, **kwargs)
        return self.result

    def query(self, sql: str, dbname: str = "postgres", params=None):
        with psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", password=self.primary.password,
                             dbname=dbname, autocommit=True) as pg:
            cur = pg.execute(sql, params)
            return cur.fetchall() if cur.description else None

    def in_recovery(self) -> bool:
        return self.query("SELECT pg_is_in_recovery()")[0][0]

    def stop(self, remove: bool = True) -> None:
        stop_server(self.data, PG_BIN, mode="immediate")
        if remove:
            shutil.rmtree(self.base, ignore_errors=True)


def query(cluster: devstack.LocalCluster, sql: str, dbname: str = "postgres", params=None):
    with psycopg.connect(host="127.0.0.1", port=cluster.port, user="postgres", password=cluster.password,
                         dbname=dbname, autocommit=True) as pg:
        cur = pg.execute(sql, params)
        return cur.fetchall() if cur.description else None


def wait_caught_up(primary: devstack.LocalCluster, standby: StandbyServer, timeout: float = 30) -> str:
    """Until the standby has replayed the primary's current WAL position; returns that LSN."""
    (lsn,), = query(primary, "SELECT pg_current_wal_lsn()::text")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        (ok,), = standby.query("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", params=(lsn,))
        if ok:
            return lsn
        time.sleep(0.1)
    raise AssertionError(f"the standby did not replay up to {lsn} within {timeout} s")


def kill_primary(primary: devstack.LocalCluster) -> int:
    """SIGKILL of the primary's postmaster (a crash: no shutdown checkpoint, nothing more sent)."""
    pid = postmaster_pid(primary.data)
    assert pid and process_alive(pid), "the primary is not running"
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while process_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    # the backends die with the postmaster's socket; remove nothing: a crashed server leaves its pid file
    return pid


def speed_up_replies(standby: StandbyServer) -> None:
    """The standby reports its replay position every second (default 10 s), so the primary's view of a caught-up
    standby settles within the test's patience."""
    standby.query("ALTER SYSTEM SET wal_receiver_status_interval = '1s'")
    standby.query("SELECT pg_reload_conf()")


def wait_settled(primary, timeout: float = 30) -> None:
    """Until the primary sees its standby fully replayed and has forgotten the lag it last measured (it keeps
    showing it until two consecutive replies say "all replayed")."""
    sql = ("SELECT count(*) FROM pg_stat_replication WHERE replay_lsn = pg_current_wal_lsn() AND replay_lag IS NULL "
           "AND state = 'streaming'")
    assert devstack.wait_for(lambda: query(primary, sql) == [(1,)], timeout=timeout, interval=0.2), \
        query(primary, "SELECT state, replay_lsn::text, replay_lag, pg_current_wal_lsn()::text FROM pg_stat_replication")


def settle(primary, standby) -> None:
    wait_caught_up(primary, standby)
    wait_settled(primary)


@contextlib.contextmanager
def streaming_pair(slot: str, *, demo_users: int | None = None, databases: tuple[str, ...] = (),
                   tables: tuple[str, ...] = (), fast_replies: bool = False):
    """A fresh primary (never the session cluster: slots and a killed postmaster stay with it) with database
    ``glimpse`` (the demo data when ``demo_users``, else ``tables``' DDL), any ``databases`` more, and a streaming
    standby on ``slot``; both stopped and removed afterwards."""
    primary = new_primary()
    standby = StandbyServer(primary)
    try:
        primary.createdb("glimpse")
        for name in databases:
            primary.createdb(name)
        if demo_users:
            primary.load_demo("glimpse", demo_users)
        for ddl in tables:
            query(primary, ddl, dbname="glimpse")
        standby.provision(slot)
        if fast_replies:
            speed_up_replies(standby)
        yield primary, standby
    finally:
        standby.stop()
        primary.stop()  # its slots go with it
