"""pg_full_recovery and pg_recovery_rehearsal decisions: the plan (what is refused before anything is made), the
names, the approval's preview, the restore_logs row and the rehearsal's verdict."""

from __future__ import annotations

import datetime as dt

import pytest
from pg_dataops.common.config import load_config
from pg_dataops.restore import full
from pg_dataops.restore.request import RequestRefused

from tests.support.age_keys import keypair

STARTED = dt.datetime(2026, 11, 30, 3, 4, 5, tzinfo=dt.UTC)
KEY = "database/daily/glimpse_daily_20261125_020000.dump"


def config(tmp_path, **env):
    return load_config(environ={"PGBACKUP_BUCKET": "bkt", "PGBACKUP_LOCAL_ROOT": str(tmp_path), **env})


def backup(key=KEY, fmt="custom", size=1000, encryption=None):
    doc = {"file": key.rsplit("/", 1)[1], "format": fmt, "size": size, "checksum": "0" * 64,
           "server_version_num": 150000, "table_counts": {"public.users": 30, "public.messages": 90}}
    if encryption:
        doc["encryption"] = encryption
    return {"key": key, "tier": "daily", "moment": "2026-11-24T17:00:00+00:00", "local_date": "2026-11-25",
            "size": size, "manifest": doc}


class Server:
    """The target server's databases, as database_exists sees them."""

    def __init__(self, *names):
        self.names = set(names)
        self.asked = []

    def exists(self, name):
        self.asked.append(name)
        return name in self.names


def plan(cfg, params, *, found=None, server=None, identity=lambda: "", **kwargs):
    calls = []

    def find(date, key):
        calls.append((date, key))
        if isinstance(found, Exception):
            raise found
        return found or backup()

    result = full.plan_recovery(cfg, params, target="glimpse", database="glimpse", conn_id="glimpse_db",
                                find_backup=find, identity=identity,
                                database_exists=(server or Server("glimpse")).exists, run_id="manual__1",
                                dag_id="pg_full_recovery", started_at=STARTED, **kwargs)
    return result, calls


def test_plan_names_every_thing_the_run_will_touch(tmp_path):
    cfg = config(tmp_path)
    got, calls = plan(cfg, {"backup_date": "20261125", "parallel_jobs": 6, "confirm": "glimpse"})
    assert calls == [("2026-11-25", None)]
    assert got["new_database"] == "glimpse_recovering_20261130030405"
    assert got["kept_database"] == "glimpse_before_recovery_20261130030405"
    assert got["safety_key"] == "database/safety/glimpse/glimpse_before_recovery_20261130030405.dump"
    assert got["safety_location"] == "s3://bkt/" + got["safety_key"]
    assert got["jobs"] == 6 and got["sections"] == ["pre-data", "data", "post-data"] and got["all_sections"]
    assert got["expected_confirm"] == "glimpse" and got["confirmed_in_advance"] is True
    assert got["format"] == "custom" and got["encrypted"] is False and got["production_exists"] is True
    assert got["work_dir"] == str(tmp_path / ".restore" / "glimpse_manual__1")
    assert got["marker"] == "pg_dataops pg_full_recovery run manual__1: full recovery of glimpse"
    assert got["rollback"][-2:] == ['ALTER DATABASE "glimpse" RENAME TO "glimpse_recovering_20261130030405";',
                                    'ALTER DATABASE "glimpse_before_recovery_20261130030405" RENAME TO "glimpse";']
    assert got["app_steps"] == {"app_stop": None, "app_start": None, "health_check": None}


def test_defaults_jobs_from_the_config_and_sections_in_order(tmp_path):
    cfg = config(tmp_path)
    got, _ = plan(cfg, {"backup_key": KEY, "sections": ["post-data", "pre-data"]})
    assert got["jobs"] == cfg.restore_jobs
    assert got["sections"] == ["pre-data", "post-data"] and not got["all_sections"]
    assert got["confirmed_in_advance"] is False


