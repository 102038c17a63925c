"""Sizes and durations as people read them."""

import pytest
from pg_dataops.common.formatting import fmt_bytes, fmt_duration


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

