"""The Airflow UI as a person uses it, in Debian's chromium driven by Playwright, against one real Airflow
(api-server, scheduler, dag-processor) with the session's PostgreSQL, moto S3 and Slack/PagerDuty receiver
behind it: sign in; start pg_backup from its trigger form (the tier picked in the list); start
pg_table_restore from its form (text fields, the mode list, the cascade switch left off, the approval
timeout), approve it in Required Actions after reading the preview, and find the table restored; find the
backups on the Backups page. The REST API and PostgreSQL are the judges of what happened; the screenshots
(see conftest.py for where) show each step.

The tests run in file order and share the Airflow (one start-up for the module): the Backups page test
expects pg_backup's run to have happened, when it ran."""

from __future__ import annotations

import re

import devstack
import psycopg
import pytest
from playwright.sync_api import expect

from tests.support.hitl import WAIT_SECONDS, Run
from tests.support.pg import table_digests

from .conftest import CHANGED, DB, DELETED, TABLE, new_context, sign_in

pytestmark = pytest.mark.browser

RUNS: dict[str, str] = {}  # dag_id -> run_id of the run a test started from the UI
BACKUP_RUN_SECONDS = 300  # pg_backup: dump, upload, restore test in a scratch database, on a busy 2-vCPU machine


def trigger_from_form(page, dag_id: str, fill, shot) -> dict:
    """Open the DAG's page, click Trigger, let ``fill(dialog)`` fill the form, submit; the run the UI created
    (the REST answer the form got)."""
    page.goto(f"/dags/{dag_id}")
    page.get_by_test_id("trigger-dag-button").click()
    dialog = page.get_by_role("dialog")
    expect(dialog.get_by_text(f"Trigger Dag - {dag_id}")).to_be_visible()
    expect(dialog.get_by_text("Run Parameters")).to_be_visible()
    fill(dialog)
    shot(page, "form-filled")
    submit = dialog.get_by_test_id("trigger-dag-submit")
    # Airflow 3.3's form keeps Trigger disabled while a param whose type does not allow null is empty ("").
    expect(submit, f"{dag_id}'s Trigger button stays disabled: an optional param left empty needs "
                   "type=[\"null\", \"string\"]").to_be_enabled()
    with page.expect_response(lambda r: r.request.method == "POST"
                              and r.url.endswith(f"/api/v2/dags/{dag_id}/dagRuns")) as answer:
        submit.click()
    assert answer.value.status == 200, answer.value.text()
    expect(page.get_by_text("Dag Run Triggered").first).to_be_visible()  # a toast (drawn twice while it slides in)
    shot(page, "triggered")
    return answer.value.json()


def run_state(airflow, dag_id: str, run_id: str) -> str:
    return Run(airflow, run_id, dag_id=dag_id, gate="").state()


def open_from_browse_menu(page, item: str) -> None:
    """The nav's Browse menu, then one of its entries (Required Actions, and the plugin's Backups)."""
    page.get_by_role("button", name="Browse").click()
    page.get_by_role("menuitem", name=item).click()


def test_sign_in_lands_on_the_home_page(browser, stack, shot):
    context = new_context(browser, stack)
    try:
        page = context.new_page()
        page.goto("/auth/login")
        expect(page.get_by_text("Sign into Airflow")).to_be_visible()
        expect(page.get_by_role("button", name="Sign in")).to_be_disabled()  # nothing typed yet
        page.get_by_label("Username").fill("admin")
        page.get_by_label("Password").fill("admin")
        shot(page, "login-form")
        sign_in(page)
        page.wait_for_url(f"{stack.url}/")
        expect(page.get_by_role("heading", name="Welcome")).to_be_visible()
        expect(page.get_by_test_id("nav-home-link")).to_be_visible()
        assert [c["name"] for c in context.cookies()] == ["_token"]  # the UI's session: the JWT cookie
        shot(page, "home")
    finally:
        context.close()


