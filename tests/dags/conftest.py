"""Running pg_backup end to end with `airflow dags test` against the session's real servers."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import devstack
import psycopg
import pytest


@dataclass
class DagRunOutput:
    """What `airflow dags test` printed, and how the run ended."""

    proc: object

    @property
    def output(self) -> str:
        return self.proc.stdout + "\n" + self.proc.stderr

    @property
    def succeeded(self) -> bool:
        return "state=success" in self.output and "DagRun Finished" in self.output

    @property
    def failed(self) -> bool:
        return "DagRun Finished" in self.output and "state=failed" in self.output


@dataclass
class BackupRun(DagRunOutput):
    local_root: Path = Path()
    bucket: str = ""


@pytest.fixture
def run_pg_backup(airflow_home, cluster, s3, receiver, tmp_path):
    """Call with overrides: conns={conn_id: json or None (= undefined)}, env={...}, logical_date=..."""
    # Each DAG-run test starts with no backup_logs, so it sees exactly the rows its run wrote.
    cluster.psql("-c", "DROP TABLE IF EXISTS backup_logs CASCADE", dbname="catalog")

    def run(*, bucket: str, conns: dict | None = None, env: dict | None = None,
            logical_date: str = "2026-11-25T02:00:00+09:00", conf: dict | None = None,
            local_root: Path | None = None) -> BackupRun:
        receiver.clear()
        root = local_root or tmp_path / "backups"
        connections = {
            "glimpse_db": cluster.airflow_conn("glimpse"),
            "backup_s3": s3.airflow_conn(),
            "slack_backup": receiver.slack_conn(),
            "pagerduty_backup": receiver.pagerduty_conn(),
            "backup_catalog": cluster.airflow_conn("catalog"),
        }
        for k, v in (conns or {}).items():
            if v is None:
                connections.pop(k, None)
            else:
                connections[k] = v
        extra = {
            "PGBACKUP_LOCAL_ROOT": str(root),
            "PGBACKUP_BUCKET": bucket,
            "PGBACKUP_RETRIES": "0",
            "PGBACKUP_CATALOG_CONN_ID": "backup_catalog",
            "PGBACKUP_MULTIPART_CHUNK_MB": "5",
            **(env or {}),
        }
        proc = devstack.dags_test(devstack.airflow_env(airflow_home, conns=connections, extra=extra), "pg_backup",
                                  logical_date, conf)
        (tmp_path / "dags_test.log").write_text(proc.stdout + "\n" + proc.stderr)
        return BackupRun(proc=proc, local_root=root, bucket=bucket)

    return run


def catalog_rows(cluster, run_id_like: str = "%") -> list[dict]:
    with psycopg.connect(host="127.0.0.1", port=cluster.port, user="postgres", password=cluster.password,
                         dbname="catalog", row_factory=psycopg.rows.dict_row) as pg:
        exists = pg.execute("SELECT to_regclass('public.backup_logs') IS NOT NULL AS e").fetchone()["e"]
        if not exists:
            return []
        return pg.execute("SELECT * FROM backup_logs WHERE run_id LIKE %s ORDER BY id", (run_id_like,)).fetchall()


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []


def json_posts(receiver, prefix: str) -> list[dict]:
    return [r["json"] if isinstance(r["json"], dict) else json.loads(r["json"]) for r in receiver.posts(prefix)]
