"""Local search on site choices along the critical chain (the ILP's last step).

The ILP sees capacity only as aggregate load, so the list schedule of its
site choices can queue where the model did not expect it. This pass walks the
critical chain of the current schedule (from the last-finishing step back
through the parent whose data arrived last (its booked transfer), or the step that freed the core
it waited for), tries every other eligible site for each step on it, and the step with its
parents, or with its children, gathered on one site (a group move, ``groups``), re-runs
the list schedule with all sites fixed, and keeps a move when the objective
score improves and the deadline and budget still hold. It stops when a full
pass finds nothing or the time budget is spent.
"""

from __future__ import annotations

import bisect
import math
import time
from collections import defaultdict
from collections.abc import Mapping

from orchestrator.errors import InfeasiblePlan
from orchestrator.placement.costs import CostModel
from orchestrator.placement.links import Transfers
from orchestrator.placement.plan import Objective, ObjectiveKind, PlanningConstraints
from orchestrator.placement.schedule import Option, list_schedule, upward_ranks

Placed = dict[str, tuple[str, float, float]]


def critical_chain(
    model: CostModel,
    placed: Mapping[str, tuple[str, float, float]],
    transfers: Mapping[tuple[str, str], tuple[float, float]],
) -> list[str]:
    """Steps that set the makespan, last first (``transfers``: the placement's bookings)."""
    ends: dict[str, list[tuple[float, str]]] = defaultdict(list)
    for s, (site, _, end) in placed.items():
        ends[site].append((end, s))
    for lst in ends.values():
        lst.sort()
    cur: str | None = max(placed, key=lambda s: placed[s][2])
    chain: list[str] = []
    seen: set[str] = set()
    while cur is not None and cur not in seen:
        seen.add(cur)
        chain.append(cur)
        site, start, _ = placed[cur]
        nxt, arrival = None, float("-inf")
        for p in model.parents_of[cur]:
            psite, _, pend = placed[p]
            t = pend
            if psite != site:
                for item, _ in model.edge_items.get((p, cur), ()):
                    t = max(t, transfers.get((item, site), (pend, pend))[1])
            if t > arrival:
                nxt, arrival = p, t
        if nxt is None or arrival < start - 1e-9:
            lst = ends[site]
            i = bisect.bisect_right(lst, (start + 1e-9, "\uffff")) - 1
            nxt = lst[i][1] if i >= 0 and lst[i][0] > 0 and lst[i][1] != cur else None
        cur = nxt
    return chain


