"""Machine-actionable data project plans (MADPP), compatible with the RDA maDMP 1.2.

This module validates a plan against the official RDA DMP Common Standard
JSON schema (``maDMP-schema-1.2.json``, public domain, shipped with the
package) and reports each error with its JSON path.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import cache
from importlib import resources
from typing import Any

import jsonschema

from datalogistics.errors import DataLogisticsError
from federation.errors import InvalidInput, Problem, format_location


class InvalidPlan(InvalidInput, DataLogisticsError):
    """A data project plan is invalid (names the source and the JSON path)."""


@cache
def madmp_schema() -> dict[str, Any]:
    """The RDA maDMP 1.2 JSON schema shipped with the package."""
    text = resources.files("datalogistics").joinpath("schemas/maDMP-schema-1.2.json").read_text()
    schema: dict[str, Any] = json.loads(text)
    return schema


def is_madmp(data: Any) -> bool:
    """True when ``data`` looks like an maDMP document (a top-level ``dmp`` object)."""
    return isinstance(data, Mapping) and "dmp" in data


def madmp_problems(data: Any) -> list[Problem]:
    """Every schema violation of ``data``, each with its JSON path (``dmp.dataset[0].title``)."""
    schema = madmp_schema()
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    validator = cls(schema, format_checker=cls.FORMAT_CHECKER)
    errors = sorted(validator.iter_errors(data), key=lambda e: [str(p) for p in e.absolute_path])
    return [Problem(format_location(e.absolute_path), e.message) for e in errors]


def validate_madmp(data: Any, source: str = "<dict>") -> Mapping[str, Any]:
    """Check ``data`` against the maDMP 1.2 schema; ``InvalidPlan`` with JSON paths if not."""
    if not isinstance(data, Mapping):
        raise InvalidPlan.single(source, "", f"a plan is a mapping, got {type(data).__name__}")
    problems = madmp_problems(data)
    if problems:
        raise InvalidPlan(source, problems)
    return data
