"""Clusters whose WAL is archived to moto by the real barman-cloud-wal-archive, as on a database host.

The archive_command runs as the postgres OS user, so the Barman tools come from the venv that
``make deps`` builds with scripts/install-wal-tools.sh (from /usr/bin/python3, readable by postgres).
"""

from __future__ import annotations

import time

import devstack
import psycopg
from pg_dataops.common import wal
from pg_dataops.common.config import load_config

WAL_TOOLS_BIN = "/opt/pg-dataops/wal-tools/bin"
TARGET = "glimpse"


def pitr_env(bucket: str, **extra: str) -> dict[str, str]:
    """PGBACKUP_* settings of a PITR test (pass to load_config(environ=...) or to a DAG run's env)."""
    return {"PGBACKUP_BUCKET": bucket, "PGBACKUP_PITR_WAL_TOOLS_BIN": WAL_TOOLS_BIN, **extra}


def pitr_config(bucket: str, **extra: str):
    return load_config(environ=pitr_env(bucket, **extra))


def aws_server_env(s3) -> dict[str, str]:
    """The archiving server's environment: how the DB host gives barman-cloud-wal-archive its credentials."""
    return {"AWS_ACCESS_KEY_ID": s3.access_key, "AWS_SECRET_ACCESS_KEY": s3.secret_key,
            "AWS_DEFAULT_REGION": s3.region}


def archiving_cluster(s3, bucket: str, *, archive_timeout: int = 60, users: int = 300,
                      settings: dict[str, str] | None = None) -> devstack.LocalCluster:
    """A started cluster with the demo database ``glimpse`` whose WAL goes to s3://bucket/database/wal/glimpse."""
    cfg = pitr_config(bucket, PGBACKUP_PITR_ARCHIVE_TIMEOUT_SECONDS=str(archive_timeout))
    conf = wal.archiving_settings(cfg, TARGET, endpoint_url=s3.endpoint)
    conf.update({"max_wal_senders": "5", "fsync": "on", **(settings or {})})
    c = devstack.LocalCluster(settings=conf, env=aws_server_env(s3)).start()
    c.createdb("glimpse")
    c.load_demo("glimpse", users)
    return c


def connect(cluster, dbname: str = "glimpse", **kw) -> psycopg.Connection:
    return psycopg.connect(host="127.0.0.1", port=cluster.port, user="postgres", password=cluster.password,
                           dbname=dbname, **kw)


def switch_and_wait(cluster, timeout: float = 60) -> str:
    """pg_switch_wal() and wait until that segment is archived; returns its name."""
    with connect(cluster, "postgres", autocommit=True) as pg:
        pg.execute("SELECT pg_create_restore_point('switch')")  # a record, so the switch is never a no-op
        name = pg.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()[0]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            row = pg.execute("SELECT last_archived_wal, last_failed_wal, last_failed_time FROM pg_stat_archiver")\
                .fetchone()
            if row[0] and row[0] >= name:
                return name
            time.sleep(0.2)
        raise AssertionError(f"segment {name} not archived within {timeout} s: pg_stat_archiver says {row}; "
                             f"server log: {(cluster.base / 'server.log').read_text()[-2000:]}")
