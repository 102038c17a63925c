from decimal import Decimal

import pytest
from pg_dataops.common.formatting import fmt_bytes, fmt_duration
from pg_dataops.observe.report import sparkline


def test_empty_input_is_an_empty_line():
    assert sparkline([]) == ""
    assert sparkline(iter(())) == ""


def test_eight_steps_use_every_bar_once():
    assert sparkline(range(8)) == "▁▂▃▄▅▆▇█"
    assert sparkline([70, 60, 50, 40, 30, 20, 10, 0]) == "█▇▆▅▄▃▂▁"


def test_scaled_between_min_and_max_with_rounding():
    assert sparkline([0, 1, 2]) == "▁▅█"  # 1 is at 3.5 of 7 steps: rounds up
    assert sparkline([-5, 0, 5]) == "▁▅█"  # negative values scale the same way
    assert sparkline([100, 100.1, 200]) == "▁▁█"


def test_constant_values_are_a_flat_middle_line():
    assert sparkline([5, 5, 5]) == "▄▄▄"
    assert sparkline([0]) == "▄"
    assert sparkline([None, 3, None, 3]) == " ▄ ▄"


def test_none_nan_and_infinity_are_gaps():
    assert sparkline([1, None, 3]) == "▁ █"
    assert sparkline([None, None]) == "  "
    assert sparkline([0, float("nan"), 7, float("inf")]) == "▁ █ "
    assert sparkline([1, None, 3], gap="·") == "▁·█"


def test_decimal_and_int_values():
    assert sparkline([Decimal("1.5"), 2, 2.5]) == "▁▅█"


@pytest.mark.parametrize("n, text", [
    (None, "unknown size"), (0, "0 B"), (1023, "1023 B"), (1024, "1.0 KiB"), (1536, "1.5 KiB"),
    (5 * 1024**2, "5.0 MiB"), (int(1.4 * 1024**3), "1.4 GiB"), (3 * 1024**4, "3.0 TiB"), (2 * 1024**5, "2.0 PiB"),
])
def test_fmt_bytes(n, text):
    assert fmt_bytes(n) == text


@pytest.mark.parametrize("seconds, text", [
    (None, "unknown duration"), (0, "0.0 s"), (42.04, "42.0 s"), (59.97, "1 min"), (60, "1 min"),
    (185, "3 min 5 s"), (3600, "1 h"), (3720, "1 h 2 min"), (14400, "4 h"),
])
def test_fmt_duration(seconds, text):
    assert fmt_duration(seconds) == text
