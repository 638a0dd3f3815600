"""The multi-objective placement ILP (pulp; HiGHS by default, CBC as the fallback).

A time-indexed multi-mode model on the twin's horizon slots (the Exa-AToW
continuum-twin model): the *modes* of a unit of work are the sites it may run
on, each with its duration, energy, cost and carbon; the *time index* is the
slot it starts in. Units are the workflow's steps when the instance is small
enough to solve exactly (``exact_max_steps``); above that, steps of the same
category and DAG level are aggregated into groups (WfCommons task names carry
the category) and the group-level model is solved, then expanded by list
scheduling. Both are warm-started from HEFT, under a time limit.

Sets: units ``u``, sites ``s``, slots ``k = 0..K-1`` of length ``L`` from ``t0``;
edges ``(u, v)``. Data: ``d_us`` duration, ``l_us`` core-seconds, ``e_us`` kWh,
``c_usk`` EUR and ``g_usk`` kgCO2e when started in slot ``k``, ``T_uv(s, s')``
transfer delay, ``tc_uv(s, s')`` transfer EUR, ``b_uv`` bytes.

Variables: ``z_usk in {0,1}`` (u runs on s, starting in slot k), ``x_us = sum_k z_usk``,
``S_u >= 0`` start, ``M >= 0`` makespan, ``y_uv >= 0`` transfer EUR of an edge.

Constraint families, one function each (below): assignment, slot windows,
precedence with inter-site transfer delays, per-slot capacity and the
continuous-time load bound, ephemeral buffers, eligibility, deadline, budget;
then the objective (weighted, normalised by HEFT's plan; the epsilon mode is
carbon under deadline and budget).

The ILP decides sites (and start slots); the final plan comes from list
scheduling those decisions on the core pools, so that it satisfies
instantaneous capacity exactly; the warm start (HEFT) is kept when it scores
better. The reported gap uses the solver's own dual bound (not pulp's status,
which says Optimal after a time limit) when the model is exact, and the
combinatorial bound otherwise.
"""

from __future__ import annotations

import math
import re
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pulp

from orchestrator.errors import InfeasiblePlan, PlanningError
from orchestrator.placement.costs import CostModel
from orchestrator.placement.explain import explain_all
from orchestrator.placement.improve import improve
from orchestrator.placement.plan import Objective, Plan, PlanningConstraints
from orchestrator.placement.planners.common import limit_breach
from orchestrator.placement.planners.heft import HEFTPlanner
from orchestrator.placement.planners.solvers import SOLVERS, Progress, SolveInfo, solve
from orchestrator.placement.schedule import Option, build_plan, list_schedule, upward_ranks
from orchestrator.placement.timeshift import timeshift

if TYPE_CHECKING:
    from federation.model import Federation
    from orchestrator.workflow import Workflow
    from twin.state import SiteView


@dataclass(frozen=True)
class ILPSettings:
    """How the ILP is solved.

    ``solver``: ``"highs"`` (highspy, default) or ``"cbc"`` (pulp's bundled CBC);
    ``time_limit`` in seconds; ``exact_max_steps``: above this many steps the
    group-level model is solved; ``max_groups``: groups are coarsened (category
    prefix, then level only) until at most this many remain; ``threads`` for HiGHS;
    ``improve_seconds``: budget of the local search on the critical chain after decoding.
    """

    solver: str = "highs"
    time_limit: float = 20.0
    exact_max_steps: int = 120
    max_groups: int = 150
    gap_rel: float = 1e-4
    improve_seconds: float = 3.0
    threads: int = 1
    msg: bool = False

    def __post_init__(self) -> None:
        if self.solver not in SOLVERS:
            raise ValueError(f"solver must be 'highs' or 'cbc', got {self.solver!r}")
        if self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")
        if self.time_limit <= 0:
            raise ValueError("time_limit must be > 0 seconds")


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
    buffer_active: bool = field(default=False)
    """Set when the buffer family was added (it is stricter than the flow rule)."""


Vars = dict[str, Any]


