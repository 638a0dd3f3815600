"""Errors of the ``orchestrator`` package."""

from __future__ import annotations

from federation.errors import InvalidInput


class OrchestratorError(Exception):
    """Root of the errors raised by the ``orchestrator`` package."""


class InvalidWorkflow(InvalidInput, OrchestratorError):
    """A workflow document is invalid (names the source, the field path and the problem)."""
