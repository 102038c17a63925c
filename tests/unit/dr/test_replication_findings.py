"""The replication check's rules on status dicts (as pg_dataops.dr.replication reads them): every finding, with
the numbers and thresholds it names."""

from __future__ import annotations

import json

import pytest
from pg_dataops.common.alerting import AlertSource, plan_alerts
from pg_dataops.common.config import Dr, Standby
from pg_dataops.dr import check as rc

STANDBY = Standby(target="glimpse", name="glimpse-standby", conn_id="glimpse_standby_db", slot="glimpse_standby")
DR = Dr(lag_warn_seconds=10, lag_page_seconds=30, lag_page_mb=16, slot_retained_page_gb=2, standbys=(STANDBY,))
MIB = 1024 * 1024
GIB = 1024 * MIB
SYSID = "7412345678901234567"


def replica(**kw) -> dict:
    return {"pid": 4242, "application_name": "walreceiver", "client_addr": "127.0.0.1", "state": "streaming",
            "sync_state": "async", "sent_lsn": "0/5000060", "replay_lsn": "0/5000060", "sent_lag_bytes": 0,
            "write_lag_bytes": 0, "flush_lag_bytes": 0, "replay_lag_bytes": 0, "write_lag_seconds": None,
            "flush_lag_seconds": None, "replay_lag_seconds": None, "reply_time": "2026-12-01T03:00:00+00:00",
            "slot_name": "glimpse_standby", **kw}


def slot(name: str = "glimpse_standby", **kw) -> dict:
    return {"slot_name": name, "slot_type": "physical", "active": True, "wal_status": "reserved",
            "restart_lsn": "0/5000060", "retained_bytes": 0, **kw}


def primary(replicas=None, slots=None, **kw) -> dict:
    return {"in_recovery": False, "current_lsn": "0/5000060", "timeline": 1, "wal_level": "replica",
            "max_wal_senders": 10, "major": 15, "system_identifier": SYSID, "checked_at": "2026-12-01T03:00:00+00:00",
            "replicas": [replica()] if replicas is None else replicas, "slots": [slot()] if slots is None else slots,
            **kw}


def standby(**kw) -> dict:
    return {"in_recovery": True, "receive_lsn": "0/5000060", "replay_lsn": "0/5000060",
            "last_replay_at": "2026-12-01T02:59:00+00:00", "replay_paused": False, "replay_delay_seconds": 0.0,
            "replay_backlog_bytes": 0, "timeline": 1, "system_identifier": SYSID,
            "checked_at": "2026-12-01T03:00:00+00:00",
            "receiver": {"status": "streaming", "flushed_lsn": "0/5000060", "latest_end_lsn": "0/5000060",
                         "slot_name": "glimpse_standby", "sender_host": "127.0.0.1", "sender_port": 5432}, **kw}


def run(p=None, s=None, p_err=None, s_err=None, dr=DR, previous=None, *, p_none=False, s_none=False):
    p = None if p_none else (primary() if p is None else p)
    s = None if s_none else (standby() if s is None else s)
    out = rc.findings("glimpse", STANDBY, p, p_err, s, s_err, dr, previous=previous)
    keys = [f.dedup_key for f in out]
    assert len(keys) == len(set(keys))
    assert keys[:5] == [f"pg_replication_check/glimpse/{c}" for c in rc.CHECKS]  # every check, every run
    for f in out:
        assert f.target == "glimpse" and f.details["standby"] == "glimpse-standby"
        json.dumps(f.to_dict())  # XCom- and PagerDuty-safe
    return {f.dedup_key.removeprefix("pg_replication_check/glimpse/"): f for f in out}


def failing(out) -> dict[str, str]:
    return {k: f.severity for k, f in out.items() if not f.ok}