def improve(
    model: CostModel,
    placed: Mapping[str, tuple[str, float, float]],
    transfers: Mapping[tuple[str, str], tuple[float, float]],
    objective: Objective,
    ref: Mapping[str, float],
    constraints: PlanningConstraints,
    seconds: float,
    groups: bool = True,
) -> tuple[Placed, Transfers, int]:
    """A placement at least as good as ``placed`` (booked ``transfers``), its bookings and
    the number of moves kept. With ``groups`` a step on the critical chain is also moved
    with its parents, and with its children, to each site where all of them may run (the
    data between them then stays on one site: ``groups``)."""
    deadline = time.perf_counter() + seconds
    ranks = upward_ranks(model)

    def only(step: str, opts: list[Option]) -> Option:
        return opts[0]

    def score(p: Mapping[str, tuple[str, float, float]], tr: Transfers) -> float | None:
        values = model.evaluate(p, model.flows(p, tr))
        last["values"] = values
        if constraints.deadline is not None and values["time"] > constraints.deadline:
            return None
        if constraints.budget is not None and values["cost"] > constraints.budget:
            return None
        return objective.score(values, ref)

    last: dict[str, dict[str, float]] = {}
    trade = constraints.budget is not None and objective.kind is ObjectiveKind.TIME

    best = dict(placed)
    best_tr: Transfers = dict(transfers)
    best_score = score(best, best_tr)
    best_cost = last["values"]["cost"]
    if best_score is None:
        return best, best_tr, 0
    moves = 0
    # the same sites laid out in upward-rank order may already be better
    again, again_tr, _ = list_schedule(model, ranks, only, {s: v[0] for s, v in best.items()})
    sc = score(again, again_tr)
    if sc is not None and sc < best_score - 1e-12:
        best, best_tr, best_score, moves = again, again_tr, sc, 1
        best_cost = last["values"]["cost"]
    improved = True
    while improved and time.perf_counter() < deadline:
        improved = False
        for step in critical_chain(model, best, best_tr):
            for steps, site in _trial_moves(model, best, step, groups):
                if time.perf_counter() >= deadline:
                    break
                fixed = {s: v[0] for s, v in best.items()}
                for j in steps:
                    fixed[j] = site
                try:
                    trial, trial_tr, _ = list_schedule(model, ranks, only, fixed)
                except InfeasiblePlan:  # an unlinked pair makes the move infeasible
                    continue
                sc = score(trial, trial_tr)
                shorter = last["values"]["time"] < max(e for _, _, e in best.values()) - 1e-9
                if (
                    sc is None
                    and trade
                    and shorter
                    and _only_cost_breaks(last["values"], constraints)
                ):
                    # shorter but over the budget: pay for it with slack steps on cheaper sites
                    repaired = _pay_for(
                        model, ranks, fixed, trial, last["values"]["cost"], constraints, steps
                    )
                    if repaired is not None:
                        trial, trial_tr = repaired
                        sc = score(trial, trial_tr)
                # under a budget a move that keeps the makespan and frees money is kept too:
                # the money pays for a later move that shortens the plan
                cheaper = trade and last["values"]["cost"] < best_cost * (1 - 1e-9)
                if sc is not None and (
                    sc < best_score - 1e-12 or (cheaper and sc <= best_score + 1e-12)
                ):
                    best, best_tr, best_score = trial, trial_tr, sc
                    best_cost = last["values"]["cost"]
                    moves += 1
                    improved = True
                    break
            if improved:
                break
    return best, best_tr, moves


def _trial_moves(
    model: CostModel, placed: Mapping[str, tuple[str, float, float]], step: str, groups: bool
) -> list[tuple[tuple[str, ...], str]]:
    """The moves tried for ``step``: alone to each other eligible site, then (``groups``)
    with its parents and with its children to each site all of them may use."""
    here = placed[step][0]
    out: list[tuple[tuple[str, ...], str]] = [
        ((step,), site) for site in model.eligible[step] if site != here
    ]
    if not groups:
        return out
    for near in (model.parents_of[step], model.children_of[step]):
        if not near:
            continue
        members = (step, *near)
        for site in model.eligible[step]:
            moving = tuple(j for j in members if placed[j][0] != site)
            if len(moving) < 2 or any(site not in model.eligible[j] for j in moving):
                continue
            out.append((moving, site))
    return out


def _only_cost_breaks(values: Mapping[str, float], constraints: PlanningConstraints) -> bool:
    """True when ``values`` keep the deadline and break only the budget."""
    if constraints.deadline is not None and values["time"] > constraints.deadline:
        return False
    return constraints.budget is not None and values["cost"] > constraints.budget


def slack_of(
    model: CostModel,
    placed: Mapping[str, tuple[str, float, float]],
    horizon: float | None = None,
) -> dict[str, float]:
    """Per step, how much later it could end without delaying a child (transfer delays
    on the current sites) or ending after ``horizon`` (the makespan when None); queueing
    for cores is not counted."""
    makespan = max((e for _, _, e in placed.values()), default=0.0)
    if horizon is not None:
        makespan = horizon
    latest: dict[str, float] = {}
    for j in reversed(model.workflow.topological_order()):
        site = placed[j][0]
        lf = makespan
        for c in model.children_of[j]:
            csite = placed[c][0]
            lf = min(lf, latest[c] - model.duration(c, csite) - model.edge_delay(j, c, site, csite))
        latest[j] = lf
    return {j: latest[j] - placed[j][2] for j in placed}


