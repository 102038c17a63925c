"""Replay's decisions without a server: the settings, what the server log says, the wait, a missing segment."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from pg_dataops.common import wal
from pg_dataops.pitr import recover
from pg_dataops.pitr.recover import ReplayState

# What PostgreSQL 15 logs during archive recovery (trimmed to the lines replay reads).
LOG = """\
2026-12-01 02:54:05.100 UTC [81] LOG:  starting point-in-time recovery to 2026-12-01 02:54:04.5+00
2026-12-01 02:54:05.300 UTC [81] LOG:  restored log file "000000010000000000000003" from archive
2026-12-01 02:54:05.400 UTC [81] LOG:  redo starts at 0/3000028
2026-12-01 02:54:05.500 UTC [81] LOG:  restored log file "00000002.history" from archive
2026-12-01 02:54:05.600 UTC [81] LOG:  restored log file "000000010000000000000004" from archive
2026-12-01 02:54:05.700 UTC [81] LOG:  consistent recovery state reached at 0/3000100
2026-12-01 02:54:05.800 UTC [81] LOG:  recovery stopping before commit of transaction 748, time 2026-12-01 02:54:06.1+00
2026-12-01 02:54:05.900 UTC [81] LOG:  last completed transaction was at log time 2026-12-01 02:54:03.9+00
"""
ENDED = """\
2026-12-01 02:54:05.300 UTC [81] LOG:  restored log file "000000010000000000000005" from archive
2026-12-01 02:54:05.900 UTC [81] FATAL:  recovery ended before configured recovery target was reached
2026-12-01 02:54:06.000 UTC [80] LOG:  startup process (PID 81) exited with exit code 1
"""


def archived(*numbers: int) -> list[wal.ArchivedWal]:
    out = []
    for n in numbers:
        s = wal.Segment(n, 1)
        out.append(wal.ArchivedWal(f"k/{s.name()}.gz", s.name(), 1, dt.datetime(2026, 12, 1, tzinfo=dt.UTC), s))
    return out


def test_the_log_tells_where_recovery_stopped():
    assert recover.stop_message(LOG) == ("recovery stopping before commit of transaction 748, time 2026-12-01 "
                                         "02:54:06.1+00")
    assert recover.last_restored_segment(LOG) == "000000010000000000000004"  # not the history file
    assert recover.last_completed_transaction(LOG) == "2026-12-01 02:54:03.9+00"
    assert recover.stop_message("") is None and recover.last_restored_segment("") is None


@pytest.mark.parametrize(("present", "kind", "segment"), [
    ((3, 4, 5), "end", "000000010000000000000006"),  # nothing after 5: the end of the archive
    ((3, 4, 5, 7, 8), "missing", "000000010000000000000006"),  # 6 gone, later ones there: a gap
    ((3, 4, 5, 6), "unreadable", "000000010000000000000006"),  # there, but restore_command failed on it
])
def test_running_out_of_wal_is_told_apart(present, kind, segment):
    got_kind, got_segment, _ = recover.missing_after(ENDED, archived(*present))
    assert (got_kind, got_segment.name()) == (kind, segment)
    assert recover.missing_after("no restore at all", archived(3))[0] == "unknown"


def test_recovery_settings_override_what_would_hurt():
    s = recover.recovery_settings("barman-cloud-wal-restore ... %f %p", target_time=dt.datetime(
        2026, 12, 1, 14, 29, 59, 250000, tzinfo=dt.timezone(dt.timedelta(hours=9))), target_action="pause",
        control={"max_connections": "300", "max_worker_processes": "16"})
    assert s["recovery_target_time"] == "2026-12-01 05:29:59.250000+00"
    assert s["recovery_target_action"] == "pause" and s["recovery_target_timeline"] == "latest"
    assert s["restore_command"] == "barman-cloud-wal-restore ... %f %p"
    # Never archive into production's archive; no production libraries, TLS files or log collector.
    assert (s["archive_mode"], s["archive_command"], s["shared_preload_libraries"]) == ("off", "", "")
    assert (s["ssl"], s["logging_collector"], s["lc_messages"], s["hot_standby"]) == ("off", "off", "C", "on")
    # A hot standby needs at least the primary's values (pg_controldata): they win over our defaults.
    assert (s["max_connections"], s["max_worker_processes"]) == ("300", "16")


def test_without_a_target_it_recovers_to_the_end():
    s = recover.recovery_settings("x", target_time=None, target_action="promote")
    assert "recovery_target_time" not in s and "recovery_target_action" not in s
    with pytest.raises(ValueError, match="target_action must be one of promote, pause"):
        recover.recovery_settings("x", target_time=None, target_action="shutdown")


class FakeInstance:
    def __init__(self, running: list[bool]):
        self.running = running

    def is_running(self) -> bool:
        return self.running.pop(0) if len(self.running) > 1 else self.running[0]

    def log_tail(self, lines: int = 15) -> str:
        return "LOG:  recovery has paused | DETAIL:  hot standby is not possible because of insufficient settings"


def _wait(monkeypatch, states, running, action="promote", deadline=1e18):
    states = list(states)
    monkeypatch.setattr(recover, "_probe", lambda inst: states.pop(0) if len(states) > 1 else states[0])
    return recover.wait_for_replay(FakeInstance(running), action=action, deadline=deadline, sleep=lambda s: None)


def test_the_wait_ends_when_promoted_or_paused(monkeypatch):
    replaying = ReplayState("replaying", True, None, "0/3000100")
    promoted = ReplayState("promoted", False, None, "0/4000000")
    paused = ReplayState("paused", True, None, "0/4000000")
    assert _wait(monkeypatch, [None, None, replaying, promoted], [True]) is promoted
    assert _wait(monkeypatch, [None, replaying, paused], [True], action="pause") is paused
    with pytest.raises(recover.RecoveryFailed, match="recovery paused although recovery_target_action is promote: "
                                                     ".*insufficient settings"):
        _wait(monkeypatch, [replaying, paused], [True])


def test_a_dead_server_ends_the_wait_and_the_deadline_fails_it(monkeypatch):
    assert _wait(monkeypatch, [None, None], [True, True, False]) is None
    with pytest.raises(recover.RecoveryFailed, match="recovery did not finish within its time limit "
                                                     r"\(pitr.recovery_timeout_minutes\)"):
        _wait(monkeypatch, [None], [True], deadline=0)


def test_a_retry_leaves_an_earlier_tries_recovery_alone(tmp_path):
    from pg_dataops.pitr.scratch import ScratchLayout

    layout = ScratchLayout(tmp_path / "x")
    layout.data.mkdir(parents=True)
    layout.run.mkdir()
    for name in ("postmaster.pid", "standby.signal", "postmaster.opts"):
        (layout.data / name).write_text("from production\n")
    assert recover.request_recovery(layout) == ["postmaster.pid", "postmaster.opts", "standby.signal"]
    assert sorted(p.name for p in layout.data.iterdir()) == ["recovery.signal"]
    (layout.data / "recovery.signal").unlink()  # promoted by the earlier try
    assert recover.request_recovery(layout) == []
    assert not (layout.data / "recovery.signal").exists()
    assert recover.ensure_config_file(layout.data) is True and recover.ensure_config_file(layout.data) is False


def test_restore_command_takes_spooled_segments_without_starting_barman():
    from pg_dataops.common.config import load_config
    from pg_dataops.pitr.scratch import ScratchLayout

    cfg = load_config(environ={"PGBACKUP_BUCKET": "glimpse-backups"})
    line = recover.restore_command(cfg, "glimpse", ScratchLayout(Path("/var/tmp/pitr/run 1_glimpse")),
                                   endpoint_url="http://minio:9000")
    assert line == (
        "test -f '/var/tmp/pitr/run 1_glimpse/run/spool'/%f && mv -f '/var/tmp/pitr/run 1_glimpse/run/spool'/%f %p "
        "|| /opt/pg-dataops/wal-tools/bin/barman-cloud-wal-restore --cloud-provider aws-s3 --endpoint-url "
        "http://minio:9000 --parallel 32 --spool-dir '/var/tmp/pitr/run 1_glimpse/run/spool' "
        "s3://glimpse-backups/database/wal glimpse %f %p")
    assert "AWS_" not in line and "secret" not in line  # credentials travel in the server's environment
