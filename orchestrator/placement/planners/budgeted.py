"""Budget-keeping starts for the optimiser: list schedulers that spend a budget on purpose.

Greedy and the market meet a budget ``B`` only by weighting the cost by 1, 4 or 16 in
every step's choice alike, which is far from the best plan under ``B`` where the budget
binds (the makespan under ``B`` was up to 1.8x the best known on regional-4). Two
families of plans, each list-scheduled in HEFT's upward-rank order, for every objective
when a budget is set (the plans that keep the deadline and ``B`` join the incumbents):

* **cost-weighted** (``cost_weighted``): each step goes to the option minimising the
  objective plus ``lambda`` times the cost (both normalised by their best value among
  the step's options, as greedy does); ``lambda`` is bisected (geometrically, from
  ``1/64`` to ``64``, five times) for the smallest weight whose plan keeps ``B``;
* **budget-paced** (``budget_paced``, after BHEFT, Zheng and Sakellariou, *Budget-deadline
  constrained workflow planning for admission control*, J. Grid Comput. 2013): the spare
  budget is what is left of ``B`` once every step not yet placed is counted at its
  cheapest site; each step may spend its cheapest cost plus a share of the spare budget
  (``greed`` times its share of the cheapest costs left, all of it with ``greed = inf``)
  and takes, among the options within that allowance (run cost at the option's start
  plus the transfers it books), the best for the objective (the earliest finish for
  ``time``); the cheapest option when none is within it.

And the cheapest plans of greedy and the market (their plans for ``cost`` under the
deadline): when those break ``B`` no heuristic keeps it. And HEFT's plan *paid down*
(``paid_down``): steps moved to cheaper sites, those with slack first, until ``B`` holds.
All are heuristics with no guarantee; the optimiser keeps the best limit-keeping plan of
all its starts and engines.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable

from orchestrator.errors import InfeasiblePlan
from orchestrator.placement.costs import CostModel
from orchestrator.placement.improve import cheaper_sites
from orchestrator.placement.links import Transfers, transfers_of
from orchestrator.placement.plan import Objective, ObjectiveKind, Plan
from orchestrator.placement.planners.common import limit_breach, pick
from orchestrator.placement.planners.greedy import GreedyPlanner
from orchestrator.placement.planners.market import MarketPlanner
from orchestrator.placement.schedule import Option, build_plan, list_schedule, upward_ranks
from orchestrator.placement.timeshift import timeshift

GREEDS = (1.0, 2.0, 4.0, math.inf)
"""The budget-paced variants: a step's share of the spare budget times these."""
LAMBDA_RANGE = (1.0 / 64.0, 64.0)
BISECTIONS = 5


def option_cost(model: CostModel, step: str, o: Option) -> float:
    """EUR of placing ``step`` as ``o``: its run cost at the option's start and the
    transfers the option books."""
    wf = model.workflow
    moved = sum(model.transfer_cost(b.src, b.dst, wf.item(b.item).size) for b in o.bookings)
    return model.run_cost(step, o.site, o.start) + moved


def _best_for(model: CostModel, objective: Objective) -> Callable[[str, list[Option]], Option]:
    """The objective's choice among options (the earliest finish for ``time``)."""
    if objective.kind is ObjectiveKind.TIME:
        return lambda step, opts: min(opts, key=lambda o: (o.end, o.start))

    def choose(step: str, opts: list[Option]) -> Option:
        terms = {o.site: model.terms(step, o.site, o.start) for o in opts}
        return pick(opts, objective, terms)

    return choose


def budget_paced(model: CostModel, objective: Objective, greed: float) -> Plan:
    """The budget-paced list schedule (module docstring) with ``greed``."""
    budget = model.constraints.budget
    if budget is None:
        raise ValueError("budget_paced needs a budget")
    cheapest = {
        s.id: min((model.run_cost(s.id, x, 0.0) for x in model.eligible[s.id]), default=0.0)
        for s in model.steps
    }
    state = {"spent": 0.0, "rest": sum(cheapest.values())}
    best_for = _best_for(model, objective)

    def choose(step: str, opts: list[Option]) -> Option:
        own = cheapest[step]
        rest = state["rest"] - own
        spare = max(0.0, budget - state["spent"] - rest - own)
        share = 1.0 if math.isinf(greed) else min(1.0, greed * own / max(own + rest, 1e-300))
        allow = own + spare * share
        costs = {o.site: option_cost(model, step, o) for o in opts}
        within = [o for o in opts if costs[o.site] <= allow * (1 + 1e-9)]
        chosen = best_for(step, within) if within else min(opts, key=lambda o: costs[o.site])
        state["spent"] += costs[chosen.site]
        state["rest"] = rest
        return chosen

    placed, booked, _ = list_schedule(model, upward_ranks(model), choose)
    name = "budget-paced" + ("" if math.isinf(greed) else f"x{greed:g}")
    return _lean_plan(model, placed, booked, objective, name)


