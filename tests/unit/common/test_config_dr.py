"""The dr section of the config: defaults (not on RDS), environment overrides, errors naming the field."""

from pathlib import Path

import pytest
import yaml
from pg_dataops.common.config import DEFAULT_CONFIG_PATH, ConfigError, Dr, load_config


def write(tmp_path: Path, dr: dict | None) -> Path:
    data = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
    if dr is None:
        data.pop("dr", None)
    else:
        data["dr"] = dr
    p = tmp_path / "cfg.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def test_defaults_are_not_on_rds():
    dr = load_config(environ={}).dr
    assert dr == Dr()
    assert (dr.rds_instance_id, dr.rds_conn_id, dr.rds_snapshot_schedule) == (None, "aws_rds", "0 4 * * *")
    assert (dr.rds_retention_days, dr.rds_snapshot_prefix) == (30, "glimpse-manual")


def test_a_config_without_the_section_gets_the_defaults(tmp_path):
    assert load_config(write(tmp_path, None), environ={}).dr == Dr()


def test_the_yaml_sets_every_field(tmp_path):
    dr = load_config(write(tmp_path, {"rds_instance_id": "glimpse-production", "rds_conn_id": "aws_prod",
                                      "rds_snapshot_schedule": "30 5 * * *", "rds_retention_days": 14,
                                      "rds_snapshot_prefix": "glimpse-snap"}), environ={}).dr
    assert dr == Dr(rds_instance_id="glimpse-production", rds_conn_id="aws_prod", rds_snapshot_schedule="30 5 * * *",
                    rds_retention_days=14, rds_snapshot_prefix="glimpse-snap")


def test_environment_overrides(tmp_path):
    dr = load_config(environ={"PGBACKUP_DR_RDS_INSTANCE_ID": "glimpse-production",
                              "PGBACKUP_DR_RDS_RETENTION_DAYS": "7", "PGBACKUP_DR_RDS_CONN_ID": "aws_rds_prod"}).dr
    assert (dr.rds_instance_id, dr.rds_retention_days, dr.rds_conn_id) == ("glimpse-production", 7, "aws_rds_prod")
    # "" or "null" in the environment switches RDS off again, whatever the file says
    path = write(tmp_path, {"rds_instance_id": "glimpse-production"})
    assert load_config(path, environ={"PGBACKUP_DR_RDS_INSTANCE_ID": "null"}).dr.rds_instance_id is None
    assert load_config(path, environ={"PGBACKUP_DR_RDS_INSTANCE_ID": ""}).dr.rds_instance_id is None


@pytest.mark.parametrize(("dr", "message"), [
    ({"rds_instance_id": "1glimpse"}, "dr.rds_instance_id: '1glimpse' is not an RDS instance identifier"),
    ({"rds_instance_id": "glimpse--prod"}, "dr.rds_instance_id: 'glimpse--prod' is not an RDS instance identifier"),
    ({"rds_instance_id": "glimpse-"}, "dr.rds_instance_id: 'glimpse-' is not an RDS instance identifier"),
    ({"rds_instance_id": "glimpse_prod"}, "dr.rds_instance_id: 'glimpse_prod' is not an RDS instance identifier"),
    ({"rds_instance_id": "g" * 64}, "dr.rds_instance_id:"),
    ({"rds_snapshot_schedule": "daily"}, "dr.rds_snapshot_schedule: not a valid cron expression: 'daily'"),
    ({"rds_retention_days": 0}, "dr.rds_retention_days: 0 is outside 1..3650"),
    ({"rds_retention_days": "thirty"}, "dr.rds_retention_days: expected an integer"),
    ({"rds_snapshot_prefix": "glimpse manual"}, "dr.rds_snapshot_prefix: 'glimpse manual' must start a valid"),
    ({"rds_conn_id": " "}, "dr.rds_conn_id: must not be empty"),
    ({"rds_bucket": "x"}, "dr.rds_bucket: unknown setting"),
])
def test_errors_name_the_field(tmp_path, dr, message):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, dr), environ={})
    assert message in str(err.value)


def test_a_63_character_identifier_is_accepted(tmp_path):
    name = "g" + "-a" * 31
    assert len(name) == 63
    assert load_config(write(tmp_path, {"rds_instance_id": name}), environ={}).dr.rds_instance_id == name


def test_environment_errors_name_the_variable():
    with pytest.raises(ConfigError) as err:
        load_config(environ={"PGBACKUP_DR_RDS_RETENTION_DAYS": "a month"})
    assert "dr.rds_retention_days" in str(err.value) and "PGBACKUP_DR_RDS_RETENTION_DAYS" in str(err.value)
