"""The Backups page's web app (FastAPI), mounted by the Airflow plugin in ``plugins/pg_dataops_ui.py``.

``GET /`` is the page (:func:`pg_dataops.observe.backups_page.render`), ``GET /data.json`` the same facts as
JSON (:func:`~pg_dataops.observe.backups_page.collect`). Airflow does not protect a plugin's routes: every route
here depends on Airflow's own :func:`~airflow.api_fastapi.core_api.security.get_user`, which takes the
``Authorization: Bearer`` token (API clients) or the UI's ``_token`` session cookie (the browser, also inside
the UI's iframe) and answers 401 without either, 401 for an expired token and 403 for an invalid one.

The inputs come from the Airflow connections exactly as the DAGs get them (:mod:`pg_dataops.airflow.base`):
the catalog's (``catalog_conn_id``), S3's (``s3_conn_id``), and for targets with a standby (``dr.standbys``)
the primary's and the standby's, probed with :mod:`pg_dataops.dr.replication` as pg_replication_check does.
The page only reads. What cannot be read (a server down, a bucket missing, a connection not defined) is
shown in its section; a configuration that cannot be loaded at all gets a short error page, never a
traceback.

Only the api-server imports this module (the plugin imports it on first use of ``fastapi_apps``).
"""

from __future__ import annotations

import datetime as dt
import html
import logging
from typing import Any

from airflow.api_fastapi.core_api.security import get_user
from fastapi import Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse

log = logging.getLogger(__name__)

# The page has no script and loads nothing: forbid both, so even a value that escaped escaping could not
# run; only the UI (same origin) may frame it.
HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
                               "base-uri 'none'; form-action 'none'; frame-ancestors 'self'",
    "X-Content-Type-Options": "nosniff",
}

app = FastAPI(
    title="pg_dataops backups",
    description="The Backups page of the Airflow UI (read-only). Every route needs an authenticated Airflow user.",
    dependencies=[Depends(get_user)],
    docs_url=None, redoc_url=None, openapi_url=None,  # no unauthenticated schema pages
)


class _Unavailable:
    """Stands in for a client whose Airflow connection could not be fetched: every use raises that error,
    so the page's sections that need it say why, and the others still show."""

    def __init__(self, error: Exception):
        self._error = error

    def __getattr__(self, name: str):
        raise type(self._error)(*self._error.args) from None  # a fresh one: raising the same object grows its traceback


def gather(now: dt.datetime | None = None) -> dict[str, Any]:
    """What the page shows now, from the Airflow connections (:func:`pg_dataops.observe.backups_page.collect`)."""
    from pg_dataops.airflow.base import load_config, pg_conn, s3_client
    from pg_dataops.common.config import ConfigError
    from pg_dataops.common.errors import BackupError
    from pg_dataops.observe import backups_page

    cfg = load_config()
    try:
        # collect connects to it itself: read-only, with a page's short timeouts.
        catalog: Any = pg_conn(cfg.catalog_conn_id, None, "backup catalog", cfg=cfg)
    except (BackupError, ConfigError) as exc:
        catalog = _Unavailable(exc)
    try:
        client: Any = s3_client(cfg.s3_conn_id)
    except (BackupError, ConfigError) as exc:
        client = _Unavailable(exc)

    def replication(target: str) -> dict[str, Any]:
        # Built per call: a missing standby connection is this target's replication error, not the page's.
        standby = cfg.dr.standby(target)
        primary = cfg.target(target)
        return backups_page.read_replication(
            cfg, target,
            pg_conn(primary.conn_id, primary.database, f"replication of {target} (primary)", cfg=cfg),
            pg_conn(standby.conn_id, None, f"replication of {target} (standby {standby.name})", cfg=cfg))

    return backups_page.collect(cfg, catalog=catalog, s3_client=client, now=now or dt.datetime.now(dt.UTC),
                                replication=replication)


def _failure(exc: Exception) -> str:
    """One line for a failure before any section could be read (the config); secrets redacted."""
    from pg_dataops.common.errors import redact

    return " ".join(redact(f"{type(exc).__name__}: {exc}").split())[:1000]


def _ui_base(request: Request) -> str:
    """The UI's path prefix (the path of AIRFLOW__API__BASE_URL, "" at the root), for links to runs and DAGs:
    the api-server's root path, which Starlette keeps for mounted apps."""
    return request.base_url.path.rstrip("/")


# Plain `def` routes: FastAPI runs them in its thread pool, so the page's blocking reads (catalog, S3,
# standbys) never hold up the api-server's event loop.
@app.get("/", response_class=HTMLResponse)
def page(request: Request) -> HTMLResponse:
    from pg_dataops.observe import backups_page

    try:
        data = gather()
    except Exception as exc:  # the config itself: the page says what is wrong instead of a 500
        log.warning("Backups page: %s", _failure(exc), exc_info=True)
        return HTMLResponse(ERROR_PAGE.format(error=html.escape(_failure(exc))), status_code=503, headers=HEADERS)
    return HTMLResponse(backups_page.render(data, ui_base=_ui_base(request)), headers=HEADERS)


@app.get("/data.json")
def data() -> JSONResponse:
    try:
        facts = gather()
    except Exception as exc:  # as for the page
        log.warning("Backups page data: %s", _failure(exc), exc_info=True)
        return JSONResponse({"error": _failure(exc)}, status_code=503, headers=HEADERS)
    return JSONResponse(facts, headers=HEADERS)


ERROR_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Backups</title>
<style>body{{font-family:system-ui,sans-serif;margin:2rem;color:#1a202c}}.error{{color:#9b2c2c}}</style>
</head><body><h1>Backups</h1><p class="error" id="page-error">The page could not be built: {error}</p>
<p>Check the configuration (include/config/pgbackup.yaml, PGBACKUP_* variables) and reload.</p></body></html>
"""
