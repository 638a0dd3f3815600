"""List scheduling on core pools and links, and turning a placement into a ``Plan``.

Every planner ends here: HEFT and greedy choose a site per step while they
schedule, the ILP and the market fix the sites (and earliest starts) and this
module lays the steps out in time. A site is a pool of ``CostModel.pool[s]``
identical cores; a step of ``c`` cores starts when ``c`` cores are free, at or
after its ready time (its release, the site's expected queue wait, its parents'
ends and the arrival of its inputs). Each input from another site is a transfer
booked on the link it crosses (``links``: one transfer at a time at the link's
bandwidth, at the earliest gap after its producer ends), once per item and
destination site; a candidate site's option carries the bookings it would make,
and the chosen option's are committed. Steps are taken in priority order among
those whose parents are placed (non-insertion list scheduling on cores,
insertion on links).
"""

from __future__ import annotations

import heapq
import math
from bisect import bisect_right
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from orchestrator.errors import InfeasiblePlan
from orchestrator.placement.costs import CostModel
from orchestrator.placement.links import Booking, LinkBook, Transfers
from orchestrator.placement.plan import Assignment, Objective, Plan, PlanMetrics


@dataclass(frozen=True)
class Option:
    """One candidate placement of a step: site, start, end and its criteria."""

    site: str
    start: float
    end: float
    terms: Mapping[str, float]
    bookings: tuple[Booking, ...] = ()
    """The transfers this option books on links (committed when it is chosen)."""


class CorePools:
    """Free times of every core of every site (a min-heap per site)."""

    def __init__(self, model: CostModel) -> None:
        self.free: dict[str, list[float]] = {s: [0.0] * n for s, n in model.pool.items()}

    def earliest(self, site: str, cores: int, ready: float) -> float:
        """Earliest time >= ``ready`` at which ``cores`` cores of ``site`` are free."""
        heap = self.free[site]
        if cores == 1:
            return max(ready, heap[0])
        return max(ready, heapq.nsmallest(cores, heap)[-1])

    def commit(self, site: str, cores: int, end: float) -> None:
        """Book ``cores`` cores of ``site`` until ``end`` (after ``earliest`` chose the start)."""
        heap = self.free[site]
        for _ in range(cores):
            heapq.heapreplace(heap, end)

    def busy_fraction(self, site: str, t: float) -> float:
        """Share of the site's cores still busy at ``t``."""
        heap = self.free[site]
        return sum(1 for f in heap if f > t) / len(heap) if heap else 1.0


Chooser = Callable[[str, list[Option]], Option]


def arrival(
    model: CostModel,
    links: LinkBook,
    transfers: Mapping[tuple[str, str], tuple[float, float]],
    step: str,
    site: str,
    placed: Mapping[str, tuple[str, float]],
) -> tuple[float, tuple[Booking, ...]]:
    """When ``step`` may start on ``site`` as far as its data goes, and the transfers to book.

    The release, the site's queue wait, every parent's end, and each input from another
    site: the arrival of its transfer when one is booked to ``site`` already (for another
    consumer), else of a new booking at the earliest gap of the link after the item is
    ready (several new ones on one link one after the other). ``inf`` when an input
    cannot reach ``site``.
    """
    s = model.step_by_id[step]
    t = max(s.constraints.release, model.site_release[site])
    needs: list[tuple[float, str, float, str]] = []  # (ready, item, bytes, source site)
    for item, size, origin in model.located.get(step, ()):
        if origin is not None and origin != site:
            needs.append((0.0, item, size, origin))
    for p in model.parents_of[step]:
        psite, pend = placed[p]
        t = max(t, pend)
        if psite == site or (p, step) not in model.edge_max:
            continue
        if math.isinf(model.edge_delay(p, step, psite, site)):
            return math.inf, ()
        for item, size in model.edge_items[(p, step)]:
            needs.append((pend, item, size, psite))
    if not needs:
        return t, ()
    new: list[Booking] = []
    pending: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
    for ready, item, size, src in sorted(needs):
        done = transfers.get((item, site))
        if done is not None:
            t = max(t, done[1])
            continue
        link = (src, site)
        spec = model.links.get(link)
        if spec is None:
            return math.inf, ()
        latency, bandwidth, _ = spec
        hold = size / bandwidth
        start = links.earliest(link, ready, hold, pending[link])
        if hold > 0:
            pending[link].append((start, start + hold))
        b = Booking(item, src, site, start, hold, start + hold + latency)
        new.append(b)
        t = max(t, b.end)
    return t, tuple(new)