@pytest.mark.parametrize(("params", "message"), [
    ({}, "no backup chosen: set backup_date (YYYYMMDD), backup_key"),
    ({"backup_date": "20261125", "confirm": "glimpse_prod"},
     "confirm 'glimpse_prod' does not match the target database 'glimpse'"),
    ({"backup_date": "20261125", "parallel_jobs": 64}, "parallel_jobs 64 is outside 1..32"),
    ({"backup_date": "20261125", "sections": ["data", "schema"]}, "sections: 'schema' not one of"),
    ({"backup_date": "20261125", "sections": ["data", "post-data"]}, "sections data, post-data without pre-data"),
    ({"backup_date": "20261125; DROP TABLE users"}, "is not a date as YYYYMMDD"),
    ({"from_database": "glimpse_recovery"}, "no backup chosen"),
])
def test_bad_params_are_refused_before_s3_is_asked(tmp_path, params, message):
    server = Server("glimpse")
    with pytest.raises(RequestRefused) as err:
        _, calls = plan(config(tmp_path), params, server=server)
    assert message in str(err.value)
    assert server.asked == []  # nothing looked up, nothing made


def test_a_date_without_a_backup_names_what_exists(tmp_path):
    refusal = RequestRefused("no backup of 'glimpse' on 2026-11-20; backups exist on: 2026-11-24, 2026-11-25")
    server = Server("glimpse")
    with pytest.raises(RequestRefused, match="backups exist on: 2026-11-24, 2026-11-25"):
        plan(config(tmp_path), {"backup_date": "20261120"}, found=refusal, server=server)
    assert server.asked == []


def test_a_plain_dump_is_refused_saying_why(tmp_path):
    with pytest.raises(RequestRefused, match="is a plain dump: .* a plain SQL script cannot go through pg_restore"):
        plan(config(tmp_path), {"backup_date": "20261125"},
             found=backup(KEY.replace(".dump", ".sql.gz"), fmt="plain"))


def test_an_encrypted_backup_needs_an_identity_that_opens_it_before_any_download(tmp_path):
    a, b = keypair(tmp_path, "a"), keypair(tmp_path, "b")
    enc = backup(KEY + ".age", encryption={"format": "age", "recipients": [a.recipient]})
    got, _ = plan(config(tmp_path), {"backup_date": "20261125"}, found=enc, identity=lambda: a.identity)
    assert got["encrypted"] is True
    with pytest.raises(Exception, match="cannot decrypt glimpse_daily_20261125_020000.dump.age"):
        plan(config(tmp_path), {"backup_date": "20261125"}, found=enc, identity=lambda: b.identity)


def test_safety_dump_is_encrypted_like_every_dump(tmp_path):
    a = keypair(tmp_path, "a")
    got, _ = plan(config(tmp_path, PGBACKUP_ENCRYPTION_RECIPIENTS=a.recipient), {"backup_date": "20261125"})
    assert got["safety_key"].endswith("glimpse_before_recovery_20261130030405.dump.age")


def test_not_enough_disk_is_refused(tmp_path):
    with pytest.raises(RequestRefused, match="GiB free, the backup needs about"):
        plan(config(tmp_path), {"backup_date": "20261125"}, found=backup(size=10**16))


@pytest.mark.parametrize("taken", ["glimpse_recovering_20261130030405", "glimpse_before_recovery_20261130030405"])
def test_the_new_names_must_be_free(tmp_path, taken):
    with pytest.raises(RequestRefused, match=f"'{taken}' exists already on the target server"):
        plan(config(tmp_path), {"backup_date": "20261125"}, server=Server("glimpse", taken))


def test_a_dropped_production_database_is_recovered_without_a_safety_dump(tmp_path):
    got, _ = plan(config(tmp_path), {"backup_date": "20261125"}, server=Server())
    assert got["production_exists"] is False and got["safety_location"] is None and got["rollback"] == []


def test_a_name_too_long_for_the_kept_database_is_refused():
    with pytest.raises(RequestRefused, match="too long a name"):
        full.recovery_names("g" * 40, "20261130030405")


def test_rehearsal_names_fit_and_are_scratch_names():
    assert full.rehearsal_name("glimpse", "20261130030405") == "pgdataops_rehearsal_glimpse_20261130030405"
    assert len(full.rehearsal_name("t" * 80, "20261130030405")) == 63


def checked(note=None):
    return {"tables_found": 2, "rows_checked": 120, "restored_counts": {"public.users": 30, "public.messages": 90},
            "amcheck": "4 btree indexes", "note": note, "check_seconds": 0.5}


