"""Browser tests' fixtures: ONE real Airflow (api-server, scheduler, dag-processor) for the module, the session's
servers behind it, a damaged copy of the demo database whose real backup is in the module's bucket and in the
catalog, and Debian's chromium driven by Playwright (never Playwright's own browser download).

Screenshots of every step go to ``$PYTEST_ARTIFACTS/browser`` when that is set, else ``tests/browser/artifacts``
(git-ignored); the folder is emptied when the module starts, so it always holds the last run's pictures.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import uuid
import zoneinfo
from dataclasses import dataclass, field
from pathlib import Path

import devstack
import psycopg
import pytest
from pg_dataops.backup import steps as backup
from pg_dataops.common.config import load_config
from playwright.sync_api import expect

from tests.support.pg import table_digests

# Debian's chromium package (`make deps` installs it); /usr/bin/chromium is a shell wrapper around this binary.
CHROMIUM = Path("/usr/lib/chromium/chromium")
DB = "browser_glimpse"  # the damaged copy of the demo database (the target's connection database)
TABLE = "public.likes"
DELETED, CHANGED = 40, 25
ARTIFACTS = Path(os.environ["PYTEST_ARTIFACTS"]) / "browser" if os.environ.get("PYTEST_ARTIFACTS") else \
    Path(__file__).parent / "artifacts"
# A cron tick that does not come before 2028: pg_backup unpaused by the trigger form makes no scheduled run
# of its own (catchup is off, but the newest past tick would run), so the module's runs are the form's only.
NO_SCHEDULED_RUN = "0 2 29 2 *"
# The longest a step may take on a busy 2-vCPU machine (the api-server shares the cores with the scheduler and
# the task processes); each wait ends as soon as its condition holds.
UI_TIMEOUT_MS = 60_000
expect.set_options(timeout=UI_TIMEOUT_MS)


@dataclass
class Seed:
    """What the fixture made: the backup in S3 and the catalog, and the table's digests around the damage."""

    bucket: str
    backup_date: str  # YYYYMMDD in the configured time zone: what a person types into the form
    file: str
    s3_key: str
    before_damage: tuple[int, str]
    damaged: tuple[int, str]


@dataclass
class Stack:
    airflow: devstack.AirflowServices
    seed: Seed
    cluster: object = field(repr=False)

    @property
    def url(self) -> str:
        return self.airflow.url


def pg(cluster, dbname: str) -> psycopg.Connection:
    return psycopg.connect(host="127.0.0.1", port=cluster.port, user="postgres", password=cluster.password,
                           dbname=dbname, autocommit=True)


def seed_backup(cluster, s3, bucket: str, local_root: Path, moment: dt.datetime) -> dict:
    """A real pg_dump of ``DB`` in ``bucket`` (checksum, manifest, verified) and its backup_logs row, through the
    same steps pg_backup runs; the catalog row as pg_backup's record step writes it."""
    cfg = load_config(environ={"PGBACKUP_BUCKET": bucket, "PGBACKUP_LOCAL_ROOT": str(local_root),
                               "PGBACKUP_MULTIPART_CHUNK_MB": "5"})
    client = s3.client()
    dump = backup.dump_step(cfg, cfg.target("glimpse"), cluster.conn(DB), "daily", moment)
    upload = backup.upload_step(client, cfg, dump, backup.checksum_step(dump))
    doc = backup.manifest_step(client, cfg, dump, upload, {"verified": True}, "pg_backup", "seed__browser")
    row = backup.catalog_row(target="glimpse", tier="daily", moment=moment, dump=dump, upload=upload, doc=doc,
                             error=None, failed_step=None, bucket=bucket, dag_id="pg_backup", run_id="seed__browser")
    row["backup_date"] = moment.isoformat()  # the dump stands for last night's: its row says so, as its name does
    with pg(cluster, "catalog") as c:
        backup.record_step(c, row)
    return {"file": dump["file"], "key": upload["key"], "timezone": cfg.timezone}


@pytest.fixture(scope="module")
def artifacts() -> Path:
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True)
    return ARTIFACTS


