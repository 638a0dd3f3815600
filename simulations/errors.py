"""Errors of the ``simulations`` package."""

from __future__ import annotations

from federation.errors import InvalidInput


class SimulationError(Exception):
    """Root of the errors raised by the ``simulations`` package."""


class InvalidScenario(InvalidInput, SimulationError):
    """A scenario document is invalid (names the file, the field path and the problem)."""


class InvalidTrace(InvalidInput, SimulationError):
    """A workload trace or a data series file cannot be read (names the file and the line)."""
