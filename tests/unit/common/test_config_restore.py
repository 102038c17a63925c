"""The restore section and the per-target exclusions of the config: defaults, overrides, errors naming the field."""

from pathlib import Path

import pytest
import yaml
from pg_dataops.common.config import DEFAULT_CONFIG_PATH, DEFAULT_USER_TABLES, AppStep, ConfigError, load_config


def write(tmp_path: Path, restore: dict | None = None, target: dict | None = None) -> Path:
    data = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
    if restore is not None:
        data["restore"] = restore
    if target is not None:
        data["targets"][0].update(target)
    p = tmp_path / "cfg.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def test_defaults_are_the_runbook_map_and_no_application_step():
    r = load_config(environ={}).restore
    assert r.user_tables == DEFAULT_USER_TABLES
    assert dict(r.user_tables)["public.messages"] == ("sender_id", "receiver_id")
    assert (r.app_stop, r.app_start, r.health_check) == (None, None, None)
    assert (r.approval_timeout_minutes, r.user_key, r.safety_prefix) == (60, "public.users.id", "safety")
    t = load_config(environ={}).target("glimpse")
    assert (t.exclude_tables, t.exclude_table_data) == ((), ())


def test_environment_overrides_restore_fields():
    cfg = load_config(environ={"PGBACKUP_RESTORE_APPROVAL_TIMEOUT_MINUTES": "5",
                               "PGBACKUP_RESTORE_SAFETY_PREFIX": "keep/safety"})
    assert (cfg.restore.approval_timeout_minutes, cfg.restore.safety_prefix) == (5, "keep/safety")


def test_application_steps_are_http_calls_or_argument_lists(tmp_path):
    cfg = load_config(write(tmp_path, {
        "app_stop": {"command": ["systemctl", "stop", "glimpse-api"], "timeout_seconds": 30},
        "health_check": {"http": {"url": "http://localhost:3000/health", "method": "get"}},
        "user_tables": {"public.users": "id", "public.likes": ["from_user_id", "to_user_id"]},
    }), environ={})
    assert cfg.restore.app_stop == AppStep(kind="command", argv=("systemctl", "stop", "glimpse-api"),
                                           timeout_seconds=30)
    assert cfg.restore.health_check.describe() == "GET http://localhost:3000/health"
    assert dict(cfg.restore.user_tables) == {"public.users": ("id",), "public.likes": ("from_user_id", "to_user_id")}


def test_exclusions_per_target(tmp_path):
    cfg = load_config(write(tmp_path, target={"exclude_table_data": ["public.audit_logs"],
                                              "exclude_tables": ["public.tmp_import"]}), environ={})
    t = cfg.target("glimpse")
    assert (t.exclude_tables, t.exclude_table_data) == (("public.tmp_import",), ("public.audit_logs",))


@pytest.mark.parametrize(("restore", "message"), [
    ({"approval_timeout_minutes": 0}, "restore.approval_timeout_minutes: 0 is outside 1..1440"),
    ({"rehearsal_schedule": "monthly"}, "restore.rehearsal_schedule: not a valid cron expression"),
    ({"staging_schema": "Staging; DROP"}, "restore.staging_schema: 'Staging; DROP' must be lower-case"),
    ({"safety_schema": "pg_safety"}, "restore.safety_schema: 'pg_safety' starts with pg_, which PostgreSQL reserves"),
    ({"user_key": "users.id"}, "restore.user_key: 'users.id' must be schema.table.column"),
    ({"app_stop": "systemctl stop glimpse-api"}, "restore.app_stop: must be a mapping with exactly one of http"),
    ({"app_stop": {"command": "systemctl stop x"}}, "restore.app_stop.command: must be a non-empty list"),
    ({"app_start": {"http": {"url": "localhost:3000"}}}, "restore.app_start.http.url: 'localhost:3000' is not"),
    ({"health_check": {"http": {"url": "http://h/", "method": "DELETE"}}}, "restore.health_check.http.method"),
    ({"health_check": {"http": {"url": "http://h/"}, "command": ["true"]}}, "exactly one of http"),
    ({"user_tables": {"users": ["id"]}}, "restore.user_tables: 'users' must be schema.table"),
    ({"user_tables": {"public.likes": ["from_user_id; DROP TABLE x"]}}, "restore.user_tables.public.likes: must be"),
    ({"colour": "red"}, "restore.colour: unknown setting"),
])
def test_errors_name_the_field(tmp_path, restore, message):
    with pytest.raises(ConfigError, match=None) as err:
        load_config(write(tmp_path, restore), environ={})
    assert message in str(err.value)


@pytest.mark.parametrize(("target", "message"), [
    ({"exclude_tables": "public.audit_logs"}, "targets[0].exclude_tables: must be a list of schema.table"),
    ({"exclude_table_data": ["audit_logs"]}, "targets[0].exclude_table_data: must be a list of schema.table"),
    ({"exclude_tables": ["public.a"], "exclude_table_data": ["public.a"]}, "public.a is in both"),
])
def test_exclusion_errors_name_the_field(tmp_path, target, message):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, target=target), environ={})
    assert message in str(err.value)