def test_a_caught_up_streaming_standby_passes_everything_and_says_so():
    out = run()
    assert failing(out) == {}
    assert {k: f.severity for k, f in out.items()} == {
        "primary_unreachable": "page", "standby_gone": "page", "replay_lag": "page", "lag_warning": "warn",
        "replay_paused": "warn", "slot_retention/glimpse_standby": "page", "slot_inactive/glimpse_standby": "warn"}
    assert out["primary_unreachable"].message == "primary glimpse answers (WAL at 0/5000060, timeline 1)"
    assert out["standby_gone"].message == (
        "standby glimpse-standby of glimpse streams through slot glimpse_standby (state streaming, in recovery)")
    assert out["replay_lag"].message == (
        "standby glimpse-standby replay is 0.0 s behind the primary, 0 B of WAL not replayed (page above 30 s or 16 MB)")
    assert out["lag_warning"].message == "standby glimpse-standby replay is 0.0 s behind the primary (warning above 10 s)"
    assert out["replay_paused"].message == "standby glimpse-standby: WAL replay is not paused"
    assert out["slot_retention/glimpse_standby"].message == (
        "replication slot glimpse_standby on primary glimpse holds 0 B of WAL (page above 2 GB)")
    assert out["slot_inactive/glimpse_standby"].message == "replication slot glimpse_standby on primary glimpse is active"
    assert out["slot_retention/glimpse_standby"].dedup_key == "pg_replication_check/glimpse/slot_retention/glimpse_standby"
    assert out["slot_retention/glimpse_standby"].check == "slot_retention"
    assert out["slot_retention/glimpse_standby"].details["slot"] == "glimpse_standby"


@pytest.mark.parametrize(("delay", "primary_lag", "lag_bytes", "failing_checks", "shown"), [
    (9.94, None, 0, {}, "9.9 s"),  # just under the warning
    (10.5, None, 0, {"lag_warning": "warn"}, "10 s"),  # above the warning: Slack, not paged
    (30.0, None, 0, {"lag_warning": "warn"}, "30 s"),  # the page is *above* 30 s
    (42.0, None, 0, {"replay_lag": "page", "lag_warning": "warn"}, "42 s"),
    # the primary's replay_lag counts when larger, while it still sees WAL not replayed
    (3.0, 42.4, 8192, {"replay_lag": "page", "lag_warning": "warn"}, "42 s"),
    # ... and not once the replica replayed everything (pg_stat_replication keeps the last lag for a while)
    (0.0, 42.4, 0, {}, "0.0 s"),
    (125.0, None, 0, {"replay_lag": "page", "lag_warning": "warn"}, "125 s (2 min 5 s)"),
])
def test_replay_lag_in_seconds_against_the_warning_and_the_page(delay, primary_lag, lag_bytes, failing_checks, shown):
    out = run(p=primary(replicas=[replica(replay_lag_seconds=primary_lag, replay_lag_bytes=lag_bytes)]),
              s=standby(replay_delay_seconds=delay))
    assert failing(out) == failing_checks
    assert out["lag_warning"].message == f"standby glimpse-standby replay is {shown} behind the primary (warning above 10 s)"
    size = "8.0 KiB" if lag_bytes else "0 B"
    assert out["replay_lag"].message == (
        f"standby glimpse-standby replay is {shown} behind the primary, {size} of WAL not replayed "
        "(page above 30 s or 16 MB)")


