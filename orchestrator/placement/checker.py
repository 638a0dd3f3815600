"""The independent plan checker, run on every plan any planner returns.

It recomputes everything from the workflow, the federation and the view, not
from the planners' cost model, and checks:

1. completeness: every step placed exactly once, on a known site;
2. durations: ``end - start = work / (cores * speed)``;
3. eligibility: site not down, step constraints (sites, jurisdictions, labels),
   every data item the step reads or writes allowed at the site, extra
   eligibility of the request, memory and GPUs;
4. releases: start >= step release and the site's expected queue wait;
5. precedence: a child starts after each parent ends and, for every item it
   reads from a parent on another site, after a transfer of that item to its
   site which starts after the producer ends and lasts at least
   ``latency + bytes / bandwidth``; unlinked pairs cannot carry data;
6. per-slot capacity: at every instant, the cores in use at a site are at most
   ``mean - z * std`` of the slot holding that instant (clipped to the site's cores);
7. buffers: ``datalogistics.flows.buffer_violations`` of ``plan.flows()``
   against each site's ``buffer_capacity``;
8. deadline (the request's and each step's) and budget;
9. external inputs with a location: each consumer on another site than the input's
   starts after a flow of that input from its site (or its URL) to the consumer's site,
   lasting at least ``latency + bytes / bandwidth`` of the link (no delay from a URL);
10. shared link bandwidth: a flow of ``b`` bytes over a link of bandwidth ``B`` and latency
    ``L`` from ``start`` to ``end`` uses the link at the constant rate
    ``b / (end - start - L)`` during ``[start, end - L)``; at every instant the rates of a
    link's flows sum to at most ``B`` (concurrent transfers share the bandwidth: two at
    once take twice as long as one; see ``orchestrator.placement.links``);
11. metrics: the plan's makespan, cost, energy, carbon and bytes moved match a
    recomputation. Carbon is ``cores * d * power_busy * PUE`` (kWh) times the carbon
    intensity averaged over the slots the step runs in (gCO2e/kWh, / 1000 for kg); price
    and intensity come from the view's forecast, else the site's nominal figure, else
    (unknown) the highest figure known in the federation, else 0; the sites assumed so
    must be the ones the metrics name.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import TYPE_CHECKING

from datalogistics.flows import Flow, buffer_violations
from federation.jurisdictions import VALID_JURISDICTIONS, jurisdiction_allows
from orchestrator.errors import PlanInvalid
from twin.state import AbstractSiteState, SiteStatus

if TYPE_CHECKING:
    from federation.model import Federation, Site
    from orchestrator.placement.plan import Plan, PlanningConstraints
    from orchestrator.workflow import Step, Workflow
    from twin.state import SiteView

TOL = 1e-6


def _close(a: float, b: float) -> bool:
    """Equal within ``TOL`` relative to the larger of the two, and at least ``TOL`` absolute.

    An infinite or NaN figure is close only to itself (``inf - x <= TOL * inf`` would make an
    infinite claimed cost match any recomputed one).
    """
    if not (math.isfinite(a) and math.isfinite(b)):
        return a == b
    return abs(a - b) <= TOL * max(1.0, abs(a), abs(b))


def check_plan(
    plan: Plan,
    workflow: Workflow,
    federation: Federation,
    view: SiteView,
    constraints: PlanningConstraints,
) -> list[str]:
    """Every violation of ``plan`` as a readable message (empty: the plan is valid)."""
    out: list[str] = []
    sites = {s.id: s for s in federation.sites}
    states = {s.id: view.get(s.id) or AbstractSiteState.static(s) for s in federation.sites}
    t0 = plan.t0
    a = plan.assignments
    for step in workflow.steps:
        if step.id not in a:
            out.append(f"step {step.id} is not placed")
    for sid, asg in a.items():
        if sid != asg.step:
            out.append(f"assignment under key {sid} names step {asg.step}")
        if asg.site not in sites:
            out.append(f"step {sid} placed on unknown site {asg.site}")
    if out:
        return out
    for step in workflow.steps:
        asg = a[step.id]
        site = sites[asg.site]
        d = site.duration(step.work, step.cores)
        if not _close(asg.end - asg.start, d):
            out.append(f"step {step.id}: lasts {asg.end - asg.start:.6g} s, should be {d:.6g} s")
        why = _ineligible(step, site, workflow, constraints, states[site.id])
        if why:
            out.append(f"step {step.id} on {site.id}: {why}")
        earliest = max(step.constraints.release, states[site.id].expected_wait_s)
        if asg.start < earliest - TOL:
            out.append(f"step {step.id} starts at {asg.start:.3f} s, before {earliest:.3f} s")
        dl = step.constraints.deadline
        if dl is not None and asg.end > dl + TOL:
            out.append(f"step {step.id} ends at {asg.end:.1f} s, after its deadline {dl:.1f} s")
    out += _precedence(plan, workflow, federation)
    out += _external_inputs(plan, workflow, federation)
    out += _links(plan, federation)
    out += _capacity(plan, workflow, federation, states, constraints, t0)
    caps = {s.id: s.buffer_capacity for s in federation.sites}
    out += [f"buffer: {m}" for m in buffer_violations(plan.flows(), caps)]
    makespan = max((x.end for x in a.values()), default=0.0)
    if constraints.deadline is not None and makespan > constraints.deadline + TOL:
        out.append(f"makespan {makespan:.1f} s exceeds the deadline {constraints.deadline:.1f} s")
    prices = _figures(federation, states, "power_price", "energy_price_eur_per_kwh")
    intensities = _figures(federation, states, "carbon_intensity", "carbon_intensity_g_per_kwh")
    cost = _cost(plan, workflow, federation, states, prices[0], t0)
    if constraints.budget is not None and cost > constraints.budget * (1 + TOL):
        out.append(f"cost {cost:.4g} EUR exceeds the budget {constraints.budget:.4g} EUR")
    carbon = _carbon(plan, workflow, federation, states, intensities[0], t0)
    out += _metrics(plan, workflow, federation, makespan, cost, carbon)
    for name, unknown, claimed in (
        ("carbon_unknown", intensities[1], plan.metrics.carbon_unknown),
        ("price_unknown", prices[1], plan.metrics.price_unknown),
    ):
        if tuple(sorted(claimed)) != unknown:
            out.append(f"metrics.{name} is {list(claimed)}, recomputed {list(unknown)}")
    return out


def require_valid(
    plan: Plan,
    workflow: Workflow,
    federation: Federation,
    view: SiteView,
    constraints: PlanningConstraints,
) -> Plan:
    """``plan`` itself when valid; ``PlanInvalid`` listing every violation otherwise."""
    violations = check_plan(plan, workflow, federation, view, constraints)
    if violations:
        raise PlanInvalid(plan.metrics.planner, violations)
    return plan


def _ineligible(
    step: Step,
    site: Site,
    workflow: Workflow,
    constraints: PlanningConstraints,
    state: AbstractSiteState,
) -> str:
    c = step.constraints
    if state.status is SiteStatus.DOWN:
        return "site is down"
    if c.sites is not None and site.id not in c.sites:
        return "site not in the step's allowed sites"
    if not jurisdiction_allows(c.jurisdictions, site.jurisdiction):
        return f"jurisdiction {site.jurisdiction} not allowed for the step"
    if any(site.labels.get(k) != v for k, v in c.labels.items()):
        return "site lacks a required label"
    for item_id in (*step.inputs, *step.outputs):
        if not workflow.item(item_id).may_reside_in(site.jurisdiction):
            return f"item {item_id} may not reside in {site.jurisdiction}"
    extra = constraints.eligible.get(step.id)
    if extra is not None and site.id not in extra:
        codes = [e.upper() for e in extra if e.upper() in VALID_JURISDICTIONS]
        if not (codes and jurisdiction_allows(codes, site.jurisdiction)):
            return "not allowed by the request's eligibility"
    if step.memory > site.memory or step.gpus > site.gpus:
        return "memory or GPUs exceed the site's"
    return ""


def _precedence(plan: Plan, workflow: Workflow, federation: Federation) -> list[str]:
    out: list[str] = []
    a = plan.assignments
    arrivals: dict[tuple[str, str], list[tuple[float, float, str]]] = defaultdict(list)
    for f in plan.flows():
        arrivals[(f.item, f.dst)].append((f.start, f.end, f.src))
    for p, c in workflow.edges:
        pa, ca = a[p], a[c]
        if ca.start < pa.end - TOL:
            out.append(f"{c} starts at {ca.start:.3f} s before its parent {p} ends ({pa.end:.3f})")
        if pa.site == ca.site:
            continue
        outs = set(workflow.step(p).outputs)
        for item in workflow.step(c).inputs:
            if item not in outs:
                continue
            size = workflow.item(item).size
            need = federation.transfer_time(pa.site, ca.site, size)
            if math.isinf(need):
                out.append(f"item {item}: no link {pa.site} -> {ca.site} for edge {p} -> {c}")
                continue
            ok = [
                (s, e)
                for s, e, src in arrivals.get((item, ca.site), [])
                if src == pa.site and s >= pa.end - TOL and e - s >= need - TOL
            ]
            if not ok:
                out.append(f"item {item}: no valid transfer {pa.site} -> {ca.site} for {c}")
            elif min(e for _, e in ok) > ca.start + TOL:
                out.append(f"{c} starts at {ca.start:.3f} s before item {item} arrives")
    return out


def _links(plan: Plan, federation: Federation) -> list[str]:
    """The rates of a link's flows sum to at most its bandwidth (module docstring, 10)."""
    out: list[str] = []
    links = {(lk.src, lk.dst): lk for lk in federation.links}
    events: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
    for f in plan.flows():
        link = links.get((f.src, f.dst))
        if link is None or f.size <= 0:  # a URL input, or unlinked (reported elsewhere)
            continue
        busy = f.end - f.start - link.latency
        if busy <= 0:  # shorter than its link allows: reported by the precedence check
            continue
        # the precedence check lets a transfer be TOL seconds shorter than the link allows
        # (rounding) and reports one that is shorter still: here such a flow holds the
        # whole link, so only sharing it is reported
        rate = min(f.size / (busy + TOL), link.bandwidth)
        events[(f.src, f.dst)].append((f.start, rate))
        events[(f.src, f.dst)].append((f.end - link.latency, -rate))
    for (src, dst), evs in sorted(events.items()):
        bandwidth = links[(src, dst)].bandwidth
        evs.sort()
        level, i = 0.0, 0
        while i < len(evs):
            t = evs[i][0]
            while i < len(evs) and evs[i][0] == t:
                level += evs[i][1]
                i += 1
            # the level holds on [t, t_next): an overlap shorter than TOL is rounding
            if i < len(evs) and evs[i][0] - t > TOL and level > bandwidth * (1 + TOL):
                out.append(
                    f"link {src} -> {dst}: flows at {t:.1f} s need {level:.4g} B/s, "
                    f"bandwidth {bandwidth:.4g} B/s (concurrent transfers share it)"
                )
                break
    return out


