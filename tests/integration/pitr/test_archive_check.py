"""The archive check against a real archiving cluster and moto: healthy, archiving broken, a deleted segment,
a higher timeline planted by "another server", and a role without pg_monitor."""

from __future__ import annotations

import datetime as dt

import pytest
from pg_dataops.common import wal
from pg_dataops.pitr import archive_check as ac
from psycopg import sql

from tests.support.pitr import TARGET, archiving_cluster, connect, pitr_config, switch_and_wait
from tests.support.pitr_archive import (
    archiver,
    break_archiving,
    put_base_backup_manifest,
    put_history,
    s3_credentials,
    switch_segments,
    wait_caught_up,
    wait_failing,
)

pytestmark = pytest.mark.integration

UTC = dt.UTC


@pytest.fixture
def archiving(s3, bucket):
    """A cluster archiving to ``bucket``, with a few segments archived."""
    cluster = archiving_cluster(s3, bucket)
    try:
        names = switch_segments(cluster, 3)
        wait_caught_up(cluster, names[-1])
        yield cluster
    finally:
        cluster.stop()


def run_check(cluster, s3, bucket, *, now=None, conn=None, **env):
    cfg = pitr_config(bucket, **env)
    return ac.check_archive(conn or cluster.conn("postgres"), s3.client(), cfg, TARGET,
                            now or dt.datetime.now(UTC), credentials=s3_credentials(s3))


def by_check(result: ac.ArchiveCheck) -> dict[str, ac.Finding]:
    return {f.check: f for f in result.findings}


def failing(result: ac.ArchiveCheck) -> list[str]:
    return sorted(f.check for f in result.findings if not f.ok)


def test_a_healthy_archive_has_no_finding(archiving, s3, bucket):
    last = switch_and_wait(archiving)
    result = run_check(archiving, s3, bucket)
    assert failing(result) == [], [f.message for f in result.findings if not f.ok]
    facts = result.facts.to_dict()
    assert (facts["oldest_segment"], facts["newest_segment"]) == ("000000010000000000000001", last)
    assert facts["server"]["failed_count"] == 0 and facts["server"]["ready"] == 0
    assert facts["barman"]["returncode"] == 0 and facts["barman"]["argv"][-2:] == [
        f"s3://{bucket}/database/wal", "glimpse"]
    assert "--timeline" in facts["barman"]["argv"] and facts["barman"]["timeline"] == 2
    found = by_check(result)
    assert found["wal_gaps"].message == (
        f"WAL archive of glimpse is continuous from 000000010000000000000001 (the oldest archived; no base backup "
        f"yet) to {last} ({int(last[-8:], 16)} segments)")
    assert found["archiving_failing"].message.startswith(f"WAL archiving of glimpse works: last archived {last} at ")
    following = wal.Segment(wal.Segment.parse(last).segno + 1, 1).name()
    assert found["segments_behind"].message == (
        f"glimpse writes {following}: 0 complete segment(s) after the newest in S3 ({last}; warning at 8)")
    assert found["rpo_at_risk"].message.endswith(
        "(RPO 60 min); the server has written no WAL since (idle): nothing is waiting to be archived")


