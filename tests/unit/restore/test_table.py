"""pg_table_restore's decisions without a server: the mode, the refusals and their words, the preview's
Markdown, what happens to referencing tables' rows, the counts an apply must leave, the outcome."""

from __future__ import annotations

import pytest
from pg_dataops.common.config import load_config
from pg_dataops.restore import table
from pg_dataops.restore.request import RequestRefused

STAGED = {"table": "public.users", "schema": "public", "name": "users", "staging_schema": "pg_dataops_staging_ab",
          "exists": True, "columns": ["id", "email"], "primary_key": ["id"], "backup_rows": 10}
PLAN = {"target": "glimpse", "database": "glimpse", "table": "users", "mode": "replace", "cascade": False,
        "expected_confirm": "glimpse", "source_text": "backup database/daily/x.dump (2026-11-25)"}
COUNTS = {"current_rows": 11, "backup_rows": 10, "to_insert": 1, "to_replace": 2, "unchanged": 7, "to_delete": 2}


def ref(table_name, action, affected, *, self_ref=False):
    schema, name = table_name.split(".")
    return {"table": table_name, "schema": schema, "name": name, "constraint": f"{name}_fkey", "columns": ["uid"],
            "referenced_columns": ["id"], "on_delete": action, "affected_rows": affected, "self": self_ref}


@pytest.mark.parametrize(("value", "mode"), [(None, "dry_run"), ("", "dry_run"), ("replace", "replace"),
                                             (" merge_missing ", "merge_missing")])
def test_parse_mode(value, mode):
    assert table.parse_mode(value) == mode


def test_parse_mode_refuses_unknown():
    with pytest.raises(RequestRefused, match="mode 'truncate' is not one of dry_run, replace, merge_missing"):
        table.parse_mode("truncate")


def test_what_happens_to_referencing_rows_in_words():
    assert table.what_happens(ref("public.likes", "CASCADE", 3), False) == \
        "3 of its rows reference rows the restore deletes: deleted with them (ON DELETE CASCADE)"
    assert table.what_happens(ref("public.x", "SET NULL", 1), False) == \
        "1 of its rows reference rows the restore deletes: uid set to null (ON DELETE SET NULL)"
    assert table.what_happens(ref("public.m", "NO ACTION", 2), False) == \
        "2 of its rows reference rows the restore deletes: the apply would fail on them (ON DELETE NO ACTION) " \
        "unless cascade is set"
    assert table.what_happens(ref("public.m", "RESTRICT", 2), True) == \
        "2 of its rows reference rows the restore deletes: deleted first, because cascade is set (ON DELETE RESTRICT)"
    assert table.what_happens(ref("public.m", "NO ACTION", 0), False) == \
        "0 of its rows reference rows the restore deletes (ON DELETE NO ACTION)"


def test_replace_of_a_referenced_table_needs_cascade_and_names_the_tables():
    refs = [ref("public.likes", "CASCADE", 3), ref("public.messages", "NO ACTION", 1)]
    with pytest.raises(RequestRefused) as refused:
        table.check_replace(STAGED, refs, cascade=False)
    text = str(refused.value)
    assert text.startswith("public.users is referenced by other tables, so replace needs cascade=true (nothing was "
                           "changed): public.likes (likes_fkey): 3 of its rows")
    assert "public.messages (messages_fkey): 1 of its rows reference rows the restore deletes: the apply would " \
           "fail" in text
    table.check_replace(STAGED, refs, cascade=True)
    table.check_replace(STAGED, [ref("public.users", "NO ACTION", 1, self_ref=True)], cascade=False)  # itself only


def test_target_table_refusals():
    with pytest.raises(RequestRefused, match="does not exist in the target database: merge_missing needs the table"):
        table.check_target_table("merge_missing", "public.t", [])
    no_pk = [{"name": "a", "in_pk": False, "relkind": "r"}]
    with pytest.raises(RequestRefused, match="has no primary key: merge_missing cannot tell which rows are missing"):
        table.check_target_table("merge_missing", "public.t", no_pk)
    table.check_target_table("replace", "public.t", no_pk)
    table.check_target_table("replace", "public.t", [])  # dropped: replace re-creates it
    with pytest.raises(RequestRefused, match="is not an ordinary table"):
        table.check_target_table("replace", "public.t", [{"name": "a", "in_pk": False, "relkind": "p"}])


def test_column_differences_name_each_column():
    backup = [{"name": "id", "type": "bigint"}, {"name": "old", "type": "text"}, {"name": "n", "type": "integer"}]
    now = [{"name": "id", "type": "bigint"}, {"name": "new", "type": "text"}, {"name": "n", "type": "bigint"}]
    assert table.column_differences(backup, now) == ["only in the backup: old", "only in the table now: new",
                                                     "n is integer in the backup but bigint now"]
    assert table.column_differences(backup, backup) == []


