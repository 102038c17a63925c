"""Running pg_backup end to end with `airflow dags test` against the session's real servers."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import devstack
import psycopg
import pytest


@dataclass
class DagRunOutput:
    """What `airflow dags test` printed, and how the run ended: the dag_run row's state in the test's metadata
    DB, never text in the output (task lines print `state=failed` too)."""

    proc: object = field(repr=False)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} run_id={self.run_id!r} state={self.state!r}>"

    @property
    def output(self) -> str:
        return self.proc.stdout + "\n" + self.proc.stderr

    @property
    def dag_run(self) -> dict | None:
        """The run's row ({"run_id", "state", ...}) read right after `devstack.dags_test` returned."""
        return getattr(self.proc, "dag_run", None)

    @property
    def run_id(self) -> str | None:
        return self.dag_run["run_id"] if self.dag_run else None

    @property
    def state(self) -> str | None:
        """`success`, `failed`, ... from the metadata DB; None when no run was created (e.g. an import error)."""
        return self.dag_run["state"] if self.dag_run else None

    @property
    def task_instances(self) -> dict[str, dict]:
        """{"task_id" or "task_id[map_index]": {"state", "duration", "try_number"}} of this run, from the
        metadata DB."""
        import sqlite3

        home = getattr(self.proc, "airflow_home", None)
        if not self.run_id or home is None:
            return {}
        with sqlite3.connect(f"file:{Path(home) / 'airflow.db'}?mode=ro", uri=True) as con:
            con.row_factory = sqlite3.Row
            rows = con.execute("SELECT task_id, map_index, state, duration, try_number FROM task_instance "
                               "WHERE dag_id = ? AND run_id = ?", (self.proc.dag_id, self.run_id)).fetchall()
        return {r["task_id"] + (f"[{r['map_index']}]" if r["map_index"] >= 0 else ""):
                {"state": r["state"], "duration": r["duration"], "try_number": r["try_number"]} for r in rows}

    @property
    def task_states(self) -> dict[str, str | None]:
        """{"task_id" or "task_id[map_index]": state} of this run's task instances."""
        return {name: ti["state"] for name, ti in self.task_instances.items()}

    @property
    def succeeded(self) -> bool:
        return self.state == "success"

    @property
    def failed(self) -> bool:
        return self.state == "failed"


@dataclass(repr=False)
class BackupRun(DagRunOutput):
    local_root: Path = Path()
    bucket: str = ""


@pytest.fixture
def dag_env(airflow_home, cluster, s3, receiver, tmp_path):
    """dag_env(bucket=..., conns=..., env=..., local_root=...): the environment of one `airflow dags test`.

    The session's servers are the connections (glimpse_db, backup_s3, slack_backup, pagerduty_backup,
    backup_catalog); ``conns`` overrides them by conn_id, None leaving one undefined. The config points at
    the test's bucket and local tree, with no retries; ``env`` adds or overrides PGBACKUP_* settings.
    """

    def make(*, bucket: str, conns: dict | None = None, env: dict | None = None,
             local_root: Path | None = None) -> dict:
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
            "PGBACKUP_LOCAL_ROOT": str(local_root or tmp_path / "backups"),
            "PGBACKUP_BUCKET": bucket,
            "PGBACKUP_RETRIES": "0",
            "PGBACKUP_CATALOG_CONN_ID": "backup_catalog",
            "PGBACKUP_MULTIPART_CHUNK_MB": "5",
            **(env or {}),
        }
        return devstack.airflow_env(airflow_home, conns=connections, extra=extra)

    return make


@pytest.fixture
def run_dag(dag_env, receiver, tmp_path):
    """run_dag(dag_id, logical_date=None, bucket=..., conns=..., env=..., conf=..., local_root=...): one
    `airflow dags test` with :func:`dag_env`, the receiver cleared first; its output is kept in tmp_path."""
    count = 0

    def run(dag_id: str, logical_date: str | None = None, *, bucket: str, conns: dict | None = None,
            env: dict | None = None, conf: dict | None = None, local_root: Path | None = None,
            timeout: int = 600) -> BackupRun:
        nonlocal count
        count += 1
        receiver.clear()
        root = local_root or tmp_path / "backups"
        proc = devstack.dags_test(dag_env(bucket=bucket, conns=conns, env=env, local_root=root), dag_id,
                                  logical_date, conf, timeout=timeout)
        (tmp_path / f"dags_test_{count}_{dag_id}.log").write_text(proc.stdout + "\n" + proc.stderr)
        return BackupRun(proc=proc, local_root=root, bucket=bucket)

    return run


@pytest.fixture
def run_pg_backup(run_dag, cluster):
    """Call with overrides: conns={conn_id: json or None (= undefined)}, env={...}, logical_date=..."""
    # Each DAG-run test starts with no backup_logs, so it sees exactly the rows its run wrote.
    cluster.psql("-c", "DROP TABLE IF EXISTS backup_logs CASCADE", dbname="catalog")

    def run(*, logical_date: str = "2026-11-25T02:00:00+09:00", **kwargs) -> BackupRun:
        return run_dag("pg_backup", logical_date, **kwargs)

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
