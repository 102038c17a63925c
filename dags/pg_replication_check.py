"""
### pg_replication_check: is the standby there, streaming and caught up? (the runbook's "DR sync check")

Every `dr.replication_check_schedule` (default every 5 minutes, in the configured time zone) while some target
has a standby in `dr.standbys`; also manual. One mapped task group per such target,
**check_standby.check_replication** (`pg_dataops.dr.check`), as of the wall clock. With no standby configured
the DAG is unscheduled and its single task, **check_replication**, says so (and clears any alert a standby
removed from the configuration left open).

- **page** (PagerDuty, and the run is red): the primary unreachable (or in recovery); the standby gone:
  unreachable, not in recovery (promoted), or no standby streaming through its slot on the primary
  (`pg_stat_replication`); replay more than `dr.lag_page_seconds` behind (the standby's replay delay, or the
  primary's `replay_lag` when larger) or more than `dr.lag_page_mb` of WAL not replayed; a replication slot whose
  WAL is lost (`wal_status` lost) or that holds more than `dr.slot_retained_page_gb` on the primary.
- **warn** (Slack): replay more than `dr.lag_warn_seconds` behind; replay paused (`pg_wal_replay_pause()`);
  a replication slot inactive (it holds WAL until it is dropped, and the primary's disk fills).

Keys are `pg_replication_check/<target>/<check>` (slots: `.../slot_retention/<slot>`, `.../slot_inactive/<slot>`);
their state is kept in the catalog table `monitor_alerts`: PagerDuty is triggered on every failing run and
resolved once under the same key when the check passes; Slack hears of a warning once when it starts and once
when it clears. A check that cannot be measured (its server is down) keeps its last state. A failure of the task
itself alerts Slack and PagerDuty like every other task.

**What to do**: standby gone or promoted: rebuild it with `pg_standby_provision` (drop its old slot first if it
is inactive). Lag: look at the standby's server log and `pg_stat_replication` on the primary (network, disk,
long queries on the standby with `hot_standby_feedback`). Paused: `SELECT pg_wal_replay_resume()` on the
standby. An inactive slot nobody uses: `SELECT pg_drop_replication_slot('<slot>')` on the primary.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import task_group
from pg_dataops.airflow.dag_defaults import standard_dag
from pg_dataops.common.config import load_config
from pg_dataops.dr.operators import ReplicationCheckOperator

CFG = load_config()
STANDBY_TARGETS = [s.target for s in CFG.dr.standbys]

with standard_dag(
    "pg_replication_check",
    description="Every 5 minutes: standby reachable, in recovery and streaming; replay lag, pause; slots' WAL",
    # Unscheduled while there is nothing to check: 288 empty runs a day would bury the real ones.
    schedule=CFG.dr.replication_check_schedule if STANDBY_TARGETS else None,
    cfg=CFG,
    dagrun_timeout=dt.timedelta(minutes=55),  # a backstop: the task's limits below end a run within minutes
    # A retry comes soon or not at all: the next run checks again in 5 minutes.
    task_defaults=dict(execution_timeout=dt.timedelta(minutes=2), retry_delay=dt.timedelta(seconds=20),
                       max_retry_delay=dt.timedelta(minutes=1)),
    tags=["dr", "postgres", "replication", "monitoring"],
    doc_md=__doc__,
) as dag:
    if STANDBY_TARGETS:

        @task_group
        def check_standby(target: str):
            ReplicationCheckOperator(task_id="check_replication", target=target)

        check_standby.expand(target=STANDBY_TARGETS)
    else:
        ReplicationCheckOperator(task_id="check_replication", target=None)
