"""The MILP's data: units of work, sites, the slot grid and every coefficient, from the cost model.

Units are the workflow's steps when the instance is small enough to solve exactly
(``exact``); above that, steps of the same category and DAG level are aggregated into
groups (WfCommons task names carry the category).

**Slot grid.** Slot ``k`` covers ``[k L, (k+1) L)`` of plan time. One slot when no used
price or carbon forecast varies in time (nothing depends on the start then). Otherwise
the grid covers the whole span the plan may use (the deadline, else the makespan of the
best heuristic plan): ``L`` is the twin's slot length, coarsened to a multiple of it when
more than ``max_slots`` slots would be needed, so a workflow longer than the forecast
horizon is planned over its whole span (beyond the horizon the last forecast slot holds,
the cost model's persistence rule); nothing forces a step into the first ``max_slots``
hours any more.

**Coefficients.** The run cost ``c_usk`` and carbon ``g_usk`` of a unit started in slot
``k`` are the *largest* values over every start in ``[kL, (k+1)L]`` (exact: the cost and
carbon of a start are piecewise linear in the start, with breakpoints where the start or
the end crosses a forecast slot's edge, so the extremes lie on those points). The decoder
starts every step no earlier than the model's ``S_u`` inside the chosen slot, so the
plan's real cost and carbon never exceed what the model counted. The previous model took
the value at the slot's start and let the step start anywhere in the slot: with steps of
about a slot or longer the counted and the real carbon parted (up to 1.8x on 2-3-step
chains), and the optimum of the model was not the plan's.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from dataclasses import dataclass, field

from orchestrator.placement.costs import CostModel
from orchestrator.placement.plan import PlanningConstraints
from orchestrator.placement.timeshift import has_time_variation


@dataclass
class ILPData:
    """The instance the model is built from: units of work, sites, slots, edges."""

    units: list[str]
    members: dict[str, list[str]]
    sites: list[str]
    slots: int
    slot_seconds: float
    eligible: dict[str, tuple[str, ...]]
    dur: dict[tuple[str, str], float]
    load: dict[tuple[str, str], float]
    energy: dict[tuple[str, str], float]
    cost: dict[tuple[str, str, int], float]
    carbon: dict[tuple[str, str, int], float]
    release: dict[str, float]
    deadline: dict[str, float]
    site_release: dict[str, float]
    pool: dict[str, int]
    capacity: dict[tuple[str, int], float]
    buffer: dict[str, float]
    edges: list[tuple[str, str]]
    delay: dict[tuple[str, str], dict[tuple[str, str], float]]
    tcost: dict[tuple[str, str], dict[tuple[str, str], float]]
    ebytes: dict[tuple[str, str], float]
    ref: dict[str, float]
    deadline_all: float | None
    budget: float | None
    exact: bool
    time_varying: bool = False
    """True when a price or carbon forecast varies in time (then the coefficients are the
    slots' largest values, and the model is no relaxation)."""
    input_cost: dict[tuple[str, str], float] = field(default_factory=dict)
    """EUR of moving a unit's located external inputs to a site."""
    input_delay: dict[tuple[str, str], float] = field(default_factory=dict)
    """Seconds until a unit's located external inputs are at a site (only units having some)."""
    buffer_active: bool = field(default=False)
    """Set when the buffer family was added (it is stricter than the flow rule)."""


def group_steps(model: CostModel, max_groups: int) -> dict[str, list[str]]:
    """Steps by (category, level); coarsened to (category prefix, level), then level alone.

    Steps of one level have no edges between them, so a group never contains an
    edge; a step keeps to itself when its sites differ from its group's.
    """
    wf = model.workflow
    levels = wf.levels()

    def key(step: str, how: int) -> str:
        s = model.step_by_id[step]
        cat = s.category or s.name or s.id
        if how == 1:
            cat = re.split(r"[_.\-]", cat, maxsplit=1)[0]
        elif how == 2:
            cat = ""
        elig = ",".join(model.eligible[step])
        return f"L{levels[step]}|{cat}|{elig}"

    groups: dict[str, list[str]] = {}
    for how in (0, 1, 2):
        groups = defaultdict(list)
        for s in wf.topological_order():
            groups[key(s, how)].append(s)
        if len(groups) <= max_groups:
            break
    return dict(groups)


def slot_grid(model: CostModel, constraints: PlanningConstraints, span: float) -> tuple[int, float]:
    """Number of slots K and their length L, covering ``span`` (module docstring)."""
    base = min(ser.slot_seconds for ser in model.series.values())
    if not has_time_variation(model, set(model.sites)):
        return 1, max(base, span)
    needed = max(1, math.ceil(span / base - 1e-9))
    per = max(1, math.ceil(needed / constraints.max_slots))
    L = per * base
    return max(1, math.ceil(span / L - 1e-9)), L


def breakpoints(model: CostModel, step: str, site: str, a: float, b: float) -> list[float]:
    """Starts in ``[a, b]`` (with ``a`` and ``b``) where the start or the end of ``step`` on
    ``site`` meets a forecast slot's edge, sorted: between two consecutive ones the step's
    run cost and carbon are linear in its start."""
    ser = model.series[site]
    d = model.duration(step, site)
    points = {a, b}
    last = ser.offset + (len(ser.capacity) - 1) * ser.slot_seconds  # no edges past it
    for shift in (0.0, d):
        k = math.ceil((a + shift - ser.offset) / ser.slot_seconds)
        edge = ser.offset + k * ser.slot_seconds
        while edge - shift <= b and edge <= last:
            if edge - shift >= a:
                points.add(edge - shift)
            edge += ser.slot_seconds
    return sorted(points)


def start_extremes(
    model: CostModel, step: str, site: str, a: float, b: float, what: str
) -> tuple[float, float]:
    """Smallest and largest run cost (``what="cost"``) or carbon (``"carbon"``) of ``step``
    on ``site`` over starts ``t`` in ``[a, b]`` (they lie on the ``breakpoints``)."""
    fn = model.run_cost if what == "cost" else model.carbon_kg
    values = [fn(step, site, t) for t in breakpoints(model, step, site, a, b)]
    return min(values), max(values)


def ilp_data(
    model: CostModel,
    constraints: PlanningConstraints,
    groups: dict[str, list[str]],
    ref: dict[str, float],
    span: float,
    exact: bool,
) -> ILPData:
    """Aggregate the cost model over ``groups`` (singletons when exact)."""
    K, L = slot_grid(model, constraints, span)
    varying = K > 1 or has_time_variation(model, set(model.sites))
    wf = model.workflow
    unit_of = {s: g for g, ms in groups.items() for s in ms}
    units = list(groups)
    sites = list(model.sites)
    eligible = {
        g: tuple(s for s in sites if all(s in model.eligible[m] for m in ms))
        for g, ms in groups.items()
    }
    dur: dict[tuple[str, str], float] = {}
    load: dict[tuple[str, str], float] = {}
    energy: dict[tuple[str, str], float] = {}
    cost: dict[tuple[str, str, int], float] = {}
    carbon: dict[tuple[str, str, int], float] = {}
    input_cost: dict[tuple[str, str], float] = {}
    for g, ms in groups.items():
        for s in eligible[g]:
            ds = [model.duration(m, s) for m in ms]
            ld = sum(model.step_by_id[m].cores * d for m, d in zip(ms, ds, strict=True))
            dur[g, s] = max(max(ds), ld / model.pool[s]) if model.pool[s] else max(ds)
            load[g, s] = ld
            energy[g, s] = sum(model.energy_kwh(m, s) for m in ms)
            input_cost[g, s] = sum(
                model.transfer_cost(origin, s, size)
                for m in ms
                for _, size, origin in model.located.get(m, ())
                if origin is not None
            )
            for k in range(K):
                lo, hi = k * L, (k + 1) * L if K > 1 else max(0.0, span)
                c_sum = g_sum = 0.0
                for m in ms:
                    if not varying:
                        c_sum += model.run_cost(m, s, 0.0)
                        g_sum += model.carbon_kg(m, s, 0.0)
                        continue
                    c_sum += start_extremes(model, m, s, lo, hi, "cost")[1]
                    g_sum += start_extremes(model, m, s, lo, hi, "carbon")[1]
                cost[g, s, k] = c_sum
                carbon[g, s, k] = g_sum
    release = {
        g: max(model.step_by_id[m].constraints.release for m in ms) for g, ms in groups.items()
    }
    input_delay = {
        (g, s): max(model.input_delay(m, s) for m in ms)
        for g, ms in groups.items()
        for s in eligible[g]
        if any(m in model.located for m in ms)
    }
    deadline: dict[str, float] = {}
    for g, ms in groups.items():
        dls = [model.step_by_id[m].constraints.deadline for m in ms]
        known = [d for d in dls if d is not None]
        if known:
            deadline[g] = min(known)
    delay: dict[tuple[str, str], dict[tuple[str, str], float]] = {}
    tcost: dict[tuple[str, str], dict[tuple[str, str], float]] = {}
    ebytes: dict[tuple[str, str], float] = defaultdict(float)
    pairs = [(a, b) for a in sites for b in sites if a != b]
    for p, c in wf.edges:
        gp, gc = unit_of[p], unit_of[c]
        e = (gp, gc)
        dd = delay.setdefault(e, {})
        tc = tcost.setdefault(e, {})
        items = model.edge_items.get((p, c), ())
        if not items:
            continue
        nbytes = sum(size for _, size in items)
        ebytes[e] += nbytes
        for a, b in pairs:
            if a not in eligible[gp] or b not in eligible[gc]:
                continue
            t = model.edge_delay(p, c, a, b)
            dd[a, b] = max(dd.get((a, b), 0.0), t)
            if not math.isinf(t):
                # an item read by k consumers is charged 1/k per edge: never more than the
                # flows pay (one move per destination site), so the model stays a relaxation
                eur = sum(
                    model.transfer_cost(a, b, size) / max(1, len(model.consumers[i]))
                    for i, size in items
                )
                if eur > 0:
                    tc[a, b] = tc.get((a, b), 0.0) + eur
    edges = list(delay)
    capacity = {
        (s, k): min(
            model.series[s].capacity[j]
            for j in range(
                model.series[s].slot(k * L), model.series[s].slot((k + 1) * L - 1e-9) + 1
            )
        )
        for s in sites
        for k in range(K)
    }
    return ILPData(
        units=units,
        members=groups,
        sites=sites,
        slots=K,
        slot_seconds=L,
        eligible=eligible,
        dur=dur,
        load=load,
        energy=energy,
        cost=cost,
        carbon=carbon,
        release=release,
        deadline=deadline,
        site_release=dict(model.site_release),
        pool=dict(model.pool),
        capacity=capacity,
        buffer={s.id: s.buffer_capacity for s in model.federation.sites},
        edges=edges,
        delay=delay,
        tcost=tcost,
        ebytes=dict(ebytes),
        ref=ref,
        deadline_all=constraints.deadline,
        budget=constraints.budget,
        exact=exact,
        time_varying=varying,
        input_cost=input_cost,
        input_delay=input_delay,
    )


def is_relaxation(data: ILPData) -> bool:
    """True when the model's optimum bounds the real problem's from below.

    So when it is exact (one unit per step), nothing varies in time (then cost and carbon
    do not depend on the start) and it has no buffer family (stricter than the flow rule).
    Its capacity (aggregate load) and delays are then relaxations or exact.
    """
    return data.exact and not data.time_varying and not data.buffer_active
