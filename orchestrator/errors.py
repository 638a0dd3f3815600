"""Errors of the ``orchestrator`` package."""

from __future__ import annotations

from federation.errors import InvalidInput


class OrchestratorError(Exception):
    """Root of the errors raised by the ``orchestrator`` package."""


class InvalidWorkflow(InvalidInput, OrchestratorError):
    """A workflow document is invalid (names the source, the field path and the problem)."""


class PlanningError(OrchestratorError):
    """A placement problem could not be solved (say which constraint to relax)."""


class InfeasiblePlan(PlanningError):
    """No plan satisfies the constraints (eligibility, capacity, deadline or budget)."""


class PlanInvalid(PlanningError):
    """A plan failed the independent plan checker; ``violations`` lists every failure."""

    def __init__(self, planner: str, violations: list[str]) -> None:
        self.planner = planner
        self.violations = list(violations)
        more = len(violations) - 1
        tail = f" (and {more} more)" if more > 0 else ""
        super().__init__(f"plan from {planner} is invalid: {violations[0]}{tail}")


class InvalidCDT(InvalidInput, OrchestratorError):
    """A CDT scheduling-problem document is invalid (names the file and the field path)."""
