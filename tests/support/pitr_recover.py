"""Point-in-time recovery tests: rows written, a moment noted, the logical damage done, the core run as the DAG does.

The moment is the server's clock (``now()`` of a session on the archiving cluster), the state at that
moment is every table's content digest taken right before it (:func:`note_moment`), and the damage is a
DELETE and an UPDATE committed after it (:func:`damage`).
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

from pg_dataops.common import pg as pgtools
from pg_dataops.common import wal
from pg_dataops.pitr import copy, inventory, recover, request, scratch

from tests.support.pg import table_digests
from tests.support.pitr import TARGET, connect

ADDED_USERS = 25


def server_now(cluster) -> dt.datetime:
    with connect(cluster, "postgres") as pg:
        return pg.execute("SELECT clock_timestamp()").fetchone()[0]


def write_rows(cluster, tag: str, users: int = ADDED_USERS) -> None:
    """New users with profiles and group memberships, committed one statement each."""
    with connect(cluster, autocommit=True) as pg:
        pg.execute("INSERT INTO users (email, password_hash) SELECT %s || g || '@example.com', 'x' "
                   "FROM generate_series(1, %s) g", (f"{tag}-", users))
        pg.execute("INSERT INTO user_profiles (id, display_name, birth_date, gender) "
                   "SELECT id, email, date '1990-01-01', 'other' FROM users WHERE email LIKE %s", (f"{tag}-%",))
        pg.execute("INSERT INTO user_groups (user_id, group_name) SELECT id, %s FROM users WHERE email LIKE %s",
                   (tag, f"{tag}-%"))


def note_moment(cluster, settle: float = 1.1) -> tuple[dt.datetime, dict]:
    """(the moment, every table's digest at it): the digests first, then the server's clock, with a pause on
    each side so no commit shares the moment."""
    time.sleep(settle)
    digests = table_digests(cluster, "glimpse")
    moment = server_now(cluster)
    time.sleep(settle)
    return moment, digests


def damage(cluster) -> dict[str, int]:
    """The logical damage after the moment: messages deleted, users changed; the rows each statement hit."""
    with connect(cluster, autocommit=True) as pg:
        deleted = pg.execute("DELETE FROM messages WHERE id IN (SELECT id FROM messages ORDER BY id LIMIT 40)"
                             ).rowcount
        updated = pg.execute("UPDATE users SET status = 'banned', updated_at = now() WHERE id IN "
                             "(SELECT id FROM users ORDER BY email LIMIT 30)").rowcount
        removed = pg.execute("DELETE FROM user_groups WHERE id IN (SELECT id FROM user_groups ORDER BY id LIMIT 10)"
                             ).rowcount
    return {"messages_deleted": deleted, "users_updated": updated, "user_groups_deleted": removed}


def plan(cfg, cluster, client, target_time: dt.datetime | str, *, run_id: str = "manual__pitr_test",
         identity: str | None = None, **params: Any) -> dict:
    """What the validate task does: the window, the request checked, the plan (or RecoveryRefused)."""
    window = inventory.recoverable_window(client, cfg, TARGET)
    req = request.parse_request(cfg, {"target": TARGET, "target_time": target_time, **params})
    source = cluster.conn("glimpse")
    return request.plan_recovery(cfg, req, window=window, source_database="glimpse",
                                 database_exists=lambda name: copy.database_exists(source, name),
                                 identity=lambda: identity or "", run_id=run_id, conn_id="glimpse_db")


def restore_and_replay(cfg, s3, client, p: dict, *, identity: str | None = None) -> tuple[dict, dict]:
    """restore_base and recover, as their operators call the core."""
    layout = scratch.ScratchLayout.from_dict(p["scratch"])
    restored = scratch.restore_base_backup(client, cfg.bucket, p["base_backup_doc"], layout, identity=identity,
                                           timeout=600, bin_dir=p["bin_dir"])
    env = wal.aws_env({"access_key": s3.access_key, "secret_key": s3.secret_key, "region": s3.region})
    recovered = recover.replay(
        layout, bin_dir=p["bin_dir"], restore_command_line=recover.restore_command(cfg, TARGET, layout,
                                                                                    endpoint_url=s3.endpoint),
        target_time=dt.datetime.fromisoformat(p["target_time"]), target_action=p["target_action"], env=env,
        timeout_seconds=300, list_archive=lambda: wal.list_archive(client, cfg.bucket, wal.archive_prefix(cfg, TARGET)))
    return restored, recovered


def scratch_conn(p: dict, recovered: dict, dbname: str = "glimpse") -> pgtools.PgConn:
    return recover.instance(scratch.ScratchLayout.from_dict(p["scratch"]), p["bin_dir"], recovered["port"]).conn(dbname)


def digests_of(conn: pgtools.PgConn) -> dict[str, tuple[int, str]]:
    """tests.support.pg.table_digests over any PgConn (the scratch server listens on its socket only)."""
    from tests.support.pg import digests_over

    pg = pgtools.connect(conn, autocommit=True)
    try:
        return digests_over(pg)
    finally:
        pg.close()


def databases(cluster) -> set[str]:
    with connect(cluster, "postgres") as pg:
        return {r[0] for r in pg.execute("SELECT datname FROM pg_database").fetchall()}