# -- the model ---------------------------------------------------------------------------
def _var(
    prob: pulp.LpProblem,
    name: str,
    low: float | None = 0.0,
    up: float | None = None,
    binary: bool = False,
) -> Any:
    """The one place variables are created (pulp 3.3's ``add_variable``, the 4.0 API)."""
    cat = pulp.LpBinary if binary else pulp.LpContinuous
    return prob.add_variable(name, lowBound=low, upBound=up, cat=cat)


def add_variables(prob: pulp.LpProblem, data: ILPData) -> Vars:
    """``z[u, s, k]`` binaries for eligible (u, s), starts ``S[u]``, makespan ``M``, ``y[e]``."""
    z = {}
    for i, u in enumerate(data.units):
        for s in data.sites:
            for k in range(data.slots):
                z[u, s, k] = _var(prob, f"z_{i}_{data.sites.index(s)}_{k}", binary=True)
    x = {
        (u, s): pulp.lpSum(z[u, s, k] for k in range(data.slots))
        for u in data.units
        for s in data.sites
    }
    S = {u: _var(prob, f"S_{i}", low=data.release[u]) for i, u in enumerate(data.units)}
    y = {e: _var(prob, f"y_{i}") for i, e in enumerate(data.edges) if data.tcost[e]}
    return {"z": z, "x": x, "S": S, "M": _var(prob, "M"), "y": y}


def add_assignment_constraints(prob: pulp.LpProblem, v: Vars, data: ILPData) -> None:
    """Each unit runs in exactly one mode and slot: ``sum_{s,k} z_usk = 1``."""
    for i, u in enumerate(data.units):
        prob += pulp.lpSum(v["x"][u, s] for s in data.sites) == 1, f"assign_{i}"


def add_eligibility_constraints(prob: pulp.LpProblem, v: Vars, data: ILPData) -> None:
    """``x_us = 0`` where the site may not run the unit (jurisdiction, labels, data, memory...)."""
    for i, u in enumerate(data.units):
        for j, s in enumerate(data.sites):
            if s not in data.eligible[u]:
                prob += v["x"][u, s] == 0, f"elig_{i}_{j}"


def add_slot_window_constraints(prob: pulp.LpProblem, v: Vars, data: ILPData) -> None:
    """The start lies in the chosen slot: ``sum k L z <= S_u <= sum (k+1) L z`` (if K > 1).

    Also the site's expected queue wait: ``S_u >= sum_s wait_s x_us``.
    """
    L = data.slot_seconds
    for i, u in enumerate(data.units):
        waits = [(s, data.site_release[s]) for s in data.sites if data.site_release[s] > 0]
        if waits:
            prob += v["S"][u] >= pulp.lpSum(w * v["x"][u, s] for s, w in waits), f"wait_{i}"
        if data.slots == 1:
            continue
        zs = [(k, v["z"][u, s, k]) for s in data.sites for k in range(data.slots)]
        prob += v["S"][u] >= pulp.lpSum(k * L * z for k, z in zs), f"slot_lo_{i}"
        prob += v["S"][u] <= pulp.lpSum((k + 1) * L * z for k, z in zs), f"slot_hi_{i}"


def _finish(v: Vars, data: ILPData, u: str) -> Any:
    return v["S"][u] + pulp.lpSum(data.dur[u, s] * v["x"][u, s] for s in data.eligible[u])


