"""What every DAG of ours shares, written once: the DAG keywords and the run-outcome task.

A DAG file reads ``with standard_dag("pg_backup", cfg=CFG, ...) as dag:`` and lists its tasks; on
leaving the block, ``run_outcome`` is added downstream of every task (a failed task makes the run
red, a timed-out run alerts: :mod:`pg_dataops.airflow.runstate`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import pendulum
from airflow.sdk import DAG

from pg_dataops.airflow.notifiers import default_args
from pg_dataops.airflow.runstate import fail_run_on_any_failure

if TYPE_CHECKING:
    from pg_dataops.common.config import Config

# Any past date: every DAG runs from "now" on (catchup is off); a fixed one keeps the DAG's identity stable.
START_DATE = (2026, 1, 1)


@contextmanager
def standard_dag(
    dag_id: str,
    *,
    cfg: Config,
    description: str,
    schedule: str | None,
    dagrun_timeout: dt.timedelta,
    tags: Sequence[str],
    doc_md: str | None,
    params: Mapping[str, Any] | None = None,
    task_defaults: Mapping[str, Any] | None = None,
    **dag_kwargs: Any,
) -> Iterator[DAG]:
    """A DAG with our defaults: one active run, no catch-up, the configured time zone, task defaults
    (owner, retries, time limit, failure alerts) from the config; ``task_defaults`` overrides some."""
    with DAG(
        dag_id=dag_id,
        description=description,
        schedule=schedule,
        start_date=pendulum.datetime(*START_DATE, tz=cfg.timezone),
        catchup=False,
        max_active_runs=1,
        dagrun_timeout=dagrun_timeout,
        default_args=default_args(cfg, **(task_defaults or {})),
        params=dict(params or {}),
        tags=list(tags),
        doc_md=doc_md,
        **dag_kwargs,
    ) as dag:
        yield dag
    fail_run_on_any_failure(dag)
