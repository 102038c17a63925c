"""Shared fixtures: real servers, started here (CI starts nothing for us).

- ``cluster``: a PostgreSQL 15 cluster from initdb with the Glimpse demo database loaded.
- ``s3``: moto in server mode (real HTTP); ``bucket`` is a fresh bucket per test.
- ``receiver``: an HTTP server recording Slack and PagerDuty posts.
- ``airflow_home``: an isolated Airflow with a migrated SQLite metadata DB (copied per test).
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import devstack
import pytest

DEMO_USERS = 3000
MEASURED: list[str] = []  # lines for the report's "measured" section (failover time, rows lost, ...)  # a few MB: enough rows in every table, multipart uploads at -Z0 with 5 MB parts


@pytest.fixture(scope="session")
def cluster():
    c = devstack.LocalCluster().start()
    try:
        c.createdb("glimpse")
        c.load_demo("glimpse", DEMO_USERS)
        c.createdb("catalog")
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="session")
def s3():
    server = devstack.MotoS3().start()
    yield server
    server.stop()


@pytest.fixture
def bucket(s3):
    name = f"test-{uuid.uuid4().hex[:12]}"
    s3.client().create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="session")
def receiver():
    r = devstack.Receiver().start()
    yield r
    r.stop()


@pytest.fixture(scope="session")
def _migrated_airflow(tmp_path_factory):
    home = tmp_path_factory.mktemp("airflow-template")
    devstack.migrate(devstack.airflow_env(home, conns={}))
    return home


@pytest.fixture
def airflow_home(_migrated_airflow, tmp_path):
    """A private Airflow home whose metadata DB is a copy of the migrated template."""
    home = tmp_path / "airflow"
    home.mkdir()
    shutil.copy(Path(_migrated_airflow) / "airflow.db", home / "airflow.db")
    return home


@pytest.fixture
def measured():
    """``measured(line)``: a figure a test measured, printed in the test report's "measured" section (speed
    targets are judged by `make bench`; these are the drills' own figures, e.g. the failover time)."""
    return MEASURED.append


def pytest_terminal_summary(terminalreporter):
    if MEASURED:
        terminalreporter.section("measured")
        for line in MEASURED:
            terminalreporter.write_line(line)