def add_precedence_constraints(prob: pulp.LpProblem, v: Vars, data: ILPData) -> None:
    """Finish-to-start with inter-site transfer delays.

    ``S_v >= S_u + sum_s d_us x_us`` for every edge, and for every ordered pair of
    different sites ``S_v >= S_u + sum_s d_us x_us + T_uv(s, s') (x_us + x_vs' - 1)``
    (the pair term is active only when u is on s and v on s'). An unlinked pair
    cannot carry the edge's data: ``x_us + x_vs' <= 1``. Transfer EUR:
    ``y_uv >= tc_uv(s, s') (x_us + x_vs' - 1)``.
    """
    if not data.edges:
        return
    for i, (a, b) in enumerate(data.edges):
        fin = _finish(v, data, a)
        prob += v["S"][b] >= fin, f"prec_{i}"
        for (s1, s2), t in data.delay[a, b].items():
            j1, j2 = data.sites.index(s1), data.sites.index(s2)
            both = v["x"][a, s1] + v["x"][b, s2] - 1
            if math.isinf(t):
                prob += v["x"][a, s1] + v["x"][b, s2] <= 1, f"nolink_{i}_{j1}_{j2}"
            elif t > 0:
                prob += v["S"][b] >= fin + t * both, f"xfer_{i}_{j1}_{j2}"
        for (s1, s2), c in data.tcost[a, b].items():
            j1, j2 = data.sites.index(s1), data.sites.index(s2)
            prob += (
                v["y"][a, b] >= c * (v["x"][a, s1] + v["x"][b, s2] - 1),
                f"xcost_{i}_{j1}_{j2}",
            )


def add_capacity_constraints(prob: pulp.LpProblem, v: Vars, data: ILPData) -> None:
    """Per-slot capacity from the forecast, and the continuous-time load bound.

    ``sum_u l_us z_usk <= cap_sk L`` (core-seconds started in slot k fit the slot's
    ``mean - z std`` cores, if K > 1) and ``M * pool_s >= sum_u l_us x_us``: a site's
    work cannot finish before its core-seconds spread over its guaranteed pool.
    """
    L = data.slot_seconds
    for j, s in enumerate(data.sites):
        users = [u for u in data.units if s in data.eligible[u]]
        if not users:
            continue
        if data.pool[s] > 0:
            prob += (
                data.pool[s] * v["M"] >= pulp.lpSum(data.load[u, s] * v["x"][u, s] for u in users),
                f"load_{j}",
            )
        if data.slots == 1:
            continue
        for k in range(data.slots):
            prob += (
                pulp.lpSum(data.load[u, s] * v["z"][u, s, k] for u in users)
                <= data.capacity[s, k] * L,
                f"cap_{j}_{k}",
            )


def add_buffer_constraints(prob: pulp.LpProblem, v: Vars, data: ILPData) -> None:
    """Ephemeral buffers: the bytes of every edge crossing into or out of a site fit its buffer.

    By the rule of ``datalogistics.flows`` a cross-site item is held at its source
    until sent and at its destination until consumed. The model counts every
    crossing edge as held at once (a conservative, time-free form of the rule):
    ``sum_e b_e (o_es + i_es) <= B_s`` with ``o_es >= x_us - x_vs`` (leaves s) and
    ``i_es >= x_vs - x_us`` (arrives at s). Skipped when all edge bytes fit the
    smallest buffer (then the family cannot bind).
    """
    total = sum(data.ebytes.values())
    if not data.edges or total <= min(data.buffer.values()):
        return
    data.buffer_active = True
    for j, s in enumerate(data.sites):
        if total <= data.buffer[s]:
            continue
        terms = []
        for i, (a, b) in enumerate(data.edges):
            if data.ebytes[a, b] <= 0:
                continue
            o = _var(prob, f"bo_{i}_{j}")
            n = _var(prob, f"bi_{i}_{j}")
            prob += o >= v["x"][a, s] - v["x"][b, s], f"bufo_{i}_{j}"
            prob += n >= v["x"][b, s] - v["x"][a, s], f"bufi_{i}_{j}"
            terms.append(data.ebytes[a, b] * (o + n))
        prob += pulp.lpSum(terms) <= data.buffer[s], f"buffer_{j}"


def add_makespan_constraints(prob: pulp.LpProblem, v: Vars, data: ILPData) -> None:
    """``M >= S_u + sum_s d_us x_us`` for every unit without successors in the model."""
    has_child = {a for a, _ in data.edges}
    for i, u in enumerate(data.units):
        if u not in has_child:
            prob += v["M"] >= _finish(v, data, u), f"mk_{i}"


