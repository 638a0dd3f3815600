"""Greedy cheapest / greenest placement: each step to the site best for the objective.

Steps are taken in HEFT's upward-rank order; each goes to the eligible site
minimising its own criteria under the objective (normalised by the best value
among the sites: cost for ``cost``, carbon for ``carbon``, and so on; ties go to
the earlier finish). Then steps with slack are time-shifted to cheap or
low-carbon slots. If the result misses the deadline (the budget), the makespan's
(the cost's) weight is raised step by step (weights 1, 4, 16) and finally
HEFT's plan is taken; ``InfeasiblePlan`` if none keeps the limits.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from orchestrator.errors import InfeasiblePlan
from orchestrator.placement.costs import CostModel
from orchestrator.placement.plan import Objective, Plan
from orchestrator.placement.planners.common import (
    ModelPlanner,
    escalating,
    heuristic_plan,
    limit_breach,
    pick,
)
from orchestrator.placement.planners.heft import HEFTPlanner
from orchestrator.placement.schedule import Option, list_schedule, upward_ranks

if TYPE_CHECKING:
    pass


class GreedyPlanner(ModelPlanner):
    """The cheapest (objective ``cost``) or greenest (``carbon``) site per step."""

    name = "greedy"

    def __init__(self, explain: bool = True) -> None:
        self.explain = explain

    def plan_model(self, model: CostModel, objective: Objective, t0: float) -> Plan:
        """Greedy on an already built cost model (the optimiser's incumbents reuse it)."""
        constraints = model.constraints
        ranks = upward_ranks(model)
        last = ""
        tries = iter([objective])
        while (obj := next(tries, None)) is not None:

            def choose(step: str, opts: list[Option], obj: Objective = obj) -> Option:
                terms = {o.site: model.terms(step, o.site, o.start) for o in opts}
                return pick(opts, obj, terms)

            placed, booked, _ = list_schedule(model, ranks, choose)
            plan = heuristic_plan(model, placed, booked, objective, self.name, explain=self.explain)
            last = limit_breach(plan, constraints)
            if not last:
                return plan.with_metrics(wall_s=time.perf_counter() - t0)
            if obj is objective:  # then weigh the limit it broke more, step by step
                tries = escalating(objective, last)
        plan = HEFTPlanner(self.explain).plan_model(model, objective, t0)
        if limit_breach(plan, constraints):
            raise InfeasiblePlan(f"greedy: {last}; even HEFT misses it: relax the limit")
        return plan.with_metrics(planner=self.name, wall_s=time.perf_counter() - t0)
