"""HEFT (Topcuoglu, Hariri and Wu, 2002) on the shared cost model.

Steps are ranked by their upward rank (mean duration over eligible sites plus
the heaviest path of mean transfer delays and ranks below); in that order each
step goes to the site where it finishes earliest, counting transfer delays
from its parents' sites, the site's core pool and its expected queue wait.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from orchestrator.errors import InfeasiblePlan
from orchestrator.placement.costs import CostModel
from orchestrator.placement.explain import explain_all
from orchestrator.placement.plan import Objective, Plan, PlanningConstraints
from orchestrator.placement.planners.common import ModelPlanner, limit_breach
from orchestrator.placement.schedule import Option, build_plan, list_schedule, upward_ranks

if TYPE_CHECKING:
    from federation.model import Federation
    from orchestrator.workflow import Workflow
    from twin.state import SiteView


def earliest_finish(step: str, opts: list[Option]) -> Option:
    """HEFT's choice: the earliest finish (ties: the earlier start, then site order)."""
    return min(opts, key=lambda o: (o.end, o.start))


class HEFTPlanner(ModelPlanner):
    """Heterogeneous Earliest Finish Time: the baseline and the ILP's warm start."""

    name = "heft"

    def __init__(self, explain: bool = True) -> None:
        self.explain = explain

    def plan(
        self,
        workflow: Workflow,
        federation: Federation,
        view: SiteView,
        constraints: PlanningConstraints,
        objective: Objective,
    ) -> Plan:
        plan = super().plan(workflow, federation, view, constraints, objective)
        breach = limit_breach(plan, constraints)
        if breach:
            raise InfeasiblePlan(f"heft: {breach}; relax the limit or use the ilp planner")
        return plan

    def plan_model(self, model: CostModel, objective: Objective, t0: float) -> Plan:
        """HEFT on an already built cost model (the ILP reuses it)."""
        placed, transfers, _ = list_schedule(model, upward_ranks(model), earliest_finish)
        why = explain_all(model, placed, objective, None, transfers) if self.explain else None
        return build_plan(
            model,
            placed,
            objective,
            self.name,
            "heuristic",
            time.perf_counter() - t0,
            why,
            transfers=transfers,
        )