def test_unreplayed_wal_pages_whatever_its_age():
    # The primary's view (replay_lag_bytes), its position against the standby's replay position, and WAL the
    # standby received but has not replayed: the largest counts.
    out = run(p=primary(current_lsn="0/7000000", replicas=[replica(replay_lag_bytes=20 * MIB)]),
              s=standby(replay_lsn="0/5000000", replay_delay_seconds=1.5, replay_backlog_bytes=3 * MIB))
    assert failing(out) == {"replay_lag": "page"}
    assert out["replay_lag"].message == (
        "standby glimpse-standby replay is 1.5 s behind the primary, 32.0 MiB of WAL not replayed "
        "(page above 30 s or 16 MB)")
    d = out["replay_lag"].details
    assert (d["bytes"], d["primary_replay_lag_bytes"], d["primary_minus_standby_replay_bytes"],
            d["standby_unreplayed_received_bytes"], d["seconds"]) == (32 * MIB, 20 * MIB, 32 * MIB, 3 * MIB, 1.5)
    assert d["primary_replay_lag_seconds"] is None  # the replica reported no replay_lag: the standby's delay stands
    # the page is *above* lag_page_mb: 16 MiB is not, one byte more is
    assert run(p=primary(current_lsn="0/6000000"), s=standby(replay_lsn="0/5000000"))["replay_lag"].ok
    assert not run(p=primary(current_lsn="0/6000001"), s=standby(replay_lsn="0/5000000"))["replay_lag"].ok


def test_paused_replay_warns():
    out = run(s=standby(replay_paused=True))
    assert failing(out) == {"replay_paused": "warn"}
    assert out["replay_paused"].message == (
        "standby glimpse-standby: WAL replay is paused (pg_wal_replay_pause()); it falls behind the primary until "
        "SELECT pg_wal_replay_resume() on it")


def test_slots_lost_holding_too_much_or_inactive():
    slots = [slot(), slot("lost_one", active=False, wal_status="lost", restart_lsn=None, retained_bytes=None),
             slot("big", wal_status="extended", retained_bytes=2 * GIB + 1),
             slot("just_under", retained_bytes=2 * GIB),
             slot("idle", active=False, retained_bytes=5 * MIB),
             slot("unreserved", active=False, restart_lsn=None, retained_bytes=None)]
    out = run(p=primary(slots=slots))
    assert failing(out) == {"slot_retention/lost_one": "page", "slot_inactive/lost_one": "warn",
                            "slot_retention/big": "page", "slot_inactive/idle": "warn",
                            "slot_inactive/unreserved": "warn"}
    assert list(out)[5:] == [f"{c}/{s}" for s in ("big", "glimpse_standby", "idle", "just_under", "lost_one",
                                                  "unreserved") for c in rc.SLOT_CHECKS]
    assert out["slot_retention/lost_one"].message == (
        "replication slot lost_one on primary glimpse has lost WAL it needed (wal_status lost): whatever streams "
        "from it cannot catch up; drop the slot and rebuild its standby (pg_standby_provision)")
    assert out["slot_retention/big"].message == (
        "replication slot big on primary glimpse holds 2.0 GiB of WAL (page above 2 GB)")
    assert out["slot_retention/big"].details["retained_bytes"] == 2 * GIB + 1
    assert out["slot_retention/just_under"].ok
    assert out["slot_inactive/idle"].message == (
        "replication slot idle on primary glimpse is inactive: nothing streams from it, and the WAL it holds "
        "(5.0 MiB) grows until it is used again or dropped; the disk fills")
    assert out["slot_inactive/unreserved"].message == (
        "replication slot unreserved on primary glimpse is inactive: nothing streams from it (it reserves no WAL "
        "yet); drop it if unused")
    assert out["slot_retention/unreserved"].message == (
        "replication slot unreserved on primary glimpse holds no WAL (none reserved) (page above 2 GB)")


