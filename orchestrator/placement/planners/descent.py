"""Slack descent: a start for cost or carbon under a deadline, from HEFT's plan.

HEFT's plan is the shortest the heuristics know; under a deadline ``D`` the steps that
have slack can move to cheaper or greener sites. Per round: each step's slack towards
``D`` (``improve.slack_of``: its latest finish on the current sites, transfer delays
counted, queueing for cores not); per step its best other site for the objective, and
the group moves of ``placement.groups`` (the consumers of an item on one site to the
item's source, a step with its parents or children on one site, a category on one
site), each kept when its lengthening (durations and transfer delays, along the group's
own edges) fits in the slack of its steps; the moves sorted by their gain
(``sum_t w_t saved_t / ref_t`` over cost, with the EUR of every transfer the move adds
or removes counted once per item and destination site, energy and carbon). Then the
longest prefix of that list whose list schedule keeps the deadline and the budget and
does not worsen the score is kept (galloping then bisection on its length: the slacks
of steps on one chain overlap and the gains of overlapping moves do not add up); the
move that breaks it is dropped and the search goes on with the rest on top of it. A
single move cannot avoid a transfer that a whole group pays (a cloud's egress for an
item that several steps read): on montage-dss-10d on regional-4, cost at 1.1x HEFT's
makespan, single moves left HEFT's 0.597 EUR at 0.562 and the group moves reached
0.263. Rounds stop when nothing moves or the time is up (one second by default; the
optimiser gives its two descents a quarter of its time limit, at most 5 s, and runs one
more from its chosen plan). The plan is time-shifted and, like every start, kept only
when it keeps the limits.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from orchestrator.errors import InfeasiblePlan
from orchestrator.placement.costs import CostModel
from orchestrator.placement.groups import (
    GROUP_KINDS,
    GroupMove,
    ItemIndex,
    MoveEffect,
    group_effect,
    group_moves,
    placement_values,
    transfer_eur,
)
from orchestrator.placement.improve import slack_of
from orchestrator.placement.links import Transfers, transfers_of
from orchestrator.placement.plan import Objective, Plan
from orchestrator.placement.schedule import Option, build_plan, list_schedule, upward_ranks
from orchestrator.placement.timeshift import timeshift

Placed = dict[str, tuple[str, float, float]]


def _only(step: str, opts: list[Option]) -> Option:
    return opts[0]


def weighted_gain(e: MoveEffect, weights: dict[str, float], ref: dict[str, float]) -> float:
    """A move's saving as the objective weighs it: ``sum_t w_t saved_t / ref_t``."""
    return (
        weights["cost"] * e.eur / ref["cost"]
        + weights["energy"] * e.kwh / ref["energy"]
        + weights["carbon"] * e.kg / ref["carbon"]
    )


