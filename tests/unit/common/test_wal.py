"""WAL segment arithmetic, gap finding and the Barman command lines."""

import datetime as dt
import shlex

import pytest
from pg_dataops.common import wal
from pg_dataops.common.config import load_config


def test_segment_names_round_trip_across_a_log_boundary():
    s = wal.Segment.parse("0000000100000001000000FF")
    assert (s.segno, s.timeline) == (511, 1)
    assert wal.Segment(s.segno + 1, 1).name() == "000000010000000200000000"
    assert wal.Segment.from_lsn("1/FF000028", 1) == s
    assert wal.Segment.from_lsn("0/3000028", 2).name() == "000000020000000000000003"


def test_lsn_parsing():
    assert wal.parse_lsn("16/B374D848") == (0x16 << 32) | 0xB374D848
    assert wal.format_lsn(wal.parse_lsn("16/B374D848")) == "16/B374D848"
    with pytest.raises(ValueError, match="is not an LSN"):
        wal.parse_lsn("16-B374")


def test_bad_segment_name():
    with pytest.raises(ValueError, match="not a WAL segment name"):
        wal.Segment.parse("00000001.history")


def test_gaps_are_named_and_timeline_switches_continue_the_sequence():
    present = [wal.Segment(3, 1), wal.Segment(4, 1), wal.Segment(7, 1), wal.Segment(7, 2), wal.Segment(9, 2)]
    gaps = wal.find_gaps(present, wal.Segment(2, 1))
    assert [g.describe() for g in gaps] == [
        "000000010000000000000002",
        "000000010000000000000005..000000010000000000000006 (2 segments)",
        "000000020000000000000008",
    ]
    assert wal.find_gaps(present, wal.Segment(3, 1), wal.Segment(4, 1)) == []
    assert wal.find_gaps([], wal.Segment(5, 1), wal.Segment(6, 1))[0].count == 2


def test_list_archive_sorts_segments_and_strips_compression():
    class Client:
        def get_paginator(self, name):
            class P:
                def paginate(self, **kw):
                    t = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
                    yield {"Contents": [
                        {"Key": "p/wals/0000000100000000/000000010000000000000003.gz", "Size": 10, "LastModified": t},
                        {"Key": "p/wals/00000002.history.gz", "Size": 1, "LastModified": t},
                        {"Key": "p/wals/0000000100000000/000000010000000000000002", "Size": 10, "LastModified": t},
                    ]}
            return P()

    got = wal.list_archive(Client(), "b", "p/wals/")
    assert [w.name for w in got] == ["000000010000000000000002", "000000010000000000000003", "00000002.history"]
    assert got[-1].segment is None


def test_archive_and_restore_commands():
    cfg = load_config(environ={"PGBACKUP_BUCKET": "glimpse-backups"})
    archive = wal.command_line(wal.archive_command_argv(cfg, "glimpse", endpoint_url="http://minio:9000"))
    assert archive == ("/opt/pg-dataops/wal-tools/bin/barman-cloud-wal-archive --cloud-provider aws-s3 "
                       "--endpoint-url http://minio:9000 --gzip --encryption AES256 "
                       "s3://glimpse-backups/database/wal glimpse %p")
    restore = wal.restore_command_argv(cfg, "glimpse", parallel=8, spool_dir="/tmp/spool dir")
    line = wal.command_line(restore)
    assert line.endswith("--parallel 8 --spool-dir '/tmp/spool dir' s3://glimpse-backups/database/wal glimpse %f %p")
    assert shlex.split(line.replace("%f", "F").replace("%p", "P"))[-2:] == ["F", "P"]
    settings = wal.archiving_settings(cfg, "glimpse")
    assert settings["archive_timeout"] == "60" and settings["wal_level"] == "replica"
    assert settings["archive_command"].startswith("'/opt/pg-dataops/wal-tools/bin/barman-cloud-wal-archive ")
    assert wal.conf_literal("it's") == "'it''s'"


def test_credentials_go_to_the_environment_only():
    env = wal.aws_env({"access_key": "AK", "secret_key": "SK", "token": None, "region": "ap-northeast-2"})
    assert env == {"AWS_ACCESS_KEY_ID": "AK", "AWS_SECRET_ACCESS_KEY": "SK", "AWS_DEFAULT_REGION": "ap-northeast-2"}