def add_deadline_constraints(prob: pulp.LpProblem, v: Vars, data: ILPData) -> None:
    """``M <= D`` and ``S_u + d_u <= D_u`` for units with their own deadline."""
    if data.deadline_all is not None:
        prob += v["M"] <= data.deadline_all, "deadline"
    for i, u in enumerate(data.units):
        if u in data.deadline:
            prob += _finish(v, data, u) <= data.deadline[u], f"deadline_{i}"


def _cost_expr(v: Vars, data: ILPData) -> Any:
    run = pulp.lpSum(
        data.cost[u, s, k] * v["z"][u, s, k]
        for u in data.units
        for s in data.eligible[u]
        for k in range(data.slots)
    )
    return run + pulp.lpSum(v["y"].values())


def add_budget_constraints(prob: pulp.LpProblem, v: Vars, data: ILPData) -> None:
    """Budget, a non-renewable resource: ``sum c_usk z_usk + sum_e y_e <= budget``."""
    if data.budget is None:
        return
    prob += _cost_expr(v, data) <= data.budget, "budget"


def set_objective(prob: pulp.LpProblem, v: Vars, data: ILPData, objective: Objective) -> None:
    """``min sum_t w_t f_t / ref_t`` over makespan, cost, energy and carbon."""
    w = objective.weights()
    ref = {t: (data.ref[t] if data.ref[t] > 0 else 1.0) for t in w}
    energy = pulp.lpSum(
        data.energy[u, s] * v["x"][u, s] for u in data.units for s in data.eligible[u]
    )
    carbon = pulp.lpSum(
        data.carbon[u, s, k] * v["z"][u, s, k]
        for u in data.units
        for s in data.eligible[u]
        for k in range(data.slots)
    )
    terms = {"time": v["M"], "cost": _cost_expr(v, data), "energy": energy, "carbon": carbon}
    prob += pulp.lpSum(w[t] / ref[t] * terms[t] for t in w if w[t] > 0)


def build_model(data: ILPData, objective: Objective) -> tuple[pulp.LpProblem, Vars]:
    """Variables, the constraint families, the objective."""
    prob = pulp.LpProblem("placement", pulp.LpMinimize)
    v = add_variables(prob, data)
    add_assignment_constraints(prob, v, data)
    add_eligibility_constraints(prob, v, data)
    add_slot_window_constraints(prob, v, data)
    add_precedence_constraints(prob, v, data)
    add_capacity_constraints(prob, v, data)
    add_buffer_constraints(prob, v, data)
    add_makespan_constraints(prob, v, data)
    add_deadline_constraints(prob, v, data)
    add_budget_constraints(prob, v, data)
    set_objective(prob, v, data, objective)
    return prob, v


# -- data: exact and grouped ---------------------------------------------------------------
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


def _slot_grid(
    model: CostModel, constraints: PlanningConstraints, span: float
) -> tuple[int, float]:
    """Number of slots K and their length L: one slot unless prices or carbon vary in time."""
    L = min(ser.slot_seconds for ser in model.series.values())
    from orchestrator.placement.timeshift import has_time_variation

    if not has_time_variation(model, set(model.sites)):
        return 1, max(L, span)
    K = max(1, min(constraints.max_slots, math.ceil(span / L)))
    return K, L


