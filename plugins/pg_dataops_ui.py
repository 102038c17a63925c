"""Airflow plugin: the Backups page in the Airflow UI (Browse > Backups).

Every Airflow component loads this file, so it imports nothing heavy: the web app
(``pg_dataops.airflow.backups_app``: FastAPI, Airflow's auth, the page's readers) is imported only when the
api-server asks for ``fastapi_apps``. The page is mounted at ``/pg-backups/`` (needs an Airflow login or
API token) and shown inside the UI at ``/plugin/backups``.
"""

from __future__ import annotations

from airflow.sdk.plugins_manager import AirflowPlugin

URL_PREFIX = "/pg-backups"


class PgDataopsUiPlugin(AirflowPlugin):
    name = "pg_dataops_ui"
    external_views = [
        {
            "name": "Backups",
            "href": URL_PREFIX + "/",
            "url_route": "backups",  # shown in the UI's frame at /plugin/backups
            "destination": "nav",
            "category": "browse",
        },
    ]

    @property
    def fastapi_apps(self) -> list[dict]:  # type: ignore[override]  # a property: the app loads on first use
        from pg_dataops.airflow.backups_app import app

        return [{"app": app, "url_prefix": URL_PREFIX, "name": "pg_dataops backups"}]