def _capacity(
    plan: Plan,
    workflow: Workflow,
    federation: Federation,
    states: dict[str, AbstractSiteState],
    constraints: PlanningConstraints,
    t0: float,
) -> list[str]:
    out: list[str] = []
    events: dict[str, list[tuple[float, int]]] = defaultdict(list)
    for asg in plan.assignments.values():
        cores = workflow.step(asg.step).cores
        if asg.end > asg.start:
            events[asg.site].append((asg.start, cores))
            events[asg.site].append((asg.end, -cores))
    for site_id, evs in events.items():
        site = federation.site(site_id)
        st = states[site_id]
        lower = st.available_cores.lower(constraints.z)
        evs.sort(key=lambda e: (e[0], e[1]))
        level, i = 0, 0
        while i < len(evs):
            t = evs[i][0]
            while i < len(evs) and evs[i][0] == t:
                level += evs[i][1]
                i += 1
            if level <= 0 or i == len(evs):
                continue
            # the level holds on [t, t_next): check every slot that interval touches
            t_next = evs[i][0]
            k0 = _slot(st, t0 + t)
            k1 = _slot(st, t0 + max(t, t_next - 1e-9))
            cap = min(min(lower[k0 : k1 + 1]), float(site.cores))
            if level > cap + TOL:
                out.append(
                    f"site {site_id}: {level} cores in use at {t:.1f} s, forecast "
                    f"capacity {cap:.1f} (mean - z*std)"
                )
                break
    return out


