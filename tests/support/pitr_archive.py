"""Breaking and repairing an archiving cluster's WAL archiving, and waiting on its archiver (archive tests).

The cluster comes from :func:`tests.support.pitr.archiving_cluster`. Archiving is broken the way an outage
breaks it: the same barman-cloud-wal-archive pointed at an S3 endpoint nobody listens on (a missing bucket
would not do: the tool creates a bucket it does not find).
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import time

import devstack
import psycopg
from pg_dataops.common import wal
from psycopg import sql

from .pitr import TARGET, connect, pitr_config


def archiver(cluster) -> dict:
    with connect(cluster, "postgres", row_factory=psycopg.rows.dict_row) as pg:
        row = pg.execute("SELECT * FROM pg_stat_archiver").fetchone()
        row["ready"] = pg.execute("SELECT count(*) AS n FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready'")\
            .fetchone()["n"]
        return row


def wait_archiver(cluster, predicate, what: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        row = archiver(cluster)
        if predicate(row):
            return row
        if time.monotonic() > deadline:
            raise AssertionError(f"archiver never {what} within {timeout} s: {row}; server log: "
                                 f"{(cluster.base / 'server.log').read_text()[-3000:]}")
        time.sleep(0.3)


def break_archiving(cluster, bucket: str) -> str:
    """archive_command = the same tool against a dead endpoint (ALTER SYSTEM + reload); returns that command."""
    dead = f"http://127.0.0.1:{devstack.free_port()}"
    command = wal.command_line(wal.archive_command_argv(pitr_config(bucket), TARGET, endpoint_url=dead))
    with connect(cluster, "postgres", autocommit=True) as pg:
        pg.execute(sql.SQL("ALTER SYSTEM SET archive_command = {}").format(sql.Literal(command)))
        pg.execute("SELECT pg_reload_conf()")
        deadline = time.monotonic() + 10
        while pg.execute("SHOW archive_command").fetchone()[0] != command:
            assert time.monotonic() < deadline, "the reload did not take archive_command"
            time.sleep(0.1)
    return command


def repair_archiving(cluster) -> None:
    with connect(cluster, "postgres", autocommit=True) as pg:
        pg.execute("ALTER SYSTEM RESET archive_command")
        pg.execute("SELECT pg_reload_conf()")


def switch_segments(cluster, count: int) -> list[str]:
    """``count`` segments completed (pg_switch_wal after a record each), not waited for; their names."""
    names = []
    with connect(cluster, "postgres", autocommit=True) as pg:
        for i in range(count):
            pg.execute(sql.SQL("SELECT pg_create_restore_point({})").format(sql.Literal(f"switch-{i}")))
            names.append(pg.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()[0])
    return names


def wait_failing(cluster) -> dict:
    return wait_archiver(cluster, lambda r: r["last_failed_time"] is not None and (
        r["last_archived_time"] is None or r["last_failed_time"] > r["last_archived_time"]), "failed")


def wait_caught_up(cluster, name: str) -> dict:
    return wait_archiver(cluster, lambda r: r["ready"] == 0 and (r["last_archived_wal"] or "") >= name and (
        r["last_failed_time"] is None or r["last_archived_time"] > r["last_failed_time"]), f"caught up to {name}")


def s3_credentials(s3) -> dict[str, str | None]:
    """What airflow.base.aws_credentials returns for the moto connection."""
    return {"access_key": s3.access_key, "secret_key": s3.secret_key, "token": None, "region": s3.region,
            "endpoint_url": s3.endpoint}


def put_history(client, bucket: str, timeline: int, parent_switch: str = "0/3000000") -> str:
    """A timeline history file as a promoted server would archive it (gzip, Barman's key); returns the key."""
    key = f"{wal.archive_prefix(pitr_config(bucket), TARGET)}{timeline:08X}.history.gz"
    body = gzip.compress(f"{timeline - 1}\t{parent_switch}\tno recovery target specified\n".encode())
    client.put_object(Bucket=bucket, Key=key, Body=body)
    return key


def put_base_backup_manifest(client, bucket: str, start_wal: str, stop_wal: str, stop_time: dt.datetime) -> str:
    """A base backup folder with just its manifest.json (pitr.inventory's contract): what the archive check
    reads of a base backup. Returns its backup_id."""
    from pg_dataops.pitr import inventory

    cfg = pitr_config(bucket)
    bid = inventory.backup_id(TARGET, stop_time - dt.timedelta(seconds=5))
    folder = inventory.backup_folder(cfg, TARGET, bid)
    doc = {"kind": inventory.KIND, "version": 1, "target": TARGET, "backup_id": bid, "timeline": 1,
           "start_lsn": "0/1000028", "stop_lsn": "0/1000100", "start_wal": start_wal, "stop_wal": stop_wal,
           "start_time": (stop_time - dt.timedelta(seconds=5)).isoformat(), "stop_time": stop_time.isoformat(),
           "archive": {"key": folder + inventory.ARCHIVE_FILE, "size": 1, "sha256": "0" * 64},
           "backup_manifest": {"checksum": "0" * 64}, "server_version_num": 150000}
    client.put_object(Bucket=bucket, Key=folder + inventory.MANIFEST, Body=json.dumps(doc).encode())
    return bid
