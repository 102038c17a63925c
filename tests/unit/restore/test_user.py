"""pg_user_data_restore's decisions without a database: the user id per key type, the foreign-key order, the
names it creates, the preview, the audit row's status and the Slack summary."""

from __future__ import annotations

import pytest
from pg_dataops.common.config import load_config
from pg_dataops.restore import user
from pg_dataops.restore.request import RequestRefused
from psycopg import sql

UID = "6F1C2A4E-8D3B-4C7A-9E2F-0A1B2C3D4E5F"


@pytest.mark.parametrize("value", [UID, UID.lower(), " " + UID + " ", UID.replace("-", "")])
def test_a_uuid_user_id_becomes_its_lower_case_text(value):
    assert user.canonical_user_id(value, "uuid") == UID.lower()


@pytest.mark.parametrize("value", ["42", "x' OR '1'='1", "users; DROP TABLE x", "'; --", "",
                                   UID + "0", "{" + UID + "}", "urn:uuid:" + UID, UID[:-1] + "g", None])
def test_anything_but_a_uuid_is_refused_for_a_uuid_key(value):
    with pytest.raises(RequestRefused, match="user_id"):
        user.canonical_user_id(value, "uuid")


@pytest.mark.parametrize(("value", "key", "text"), [("42", "integer", "42"), ("+007", "bigint", "7"),
                                                    ("-32768", "smallint", "-32768"),
                                                    ("9223372036854775807", "bigint", "9223372036854775807")])
def test_an_integer_user_id_is_its_plain_number(value, key, text):
    assert user.canonical_user_id(value, key) == text


@pytest.mark.parametrize(("value", "key"), [("32768", "smallint"), ("2147483648", "integer"), ("4.2", "bigint"),
                                            ("1e3", "integer"), ("42; DROP TABLE x", "integer"), (UID, "bigint")])
def test_a_non_integer_or_out_of_range_id_is_refused_for_an_integer_key(value, key):
    with pytest.raises(RequestRefused, match=f"not a whole number of type {key}"):
        user.canonical_user_id(value, key)


def test_other_allowed_types_are_cast_by_the_server_and_unknown_types_refused():
    calls = []

    def cast(value, type_text):
        calls.append((value, type_text))
        return value.upper()

    assert user.canonical_user_id("ab-1", "character varying(10)", cast=cast) == "AB-1"
    assert user.canonical_user_id("x' OR '1'='1", "text", cast=cast) == "X' OR '1'='1"  # a value, bound later
    assert calls == [("ab-1", "character varying(10)"), ("x' OR '1'='1", "text")]
    with pytest.raises(RequestRefused, match="longer than"):
        user.canonical_user_id("abcdefghijk", "character varying(10)", cast=cast)
    with pytest.raises(RequestRefused, match="control characters or a backslash"):
        user.canonical_user_id("a\\b", "text", cast=cast)
    for odd in ("inet", "text); DROP TABLE x; --", "jsonb"):
        with pytest.raises(RequestRefused, match="handles uuid, smallint"):
            user.canonical_user_id("1", odd, cast=cast)
    assert len(calls) == 2


RUNBOOK = ["public.users", "public.user_profiles", "public.user_preferences", "public.likes", "public.matches",
           "public.messages", "public.user_groups"]
DEMO_EDGES = [("public.user_profiles", "public.users"), ("public.user_preferences", "public.users"),
              ("public.likes", "public.users"), ("public.matches", "public.users"),
              ("public.messages", "public.users"), ("public.messages", "public.matches"),
              ("public.user_groups", "public.users")]


def test_fk_order_puts_parents_first_and_keeps_the_config_order_otherwise():
    assert user.fk_order(RUNBOOK, DEMO_EDGES) == RUNBOOK
    # The config listing children first does not matter.
    order = user.fk_order(list(reversed(RUNBOOK)), DEMO_EDGES)
    assert order == ["public.users", "public.user_groups", "public.matches", "public.messages", "public.likes",
                     "public.user_preferences", "public.user_profiles"]
    for child, parent in DEMO_EDGES:
        assert order.index(parent) < order.index(child)


def test_fk_order_ignores_self_references_and_tables_outside_the_map_and_refuses_cycles():
    assert user.fk_order(["b", "a"], [("b", "a"), ("a", "a"), ("a", "elsewhere")]) == ["a", "b"]
    with pytest.raises(RequestRefused, match="form a cycle"):
        user.fk_order(["a", "b", "c"], [("a", "b"), ("b", "a")])


def test_names_of_the_staging_schema_and_safety_tables_fit_and_differ_per_run():
    cfg = load_config(environ={})
    one, two = user.staging_schema_name(cfg, "manual__1"), user.staging_schema_name(cfg, "manual__2")
    assert one.startswith("dataops_staging_") and len(one) == len("dataops_staging_") + 8 and one != two
    assert user.safety_table_name("users", "20261201060000", "ab12cd34") == "users_20261201060000_ab12cd34"
    long = user.safety_table_name("t" * 63, "20261201060000", "ab12cd34")
    assert len(long) == 63 and long.endswith("_20261201060000_ab12cd34")


def test_the_user_filter_binds_the_id_and_quotes_the_columns():
    text = user.user_filter(["sender_id", "Receiver"], "c").as_string(None)
    assert text == '"c"."sender_id" = %(user_id)s OR "c"."Receiver" = %(user_id)s'


