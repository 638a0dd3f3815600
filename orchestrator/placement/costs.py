"""The cost model every planner shares: durations, energy, cost, carbon, transfers, eligibility.

For a step ``j`` on site ``s`` starting at ``t`` (seconds from ``t0``):

* duration ``d_js = work_j / (cores_j * speed_s)``  (``Site.duration``);
* energy ``E_js = cores_j * d_js * power_busy_s * PUE_s``  joules (``Site.energy_j``),
  reported in kWh (``/ 3.6e6``); GPUs draw no modelled power (the site model has none);
* cost ``C_js(t) = cores_j * d_js / 3600 * price_core_s + gpus_j * d_js / 3600 * price_gpu_s
  + E_js[kWh] * pbar_s(t, t + d_js)``: the price per core-hour covers the hardware and its
  operation, the energy is passed through at the forecast power price (EUR/kWh), so
  moving a step to a cheap hour lowers its cost; the average ``pbar`` is taken over
  the slots the step actually runs in;
* carbon ``G_js(t) = E_js[kWh] * cbar_s(t, t + d_js) / 1000``  kgCO2e with ``cbar`` the
  forecast intensity (gCO2e/kWh) averaged over the slots used;
* a data item of ``b`` bytes moved from ``s`` to ``s'`` takes ``latency + b / bandwidth``
  (``Federation.transfer_time``) once it has the link, and costs the link's EUR/GB; a link
  carries one transfer at a time (``links``: concurrent transfers share its bandwidth, so
  two take twice as long as one), so a transfer may wait for its link; an unlinked pair of
  sites cannot carry a data edge; a pure ordering edge (no bytes) has no delay;
* an external input (an item no step produces) with a ``location`` at a site ``L`` is
  moved from ``L`` to each site that consumes it, from the plan's time 0: its consumer
  on ``s`` starts no earlier than ``latency + b / bandwidth`` of the link ``L -> s``,
  the move costs the link's EUR/GB and its bytes count as moved; a site with no link
  from ``L`` (or whose buffer cannot hold the item) is not eligible for the consumer.
  An input at a URL comes from outside the federation: its flow has the URL as its
  source, its bytes count as moved, it costs nothing and no delay is modelled (the
  federation's links say nothing about the Internet path); only the consumer's buffer
  must hold it. An external input without a location is not counted (as before).

Forecasts come from the twin's view: slot ``k`` of site ``s`` covers
``[issued_at + k L, issued_at + (k+1) L)``; beyond the horizon the last slot is
repeated (persistence). A withheld price or intensity (None) falls back to the site's
nominal figure; a site whose figure is neither forecast nor nominal is **unknown** and
is assumed to have the highest figure known anywhere in the federation (every slot of
every forecast and every nominal): pessimistic, so an unknown site is never chosen for
being green or cheap. The plan's metrics name such sites (``carbon_unknown``,
``price_unknown``). When no site's figure is known at all, a request that minimises
that criterion alone (``carbon``; ``cost`` or a budget for prices) is refused with
``PlanningError``; other objectives count the criterion as 0 for every site (it then
cannot change a choice) and the metrics say so. Capacity: ``mean - z * std`` available
cores per slot, clipped to ``[0, cores]``; list schedulers use the smallest value over
the horizon as a pool of identical cores (conservative, so every plan they make fits
every slot).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from datalogistics.flows import Flow
from datalogistics.items import DataItem
from federation.jurisdictions import VALID_JURISDICTIONS, jurisdiction_allows
from federation.model import Federation, Site
from orchestrator.errors import PlanningError
from orchestrator.placement.links import book_transfers
from orchestrator.placement.plan import Objective, ObjectiveKind, PlanningConstraints
from orchestrator.workflow import Step, Workflow
from twin.state import AbstractSiteState, Forecast, SiteStatus, SiteView

J_PER_KWH = 3.6e6


@dataclass(frozen=True)
class SiteSeries:
    """One site's forecasts on the plan's clock: slot length, offset and per-slot values."""

    offset: float
    """Plan time (s from t0) at which slot 0 starts."""
    slot_seconds: float
    price: tuple[float, ...]
    carbon: tuple[float, ...]
    capacity: tuple[float, ...]

    def slot(self, t: float) -> int:
        """Index of the slot holding plan time ``t`` (clamped to the horizon)."""
        k = math.floor((t - self.offset) / self.slot_seconds)
        return min(max(k, 0), len(self.capacity) - 1)

    def average(self, series: Sequence[float], t0: float, t1: float) -> float:
        """Time average of a per-slot ``series`` over ``[t0, t1)`` (value at ``t0`` if empty)."""
        if t1 <= t0:
            return series[self.slot(t0)]
        total = 0.0
        t = t0
        while t < t1:
            k = self.slot(t)
            edge = self.offset + (k + 1) * self.slot_seconds
            if k == len(series) - 1 or edge <= t:
                edge = t1
            nxt = min(edge, t1)
            total += series[k] * (nxt - t)
            t = nxt
        return total / (t1 - t0)

    def slot_start(self, k: int) -> float:
        return self.offset + k * self.slot_seconds


def plan_t0(view: SiteView, constraints: PlanningConstraints) -> float:
    """Unix time of the plan's time 0: the constraint's ``t0``, else the earliest issue time."""
    if constraints.t0 is not None:
        return constraints.t0
    return min((st.issued_at for st in view.values()), default=0.0)


class CostModel:
    """Durations, energy, costs, carbon, eligibility and transfers for one planning request."""

    def __init__(
        self,
        workflow: Workflow,
        federation: Federation,
        view: SiteView,
        constraints: PlanningConstraints,
    ) -> None:
        self.workflow = workflow
        self.federation = federation
        self.constraints = constraints
        self.t0 = plan_t0(view, constraints)
        self.site_by_id: dict[str, Site] = {s.id: s for s in federation.sites}
        # When every step names the sites it may use (a project's sites, a re-plan's usable
        # sites), the others can never be chosen: they are left out of the model altogether,
        # so that planning on a few sites of a large federation costs what those sites cost.
        allowed = [st.constraints.sites for st in workflow.steps]
        if allowed and all(a is not None for a in allowed):
            named = {sid for a in allowed for sid in a or ()}
            candidates = [s for s in federation.sites if s.id in named]
        else:
            candidates = list(federation.sites)
        self.states: dict[str, AbstractSiteState] = {
            s.id: view[s.id] if s.id in view else AbstractSiteState.static(s) for s in candidates
        }
        # what is known of prices and carbon is over the whole federation (the assumed figure
        # for an unknown one is the federation's highest known, as the checker recomputes it)
        price_known: dict[str, tuple[float, ...] | None] = {}
        carbon_known: dict[str, tuple[float, ...] | None] = {}
        for site in federation.sites:
            st = self.states.get(site.id) or view.get(site.id)
            price_known[site.id] = known_figures(
                st.power_price if st else None, site.energy_price_eur_per_kwh
            )
            carbon_known[site.id] = known_figures(
                st.carbon_intensity if st else None, site.carbon_intensity_g_per_kwh
            )
        self.price_unknown: tuple[str, ...] = tuple(
            sorted(s for s, v in price_known.items() if v is None)
        )
        """Sites whose power price is neither forecast nor nominal (assumed pessimistically)."""
        self.carbon_unknown: tuple[str, ...] = tuple(
            sorted(s for s, v in carbon_known.items() if v is None)
        )
        """Sites whose carbon intensity is neither forecast nor nominal."""
        self.price_assumed = max((max(v) for v in price_known.values() if v), default=None)
        """The price assumed for unknown sites (None: no site's price is known)."""
        self.carbon_assumed = max((max(v) for v in carbon_known.values() if v), default=None)
        self.series: dict[str, SiteSeries] = {
            sid: self._series(self.site_by_id[sid], st, price_known[sid], carbon_known[sid])
            for sid, st in self.states.items()
        }
        self.pool: dict[str, int] = {
            sid: 0
            if self.states[sid].status is SiteStatus.DOWN
            else max(0, math.floor(min(ser.capacity) + 1e-9))
            for sid, ser in self.series.items()
        }
        self.site_release: dict[str, float] = {
            sid: st.expected_wait_s for sid, st in self.states.items()
        }
        self.sites: tuple[str, ...] = tuple(s.id for s in candidates)
        """The sites some step may use (the federation's, unless every step is restricted)."""
        self.steps: tuple[Step, ...] = workflow.steps
        self.step_by_id: dict[str, Step] = {s.id: s for s in workflow.steps}
        # DAG lookups cached as plain dicts (the workflow's are behind pydantic attributes)
        self.parents_of: dict[str, tuple[str, ...]] = {
            s.id: workflow.parents(s.id) for s in workflow.steps
        }
        self.children_of: dict[str, tuple[str, ...]] = {
            s.id: workflow.children(s.id) for s in workflow.steps
        }
        self.edge_items: dict[tuple[str, str], tuple[tuple[str, float], ...]] = {}
        for p, c in workflow.edges:
            outs = set(workflow.step(p).outputs)
            items = tuple((i, workflow.item(i).size) for i in workflow.step(c).inputs if i in outs)
            self.edge_items[(p, c)] = items
        self.consumers: dict[str, list[str]] = defaultdict(list)
        self.located: dict[str, list[tuple[str, float, str | None]]] = defaultdict(list)
        """Per step, its external inputs with a location: (item, bytes, site or None for a URL)."""
        self.origin: dict[str, str] = {}
        """Per located external input, where it comes from: its site, or its URL."""
        for s in workflow.steps:
            for i in s.inputs:
                if workflow.producer(i) is not None:
                    self.consumers[i].append(s.id)
                    continue
                loc = workflow.item(i).location
                if loc is None:
                    continue
                self.consumers[i].append(s.id)
                self.origin[i] = loc.site if loc.site is not None else str(loc.url)
                self.located[s.id].append((i, workflow.item(i).size, loc.site))
        self.edge_max: dict[tuple[str, str], float] = {
            e: max(size for _, size in items) for e, items in self.edge_items.items() if items
        }
        self.edge_bytes: dict[tuple[str, str], float] = {
            e: sum(size for _, size in items) for e, items in self.edge_items.items() if items
        }
        # (latency, bandwidth, EUR per byte) of every link, read once: Federation.link is slow
        if len(candidates) ** 2 < len(federation.links):  # a few sites of a large federation
            # the candidates' links, and those from where located inputs live
            srcs = {s.id for s in candidates} | {
                o for ins in self.located.values() for _, _, o in ins if o is not None
            }
            ends = [(a, b.id) for a in srcs for b in candidates if a != b.id]
            used = [lk for a, b in ends if (lk := federation.link(a, b)) is not None]
        else:
            used = list(federation.links)
        self.links: dict[tuple[str, str], tuple[float, float, float]] = {
            (lk.src, lk.dst): (lk.latency, lk.bandwidth, lk.cost_per_gb / 1e9) for lk in used
        }
        self.buffer: dict[str, float] = {s.id: s.buffer_capacity for s in federation.sites}
        self.why_not: dict[str, dict[str, str]] = {}
        self.eligible: dict[str, tuple[str, ...]] = {}
        for step in workflow.steps:
            # the items this step holds that may not go everywhere (looked up once per step)
            fenced = [
                (i, item)
                for i in (*step.inputs, *step.outputs)
                if (item := workflow.item(i)).allowed_jurisdictions is not None
            ]
            reasons = {sid: self._ineligible(step, sid, fenced) for sid in self.sites}
            self.why_not[step.id] = {k: v for k, v in reasons.items() if v}
            self.eligible[step.id] = tuple(sid for sid in self.sites if not reasons[sid])
        self._dur: dict[tuple[str, str], float] = {}
        self._kwh: dict[tuple[str, str], float] = {}
        self._lb: dict[str, float] | None = None
        self._objective_lb: dict[tuple[tuple[tuple[str, float], ...], ...], float] = {}
        self.ranks: dict[str, float] | None = None

    # -- site series ---------------------------------------------------------------
    def _series(
        self,
        site: Site,
        st: AbstractSiteState,
        price: tuple[float, ...] | None,
        carbon: tuple[float, ...] | None,
    ) -> SiteSeries:
        n = st.horizon
        cap = tuple(
            min(float(site.cores), max(0.0, v))
            for v in st.available_cores.lower(self.constraints.z)
        )
        return SiteSeries(
            offset=st.issued_at - self.t0,
            slot_seconds=st.slot_seconds,
            price=_fit(price, n, self.price_assumed or 0.0),
            carbon=_fit(carbon, n, self.carbon_assumed or 0.0),
            capacity=cap,
        )

    def refuse_unknown(self, objective: Objective) -> None:
        """``PlanningError`` when the request minimises a criterion no site's figure is known for.

        A carbon objective needs one known carbon intensity, a cost objective or a budget one
        known power price (see the module docstring for the rule).
        """
        every = ", ".join(self.sites)
        if objective.kind is ObjectiveKind.CARBON and self.carbon_assumed is None:
            raise PlanningError(
                f"the carbon intensity of every site ({every}) is unknown: give "
                "carbon_intensity_g_per_kwh in the federation or a carbon forecast in the "
                "twin's view, or choose another objective"
            )
        if self.price_assumed is None and (
            objective.kind is ObjectiveKind.COST or self.constraints.budget is not None
        ):
            raise PlanningError(
                f"the power price of every site ({every}) is unknown: give "
                "energy_price_eur_per_kwh in the federation or a price forecast in the "
                "twin's view, or plan without a cost objective and a budget"
            )

    def unknown_notes(self) -> tuple[str, ...]:
        """What the plan assumed about unknown figures, one sentence each."""
        out = []
        for what, unknown, assumed, unit in (
            ("carbon intensity", self.carbon_unknown, self.carbon_assumed, "gCO2e/kWh"),
            ("power price", self.price_unknown, self.price_assumed, "EUR/kWh"),
        ):
            if not unknown:
                continue
            if assumed is None:
                out.append(f"{what} unknown for every site: counted as 0")
            else:
                out.append(
                    f"{what} unknown for {', '.join(unknown)}: assumed {assumed:.4g} {unit}, "
                    "the highest known in the federation"
                )
        return tuple(out)

    # -- eligibility ---------------------------------------------------------------
    def _ineligible(self, step: Step, sid: str, fenced: list[tuple[str, DataItem]]) -> str:
        """Why ``step`` may not run on ``sid`` ("" when it may); ``fenced``: the items it
        reads or writes whose jurisdictions are restricted."""
        site = self.site_by_id[sid]
        c = step.constraints
        if self.states[sid].status is SiteStatus.DOWN:
            return "the twin reports the site down"
        if c.sites is not None and sid not in c.sites:
            return f"step allows only sites {', '.join(c.sites)}"
        if not jurisdiction_allows(c.jurisdictions, site.jurisdiction):
            return f"jurisdiction {site.jurisdiction} not in {', '.join(c.jurisdictions or ())}"
        for k, v in c.labels.items():
            if site.labels.get(k) != v:
                return f"label {k}={v} missing"
        for item_id, item in fenced:
            if not item.may_reside_in(site.jurisdiction):
                allowed = ", ".join(item.allowed_jurisdictions or ())
                return f"data item {item_id} may reside only in {allowed}"
        extra = self.constraints.eligible.get(step.id)
        if extra is not None and not allows_site(extra, site):
            return f"data project plan allows only {', '.join(extra)}"
        for item_id, size, origin in self.located.get(step.id, ()):
            if size > self.buffer[sid]:
                return f"input {item_id} ({size:.3g} B) does not fit the site's buffer"
            if origin is not None and origin != sid and (origin, sid) not in self.links:
                return f"input {item_id} lives at {origin}: no link {origin} -> {sid}"
        if step.memory > site.memory:
            return f"needs {step.memory:.3g} B of memory, site has {site.memory:.3g}"
        if step.gpus > site.gpus:
            return f"needs {step.gpus} GPUs, site has {site.gpus}"
        if step.cores > self.pool[sid]:
            return f"needs {step.cores} cores, forecast guarantees {self.pool[sid]}"
        return ""

    # -- per step ------------------------------------------------------------------
    def duration(self, step: str, site: str) -> float:
        key = (step, site)
        d = self._dur.get(key)
        if d is None:
            s = self.step_by_id[step]
            d = self.site_by_id[site].duration(s.work, s.cores)
            self._dur[key] = d
        return d

    def energy_kwh(self, step: str, site: str) -> float:
        """``cores * d * power_busy * PUE`` in kWh."""
        key = (step, site)
        e = self._kwh.get(key)
        if e is None:
            s = self.step_by_id[step]
            e = self.site_by_id[site].energy_j(s.cores * self.duration(step, site)) / J_PER_KWH
            self._kwh[key] = e
        return e

    def run_cost(self, step: str, site: str, start: float) -> float:
        """EUR for running ``step`` on ``site`` from ``start`` (core, GPU and energy)."""
        s = self.step_by_id[step]
        st = self.site_by_id[site]
        d = self.duration(step, site)
        hours = d / 3600.0
        power = self.series[site].average(self.series[site].price, start, start + d)
        return (
            s.cores * hours * st.price_per_core_hour
            + s.gpus * hours * st.price_per_gpu_hour
            + self.energy_kwh(step, site) * power
        )

    def carbon_kg(self, step: str, site: str, start: float) -> float:
        """kgCO2e of ``step`` on ``site`` from ``start`` (intensity over the slots it runs in)."""
        d = self.duration(step, site)
        ci = self.series[site].average(self.series[site].carbon, start, start + d)
        return self.energy_kwh(step, site) * ci / 1000.0

    def terms(self, step: str, site: str, start: float) -> dict[str, float]:
        """The criteria of one step placed at ``start``: end time, cost, energy, carbon."""
        return {
            "time": start + self.duration(step, site),
            "cost": self.run_cost(step, site, start),
            "energy": self.energy_kwh(step, site),
            "carbon": self.carbon_kg(step, site, start),
        }

    # -- edges ---------------------------------------------------------------------
    def transfer_time(self, src: str, dst: str, nbytes: float) -> float:
        """``latency + bytes / bandwidth`` (0 on one site, inf when unlinked)."""
        if src == dst:
            return 0.0
        link = self.links.get((src, dst))
        return math.inf if link is None else link[0] + nbytes / link[1]

    def transfer_cost(self, src: str, dst: str, nbytes: float) -> float:
        """EUR to move ``nbytes`` (0 on one site, inf when unlinked)."""
        if src == dst:
            return 0.0
        link = self.links.get((src, dst))
        return math.inf if link is None else link[2] * nbytes

    def edge_delay(self, parent: str, child: str, src: str, dst: str) -> float:
        """Least seconds between the parent's end and the child's start (inf: unlinked data edge).

        The items of the edge share the link (``links``): the last of them arrives no
        earlier than ``latency + (sum of their bytes) / bandwidth`` after the parent ends,
        later when other transfers hold the link. An item larger than the source's or the
        destination's buffer cannot cross either.
        """
        if src == dst:
            return 0.0
        biggest = self.edge_max.get((parent, child))
        if biggest is None:
            return 0.0
        if biggest > min(self.buffer[src], self.buffer[dst]):
            return math.inf
        return self.transfer_time(src, dst, self.edge_bytes[(parent, child)])

    def input_delay(self, step: str, site: str) -> float:
        """Least seconds from time 0 until the located external inputs of ``step`` are at
        ``site`` (those from one site share its link to ``site``)."""
        by_origin: dict[str, float] = defaultdict(float)
        for _, size, origin in self.located.get(step, ()):
            if origin is not None and origin != site:
                by_origin[origin] += size
        return max(
            (self.transfer_time(o, site, size) for o, size in by_origin.items()), default=0.0
        )

    def ready_time(self, step: str, site: str, placed: Mapping[str, tuple[str, float]]) -> float:
        """Earliest start of ``step`` on ``site`` given the placed parents (site, end), with
        its links free (a lower bound: ``schedule`` books the links)."""
        s = self.step_by_id[step]
        t = max(s.constraints.release, self.site_release[site])
        if step in self.located:
            t = max(t, self.input_delay(step, site))
        for p in self.parents_of[step]:
            psite, pend = placed[p]
            t = max(t, pend + self.edge_delay(p, step, psite, site))
        return t

    # -- whole plans ---------------------------------------------------------------
    def flows(
        self,
        placed: Mapping[str, tuple[str, float, float]],
        transfers: Mapping[tuple[str, str], tuple[float, float]] | None = None,
    ) -> list[Flow]:
        """One flow per produced item per destination site, by the rule of datalogistics.flows.

        ``placed`` maps a step id to (site, start, end); ``transfers`` the booked
        (start, end) of each (item, destination site) crossing a link (``links``; booked
        first come, first served when None). A flow is ready when its producer ends;
        ``consumer_start`` is the start of the last consumer at ``dst``.
        """
        if transfers is None:
            transfers = book_transfers(self, placed)
        out: list[Flow] = []
        for item, consumers in self.consumers.items():
            producer = self.workflow.producer(item)
            external = producer is None
            if producer is None:
                src, pend = self.origin[item], 0.0
            else:
                src, _, pend = placed[producer]
            size = self.workflow.item(item).size
            by_dst: dict[str, tuple[float, float]] = {}
            for c in consumers:
                csite, cstart, cend = placed[c]
                rel, last = by_dst.get(csite, (0.0, 0.0))
                by_dst[csite] = (max(rel, cend), max(last, cstart))
            for dst, (release, last_start) in sorted(by_dst.items()):
                start, end = pend, pend
                if src != dst and src in self.site_by_id:
                    start, end = transfers[(item, dst)]
                out.append(
                    Flow(item, size, src, dst, pend, start, end, release, last_start, external)
                )
        return out

    def evaluate(
        self, placed: Mapping[str, tuple[str, float, float]], flows: Sequence[Flow]
    ) -> dict[str, float]:
        """Makespan, cost, energy, carbon and bytes moved of a full placement."""
        makespan, cost, energy, carbon = self.run_totals(placed)
        moved = 0.0
        for f in flows:
            if f.crosses_sites:
                moved += f.size
                if f.src in self.site_by_id:  # a URL input costs nothing (module docstring)
                    cost += self.transfer_cost(f.src, f.dst, f.size)
        return {
            "time": makespan,
            "cost": cost,
            "energy": energy,
            "carbon": carbon,
            "bytes_moved": moved,
        }

    def run_totals(
        self, placed: Mapping[str, tuple[str, float, float]]
    ) -> tuple[float, float, float, float]:
        """Makespan, and the run cost, energy and carbon of the steps (no transfers)."""
        makespan = max((e for _, _, e in placed.values()), default=0.0)
        cost = energy = carbon = 0.0
        for step, (site, start, _) in placed.items():
            cost += self.run_cost(step, site, start)
            energy += self.energy_kwh(step, site)
            carbon += self.carbon_kg(step, site, start)
        return makespan, cost, energy, carbon

    def lower_bounds(self) -> dict[str, float]:
        """Valid lower bounds of each criterion over every feasible plan.

        time: the longest path with each step at its fastest eligible site and no
        transfers, and the total core-seconds over the summed pools; cost, energy,
        carbon: each step at its cheapest / most frugal / greenest site and slot
        (per-slot minima of price and intensity), transfers free.
        """
        if self._lb is None:
            self._lb = self._lower_bounds()
        return dict(self._lb)

    def _lower_bounds(self) -> dict[str, float]:
        fastest = {
            s.id: min((self.duration(s.id, x) for x in self.eligible[s.id]), default=0.0)
            for s in self.steps
        }
        cp, _ = self.workflow.critical_path(duration=lambda st: fastest[st.id])
        cores = sum(self.pool.values()) or 1
        speed = max((self.site_by_id[x].speed for x in self.sites if self.pool[x]), default=1.0)
        load = sum(s.work / speed for s in self.steps) / cores
        lb = {"time": max(cp, load), "cost": 0.0, "energy": 0.0, "carbon": 0.0}
        for s in self.steps:
            opts = self.eligible[s.id]
            if not opts:
                continue
            lb["energy"] += min(self.energy_kwh(s.id, x) for x in opts)
            lb["carbon"] += min(
                self.energy_kwh(s.id, x) * min(self.series[x].carbon) / 1000.0 for x in opts
            )
            lb["cost"] += min(self._min_cost(s, x) for x in opts)
        return lb

    def objective_bound(self, weights: Mapping[str, float], ref: Mapping[str, float]) -> float:
        """A lower bound of ``sum_t w_t f_t / ref_t`` over every feasible plan.

        The makespan term from ``lower_bounds``; the additive terms (cost, energy,
        carbon) minimised jointly per step over its eligible sites and the lowest
        price and intensity of the horizon, transfers free. Tighter than summing
        each criterion's own bound, since one site must serve all three. Cached per
        weights and reference (every plan built on the model asks for it).
        """
        key = (
            tuple(sorted((t, float(v)) for t, v in weights.items())),
            tuple(sorted((t, float(v)) for t, v in ref.items())),
        )
        if key not in self._objective_lb:
            if len(self._objective_lb) >= 64:  # plans scored against their own values
                self._objective_lb.clear()
            self._objective_lb[key] = self._objective_bound(weights, ref)
        return self._objective_lb[key]

    def _objective_bound(self, weights: Mapping[str, float], ref: Mapping[str, float]) -> float:
        def r(t: str) -> float:
            v = ref.get(t, 0.0)
            return v if v > 0 else 1.0

        total = weights.get("time", 0.0) * self.lower_bounds()["time"] / r("time")
        wc, we, wg = (weights.get(t, 0.0) / r(t) for t in ("cost", "energy", "carbon"))
        if not (wc or we or wg):
            return total
        for s in self.steps:
            opts = self.eligible[s.id]
            if opts:
                total += min(
                    wc * self._min_cost(s, x)
                    + we * self.energy_kwh(s.id, x)
                    + wg * self.energy_kwh(s.id, x) * min(self.series[x].carbon) / 1000.0
                    for x in opts
                )
        return total

    def _min_cost(self, s: Step, site: str) -> float:
        st = self.site_by_id[site]
        hours = self.duration(s.id, site) / 3600.0
        return (
            s.cores * hours * st.price_per_core_hour
            + s.gpus * hours * st.price_per_gpu_hour
            + self.energy_kwh(s.id, site) * min(self.series[site].price)
        )


def allows_site(entries: Sequence[str], site: Site) -> bool:
    """True when an eligibility list (site ids or jurisdictions, ``EU`` too) admits ``site``."""
    if site.id in entries:
        return True
    codes = [e.upper() for e in entries if e.upper() in VALID_JURISDICTIONS]
    return bool(codes) and jurisdiction_allows(codes, site.jurisdiction)


def known_figures(forecast: Forecast | None, nominal: float | None) -> tuple[float, ...] | None:
    """A site's known per-slot figures: the forecast's means, else its nominal, else None."""
    if forecast is not None and len(forecast):
        return tuple(float(v) for v in forecast.mean)
    return None if nominal is None else (float(nominal),)


def _fit(values: Sequence[float] | None, n: int, assumed: float) -> tuple[float, ...]:
    """A per-slot series of length ``n`` (``assumed`` when unknown; the last value repeated)."""
    if not values:
        return (assumed,) * n
    vals = tuple(float(v) for v in values[:n])
    return vals + (vals[-1],) * (n - len(vals))