def ilp_data(
    model: CostModel,
    constraints: PlanningConstraints,
    groups: dict[str, list[str]],
    ref: dict[str, float],
    span: float,
    exact: bool,
) -> ILPData:
    """Aggregate the cost model over ``groups`` (singletons when exact)."""
    K, L = _slot_grid(model, constraints, span)
    wf = model.workflow
    unit_of = {s: g for g, ms in groups.items() for s in ms}
    units = list(groups)
    sites = list(model.sites)
    eligible = {
        g: tuple(s for s in sites if all(s in model.eligible[m] for m in ms))
        for g, ms in groups.items()
    }
    dur, load, energy, cost, carbon = {}, {}, {}, {}, {}
    for g, ms in groups.items():
        for s in eligible[g]:
            ds = [model.duration(m, s) for m in ms]
            ld = sum(model.step_by_id[m].cores * d for m, d in zip(ms, ds, strict=True))
            dur[g, s] = max(max(ds), ld / model.pool[s]) if model.pool[s] else max(ds)
            load[g, s] = ld
            energy[g, s] = sum(model.energy_kwh(m, s) for m in ms)
            if K == 1:
                # one slot: the lowest price and intensity the step can meet (a relaxation)
                limit = constraints.deadline
                cost[g, s, 0] = sum(_min_cost(model, m, s, limit) for m in ms)
                carbon[g, s, 0] = sum(_min_carbon(model, m, s, limit) for m in ms)
                continue
            for k in range(K):
                t = k * L
                cost[g, s, k] = sum(model.run_cost(m, s, t) for m in ms)
                carbon[g, s, k] = sum(model.carbon_kg(m, s, t) for m in ms)
    release = {
        g: max(model.step_by_id[m].constraints.release for m in ms) for g, ms in groups.items()
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
        (s, k): model.series[s].capacity[model.series[s].slot(k * L)]
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
    )


def _slot_range(model: CostModel, site: str, step: str, limit: float | None) -> range:
    """Slots a step on ``site`` may touch: up to ``limit`` (the deadline) or the horizon's end."""
    ser = model.series[site]
    last = len(ser.capacity) - 1
    if limit is not None:
        last = ser.slot(limit + model.duration(step, site))
    return range(ser.slot(0.0), last + 1)


def _min_cost(model: CostModel, step: str, site: str, limit: float | None) -> float:
    """Run cost of ``step`` on ``site`` at the cheapest power price it can meet."""
    s = model.step_by_id[step]
    st = model.site_by_id[site]
    hours = model.duration(step, site) / 3600.0
    price = min(model.series[site].price[k] for k in _slot_range(model, site, step, limit))
    return (
        s.cores * hours * st.price_per_core_hour
        + s.gpus * hours * st.price_per_gpu_hour
        + model.energy_kwh(step, site) * price
    )


def _min_carbon(model: CostModel, step: str, site: str, limit: float | None) -> float:
    """kgCO2e of ``step`` on ``site`` at the lowest intensity it can meet."""
    ci = min(model.series[site].carbon[k] for k in _slot_range(model, site, step, limit))
    return model.energy_kwh(step, site) * ci / 1000.0