def test_an_unreachable_primary_pages_and_keeps_what_it_cannot_measure():
    why = ("cannot reach PostgreSQL at 127.0.0.1:5432 (postgres@127.0.0.1:5432/glimpse): connection failed: "
           "Connection refused\n\tIs the server running on that host and accepting TCP/IP connections?")
    previous = {
        "pg_replication_check/glimpse/slot_inactive/idle": {
            "failing": True, "severity": "warn", "message": "replication slot idle on primary glimpse is inactive: x"},
        "pg_replication_check/glimpse/slot_retention/idle": {
            "failing": False, "severity": "page", "message": "replication slot idle on primary glimpse holds 0 B"},
        "pg_replication_check/glimpse/replay_lag": {
            "failing": True, "severity": "page",
            "message": "standby glimpse-standby replay is 42 s behind the primary, 0 B of WAL not replayed (page "
                       "above 30 s or 16 MB) (not measured this run: the primary is unreachable)"},
    }
    # the standby answers but has replayed all it received (its WAL receiver has nothing to get)
    out = run(p_none=True, p_err=why, s=standby(receiver=None), previous=previous)
    assert failing(out) == {"primary_unreachable": "page", "slot_inactive/idle": "warn"}
    assert out["primary_unreachable"].message == (
        "primary glimpse is unreachable: cannot reach PostgreSQL at 127.0.0.1:5432 (postgres@127.0.0.1:5432/glimpse): "
        "connection failed: Connection refused Is the server running on that host and accepting TCP/IP connections?")
    assert out["standby_gone"].ok and out["standby_gone"].message == (
        "standby glimpse-standby of glimpse answers and is in recovery (streaming not checked: the primary is "
        "unreachable)")
    # the lag is still measured, from the standby alone (its replay delay, what it received and has not
    # replayed), so the last failing state is replaced by that measurement
    assert out["replay_lag"].message == (
        "standby glimpse-standby replay is 0.0 s behind the primary, 0 B of WAL not replayed (page above 30 s or 16 MB) "
        "(measured on the standby alone: the primary is unreachable)")
    assert out["slot_inactive/idle"].message == (
        "replication slot idle on primary glimpse is inactive: x (not measured this run: the primary is unreachable)")
    assert out["slot_inactive/idle"].details["measured"] is False
    assert out["slot_retention/idle"].ok and out["slot_retention/idle"].message == (
        "replication slot idle on primary glimpse not measured: the primary is unreachable")


def test_a_failing_lag_stays_failing_while_nothing_measures_it():
    previous = {"pg_replication_check/glimpse/replay_lag": {
        "failing": True, "severity": "page",
        "message": "standby glimpse-standby replay is 42 s behind the primary, 1.0 MiB of WAL not replayed (page "
                   "above 30 s or 16 MB) (not measured this run: the standby is unreachable)"}}
    out = run(p=primary(replicas=[]), s_none=True, s_err="cannot reach PostgreSQL at 127.0.0.1:5433: refused",
              previous=previous)
    assert out["replay_lag"].message == (  # not nested: the mark is replaced, the last measurement kept
        "standby glimpse-standby replay is 42 s behind the primary, 1.0 MiB of WAL not replayed (page above 30 s or "
        "16 MB) (not measured this run: the standby is unreachable)")
    assert not out["replay_lag"].ok
    assert out["lag_warning"].ok and out["lag_warning"].message == (
        "replay delay of standby glimpse-standby not measured: the standby is unreachable")
    assert out["replay_paused"].ok and out["replay_paused"].message == (
        "replay pause of standby glimpse-standby not measured: the standby is unreachable")


def test_an_unreachable_standby_is_gone():
    out = run(p=primary(replicas=[], slots=[slot(active=False, retained_bytes=4096)]), s_none=True,
              s_err="cannot reach PostgreSQL at 127.0.0.1:5433 (postgres@127.0.0.1:5433/postgres): connection refused")
    assert failing(out) == {"standby_gone": "page", "slot_inactive/glimpse_standby": "warn"}
    assert out["standby_gone"].message == (
        "standby glimpse-standby of glimpse is unreachable: cannot reach PostgreSQL at 127.0.0.1:5433 "
        "(postgres@127.0.0.1:5433/postgres): connection refused")


def test_a_promoted_standby_is_gone():
    out = run(p=primary(replicas=[], slots=[slot(active=False)]),
              s=standby(in_recovery=False, replay_paused=None, replay_delay_seconds=None, receiver=None))
    assert failing(out) == {"standby_gone": "page", "slot_inactive/glimpse_standby": "warn"}
    assert out["standby_gone"].message == (
        "standby glimpse-standby of glimpse is not in recovery: it was promoted (or is no longer a standby), so "
        "glimpse has no standby")
    assert out["replay_lag"].message == (
        "replay lag of standby glimpse-standby not measured: the standby is not in recovery")


