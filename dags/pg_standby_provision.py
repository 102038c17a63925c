"""
### pg_standby_provision: build a streaming standby of a target (runbook 2.1, for PostgreSQL 15)

Manual only. Builds the standby configured in `dr.standbys.<target>` (its name, connection `conn_id`, slot,
data directory, start step) in an empty data directory on the standby's host, and reports it once it streams.
Use it for the first standby, and after a failover to rebuild the old primary as the new standby (move its
data directory aside first: a non-empty directory is refused, never overwritten).

**Where it runs.** validate and provision work on the local disk of the machine that runs them: in a real
deployment they must run on an Airflow worker on the standby's host (an Airflow queue served only by that
host's worker; route the tasks to it with the operators' `queue`). The standby connection's host/port is
where the new server will listen; its port is written into the standby's settings.

**Form.** `target` (targets with a standby configured); `data_directory` (empty: the configured
`dr.standbys.<target>.data_directory`; one of the two must be given).

Tasks:

- **validate** changes nothing. It checks that the target has a standby configured; the data directory is
  absolute and empty or missing; the standby's and the replication connections exist; the primary answers,
  is not in recovery, has `wal_level` replica and two free WAL senders; the slot is not already streaming to
  another standby; this host has the primary's major's `pg_basebackup` and `pg_ctl` (`pg_bin_root`) and, for
  a PITR target, `barman-cloud-wal-restore`; nothing listens yet at the standby connection's host:port.
- **provision**: the physical slot (created if missing); `pg_basebackup -X stream -R -S <slot>` as the
  postgres OS user, connecting as `replication_conn_id` or the target's connection; `postgresql.auto.conf`
  gets `port`, `hot_standby = on` and, for a PITR target, `restore_command` = `barman-cloud-wal-restore` from
  the WAL archive, the fallback when streaming cannot serve a segment; start with `dr.standbys.<target>.start`
  if set, else `pg_ctl` with the S3 connection's credentials in the server's environment; then wait until the
  standby is in recovery and streaming and the primary shows it on the slot.
- **report**: Slack says where the standby is, its slot, and how far behind it replays.

Failures alert Slack and PagerDuty and turn the run red. If the standby did not start or stream, the base
backup stays in the directory and the slot keeps WAL on the primary: fix the cause and start it, or stop it,
empty the directory, drop the slot if unwanted, and run again. Notes: `pg_basebackup -R` writes the
replication role's password into `primary_conninfo` (postgresql.auto.conf, mode 0600, owner postgres); with
`pg_ctl` the data directory must hold its own postgresql.conf and pg_hba.conf (Debian keeps them in
/etc/postgresql: configure `start`, e.g. `pg_ctlcluster 15 main start`, and give that server the S3
credentials the host's way, e.g. the postgres user's ~/.aws/credentials).
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import Param, chain
from pg_dataops.airflow.dag_defaults import standard_dag
from pg_dataops.common.config import load_config
from pg_dataops.dr.operators import ProvisionStandbyOperator, StandbyReportOperator, ValidateStandbyOperator

CFG = load_config()
# Targets with a standby; with none configured, every target (validate then names the missing setting).
STANDBY_TARGETS = [s.target for s in CFG.dr.standbys] or CFG.target_names
CONFIGURED_DIRS = "; ".join(f"{s.target}: {s.data_directory or 'none configured'}" for s in CFG.dr.standbys)

with standard_dag(
    "pg_standby_provision",
    description="Build a streaming standby (pg_basebackup -R, a replication slot, WAL archive fallback)",
    schedule=None,
    cfg=CFG,
    # The base backup of a large database takes hours: the provision task's own limit, plus the checks.
    dagrun_timeout=dt.timedelta(minutes=max(CFG.dagrun_timeout_minutes, CFG.task_timeout_minutes + 30)),
    tags=["dr", "standby", "replication", "postgres"],
    doc_md=__doc__,
    params={
        "target": Param(STANDBY_TARGETS[0], enum=STANDBY_TARGETS, title="Target",
                        description="Whose standby to build (dr.standbys.<target>: its name, connection, slot)."),
        "data_directory": Param(None, type=["null", "string"], title="Data directory",
                                description="Absolute path on the standby's host, empty or missing. Empty: the "
                                            "configured dr.standbys.<target>.data_directory ("
                                            + (CONFIGURED_DIRS or "no standby configured") + ")."),
    },
) as dag:
    validate = ValidateStandbyOperator(task_id="validate", target="{{ params.target }}",
                                       data_directory="{{ params.data_directory or '' }}")
    provision = ProvisionStandbyOperator(task_id="provision", plan=validate.output)
    report = StandbyReportOperator(task_id="report", result=provision.output)
    chain(validate, provision, report)