def _slot(st: AbstractSiteState, t_abs: float) -> int:
    k = math.floor((t_abs - st.issued_at) / st.slot_seconds)
    return min(max(k, 0), st.horizon - 1)


def _avg(st: AbstractSiteState, values: tuple[float, ...], a: float, b: float) -> float:
    """Average of a per-slot series over absolute times [a, b) by fine sampling of slot edges."""
    if b <= a:
        return values[_slot(st, a)]
    total, t = 0.0, a
    while t < b:
        k = _slot(st, t)
        edge = st.issued_at + (k + 1) * st.slot_seconds
        nxt = b if k == st.horizon - 1 or edge <= t else min(edge, b)
        total += values[k] * (nxt - t)
        t = nxt
    return total / (b - a)


def _figures(
    federation: Federation, states: dict[str, AbstractSiteState], forecast: str, nominal: str
) -> tuple[dict[str, tuple[float, ...]], tuple[str, ...]]:
    """Per-slot figures of every site by the rule of the module docstring, and the unknown sites."""
    known: dict[str, tuple[float, ...]] = {}
    for site in federation.sites:
        fc = getattr(states[site.id], forecast)
        if fc is not None and len(fc.mean):
            known[site.id] = tuple(fc.mean)
        elif getattr(site, nominal) is not None:
            known[site.id] = (float(getattr(site, nominal)),)
    highest = max((max(v) for v in known.values()), default=0.0)
    unknown = tuple(sorted(s.id for s in federation.sites if s.id not in known))
    out = {}
    for site in federation.sites:
        n = states[site.id].horizon
        vals = known.get(site.id, (highest,))[:n]
        out[site.id] = vals + (vals[-1],) * max(0, n - len(vals))
    return out, unknown