def test_preview_shows_backup_counts_names_safety_and_rollback(tmp_path):
    cfg = config(tmp_path, PGBACKUP_RESTORE_HEALTH_TIMEOUT_SECONDS="30")
    got, _ = plan(cfg, {"backup_date": "20261125"})
    shown = full.preview(got, checked())
    md = shown["markdown"]
    assert shown["expected_confirm"] == "glimpse"
    assert f"`{KEY}` taken 2026-11-24T17:00:00+00:00 (2026-11-25 local)" in md
    assert "`glimpse_recovering_20261130030405`: 2 tables, 120 rows, counts match" in md
    assert "`s3://bkt/database/safety/glimpse/glimpse_before_recovery_20261130030405.dump`" in md
    assert "rename `glimpse` -> `glimpse_before_recovery_20261130030405` (kept)" in md
    assert "no app_stop configured" in md
    for command in got["rollback"]:
        assert command in md
    assert "public.messages 90, public.users 30" in md


def test_preview_says_when_only_some_sections_were_restored(tmp_path):
    got, _ = plan(config(tmp_path), {"backup_date": "20261125", "sections": ["pre-data"]})
    md = full.preview(got, checked(note="sections without data: only the tables' existence was checked"))["markdown"]
    assert "Sections restored**: pre-data (not the whole backup)" in md
    assert "only the tables' existence was checked" in md


def results_of_a_good_run():
    at = STARTED + dt.timedelta(seconds=100)
    return {
        "validate": {}, "download": {"download_seconds": 2.0, "decrypt_seconds": 0.0},
        "restore": {"restore_seconds": 10.0}, "check": {"check_seconds": 1.0, **checked()},
        "app_stop": {"skipped": True}, "safety_dump": {"location": "s3://bkt/k", "sha256": "ab", "seconds": 3.0},
        "swap": {"swapped": True, "swap_seconds": 0.2}, "analyze": {"analyze_seconds": 0.4},
        "app_start": {"skipped": True},
        "health_check": {"skipped": False, "what": "GET http://x/health", "ok": True, "status": 200, "seconds": 0.1,
                         "attempts": 2, "finished_at": at.isoformat()},
        "cleanup": {"removed_dir": "/w", "dropped": None},
    }


def report(plan_, results, *, error=None, approval=None):
    return full.full_report_row(plan=plan_, results=results, error=error, approval=approval, target="glimpse",
                                params={"backup_date": "20261125"}, triggered_by="alice", triggered_at=STARTED,
                                objective_seconds=14400, dag_id="pg_full_recovery", run_id="manual__1")


APPROVED = {"approved": True, "responded_by": "confirm param"}


def test_report_of_a_recovery_swapped_and_healthy(tmp_path):
    got, _ = plan(config(tmp_path), {"backup_date": "20261125"})
    row = report(got, results_of_a_good_run(), approval=APPROVED)
    assert row["status"] == "SUCCESS" and row["approved_by"] == "confirm param" and row["triggered_by"] == "alice"
    assert row["rto_seconds"] == 100.0 and row["rto_objective_seconds"] == 14400
    assert row["safety_location"] == "s3://bkt/k" and row["backup_key"] == KEY and row["database_name"] == "glimpse"
    assert row["changes"] == {"swapped": True, "production": "glimpse",
                              "kept_as": "glimpse_before_recovery_20261130030405"}
    assert row["details"]["phases"]["restore"] == 10.0 and row["details"]["phases"]["safety_dump"] == 3.0
    assert row["details"]["app_steps"]["health_check"]["attempts"] == 2
    text = full.full_report_text(row, got)
    assert text.startswith(":white_check_mark: Full recovery of glimpse done: glimpse is now backup " + KEY)
    assert "RTO 1 min 40 s (trigger to healthy; objective 4 h)" in text
    assert got["rollback"][1] in text


def test_report_of_a_refused_run():
    row = report(None, {"validate": None}, error="validate: confirm 'x' does not match the target database")
    assert row["status"] == "REFUSED" and row["rto_seconds"] is None
    assert row["error_message"].startswith("validate: confirm 'x'")
    assert full.full_report_text(row, None).startswith(":no_entry: Full recovery of glimpse refused, nothing was")


def test_report_of_a_rejected_swap_says_production_was_not_touched(tmp_path):
    got, _ = plan(config(tmp_path), {"backup_date": "20261125"})
    results = {**results_of_a_good_run(), "app_stop": None, "safety_dump": None, "swap": None, "analyze": None,
               "app_start": None, "health_check": None,
               "cleanup": {"dropped": "glimpse_recovering_20261130030405"}}
    row = report(got, results, approval={"approved": False, "responded_by": "nobody (timeout)"})
    assert row["status"] == "REJECTED" and row["approved_by"] is None and row["rto_seconds"] is None
    text = full.full_report_text(row, got)
    assert "not approved: production was not touched" in text
    assert "the new database glimpse_recovering_20261130030405 was dropped" in text


