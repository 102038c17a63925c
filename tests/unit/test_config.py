from pathlib import Path

import pytest
import yaml
from pg_dataops.config import DEFAULT_CONFIG_PATH, ConfigError, load_config


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
