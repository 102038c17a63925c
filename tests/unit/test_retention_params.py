"""The retention operator's params as templates render them: natively, or as text; never a silent default."""

from __future__ import annotations

import pytest
from airflow.sdk.exceptions import AirflowFailException
from pg_dataops.retention.operators import as_bool, as_fraction, as_targets


@pytest.mark.parametrize(("value", "expected"), [(True, True), (False, False), ("True", True), ("false", False),
                                                 (" 0 ", False), ("yes", True)])
def test_dry_run_values(value, expected):
    assert as_bool(value, "dry_run") is expected


@pytest.mark.parametrize("value", [None, "", "maybe", 1, "None"])
def test_dry_run_is_never_guessed(value):
    with pytest.raises(AirflowFailException, match="dry_run: expected true or false"):
        as_bool(value, "dry_run")


@pytest.mark.parametrize(("value", "expected"), [(None, None), ("None", None), ("", None), (1, 1.0), ("0.75", 0.75),
                                                 (0.5, 0.5)])
def test_fraction_values(value, expected):
    assert as_fraction(value) == expected


@pytest.mark.parametrize("value", [0, 1.5, -0.1, "half", True, "nan"])
def test_fraction_out_of_range(value):
    with pytest.raises(AirflowFailException, match=r"max_delete_fraction: expected a number in \(0, 1\] or null"):
        as_fraction(value)


def test_targets():
    assert as_targets(None) is None and as_targets("None") is None
    assert as_targets(["glimpse"]) == ["glimpse"]
    assert as_targets('["glimpse", "other"]') == ["glimpse", "other"]
    assert as_targets("glimpse, other") == ["glimpse", "other"]
    with pytest.raises(AirflowFailException, match="targets: expected a list of target names"):
        as_targets([])