def test_report_of_a_failed_check(tmp_path):
    got, _ = plan(config(tmp_path), {"backup_date": "20261125"})
    row = report(got, {"check": None, "cleanup": {"dropped": got["new_database"]}},
                 error="check: the restored database does not match")
    assert row["status"] == "FAILED" and row["error_message"] == "check: the restored database does not match"
    assert row["safety_location"] is None and row["changes"]["swapped"] is False


def test_a_failed_health_check_after_the_swap_is_failed_and_gives_the_rollback(tmp_path):
    got, _ = plan(config(tmp_path), {"backup_date": "20261125"})
    results = {**results_of_a_good_run(), "health_check": None}
    row = report(got, results, error="health_check: restore.health_check still failing", approval=APPROVED)
    assert row["status"] == "FAILED" and row["rto_seconds"] is None
    text = full.full_report_text(row, got)
    assert "the swap happened: the previous database is kept as glimpse_before_recovery_20261130030405" in text
    assert got["rollback"][2] in text


def rehearsal_plan(tmp_path):
    return full.plan_rehearsal(config(tmp_path), target="glimpse", database="glimpse", conn_id="glimpse_db",
                               backup=backup(), identity=lambda: "", database_exists=Server("glimpse").exists,
                               run_id="scheduled__1", dag_id="pg_recovery_rehearsal", started_at=STARTED)


def test_rehearsal_plan(tmp_path):
    got = rehearsal_plan(tmp_path)
    assert got["kind"] == "rehearsal" and got["new_database"] == "pgdataops_rehearsal_glimpse_20261130030405"
    assert got["kept_database"] is None and got["all_sections"]
    assert got["safety_key"] == "database/safety/glimpse/glimpse_before_recovery_20261130030405_rehearsal.dump"


def rehearsal_results(restore_seconds=10.0):
    return {"plan": {}, "download": {"download_seconds": 2.0, "decrypt_seconds": 0.5},
            "restore": {"restore_seconds": restore_seconds}, "check": checked(), "analyze": {"analyze_seconds": 0.5},
            "safety_dump": {"seconds": 3.0, "key": "k", "deleted": True}, "cleanup": {"dropped": "x"}}


def test_rehearsal_measures_download_restore_checks_analyze_and_safety_dump(tmp_path):
    p = rehearsal_plan(tmp_path)
    row, verdict, text = full.rehearsal_outcome(plan=p, results=rehearsal_results(), error=None, target="glimpse",
                                                history=[], objective_seconds=14400, dag_id="d", run_id="r",
                                                triggered_by="scheduled run", now=STARTED)
    assert row["rto_seconds"] == 2.0 + 0.5 + 10.0 + 0.5 + 0.5 + 3.0
    assert row["status"] == "SUCCESS" and verdict.status == "ok" and row["kind"] == "rehearsal"
    assert row["database_name"] == "pgdataops_rehearsal_glimpse_20261130030405"
    assert "download 2.0 s + age -d 0.5 s + restore 10.0 s" in text and "safety dump 3.0 s" in text


def test_rehearsal_above_the_objective_is_a_failed_row(tmp_path):
    p = rehearsal_plan(tmp_path)
    row, verdict, text = full.rehearsal_outcome(plan=p, results=rehearsal_results(20000.0), error=None,
                                                target="glimpse", history=[], objective_seconds=14400, dag_id="d",
                                                run_id="r", triggered_by=None, now=STARTED)
    assert verdict.status == "exceeded" and row["status"] == "FAILED"
    assert "exceeds the objective 4 h" in row["error_message"] and text.startswith(":x:")


def test_rehearsal_with_a_failed_step_has_no_rto(tmp_path):
    p = rehearsal_plan(tmp_path)
    row, verdict, text = full.rehearsal_outcome(plan=p, results={**rehearsal_results(), "check": None},
                                                error="rehearse.check: mismatch", target="glimpse", history=[],
                                                objective_seconds=14400, dag_id="d", run_id="r", triggered_by=None)
    assert verdict is None and row["status"] == "FAILED" and row["rto_seconds"] is None
    assert row["error_message"] == "rehearse.check: mismatch"