def _kwh(step: Step, site: Site, seconds: float) -> float:
    return step.cores * seconds * site.power_busy_w * site.pue / 3.6e6


def _cost(
    plan: Plan,
    workflow: Workflow,
    federation: Federation,
    states: dict[str, AbstractSiteState],
    prices: dict[str, tuple[float, ...]],
    t0: float,
) -> float:
    """Total EUR: core-hours, GPU-hours, energy at the forecast price, link costs."""
    total = 0.0
    for asg in plan.assignments.values():
        step = workflow.step(asg.step)
        site = federation.site(asg.site)
        st = states[asg.site]
        hours = (asg.end - asg.start) / 3600.0
        kwh = _kwh(step, site, asg.end - asg.start)
        total += step.cores * hours * site.price_per_core_hour
        total += step.gpus * hours * site.price_per_gpu_hour
        total += kwh * _avg(st, prices[asg.site], t0 + asg.start, t0 + asg.end)
    known = set(federation.site_ids)
    for f in plan.flows():
        if f.crosses_sites and f.src in known:  # a URL input costs nothing
            total += federation.transfer_cost(f.src, f.dst, f.size)
    return total


def _carbon(
    plan: Plan,
    workflow: Workflow,
    federation: Federation,
    states: dict[str, AbstractSiteState],
    intensities: dict[str, tuple[float, ...]],
    t0: float,
) -> float:
    """Total kgCO2e: each step's kWh times the intensity averaged over the slots it runs in."""
    total = 0.0
    for asg in plan.assignments.values():
        kwh = _kwh(workflow.step(asg.step), federation.site(asg.site), asg.end - asg.start)
        ci = _avg(states[asg.site], intensities[asg.site], t0 + asg.start, t0 + asg.end)
        total += kwh * ci / 1000.0
    return total


def _external_inputs(plan: Plan, workflow: Workflow, federation: Federation) -> list[str]:
    """Each consumer of a located external input gets it in time (module docstring, 9)."""
    out: list[str] = []
    arrivals: dict[tuple[str, str], list[Flow]] = defaultdict(list)
    for f in plan.flows():
        arrivals[(f.item, f.dst)].append(f)
    for step in workflow.steps:
        asg = plan.assignments[step.id]
        for item_id in step.inputs:
            item = workflow.item(item_id)
            if workflow.producer(item_id) is not None or item.location is None:
                continue
            origin = item.location.site or str(item.location.url)
            if origin == asg.site:
                continue
            need = 0.0
            if item.location.site is not None:
                need = federation.transfer_time(origin, asg.site, item.size)
                if math.isinf(need):
                    out.append(f"input {item_id}: no link {origin} -> {asg.site} for {step.id}")
                    continue
            ok = [
                f
                for f in arrivals.get((item_id, asg.site), [])
                if f.src == origin
                and f.external
                and f.start >= -TOL
                and f.end - f.start >= need - TOL
            ]
            if not ok:
                out.append(f"input {item_id}: no valid flow {origin} -> {asg.site} for {step.id}")
            elif min(f.end for f in ok) > asg.start + TOL:
                out.append(f"{step.id} starts at {asg.start:.3f} s before input {item_id} arrives")
    return out


def _metrics(
    plan: Plan,
    workflow: Workflow,
    federation: Federation,
    makespan: float,
    cost: float,
    carbon: float,
) -> list[str]:
    out = []
    m = plan.metrics
    energy = sum(
        _kwh(workflow.step(x.step), federation.site(x.site), x.end - x.start)
        for x in plan.assignments.values()
    )
    moved = sum(f.size for f in plan.flows() if f.crosses_sites)
    for name, mine, theirs in (
        ("makespan_s", makespan, m.makespan_s),
        ("energy_kwh", energy, m.energy_kwh),
        ("bytes_moved", moved, m.bytes_moved),
        ("cost_eur", cost, m.cost_eur),
        ("carbon_kg", carbon, m.carbon_kg),
    ):
        if not _close(mine, theirs):
            out.append(f"metrics.{name} is {theirs:.6g}, recomputed {mine:.6g}")
    return out