def test_broken_archiving_shows_failures_backlog_and_the_rpo_at_risk(archiving, s3, bucket):
    newest_before = archiver(archiving)["last_archived_wal"]
    break_archiving(archiving, bucket)
    stuck = switch_segments(archiving, ac.BACKLOG_WARN + 1)
    stats = wait_failing(archiving)
    assert stats["last_failed_wal"] == stuck[0]
    # Judged 5 minutes from now with an RPO of 1 minute: the newest segment in S3 is then past both limits.
    later = dt.datetime.now(UTC) + dt.timedelta(minutes=5)
    result = run_check(archiving, s3, bucket, now=later, PGBACKUP_PITR_RPO_MINUTES="1")
    assert failing(result) == ["archive_age", "archiving_failing", "ready_backlog", "rpo_at_risk", "segments_behind"]
    found = by_check(result)
    f = found["archiving_failing"]
    assert f.severity == "page" and f.message.startswith(
        f"WAL archiving of glimpse is failing: archive_command failed for {stuck[0]} at ")
    assert f"after the last success ({newest_before} at " in f.message
    assert f.details["failed_count"] >= 1
    assert found["ready_backlog"].message.startswith(
        f"{ac.BACKLOG_WARN + 1} WAL file(s) of glimpse wait to be archived (.ready; warning at {ac.BACKLOG_WARN}), "
        f"the oldest {stuck[0]} since ")
    rpo = found["rpo_at_risk"]
    assert rpo.message.startswith(f"RPO at risk: the newest WAL segment of glimpse in S3 ({newest_before}, uploaded ")
    assert rpo.message.endswith(f"above the RPO of 1 min; the server writes "
                                f"{wal.Segment(wal.Segment.parse(stuck[-1]).segno + 1, 1).name()}, "
                                f"{ac.BACKLOG_WARN + 1} complete segment(s) after it")
    assert found["segments_behind"].details["segments_behind"] == ac.BACKLOG_WARN + 1
    assert found["wal_gaps"].ok and found["higher_timeline"].ok  # what is in S3 is still whole


def test_a_deleted_segment_is_named_as_a_gap_from_the_base_backup(archiving, s3, bucket):
    client = s3.client()
    last = switch_and_wait(archiving)
    prefix = wal.archive_prefix(pitr_config(bucket), TARGET)
    bid = put_base_backup_manifest(client, bucket, "000000010000000000000002", "000000010000000000000002",
                                   dt.datetime.now(UTC) - dt.timedelta(minutes=1))
    client.delete_object(Bucket=bucket, Key=f"{prefix}0000000100000000/000000010000000000000003.gz")
    result = run_check(archiving, s3, bucket)
    assert failing(result) == ["wal_gaps"]
    assert by_check(result)["wal_gaps"].message == (
        f"WAL archive of glimpse is missing 1 segment(s) from 000000010000000000000002 (start of base backup "
        f"{bid}) to {last}: 000000010000000000000003; recovery from there stops at 000000010000000000000002")


def test_a_higher_timeline_in_the_archive_fails_barmans_check(archiving, s3, bucket):
    put_history(s3.client(), bucket, 2)
    result = run_check(archiving, s3, bucket)
    assert failing(result) == ["higher_timeline"]
    f = by_check(result)["higher_timeline"]
    assert f.message.startswith("barman-cloud-check-wal-archive --timeline 2 failed for glimpse (exit 1): ")
    assert "WAL archive check failed for server glimpse: Found 1 file in WAL archive equal to or newer than " \
           "timeline 2" in f.message
    assert f.message.endswith(f"; in s3://{bucket}/database/wal/glimpse/wals/ above timeline 1: 00000002.history. "
                              "Another server (a promoted copy or a restored clone?) archives into this place: stop "
                              "its archiving or give it its own pitr target, or recovery will follow its timeline")
    assert s3.secret_key not in f.message


def test_a_role_without_pg_monitor_gets_every_fact_but_the_backlog(archiving, s3, bucket):
    with connect(archiving, "postgres", autocommit=True) as pg:
        pg.execute(sql.SQL("CREATE ROLE checker LOGIN PASSWORD {}").format(sql.Literal("checker-pw")))
    conn = archiving.conn("postgres")
    conn = type(conn)(conn.host, conn.port, "checker", "postgres", "checker-pw")
    result = run_check(archiving, s3, bucket, conn=conn)
    assert failing(result) == ["ready_backlog"]
    assert by_check(result)["ready_backlog"].message == (
        "cannot read the .ready backlog of glimpse: pg_ls_archive_statusdir() needs superuser or the pg_monitor "
        "role (GRANT pg_monitor TO checker); the server said: permission denied for function "
        "pg_ls_archive_statusdir")
    with connect(archiving, "postgres", autocommit=True) as pg:
        pg.execute("GRANT pg_monitor TO checker")
    assert failing(run_check(archiving, s3, bucket, conn=conn)) == []
