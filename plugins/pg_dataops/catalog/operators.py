"""Thin Airflow operator over ``pg_dataops.catalog.rebuild``: S3 client and catalog connection, then the core.

The core modules are imported in ``execute``: the DAG file only needs the class, so it parses fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

if TYPE_CHECKING:
    from airflow.sdk import Context


class RebuildCatalogOperator(BaseOperator):
    """Upserts one backup_logs row per manifest under ``{prefix}/{tier}/`` into ``catalog_conn_id``.

    Unreadable or inconsistent manifests are skipped and listed (in the log and the returned XCom);
    finding no manifest at all fails the task (a wrong bucket or prefix), writing nothing.
    """

    ui_color = "#e0f0e0"

    def execute(self, context: Context) -> dict:
        from pg_dataops.airflow.base import PERMANENT, pg_conn, s3_client
        from pg_dataops.catalog import rebuild
        from pg_dataops.common import pg as pgtools
        from pg_dataops.common.config import load_config

        try:
            cfg = load_config()
            client = s3_client(cfg.s3_conn_id)
            pg = pgtools.connect(pg_conn(cfg.catalog_conn_id, None, "backup catalog", cfg=cfg), autocommit=True)
            try:
                result = rebuild.rebuild_catalog(client, cfg.bucket, cfg.prefix, pg)
            finally:
                pg.close()
        except PERMANENT as exc:  # the one list of what retrying cannot fix (NoManifestsFound is one)
            raise AirflowFailException(str(exc)) from exc
        self.log.info("rebuilt backup_logs in %s from s3://%s/%s: %s manifests, %s rows (%s SUCCESS, %s FAILED), "
                      "%s skipped", cfg.catalog_conn_id, cfg.bucket, cfg.prefix, result.manifests, result.recorded,
                      result.success, result.failed, len(result.skipped))
        for s in result.skipped:
            self.log.warning("skipped s3://%s/%s: %s", cfg.bucket, s["key"], s["reason"])
        for d in result.dump_problems:
            self.log.warning("recorded FAILED for s3://%s/%s: %s", cfg.bucket, d["key"], d["problem"])
        return result.to_dict()
