"""Thin Airflow operator over ``pg_dataops.catalog.rebuild``: S3 client and catalog connection, then the core.

The core modules are imported in ``run_step``: the DAG file only needs the class, so it parses fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pg_dataops.airflow.base import StepOperator, catalog_connection, s3_client
from pg_dataops.common.config import Config

if TYPE_CHECKING:
    from airflow.sdk import Context


class RebuildCatalogOperator(StepOperator):
    """Upserts one backup_logs row per manifest under ``{prefix}/{tier}/`` into ``catalog_conn_id``.

    Unreadable or inconsistent manifests are skipped and listed (in the log and the returned XCom);
    finding no manifest at all fails the task at once (``NoManifestsFound``, a permanent error: a wrong
    bucket or prefix), writing nothing.
    """

    ui_color = "#e0f0e0"

    def run_step(self, cfg: Config, context: Context) -> dict:
        from pg_dataops.catalog import rebuild

        client = s3_client(cfg.s3_conn_id)
        pg = catalog_connection(cfg)
        try:
            result = rebuild.rebuild_catalog(client, cfg.bucket, cfg.prefix, pg)
        finally:
            pg.close()
        self.log.info("rebuilt backup_logs in %s from s3://%s/%s: %s manifests, %s rows (%s SUCCESS, %s FAILED), "
                      "%s skipped", cfg.catalog_conn_id, cfg.bucket, cfg.prefix, result.manifests, result.recorded,
                      result.success, result.failed, len(result.skipped))
        for s in result.skipped:
            self.log.warning("skipped s3://%s/%s: %s", cfg.bucket, s["key"], s["reason"])
        for d in result.dump_problems:
            self.log.warning("recorded FAILED for s3://%s/%s: %s", cfg.bucket, d["key"], d["problem"])
        return result.to_dict()
