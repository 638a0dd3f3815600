"""Local search on site choices along the critical chain (the ILP's last step).

The ILP sees capacity only as aggregate load, so the list schedule of its
site choices can queue where the model did not expect it. This pass walks the
critical chain of the current schedule (from the last-finishing step back
through the parent whose data arrived last (its booked transfer), or the step that freed the core
it waited for), tries every other eligible site for each step on it, re-runs
the list schedule with all sites fixed, and keeps a move when the objective
score improves and the deadline and budget still hold. It stops when a full
pass finds nothing or the time budget is spent.
"""

from __future__ import annotations

import bisect
import time
from collections import defaultdict
from collections.abc import Mapping

from orchestrator.errors import InfeasiblePlan
from orchestrator.placement.costs import CostModel
from orchestrator.placement.links import Transfers
from orchestrator.placement.plan import Objective, PlanningConstraints
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
) -> tuple[Placed, Transfers, int]:
    """A placement at least as good as ``placed`` (booked ``transfers``), its bookings and
    the number of moves kept."""
    deadline = time.perf_counter() + seconds
    ranks = upward_ranks(model)

    def only(step: str, opts: list[Option]) -> Option:
        return opts[0]

    def score(p: Mapping[str, tuple[str, float, float]], tr: Transfers) -> float | None:
        values = model.evaluate(p, model.flows(p, tr))
        if constraints.deadline is not None and values["time"] > constraints.deadline:
            return None
        if constraints.budget is not None and values["cost"] > constraints.budget:
            return None
        return objective.score(values, ref)

    best = dict(placed)
    best_tr: Transfers = dict(transfers)
    best_score = score(best, best_tr)
    if best_score is None:
        return best, best_tr, 0
    moves = 0
    # the same sites laid out in upward-rank order may already be better
    again, again_tr, _ = list_schedule(model, ranks, only, {s: v[0] for s, v in best.items()})
    sc = score(again, again_tr)
    if sc is not None and sc < best_score - 1e-12:
        best, best_tr, best_score, moves = again, again_tr, sc, 1
    improved = True
    while improved and time.perf_counter() < deadline:
        improved = False
        for step in critical_chain(model, best, best_tr):
            current = best[step][0]
            for site in model.eligible[step]:
                if site == current or time.perf_counter() >= deadline:
                    continue
                fixed = {s: v[0] for s, v in best.items()}
                fixed[step] = site
                try:
                    trial, trial_tr, _ = list_schedule(model, ranks, only, fixed)
                except InfeasiblePlan:  # an unlinked pair makes the move infeasible
                    continue
                sc = score(trial, trial_tr)
                if sc is not None and sc < best_score - 1e-12:
                    best, best_tr, best_score = trial, trial_tr, sc
                    moves += 1
                    improved = True
                    break
            if improved:
                break
    return best, best_tr, moves