def _pay_for(
    model: CostModel,
    ranks: Mapping[str, float],
    fixed: Mapping[str, str],
    trial: Mapping[str, tuple[str, float, float]],
    cost: float,
    constraints: PlanningConstraints,
    moved: tuple[str, ...],
) -> tuple[Placed, Transfers] | None:
    """``trial`` (over the budget by ``cost - budget``) with steps that have slack moved to
    cheaper sites (``cheaper_sites``, slack only), the new list schedule, or None (the
    savings cannot cover the excess, or an unlinked pair). ``moved`` (the steps of the move
    being paid for) stay where they are. The caller scores the result."""
    budget = constraints.budget
    assert budget is not None
    repaired = cheaper_sites(model, fixed, trial, cost - budget, set(moved), slack_only=True)
    if repaired is None:
        return None
    try:
        placed, booked, _ = list_schedule(model, ranks, _only, repaired)
    except InfeasiblePlan:
        return None
    return placed, booked


def _only(step: str, opts: list[Option]) -> Option:
    return opts[0]


def move_effect(
    model: CostModel, placed: Mapping[str, tuple[str, float, float]], step: str, alt: str
) -> tuple[float, float]:
    """(EUR saved, seconds the step's end moves later at least) when ``step`` alone moves to
    ``alt``: its run cost and the EUR of its edges' transfers; its duration and the
    transfer delays of its edges (into it, and out of it to its children's start)."""
    site, start, end = placed[step]
    saving = model.run_cost(step, site, start) - model.run_cost(step, alt, start)
    late_in = late_out = 0.0
    for p in model.parents_of[step]:
        psite = placed[p][0]
        nbytes = model.edge_bytes.get((p, step), 0.0)
        saving += model.transfer_cost(psite, site, nbytes) - model.transfer_cost(psite, alt, nbytes)
        late_in = max(
            late_in, model.edge_delay(p, step, psite, alt) - model.edge_delay(p, step, psite, site)
        )
    for c in model.children_of[step]:
        csite = placed[c][0]
        nbytes = model.edge_bytes.get((step, c), 0.0)
        saving += model.transfer_cost(site, csite, nbytes) - model.transfer_cost(alt, csite, nbytes)
        late_out = max(
            late_out, model.edge_delay(step, c, alt, csite) - model.edge_delay(step, c, site, csite)
        )
    longer = late_in + model.duration(step, alt) - (end - start) + late_out
    return saving, longer


def cheaper_sites(
    model: CostModel,
    fixed: Mapping[str, str],
    placed: Mapping[str, tuple[str, float, float]],
    excess: float,
    keep: set[str],
    slack_only: bool,
) -> dict[str, str] | None:
    """Sites (``fixed`` with some steps moved) whose savings cover ``excess`` EUR: first the
    moves within the step's slack (``slack_of``), the largest saving first; then, unless
    ``slack_only``, those that lengthen the step beyond its slack, the fewest seconds past
    it per EUR first. One move per step, none of ``keep``; None when the savings fall
    short (the list schedule of the result may still cost more: transfers are counted
    for each edge alone)."""
    slack = slack_of(model, placed)
    within: list[tuple[float, str, str]] = []
    beyond: list[tuple[float, str, str, float]] = []
    for j in placed:
        if j in keep:
            continue
        for alt in model.eligible[j]:
            if alt == placed[j][0]:
                continue
            saving, longer = move_effect(model, placed, j, alt)
            if saving <= 0 or math.isinf(longer):
                continue
            if longer <= slack[j]:
                within.append((-saving, j, alt))
            elif not slack_only:
                beyond.append(((longer - slack[j]) / saving, j, alt, saving))
    within.sort()
    beyond.sort()
    order = [(j, alt, -neg) for neg, j, alt in within] + [(j, a, sv) for _, j, a, sv in beyond]
    out = dict(fixed)
    saved = 0.0
    moved: set[str] = set()
    for j, alt, saving in order:
        if saved >= excess * 1.02:
            break
        if j in moved:
            continue
        out[j] = alt
        moved.add(j)
        saved += saving
    return out if moved and saved >= excess else None
