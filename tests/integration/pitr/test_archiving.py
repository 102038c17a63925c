"""WAL archiving as shipped: a real cluster whose archive_command is the rendered barman-cloud-wal-archive
ships its segments and, after a promotion, its timeline history file to moto, under the documented keys,
gzip-compressed and with S3 SSE."""

from __future__ import annotations

import gzip
import hashlib
import re
import shlex
import shutil
import struct
import time

import pytest
from pg_dataops.common import wal
from pg_dataops.pitr import archiving
from psycopg import sql

from tests.support.pitr import TARGET, archiving_cluster, connect, pitr_config, switch_and_wait
from tests.support.pitr_archive import archiver, switch_segments, wait_caught_up

pytestmark = pytest.mark.integration

PREFIX = "database/wal/glimpse/wals/"
SEGMENT_KEY = re.compile(r"^database/wal/glimpse/wals/([0-9A-F]{16})/(\1[0-9A-F]{8})\.gz$")
XLOG_PAGE_MAGIC = 0xD110  # PostgreSQL 15's WAL page header magic


def wait_for_key(client, bucket: str, key: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while "Contents" not in client.list_objects_v2(Bucket=bucket, Prefix=key):
        assert time.monotonic() < deadline, f"{key} never appeared in s3://{bucket}"
        time.sleep(0.3)


def test_segments_and_a_history_file_reach_s3_under_the_documented_keys(s3, bucket):
    client = s3.client()
    cluster = archiving_cluster(s3, bucket)
    try:
        # The server runs exactly the block `python -m pg_dataops.pitr.archiving --endpoint-url ...` prints.
        block = archiving.render_conf(pitr_config(bucket), TARGET, endpoint_url=s3.endpoint)
        rendered = re.search(r"^archive_command = '(.*)'$", block, re.M).group(1).replace("''", "'")
        with connect(cluster, "postgres") as pg:
            assert pg.execute("SHOW archive_command").fetchone()[0] == rendered
            assert [pg.execute(f"SHOW {name}").fetchone()[0] for name in ("wal_level", "archive_mode")] == [
                "replica", "on"]
        assert shlex.split(rendered)[-3:] == [f"s3://{bucket}/database/wal", "glimpse", "%p"]

        names = switch_segments(cluster, 2)
        wait_caught_up(cluster, names[-1])
        local = (cluster.data / "pg_wal" / names[-1]).read_bytes()  # still in pg_wal: no checkpoint recycled it

        # Promote a copy of history: archive recovery with the documented restore_command, then a new timeline.
        restore = wal.command_line(wal.restore_command_argv(pitr_config(bucket), TARGET, endpoint_url=s3.endpoint))
        with connect(cluster, "postgres", autocommit=True) as pg:
            pg.execute(sql.SQL("ALTER SYSTEM SET restore_command = {}").format(sql.Literal(restore)))
        cluster.stop(remove=False)
        signal = cluster.data / "recovery.signal"
        signal.touch()
        shutil.chown(signal, "postgres")
        cluster.pg_ctl_start()
        with connect(cluster, "postgres") as pg:
            deadline = time.monotonic() + 60
            while pg.execute("SELECT pg_is_in_recovery()").fetchone()[0]:
                assert time.monotonic() < deadline, "the server never left recovery"
                time.sleep(0.2)
            timeline = int(pg.execute("SELECT pg_walfile_name(pg_current_wal_lsn())").fetchone()[0][:8], 16)
        assert timeline == 2
        wait_for_key(client, bucket, PREFIX + "00000002.history.gz")
        last = switch_and_wait(cluster)
        assert last.startswith("00000002")

        keys = sorted(o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"])
        assert all(k.startswith(PREFIX) for k in keys), keys  # nothing outside the documented prefix
        segment_keys = [k for k in keys if SEGMENT_KEY.match(k)]
        others = sorted(set(keys) - set(segment_keys))
        # The history file, and the old timeline's last, partial segment that promotion archives.
        assert others[-1] == PREFIX + "00000002.history.gz"
        assert [re.fullmatch(PREFIX + r"0000000100000000/00000001[0-9A-F]{16}\.partial\.gz", k) is not None
                for k in others[:-1]] == [True]
        seg_names = [SEGMENT_KEY.match(k).group(2) for k in segment_keys]
        assert names[-1] in seg_names and last in seg_names
        assert seg_names[0] == "000000010000000000000001"  # from the very first segment on

        for key in segment_keys:
            body = gzip.decompress(client.get_object(Bucket=bucket, Key=key)["Body"].read())
            assert len(body) == wal.SEGMENT_SIZE, key
            assert struct.unpack_from("<H", body, 0)[0] == XLOG_PAGE_MAGIC, key
        shipped = gzip.decompress(client.get_object(Bucket=bucket, Key=f"{PREFIX}{names[-1][:16]}/{names[-1]}.gz")
                                  ["Body"].read())
        assert hashlib.sha256(shipped).hexdigest() == hashlib.sha256(local).hexdigest()
        history = gzip.decompress(client.get_object(Bucket=bucket, Key=PREFIX + "00000002.history.gz")["Body"]
                                  .read()).decode()
        assert re.fullmatch(r"1\t0/[0-9A-F]+\tno recovery target specified\n", history), history
        for key in keys:
            assert client.head_object(Bucket=bucket, Key=key)["ServerSideEncryption"] == "AES256", key

        stats = archiver(cluster)
        assert (stats["failed_count"], stats["last_archived_wal"], stats["ready"]) == (0, last, 0)
        assert stats["archived_count"] == len(keys)  # every archived file is one object, none elsewhere
    finally:
        cluster.stop()
