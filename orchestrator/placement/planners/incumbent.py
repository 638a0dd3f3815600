"""The optimiser's starting point: the best plan of HEFT, greedy and the market.

Each heuristic plans for the requested objective and constraints (greedy and the market
escalate the weight of the makespan, or of the cost, until the deadline, or the budget,
holds; HEFT's plan is also tried time-shifted; under a deadline, two *paced* greedy plans
keep each step on its pace towards the deadline, or within its latest finish; under a
budget, the budget-keeping plans of ``budgeted``; under a deadline, HEFT's plan and the
best plan of all these with steps moved within their slack, ``descent``). Every plan
that keeps the limits is a candidate; the best by the objective, normalised by HEFT's
values, is the incumbent every engine starts from and must beat, so the optimiser is never
worse than any of them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from orchestrator.errors import InfeasiblePlan
from orchestrator.placement.costs import CostModel
from orchestrator.placement.links import transfers_of
from orchestrator.placement.plan import Objective, Plan
from orchestrator.placement.planners.budgeted import budget_plans
from orchestrator.placement.planners.common import limit_breach, pick, score_of
from orchestrator.placement.planners.descent import slack_descent
from orchestrator.placement.planners.greedy import GreedyPlanner
from orchestrator.placement.planners.heft import HEFTPlanner
from orchestrator.placement.planners.market import MarketPlanner
from orchestrator.placement.schedule import Option, build_plan, list_schedule, upward_ranks
from orchestrator.placement.timeshift import timeshift


@dataclass(frozen=True)
class Incumbents:
    """HEFT's plan (the reference of the normalisation), every limit-keeping heuristic plan,
    and why the others were left out."""

    heft: Plan
    plans: tuple[Plan, ...]
    left_out: tuple[str, ...]

    @property
    def ref(self) -> dict[str, float]:
        return self.heft.metrics.values()

    def best(self, objective: Objective) -> Plan | None:
        """The best limit-keeping heuristic plan (ties: the first of HEFT, greedy, market)."""
        if not self.plans:
            return None
        return min(self.plans, key=lambda p: score_of(p, objective, self.ref))


def incumbents(
    model: CostModel,
    objective: Objective,
    t0: float | None = None,
    descent_seconds: float = 2.0,
) -> Incumbents:
    """Run HEFT (and HEFT time-shifted), greedy and the market on ``model`` for ``objective``
    (and the starts for its limits); the two slack descents share ``descent_seconds``
    (two thirds for the first, from HEFT's plan; the second, from the best plan so far,
    gets what the first left, a sixth at least; the optimiser gives them a quarter of its
    time limit, at most 5 s)."""
    start = time.perf_counter() if t0 is None else t0
    constraints = model.constraints
    heft = HEFTPlanner(explain=False).plan_model(model, objective, start)
    ref = heft.metrics.values()
    plans: list[Plan] = []
    left: list[str] = []

    def keep(plan: Plan) -> None:
        breach = limit_breach(plan, constraints)
        if breach:
            left.append(f"{plan.metrics.planner}: {breach}")
        else:
            plans.append(rescored(plan, objective, ref))

    keep(heft)
    placed = {s: (a.site, a.start, a.end) for s, a in heft.assignments.items()}
    shifted, booked, moved = timeshift(
        model, placed, objective, constraints.deadline, transfers_of(heft)
    )
    if moved:
        keep(
            build_plan(
                model,
                shifted,
                objective,
                "heft+shift",
                "heuristic",
                0.0,
                ref=ref,
                transfers=booked,
            )
        )
    for planner in (GreedyPlanner(explain=False), MarketPlanner(explain=False)):
        try:
            keep(planner.plan_model(model, objective, time.perf_counter()))
        except InfeasiblePlan as exc:
            left.append(f"{planner.name}: {exc}")
    spent = 0.0
    if constraints.deadline is not None and objective.weights()["time"] < 1.0:
        keep(paced_greedy(model, objective, heft, constraints.deadline, ref))
        keep(paced_greedy(model, objective, heft, constraints.deadline, ref, latest=True))
        if not limit_breach(heft, constraints):
            t_descent = time.perf_counter()
            keep(slack_descent(model, objective, heft, ref, seconds=descent_seconds * 2 / 3))
            spent = time.perf_counter() - t_descent
    for plan in budget_plans(model, objective, heft):
        keep(plan)
    if constraints.deadline is not None and objective.weights()["time"] < 1.0 and plans:
        # and from the best plan so far (its steps have slack of their own)
        so_far = min(plans, key=lambda p: score_of(p, objective, ref))
        if so_far is not heft:
            rest_s = max(descent_seconds / 6, descent_seconds - spent)
            keep(slack_descent(model, objective, so_far, ref, seconds=rest_s))
    return Incumbents(heft, tuple(plans), tuple(left))


def paced_greedy(
    model: CostModel,
    objective: Objective,
    heft: Plan,
    deadline: float,
    ref: dict[str, float],
    latest: bool = False,
) -> Plan:
    """Greedy under a deadline: each step goes to its best site for the objective among
    those where it ends by its *pace*; the earliest finish when none does. Then
    time-shifted. The pace is the step's end in HEFT's plan stretched to the deadline
    (``end_heft * deadline / makespan_heft``), or with ``latest`` its latest finish:
    the deadline less the longest chain of its descendants on HEFT's sites (their
    durations and least transfer delays), which gives a workflow of a batch that ends
    early in HEFT's plan all the slack it has. The plain greedy only learns about the
    deadline after a whole plan broke it (and then weighs the makespan for every step
    alike)."""
    span = heft.metrics.makespan_s
    if latest:
        pace = latest_finish(model, heft, deadline)
    else:
        pace = {
            s: a.end * deadline / span if span > 0 else deadline
            for s, a in heft.assignments.items()
        }

    def choose(step: str, opts: list[Option]) -> Option:
        in_time = [o for o in opts if o.end <= pace[step] + 1e-9]
        if not in_time:
            return min(opts, key=lambda o: (o.end, o.start))
        terms = {o.site: model.terms(step, o.site, o.start) for o in in_time}
        return pick(in_time, objective, terms)

    placed, booked, _ = list_schedule(model, upward_ranks(model), choose)
    placed, booked, _ = timeshift(model, placed, objective, model.constraints.deadline, booked)
    name = "greedy+slack" if latest else "greedy+pace"
    return build_plan(model, placed, objective, name, "heuristic", 0.0, ref=ref, transfers=booked)


def latest_finish(model: CostModel, heft: Plan, deadline: float) -> dict[str, float]:
    """Per step, the deadline less the longest chain after it on HEFT's sites:
    ``LF_j = D - max_{c in children(j)} (delay_jc + d_c + (D - LF_c))``."""
    site = {s: a.site for s, a in heft.assignments.items()}
    tail: dict[str, float] = {}  # the longest chain after a step's end
    for j in reversed(model.workflow.topological_order()):
        tail[j] = max(
            (
                model.edge_delay(j, c, site[j], site[c]) + model.duration(c, site[c]) + tail[c]
                for c in model.children_of[j]
            ),
            default=0.0,
        )
    return {j: deadline - t for j, t in tail.items()}


def rescored(plan: Plan, objective: Objective, ref: dict[str, float]) -> Plan:
    """``plan`` with its objective value normalised by ``ref`` (as the optimiser compares)."""
    return plan.with_metrics(objective_value=objective.score(plan.metrics.values(), ref))
