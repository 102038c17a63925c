"""pg_standby_provision's core against two real clusters: a streaming standby from pg_basebackup -R and a
slot, rows replicated, a non-empty directory or an unready primary refused with nothing changed."""

from __future__ import annotations

import pytest
from pg_dataops.common import appsteps
from pg_dataops.common.config import AppStep
from pg_dataops.common.errors import PermanentError
from pg_dataops.dr import replication
from pg_dataops.dr import standby as standby_mod
from pg_dataops.dr.standby import StandbyNotStarted, StandbyRefused

from tests.support.dr import StandbyServer, new_primary, query, wait_caught_up

pytestmark = pytest.mark.integration

PG_BIN_ROOT = "/usr/lib/postgresql"


@pytest.fixture(scope="module")
def primary():
    c = new_primary()
    c.createdb("glimpse")
    c.psql("-c", "CREATE TABLE notes (id int PRIMARY KEY, body text)", dbname="glimpse")
    yield c
    c.stop()


def test_a_streaming_standby_with_its_slot_and_settings(primary):
    standby = StandbyServer(primary)
    try:
        result = standby.provision("standby_one")
        assert result["slot"] == "standby_one" and result["slot_created"] is True
        assert result["standby"]["in_recovery"] is True and result["standby"]["receiver"]["status"] == "streaming"
        assert result["replica"]["state"] == "streaming" and result["replica"]["slot_name"] == "standby_one"
        assert (standby.data / "standby.signal").exists()
        auto = (standby.data / "postgresql.auto.conf").read_text()
        assert "primary_slot_name = 'standby_one'" in auto and f"port = {standby.port}" in auto
        assert "hot_standby = on" in auto

        query(primary, "INSERT INTO notes SELECT g, 'row ' || g FROM generate_series(1, 500) g", dbname="glimpse")
        wait_caught_up(primary, standby)
        assert standby.query("SELECT count(*), sum(id) FROM notes", dbname="glimpse") == [(500, 125250)]
        with pytest.raises(Exception, match="read-only transaction"):
            standby.query("INSERT INTO notes VALUES (9999, 'x')", dbname="glimpse")

        # the primary sees it on the slot; the slot holds (almost) nothing while it streams
        import psycopg
        with psycopg.connect(host="127.0.0.1", port=primary.port, user="postgres", password=primary.password,
                             dbname="postgres", autocommit=True) as pg:
            status = replication.primary_status(pg)
        replica = replication.replica_for_slot(status, "standby_one")
        assert replica["state"] == "streaming" and replica["replay_lag_bytes"] == 0
        assert replication.slot(status, "standby_one")["active"] is True
    finally:
        standby.stop()
        query(primary, "SELECT pg_drop_replication_slot('standby_one')")


def test_a_non_empty_directory_is_refused_untouched(primary):
    standby = StandbyServer(primary)
    try:
        standby.data.mkdir()
        (standby.data / "PG_VERSION").write_text("15\n")
        with pytest.raises(StandbyRefused, match="is not empty .it holds a PostgreSQL data directory.: refusing"):
            standby.provision("standby_refused")
        assert sorted(p.name for p in standby.data.iterdir()) == ["PG_VERSION"]
        assert query(primary, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'standby_refused'") == [(0,)]
    finally:
        standby.stop()


def test_a_primary_in_recovery_is_refused(primary):
    first = StandbyServer(primary)
    second = StandbyServer(primary)
    try:
        first.provision("standby_first")
        with pytest.raises(StandbyRefused, match="in recovery .a standby itself."):
            standby_mod.provision(primary=first.conn(), standby=second.conn(), slot="chained", data_directory=second.data,
                                  bin_dir="/usr/lib/postgresql/15/bin", timeout=30)
        assert not second.data.exists()
    finally:
        second.stop()
        first.stop()
        query(primary, "SELECT pg_drop_replication_slot('standby_first')")


def test_preflight_plans_without_changing_anything_and_refuses_a_slot_in_use(primary):
    first = StandbyServer(primary)
    second = StandbyServer(primary)
    try:
        plan = standby_mod.preflight(primary=primary.conn(), standby=second.conn(), slot="pf_slot",
                                     data_directory=second.data, pg_bin_root=PG_BIN_ROOT)
        assert (plan["slot_exists"], plan["bin_dir"], plan["primary_major"]) == (False, "/usr/lib/postgresql/15/bin", 15)
        assert not second.data.exists() and query(primary, "SELECT count(*) FROM pg_replication_slots") == [(0,)]
        first.provision("pf_slot")
        with pytest.raises(StandbyRefused, match="replication slot 'pf_slot' is in use by pf_slot from 127.0.0.1/32"):
            standby_mod.preflight(primary=primary.conn(), standby=second.conn(), slot="pf_slot",
                                  data_directory=second.data, pg_bin_root=PG_BIN_ROOT)
        with pytest.raises(StandbyRefused, match=f"something already listens at 127.0.0.1:{first.port}, where the standby"):
            standby_mod.preflight(primary=primary.conn(), standby=first.conn(), slot="pf_other",
                                  data_directory=second.data, pg_bin_root=PG_BIN_ROOT)
        assert not second.data.exists()
    finally:
        second.stop()
        first.stop()
        query(primary, "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots")


def test_a_standby_that_does_not_start_fails_at_once_saying_what_is_left(primary):
    standby = StandbyServer(primary)
    try:
        failing = AppStep(kind="command", argv=("false",))
        with pytest.raises(StandbyNotStarted) as exc:
            standby.provision("ns_slot", start=lambda _d: appsteps.run_required(failing, "dr.standbys.glimpse.start"))
        assert isinstance(exc.value, PermanentError)  # no retry: it would only find the directory not empty
        assert str(exc.value).startswith(f"dr.standbys.glimpse.start failed: false -> exit 1. The base backup stays "
                                         f"in {standby.data} and slot 'ns_slot' keeps the primary's WAL for it")
        assert (standby.data / "PG_VERSION").exists()
    finally:
        standby.stop()
        query(primary, "SELECT pg_drop_replication_slot('ns_slot')")
