"""Quantities with units at the edges, SI inside."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from federation.units import parse_bytes, parse_duration, parse_rate


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("396 GB", 396e9),
        ("10GiB", 10 * 2**30),
        ("1.2 TB", 1.2e12),
        ("8 Gbit", 1e9),
        ("4096", 4096.0),
        (4096, 4096.0),
        ("2 kB", 2000.0),
    ],
)
def test_parse_bytes(text: object, expected: float) -> None:
    assert parse_bytes(text) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("137.9 MB/s", 137.9e6), ("10 Gbit/s", 1.25e9), ("1 Gbps", 1.25e8), (5, 5.0)],
)
def test_parse_rate(text: object, expected: float) -> None:
    assert parse_rate(text) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("12 ms", 0.012), ("2 h", 7200.0), ("30 d", 30 * 86400.0), ("1.5", 1.5), (3, 3.0)],
)
def test_parse_duration(text: object, expected: float) -> None:
    assert parse_duration(text) == pytest.approx(expected)


@pytest.mark.parametrize("bad", ["lots", "12 parsecs", True, None, "nan", float("inf"), [1]])
def test_bad_quantities_are_refused_with_an_example(bad: object) -> None:
    with pytest.raises(ValueError, match=r"expected|finite"):
        parse_bytes(bad)


@given(st.floats(min_value=0, max_value=1e18, allow_nan=False))
def test_numbers_pass_through(x: float) -> None:
    assert parse_bytes(x) == x
    assert parse_rate(x) == x
    assert parse_duration(x) == x


@given(st.integers(min_value=0, max_value=10**6), st.sampled_from(["k", "M", "G", "T"]))
def test_decimal_prefixes(n: int, prefix: str) -> None:
    factor = {"k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}[prefix]
    assert parse_bytes(f"{n} {prefix}B") == pytest.approx(n * factor)
