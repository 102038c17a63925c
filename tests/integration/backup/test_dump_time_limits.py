"""run_dump's time limits against a real PostgreSQL 15 cluster with a table locked by another session:
pg_dump's --lock-wait-timeout names the table; the overall timeout kills pg_dump; nothing is left
behind, neither files nor server sessions waiting for the lock."""

import dataclasses
import time

import devstack
import psycopg
import pytest
from pg_dataops.backup.dump import DumpTimedOut, run_dump
from pg_dataops.common.errors import DumpFailed

pytestmark = pytest.mark.integration


@pytest.fixture
def users_locked(cluster):
    pg = psycopg.connect(host="127.0.0.1", port=cluster.port, user="postgres", password=cluster.password,
                         dbname="glimpse", application_name="test_lock_holder")
    pg.execute("LOCK TABLE public.users IN ACCESS EXCLUSIVE MODE")  # held until the test ends
    try:
        yield
    finally:
        pg.rollback()
        pg.close()


def lock_waiters(cluster) -> int:
    with psycopg.connect(host="127.0.0.1", port=cluster.port, user="postgres", password=cluster.password,
                         dbname="postgres") as pg:
        return pg.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pg_dataops' "
                          "AND wait_event_type = 'Lock'").fetchone()[0]


def test_lock_wait_timeout_names_the_table(cluster, tmp_path, users_locked):
    conn = cluster.conn("glimpse")
    conn = dataclasses.replace(conn, lock_timeout=2)  # our count session: the same limit, as pg_conn sets it
    started = time.monotonic()
    with pytest.raises(DumpFailed) as exc:
        run_dump(conn, str(tmp_path / "out"), "glimpse_daily_lock", lock_wait_timeout=2, timeout=120)
    assert time.monotonic() - started < 10
    msg = str(exc.value)
    assert msg.startswith("pg_dump could not lock table public.users within lock_wait_timeout_seconds (2 s): "
                          "another session holds a conflicting lock on it; pg_dump exited with 1: "), msg
    assert "LOCK TABLE public.users IN ACCESS SHARE MODE" in msg
    assert list((tmp_path / "out").iterdir()) == []
    assert devstack.wait_for(lambda: lock_waiters(cluster) == 0, timeout=10)


def test_overall_timeout_kills_pg_dump_and_its_session(cluster, tmp_path, users_locked):
    """No lock-wait limit: pg_dump would wait as long as the lock is held; the dump's timeout stops it,
    and the row counts waiting on the same lock are cancelled rather than waited for."""
    started = time.monotonic()
    with pytest.raises(DumpTimedOut, match=r"^pg_dump did not finish within 3 s and was killed$"):
        run_dump(cluster.conn("glimpse"), str(tmp_path / "out"), "glimpse_daily_hung", timeout=3)
    assert 3 <= time.monotonic() - started < 15
    assert list((tmp_path / "out").iterdir()) == []
    # The killed pg_dump's server session is gone within client_connection_check_interval (5 s).
    assert devstack.wait_for(lambda: lock_waiters(cluster) == 0, timeout=15), lock_waiters(cluster)
