"""Slack descent: a start for cost or carbon under a deadline, from HEFT's plan.

HEFT's plan is the shortest the heuristics know; under a deadline ``D`` the steps that
have slack can move to cheaper or greener sites. Per round: each step's slack towards
``D`` (``improve.slack_of``: its latest finish on the current sites, transfer delays
counted, queueing for cores not), and per step its best other site for the objective
whose lengthening (duration and the transfer delays of its edges,
``improve.move_effect``) fits in that slack; the moves sorted by their gain
(``sum_t w_t (f_t(here) - f_t(there)) / ref_t`` over cost with its transfers' EUR,
energy and carbon); the longest prefix of that list whose list schedule keeps the deadline
and the budget is kept (a bisection on its length: the slacks of steps on one chain
overlap, so not every move fits at once). Rounds stop when nothing moves or its time
is up (one second by default; the optimiser gives its two descents a tenth of its time
limit). The plan is
time-shifted and, like every start, kept only when it keeps the limits.
"""

from __future__ import annotations

import math
import time

from orchestrator.errors import InfeasiblePlan
from orchestrator.placement.costs import CostModel
from orchestrator.placement.improve import move_effect, slack_of
from orchestrator.placement.links import Transfers, transfers_of
from orchestrator.placement.plan import Objective, Plan
from orchestrator.placement.schedule import Option, build_plan, list_schedule, upward_ranks
from orchestrator.placement.timeshift import timeshift

Placed = dict[str, tuple[str, float, float]]


def _only(step: str, opts: list[Option]) -> Option:
    return opts[0]


def gain(
    model: CostModel,
    placed: Placed,
    step: str,
    alt: str,
    weights: dict[str, float],
    ref: dict[str, float],
) -> tuple[float, float]:
    """(the objective's gain, seconds the step's end moves later) of moving ``step`` to
    ``alt``: its cost (run and transfers), energy and carbon, weighted and normalised."""
    site, start, _ = placed[step]
    eur, longer = move_effect(model, placed, step, alt)
    here, there = model.terms(step, site, start), model.terms(step, alt, start)
    g = weights["cost"] * eur / ref["cost"]
    for t in ("energy", "carbon"):
        g += weights[t] * (here[t] - there[t]) / ref[t]
    return g, longer


def slack_descent(
    model: CostModel,
    objective: Objective,
    start: Plan,
    ref: dict[str, float],
    rounds: int = 6,
    seconds: float = 1.0,
) -> Plan:
    """``start`` with steps moved within their slack towards the deadline (module
    docstring); ``start``'s own placement when nothing moves. No new trial starts after
    ``seconds`` (a list schedule of a thousand steps takes a tenth of a second or more)."""
    stop = time.perf_counter() + seconds
    c = model.constraints
    deadline = c.deadline
    if deadline is None:
        raise ValueError("slack_descent needs a deadline")
    w = objective.weights()
    rf = {t: (ref.get(t, 0.0) or 1.0) for t in w}
    ranks = upward_ranks(model)
    placed: Placed = {s: (a.site, a.start, a.end) for s, a in start.assignments.items()}
    booked: Transfers = transfers_of(start)

    def keeps(p: Placed, tr: Transfers) -> bool:
        values = model.evaluate(p, model.flows(p, tr))
        if values["time"] > deadline * (1 + 1e-9):
            return False
        return c.budget is None or values["cost"] <= c.budget * (1 + 1e-9)

    for _ in range(rounds):
        if time.perf_counter() >= stop:
            break
        slack = slack_of(model, placed, deadline)
        moves: list[tuple[float, str, str]] = []
        for j, (site, _, _) in placed.items():
            best: tuple[float, str] | None = None
            for alt in model.eligible[j]:
                if alt == site:
                    continue
                g, longer = gain(model, placed, j, alt, w, rf)
                fits = not math.isinf(longer) and longer <= slack[j]
                if fits and g > 1e-12 and (best is None or g > best[0]):
                    best = (g, alt)
            if best is not None:
                moves.append((-best[0], j, best[1]))
        if not moves:
            break
        moves.sort()
        fixed = {s: v[0] for s, v in placed.items()}

        def trial(
            k: int,
            fixed: dict[str, str] = fixed,
            moves: list[tuple[float, str, str]] = moves,
        ) -> tuple[Placed, Transfers] | None:
            sites = dict(fixed)
            for _, j, alt in moves[:k]:
                sites[j] = alt
            try:
                p, tr, _ = list_schedule(model, ranks, _only, sites)
            except InfeasiblePlan:
                return None
            return (p, tr) if keeps(p, tr) else None

        lo, hi, found = 0, len(moves), None
        while lo < hi and time.perf_counter() < stop:  # the longest prefix that keeps the limits
            mid = (lo + hi + 1) // 2
            got = trial(mid)
            if got is not None:
                lo, found = mid, got
            else:
                hi = mid - 1
        if found is None:
            break
        placed, booked = found
    placed, booked, _ = timeshift(model, placed, objective, deadline, booked)
    return build_plan(
        model,
        placed,
        objective,
        f"{start.metrics.planner}+descent",
        "heuristic",
        0.0,
        ref=ref,
        transfers=booked,
    )
