"""pg_standby_provision's checks before anything changes: which data directory, the slot, the binaries, the
primary's settings, and the settings written into the standby."""

from __future__ import annotations

import os
import socket

import pytest
from pg_dataops.dr import standby
from pg_dataops.dr.standby import StandbyRefused

READY = {"in_recovery": False, "wal_level": "replica", "max_wal_senders": 10, "major": 15, "replicas": [],
         "slots": []}


def test_the_forms_directory_wins_over_the_configured_one_and_one_is_required():
    assert standby.choose_data_directory("/srv/pg/new", "/var/lib/pg", "dr.standbys.glimpse.data_directory") == (
        "/srv/pg/new")
    assert standby.choose_data_directory("  ", "/var/lib/pg", "x") == "/var/lib/pg"
    with pytest.raises(StandbyRefused) as exc:
        standby.choose_data_directory("", None, "dr.standbys.glimpse.data_directory")
    assert str(exc.value) == ("no data directory: give data_directory in the form, or set "
                              "dr.standbys.glimpse.data_directory")


def test_the_data_directory_must_be_absolute_and_empty(tmp_path):
    with pytest.raises(StandbyRefused, match="^data directory 'rel/data' must be an absolute path$"):
        standby.check_data_directory("rel/data")
    assert standby.check_data_directory(tmp_path / "missing") == tmp_path / "missing"
    assert standby.check_data_directory(tmp_path) == tmp_path  # empty
    (tmp_path / "PG_VERSION").write_text("15\n")
    with pytest.raises(StandbyRefused) as exc:
        standby.check_data_directory(tmp_path)
    assert str(exc.value) == (f"{tmp_path} is not empty (it holds a PostgreSQL data directory): refusing to "
                              "overwrite it. Stop and move that server aside first, or choose an empty directory")
    with pytest.raises(StandbyRefused, match="exists and is not a directory"):
        standby.check_data_directory(tmp_path / "PG_VERSION")


def test_a_slot_is_created_reused_or_refused_when_a_standby_streams_through_it():
    assert standby.check_slot(READY, "glimpse_standby") is None
    idle = {"slot_name": "glimpse_standby", "slot_type": "physical", "active": False, "retained_bytes": 4096}
    assert standby.check_slot({**READY, "slots": [idle]}, "glimpse_standby") == idle
    busy = {**idle, "active": True}
    replica = {"slot_name": "glimpse_standby", "application_name": "glimpse_standby", "client_addr": "10.0.0.7/32",
               "state": "streaming"}
    with pytest.raises(StandbyRefused) as exc:
        standby.check_slot({**READY, "slots": [busy], "replicas": [replica]}, "glimpse_standby")
    assert str(exc.value) == ("replication slot 'glimpse_standby' is in use by glimpse_standby from 10.0.0.7/32: a "
                              "standby already streams through it. Stop that standby first (and drop the slot) or "
                              "choose another slot name")
    logical = {**idle, "slot_type": "logical"}
    with pytest.raises(StandbyRefused, match="exists on the primary but is logical, not physical"):
        standby.check_slot({**READY, "slots": [logical]}, "glimpse_standby")


def test_the_primary_must_be_able_to_feed_a_standby():
    standby.check_primary(READY, client_major=15)
    with pytest.raises(StandbyRefused, match="is in recovery .a standby itself."):
        standby.check_primary({**READY, "in_recovery": True}, client_major=15)
    with pytest.raises(StandbyRefused, match="wal_level = minimal: a standby needs replica"):
        standby.check_primary({**READY, "wal_level": "minimal"}, client_major=15)
    with pytest.raises(StandbyRefused, match="max_wal_senders = 2 with 1 in use"):
        standby.check_primary({**READY, "max_wal_senders": 2, "replicas": [{}]}, client_major=15)


def test_the_hosts_binaries_of_the_primarys_major(tmp_path):
    bin_dir = tmp_path / "15" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "pg_basebackup").write_text("#!/bin/sh\n")
    os.chmod(bin_dir / "pg_basebackup", 0o755)
    assert standby.server_binaries(str(tmp_path), 15, pg_ctl=False) == str(bin_dir)
    with pytest.raises(StandbyRefused) as exc:
        standby.server_binaries(str(tmp_path), 15, pg_ctl=True)  # pg_ctl: we start the server ourselves
    assert str(exc.value) == (f"{bin_dir}/pg_ctl is missing: the standby's host needs the PostgreSQL 15 server "
                              "binaries (Debian: apt-get install postgresql-15)")
    with pytest.raises(StandbyRefused, match=f"{tmp_path}/16/bin/pg_basebackup is missing"):
        standby.server_binaries(str(tmp_path), 16, pg_ctl=False)


def test_the_standbys_settings_quote_the_restore_command():
    line = "/opt/w/barman-cloud-wal-restore --cloud-provider aws-s3 's3://b/it''s' glimpse %f %p"
    assert standby.standby_settings(port=5433, restore_command=line) == {
        "port": "5433", "hot_standby": "on",
        "restore_command": "'/opt/w/barman-cloud-wal-restore --cloud-provider aws-s3 ''s3://b/it''''s'' glimpse "
                           "%f %p'"}
    assert standby.standby_settings(port=5433, restore_command=None) == {"port": "5433", "hot_standby": "on"}


def test_an_address_something_listens_at_is_in_use():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert standby.address_in_use("127.0.0.1", port) is True
    assert standby.address_in_use("127.0.0.1", port) is False  # closed: nothing listens any more
    assert standby.address_in_use("/var/run/postgresql", 5432) is False  # a socket directory: not checked