def test_pg_backup_started_from_its_trigger_form_runs_green(page, stack, shot):
    def fill(dialog):
        tier = dialog.get_by_label("Backup tier")
        expect(tier).to_be_visible()
        tier.click()  # a searchable list: the options show under it
        expect(page.get_by_role("option")).to_have_text(["auto", "daily", "weekly", "monthly"])
        page.get_by_role("option", name="weekly", exact=True).click()
        expect(dialog.locator("#element_tier")).to_contain_text("weekly")

    run = trigger_from_form(page, "pg_backup", fill, shot)
    assert run["conf"] == {"tier": "weekly"} and run["triggered_by"] == "ui", run
    assert run["triggering_user_name"] == "admin", run
    run_id = RUNS["pg_backup"] = run["dag_run_id"]

    airflow = stack.airflow
    assert devstack.wait_for(lambda: run_state(airflow, "pg_backup", run_id) in ("success", "failed"),
                             timeout=BACKUP_RUN_SECONDS, interval=2), run_state(airflow, "pg_backup", run_id)
    assert run_state(airflow, "pg_backup", run_id) == "success"
    page.reload()
    expect(page.get_by_test_id("state-badge").first).to_have_text("Success")  # the run's header
    shot(page, "run-green")
    # The tier picked in the form is the tier of the backup the run made and catalogued.
    with psycopg.connect(host="127.0.0.1", port=stack.cluster.port, user="postgres",
                         password=stack.cluster.password, dbname="catalog") as c:
        rows = c.execute("SELECT backup_type, status, verified, s3_uploaded, target FROM backup_logs "
                         "WHERE run_id = %s", (run_id,)).fetchall()
    assert rows == [("weekly", "SUCCESS", True, True, "glimpse")], rows