# -- the planner ---------------------------------------------------------------------------
class ILPPlanner:
    """Time-indexed multi-mode placement ILP, warm-started from HEFT."""

    name = "ilp"

    def __init__(
        self, settings: ILPSettings | None = None, progress: Progress | None = None
    ) -> None:
        self.settings = settings or ILPSettings()
        self.progress = progress
        self.last_solve: SolveInfo | None = None

    def _say(self, msg: str) -> None:
        if self.progress is not None:
            self.progress(msg)

    def plan(
        self,
        workflow: Workflow,
        federation: Federation,
        view: SiteView,
        constraints: PlanningConstraints,
        objective: Objective,
    ) -> Plan:
        t_start = time.perf_counter()
        model = CostModel(workflow, federation, view, constraints)
        model.refuse_unknown(objective)
        self._say("warm start: HEFT")
        heft = HEFTPlanner(explain=False).plan_model(model, objective, t_start)
        ref = heft.metrics.values()
        exact = len(workflow) <= self.settings.exact_max_steps
        groups = (
            {s.id: [s.id] for s in workflow.steps}
            if exact
            else group_steps(model, self.settings.max_groups)
        )
        span = constraints.deadline if constraints.deadline is not None else ref["time"]
        data = ilp_data(model, constraints, groups, ref, max(span, 1e-9), exact)
        self._say(
            f"building the {'exact' if exact else 'group-level'} model: {len(data.units)} units "
            f"x {len(data.sites)} sites x {data.slots} slots"
        )
        prob, v = build_model(data, objective)
        warm = _set_warm_start(v, data, heft, constraints)
        self._say(
            f"solving with {self.settings.solver.upper()} "
            f"({prob.numVariables()} variables, {prob.numConstraints()} constraints, "
            f"limit {self.settings.time_limit:.0f} s)"
        )
        info = solve(
            prob,
            self.settings.solver,
            time_limit=self.settings.time_limit,
            threads=self.settings.threads,
            gap_rel=self.settings.gap_rel,
            warm=warm,
            msg=self.settings.msg,
            progress=self.progress,
        )
        self.last_solve = info
        self._say(f"solver: {info.status}, gap {info.gap}")
        notes = [f"solver {info.solver}: {info.status}, {info.wall_s:.2f} s"]
        candidates: list[Plan] = []
        decoded = None
        if info.has_solution:
            decoded = self._decode(model, data, v, objective, ref, info, t_start)
            if decoded is not None:
                candidates.append(decoded)
        heft_ok = not limit_breach(heft, constraints)
        shifted_heft = self._shifted(model, heft, objective, constraints, ref)
        for p in (shifted_heft, heft):
            if p is not None and not limit_breach(p, constraints):
                candidates.append(p)
        if not candidates:
            if info.status.lower().startswith("infeasible"):
                raise InfeasiblePlan(
                    "ilp: the model is infeasible: relax the deadline or the budget, "
                    "or widen the steps' eligibility"
                )
            raise PlanningError(
                f"ilp: no feasible plan within {self.settings.time_limit:.0f} s "
                f"({info.failure() or info.status}); raise the time limit or relax the "
                "constraints" + ("" if heft_ok else "; HEFT misses the limits too")
            )
        best = min(candidates, key=lambda p: p.metrics.objective_value or 0.0)
        fallback: tuple[str, str] | None = None
        if decoded is None:
            # the optimiser produced nothing usable: say which heuristic's plan this is and why
            why = info.failure() or (
                "the solver's solution breaks the deadline or the budget once list-scheduled"
            )
            fallback = (best.metrics.planner, why)
            notes.append(f"fallback: {best.metrics.planner}, because {why}")
        elif best.metrics.planner != self.name:
            notes.append("the warm start (HEFT) scored better than the decoded solution: kept")
        if data.slots == 1 and len(workflow) <= 3000 and self.settings.improve_seconds > 0:
            self._say("local search on the critical chain")
            placed = {s: (a.site, a.start, a.end) for s, a in best.assignments.items()}
            better, moves = improve(
                model, placed, objective, ref, constraints, self.settings.improve_seconds
            )
            if moves:
                best = build_plan(model, better, objective, self.name, "heuristic", 0.0, ref=ref)
                notes.append(f"local search: {moves} improving moves on the critical chain")
        return self._finish(model, best, objective, ref, info, data, notes, t_start, fallback)

    def _shifted(
        self,
        model: CostModel,
        heft: Plan,
        objective: Objective,
        constraints: PlanningConstraints,
        ref: dict[str, float],
    ) -> Plan | None:
        placed = {s: (a.site, a.start, a.end) for s, a in heft.assignments.items()}
        shifted, moved = timeshift(model, placed, objective, constraints.deadline)
        if not moved:
            return None
        return build_plan(model, shifted, objective, "heft+shift", "heuristic", 0.0, ref=ref)

    def _decode(
        self,
        model: CostModel,
        data: ILPData,
        v: Vars,
        objective: Objective,
        ref: dict[str, float],
        info: SolveInfo,
        t_start: float,
    ) -> Plan | None:
        """List-schedule the solver's sites and slots; None if it misses the limits."""
        site_of: dict[str, str] = {}
        start_of: dict[str, float] = {}
        not_before: dict[str, float] = {}
        for u in data.units:
            best_s, best_k, best_val = None, 0, -1.0
            for s in data.eligible[u]:
                for k in range(data.slots):
                    val = v["z"][u, s, k].varValue or 0.0
                    if val > best_val:
                        best_s, best_k, best_val = s, k, val
            if best_s is None:
                return None
            s_val = v["S"][u].varValue or 0.0
            for m in data.members[u]:
                site_of[m] = best_s
                start_of[m] = s_val
                if data.slots > 1 and best_k > 0:
                    not_before[m] = best_k * data.slot_seconds
        ranks = upward_ranks(model)
        top = max(ranks.values()) or 1.0
        priority = {s: -start_of[s] + 1e-6 * ranks[s] / top for s in start_of}

        def only(step: str, opts: list[Option]) -> Option:
            return opts[0]

        placed, _ = list_schedule(model, priority, only, site_of, not_before)
        placed, _ = timeshift(model, placed, objective, model.constraints.deadline)
        plan = build_plan(model, placed, objective, self.name, info.status, 0.0, ref=ref)
        if limit_breach(plan, model.constraints):
            return None
        return plan

    def _finish(
        self,
        model: CostModel,
        plan: Plan,
        objective: Objective,
        ref: dict[str, float],
        info: SolveInfo,
        data: ILPData,
        notes: list[str],
        t_start: float,
        fallback: tuple[str, str] | None = None,
    ) -> Plan:
        """The final plan with its explanations, bound and status.

        ``fallback`` is ``(heuristic, why)`` when the optimiser produced no usable plan: the
        status is then ``fallback: <heuristic>`` and ``status_reason`` says why.
        """
        placed = {s: (a.site, a.start, a.end) for s, a in plan.assignments.items()}
        why = explain_all(model, placed, objective)
        bound = info.bound if _is_relaxation(data) else None
        status = _status(info, data)
        out = build_plan(
            model,
            placed,
            objective,
            self.name,
            status,
            time.perf_counter() - t_start,
            why,
            bound=bound,
            ref=ref,
            notes=(*plan.notes, *notes),
        )
        if fallback is not None:
            return out.with_metrics(status=f"fallback: {fallback[0]}", status_reason=fallback[1])
        # "optimal" is a claim about this plan: its gap to a valid bound must be closed
        closed = out.metrics.gap is not None and out.metrics.gap <= self.settings.gap_rel + 1e-9
        if closed:
            return out.with_metrics(status="optimal")
        if status == "optimal":
            return out.with_metrics(status="feasible")
        return out


