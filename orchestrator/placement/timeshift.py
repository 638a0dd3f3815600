"""Power-price and carbon time-shifting: move steps with slack to cheap or low-carbon slots.

With the sites fixed, each step may start anywhere in ``[S_j, LS_j]`` where the
latest start keeps every child's (already shifted) start and the deadline:

    LS_j = min(D_j, D, min_{c in children(j)} (S_c - delay_jc)) - d_j

(``D`` the plan's deadline, or its makespan when none is given: shifting then
never lengthens the plan). Steps are visited children first; each takes, among
its current start, its latest start and the slot boundaries in between, the
start minimising ``w_cost * cost / ref_cost + w_carbon * carbon / ref_carbon``
(energy does not depend on time). A move is kept only if the site's core pool
holds at every instant of the new interval. Plans whose price and carbon
forecasts are flat over the horizon are returned unchanged.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping

from datalogistics.flows import buffer_violations
from orchestrator.placement.costs import CostModel
from orchestrator.placement.plan import Objective

MAX_STEPS = 3000
"""Above this many steps the pool checks would dominate planning time: no shifting."""


def has_time_variation(model: CostModel, sites: set[str]) -> bool:
    """True when the price or carbon forecast of one of ``sites`` changes over the horizon."""
    for s in sites:
        ser = model.series[s]
        if len(set(ser.price)) > 1 or len(set(ser.carbon)) > 1:
            return True
    return False


def timeshift(
    model: CostModel,
    placed: Mapping[str, tuple[str, float, float]],
    objective: Objective,
    deadline: float | None,
) -> tuple[dict[str, tuple[str, float, float]], int]:
    """Shifted placement and the number of steps moved (0: unchanged)."""
    w = objective.weights()
    used = {site for site, _, _ in placed.values()}
    if (
        (w["cost"] == 0 and w["carbon"] == 0)
        or len(placed) > MAX_STEPS
        or not has_time_variation(model, used)
    ):
        return dict(placed), 0
    wf = model.workflow
    makespan = max(e for _, _, e in placed.values())
    horizon = deadline if deadline is not None else makespan
    flows = model.flows(placed)
    totals = model.evaluate(placed, flows)
    ref_cost = totals["cost"] or 1.0
    ref_carbon = totals["carbon"] or 1.0
    out = dict(placed)
    by_site: dict[str, list[str]] = defaultdict(list)
    for s, (site, _, _) in out.items():
        by_site[site].append(s)
    moved = 0
    for step in reversed(wf.topological_order()):
        site, start, end = out[step]
        d = end - start
        limit = horizon
        dl = model.step_by_id[step].constraints.deadline
        if dl is not None:
            limit = min(limit, dl)
        for c in wf.children(step):
            csite, cstart, _ = out[c]
            limit = min(limit, cstart - model.edge_delay(step, c, site, csite))
        latest = limit - d
        if latest <= start + 1e-6:
            continue
        ser = model.series[site]
        cands = [start, latest]
        k = ser.slot(start) + 1
        while ser.slot_start(k) < latest and k < len(ser.capacity):
            cands.append(ser.slot_start(k))
            k += 1

        def score(t: float, step: str = step, site: str = site) -> float:
            return (
                w["cost"] * model.run_cost(step, site, t) / ref_cost
                + w["carbon"] * model.carbon_kg(step, site, t) / ref_carbon
            )

        base = score(start)
        best_t, best = start, base
        for t in cands[1:]:
            sc = score(t)
            if sc < best - 1e-12 * max(1.0, abs(base)) and _fits(model, out, by_site, step, t):
                best_t, best = t, sc
        if best_t != start:
            out[step] = (site, best_t, best_t + d)
            moved += 1
    if moved:
        caps = {s.id: s.buffer_capacity for s in model.federation.sites}
        if buffer_violations(model.flows(out), caps):
            return dict(placed), 0
    return out, moved


def _fits(
    model: CostModel,
    placed: Mapping[str, tuple[str, float, float]],
    by_site: Mapping[str, list[str]],
    step: str,
    t: float,
) -> bool:
    """True when moving ``step`` to start at ``t`` keeps its site's pool at every instant."""
    site, start, end = placed[step]
    cores = model.step_by_id[step].cores
    pool = model.pool[site]
    others = [s for s in by_site[site] if s != step]
    if cores + sum(model.step_by_id[s].cores for s in others) <= pool:
        return True
    t1 = t + (end - start)
    events: list[tuple[float, int]] = []
    for s in others:
        _, a, b = placed[s]
        if a < t1 and b > t:
            events.append((max(a, t), model.step_by_id[s].cores))
            events.append((min(b, t1), -model.step_by_id[s].cores))
    events.sort(key=lambda e: (e[0], e[1]))
    level = cores
    for _, delta in events:
        level += delta
        if level > pool:
            return False
    return True