def options(
    model: CostModel,
    pools: CorePools,
    step: str,
    placed: Mapping[str, tuple[str, float]],
    sites: tuple[str, ...] | None = None,
    not_before: float = 0.0,
    links: LinkBook | None = None,
    transfers: Mapping[tuple[str, str], tuple[float, float]] | None = None,
) -> list[Option]:
    """Every feasible placement of ``step`` now (one per eligible, linked site)."""
    out = []
    cores = model.step_by_id[step].cores
    links = links if links is not None else LinkBook()
    for site in sites if sites is not None else model.eligible[step]:
        ready, bookings = arrival(model, links, transfers or {}, step, site, placed)
        if ready == math.inf:
            continue
        start = pools.earliest(site, cores, max(ready, not_before))
        out.append(Option(site, start, start + model.duration(step, site), {}, bookings))
    return out


def list_schedule(
    model: CostModel,
    priority: Mapping[str, float],
    choose: Chooser,
    fixed: Mapping[str, str] | None = None,
    not_before: Mapping[str, float] | None = None,
    pools: CorePools | None = None,
) -> tuple[dict[str, tuple[str, float, float]], Transfers, dict[str, list[Option]]]:
    """Place every step; ``priority`` higher first among ready steps.

    ``fixed`` pins steps to sites (the ILP's decision), ``not_before`` delays
    steps (time-shifting), ``pools`` lets a caller watch the bookings (the
    market's agents). Returns step -> (site, start, end), the booked transfers
    ((item, destination) -> (start, end)) and, per step, the options that were
    compared (for explanations).
    """
    wf = model.workflow
    pools = pools if pools is not None else CorePools(model)
    links = LinkBook()
    transfers: Transfers = {}
    order = {s: i for i, s in enumerate(wf.topological_order())}
    waiting = {s: len(ps) for s, ps in model.parents_of.items()}
    ready = [(-priority[s], order[s], s) for s, n in waiting.items() if n == 0]
    heapq.heapify(ready)
    placed: dict[str, tuple[str, float]] = {}
    out: dict[str, tuple[str, float, float]] = {}
    compared: dict[str, list[Option]] = {}
    while ready:
        _, _, step = heapq.heappop(ready)
        sites = (fixed[step],) if fixed is not None and step in fixed else None
        nb = not_before.get(step, 0.0) if not_before else 0.0
        opts = options(model, pools, step, placed, sites, nb, links, transfers)
        if not opts:
            raise InfeasiblePlan(_no_site_message(model, step))
        best = choose(step, opts)
        pools.commit(best.site, model.step_by_id[step].cores, best.end)
        for b in best.bookings:
            links.book((b.src, b.dst), b.start, b.hold)
            transfers[(b.item, b.dst)] = (b.start, b.end)
        placed[step] = (best.site, best.end)
        out[step] = (best.site, best.start, best.end)
        compared[step] = opts
        for c in model.children_of[step]:
            waiting[c] -= 1
            if waiting[c] == 0:
                heapq.heappush(ready, (-priority[c], order[c], c))
    return out, transfers, compared


def _no_site_message(model: CostModel, step: str) -> str:
    why = model.why_not.get(step, {})
    if not model.eligible[step]:
        detail = "; ".join(f"{s}: {r}" for s, r in why.items())
        return f"step {step} has no eligible site ({detail}); relax its constraints"
    return (
        f"step {step} cannot receive its inputs on any eligible site "
        f"({', '.join(model.eligible[step])}): add a link from its parents' sites"
    )


