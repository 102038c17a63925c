from pathlib import Path

import pytest
import yaml
from pg_dataops.common.config import DEFAULT_CONFIG_PATH, ConfigError, load_config


def write(tmp_path: Path, **changes) -> Path:
    data = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
    for k, v in changes.items():
        if v is None:
            data.pop(k, None)
        else:
            data[k] = v
    p = tmp_path / "cfg.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def test_default_config_is_glimpse():
    cfg = load_config(environ={})
    assert cfg.timezone == "Asia/Seoul"
    assert cfg.schedule == "0 2 * * *"
    assert cfg.bucket == "glimpse-backups"
    assert cfg.prefix == "database"
    assert cfg.storage_class == "STANDARD_IA"
    assert cfg.sse == "AES256"
    assert cfg.dump_format == "custom"
    assert cfg.target_names == ["glimpse"]
    assert cfg.targets[0].conn_id == "glimpse_db"
    assert (cfg.retention.daily_days, cfg.retention.weekly_weeks, cfg.retention.monthly_months) == (30, 12, 12)
    assert cfg.catalog_conn_id == "glimpse_db"


def test_env_overrides_every_scalar_kind(tmp_path):
    env = {
        "PGBACKUP_LOCAL_ROOT": str(tmp_path),
        "PGBACKUP_BUCKET": "other-bucket",
        "PGBACKUP_RETRIES": "0",
        "PGBACKUP_KMS_KEY_ID": "null",
        "PGBACKUP_DUMP_FORMAT": "directory",
    }
    cfg = load_config(environ=env)
    assert cfg.local_root == str(tmp_path)
    assert cfg.bucket == "other-bucket"
    assert cfg.retries == 0
    assert cfg.kms_key_id is None
    assert cfg.dump_format == "directory"


def test_config_path_from_env(tmp_path):
    p = write(tmp_path, bucket="from-file-bucket")
    assert load_config(environ={"PGBACKUP_CONFIG": str(p)}).bucket == "from-file-bucket"


@pytest.mark.parametrize(
    ("changes", "env", "field"),
    [
        ({"timezone": "Mars/Olympus"}, {}, "timezone"),
        ({"schedule": "every day"}, {}, "schedule"),
        ({"bucket": "Bad_Bucket"}, {}, "bucket"),
        ({"dump_format": "tar"}, {}, "dump_format"),
        ({"dump_compression": 12}, {}, "dump_compression"),
        ({"sse": "aws:kms", "kms_key_id": None}, {}, "kms_key_id"),
        ({"storage_class": "COLD"}, {}, "storage_class"),
        ({"local_root": "relative/path"}, {}, "local_root"),
        ({"multipart_chunk_mb": 1}, {}, "multipart_chunk_mb"),
        ({"bucket": None}, {}, "bucket"),
        ({"targets": []}, {}, "targets"),
        ({"targets": [{"name": "Glimpse!", "conn_id": "x"}]}, {}, "targets[0].name"),
        ({"targets": [{"name": "a", "conn_id": "x"}, {"name": "a", "conn_id": "y"}]}, {}, "targets"),
        ({"targets": [{"name": "a"}]}, {}, "targets[0].conn_id"),
        ({"retention": {"daily_days": 0}}, {}, "retention.daily_days"),
        ({"retention": {"yearly": 3}}, {}, "retention.yearly"),
        ({"typo_setting": 1}, {}, "typo_setting"),
        ({}, {"PGBACKUP_RETRIES": "three"}, "retries"),
        ({}, {"PGBACKUP_RETRY_DELAY_SECONDS": "0"}, "retry_delay_seconds"),
    ],
)
def test_invalid_config_names_the_field(tmp_path, changes, env, field):
    p = write(tmp_path, **changes)
    with pytest.raises(ConfigError) as exc:
        load_config(p, environ=env)
    assert str(exc.value).startswith(field + ":") or str(exc.value).startswith(field + " "), str(exc.value)


def test_env_error_names_the_variable(tmp_path):
    with pytest.raises(ConfigError, match="PGBACKUP_RETRIES"):
        load_config(environ={"PGBACKUP_RETRIES": "many"})