def test_a_standby_not_streaming_through_its_slot_is_gone():
    out = run(p=primary(replicas=[], slots=[slot(active=False)]),
              s=standby(receiver={"status": "waiting", "slot_name": "glimpse_standby"}))
    assert failing(out) == {"standby_gone": "page", "slot_inactive/glimpse_standby": "warn"}
    assert out["standby_gone"].message == (
        "standby glimpse-standby of glimpse is gone: the primary shows no standby streaming through slot "
        "glimpse_standby (its WAL receiver is waiting)")
    out = run(p=primary(replicas=[replica(slot_name=None)], slots=[]), s=standby(receiver=None))
    assert failing(out) == {"standby_gone": "page"}
    assert out["standby_gone"].message == (
        "standby glimpse-standby of glimpse is gone: replication slot glimpse_standby does not exist on the primary "
        "(its WAL receiver is not running)")
    out = run(p=primary(replicas=[replica(state="startup")]))
    assert out["standby_gone"].message == (
        "standby glimpse-standby of glimpse is not streaming: its connection on slot glimpse_standby is in state "
        "startup")
    out = run(p=primary(replicas=[replica(state="catchup")]))
    assert failing(out) == {}


def test_a_standby_of_another_cluster_is_gone():
    out = run(s=standby(system_identifier="7000000000000000001"))
    assert failing(out) == {"standby_gone": "page"}
    assert out["standby_gone"].message == (
        "standby glimpse-standby of glimpse replicates another cluster (system identifier 7000000000000000001, the "
        "primary's is 7412345678901234567)")


def test_a_primary_in_recovery_pages():
    out = run(p=primary(in_recovery=True, current_lsn=None, replicas=[], slots=[]))
    assert failing(out) == {"primary_unreachable": "page"}
    assert out["primary_unreachable"].message == (
        "primary glimpse is in recovery: the target's connection reaches a standby, not a primary (no replication "
        "to check from it)")
    assert out["standby_gone"].message == (
        "standby glimpse-standby of glimpse answers and is in recovery (streaming not checked: the primary is in "
        "recovery)")


def test_a_dropped_slot_clears_its_warning_once():
    source = rc.alert_source("glimpse")
    assert source == AlertSource("pg_replication_check/glimpse/", "Replication check", "pg_replication_check",
                                 "PostgreSQL replication", "the slot is gone from the primary")
    key = "pg_replication_check/glimpse/slot_inactive/extra"
    state = {key: {"failing": True, "severity": "warn", "message": "replication slot extra ... is inactive"}}
    steps = {s.dedup_key: s for s in plan_alerts(list(run().values()), state, source)}
    assert steps[key].send == "slack" and steps[key].forget
    assert steps[key].text == (
        ":white_check_mark: cleared: pg_replication_check/glimpse/slot_inactive/extra is no longer checked (the slot "
        "is gone from the primary); it last said: replication slot extra ... is inactive")


def test_a_standby_only_the_primary_sees_is_measured_there():
    # Airflow cannot reach the standby, but the primary still sees it stream: the lag is the primary's view.
    out = run(p=primary(replicas=[replica(replay_lag_bytes=2 * MIB, replay_lag_seconds=12.25)]), s_none=True,
              s_err="timeout expired")
    assert failing(out) == {"standby_gone": "page", "lag_warning": "warn"}
    assert out["replay_lag"].message == (
        "standby glimpse-standby replay is 12 s behind the primary, 2.0 MiB of WAL not replayed (page above 30 s or "
        "16 MB) (measured on the primary alone: the standby is unreachable)")
    assert out["standby_gone"].message == "standby glimpse-standby of glimpse is unreachable: timeout expired"