def cost_weighted(model: CostModel, objective: Objective, weight: float) -> Plan:
    """Each step at the option best for ``objective`` plus ``weight`` times the cost."""
    w = objective.weights()
    mixed = Objective(ObjectiveKind.WEIGHTED, **{**w, "cost": w["cost"] + weight})

    def choose(step: str, opts: list[Option]) -> Option:
        terms = {o.site: model.terms(step, o.site, o.start) for o in opts}
        return pick(opts, mixed, terms)

    placed, booked, _ = list_schedule(model, upward_ranks(model), choose)
    return _lean_plan(model, placed, booked, objective, f"cost-weighted({weight:.3g})")


def _lean_plan(
    model: CostModel,
    placed: dict[str, tuple[str, float, float]],
    booked: Transfers,
    objective: Objective,
    name: str,
) -> Plan:
    """The placement time-shifted within the deadline and built, without explanations (the
    optimiser explains the plan it returns; a thousand steps' explanations cost more than
    their list schedule)."""
    placed, booked, _ = timeshift(model, placed, objective, model.constraints.deadline, booked)
    return build_plan(model, placed, objective, name, "heuristic", 0.0, transfers=booked)


def paid_down(model: CostModel, objective: Objective, start: Plan, rounds: int = 8) -> Plan:
    """``start`` (HEFT's plan) with steps moved to cheaper sites until the budget holds:
    per round, the moves within a step's slack first (largest saving first), then those
    that lengthen the plan least per EUR (``improve.cheaper_sites``), just enough to cover
    the excess, and the sites list-scheduled again; at most ``rounds`` rounds."""
    budget = model.constraints.budget
    if budget is None:
        raise ValueError("paid_down needs a budget")
    ranks = upward_ranks(model)
    placed = {s: (a.site, a.start, a.end) for s, a in start.assignments.items()}
    booked = transfers_of(start)
    for _ in range(rounds):
        cost = model.evaluate(placed, model.flows(placed, booked))["cost"]
        if cost <= budget:
            break
        fixed = {s: v[0] for s, v in placed.items()}
        sites = cheaper_sites(model, fixed, placed, cost - budget, set(), slack_only=False)
        if sites is None:
            break
        placed, booked, _ = list_schedule(model, ranks, lambda step, opts: opts[0], sites)
    return _lean_plan(model, placed, booked, objective, f"{start.metrics.planner}+paid")


def budget_plans(model: CostModel, objective: Objective, heft: Plan | None = None) -> list[Plan]:
    """Every budget-paced plan and the cost-weighted plans of the bisection (module
    docstring); empty without a budget. Callers keep those that keep the limits."""
    if model.constraints.budget is None:
        return []
    out: list[Plan] = []
    if heft is not None:
        with contextlib.suppress(InfeasiblePlan):
            out.append(paid_down(model, objective, heft))
    if objective.kind is not ObjectiveKind.COST:
        # the cheapest plans the heuristics know (under the deadline): if they break the
        # budget, no heuristic keeps it
        cheapest = Objective.parse("cost")
        for planner in (GreedyPlanner(explain=False), MarketPlanner(explain=False)):
            try:
                plan = planner.plan_model(model, cheapest, 0.0)
            except InfeasiblePlan:
                continue
            out.append(plan.with_metrics(planner=f"{plan.metrics.planner}(cost)"))
    for greed in GREEDS:
        try:
            out.append(budget_paced(model, objective, greed))
        except InfeasiblePlan:
            continue
    lo, hi = math.log(LAMBDA_RANGE[0]), math.log(LAMBDA_RANGE[1])
    for _ in range(BISECTIONS):
        mid = (lo + hi) / 2
        try:
            plan = cost_weighted(model, objective, math.exp(mid))
        except InfeasiblePlan:
            break
        out.append(plan)
        if limit_breach(plan, model.constraints).startswith("cost"):
            lo = mid  # the budget is blown: weigh the cost more
        else:
            hi = mid  # it holds (or the deadline broke): try a lighter weight
    return out
