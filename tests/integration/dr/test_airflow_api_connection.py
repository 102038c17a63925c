"""pg_failover's "point every DAG at the new primary" step against a real Airflow api-server (3.3, simple auth
manager, the test's own SQLite metadata DB): the target's connection, created through the REST API as in Admin >
Connections, has its host and port changed and nothing else; a rerun sends no PATCH; a connection that lives in
an AIRFLOW_CONN_* variable, a wrong password and a user without the right to edit connections fail naming the
cause, with no secret in the message."""

from __future__ import annotations

import json
import shutil
import sqlite3
import time

import devstack
import pytest
from pg_dataops.dr import repoint
from pg_dataops.dr.repoint import AirflowApi, RepointError

pytestmark = pytest.mark.integration

USER, PASSWORD = "failover", "failover-test-pw-7"  # not a word that appears elsewhere in messages
DB_PASSWORD = "glimpse-db-pw-4711"
ENV_ONLY = json.dumps({"conn_type": "postgres", "host": "db-primary.internal", "port": 5432, "login": "glimpse",
                       "password": DB_PASSWORD, "schema": "glimpse"})


@pytest.fixture(scope="module")
def airflow(_migrated_airflow, tmp_path_factory):
    """One api-server on a copy of the migrated metadata DB; users ``failover`` (admin) and ``reader`` (viewer),
    connection ``glimpse_env_only`` defined only as an AIRFLOW_CONN_ variable."""
    home = tmp_path_factory.mktemp("airflow-repoint")
    shutil.copy(f"{_migrated_airflow}/airflow.db", home / "airflow.db")
    services = devstack.AirflowServices(devstack.airflow_env(home, conns={"glimpse_env_only": ENV_ONLY}),
                                        components=("api-server",), username=USER, password=PASSWORD)
    # the simple auth manager makes up the reader's password at start-up and writes it beside ours
    services.env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"] = f"{USER}:admin,reader:viewer"
    started = time.monotonic()
    services.start()
    print(f"\n[timing] api-server up in {time.monotonic() - started:.1f} s")
    try:
        yield services
    finally:
        services.stop()


def stored_password(airflow, conn_id: str) -> str | None:
    """The password as stored in the metadata DB (plain: the test's Airflow has no Fernet key), which the API
    only ever shows masked."""
    with sqlite3.connect(f"file:{airflow.home / 'airflow.db'}?mode=ro", uri=True) as db:
        return db.execute("SELECT password FROM connection WHERE conn_id = ?", (conn_id,)).fetchone()[0]


def patches(airflow) -> int:
    return airflow.api("GET", "eventLogs?event=patch_connection")["total_entries"]


def test_the_connection_follows_the_new_primary(airflow):
    airflow.api("POST", "connections", {
        "connection_id": "glimpse_db", "conn_type": "postgres", "host": "db-primary.internal", "port": 5432,
        "login": "glimpse", "password": DB_PASSWORD, "schema": "glimpse",
        "extra": json.dumps({"sslmode": "require", "connect_timeout": "10"})})
    shown_before = airflow.api("GET", "connections/glimpse_db")
    assert stored_password(airflow, "glimpse_db") == DB_PASSWORD
    api = AirflowApi(airflow.url + "/", USER, PASSWORD)

    result = repoint.point_connection(api, "glimpse_db", "db-standby.internal", 5433)
    assert result == {"conn_id": "glimpse_db", "changed": True,
                      "before": {"host": "db-primary.internal", "port": 5432},
                      "after": {"host": "db-standby.internal", "port": 5433}}
    shown = airflow.api("GET", "connections/glimpse_db")
    assert shown == {**shown_before, "host": "db-standby.internal", "port": 5433}  # login, schema, extra as they were
    assert stored_password(airflow, "glimpse_db") == DB_PASSWORD  # the API masks it; the PATCH left it alone
    assert patches(airflow) == 1

    # a rerun: already pointing there, no PATCH
    again = repoint.point_connection(api, "glimpse_db", "db-standby.internal", 5433)
    assert again == {"conn_id": "glimpse_db", "changed": False,
                     "before": {"host": "db-standby.internal", "port": 5433},
                     "after": {"host": "db-standby.internal", "port": 5433}}
    assert patches(airflow) == 1
    assert api.get_connection("no_such_connection") is None
    assert repr(api) == f"AirflowApi(base_url={airflow.url!r}, username='failover')"  # no password, no token
    assert api.token() not in repr(api)


def test_a_connection_from_an_environment_variable_cannot_be_changed_through_the_api(airflow):
    api = AirflowApi(airflow.url, USER, PASSWORD)
    with pytest.raises(RepointError) as err:
        repoint.point_connection(api, "glimpse_env_only", "db-standby.internal", 5433)
    assert str(err.value) == (
        "Airflow connection 'glimpse_env_only' is not in Airflow's metadata database (the REST API answers 404): it "
        "is defined by the environment variable AIRFLOW_CONN_GLIMPSE_ENV_ONLY or a secrets backend, which the API "
        "cannot change. Update it there (host db-standby.internal, port 5433) on every Airflow component and restart "
        "them, or move it to Admin > Connections so that pg_failover can repoint it")


def test_wrong_password_and_missing_rights_name_the_cause_without_secrets(airflow):
    wrong = AirflowApi(airflow.url, USER, "not-the-password-99")
    with pytest.raises(RepointError) as err:
        repoint.point_connection(wrong, "glimpse_db", "db-standby.internal", 5433)
    assert str(err.value) == (f"Airflow API at {airflow.url} refused the credentials of user 'failover' (HTTP 401): "
                              "check the login and password of the Airflow API connection "
                              "(dr.failover.airflow_api_conn_id)")
    assert "not-the-password-99" not in repr(wrong)

    passwords = json.loads((airflow.home / "simple_auth_manager_passwords.json.generated").read_text())
    reader = AirflowApi(airflow.url, "reader", passwords["reader"])
    with pytest.raises(RepointError) as err:
        repoint.point_connection(reader, "glimpse_db", "db-other.internal", 5434)
    assert str(err.value) == (f"Airflow API at {airflow.url}: GET /api/v2/connections/glimpse_db: HTTP 403: "
                              '{"detail":"Forbidden"} (user \'reader\' needs the permission to read and edit '
                              "connections)")
    assert reader.token() not in str(err.value)
