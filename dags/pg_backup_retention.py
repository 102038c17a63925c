"""
### pg_backup_retention: grandfather-father-son cleanup of backups, run by a human

Manual only. Keeps daily backups `retention.daily_days` (30), weekly `weekly_weeks` (12) and monthly
`monthly_months` (12 calendar months), judged by each backup's own timestamp (its manifest's, else its
file name's), never S3's LastModified or a file's mtime. The dump, its `.sha256` and its `.json` go
together. The newest (verified) backup of each target and tier is always kept; orphans and unreadable
manifests are kept and flagged `KEEP!`.

Only the configured targets' backups are judged; any other target's (a removed target, another
deployment sharing the bucket and prefix) are kept and listed as `NOT OURS`. A manifest whose
timestamp is more than a day from the time in its file name is kept and flagged.

S3 (`{prefix}/{daily,weekly,monthly}/`) and the local tree (`local_root`) are both planned before
anything is deleted. Nothing is deleted at all, and the task fails and alerts, when this worker's
clock and S3's (its `Date` header) differ by more than `retention.max_future_skew_minutes`, when a
configured target's newest verified backup in S3 is older than `monitor_max_backup_age_hours`, when
the S3 listing has none of the targets' backups, a backup is dated in the future, or a real run
would delete more than `max_delete_fraction` of a listing. An empty local tree is fine (a worker
without local copies).

**Params**: `dry_run` (default true: report only). `max_delete_fraction` (default: the config's
`retention.max_delete_fraction`, 0.5): raise it once, after reading the dry-run report, for the first
cleanup of a long backlog. `targets` (default: the configured targets): name others, e.g. a removed
target, to prune theirs. The report (one line per backup, with its reason) is in the task log; the
XCom holds the counts and the keys deleted (or that a real run would delete); Slack gets a summary.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import Param
from pg_dataops.airflow.dag_defaults import standard_dag
from pg_dataops.common.config import load_config
from pg_dataops.retention.operators import ApplyRetentionOperator

CFG = load_config()

with standard_dag(
    "pg_backup_retention",
    description="GFS retention of backups in S3 and the local tree; dry run by default",
    schedule=None,
    cfg=CFG,
    dagrun_timeout=dt.timedelta(hours=2),
    render_template_as_native_obj=True,  # params reach the operator as bool / float / None, not text
    params={
        "dry_run": Param(
            True,
            type="boolean",
            title="Dry run",
            description="Only report what would be deleted (the report is in the task log). "
                        "Untick to delete.",
        ),
        "max_delete_fraction": Param(
            None,
            type=["null", "number"],
            exclusiveMinimum=0,
            maximum=1,
            title="Max delete fraction (this run only)",
            description=f"Empty: the config's retention.max_delete_fraction ({CFG.retention.max_delete_fraction}). "
                        "Needed once, for the first run on a long backlog, after reading the dry-run report "
                        "(it names the value the plan needs).",
        ),
        "targets": Param(
            None,
            type=["null", "array"],
            items={"type": "string", "pattern": "^[a-z][a-z0-9_]*$"},
            title="Targets (this run only)",
            description=f"Empty: the configured targets ({', '.join(CFG.target_names)}); other targets' backups "
                        "are kept. One name per line to prune other targets, e.g. one removed from the config.",
        ),
    },
    tags=["backup", "postgres", "glimpse", "retention"],
    doc_md=__doc__,
) as dag:
    ApplyRetentionOperator(
        task_id="apply_retention",
        dry_run="{{ params.dry_run }}",
        max_delete_fraction="{{ params.max_delete_fraction }}",
        targets="{{ params.targets }}",
    )