def _is_relaxation(data: ILPData) -> bool:
    """True when the model's optimum bounds the real problem's from below.

    So when it is exact (one unit per step), single-slot (then price and carbon
    are the lowest a step can meet, transfer EUR at most what the flows pay) and
    has no buffer family (stricter than the flow rule). Its capacity (aggregate
    load) and delays are then relaxations or exact.
    """
    return data.exact and data.slots == 1 and not data.buffer_active


def _status(info: SolveInfo, data: ILPData) -> str:
    """``optimal`` only when a relaxation was proven optimal (``_finish`` then checks the
    plan's own gap); else ``feasible``."""
    s = info.status.lower()
    if _is_relaxation(data) and s.startswith("optimal") and (info.gap or 0.0) <= 1e-4:
        return "optimal"
    return "feasible" if info.has_solution else "heuristic"


def _set_warm_start(v: Vars, data: ILPData, heft: Plan, constraints: PlanningConstraints) -> bool:
    """Initial values from HEFT's plan (by majority site per group); False if it breaks limits."""
    if limit_breach(heft, constraints):
        return False
    L = data.slot_seconds
    for u in data.units:
        sites: dict[str, int] = defaultdict(int)
        for m in data.members[u]:
            sites[heft.site_of(m)] += 1
        site = max(sites, key=lambda s: sites[s])
        if site not in data.eligible[u]:
            return False
        start = min(heft.assignments[m].start for m in data.members[u])
        k = min(data.slots - 1, int(start // L)) if data.slots > 1 else 0
        for s in data.sites:
            for kk in range(data.slots):
                v["z"][u, s, kk].setInitialValue(1.0 if (s == site and kk == k) else 0.0)
        v["S"][u].setInitialValue(start)
    v["M"].setInitialValue(heft.metrics.makespan_s)
    for e, y in v["y"].items():
        a, b = e
        pair = (heft.site_of(data.members[a][0]), heft.site_of(data.members[b][0]))
        y.setInitialValue(data.tcost[e].get(pair, 0.0))
    return True