def plan(**over):
    base = {"target": "glimpse", "database": "glimpse", "expected_confirm": "glimpse", "user_id": UID.lower(),
            "dry_run": True, "backup_key": "database/daily/glimpse_daily_20261125_020000.dump",
            "from_database": None, "safety_schema": "dataops_safety",
            "safety_tables": {"public.users": "users_20261201060000_ab12cd34",
                              "public.likes": "likes_20261201060000_ab12cd34"},
            "tables": [{"table": "public.users"}, {"table": "public.likes"}]}
    return {**base, **over}


COUNTS = {"public.users": {"inserted": 1, "updated": 0, "unchanged": 0, "left_alone": 0},
          "public.likes": {"inserted": 7, "updated": 2, "unchanged": 11, "left_alone": 3}}


def test_the_preview_names_the_user_the_counts_the_safety_copy_and_the_confirm():
    md = user.preview_markdown(plan(dry_run=False), COUNTS)
    assert md.splitlines()[0] == (f"**Restore the rows of user `{UID.lower()}`** in `glimpse` (glimpse) from backup "
                                  "database/daily/glimpse_daily_20261125_020000.dump.")
    assert "| public.users | 1 | 0 | 0 | 0 |" in md and "| public.likes | 7 | 2 | 11 | 3 |" in md
    assert md.index("public.users |") < md.index("public.likes |")
    assert ("`dataops_safety.(users_20261201060000_ab12cd34, likes_20261201060000_ab12cd34)` (kept)" in md)
    assert "exist now but not in the backup are kept" in md and "set `confirm` to `glimpse`" in md
    assert "Dry run" not in md
    dry = user.preview_markdown(plan(from_database="glimpse_recovery", backup_key=None), COUNTS)
    assert "_Dry run: nothing will be written._" in dry and "from database glimpse_recovery." in dry


def row(**kw):
    args = {"plan_": plan(), "preview_": {"tables": COUNTS}, "applied": None, "approval": None, "error": None,
            "params": {"user_id": UID}, "target": "glimpse", "triggered_by": "ops", "dag_id": "pg_user_data_restore",
            "run_id": "manual__1"}
    return user.log_row(**{**args, **kw})


APPLIED = {"tables": {t: {**c, "safety_rows": 3, "safety_table": "dataops_safety.x", "sequences": {}}
                      for t, c in COUNTS.items()},
           "safety_location": "dataops_safety.(users_1, likes_1)", "rollback": ["BEGIN;", "COMMIT;"],
           "drop": "DROP TABLE x;"}
APPROVED = {"approved": True, "decision": "approved", "responded_by": "confirm param"}


def test_status_of_each_outcome_and_what_the_row_keeps():
    dry = row()
    assert dry["status"] == "DRY_RUN" and dry["kind"] == "user" and dry["changes"] == COUNTS
    assert dry["safety_location"] is None and dry["details"]["user_id"] == UID.lower()
    done = row(plan_=plan(dry_run=False), applied=APPLIED, approval=APPROVED)
    assert done["status"] == "SUCCESS" and done["approved_by"] == "confirm param"
    assert done["changes"] == COUNTS and done["safety_location"] == "dataops_safety.(users_1, likes_1)"
    assert done["details"]["rollback"] == ["BEGIN;", "COMMIT;"] and done["details"]["drop"] == "DROP TABLE x;"
    rejected = row(plan_=plan(dry_run=False), approval={"approved": False, "decision": "timed out (rejected)"})
    assert rejected["status"] == "REJECTED" and rejected["changes"] is None and rejected["approved_by"] is None
    failed = row(plan_=plan(dry_run=False), approval=APPROVED, error="apply: the upsert into public.likes failed")
    assert failed["status"] == "FAILED" and failed["error_message"].startswith("apply: ")
    refused = row(plan_=None, preview_=None, error="validate: user_id '42' is not a UUID")
    assert refused["status"] == "REFUSED" and refused["database_name"] is None
    assert refused["error_message"] == "validate: user_id '42' is not a UUID"


def test_the_slack_summary_says_what_happened_and_nothing_of_the_users_data():
    done = {**row(plan_=plan(dry_run=False), applied=APPLIED, approval=APPROVED), "id": 7}
    text = user.report_text(done, plan_=plan(dry_run=False), preview_={"tables": COUNTS})
    assert text.startswith(f":white_check_mark: pg_user_data_restore restored user {UID.lower()} in glimpse")
    assert "approved by confirm param" in text and "public.likes: 7 inserted, 2 updated, 11 unchanged, 3 not in" in text
    assert "restore_logs row 7" in text
    dry = user.report_text(row(), plan_=plan(), preview_={"tables": COUNTS})
    assert dry.startswith(":mag:") and "Nothing was changed" in dry
    refused = user.report_text(row(plan_=None, preview_=None, error="validate: user_id '42' is not a UUID"),
                               plan_=None, preview_=None)
    assert refused == (":no_entry: pg_user_data_restore refused (started by ops): validate: user_id '42' is not a "
                       "UUID. Nothing was changed.")


def test_identifiers_in_composed_statements_are_quoted():
    t = {"table": "public.likes", "schema": "public", "name": "likes", "pk": ["id"], "user_columns": ["from_user_id"],
         "columns": ["id", "from_user_id", "note"]}
    text = user._upsert_statement(t, "stage_x", ["id", "from_user_id", "note"]).as_string(None)
    assert 'INSERT INTO "public"."likes" AS t ("id", "from_user_id", "note") OVERRIDING SYSTEM VALUE' in text
    assert 'ON CONFLICT ("id") DO UPDATE SET ("from_user_id", "note") = ROW("excluded"."from_user_id", ' in text
    keys_only = user._upsert_statement({**t, "pk": ["id", "from_user_id"]}, "s", ["id", "from_user_id"])
    assert "DO NOTHING" in keys_only.as_string(None)
    assert isinstance(keys_only, sql.Composed)
