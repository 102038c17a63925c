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


class CarryCatalogOperator(StepOperator):
    """Right after a swap (pg_full_recovery, pg_pitr_restore): when the catalog lives in the swapped database
    (``catalog_conn_id`` names the target's database, as the runbook and the default config have it), its rows
    are copied from the kept database into the new production one (``pg_dataops.catalog.carry``); otherwise
    nothing to do. ``swapped``: the swap's result (``swapped``, ``production``, ``old_database``)."""

    template_fields = ("target", "swapped")
    ui_color = "#e0f0e0"
    waiting_for = "the copy of the catalog tables into the new production database"

    def run_step(self, cfg: Config, context: Context) -> dict:
        from pg_dataops.airflow.base import pg_conn
        from pg_dataops.catalog import carry

        swapped = self.swapped or {}
        if not swapped.get("swapped") or not swapped.get("old_database"):
            return {"carried": False, "why": "the swap kept no database to carry the catalog from"}
        t = cfg.target(self.target)
        production = pg_conn(t.conn_id, t.database, f"target database of {self.target}", require_database=True,
                             cfg=cfg)
        catalog = pg_conn(cfg.catalog_conn_id, None, "backup catalog", cfg=cfg)
        if not carry.same_database(production, catalog):
            return {"carried": False, "why": f"the catalog is in {catalog.describe()}, not in the swapped database"}
        result = carry.carry_over(production.with_db(swapped["old_database"]), production)
        self.log.info("catalog carried from %s into %s: %s", result["from"], result["to"], result["rows"])
        return result
