"""No password anywhere: two real pg_backup runs against a cluster whose password is distinctive.

Run 1 backs up four targets: one succeeds, one's pg_dump fails (a sequence it may not read), one's password is wrong, one's dump does not
restore. Run 2 has a wrong password on the catalog. Then the secret is searched for in the task logs, the
`dags test` output, the metadata DB (XCom included), the manifests and sidecars (S3 and local), the catalog
rows and the Slack / PagerDuty payloads: zero hits. To prove the failure paths that carry server messages are
redacted (not merely silent), the server is made to echo the secret: the unreadable sequence and the violated
constraint are named like it, so pg_dump's and pg_restore's errors contain it.

Run 1 also starts with what a killed run left (a partial file, an incomplete multipart upload) of its target
and of another: the dump step cleans its own, keeps the other's, and reports it in its result.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import devstack
import psycopg
import pytest
import yaml
from psycopg import sql

from .conftest import json_posts

pytestmark = pytest.mark.dagrun

SECRET = "Zx9-distinctive-S3cret"
REPO = Path(__file__).resolve().parents[2]
LOGICAL_DATE = "2026-11-25T02:00:00+09:00"
BASE = "glimpse_daily_20261125_020000.dump"


@pytest.fixture(scope="module")
def secret_cluster():
    c = devstack.LocalCluster(password=SECRET).start()
    try:
        c.createdb("glimpse")
        c.load_demo("glimpse", 200)
        c.createdb("catalog")
        # vault: pg_dump runs as a role that may read the tables (so the row counts pass) but not one sequence,
        # named like the password.
        c.createdb("vault")
        c.psql("-c", sql.SQL("""
            CREATE ROLE backup_reader LOGIN PASSWORD {pw};
            CREATE TABLE public.users (id int PRIMARY KEY);
            CREATE SEQUENCE public.{secret};
            GRANT SELECT ON public.users TO backup_reader;
        """).format(pw=sql.Literal(SECRET), secret=sql.Identifier(SECRET)).as_string(), dbname="vault")
        # unrestorable: a CHECK calling a function that reads a table restored later; the constraint is named
        # like the password, so pg_restore's error carries it.
        c.createdb("unrestorable")
        c.psql("-c", sql.SQL("""
            CREATE TABLE zz_allowed (v int PRIMARY KEY);
            INSERT INTO zz_allowed SELECT generate_series(1, 10);
            CREATE FUNCTION is_allowed(x int) RETURNS boolean LANGUAGE sql STABLE
                AS $$ SELECT EXISTS (SELECT 1 FROM public.zz_allowed WHERE v = x) $$;
            CREATE TABLE aa_items (id int PRIMARY KEY, v int, CONSTRAINT {secret} CHECK (is_allowed(v)));
            INSERT INTO aa_items VALUES (1, 1), (2, 2);
            CREATE TABLE users (id int PRIMARY KEY);
        """).format(secret=sql.Identifier(SECRET)).as_string(), dbname="unrestorable")
        yield c
    finally:
        c.stop()


def conn_json(cluster, dbname, *, user="postgres", password=SECRET) -> str:
    return json.dumps({"conn_type": "postgres", "host": "127.0.0.1", "port": cluster.port, "login": user,
                       "password": password, "schema": dbname})


def write_config(tmp_path, targets: list[dict]) -> Path:
    raw = yaml.safe_load((REPO / "include/config/pgbackup.yaml").read_text())
    raw["targets"] = targets
    path = tmp_path / f"pgbackup-{len(targets)}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def run_backup(airflow_home, s3, receiver, tmp_path, bucket, config: Path, conns: dict):
    env = devstack.airflow_env(airflow_home, conns={
        "backup_s3": s3.airflow_conn(), "slack_backup": receiver.slack_conn(),
        "pagerduty_backup": receiver.pagerduty_conn(), **conns,
    }, extra={
        "PGBACKUP_CONFIG": str(config), "PGBACKUP_LOCAL_ROOT": str(tmp_path / "backups"), "PGBACKUP_BUCKET": bucket,
        "PGBACKUP_RETRIES": "0", "PGBACKUP_CATALOG_CONN_ID": "backup_catalog", "PGBACKUP_MULTIPART_CHUNK_MB": "5",
        "PGBACKUP_RESTORE_JOBS": "1",  # one job: the unrestorable dump loads in TOC order and fails, always
    })
    proc = devstack.dags_test(env, "pg_backup", LOGICAL_DATE)
    (tmp_path / "dags_test.log").write_text(proc.stdout + "\n" + proc.stderr)
    return proc


def catalog(cluster) -> list[dict]:
    with psycopg.connect(host="127.0.0.1", port=cluster.port, user="postgres", password=SECRET, dbname="catalog",
                         row_factory=psycopg.rows.dict_row) as pg:
        if not pg.execute("SELECT to_regclass('public.backup_logs') IS NOT NULL AS e").fetchone()["e"]:
            return []
        return pg.execute("SELECT * FROM backup_logs ORDER BY id").fetchall()


def xcom(airflow_home, task_id: str, key: str = "return_value") -> dict[int, object]:
    with sqlite3.connect(Path(airflow_home) / "airflow.db") as db:
        rows = db.execute("SELECT map_index, value FROM xcom WHERE task_id = ? AND key = ?", (task_id, key)).fetchall()
    return {m: json.loads(v) if isinstance(v, str | bytes) else v for m, v in rows}


def places_with_secret(airflow_home, proc, s3, bucket, local_root, cluster, receiver) -> list[str]:
    """Every place the secret must not be, and whether it is: a list of the places where it was found."""
    needle = SECRET.encode()
    hits = []
    # `dags test` runs the tasks in its own process: their logs are in its output (files, if any, too)
    output = proc.stdout + "\n" + proc.stderr
    assert "running /usr/lib/postgresql/15/bin/pg_dump" in output, "no task log in the output: nothing to search"
    if SECRET in output:
        hits.append("dags test output (the task logs)")
    hits += [f"log {p}" for p in (Path(airflow_home) / "logs").rglob("*") if p.is_file() and needle in p.read_bytes()]
    hits += [f"metadata DB file {p.name}" for p in Path(airflow_home).glob("airflow.db*") if needle in p.read_bytes()]
    with sqlite3.connect(Path(airflow_home) / "airflow.db") as db:
        values = db.execute("SELECT task_id, key, map_index, value FROM xcom").fetchall()
    assert len(values) >= 10, "XCom is nearly empty: the search would prove nothing"
    hits += [f"xcom {t}/{k}[{m}]" for t, k, m, v in values if SECRET in str(v)]
    c = s3.client()
    for obj in c.list_objects_v2(Bucket=bucket).get("Contents", []):
        if obj["Key"].endswith((".json", ".sha256")):
            if needle in c.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read():
                hits.append(f"s3 {obj['Key']}")
        head = c.head_object(Bucket=bucket, Key=obj["Key"])
        if SECRET in json.dumps(head.get("Metadata", {})):
            hits.append(f"s3 metadata of {obj['Key']}")
    hits += [f"local {p}" for p in Path(local_root).rglob("*")
             if p.is_file() and p.name.endswith((".json", ".sha256")) and needle in p.read_bytes()]
    hits += [f"catalog row {r['id']}" for r in catalog(cluster) if SECRET in json.dumps(r, default=str)]
    hits += [f"receiver {r['path']}" for r in receiver.requests if SECRET in json.dumps(r)]
    return hits


def test_no_secret_in_any_output_of_a_successful_and_failing_backups(
        secret_cluster, airflow_home, s3, bucket, receiver, tmp_path):
    cluster = secret_cluster
    receiver.clear()
    # what a killed run left: of target glimpse (cleaned) and of a target not in this config (kept)
    month = tmp_path / "backups/daily/2026/11"
    month.mkdir(parents=True)
    (month / "glimpse_daily_20261120_020000.dump.partial").write_bytes(b"killed mid-dump")
    (month / "other_daily_20261120_020000.dump.partial").write_bytes(b"not ours")
    c = s3.client()
    for key in ("database/daily/glimpse_daily_20261120_020000.dump", "database/daily/other_daily_20261120_020000.dump"):
        up = c.create_multipart_upload(Bucket=bucket, Key=key)
        c.upload_part(Bucket=bucket, Key=key, UploadId=up["UploadId"], PartNumber=1, Body=b"x" * 100)

    config = write_config(tmp_path, [
        {"name": "glimpse", "conn_id": "glimpse_db"},
        {"name": "vault", "conn_id": "vault_db"},
        {"name": "lockedout", "conn_id": "lockedout_db"},
        {"name": "unrestorable", "conn_id": "unrestorable_db"},
    ])
    proc = run_backup(airflow_home, s3, receiver, tmp_path, bucket, config, {
        "glimpse_db": conn_json(cluster, "glimpse"),
        "vault_db": conn_json(cluster, "vault", user="backup_reader"),
        "lockedout_db": conn_json(cluster, "glimpse", password=SECRET + "-not-this-one"),
        "unrestorable_db": conn_json(cluster, "unrestorable"),
        "backup_catalog": conn_json(cluster, "catalog"),
    })
    assert proc.dag_run is not None and proc.dag_run["state"] == "failed", proc.stderr[-3000:]

    # the runs did what they should: one good backup, three failures named with the secret masked
    rows = {r["target"]: r for r in catalog(cluster)}
    assert {t: (r["status"], r["failed_step"]) for t, r in rows.items()} == {
        "glimpse": ("SUCCESS", None), "vault": ("FAILED", "dump"), "lockedout": ("FAILED", "dump"),
        "unrestorable": ("FAILED", "verify")}
    assert "permission denied for sequence ********" in rows["vault"]["error_message"]
    assert "authentication failed for user 'postgres'" in rows["lockedout"]["error_message"]
    assert "********" in rows["unrestorable"]["error_message"]
    slack = json_posts(receiver, "/slack")
    assert sum(p["text"].startswith(":white_check_mark:") for p in slack) == 1
    assert sum(p["text"].startswith(":red_circle:") for p in slack) == 3
    assert len(json_posts(receiver, "/pagerduty")) == 3
    assert any("permission denied for sequence ********" in p["text"] for p in slack)

    # the killed run's leftovers: glimpse's removed and reported, the other target's kept
    cleaned = xcom(airflow_home, "back_up_target.dump")[0]["cleaned"]
    assert cleaned["partial_files"] == [str(month / "glimpse_daily_20261120_020000.dump.partial")]
    assert cleaned["multipart_uploads"] == ["database/daily/glimpse_daily_20261120_020000.dump"]
    assert sorted(p.name for p in month.glob("*.partial")) == ["other_daily_20261120_020000.dump.partial"]
    assert [u["Key"] for u in c.list_multipart_uploads(Bucket=bucket).get("Uploads", [])] == [
        "database/daily/other_daily_20261120_020000.dump"]

    assert places_with_secret(airflow_home, proc, s3, bucket, tmp_path / "backups", cluster, receiver) == []


def test_no_secret_when_the_catalog_refuses_the_password(secret_cluster, airflow_home, s3, bucket, receiver,
                                                         tmp_path):
    cluster = secret_cluster
    receiver.clear()
    before = len(catalog(cluster))
    config = write_config(tmp_path, [{"name": "glimpse", "conn_id": "glimpse_db"}])
    proc = run_backup(airflow_home, s3, receiver, tmp_path, bucket, config, {
        "glimpse_db": conn_json(cluster, "glimpse"),
        "backup_catalog": conn_json(cluster, "catalog", password=SECRET + "-catalog"),
    })
    assert proc.dag_run is not None and proc.dag_run["state"] == "failed", proc.stderr[-3000:]
    assert len(catalog(cluster)) == before  # nothing could be recorded
    slack = json_posts(receiver, "/slack")
    assert len(slack) == 1 and "back_up_target.record" in slack[0]["text"]
    assert "authentication failed for user 'postgres'" in slack[0]["text"]
    assert places_with_secret(airflow_home, proc, s3, bucket, tmp_path / "backups", cluster, receiver) == []