def test_missing_and_broken_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml", environ={})
    bad = tmp_path / "bad.yaml"
    bad.write_text("bucket: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad, environ={})


def test_time_limits_default_from_the_file_and_override_from_the_env(tmp_path):
    cfg = load_config(environ={})
    assert (cfg.lock_wait_timeout_seconds, cfg.statement_timeout_seconds, cfg.task_timeout_minutes) == (600, 3600, 240)
    cfg = load_config(environ={"PGBACKUP_LOCK_WAIT_TIMEOUT_SECONDS": "5", "PGBACKUP_STATEMENT_TIMEOUT_SECONDS": "90",
                               "PGBACKUP_TASK_TIMEOUT_MINUTES": "1"})
    assert (cfg.lock_wait_timeout_seconds, cfg.statement_timeout_seconds, cfg.task_timeout_minutes) == (5, 90, 1)
    p = write(tmp_path, lock_wait_timeout_seconds=30, statement_timeout_seconds=120, task_timeout_minutes=60)
    cfg = load_config(p, environ={})
    assert (cfg.lock_wait_timeout_seconds, cfg.statement_timeout_seconds, cfg.task_timeout_minutes) == (30, 120, 60)


@pytest.mark.parametrize(
    ("changes", "env", "message"),
    [
        ({"lock_wait_timeout_seconds": 0}, {}, "lock_wait_timeout_seconds: 0 is outside 1..86400"),
        ({"statement_timeout_seconds": -1}, {}, "statement_timeout_seconds: -1 is outside 1..604800"),
        ({"task_timeout_minutes": 0}, {}, "task_timeout_minutes: 0 is outside 1..10080"),
        ({"dagrun_timeout_minutes": 0}, {}, "dagrun_timeout_minutes: 0 is outside 1..10080"),
        ({}, {"PGBACKUP_DAGRUN_TIMEOUT_MINUTES": "10081"}, "dagrun_timeout_minutes: 10081 is outside 1..10080"),
        ({"dagrun_timeout_minutes": None}, {}, "dagrun_timeout_minutes: required setting is missing"),
        ({}, {"PGBACKUP_TASK_TIMEOUT_MINUTES": "4h"}, "PGBACKUP_TASK_TIMEOUT_MINUTES"),
        ({"lock_wait_timeout_seconds": None}, {}, "lock_wait_timeout_seconds"),
    ],
)
def test_bad_time_limits_are_refused_naming_the_setting(tmp_path, changes, env, message):
    with pytest.raises(ConfigError) as exc:
        load_config(write(tmp_path, **changes), environ=env)
    assert message in str(exc.value), str(exc.value)


def test_dagrun_timeout_defaults_to_six_hours_and_overrides_from_file_and_env(tmp_path):
    assert load_config(environ={}).dagrun_timeout_minutes == 360
    assert load_config(environ={"PGBACKUP_DAGRUN_TIMEOUT_MINUTES": "1"}).dagrun_timeout_minutes == 1
    assert load_config(write(tmp_path, dagrun_timeout_minutes=480), environ={}).dagrun_timeout_minutes == 480


def test_time_limits_become_our_sessions_options():
    """statement_timeout and lock_timeout (seconds in the config) reach the server as libpq options (ms)."""
    from pg_dataops.common.pg import PgConn

    conn = PgConn(host="h", port=5432, user="u", dbname="d", password="pw-9", statement_timeout=90, lock_timeout=5)
    assert conn.session_options() == "-c statement_timeout=90000 -c lock_timeout=5000"
    assert "pw-9" not in repr(conn)


def test_libpq_extras_are_kept_and_mapped_for_the_client_tools():
    from pg_dataops.common.pg import PgConn, libpq_extras

    extras = libpq_extras({"sslmode": "verify-full", "sslrootcert": "/etc/rds-ca.pem", "keepalives": True,
                           "options": "-c search_path=app", "cursor": "dictcursor", "sslkey": ""})
    # Airflow's own keys and empty values are dropped; booleans become libpq's text
    assert extras == {"sslmode": "verify-full", "sslrootcert": "/etc/rds-ca.pem", "keepalives": "true",
                      "options": "-c search_path=app"}
    conn = PgConn("h", 5432, "u", "d", "pw-9", statement_timeout=90, extras=extras)
    env = conn.client_tool_env(15)
    assert (env["PGSSLMODE"], env["PGSSLROOTCERT"]) == ("verify-full", "/etc/rds-ca.pem")
    assert env["PGOPTIONS"] == "-c search_path=app -c client_connection_check_interval=5000"
    assert conn.session_options() == "-c search_path=app -c statement_timeout=90000"
    assert repr(conn) == "PgConn(u@h:5432/d, sslmode=verify-full, password=********)"
    with pytest.raises(ValueError, match="extras sslmdoe, x are not libpq connection parameters"):
        libpq_extras({"sslmdoe": "require", "x": 1})
