"""The retention run's params as templates render them: natively, or as text; never a silent default.

Parsed in the core (``pg_dataops.retention.plan``); a bad value is a RetentionParamError, which fails the
task at once (a PermanentError).
"""

from __future__ import annotations

import datetime as dt

import pytest
from pg_dataops.common.config import load_config
from pg_dataops.common.errors import PermanentError
from pg_dataops.retention.plan import RetentionParamError, as_bool, as_fraction, as_targets, run_params


@pytest.mark.parametrize(("value", "expected"), [(True, True), (False, False), ("True", True), ("false", False),
                                                 (" 0 ", False), ("yes", True)])
def test_dry_run_values(value, expected):
    assert as_bool(value, "dry_run") is expected


@pytest.mark.parametrize("value", [None, "", "maybe", 1, "None"])
def test_dry_run_is_never_guessed(value):
    with pytest.raises(RetentionParamError, match="dry_run: expected true or false"):
        as_bool(value, "dry_run")


@pytest.mark.parametrize(("value", "expected"), [(None, None), ("None", None), ("", None), (1, 1.0), ("0.75", 0.75),
                                                 (0.5, 0.5)])
def test_fraction_values(value, expected):
    assert as_fraction(value) == expected


@pytest.mark.parametrize("value", [0, 1.5, -0.1, "half", True, "nan"])
def test_fraction_out_of_range(value):
    with pytest.raises(RetentionParamError, match=r"max_delete_fraction: expected a number in \(0, 1\] or null"):
        as_fraction(value)


def test_targets():
    assert as_targets(None) is None and as_targets("None") is None
    assert as_targets(["glimpse"]) == ["glimpse"]
    assert as_targets('["glimpse", "other"]') == ["glimpse", "other"]
    assert as_targets("glimpse, other") == ["glimpse", "other"]
    with pytest.raises(RetentionParamError, match="targets: expected a list of target names"):
        as_targets([])


def test_run_params_fall_back_to_the_config_and_fail_at_once():
    cfg = load_config(environ={})
    params = run_params(cfg, dry_run="true")
    assert params.dry_run is True and params.max_delete_fraction == cfg.retention.max_delete_fraction
    assert params.targets == ["glimpse"] and params.targets_from == "config"
    assert params.max_future_skew == dt.timedelta(minutes=cfg.retention.max_future_skew_minutes)
    named = run_params(cfg, dry_run=False, max_delete_fraction="1", targets="other, legacy, other")
    assert named.max_delete_fraction == 1.0 and named.targets == ["legacy", "other"] and named.targets_from == "param"
    assert issubclass(RetentionParamError, PermanentError)  # retrying cannot fix a param
    with pytest.raises(RetentionParamError, match="dry_run: expected true or false, got None"):
        run_params(cfg, dry_run=None)
