"""Helpers the resource routers share."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Query

from federation.errors import InvalidInput, Problem

UUID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
"""Ids of stored workflows and plans (uuid4, lower case)."""


@dataclass(frozen=True)
class PageParams:
    """``?limit=&offset=`` of a list endpoint (oldest first)."""

    limit: int
    offset: int


def _page(
    limit: Annotated[int, Query(ge=1, le=1000, description="at most this many items")] = 100,
    offset: Annotated[int, Query(ge=0, le=10**9, description="items to skip")] = 0,
) -> PageParams:
    return PageParams(limit, offset)


Page = Annotated[PageParams, Depends(_page)]


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
