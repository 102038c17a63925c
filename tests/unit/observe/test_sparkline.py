from decimal import Decimal

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

