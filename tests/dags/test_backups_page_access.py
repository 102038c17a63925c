"""The Backups page's access rule, on a real api-server: Airflow does not protect a plugin's routes, so the app
depends on Airflow's own get_user. Without a credential the page and its JSON answer 401, with a bad token 403;
with the API token (Bearer) or the UI's session cookie (`_token`, what the browser sends, also inside the UI's
frame) they answer 200 and show the catalog's backup. The plugin's nav entry is what the UI's navigation reads
(`GET /api/v2/plugins`). A catalog that cannot be reached and an S3 connection that is gone show in their
sections, with a 200 and no traceback."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from pathlib import Path

import devstack
import psycopg
import pytest
import requests
import yaml
from pg_dataops.catalog import backup_logs

pytestmark = pytest.mark.dagrun

REPO = Path(__file__).resolve().parents[2]
TARGET = "glimpse"  # the shipped config's one target
PATHS = ("/pg-backups/", "/pg-backups/data.json")
STANDBY = "glimpse-standby"


def api_conn(conn_id: str, conn_json: str) -> dict:
    """A devstack connection (Airflow's JSON form) as the REST API's body, to keep it in the metadata DB
    where the test can change it while the api-server runs."""
    c = json.loads(conn_json)
    body = {"connection_id": conn_id, "conn_type": c["conn_type"]}
    for key in ("host", "port", "login", "password", "schema"):
        if c.get(key) is not None:
            body[key] = c[key]
    if c.get("extra"):
        body["extra"] = json.dumps(c["extra"])
    return body


@pytest.fixture
def catalog_backup(cluster):
    """One verified daily backup of the target in a fresh backup_logs (each such test starts without one)."""
    run_id = f"manual__page-access-{uuid.uuid4().hex[:8]}"
    with psycopg.connect(host="127.0.0.1", port=cluster.port, user="postgres", password=cluster.password,
                         dbname="catalog", autocommit=True) as pg:
        pg.execute("DROP TABLE IF EXISTS backup_logs CASCADE")
        taken = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(hours=3)
        backup_logs.record(pg, {
            "backup_date": taken, "backup_type": "daily", "target": TARGET, "database_name": "glimpse",
            "file_name": "glimpse_access_test.dump", "file_size_bytes": 12_345_678, "checksum_sha256": "0" * 64,
            "duration_seconds": 42.5, "status": "SUCCESS", "error_message": None, "failed_step": None,
            "s3_bucket": "b", "s3_key": "database/daily/glimpse_access_test.dump", "s3_uploaded": True,
            "verified": True, "verified_at": taken + dt.timedelta(minutes=2), "dag_id": "pg_backup",
            "run_id": run_id})
    return {"run_id": run_id, "taken": taken}


def get(url: str, **kwargs) -> requests.Response:
    return requests.get(url, timeout=60, allow_redirects=False, **kwargs)


def test_backups_page_needs_an_airflow_user_and_shows_the_catalog(dag_env, cluster, s3, bucket, catalog_backup,
                                                                  tmp_path):
    # A standby configured for the target, whose connection is a server that is no standby (the session's
    # cluster itself): the page probes both servers the way pg_replication_check does and says what it found.
    raw = yaml.safe_load((REPO / "include" / "config" / "pgbackup.yaml").read_text())
    raw["dr"]["standbys"] = {TARGET: {"name": STANDBY, "conn_id": "glimpse_standby_db", "slot": "glimpse_standby"}}
    config = tmp_path / "pgbackup.yaml"
    config.write_text(yaml.safe_dump(raw))
    # The catalog and S3 connections live in the metadata DB (the REST API can change them below); the rest
    # come from the environment like every other DAG test's.
    env = dag_env(bucket=bucket, env={"PGBACKUP_CONFIG": str(config)},
                  conns={"backup_catalog": None, "backup_s3": None,
                         "glimpse_standby_db": cluster.airflow_conn("postgres")})
    airflow = devstack.AirflowServices(env, components=("api-server",))
    try:
        airflow.start()
        airflow.api("POST", "connections", api_conn("backup_catalog", cluster.airflow_conn("catalog")))
        airflow.api("POST", "connections", api_conn("backup_s3", s3.airflow_conn()))
        base, token = airflow.url, airflow.token()

        # No credential at all: get_user's "Not authenticated".
        for path in PATHS:
            resp = get(base + path)
            assert (resp.status_code, resp.json()) == (401, {"detail": "Not authenticated"}), path
        # A token the auth manager did not sign, as header and as cookie: "Invalid JWT token".
        for path in PATHS:
            resp = get(base + path, headers={"Authorization": "Bearer not-a-jwt"})
            assert (resp.status_code, resp.json()) == (403, {"detail": "Invalid JWT token"}), path
            resp = get(base + path, cookies={"_token": "not-a-jwt"})
            assert (resp.status_code, resp.json()) == (403, {"detail": "Invalid JWT token"}), path
        # The app serves no schema pages that would skip the check.
        assert get(base + "/pg-backups/openapi.json").status_code == 404

        # The API token (Bearer), then the UI's session cookie: the same page.
        for auth in ({"headers": {"Authorization": f"Bearer {token}"}}, {"cookies": {"_token": token}}):
            page = get(base + "/pg-backups/", **auth)
            assert page.status_code == 200, page.text[:2000]
            assert page.headers["content-type"] == "text/html; charset=utf-8"
            assert page.headers["cache-control"] == "no-store"
            assert "frame-ancestors 'self'" in page.headers["content-security-policy"]
            html = page.text
            assert f'id="target-{TARGET}"' in html
            row = html[html.index(f'<tr id="tier-{TARGET}-daily">'):]
            row = row[:row.index("</tr>")]
            assert "<td class=\"num\">11.8 MiB</td>" in row, row
            assert ">verified<" in row, row
            assert (f'<a href="/dags/pg_backup/runs/{catalog_backup["run_id"]}" target="_top">'
                    f'pg_backup / {catalog_backup["run_id"]}</a>') in row, row
            assert "Traceback" not in html

            facts = get(base + "/pg-backups/data.json", **auth)
            assert facts.status_code == 200, facts.text[:2000]
            data = facts.json()
            assert [t["name"] for t in data["targets"]] == [TARGET]
            daily = {e["tier"]: e for e in data["targets"][0]["newest"]["tiers"]}["daily"]["backup"]
            assert (daily["file_name"], daily["size_bytes"], daily["verified"], daily["run_id"]) == (
                "glimpse_access_test.dump", 12_345_678, True, catalog_backup["run_id"])
            assert dt.datetime.fromisoformat(daily["backup_date"]) == catalog_backup["taken"]
            assert data["location"] == f"s3://{bucket}/database"
            replication = data["targets"][0]["replication"]
            assert {k: replication[k] for k in ("configured", "standby", "slot")} == {
                "configured": True, "standby": STANDBY, "slot": "glimpse_standby"}
            facts = replication["facts"]
            assert (facts["state"], facts["slot_exists"], facts["lag_seconds"], facts["errors"]) == (
                "standby not in recovery (promoted?)", False, None, []), facts
            assert ("<dt>State</dt><dd>standby not in recovery (promoted?)</dd>"
                    '<dt>Replay lag</dt><dd><span class="warn">not measured</span></dd>') in html

        # The nav entry: the UI's navigation reads GET /api/v2/plugins.
        plugins = {p["name"]: p for p in airflow.api("GET", "plugins")["plugins"]}
        ours = plugins["pg_dataops_ui"]
        assert ours["external_views"] == [{"name": "Backups", "href": "/pg-backups/", "url_route": "backups",
                                           "destination": "nav", "category": "browse", "icon": None,
                                           "icon_dark_mode": None, "nav_top_level": False}]
        assert ours["fastapi_apps"] == [{"app": "fastapi.applications.FastAPI", "url_prefix": "/pg-backups",
                                         "name": "pg_dataops backups"}]
        assert airflow.api("GET", "plugins/importErrors")["import_errors"] == []

        # The catalog's server refuses connections, and the S3 connection is deleted: both say so in their
        # sections; the page still answers.
        dead = devstack.free_port()
        airflow.api("PATCH", "connections/backup_catalog",
                    {**api_conn("backup_catalog", cluster.airflow_conn("catalog")), "port": dead})
        airflow.api("DELETE", "connections/backup_s3", ok=(204,))
        page = get(base + "/pg-backups/", headers={"Authorization": f"Bearer {token}"})
        assert page.status_code == 200, page.text[:2000]
        assert "Traceback" not in page.text
        assert f"127.0.0.1:{dead}" in page.text or f"port {dead}" in page.text, page.text[:3000]
        data = get(base + "/pg-backups/data.json", headers={"Authorization": f"Bearer {token}"}).json()
        target = data["targets"][0]
        assert target["newest"]["error"].startswith("catalog: "), target["newest"]
        assert cluster.password not in json.dumps(data)
        missing = ("Airflow connection 'backup_s3' (S3 backup storage) is not defined: add it in Admin > "
                   "Connections or as AIRFLOW_CONN_BACKUP_S3")
        assert missing in target["pitr"]["error"], target["pitr"]
    finally:
        airflow.stop()