def upward_ranks(model: CostModel) -> dict[str, float]:
    """HEFT's upward rank: mean duration over eligible sites plus the heaviest path below.

    ``rank(j) = dbar_j + max_{c in children(j)} (cbar_jc + rank(c))`` with ``cbar``
    the mean transfer delay of the edge over linked site pairs (cached on the model).
    """
    if model.ranks is not None:
        return model.ranks
    wf = model.workflow
    dbar = {
        s.id: sum(model.duration(s.id, x) for x in model.eligible[s.id])
        / max(1, len(model.eligible[s.id]))
        for s in wf.steps
    }
    # Over the n (n - 1) ordered pairs of distinct sites only linked pairs have a finite
    # delay, latency + biggest / bandwidth, and only where the edge's biggest item fits both
    # buffers (unlinked pairs count in the denominator only). Links sorted by the smaller
    # of their two buffers, with prefix sums of latency and 1 / bandwidth, give each edge's
    # sum in O(log links): a large federation costs what its links cost, once.
    sites = set(model.sites)
    n_pairs = len(sites) * (len(sites) - 1)
    links = sorted(
        (
            (min(model.buffer[a], model.buffer[b]), lat, bw)
            for (a, b), (lat, bw, _) in model.links.items()
            if a != b and a in sites and b in sites
        ),
        key=lambda x: -x[0],
    )
    room = [-cap for cap, _, _ in links]  # ascending: bisect finds the links an item fits
    sum_lat, sum_inv = [0.0], [0.0]
    for _, lat, bw in links:
        sum_lat.append(sum_lat[-1] + lat)
        sum_inv.append(sum_inv[-1] + 1.0 / bw)
    rank: dict[str, float] = {}
    for s in reversed(wf.topological_order()):
        best = 0.0
        for c in model.children_of[s]:
            biggest = model.edge_max.get((s, c))
            cbar = 0.0
            if biggest is not None:
                k = bisect_right(room, -biggest)  # links whose both buffers hold it
                cbar = (sum_lat[k] + biggest * sum_inv[k]) / n_pairs if k else 0.0
            best = max(best, cbar + rank[c])
        rank[s] = dbar[s] + best
    model.ranks = rank
    return rank


def build_plan(
    model: CostModel,
    placed: Mapping[str, tuple[str, float, float]],
    objective: Objective,
    planner: str,
    status: str,
    wall_s: float,
    why: Mapping[str, str] | None = None,
    bound: float | None = None,
    ref: Mapping[str, float] | None = None,
    notes: tuple[str, ...] = (),
    transfers: Mapping[tuple[str, str], tuple[float, float]] | None = None,
) -> Plan:
    """A ``Plan`` with flows and metrics from a full placement and its booked ``transfers``
    (booked first come, first served when None, see ``links``).

    The objective value is the normalised score against ``ref`` (the plan's own
    values when None, giving a pure-criterion score); the gap is
    ``(value - best_bound) / value`` where the best bound is the larger of
    ``bound`` (a solver's) and the combinatorial ``CostModel.lower_bounds``.
    """
    flows = model.flows(placed, transfers)
    values = model.evaluate(placed, flows)
    reference = dict(ref) if ref is not None else values
    value = objective.score(values, reference)
    lb = model.objective_bound(objective.weights(), reference)
    best_bound = max(lb, bound) if bound is not None else lb
    gap = max(0.0, (value - best_bound) / value) if value > 0 else 0.0
    assignments = {
        s: Assignment(s, site, start, end, (why or {}).get(s, ""))
        for s, (site, start, end) in placed.items()
    }
    metrics = PlanMetrics(
        makespan_s=values["time"],
        cost_eur=values["cost"],
        energy_kwh=values["energy"],
        carbon_kg=values["carbon"],
        bytes_moved=values["bytes_moved"],
        planner=planner,
        status=status,
        gap=gap,
        bound=best_bound,
        objective_value=value,
        wall_s=wall_s,
        carbon_unknown=model.carbon_unknown,
        price_unknown=model.price_unknown,
    )
    unknown = tuple(n for n in model.unknown_notes() if n not in notes)
    return Plan(
        workflow=model.workflow.name,
        assignments=assignments,
        flow_list=tuple(flows),
        metrics=metrics,
        objective=objective,
        t0=model.t0,
        notes=(*notes, *unknown),
    )
