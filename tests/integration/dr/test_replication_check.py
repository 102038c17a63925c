"""pg_replication_check's core against a real primary and a streaming standby built by the provisioning code:
caught up -> every check passes; replay paused while the primary writes -> lag paged and warned with the measured
numbers, resolved after pg_wal_replay_resume(); an extra inactive slot -> warned, cleared once dropped; the
standby stopped -> "standby gone". Alerts are captured by callables; their state lives in a catalog database on
the primary."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
import time

import devstack
import pytest
from pg_dataops.catalog import migrations
from pg_dataops.common import pg as pgtools
from pg_dataops.common.config import Dr, Standby, load_config
from pg_dataops.common.formatting import fmt_bytes
from pg_dataops.dr import check as rc

from tests.support.dr import query, settle, streaming_pair

pytestmark = pytest.mark.integration

SLOT = "rc_standby"
STANDBY = Standby(target="glimpse", name="glimpse-standby", conn_id="glimpse_standby_db", slot=SLOT)
CFG = dataclasses.replace(load_config(environ={}), dr=Dr(lag_warn_seconds=1, lag_page_seconds=2, lag_page_mb=1,
                                                          slot_retained_page_gb=1, standbys=(STANDBY,)))
KEY = "pg_replication_check/glimpse/"


@pytest.fixture(scope="module")
def pair():
    with streaming_pair(SLOT, databases=("catalog",), tables=("CREATE TABLE notes (id int PRIMARY KEY, body text)",),
                        fast_replies=True) as servers:
        yield servers


class Alerts:
    def __init__(self):
        self.slack: list[str] = []
        self.pagerduty: list[dict] = []

    def run(self, primary, standby, catalog) -> dict:
        return rc.check_and_alert(primary.conn("glimpse"), standby.conn(), CFG, "glimpse", dt.datetime.now(dt.UTC),
                                  catalog=catalog, slack=self.slack.append, pagerduty=self.pagerduty.append)

    def events(self) -> list[tuple[str, str]]:
        return [(e["action"], e["dedup_key"]) for e in self.pagerduty]


@pytest.fixture
def catalog(pair):
    primary, _ = pair
    pg = pgtools.connect(primary.conn("catalog"), autocommit=True)
    rc_state_reset(pg)
    yield pg
    pg.close()


def rc_state_reset(pg) -> None:
    migrations.ensure_schema(pg)
    pg.execute("DELETE FROM monitor_alerts WHERE dedup_key LIKE 'pg_replication_check/%'")


def state(pg) -> dict[str, bool]:
    return dict(pg.execute("SELECT dedup_key, failing FROM monitor_alerts WHERE dedup_key LIKE "
                           "'pg_replication_check/%' ORDER BY 1").fetchall())


def by_key(result: dict) -> dict[str, dict]:
    return {f["dedup_key"].removeprefix(KEY): f for f in result["findings"]}


def test_a_caught_up_standby_passes_every_check(pair, catalog):
    primary, standby = pair
    settle(primary, standby)
    alerts = Alerts()
    result = alerts.run(primary, standby, catalog)
    json.dumps(result)  # XCom-safe
    found = by_key(result)
    assert [k for k, f in found.items() if not f["ok"]] == []
    assert list(found) == [*rc.CHECKS, f"slot_retention/{SLOT}", f"slot_inactive/{SLOT}"]
    assert found["standby_gone"]["message"] == (
        f"standby glimpse-standby of glimpse streams through slot {SLOT} (state streaming, in recovery)")
    assert found["replay_lag"]["message"] == (
        "standby glimpse-standby replay is 0.0 s behind the primary, 0 B of WAL not replayed (page above 2 s or 1 MB)")
    assert result["lag"]["seconds"] == 0 and result["lag"]["bytes"] == 0
    assert result["replica"]["slot_name"] == SLOT and result["replica"]["state"] == "streaming"
    assert [s["slot_name"] for s in result["slots"]] == [SLOT] and result["slots"][0]["active"] is True
    assert result["standby_status"]["in_recovery"] is True and result["standby_status"]["replay_paused"] is False
    assert (alerts.slack, alerts.pagerduty, result["sent"]) == ([], [], [])  # nothing ever failed: nothing to say
    assert set(state(catalog).values()) == {False} and len(state(catalog)) == 7


def test_paused_replay_pages_and_warns_with_the_lag_then_resolves_after_resume(pair, catalog):
    primary, standby = pair
    settle(primary, standby)
    standby.query("SELECT pg_wal_replay_pause()")
    try:
        assert devstack.wait_for(lambda: standby.query("SELECT pg_get_wal_replay_pause_state()") == [("paused",)])
        (last_replayed,), = standby.query("SELECT pg_last_xact_replay_timestamp()")
        (replayed_lsn,), = standby.query("SELECT pg_last_wal_replay_lsn()::text")
        query(primary, "INSERT INTO notes SELECT g, repeat('x', 1000) FROM generate_series(1, 3000) g", dbname="glimpse")
        (written_lsn,), = query(primary, "SELECT pg_current_wal_lsn()::text")
        (written,), = query(primary, "SELECT pg_wal_lsn_diff(%s::pg_lsn, %s::pg_lsn)::bigint",
                            params=(written_lsn, replayed_lsn))
        assert written > 1024 * 1024  # above lag_page_mb
        time.sleep(2.5)  # past lag_page_seconds since the insert (and since the last replayed commit)
        alerts = Alerts()
        before = dt.datetime.now(dt.UTC)
        with pytest.raises(rc.ReplicationCheckFailed) as failed:
            alerts.run(primary, standby, catalog)
        after = dt.datetime.now(dt.UTC)
        (end_lsn,), = query(primary, "SELECT pg_current_wal_lsn()::text")
        (at_most,), = query(primary, "SELECT pg_wal_lsn_diff(%s::pg_lsn, %s::pg_lsn)::bigint",
                            params=(end_lsn, replayed_lsn))
    finally:
        standby.query("SELECT pg_wal_replay_resume()")

    assert alerts.events() == [("trigger", KEY + "replay_lag")]
    event = alerts.pagerduty[0]
    lag = event["custom_details"]
    # the standby's replay delay is the age of its last replayed commit; the unreplayed WAL what was written since
    assert (before - last_replayed).total_seconds() <= lag["seconds"] <= (after - last_replayed).total_seconds()
    assert lag["standby_replay_delay_seconds"] <= lag["seconds"] and lag["seconds"] > 2
    assert written <= lag["bytes"] <= at_most
    assert lag["primary_minus_standby_replay_bytes"] == lag["bytes"]
    seconds = f"{lag['seconds']:.1f} s" if lag["seconds"] < 10 else f"{lag['seconds']:.0f} s"
    message = (f"standby glimpse-standby replay is {seconds} behind the primary, {fmt_bytes(lag['bytes'])} of WAL "
               "not replayed (page above 2 s or 1 MB)")
    assert re.fullmatch(r"\d+(\.\d)? s", seconds) and fmt_bytes(lag["bytes"]).endswith(" MiB")
    assert event["summary"] == f"Replication check: {message}"
    assert (event["severity"], event["component"], event["group"], lag["check"]) == (
        "critical", "glimpse", "pg_replication_check", "replay_lag")
    assert str(failed.value) == f"replication check of glimpse: [replay_lag] {message}"
    assert alerts.slack == [
        f":warning: *PostgreSQL replication*: standby glimpse-standby replay is {seconds} behind the primary "
        "(warning above 1 s)",
        ":warning: *PostgreSQL replication*: standby glimpse-standby: WAL replay is paused (pg_wal_replay_pause()); "
        "it falls behind the primary until SELECT pg_wal_replay_resume() on it",
    ]
    assert {k for k, failing in state(catalog).items() if failing} == {
        KEY + "replay_lag", KEY + "lag_warning", KEY + "replay_paused"}

    settle(primary, standby)
    alerts = Alerts()
    result = alerts.run(primary, standby, catalog)
    assert [k for k, f in by_key(result).items() if not f["ok"]] == []
    assert alerts.events() == [("resolve", KEY + "replay_lag")]  # the same dedup_key
    assert alerts.pagerduty[0]["summary"] == (
        "cleared: standby glimpse-standby replay is 0.0 s behind the primary, 0 B of WAL not replayed "
        "(page above 2 s or 1 MB)")
    assert alerts.slack == [
        ":white_check_mark: cleared: standby glimpse-standby replay is 0.0 s behind the primary (warning above 1 s)",
        ":white_check_mark: cleared: standby glimpse-standby: WAL replay is not paused",
    ]
    assert result["sent"] == [{"dedup_key": KEY + "replay_lag", "send": "pagerduty_resolve"},
                              {"dedup_key": KEY + "lag_warning", "send": "slack"},
                              {"dedup_key": KEY + "replay_paused", "send": "slack"}]
    assert not any(state(catalog).values())


def test_an_extra_inactive_slot_warns_and_clears_once_dropped(pair, catalog):
    primary, standby = pair
    query(primary, "SELECT pg_create_physical_replication_slot('rc_extra', true)")
    try:
        settle(primary, standby)
        alerts = Alerts()
        result = alerts.run(primary, standby, catalog)  # a warning only: the run passes
        found = by_key(result)
        assert [k for k, f in found.items() if not f["ok"]] == ["slot_inactive/rc_extra"]
        retained = found["slot_inactive/rc_extra"]["details"]["retained_bytes"]
        assert retained is not None and retained >= 0 and found["slot_retention/rc_extra"]["ok"]
        text = (f"replication slot rc_extra on primary glimpse is inactive: nothing streams from it, and the WAL it "
                f"holds ({fmt_bytes(retained)}) grows until it is used again or dropped; the disk fills")
        assert found["slot_inactive/rc_extra"]["message"] == text
        assert alerts.slack == [f":warning: *PostgreSQL replication*: {text}"] and alerts.pagerduty == []
    finally:
        query(primary, "SELECT pg_drop_replication_slot('rc_extra')")
    alerts = Alerts()
    result = alerts.run(primary, standby, catalog)
    assert "slot_inactive/rc_extra" not in by_key(result)
    assert alerts.slack == [
        ":white_check_mark: cleared: pg_replication_check/glimpse/slot_inactive/rc_extra is no longer checked (the "
        f"slot is gone from the primary); it last said: {text}"]
    assert not any(k.endswith("/rc_extra") for k in state(catalog))  # forgotten


def test_a_stopped_standby_is_gone(pair, catalog):
    primary, standby = pair
    settle(primary, standby)
    Alerts().run(primary, standby, catalog)  # all passing, recorded
    standby.stop(remove=False)
    assert devstack.wait_for(lambda: query(primary, "SELECT count(*) FROM pg_stat_replication") == [(0,)], timeout=20)
    alerts = Alerts()
    with pytest.raises(rc.ReplicationCheckFailed, match=r"^replication check of glimpse: \[standby_gone\] standby "
                                                        "glimpse-standby of glimpse is unreachable: "):
        alerts.run(primary, standby, catalog)
    assert alerts.events() == [("trigger", KEY + "standby_gone")]
    summary = alerts.pagerduty[0]["summary"]
    assert summary.startswith(f"Replication check: standby glimpse-standby of glimpse is unreachable: cannot reach "
                              f"PostgreSQL at 127.0.0.1:{standby.port} (postgres@127.0.0.1:{standby.port}/postgres): ")
    assert "\n" not in summary and standby.primary.password not in summary
    # its slot, now unused, is warned about; the lag cannot be measured (nothing streams, the standby is down)
    # and is not cleared for that
    [warning] = alerts.slack
    assert re.fullmatch(
        rf":warning: \*PostgreSQL replication\*: replication slot {SLOT} on primary glimpse is inactive: nothing "
        r"streams from it, and the WAL it holds \(\d+(\.\d)? (B|KiB|MiB)\) grows until it is used again or dropped; "
        "the disk fills", warning), warning
    assert {k for k, failing in state(catalog).items() if failing} == {
        KEY + "standby_gone", KEY + f"slot_inactive/{SLOT}"}
    (lag_message,), = catalog.execute("SELECT message FROM monitor_alerts WHERE dedup_key = %s",
                                      (KEY + "replay_lag",)).fetchall()
    assert lag_message == "replay lag of standby glimpse-standby not measured: the standby is unreachable"
