"""Quantities with units at the edges (YAML, CLI), SI numbers inside.

Federation and workflow files may say ``memory: 396 GB``, ``bandwidth: 137.9 MB/s``
or ``latency: 12 ms``; the model stores bytes, bytes per second and seconds.
Decimal prefixes are powers of 1000 (``GB``), binary ones powers of 1024 (``GiB``);
bits (``Gbit/s``, ``Gbps``) are divided by 8.
"""

from __future__ import annotations

import math
import re
from typing import Annotated

from pydantic import BeforeValidator

_PREFIX = {
    "": 1.0,
    "k": 1e3,
    "K": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "P": 1e15,
    "E": 1e18,
    "Ki": 2.0**10,
    "Mi": 2.0**20,
    "Gi": 2.0**30,
    "Ti": 2.0**40,
    "Pi": 2.0**50,
    "Ei": 2.0**60,
}
_NUMBER = r"(?P<num>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)"
_BYTES_RE = re.compile(
    _NUMBER + r"\s*(?:(?P<prefix>Ki|Mi|Gi|Ti|Pi|Ei|k|K|M|G|T|P|E)?(?P<unit>B|bit|b))?$"
)
_RATE_RE = re.compile(
    _NUMBER
    + r"\s*(?:(?P<prefix>Ki|Mi|Gi|Ti|Pi|Ei|k|K|M|G|T|P|E)?(?P<unit>B/s|bit/s|b/s|bps|Bps))?$"
)
_DURATION_UNITS = {
    "": 1.0,
    "s": 1.0,
    "sec": 1.0,
    "ms": 1e-3,
    "us": 1e-6,
    "min": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    "day": 86400.0,
    "days": 86400.0,
    "w": 604800.0,
}
_DURATION_RE = re.compile(_NUMBER + r"\s*(?P<unit>[a-z]*)$")


def _finite(value: float | int, what: str) -> float:
    """``value`` as a finite float; ``ValueError`` for inf, NaN or an int too large for a float."""
    try:
        number = float(value)
    except OverflowError:
        raise ValueError(f"{what} must be a finite number, got an integer too large") from None
    if not math.isfinite(number):
        raise ValueError(f"{what} must be a finite number, got {number!r}")
    return number


def parse_bytes(value: object) -> float:
    """Parse a size (``1.2 TB``, ``10GiB``, ``8 Gbit``, ``4096``) into bytes."""
    if isinstance(value, bool):
        raise ValueError(f"expected a size in bytes, got {value!r}")
    if isinstance(value, int | float):
        return _finite(value, "a size")
    if isinstance(value, str):
        m = _BYTES_RE.match(value.strip())
        if m:
            factor = _PREFIX[m.group("prefix") or ""]
            if m.group("unit") in ("bit", "b"):
                factor /= 8.0
            return _finite(float(m.group("num")) * factor, "a size")
    raise ValueError(f"expected a size such as 4096, '396 GB' or '10 GiB', got {value!r}")


def parse_rate(value: object) -> float:
    """Parse a bandwidth (``137.9 MB/s``, ``10 Gbit/s``, ``1e9``) into bytes per second."""
    if isinstance(value, bool):
        raise ValueError(f"expected a bandwidth in bytes/s, got {value!r}")
    if isinstance(value, int | float):
        return _finite(value, "a bandwidth")
    if isinstance(value, str):
        m = _RATE_RE.match(value.strip())
        if m:
            factor = _PREFIX[m.group("prefix") or ""]
            if m.group("unit") in ("bit/s", "b/s", "bps"):
                factor /= 8.0
            return _finite(float(m.group("num")) * factor, "a bandwidth")
    raise ValueError(f"expected a bandwidth such as '137.9 MB/s' or '10 Gbit/s', got {value!r}")


def parse_duration(value: object) -> float:
    """Parse a duration (``12 ms``, ``2 h``, ``3600``) into seconds."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration in seconds, got {value!r}")
    if isinstance(value, int | float):
        return _finite(value, "a duration")
    if isinstance(value, str):
        m = _DURATION_RE.match(value.strip())
        if m and m.group("unit") in _DURATION_UNITS:
            return _finite(float(m.group("num")) * _DURATION_UNITS[m.group("unit")], "a duration")
    raise ValueError(f"expected a duration such as 30, '12 ms' or '2 h', got {value!r}")


Bytes = Annotated[float, BeforeValidator(parse_bytes)]
"""A size in bytes; YAML may give it with a unit."""
BytesPerSecond = Annotated[float, BeforeValidator(parse_rate)]
"""A bandwidth in bytes per second; YAML may give it with a unit."""
Seconds = Annotated[float, BeforeValidator(parse_duration)]
"""A duration in seconds; YAML may give it with a unit."""