def test_preview_markdown_per_mode():
    refs = [ref("public.likes", "CASCADE", 3)]
    text = table.preview_markdown(PLAN, STAGED, COUNTS, refs, safety="s3://b/database/safety/x.dump",
                                  backup_foreign_keys=[])
    assert "### pg_table_restore: public.users in glimpse (glimpse), mode **replace**" in text
    for line in ("| in the table now | 11 |", "| to insert (missing now) | 1 |",
                 "| to replace (changed since, all columns) | 2 |", "| to delete (not in the backup) | 2 |",
                 "- public.likes (likes_fkey): 3 of its rows reference rows the restore deletes: deleted with them",
                 "safety dump of the table goes to `s3://b/database/safety/x.dump`", "confirm = `glimpse`"):
        assert line in text
    dry = table.preview_markdown({**PLAN, "mode": "dry_run"}, STAGED, COUNTS, refs, safety=None,
                                 backup_foreign_keys=[])
    assert "Dry run: nothing is changed" in dry and "replace would be refused unless cascade is set" in dry
    assert "confirm" not in dry
    merge = table.preview_markdown({**PLAN, "mode": "merge_missing"}, STAGED, COUNTS, [], safety=None,
                                   backup_foreign_keys=[])
    assert "| changed since (kept as they are) | 2 |" in merge and "to delete" not in merge
    dropped = table.preview_markdown(PLAN, {**STAGED, "exists": False}, COUNTS, [], safety=None,
                                     backup_foreign_keys=[{"sql": "ALTER TABLE ONLY public.likes ADD ..."}])
    assert "does not exist in the target database now" in dropped and "re-creates public.users" in dropped
    assert "- `ALTER TABLE ONLY public.likes ADD ...`" in dropped


def test_counts_the_apply_must_leave():
    assert table.expected_after("replace", COUNTS) == {"current_rows": 10, "to_insert": 0, "to_replace": 0,
                                                       "to_delete": 0}
    assert table.expected_after("merge_missing", COUNTS) == {"current_rows": 12, "to_insert": 0, "to_replace": 2,
                                                             "to_delete": 2}


def test_safety_key_and_dump_pattern(tmp_path):
    cfg = load_config(environ={"PGBACKUP_BUCKET": "hb-bucket", "PGBACKUP_LOCAL_ROOT": str(tmp_path)})
    assert table.safety_key(cfg, PLAN, STAGED, "20261201000000") == \
        "database/safety/glimpse/glimpse_public.users_before_table_restore_20261201000000.dump"
    assert table.dump_pattern("public", 'we"ird') == '"public"."we""ird"'
    assert table.staging_schema_name(cfg, "manual__1").startswith(cfg.restore.staging_schema + "_")
    assert table.staging_schema_name(cfg, "manual__1") != table.staging_schema_name(cfg, "manual__2")


@pytest.mark.parametrize(("kw", "status"), [
    ({"plan": None, "refused": False, "error": "validate: bad", "decision": None, "applied": None}, "REFUSED"),
    ({"plan": PLAN, "refused": True, "error": "preview: refused", "decision": None, "applied": None}, "REFUSED"),
    ({"plan": PLAN, "refused": False, "error": "apply: boom", "decision": {"approved": True}, "applied": None},
     "FAILED"),
    ({"plan": {**PLAN, "mode": "dry_run"}, "refused": False, "error": None, "decision": None, "applied": None},
     "DRY_RUN"),
    ({"plan": PLAN, "refused": False, "error": None, "decision": {"approved": False}, "applied": None}, "REJECTED"),
    ({"plan": PLAN, "refused": False, "error": None, "decision": {"approved": True}, "applied": {"x": 1}},
     "SUCCESS"),
])
def test_outcome(kw, status):
    assert table.outcome(**kw) == status


def test_report_row_and_slack_text():
    applied = {"table": "public.users", "before": COUNTS, "after": {**COUNTS, "current_rows": 10},
               "applied": {"deleted": 2, "updated": 2, "inserted": 1, "child_rows_deleted": {}},
               "safety": {"uri": "s3://b/k.dump", "size": 2048}}
    row = table.report_row(plan=PLAN, params={"table": "users"}, status="SUCCESS", staged=STAGED, previewed=None,
                           applied=applied, decision={"approved": True, "responded_by": "confirm param"},
                           error=None, triggered_by="alice", dag_id="pg_table_restore", run_id="r1",
                           target="glimpse")
    assert (row["kind"], row["status"], row["approved_by"], row["safety_location"]) == \
        ("table", "SUCCESS", "confirm param", "s3://b/k.dump")
    assert row["changes"]["before"] == COUNTS and row["changes"]["applied"]["inserted"] == 1
    text = table.slack_text(row, previewed=None, applied=applied)
    assert text.startswith(":white_check_mark: pg_table_restore SUCCESS: public.users of glimpse (mode replace)")
    assert "safety dump: s3://b/k.dump" in text and "approved by confirm param" in text
    assert "applied: deleted 2, updated 2, inserted 1" in text