@pytest.fixture(scope="module")
def stack(_migrated_airflow, cluster, s3, receiver, tmp_path_factory):
    """The module's one Airflow on a copy of the migrated metadata DB, its connections the session's servers
    (glimpse_db = the damaged copy ``DB``), and the seeded backup; everything made here goes afterwards."""
    base = tmp_path_factory.mktemp("browser")
    home = base / "airflow"
    home.mkdir()
    shutil.copy(Path(_migrated_airflow) / "airflow.db", home / "airflow.db")
    bucket = f"test-browser-{uuid.uuid4().hex[:8]}"
    s3.client().create_bucket(Bucket=bucket)
    # The catalog holds exactly this module's backups: the page and the runs read no other test's rows.
    cluster.psql("-c", "DROP TABLE IF EXISTS backup_logs CASCADE", dbname="catalog")
    cluster.dropdb(DB)
    cluster.createdb(DB)
    airflow = None
    try:
        cluster.load_demo(DB, 300)
        timezone = load_config().timezone
        # Yesterday's 02:00 nightly backup: the form's backup_date names it alone (pg_backup's run is today's).
        local_now = dt.datetime.now(zoneinfo.ZoneInfo(timezone))
        moment = (local_now - dt.timedelta(days=1)).replace(hour=2, minute=0, second=0, microsecond=0)
        made = seed_backup(cluster, s3, bucket, base / "seed", moment)
        before = table_digests(cluster, DB)[TABLE]
        with pg(cluster, DB) as c:
            c.execute("DELETE FROM public.likes WHERE id IN (SELECT id FROM public.likes ORDER BY id LIMIT %s)",
                      (DELETED,))
            c.execute("UPDATE public.likes SET is_super = NOT is_super, updated_at = now() "
                      "WHERE id IN (SELECT id FROM public.likes ORDER BY id DESC LIMIT %s)", (CHANGED,))
        seed = Seed(bucket=bucket, backup_date=f"{moment:%Y%m%d}", file=made["file"], s3_key=made["key"],
                    before_damage=before, damaged=table_digests(cluster, DB)[TABLE])
        env = devstack.airflow_env(home, conns={
            "glimpse_db": cluster.airflow_conn(DB),
            "backup_s3": s3.airflow_conn(),
            "slack_backup": receiver.slack_conn(),
            "pagerduty_backup": receiver.pagerduty_conn(),
            "backup_catalog": cluster.airflow_conn("catalog"),
        }, extra={
            "PGBACKUP_LOCAL_ROOT": str(base / "backups"),
            "PGBACKUP_BUCKET": bucket,
            "PGBACKUP_RETRIES": "0",
            "PGBACKUP_CATALOG_CONN_ID": "backup_catalog",
            "PGBACKUP_MULTIPART_CHUNK_MB": "5",
            "PGBACKUP_SCHEDULE": NO_SCHEDULED_RUN,
        })
        airflow = devstack.AirflowServices(env)
        airflow.start()
        for dag_id in ("pg_backup", "pg_table_restore"):
            airflow.wait_for_dag(dag_id)
        yield Stack(airflow=airflow, seed=seed, cluster=cluster)
    finally:
        if airflow is not None:
            airflow.stop()
        with pg(cluster, "postgres") as c:  # the copy and any database a run left (e.g. a verify scratch)
            made_dbs = [r[0] for r in c.execute("SELECT datname FROM pg_database WHERE datname LIKE %s",
                                                (DB + "%",))]
        for name in made_dbs:
            cluster.dropdb(name)
        with pg(cluster, "catalog") as c:  # what this module's runs wrote in the shared catalog
            c.execute("DROP TABLE IF EXISTS backup_logs CASCADE")
            if c.execute("SELECT to_regclass('public.restore_logs') IS NOT NULL").fetchone()[0]:
                c.execute("DELETE FROM restore_logs WHERE database_name = %s", (DB,))


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: `make deps` installs Debian's chromium package")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


def new_context(browser, stack: Stack):
    context = browser.new_context(viewport={"width": 1400, "height": 900}, base_url=stack.url,
                                  timezone_id="UTC", locale="en-US")
    context.set_default_timeout(UI_TIMEOUT_MS)
    return context


def sign_in(page, username: str = "admin", password: str = "admin") -> None:
    """Sign in through the login form as a person does; lands on the page the login was asked from."""
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()


@pytest.fixture(scope="module")
def signed_in(browser, stack):
    """A browser context signed in through the login form (the UI's `_token` cookie), for the tests after login."""
    context = new_context(browser, stack)
    page = context.new_page()
    page.goto("/auth/login")
    sign_in(page)
    page.wait_for_url(f"{stack.url}/")  # the home page: the cookie is set
    page.close()
    try:
        yield context
    finally:
        context.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.when == "call":
        item.browser_failed = report.failed  # read by `page`: a failed test leaves the page it failed on
    return report


@pytest.fixture
def page(signed_in, shot, request):
    p = signed_in.new_page()
    yield p
    if getattr(request.node, "browser_failed", False):
        shot(p, "FAILED")
    p.close()


@pytest.fixture
def shot(artifacts, request):
    """shot(page, "what"): a full-page screenshot named after the test and the step, in the artifacts folder."""
    count = 0
    name = request.node.name.removeprefix("test_")[:60]

    def take(page, what: str) -> Path:
        nonlocal count
        count += 1
        path = artifacts / f"{name}-{count:02d}-{what}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return take
