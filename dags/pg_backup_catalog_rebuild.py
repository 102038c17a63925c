"""
### pg_backup_catalog_rebuild: backup_logs rebuilt from the manifests in S3

Manual only, for when the catalog database (`catalog_conn_id`; by default the target itself) was lost
or restored from an older backup. Reads every `.json` manifest under `{prefix}/{daily,weekly,monthly}/`
and upserts one `backup_logs` row per manifest: `SUCCESS` when the manifest says `verified`, else
`FAILED` ("verification failed or did not run (rebuilt from manifest)"), with the run's `dag_id` and
`run_id` from the manifest (or `rebuilt` and the manifest's key). Rows are keyed like pg_backup's own,
so a second run, or a run on a catalog that survived, changes nothing.

Manifests that cannot be parsed or contradict where they sit are skipped, never guessed at; the task
log and the XCom list each with its reason. No manifest at all fails the task (wrong bucket or prefix).
Runs that never uploaded anything leave no manifest and are not rebuilt. Without Airflow:
`python -m pg_dataops.catalog_rebuild --bucket ... --prefix ... --dsn-env VAR`.
"""

from __future__ import annotations

import datetime as dt

from pg_dataops.airflow.dag_defaults import standard_dag
from pg_dataops.catalog.operators import RebuildCatalogOperator
from pg_dataops.common.config import load_config

CFG = load_config()

with standard_dag(
    "pg_backup_catalog_rebuild",
    description="Rebuild the backup_logs catalog from the manifests in S3",
    schedule=None,
    cfg=CFG,
    dagrun_timeout=dt.timedelta(hours=2),
    tags=["backup", "postgres", "glimpse", "catalog"],
    doc_md=__doc__,
) as dag:
    RebuildCatalogOperator(task_id="rebuild_catalog")