def slack_descent(
    model: CostModel,
    objective: Objective,
    start: Plan,
    ref: dict[str, float],
    rounds: int = 6,
    seconds: float = 1.0,
    groups: Iterable[str] = GROUP_KINDS,
    first_trials: int = 16,
) -> Plan:
    """``start`` with steps moved within their slack towards the deadline (module
    docstring); ``start``'s own placement when nothing moves. No new trial starts after
    ``seconds`` (a list schedule of a thousand steps takes a tenth of a second or more).
    ``groups``: the kinds of group moves tried besides single steps (``groups``; none
    with an empty tuple). The first round runs to ``first_trials`` list schedules whatever
    the time: its moves are listed in full (a few thousand exact effects on a thousand
    steps), so a descent squeezed by a loaded machine still tries the best moves (on
    montage-dss-10d at a load of 4, half a second had ended the round before its first
    trial)."""
    stop = time.perf_counter() + seconds
    c = model.constraints
    deadline = c.deadline
    if deadline is None:
        raise ValueError("slack_descent needs a deadline")
    kinds = tuple(groups)
    w = objective.weights()
    rf = {t: (ref.get(t, 0.0) or 1.0) for t in w}
    ranks = upward_ranks(model)
    index = ItemIndex(model)
    placed: Placed = {s: (a.site, a.start, a.end) for s, a in start.assignments.items()}
    booked: Transfers = transfers_of(start)

    def score(p: Placed, tr: Transfers) -> float | None:
        """The objective's score, None when the limits break."""
        values = placement_values(model, index, p)
        if values["time"] > deadline * (1 + 1e-9):
            return None
        if c.budget is not None and values["cost"] > c.budget * (1 + 1e-9):
            return None
        return objective.score(values, rf)

    def worth(e: MoveEffect) -> bool:
        return weighted_gain(e, w, rf) > 1e-12

    current = score(placed, booked)
    for r in range(rounds):
        if (r > 0 and time.perf_counter() >= stop) or current is None:
            break
        slack = slack_of(model, placed, deadline)
        sites = {s: v[0] for s, v in placed.items()}
        base = {i: transfer_eur(model, index, i, sites) for i in index.producer}
        moves: list[tuple[float, tuple[str, ...], str]] = []
        for j, site in sites.items():
            best: tuple[float, str] | None = None
            for alt in model.eligible[j]:
                if alt == site:
                    continue
                one = GroupMove((j,), alt, "single")
                e = group_effect(model, placed, sites, index, one, slack, base, worth)
                g = weighted_gain(e, w, rf)
                if e.fits and g > 1e-12 and (best is None or g > best[0]):
                    best = (g, alt)
            if best is not None:
                moves.append((-best[0], (j,), best[1]))
        if kinds:

            def promising(j: str, alt: str, placed: Placed = placed) -> bool:
                """Moving ``j`` to ``alt`` gains on its run alone (its transfers aside)."""
                here, start, _ = placed[j]
                run = MoveEffect(
                    model.run_cost(j, here, start) - model.run_cost(j, alt, start),
                    model.energy_kwh(j, here) - model.energy_kwh(j, alt),
                    model.carbon_kg(j, here, start) - model.carbon_kg(j, alt, start),
                    True,
                )
                return weighted_gain(run, w, rf) > 1e-12

            for m in group_moves(model, sites, index, kinds, promising):
                if r > 0 and time.perf_counter() >= stop:
                    break
                e = group_effect(model, placed, sites, index, m, slack, base, worth)
                g = weighted_gain(e, w, rf)
                if e.fits and g > 1e-12:
                    moves.append((-g, m.steps, m.site))
        if not moves:
            break
        moves.sort()
        listed = [(s, a) for _, s, a in moves]
        least = first_trials if r == 0 else 0
        found = _longest_prefixes(model, ranks, sites, listed, score, stop, least)
        if found is None or found[2] >= current - 1e-12:
            break
        placed, booked, current = found
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


def _longest_prefixes(
    model: CostModel,
    ranks: dict[str, float],
    sites: dict[str, str],
    moves: list[tuple[tuple[str, ...], str]],
    score: Callable[[Placed, Transfers], float | None],
    stop: float,
    least: int = 0,
) -> tuple[Placed, Transfers, float] | None:
    """The moves (best first) applied as a longest prefix that keeps the limits and does
    not worsen the score (found by galloping then bisection on its length: the slacks of
    steps on one chain overlap, and the gains of overlapping moves do not add up); the move
    that breaks it is
    dropped and the bisection goes on with the rest on top of the prefix, until the list
    or the time ends (but not before ``least`` list schedules). A move whose steps an
    earlier kept move moved is skipped. The placement, its bookings and score, or None
    when nothing was kept."""
    best: tuple[Placed, Transfers, float] | None = None
    cur = dict(sites)
    moved: set[str] = set()
    rest = [(s, a) for s, a in moves]
    limit: float | None = None

    def apply(k: int) -> tuple[dict[str, str], set[str]]:
        out, done = dict(cur), set(moved)
        for steps, alt in rest[:k]:
            if done.intersection(steps):
                continue
            done.update(steps)
            for j in steps:
                out[j] = alt
        return out, done

    done = [0]

    def going() -> bool:
        return done[0] < least or time.perf_counter() < stop

    def trial(k: int) -> tuple[Placed, Transfers, float] | None:
        done[0] += 1
        out, _ = apply(k)
        try:
            p, tr, _ = list_schedule(model, ranks, _only, out)
        except InfeasiblePlan:
            return None
        sc = score(p, tr)
        if sc is None or (limit is not None and sc > limit + 1e-12):
            return None
        return p, tr, sc

    first = trial(0)
    if first is None:
        return None
    limit = first[2]
    while rest and going():
        # galloping: 1, 2, 4... moves until one breaks, then a bisection in between
        lo, hi, got = 0, len(rest), None
        step = 1
        while lo < hi and going():
            mid = min(hi, lo + step)
            t = trial(mid)
            if t is None:
                hi = mid - 1
                break
            lo, got = mid, t
            step *= 2
        while lo < hi and going():
            mid = (lo + hi + 1) // 2
            t = trial(mid)
            if t is not None:
                lo, got = mid, t
            else:
                hi = mid - 1
        if lo > 0 and got is not None:
            cur, moved = apply(lo)
            best, limit = got, got[2]
        rest = rest[lo + 1 :]  # the move at ``lo`` breaks the prefix: dropped
    return best
