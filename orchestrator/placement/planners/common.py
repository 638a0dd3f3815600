"""Helpers every planner shares: the deadline and budget test, choosing by an objective."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

from orchestrator.placement.costs import CostModel
from orchestrator.placement.explain import explain_all
from orchestrator.placement.links import Transfers
from orchestrator.placement.plan import Objective, ObjectiveKind, Plan, PlanningConstraints
from orchestrator.placement.schedule import Option, build_plan
from orchestrator.placement.timeshift import timeshift

if TYPE_CHECKING:
    from federation.model import Federation
    from orchestrator.workflow import Workflow
    from twin.state import SiteView


AUTO_LIMIT_S = (20.0, 60.0)
"""The least and most seconds of the automatic time limit (``auto_time_limit``)."""
AUTO_LIMIT_PER_STEP_S = 0.1
"""Seconds per step of the automatic time limit between its bounds."""


def auto_time_limit(steps: int) -> float:
    """The optimiser's time limit when the request gives none: 20 s up to 200 steps, then
    0.1 s per step, at most 60 s (600 steps and more: the benchmark's reference time).

    Measured on the capacity-bound federations (docs/placement.md, "A time limit by the
    workflow's size"): on the instances of 263 to 1,001 steps CP-SAT's neighbourhood search
    is still improving at 20 s; with this rule 68 of their 70 benchmark cases met the targets,
    66 at 20 s."""
    least, most = AUTO_LIMIT_S
    return min(most, max(least, AUTO_LIMIT_PER_STEP_S * steps))


def time_limit_for(given: float | None, steps: int) -> float:
    """``given``, or ``auto_time_limit(steps)`` when it is ``None`` (both settings classes)."""
    return given if given is not None else auto_time_limit(steps)


class ModelPlanner:
    """A planner that works on a cost model: ``plan`` builds it (refusing an objective whose
    figures are unknown everywhere) and hands it to ``plan_model``."""

    def plan(
        self,
        workflow: Workflow,
        federation: Federation,
        view: SiteView,
        constraints: PlanningConstraints,
        objective: Objective,
    ) -> Plan:
        t0 = time.perf_counter()
        model = CostModel(workflow, federation, view, constraints)
        model.refuse_unknown(objective)
        return self.plan_model(model, objective, t0)

    def plan_model(self, model: CostModel, objective: Objective, t0: float) -> Plan:
        raise NotImplementedError


def heuristic_plan(
    model: CostModel,
    placed: Mapping[str, tuple[str, float, float]],
    booked: Transfers,
    objective: Objective,
    planner: str,
    awards: Mapping[str, str] | None = None,
    notes: tuple[str, ...] = (),
    explain: bool = True,
) -> Plan:
    """A list-scheduled placement time-shifted within the deadline, built and, when
    ``explain``, explained (the optimiser's starts are not: its final plan is)."""
    placed, booked, moved = timeshift(model, placed, objective, model.constraints.deadline, booked)
    why = explain_all(model, placed, objective, awards, booked) if explain else None
    if moved:
        notes = (*notes, f"time-shifted {moved} steps")
    return build_plan(
        model, placed, objective, planner, "heuristic", 0.0, why, notes=notes, transfers=booked
    )


def limit_breach(plan: Plan, constraints: PlanningConstraints) -> str:
    """Why ``plan`` breaks the request's deadline or budget ("" when it keeps both)."""
    m = plan.metrics
    if constraints.deadline is not None and m.makespan_s > constraints.deadline * (1 + 1e-9):
        return f"makespan {m.makespan_s:.1f} s exceeds the deadline {constraints.deadline:.1f} s"
    if constraints.budget is not None and m.cost_eur > constraints.budget * (1 + 1e-9):
        return f"cost {m.cost_eur:.4g} EUR exceeds the budget {constraints.budget:.4g} EUR"
    return ""


def pick(
    opts: list[Option], objective: Objective, terms: Mapping[str, Mapping[str, float]]
) -> Option:
    """The option with the lowest score, criteria normalised by their best value among options."""
    ref = {t: min(terms[o.site][t] for o in opts) for t in ("time", "cost", "energy", "carbon")}
    return min(opts, key=lambda o: (objective.score(terms[o.site], ref), o.end))


TIME_WEIGHTS = (1.0, 4.0, 16.0)
"""Weights on the makespan (or the cost) tried in turn when a heuristic's plan breaks a limit."""


def escalating(objective: Objective, breach: str = "") -> Iterator[Objective]:
    """``objective``'s weights with the makespan weighted 1, 4, 16 (after a missed deadline),
    or the cost (after a blown ``breach``, a ``limit_breach`` message starting with "cost").

    Heuristics that choose step by step try ``objective`` first, then these in turn until
    a plan keeps the deadline and the budget.
    """
    w = objective.weights()
    term = "cost" if breach.startswith("cost") else "time"
    for weight in TIME_WEIGHTS:
        yield Objective(ObjectiveKind.WEIGHTED, **{**w, term: max(w[term], weight)})


def score_of(plan: Plan, objective: Objective, ref: Mapping[str, float]) -> float:
    """The plan's objective value, normalised by ``ref`` (HEFT's values)."""
    return objective.score(plan.metrics.values(), ref)


def better(a: Plan, b: Plan, objective: Objective, ref: Mapping[str, float]) -> bool:
    """True when ``a`` scores strictly lower than ``b`` (a relative margin of 1e-9)."""
    sa, sb = score_of(a, objective, ref), score_of(b, objective, ref)
    return sa < sb - 1e-9 * max(1.0, abs(sb))
