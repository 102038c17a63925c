"""`make standby`: a local primary and its streaming standby, left running for experiments.

The demo stack (`make demo`, `make airflow-ui`) lives only as long as its command, so this starts a pair of
its own: a throwaway PostgreSQL 15 primary seeded with the Glimpse demo data, and a hot standby built from it
by the same code as DAG pg_standby_provision (``pg_dataops.dr.standby.provision``: pg_basebackup -R with a
physical replication slot, hot_standby, started with pg_ctl, waited for until it streams). There is no WAL
archive in this pair, so the standby has no restore_command fallback.

Prints both connection strings and the command that stops the pair (``--stop <directory>``); every pair
lives in a directory of its own under /tmp, so several can run at once.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))

import devstack  # noqa: E402
import psycopg  # noqa: E402
from pg_dataops.common.localpg import stop_server  # noqa: E402
from pg_dataops.common.pg import PgConn  # noqa: E402
from pg_dataops.dr import standby as standby_mod  # noqa: E402

STATE = "pg-standby-pair.json"  # marks a directory this script made: --stop removes nothing else
SLOT = "demo_standby"
NAME = "demo-standby"
PG_BIN = str(devstack.PG_BIN)


def say(msg: str) -> None:
    print(f"[standby] {msg}", flush=True)


def uri(port: int, password: str, dbname: str = "glimpse") -> str:
    return f"postgresql://postgres:{password}@127.0.0.1:{port}/{dbname}"


def stop_pair(root: Path) -> int:
    state_file = root / STATE
    if not state_file.is_file():
        say(f"{root} holds no {STATE}: not a pair made by `make standby`; nothing stopped")
        return 1
    state = json.loads(state_file.read_text())
    for role in ("standby", "primary"):  # the standby first: the primary then has no WAL sender to wait for
        ran = stop_server(state[role]["data"], PG_BIN, mode="fast")
        say(f"{role} on port {state[role]['port']}: {'stopped' if ran else 'was not running'}")
    shutil.rmtree(root, ignore_errors=True)
    say(f"removed {root}")
    return 0


def replication_check(primary: PgConn, standby: PgConn) -> float:
    """A row written on the primary, read back on the standby: seconds until it showed up."""
    with psycopg.connect(host=primary.host, port=primary.port, user=primary.user, password=primary.password,
                         dbname="glimpse", autocommit=True) as pg:
        pg.execute("CREATE TABLE IF NOT EXISTS standby_probe (id int PRIMARY KEY, at timestamptz DEFAULT now())")
        pg.execute("INSERT INTO standby_probe (id) VALUES (1)")
    started = time.monotonic()
    with psycopg.connect(host=standby.host, port=standby.port, user=standby.user, password=standby.password,
                         dbname="glimpse", autocommit=True) as pg:
        while time.monotonic() - started < 30:
            if pg.execute("SELECT to_regclass('standby_probe') IS NOT NULL").fetchone()[0] and pg.execute(
                    "SELECT count(*) FROM standby_probe").fetchone()[0] == 1:
                return time.monotonic() - started
            time.sleep(0.05)
    raise SystemExit("[standby] the row written on the primary did not reach the standby within 30 s")


def start_pair(users: int) -> int:
    root = Path(tempfile.mkdtemp(prefix="pg-standby-pair-"))
    os.chmod(root, 0o755)  # the postgres OS user runs both servers (when we are root) and must enter it
    password = secrets.token_urlsafe(12)  # a fresh throwaway password per pair (127.0.0.1 only)
    primary = devstack.LocalCluster(str(root / "primary"), password=password,
                                    settings={"wal_level": "replica", "max_wal_senders": "10"})
    standby_port = devstack.free_port()
    standby_data = root / "standby" / "data"
    state = {"primary": {"port": primary.port, "data": str(primary.data)},
             "standby": {"port": standby_port, "data": str(standby_data)}}
    try:
        say(f"starting the primary (PostgreSQL 15, initdb) on port {primary.port} and loading the Glimpse demo data "
            f"({users} users)...")
        primary.start()
        (root / STATE).write_text(json.dumps({**state, "password": password}))
        (root / STATE).chmod(0o600)
        primary.createdb("glimpse")
        primary.load_demo("glimpse", users)
        say(f"building the standby on port {standby_port} with pg_standby_provision's code (pg_basebackup -R, slot "
            f"{SLOT})...")
        standby = PgConn("127.0.0.1", standby_port, "postgres", "glimpse", password)
        result = standby_mod.provision(primary=primary.conn("glimpse"), standby=standby, slot=SLOT,
                                       data_directory=standby_data, bin_dir=PG_BIN, timeout=300)
        say(standby_mod.describe(result, NAME))
        lag = replication_check(primary.conn("glimpse"), standby)
        say(f"checked: a row written on the primary was read on the standby {lag * 1000:.0f} ms later")
    except BaseException:
        say("failed: stopping what was started")
        stop_server(standby_data, PG_BIN, mode="immediate")
        primary.stop()
        shutil.rmtree(root, ignore_errors=True)
        raise
    stop = f"{REPO / '.venv' / 'bin' / 'python'} {REPO / 'scripts' / 'standby.py'} --stop {root}"
    print()
    print("=" * 78)
    print(" make standby: a primary and its streaming standby (left running)")
    print("=" * 78)
    print(f" primary    {uri(primary.port, password)}")
    print(f" standby    {uri(standby_port, password)}   (read-only: hot standby, slot {SLOT})")
    print(f" data       {primary.data} / {standby_data}")
    print(" fallback   none: no WAL archive in this pair (pg_standby_provision adds restore_command for PITR targets)")
    print(f" try        psql '{uri(primary.port, password)}' -c 'INSERT INTO standby_probe (id) VALUES (2)'")
    print(f"            psql '{uri(standby_port, password)}' -c 'SELECT * FROM standby_probe'")
    print(f"            psql '{uri(primary.port, password, 'postgres')}' -c 'SELECT * FROM pg_stat_replication'")
    print(f" stop both  {stop}")
    print("=" * 78)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stop", metavar="DIR", type=Path, help="stop the pair made in DIR and remove it")
    ap.add_argument("--users", type=int, default=int(os.environ.get("DEMO_USERS", "4000")),
                    help="demo database size in users (about 12 kB each; default 4000, about 50 MB)")
    args = ap.parse_args()
    return stop_pair(args.stop) if args.stop else start_pair(args.users)


if __name__ == "__main__":
    sys.exit(main())
