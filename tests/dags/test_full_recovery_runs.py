"""pg_full_recovery and pg_recovery_rehearsal end to end with `airflow dags test` (three runs in all).

A database of its own with a real backup in S3 (pg_backup's steps, without Airflow). (1) A refused run: a date
with no backup is refused by validate: red, a REFUSED restore_logs row, a page, nothing created. (2) After the
damage (rows deleted, rows changed, a table dropped) the DAG, triggered with conf like the form and approved in
advance by ``confirm``, recovers it: every table equals its pre-damage digest, the damaged database is kept,
the safety dump is in S3, the application steps (commands here) ran in order, restore_logs has the SUCCESS row
with the RTO. (3) The rehearsal: green, the scratch database gone, the timed safety dump deleted, the RTO
recorded.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
import uuid
from pathlib import Path

import psycopg
import pytest
import yaml
from pg_dataops.backup import steps as backup
from pg_dataops.catalog import migrations
from pg_dataops.common import pg as pgtools
from pg_dataops.common.config import load_config

from tests.support.pg import table_digests

from .conftest import json_posts

pytestmark = pytest.mark.dagrun
MOMENT = dt.datetime(2026, 11, 24, 17, 0, tzinfo=dt.UTC)  # 25 Nov 02:00 in Seoul
KEY = "database/daily/glimpse_daily_20261125_020000.dump"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def seeded(cluster, s3, tmp_path_factory):
    """Its own database (300 users) with a backup in a bucket of its own; digests before any damage."""
    name = f"frd_{uuid.uuid4().hex[:6]}"
    bucket = f"fr-{uuid.uuid4().hex[:12]}"
    s3.client().create_bucket(Bucket=bucket)
    cluster.createdb(name)
    cluster.load_demo(name, 300)
    root = tmp_path_factory.mktemp("full_recovery")
    cfg = load_config(environ={"PGBACKUP_BUCKET": bucket, "PGBACKUP_LOCAL_ROOT": str(root / "seed"),
                               "PGBACKUP_MULTIPART_CHUNK_MB": "5"})
    client = s3.client()
    dump = backup.dump_step(cfg, cfg.target("glimpse"), cluster.conn(name), "daily", MOMENT)
    upload = backup.upload_step(client, cfg, dump, backup.checksum_step(dump))
    backup.manifest_step(client, cfg, dump, upload, {"verified": True}, "pg_backup", "seed")
    yield {"name": name, "bucket": bucket, "root": root, "before": table_digests(cluster, name)}
    for db in databases(cluster):
        if db.startswith(name) or db.startswith("pgdataops_rehearsal_"):
            cluster.dropdb(db)


def databases(cluster) -> set[str]:
    with psycopg.connect(host="127.0.0.1", port=cluster.port, user="postgres", password=cluster.password,
                         dbname="postgres") as pg:
        return {r[0] for r in pg.execute("SELECT datname FROM pg_database")}


CATALOG = ("public.backup_logs", "public.restore_drills", "public.monitor_alerts", "public.base_backups",
           "public.pitr_recoveries", "public.restore_logs", "public.failovers")


def app_tables(digests: dict) -> dict:
    """The application's tables only (not the catalog's, when the catalog lives in the same database)."""
    return {k: v for k, v in digests.items() if k not in CATALOG}


def restore_logs(cluster, run_id, dbname="catalog"):
    with psycopg.connect(host="127.0.0.1", port=cluster.port, user="postgres", password=cluster.password,
                         dbname=dbname, row_factory=psycopg.rows.dict_row) as pg:
        if not pg.execute("SELECT to_regclass('public.restore_logs') IS NOT NULL AS e").fetchone()["e"]:
            return []
        return pg.execute("SELECT * FROM restore_logs WHERE run_id = %s ORDER BY id", (run_id,)).fetchall()


def s3_keys(s3, bucket) -> list[str]:
    return sorted(o["Key"] for o in s3.client().list_objects_v2(Bucket=bucket).get("Contents", []))


def app_config(tmp_path: Path, marker: Path) -> Path:
    """The repo's config with the application steps as commands appending to ``marker``; the health check
    fails its first attempt (the application "still starting") and succeeds on the retry."""
    raw = yaml.safe_load((REPO / "include" / "config" / "pgbackup.yaml").read_text())

    def step(code: str) -> dict:
        return {"command": [sys.executable, "-c", code], "timeout_seconds": 30}

    append = f"open({str(marker)!r}, 'a').write('{{}}\\n')"
    raw["restore"].update(
        app_stop=step(append.format("stop")),
        app_start=step(append.format("start")),
        health_check=step(f"import sys; p = {str(marker)!r}; n = open(p).read().count('health'); "
                          f"open(p, 'a').write('health-fail\\n' if n == 0 else 'health-ok\\n'); sys.exit(n == 0)"),
        health_timeout_seconds=30)
    path = tmp_path / "pgbackup.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def run_recovery(run_dag, cluster, seeded, tmp_path, conf, env=None):
    return run_dag("pg_full_recovery", bucket=seeded["bucket"], conf=conf, local_root=seeded["root"] / "work",
                   conns={"glimpse_db": cluster.airflow_conn(seeded["name"])}, env=env)


def test_a_date_without_a_backup_is_refused_before_anything_is_made(run_dag, cluster, s3, receiver, tmp_path,
                                                                    seeded):
    db = seeded["name"]
    before_dbs, before_keys = databases(cluster), s3_keys(s3, seeded["bucket"])
    run = run_recovery(run_dag, cluster, seeded, tmp_path, {"backup_date": "20261120", "confirm": db})
    assert run.state == "failed", run.output[-3000:]
    states = run.task_states
    assert states["validate"] == "failed" and states["download"] == "upstream_failed"
    assert states["cleanup"] == "skipped" and states["report"] == "success" and states["run_outcome"] == "failed"
    cause = "no backup of 'glimpse' on 2026-11-20; backups exist on: 2026-11-25"
    rows = restore_logs(cluster, run.run_id)
    assert [(r["kind"], r["status"]) for r in rows] == [("full", "REFUSED")]
    assert cause in rows[0]["error_message"] and rows[0]["safety_location"] is None
    assert rows[0]["params"]["backup_date"] == "20261120"
    assert databases(cluster) == before_dbs and s3_keys(s3, seeded["bucket"]) == before_keys  # nothing made
    assert table_digests(cluster, db) == seeded["before"]
    pd = json_posts(receiver, "/pagerduty")
    assert len(pd) == 1 and cause in pd[0]["payload"]["summary"]
    slack = [p["text"] for p in json_posts(receiver, "/slack")]
    assert any(t.startswith(":no_entry: Full recovery of glimpse refused, nothing was changed") and cause in t
               for t in slack), slack


def test_recovery_after_damage_with_confirm_and_application_steps(run_dag, cluster, s3, receiver, tmp_path,
                                                                  seeded):
    db = seeded["name"]
    cluster.psql("-c", "DELETE FROM public.messages WHERE id IN (SELECT id FROM public.messages ORDER BY id LIMIT 40)",
                 "-c", "UPDATE public.users SET email = 'x' || email WHERE id IN "
                       "(SELECT id FROM public.users ORDER BY id LIMIT 25)",
                 "-c", "DROP TABLE public.user_groups", dbname=db)
    # The catalog lives in the target database here (the runbook's way, and the default config's): a backup
    # recorded after the restored backup must survive the swap, and the recovery's own row land beside it.
    pg = pgtools.connect(cluster.conn(db), autocommit=True)
    migrations.ensure_schema(pg)
    pg.execute("INSERT INTO backup_logs (backup_date, backup_type, target, status) VALUES "
               "('2026-11-26T02:00:00+09:00', 'daily', 'glimpse', 'SUCCESS')")
    pg.close()
    damaged = table_digests(cluster, db)
    assert app_tables(damaged) != seeded["before"]
    marker = tmp_path / "app.log"
    marker.write_text("")
    run = run_recovery(run_dag, cluster, seeded, tmp_path, {"backup_date": "20261125", "confirm": db,
                                                            "parallel_jobs": 3},
                       env={"PGBACKUP_CONFIG": str(app_config(tmp_path, marker)),
                            "PGBACKUP_CATALOG_CONN_ID": "glimpse_db"})
    assert run.state == "success", run.output[-4000:]
    steps = ("validate", "download", "restore_new", "check", "approve_swap", "stop_app", "safety_dump", "swap",
             "carry_catalog", "analyze", "start_app", "health_check", "cleanup", "report")
    assert run.task_states == {**{s: "success" for s in steps}, "run_outcome": "skipped"}

    recovered = table_digests(cluster, db)
    assert app_tables(recovered) == seeded["before"]  # every table as before the damage
    assert recovered["public.backup_logs"] == damaged["public.backup_logs"]  # the catalog followed the swap
    rows = restore_logs(cluster, run.run_id, dbname=db)
    assert len(rows) == 1, rows
    row = rows[0]
    assert (row["kind"], row["status"], row["approved_by"], row["database_name"], row["backup_key"]) == (
        "full", "SUCCESS", "confirm param", db, KEY)
    kept = row["changes"]["kept_as"]
    assert kept.startswith(f"{db}_before_recovery_") and table_digests(cluster, kept) == damaged
    assert not [d for d in databases(cluster) if d.startswith(f"{db}_recovering_")]
    assert row["rto_seconds"] > 0 and row["rto_objective_seconds"] == 4 * 3600
    assert row["triggered_by"] and row["params"]["confirm"] == db
    assert row["details"]["phases"]["restore"] > 0 and row["details"]["app_steps"]["health_check"]["attempts"] == 2
    key = f"database/safety/glimpse/{kept}.dump"
    assert row["safety_location"] == f"s3://{seeded['bucket']}/{key}"
    assert {key, key + ".sha256"} <= set(s3_keys(s3, seeded["bucket"]))
    assert marker.read_text().split() == ["stop", "start", "health-fail", "health-ok"]
    slack = [p["text"] for p in json_posts(receiver, "/slack")]
    assert len(slack) == 2, slack
    assert slack[0].startswith(":rotating_light: Full recovery of glimpse started by ")
    assert slack[1].startswith(f":white_check_mark: Full recovery of glimpse done: {db} is now backup {KEY}")
    assert f'ALTER DATABASE "{kept}" RENAME TO "{db}";' in slack[1]  # the rollback
    assert receiver.posts("/pagerduty") == []
    assert not os.path.exists(seeded["root"] / "work" / ".restore") or not os.listdir(
        seeded["root"] / "work" / ".restore")


def test_rehearsal_measures_a_full_recovery_and_leaves_nothing(run_dag, cluster, s3, receiver, tmp_path, seeded):
    before_keys = s3_keys(s3, seeded["bucket"])
    run = run_dag("pg_recovery_rehearsal", "2026-12-01T04:00:00+09:00", bucket=seeded["bucket"],
                  local_root=seeded["root"] / "rehearsal", conns={"glimpse_db": cluster.airflow_conn(seeded["name"])})
    assert run.state == "success", run.output[-4000:]
    steps = ("plan", "download", "restore_new", "check", "analyze", "safety_dump", "cleanup", "report")
    assert run.task_states == {**{f"rehearse.{s}[0]": "success" for s in steps}, "run_outcome": "skipped"}
    rows = restore_logs(cluster, run.run_id)
    assert [(r["kind"], r["status"], r["backup_key"]) for r in rows] == [("rehearsal", "SUCCESS", KEY)]
    row = rows[0]
    phases = row["details"]["phases"]
    assert row["rto_seconds"] > 0 and float(row["rto_seconds"]) == pytest.approx(
        sum(phases[p] for p in ("download", "decrypt", "restore", "check", "analyze", "safety_dump")), abs=0.01)
    assert row["database_name"].startswith("pgdataops_rehearsal_glimpse_")
    assert row["details"]["safety_dump"]["deleted"] is True and row["details"]["safety_dump"]["seconds"] > 0
    assert not [d for d in databases(cluster) if d.startswith("pgdataops_rehearsal_")]  # the scratch is gone
    assert s3_keys(s3, seeded["bucket"]) == before_keys  # the timed safety dump was deleted
    slack = [p["text"] for p in json_posts(receiver, "/slack")]
    assert len(slack) == 1 and slack[0].startswith(":white_check_mark: Recovery rehearsal of glimpse: " + KEY)
    assert "is within the objective 4 h" in slack[0]
    assert receiver.posts("/pagerduty") == []


def test_the_recovery_waits_for_the_approval_before_touching_the_application_or_production():
    """Shape: manual only; the form's params; restore and checks before the gate; stop_app, the safety dump and
    the swap after it; cleanup a teardown and the report ALL_DONE. The rehearsal: monthly, no app steps, no swap."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags" / "pg_full_recovery.py"))
    dag = bag.dags["pg_full_recovery"]
    assert type(dag.timetable).__name__ == "NullTimetable"
    assert set(dag.params.keys()) == {"target", "backup_date", "backup_key", "parallel_jobs", "sections",
                                      "owners_and_privileges", "confirm", "approval_timeout_minutes"}
    assert dag.params["owners_and_privileges"] is False
    assert dag.params["sections"] == ["pre-data", "data", "post-data"] and dag.params["parallel_jobs"] == 2
    order = [t.task_id for t in dag.topological_sort()]
    assert order.index("check") < order.index("approve_swap") < order.index("stop_app") < order.index(
        "safety_dump") < order.index("swap") < order.index("carry_catalog") < order.index("analyze") < order.index("start_app") < order.index(
        "health_check") < order.index("cleanup") < order.index("report")
    gate = dag.get_task("approve_swap")
    assert gate.upstream_task_ids == {"check"} and gate.downstream_task_ids == {"stop_app", "run_outcome"}
    cleanup, report = dag.get_task("cleanup"), dag.get_task("report")
    assert cleanup.is_teardown and cleanup.trigger_rule == "all_done" and report.trigger_rule == "all_done"
    rehearsal = DagBag(dag_folder=str(REPO / "dags" / "pg_recovery_rehearsal.py")).dags["pg_recovery_rehearsal"]
    assert rehearsal.timetable.expression == "0 4 1 * *" and not rehearsal.params
    ids = {t.task_id.split(".")[-1] for t in rehearsal.tasks}
    assert {"swap", "stop_app", "start_app", "approve_swap"}.isdisjoint(ids) and "safety_dump" in ids
