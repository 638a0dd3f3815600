"""Errors of the ``twin`` package.

``TwinError`` is the root of everything the twin raises on its own;
``InvalidTelemetry`` is also a ``federation.errors.InvalidInput`` so that the CLI
and the API report it as a bad input (exit status 2, HTTP 4xx) with the file,
the row or field, and what to change.
"""

from __future__ import annotations

from federation.errors import InvalidInput


class TwinError(Exception):
    """Root of the errors raised by the ``twin`` package."""


class InvalidTelemetry(InvalidInput, TwinError):
    """A telemetry file, sample or series is invalid (names the file, row or column)."""


class ModelError(ValueError, TwinError):
    """A state-space model, a filter call or a policy was given inconsistent arrays or options."""


__all__ = ["InvalidTelemetry", "ModelError", "TwinError"]
