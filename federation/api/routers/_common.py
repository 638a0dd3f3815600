"""Helpers the resource routers share."""

from __future__ import annotations

import math
from typing import Any

from federation.errors import InvalidInput, Problem


def prefixed(exc: InvalidInput, prefix: str) -> InvalidInput:
    """``exc`` with every location under ``prefix`` (``workflow.steps[2].cores``)."""
    problems = [
        Problem(f"{prefix}.{p.location}" if p.location else prefix, p.message) for p in exc.problems
    ]
    return InvalidInput(exc.source, problems)


def json_safe(value: Any) -> Any:
    """``value`` with non-finite floats replaced by None (JSON has no inf or NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value
