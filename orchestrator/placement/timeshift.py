"""Power-price and carbon time-shifting: move steps with slack to cheap or low-carbon slots.

With the sites fixed, each step may start anywhere in ``[S_j, LS_j]`` where the
latest start keeps every child's (already shifted) start, the latest start ``T_f`` its
outgoing transfers can take on their links (``links``) and the deadline:

    LS_j = min(D_j, D, min_{c in children(j)} S_c, min_{f out of j} T_f) - d_j

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
from orchestrator.placement.links import LinkBook, Transfers, book_transfers, rebuild
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
    transfers: Mapping[tuple[str, str], tuple[float, float]] | None = None,
) -> tuple[dict[str, tuple[str, float, float]], Transfers, int]:
    """Shifted placement, its booked transfers and the number of steps moved (0: unchanged).

    ``transfers`` are the placement's bookings on links (``links``; booked first come, first
    served when None). A step's outgoing transfers move with it: before a step is tried,
    each of them is moved to the latest gap of its link that still delivers before the
    first consumer at its destination starts (one after the other); the step may then end
    as late as the earliest of them starts. When the step moves, they are pulled back to
    the earliest gap after its new end; when it does not, they go back where they were.
    """
    w = objective.weights()
    used = {site for site, _, _ in placed.values()}
    tr: Transfers = dict(transfers) if transfers is not None else book_transfers(model, placed)
    if (
        (w["cost"] == 0 and w["carbon"] == 0)
        or len(placed) > MAX_STEPS
        or not has_time_variation(model, used)
    ):
        return dict(placed), tr, 0
    original = dict(tr)
    wf = model.workflow
    makespan = max(e for _, _, e in placed.values())
    horizon = deadline if deadline is not None else makespan
    flows = model.flows(placed, tr)
    totals = model.evaluate(placed, flows)
    ref_cost = totals["cost"] or 1.0
    ref_carbon = totals["carbon"] or 1.0
    out = dict(placed)
    by_site: dict[str, list[str]] = defaultdict(list)
    for s, (site, _, _) in out.items():
        by_site[site].append(s)
    book = rebuild(model, placed, tr)
    outgoing: dict[str, list[tuple[str, str]]] = defaultdict(list)
    users: dict[tuple[str, str], list[str]] = defaultdict(list)
    for item, consumers in model.consumers.items():
        producer = wf.producer(item)
        if producer is None:
            continue
        for c in consumers:
            key = (item, out[c][0])
            if key[1] != out[producer][0]:
                users[key].append(c)
    for key in users:
        outgoing[wf.producer(key[0]) or ""].append(key)
    moved = 0
    for step in reversed(wf.topological_order()):
        site, start, end = out[step]
        d = end - start
        limit = horizon
        dl = model.step_by_id[step].constraints.deadline
        if dl is not None:
            limit = min(limit, dl)
        for c in model.children_of[step]:
            limit = min(limit, out[c][1])
        mine = outgoing.get(step, [])
        late = _push_late(model, book, tr, out, users, site, mine) if mine else {}
        if late is None:  # a transfer of the step cannot move: the step stays
            continue
        for key in late:  # where its transfers now start, at the latest
            limit = min(limit, tr[key][0])
        latest = limit - d
        if latest <= start + 1e-6:
            _restore(model, book, tr, site, late)
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
        if best_t == start:
            _restore(model, book, tr, site, late)
            continue
        out[step] = (site, best_t, best_t + d)
        moved += 1
        # the step's transfers leave as soon as the link is free after its new end
        for key in sorted(late, key=lambda k: tr[k][0]):
            item, dst = key
            latency, bandwidth, _ = model.links[(site, dst)]
            hold = model.workflow.item(item).size / bandwidth
            book.release((site, dst), tr[key][0], hold)
            t = book.earliest((site, dst), best_t + d, hold)
            book.book((site, dst), t, hold)
            tr[key] = (t, t + hold + latency)
    if moved:
        caps = {s.id: s.buffer_capacity for s in model.federation.sites}
        if buffer_violations(model.flows(out, tr), caps):
            return dict(placed), original, 0
    return out, tr, moved


def _push_late(
    model: CostModel,
    book: LinkBook,
    tr: Transfers,
    placed: Mapping[str, tuple[str, float, float]],
    users: Mapping[tuple[str, str], list[str]],
    site: str,
    keys: list[tuple[str, str]],
) -> dict[tuple[str, str], tuple[float, float]] | None:
    """Move the transfers ``keys`` (from ``site``) to their latest gaps, the one needed last
    first; their previous (start, end) per key, or None (and nothing moved) when one has
    no gap at or after its current start."""
    need_by = {k: min(placed[c][1] for c in users[k]) for k in keys}
    saved = {k: tr[k] for k in keys}
    holds = {}
    for item, dst in keys:
        holds[(item, dst)] = model.workflow.item(item).size / model.links[(site, dst)][1]
        book.release((site, dst), tr[(item, dst)][0], holds[(item, dst)])
    moved: list[tuple[str, str]] = []
    for key in sorted(keys, key=lambda k: -need_by[k]):
        item, dst = key
        latency = model.links[(site, dst)][0]
        t = book.latest((site, dst), saved[key][0], need_by[key] - latency, holds[key])
        if t is None:
            for k in moved:
                book.release((site, k[1]), tr[k][0], holds[k])
            for k in keys:
                book.book((site, k[1]), saved[k][0], holds[k])
                tr[k] = saved[k]
            return None
        book.book((site, dst), t, holds[key])
        tr[key] = (t, t + holds[key] + latency)
        moved.append(key)
    return saved


def _restore(
    model: CostModel,
    book: LinkBook,
    tr: Transfers,
    site: str,
    saved: Mapping[tuple[str, str], tuple[float, float]],
) -> None:
    """Put the transfers ``_push_late`` moved back where they were."""
    for key, (start, end) in saved.items():
        item, dst = key
        hold = model.workflow.item(item).size / model.links[(site, dst)][1]
        book.release((site, dst), tr[key][0], hold)
        book.book((site, dst), start, hold)
        tr[key] = (start, end)


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