def test_table_restore_from_the_form_approved_in_required_actions(page, stack, shot):
    seed, airflow, cluster = stack.seed, stack.airflow, stack.cluster
    assert table_digests(cluster, DB)[TABLE] == seed.damaged != seed.before_damage

    def fill(dialog):
        # The text fields' labels are not tied to their inputs in Airflow 3.3's form: the ids are.
        dialog.locator("#element_table").fill(TABLE)
        dialog.locator("#element_backup_date").fill(seed.backup_date)
        dialog.get_by_label("Mode", exact=True).click()
        page.get_by_role("option", name=re.compile(r"^replace: ")).click()
        expect(dialog.locator("#element_mode")).to_contain_text("replace: make the table exactly the backup's rows")
        expect(dialog.get_by_label("Cascade to referencing tables")).not_to_be_checked()  # left off
        timeout = dialog.get_by_label("Approval timeout (minutes)")
        timeout.fill("30")
        expect(timeout).to_have_value("30")

    run = trigger_from_form(page, "pg_table_restore", fill, shot)
    conf = run["conf"]
    assert {k: conf.get(k) for k in ("table", "backup_date", "mode", "cascade", "approval_timeout_minutes")} == {
        "table": TABLE, "backup_date": seed.backup_date, "mode": "replace", "cascade": False,
        "approval_timeout_minutes": 30}, conf
    assert not conf.get("confirm") and not conf.get("backup_key") and not conf.get("from_database"), conf
    run_id = RUNS["pg_table_restore"] = run["dag_run_id"]

    gate = Run(airflow, run_id, dag_id="pg_table_restore", gate="approve_apply")
    gate.wait_awaiting_input()  # and the scheduler has taken in the pause (the 3.3.2 race in tests/support/hitl.py)
    assert table_digests(cluster, DB)[TABLE] == seed.damaged  # nothing applied while it waits

    page.goto("/")
    open_from_browse_menu(page, "Required Actions")
    page.wait_for_url("**/required_actions")
    row = page.get_by_role("row").filter(has_text=run_id)
    expect(row).to_have_count(1)
    expect(row).to_contain_text("Approval Required")
    shot(page, "required-actions")
    row.get_by_role("link", name="Apply the table restore?").click()

    # The approval's body is the preview: what is there now, what the backup has, what the apply would do.
    main = page.get_by_test_id("main-content")
    expect(main).to_contain_text(f"pg_table_restore: {TABLE} in {DB} (glimpse), mode replace")
    expect(main).to_contain_text(f"Source: backup {seed.s3_key}")
    expected = {"in the table now": f"{seed.damaged[0]:,}", "in the backup": f"{seed.before_damage[0]:,}",
                "to insert (missing now)": str(DELETED), "to replace (changed since, all columns)": str(CHANGED),
                "to delete (not in the backup)": "0"}
    for label, count in expected.items():
        cells = page.get_by_role("row").filter(has=page.get_by_role("cell", name=label, exact=True)) \
            .get_by_role("cell")
        expect(cells).to_have_text([label, count])
    expect(main).to_contain_text(f"a safety dump of the table goes to s3://{seed.bucket}/")
    shot(page, "approval-preview")

    with page.expect_response(lambda r: r.request.method == "PATCH" and r.url.endswith("/hitlDetails")) as answer:
        page.get_by_test_id("hitl-option-Approve").click()
    assert answer.value.status == 200, answer.value.text()
    answered = answer.value.json()
    assert answered["chosen_options"] == ["Approve"] and answered["responded_by"]["name"] == "admin", answered
    expect(page.get_by_text("approve_apply response successful").first).to_be_visible()  # a toast
    shot(page, "approved")

    assert gate.wait_end() == "success", gate.explain()
    states = gate.task_states()
    assert (states["approve_apply"], states["apply"], states["report"]) == ("success",) * 3, states
    assert table_digests(cluster, DB)[TABLE] == seed.before_damage  # every row as in the backup again
    with psycopg.connect(host="127.0.0.1", port=cluster.port, user="postgres", password=cluster.password,
                         dbname="catalog") as c:
        logged = c.execute("SELECT kind, status, approved_by, database_name FROM restore_logs WHERE run_id = %s",
                           (run_id,)).fetchall()
    assert logged == [("table", "SUCCESS", "admin", DB)], logged
    page.goto(f"/dags/pg_table_restore/runs/{run_id}")
    expect(page.get_by_test_id("state-badge").first).to_have_text("Success", timeout=WAIT_SECONDS * 1000)
    shot(page, "run-green")


def test_backups_page_in_the_nav_shows_the_backups(page, stack, shot):
    seed = stack.seed
    page.goto("/")
    open_from_browse_menu(page, "Backups")
    page.wait_for_url("**/plugin/backups")
    frame = page.frame_locator("iframe")  # the UI shows the plugin's page (/pg-backups/) in a frame
    expect(frame.locator("#target-glimpse")).to_be_visible()
    daily = frame.locator("#tier-glimpse-daily")
    expect(daily).to_contain_text("pg_backup / seed__browser")  # the fixture's backup, its catalog row's run
    expect(daily).to_contain_text("verified")
    expect(daily).not_to_contain_text("NOT verified")
    if "pg_backup" in RUNS:  # the run the trigger form started: the newest weekly backup
        weekly = frame.locator("#tier-glimpse-weekly")
        expect(weekly).to_contain_text(f"pg_backup / {RUNS['pg_backup']}")
        expect(weekly).to_contain_text("verified")
        expect(weekly).not_to_contain_text("NOT verified")
    expect(frame.get_by_test_id("restore-pg_table_restore")).to_be_visible()  # opens the restore's form
    shot(page, "in-the-ui")
    # The page itself, whole (a frame's content is cut at the window in the screenshot above).
    page.goto("/pg-backups/")
    expect(page.locator("#tier-glimpse-daily")).to_contain_text("pg_backup / seed__browser")
    expect(page.locator("body")).to_contain_text(f"backups in s3://{seed.bucket}/")
    shot(page, "page")
