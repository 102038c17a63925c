"""The pitr section of the config: defaults, overrides, and errors that name the field."""

from pathlib import Path

import pytest
import yaml
from pg_dataops.common.config import DEFAULT_CONFIG_PATH, ConfigError, load_config


def write(tmp_path: Path, pitr: dict) -> Path:
    data = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
    data["pitr"] = pitr
    p = tmp_path / "cfg.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def test_defaults_follow_the_runbook_objectives():
    cfg = load_config(environ={})
    p = cfg.pitr
    assert (p.window_days, p.archive_timeout_seconds, p.rpo_minutes) == (7, 60, 60)
    assert (p.wal_prefix, p.base_prefix, p.recovery_database) == ("wal", "base", "glimpse_recovery")
    assert [t.name for t in cfg.pitr_targets] == ["glimpse"]


def test_environment_overrides_pitr_fields():
    cfg = load_config(environ={"PGBACKUP_PITR_WINDOW_DAYS": "3", "PGBACKUP_PITR_WAL_TOOLS_BIN": "/opt/x/bin"})
    assert (cfg.pitr.window_days, cfg.pitr.wal_tools_bin) == (3, "/opt/x/bin")


@pytest.mark.parametrize(("pitr", "message"), [
    ({"window_days": 0}, "pitr.window_days: 0 is outside 1..400"),
    ({"window_days": "seven"}, "pitr.window_days: expected an integer"),
    ({"wal_prefix": "/wal"}, "pitr.wal_prefix: '/wal' must be a relative S3 path"),
    ({"wal_prefix": "base"}, "pitr.wal_prefix and pitr.base_prefix must differ"),
    ({"wal_compression": "zstd"}, "pitr.wal_compression: 'zstd' is not one of gzip, bzip2, xz, none"),
    ({"wal_tools_bin": "bin"}, "pitr.wal_tools_bin: 'bin' must be an absolute path"),
    ({"base_backup_schedule": "every day"}, "pitr.base_backup_schedule: not a valid cron expression"),
    ({"recovery_database": "Glimpse-Recovery"}, "pitr.recovery_database: 'Glimpse-Recovery' must be lower-case"),
    ({"targets": ["nope"]}, "pitr.targets: no target named 'nope' (configured: glimpse)"),
    ({"window": 7}, "pitr.window: unknown setting"),
])
def test_bad_values_are_named(tmp_path, pitr, message):
    with pytest.raises(ConfigError) as exc:
        load_config(write(tmp_path, pitr), environ={})
    assert message in str(exc.value)


def test_targets_limit_pitr(tmp_path):
    data = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
    data["targets"].append({"name": "reports", "conn_id": "reports_db"})
    data["pitr"] = {"targets": ["reports"]}
    p = tmp_path / "cfg.yaml"
    p.write_text(yaml.safe_dump(data))
    cfg = load_config(p, environ={})
    assert [t.name for t in cfg.pitr_targets] == ["reports"]
