"""A constraint-programming placement engine: OR-Tools CP-SAT on the shared cost model.

Where capacity binds, steps queue for cores, and a model that sees capacity only as
total load per site (the MILP's) cannot see it. CP-SAT schedules exactly that:

* time in integer ticks of ``1 / scale`` seconds (``scale`` puts the horizon near
  10^6 ticks); durations and delays rounded up, so a solution of the model is a feasible
  schedule of the real one;
* per step ``j`` and eligible site ``s`` a presence literal ``b_js`` and an optional
  interval of the step's duration there; exactly one site per step;
* per site a cumulative constraint: the cores of the steps running at once stay within
  the site's guaranteed pool (``CostModel.pool``, the list schedulers' too);
* precedence with site-dependent transfer delays: ``start_c >= end_p`` always and
  ``start_c >= end_p + T_pc(a, b)`` when ``p`` is on ``a`` and ``c`` on ``b``; an
  unlinked pair cannot carry the edge's data;
* releases, the site's queue wait and the arrival of located external inputs; the
  steps' deadlines, the request's deadline and budget;
* cost and carbon that vary in time: both are piecewise linear in the start (breakpoints
  where the start or the end meets a forecast slot's edge); a literal per linear piece
  and a copy of the start that is 0 outside the piece make the objective exact. With more
  than ``max_pieces`` pieces, forecast-slot windows at their largest values instead (as
  the MILP, see ``milp_data``);
* objective: ``sum_t w_t f_t / ref_t`` scaled to integers.

The solver is hinted with the incumbent (the best heuristic plan; not with ``repair_hint``:
with two workers OR-Tools 9.15 aborted the process, ``Check failed: heuristics.fixed_search
!= nullptr``, on the second solve of a process) and stops at its time limit or when it
proves its model optimal. With ``lns_only_steps`` (the optimiser's, from 150 steps) and a
hint that sets every variable, both workers improve the incumbent by large neighbourhood
search, each search stopped after ``lns_deterministic_limit`` of CP-SAT's deterministic
seconds (the optimiser's 0.03); otherwise one of them runs the full search with the LP
relaxation, which proves small models optimal but on a few hundred steps found nothing in
seconds. When neighbourhood search alone has found no plan better than the incumbent by
``LNS_GAIN`` of its objective (smaller gains are tie-breaks) in ``lns_stall_share`` of the
time (the optimiser's quarter), the rest goes to the default portfolio from the same hint: its
LP solutions guide the neighbourhoods (RINS) that found montage-dss-10d's better plans under
a budget. Its solution is decoded by list scheduling
the chosen sites in the order of the model's starts (no step starts later than in the model;
in cost- or carbon-driven objectives no earlier either), time-shifted and checked against
the limits and the buffers. When the held starts break a limit once laid out (the model's
rounded durations and transfers are not the list scheduler's), the same sites in the same
order are laid out as early as the pools allow and time-shifted again: on regional-4 at 5 s
this turned fallbacks to a heuristic (rnaseq cost at 1.1x HEFT's makespan: 2.08x the best
known) into plans within 2 % of it. The plan is kept only if it beats the incumbent (the
MILP's solution is decoded the same way).
"""

from __future__ import annotations

import heapq
import itertools
import math
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from datalogistics.flows import buffer_violations
from orchestrator.errors import InfeasiblePlan, PlanningError
from orchestrator.placement.costs import CostModel
from orchestrator.placement.explain import explain_all
from orchestrator.placement.links import LinkBook, transfers_of
from orchestrator.placement.plan import Objective, ObjectiveKind, Plan, PlanningConstraints
from orchestrator.placement.planners.common import (
    ModelPlanner,
    better,
    limit_breach,
    time_limit_for,
)
from orchestrator.placement.planners.incumbent import incumbents
from orchestrator.placement.planners.milp_data import breakpoints, start_extremes
from orchestrator.placement.schedule import Option, build_plan, list_schedule, upward_ranks
from orchestrator.placement.timeshift import timeshift

if TYPE_CHECKING:
    from federation.model import Federation
    from orchestrator.workflow import Workflow
    from twin.state import SiteView

Progress = Callable[[str], None]

OBJECTIVE_UNITS = 1e10
"""The incumbent's objective value in the model's integer units (rounding is below 1e-10 of
it per term; the slopes of time-varying cost and carbon per tick need the resolution)."""

LNS_GAIN = 1e-4
"""The smallest gain on the hint's objective, as a share of it, that keeps neighbourhood
search running past ``lns_stall_share`` of its time. Smaller "gains" are tie-breaks: on
montage-dss-10d carbon at 1.5x on regional-4 the search found one plan better by 1.2e-6 of
the objective at 4.7 s, then nothing, and a watch that counted it never handed over."""


def counts_as_gain(first: float, value: float) -> bool:
    """Whether a solution of objective ``value`` (integer units) is a gain on the first one,
    the hint's ``first``: lower by at least ``LNS_GAIN`` of it, and by at least one unit."""
    return value <= first - max(1.0, LNS_GAIN * abs(first))


def cpsat_unavailable() -> str | None:
    """Why OR-Tools cannot be imported in this process (``None`` when it can).

    OR-Tools 9.15 links its own ``libhighs.so.1``; highspy 1.15 ships another library of
    that name, and whichever the process loads first serves both, so the two cannot live
    in one process (an ``ImportError: undefined symbol``). highspy 1.16 links HiGHS
    statically and has no such clash.
    """
    try:
        from ortools.sat.python import cp_model  # noqa: F401
    except ImportError as exc:
        return f"OR-Tools cannot be loaded here ({exc})"
    return None


@dataclass(frozen=True)
class CPSATSettings:
    """How CP-SAT is run: ``time_limit`` (s), ``workers`` (threads); when cost or carbon
    vary in time, up to ``max_pieces`` exact linear pieces per step and site, else
    ``max_windows`` windows at their largest values; ``max_steps`` above which it is not
    tried."""

    time_limit: float | None = None
    """Seconds; ``None``: by the model's size (``auto_time_limit``, the optimiser's rule)."""
    workers: int = 2
    max_windows: int = 24
    max_pieces: int = 96
    max_steps: int = 1500
    seed: int = 0
    fix_hint: bool = False
    """A diagnostic: every variable fixed to the incumbent's hint, so the status says whether
    the hint is a solution of the model (CP-SAT silently drops an infeasible hint)."""
    wall_limit: bool = False
    """The time spent building the model counts in ``time_limit`` (the optimiser's: a second
    on 472 steps under load, which the descent from its chosen plan would otherwise lose);
    otherwise the search alone gets ``time_limit`` (the benchmark's reference)."""
    lns_only_steps: int | None = None
    """From this many steps on, when the incumbent hints every variable, every worker
    improves the incumbent by large neighbourhood search (``use_lns_only``) instead of one
    running the full search with the LP (CP-SAT's default portfolio, which proves small
    models optimal). ``None``: the default portfolio always (the benchmark's reference)."""
    lns_deterministic_limit: float | None = None
    """With every worker on neighbourhood search (``lns_only_steps``), each search's limit in
    CP-SAT's deterministic time (``lns_initial_deterministic_limit``; ``None``: CP-SAT's
    0.1). On the largest models a search of 0.1 deterministic seconds took 9 s of wall time
    (seismology-1000p: the cumulative constraints' propagation is not all counted), so the
    optimiser asks for shorter ones."""
    lns_stall_share: float | None = None
    """With every worker on neighbourhood search, when no plan better than the hint by
    ``LNS_GAIN`` of its objective is found in this share of the time limit, the search stops
    and the rest of the time goes to CP-SAT's default portfolio from the same hint: its full
    search with the LP relaxation, whose LP solutions guide the neighbourhoods that search
    alone has not (RINS). ``None``: neighbourhood search to the end."""

    def __post_init__(self) -> None:
        if self.time_limit is not None and not self.time_limit > 0:
            raise ValueError("time_limit must be > 0 seconds or None")
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        if self.lns_only_steps is not None and self.lns_only_steps < 1:
            raise ValueError(f"lns_only_steps must be >= 1 or None, got {self.lns_only_steps}")
        if self.lns_deterministic_limit is not None and self.lns_deterministic_limit <= 0:
            raise ValueError(
                f"lns_deterministic_limit must be > 0 or None, got {self.lns_deterministic_limit}"
            )
        if self.lns_stall_share is not None and not 0 < self.lns_stall_share < 1:
            raise ValueError(
                f"lns_stall_share must be in (0, 1) or None, got {self.lns_stall_share}"
            )


@dataclass(frozen=True)
class CPSATResult:
    """What CP-SAT said and the plan decoded from its solution (None: none, or not better)."""

    status: str
    wall_s: float
    plan: Plan | None
    objective: float | None = None
    bound: float | None = None
    reason: str = ""
    unhinted: int | None = None
    """Variables of the model the incumbent's hint left without a value (None: no hint).
    CP-SAT has the incumbent at once only when this is 0; otherwise it searches for the
    missing values first."""
    lns_only: bool = False
    """Whether every worker ran large neighbourhood search (``CPSATSettings.lns_only_steps``)."""
    stalled_s: float | None = None
    """Seconds of search after which neighbourhood search, having found no plan better than
    the hint by ``LNS_GAIN`` of its objective, gave the rest of the time to the default portfolio
    (``CPSATSettings.lns_stall_share``); None: it did not."""


def solve_cpsat(
    model: CostModel,
    objective: Objective,
    ref: Mapping[str, float],
    incumbent: Plan | None,
    settings: CPSATSettings,
    progress: Progress | None = None,
) -> CPSATResult:
    """Run CP-SAT on ``model``; the decoded plan when it keeps the limits and the buffers."""
    from ortools.sat.python import cp_model

    t_start = time.perf_counter()
    constraints = model.constraints
    if len(model.steps) > settings.max_steps:
        return CPSATResult("NOT_RUN", 0.0, None, reason=f"more than {settings.max_steps} steps")
    span = constraints.deadline
    if span is None:
        # no deadline: a plan shorter than the incumbent's (time), or up to three times as
        # long (a criterion the makespan only breaks ties of); never past a serial schedule
        serial = _serial_span(model)
        if incumbent is None:
            span = serial
        else:
            longer = 1.0 if objective.kind is ObjectiveKind.TIME else 3.0
            span = min(serial, longer * incumbent.metrics.makespan_s)
            span = max(span, incumbent.metrics.makespan_s)
    span = max(span, 1e-6)
    scale = 10.0 ** math.floor(math.log10(1e6 / span))
    horizon = math.ceil(span * scale) + len(model.steps) + 2
    if constraints.deadline is not None:
        # rounding slack: durations and delays are rounded up, a tick per step at most along
        # any path; the decoded plan is checked against the real deadline
        horizon = math.floor(constraints.deadline * scale) + len(model.steps)

    def ticks(seconds: float) -> int:
        return math.ceil(seconds * scale - 1e-9)

    w = objective.weights()
    rf = {t: (ref.get(t, 0.0) or 1.0) for t in w}
    m = cp_model.CpModel()
    start: dict[str, Any] = {}
    end: dict[str, Any] = {}
    present: dict[tuple[str, str], Any] = {}
    dur: dict[tuple[str, str], int] = {}
    intervals: dict[str, list[tuple[Any, int]]] = {s: [] for s in model.sites}
    terms: list[tuple[Any, float]] = []  # (literal, objective weight in score units)
    cost_terms: list[tuple[Any, float]] = []  # (literal, EUR) for the budget
    slopes: list[tuple[Any, float]] = []  # (start copy in ticks, objective weight per tick)
    # per step and site its linear pieces: (literal, first tick, last tick, start copy or None)
    pieces_of: dict[tuple[str, str], list[tuple[Any, int, int, Any]]] = {}
    varying = _varying_sites(
        model, w["cost"] > 0 or constraints.budget is not None, w["carbon"] > 0
    )
    for step in model.steps:
        j = step.id
        sites = model.eligible[j]
        if not sites:
            raise InfeasiblePlan(f"step {j} has no eligible site")
        release = ticks(step.constraints.release)
        start[j] = m.new_int_var(release, horizon, f"start[{j}]")
        end[j] = m.new_int_var(release, horizon, f"end[{j}]")
        lits = []
        for s in sites:
            b = m.new_bool_var(f"on[{j},{s}]")
            present[j, s] = b
            lits.append(b)
            d = ticks(model.duration(j, s))
            dur[j, s] = d
            iv = m.new_optional_fixed_size_interval_var(start[j], d, b, f"run[{j},{s}]")
            intervals[s].append((iv, step.cores))
            wait = max(model.site_release[s], model.input_delay(j, s))
            if wait > 0:
                m.add(start[j] >= ticks(wait)).only_enforce_if(b)
            energy = model.energy_kwh(j, s)
            fixed = w["energy"] / rf["energy"] * energy
            if s not in varying:
                c = model.run_cost(j, s, 0.0)
                g = model.carbon_kg(j, s, 0.0)
                terms.append(
                    (b, fixed + w["cost"] / rf["cost"] * c + w["carbon"] / rf["carbon"] * g)
                )
                cost_terms.append((b, c))
                continue
            terms.append((b, fixed))
            top = horizon / scale
            points = breakpoints(model, j, s, 0.0, top)
            exact = len(points) - 1 <= settings.max_pieces
            if exact:  # the linear pieces of cost and carbon in the start: exact
                pieces = list(itertools.pairwise(points))
            else:  # too many: forecast-slot windows at their largest values
                pieces = [
                    (lo, hi if hi is not None else top)
                    for lo, hi in _windows(model, s, top, settings.max_windows)
                ]
            wl = []
            for k, (lo, hi) in enumerate(pieces):
                if ticks(lo) > horizon:
                    break
                lit = m.new_bool_var(f"piece[{j},{s},{k}]")
                wl.append(lit)
                m.add(start[j] >= ticks(lo)).only_enforce_if(lit)
                m.add(start[j] <= math.floor(hi * scale)).only_enforce_if(lit)
                piece = (lit, ticks(lo), math.floor(hi * scale), None)
                pieces_of.setdefault((j, s), []).append(piece)
                run_lo, run_hi = model.run_cost(j, s, lo), model.run_cost(j, s, hi)
                kg_lo, kg_hi = model.carbon_kg(j, s, lo), model.carbon_kg(j, s, hi)
                cost_terms.append((lit, start_extremes(model, j, s, lo, hi, "cost")[1]))
                wc, wg = w["cost"] / rf["cost"], w["carbon"] / rf["carbon"]
                if not exact or hi - lo < 1e-9:
                    top_run = start_extremes(model, j, s, lo, hi, "cost")[1]
                    top_kg = start_extremes(model, j, s, lo, hi, "carbon")[1]
                    terms.append((lit, wc * top_run + wg * top_kg))
                    continue
                # value at lo on the literal, the slope times (start - lo) on a copy of start
                slope = (wc * (run_hi - run_lo) + wg * (kg_hi - kg_lo)) / (hi - lo)
                terms.append((lit, wc * run_lo + wg * kg_lo - slope * ticks(lo) / scale))
                if abs(slope) > 0:
                    y = m.new_int_var(0, horizon, f"start_in[{j},{s},{k}]")
                    m.add(y == start[j]).only_enforce_if(lit)
                    m.add(y == 0).only_enforce_if(lit.Not())
                    slopes.append((y, slope / scale))
                    pieces_of[j, s][-1] = (*piece[:3], y)
            m.add(sum(wl) == b)
        m.add_exactly_one(lits)
        m.add(end[j] == start[j] + sum(dur[j, s] * present[j, s] for s in sites))
        if step.constraints.deadline is not None:
            m.add(end[j] <= math.floor(step.constraints.deadline * scale))
    for s, ivs in intervals.items():
        if ivs:
            m.add_cumulative([iv for iv, _ in ivs], [c for _, c in ivs], model.pool[s])
    for par, chi in model.workflow.edges:
        m.add(start[chi] >= end[par])
    moves = _add_transfer_constraints(m, model, present, start, end, ticks, horizon)
    for x, eur in moves.eur:
        terms.append((x, w["cost"] / rf["cost"] * eur))
        cost_terms.append((x, eur))
    # the combinatorial lower bound (critical path at the fastest sites, total load): valid
    # in ticks too (durations round up); the search stops once a plan reaches it, where
    # CP-SAT's own bound (cumulative relaxations) stays far below it on a few hundred steps
    low = min(horizon, math.floor(model.lower_bounds()["time"] * scale))
    makespan = m.new_int_var(max(0, low), horizon, "makespan")
    m.add_max_equality(makespan, list(end.values()))
    if constraints.budget is not None:
        unit = 1e6 / max(constraints.budget, 1e-9)
        m.add(
            sum(round(e * unit * 1e3) * lit for lit, e in cost_terms if e > 0)
            <= math.floor(constraints.budget * unit * 1e3)
        )
    # objective in integer units: the incumbent (or a rough value) at OBJECTIVE_UNITS
    guess = incumbent.metrics.objective_value if incumbent is not None else None
    factor = OBJECTIVE_UNITS / max(guess or 1.0, 1e-12)
    time_coef = w["time"] / rf["time"] / scale * factor
    obj_terms = [round(wt * factor) * lit for lit, wt in terms if round(wt * factor) != 0]
    obj_terms += [round(wt * factor) * y for y, wt in slopes if round(wt * factor) != 0]
    if time_coef > 0:
        obj_terms.append(max(1, round(time_coef)) * makespan)
    m.minimize(sum(obj_terms))
    unhinted: int | None = None
    if incumbent is not None:
        hinted = _hint(
            m, model, incumbent, start, end, present, makespan, dur, moves, scale, pieces_of
        )
        unhinted = len(m.proto.variables) - len(m.proto.solution_hint.vars)
        if constraints.deadline is not None:
            # The horizon's rounding slack (a tick per step past the deadline) is there so
            # that a plan feasible in seconds stays feasible in ticks; past what the hinted
            # incumbent needs, a cost or carbon objective would spend it on plans that end
            # past the real deadline once laid out in seconds (and are then thrown away).
            m.add(makespan <= max(math.floor(constraints.deadline * scale), hinted))
    limit = time_limit_for(settings.time_limit, len(model.steps))
    if settings.wall_limit:  # the model's building counted in the limit
        limit = max(0.1, limit - (time.perf_counter() - t_start))
    solver = _solver(settings, limit)
    lns_only = (
        settings.lns_only_steps is not None
        and len(model.steps) >= settings.lns_only_steps
        and unhinted == 0
    )
    if lns_only:
        solver.parameters.use_lns_only = True
        if settings.lns_deterministic_limit is not None:
            solver.parameters.lns_initial_deterministic_limit = settings.lns_deterministic_limit
    if progress is not None:
        progress(
            f"CP-SAT: {len(model.steps)} steps x {len(model.sites)} sites, "
            f"limit {limit:.0f} s, {settings.workers} workers" + (", LNS only" if lns_only else "")
        )
    stalled: float | None = None
    if lns_only and settings.lns_stall_share is not None:
        status, stalled = _solve_watched(solver, m, settings.lns_stall_share * limit)
        if stalled is not None:
            rest = max(0.1, limit - stalled)
            if progress is not None:
                progress(
                    f"CP-SAT: no plan better than the hint by {LNS_GAIN:g} of its objective "
                    f"after {stalled:.1f} s of neighbourhood search; the default portfolio "
                    f"for {rest:.1f} s"
                )
            solver = _solver(settings, rest)
            status = solver.solve(m)
    else:
        status = solver.solve(m)
    name = solver.status_name(status)
    wall = time.perf_counter() - t_start
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        why = "proved infeasible" if status == cp_model.INFEASIBLE else "no solution in time"
        return CPSATResult(
            name,
            wall,
            None,
            reason=f"cp-sat: {name} ({why})",
            unhinted=unhinted,
            lns_only=lns_only,
            stalled_s=stalled,
        )
    site_of = {j: s for (j, s), b in present.items() if solver.boolean_value(b)}
    t_of = {j: solver.value(start[j]) / scale for j in start}
    plan = decode(model, objective, ref, site_of, t_of, bool(varying))
    value = solver.objective_value / factor
    bound = solver.best_objective_bound / factor
    if plan is None:
        return CPSATResult(
            name,
            wall,
            None,
            value,
            bound,
            "cp-sat's solution breaks a limit or a buffer once list-scheduled",
            unhinted,
            lns_only,
            stalled,
        )
    return CPSATResult(
        name, wall, plan, value, bound, unhinted=unhinted, lns_only=lns_only, stalled_s=stalled
    )


def _solver(settings: CPSATSettings, limit: float) -> Any:
    """A CP-SAT solver with the engine's parameters and ``limit`` seconds."""
    from ortools.sat.python import cp_model

    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = limit
    solver.parameters.num_workers = settings.workers
    solver.parameters.random_seed = settings.seed
    # probing in presolve took seconds on a few hundred steps before the search even met
    # the hint; without it the hint is a solution 2 to 7 times sooner (measured on
    # epigenomics-ilmn, 263 steps, regional-4) and the plans at 20 s are as good or better
    solver.parameters.cp_model_probing_level = 0
    if settings.fix_hint:
        solver.parameters.fix_variables_to_their_hinted_value = True
    return solver


def _solve_watched(solver: Any, m: Any, after: float) -> tuple[Any, float | None]:
    """Solve ``m``; stop the search ``after`` seconds when no solution was found by then that
    ``counts_as_gain`` on the first one (the complete hint's). The status, and the seconds
    after which the search was stopped (None: it ran to its end)."""
    import threading

    from ortools.sat.python import cp_model

    class Watch(cp_model.CpSolverSolutionCallback):
        def __init__(self) -> None:
            super().__init__()
            self.first: float | None = None
            self.improved = False

        def on_solution_callback(self) -> None:
            v = self.objective_value
            if self.first is None:
                self.first = v
            elif counts_as_gain(self.first, v):
                self.improved = True

    watch = Watch()
    lock = threading.Lock()
    done = False
    stalled: list[float] = []
    t0 = time.perf_counter()

    def check() -> None:
        with lock:
            # only once the hint is in: a search still in presolve has not stalled
            if not done and watch.first is not None and not watch.improved:
                stalled.append(time.perf_counter() - t0)
                solver.stop_search()

    timer = threading.Timer(after, check)
    timer.start()
    try:
        status = solver.solve(m, watch)
    finally:
        with lock:
            done = True
        timer.cancel()
    return status, (stalled[0] if stalled and status == cp_model.FEASIBLE else None)


def decode(
    model: CostModel,
    objective: Objective,
    ref: Mapping[str, float],
    site_of: Mapping[str, str],
    start_of: Mapping[str, float],
    hold_starts: bool,
) -> Plan | None:
    """List-schedule ``site_of`` in the order of ``start_of``; None if a limit or buffer breaks.

    ``hold_starts``: steps start no earlier than ``start_of`` (the time was chosen for its
    price or carbon); otherwise as early as the pools allow.
    """
    ranks = upward_ranks(model)
    top = max(ranks.values()) or 1.0
    priority = {s: -start_of[s] + 1e-6 * ranks[s] / top for s in start_of}
    w = objective.weights()
    hold = hold_starts and (w["cost"] > 0 or w["carbon"] > 0)

    def only(step: str, opts: list[Option]) -> Option:
        return opts[0]

    caps = {s.id: s.buffer_capacity for s in model.federation.sites}
    # Held at the model's starts first; if that breaks a limit once laid out (the model's
    # rounded durations and transfers are not the list scheduler's), as early as the pools
    # allow in the same order, time shifting then moving steps to cheaper hours.
    for held in (True, False) if hold else (False,):
        try:
            placed, booked, _ = list_schedule(
                model, priority, only, site_of, dict(start_of) if held else None
            )
        except InfeasiblePlan:
            continue
        placed, booked, _ = timeshift(model, placed, objective, model.constraints.deadline, booked)
        plan = build_plan(
            model, placed, objective, "cpsat", "feasible", 0.0, ref=ref, transfers=booked
        )
        if not (limit_breach(plan, model.constraints) or buffer_violations(plan.flows(), caps)):
            return plan
    return None


def _serial_span(model: CostModel) -> float:
    """Every step one after another on its slowest site, after the longest delay of each edge
    and of each located input (an upper bound of a sensible schedule's makespan)."""
    work = sum(
        max((model.duration(s.id, x) for x in model.eligible[s.id]), default=0.0)
        for s in model.steps
    )
    delays = 0.0
    for p, c in model.edge_items:
        finite = [model.edge_delay(p, c, a, b) for a in model.sites for b in model.sites]
        delays += max((d for d in finite if math.isfinite(d)), default=0.0)
    inputs = max(
        (model.input_delay(j, x) for j in model.located for x in model.eligible[j]), default=0.0
    )
    release = max((s.constraints.release for s in model.steps), default=0.0)
    waits = max(model.site_release.values(), default=0.0)
    return work + delays + inputs + release + waits + 1.0


def _varying_sites(model: CostModel, price: bool = True, carbon: bool = True) -> set[str]:
    """Sites whose price (when ``price`` counts: a cost weight or a budget) or carbon
    forecast (when ``carbon`` counts) varies in time. A series that counts for nothing
    needs no pieces: the makespan alone, on 263 steps, had up to 96 piece literals per step
    and site for a cost it never weighs."""
    out = set()
    for s in model.sites:
        ser = model.series[s]
        if (price and len(set(ser.price)) > 1) or (carbon and len(set(ser.carbon)) > 1):
            out.add(s)
    return out


def _windows(
    model: CostModel, site: str, span: float, max_windows: int
) -> list[tuple[float, float | None]]:
    """Start windows ``[a, b]`` over ``[0, span]`` on the site's forecast slots (the last one
    open-ended), merged so that at most ``max_windows`` remain."""
    ser = model.series[site]
    edges = [0.0]
    k = ser.slot(0.0) + 1
    while k < len(ser.capacity) and ser.slot_start(k) < span:
        edges.append(ser.slot_start(k))
        k += 1
    per = max(1, math.ceil(len(edges) / max_windows))
    edges = edges[::per]
    return [(a, edges[i + 1] if i + 1 < len(edges) else None) for i, a in enumerate(edges)]


@dataclass
class Moves:
    """The transfer variables of the model: per (item, destination site) the tick its
    transfer gets the link (``sent``), per (item, source, destination) whether it crosses
    that link (``moves``), the EUR of each crossing, and the rounded hold and delay."""

    sent: dict[tuple[str, str], Any]
    moves: dict[tuple[str, str, str], Any]
    eur: list[tuple[Any, float]]
    hold: dict[tuple[str, str, str], int]
    delay: dict[tuple[str, str, str], int]


def _add_transfer_constraints(
    m: Any,
    model: CostModel,
    present: Mapping[tuple[str, str], Any],
    start: Mapping[str, Any],
    end: Mapping[str, Any],
    ticks: Callable[[float], int],
    horizon: int,
) -> Moves:
    """Transfers on shared links (``orchestrator.placement.links``), one per item and
    destination site, as in the plans:

    * ``moves[i, a, b]`` holds when the source of item ``i`` (its producer's site, or the
      site a located input lives at) is ``a`` and one of its consumers is on ``b != a``:
      ``on[p, a] and on[c, b] => moves[i, a, b]``;
    * ``sent[i, b] >= end[p]`` (0 for a located input), and each consumer on ``b`` starts
      after the transfer arrives: ``start[c] >= sent[i, b] + (latency + bytes / bandwidth)``
      when ``on[p, a] and on[c, b]``;
    * per link one transfer at a time: the optional intervals
      ``[sent[i, b], sent[i, b] + bytes / bandwidth)`` present with ``moves[i, a, b]`` do
      not overlap;
    * an unlinked pair (or an item larger than either buffer) cannot carry the item;
    * the crossing costs the link's EUR per byte (objective and budget).
    """
    sent: dict[tuple[str, str], Any] = {}
    moves: dict[tuple[str, str, str], Any] = {}
    eur: list[tuple[Any, float]] = []
    hold: dict[tuple[str, str, str], int] = {}
    delay: dict[tuple[str, str, str], int] = {}
    on_link: dict[tuple[str, str], list[Any]] = defaultdict(list)
    for item, consumers in model.consumers.items():
        producer = model.workflow.producer(item)
        size = model.workflow.item(item).size
        sources: list[tuple[str, Any]]
        if producer is None:
            origin = model.origin[item]
            if origin not in model.site_by_id:
                continue  # a URL input: no link, no delay (costs)
            sources = [(origin, None)]
        else:
            sources = [(a, present[producer, a]) for a in model.eligible[producer]]
        for b in model.sites:
            users = [c for c in consumers if (c, b) in present]
            if not users:
                continue
            for a, on_a in sources:
                if a == b:
                    continue
                cond = [] if on_a is None else [on_a]
                link = model.links.get((a, b))
                if link is None or size > min(model.buffer[a], model.buffer[b]):
                    for c in users:  # the pair cannot carry the item
                        m.add_bool_or([x.Not() for x in [*cond, present[c, b]]])
                    continue
                latency, bandwidth, per_byte = link
                if (item, b) not in sent:
                    sent[item, b] = m.new_int_var(0, horizon, f"sent[{item},{b}]")
                    if producer is not None:
                        m.add(sent[item, b] >= end[producer])
                x = m.new_bool_var(f"moves[{item},{a},{b}]")
                moves[item, a, b] = x
                hold[item, a, b] = ticks(size / bandwidth)
                delay[item, a, b] = ticks(size / bandwidth + latency)
                for c in users:
                    m.add_bool_or([*(y.Not() for y in cond), present[c, b].Not(), x])
                    m.add(start[c] >= sent[item, b] + delay[item, a, b]).only_enforce_if(
                        [*cond, present[c, b]]
                    )
                if hold[item, a, b] > 0:
                    on_link[a, b].append(
                        m.new_optional_fixed_size_interval_var(
                            sent[item, b], hold[item, a, b], x, f"link[{item},{a},{b}]"
                        )
                    )
                if per_byte * size > 0:
                    eur.append((x, per_byte * size))
    for ivs in on_link.values():
        if len(ivs) > 1:
            m.add_no_overlap(ivs)
    return Moves(sent, moves, eur, hold, delay)


def _hint(
    m: Any,
    model: CostModel,
    plan: Plan,
    start: Mapping[str, Any],
    end: Mapping[str, Any],
    present: Mapping[tuple[str, str], Any],
    makespan: Any,
    dur: Mapping[tuple[str, str], int],
    moves: Moves,
    scale: float,
    pieces_of: Mapping[tuple[str, str], list[tuple[Any, int, int, Any]]] | None = None,
) -> int:
    """Hint the incumbent as a schedule that is feasible in ticks, every variable hinted;
    returns its makespan in ticks.

    Its starts rounded would not do: with durations rounded up, a child's rounded start can
    fall a tick before its parent's rounded end, and CP-SAT then ignores the whole hint. So
    its sites are laid out again in ticks, in the order of its starts, on core pools (the
    list schedulers' rule) and links (a transfer at the earliest free tick of its link once
    its item is ready), each step no earlier than its own start. The linear pieces of
    time-varying cost and carbon (``pieces_of``) are hinted too: the piece holding the
    step's start on its site, and its copy of the start. With those left out the hint was
    incomplete, and CP-SAT searched for the missing values before it had the incumbent
    (1 s on epigenomics-ilmn, 263 steps, cost at 1.5x HEFT's makespan; no solution at all
    in 1.2 s on montage-2mass-025d, 619 steps).
    """

    def ticks(seconds: float) -> int:
        return math.ceil(seconds * scale - 1e-9)

    free = {s: [0] * n for s, n in model.pool.items()}
    book = LinkBook()
    end_t: dict[str, int] = {}
    start_t: dict[str, int] = {}
    sent_t: dict[tuple[str, str], int] = {}
    arrive: dict[tuple[str, str], int] = {}
    site_of = {j: a.site for j, a in plan.assignments.items()}
    topo = {s: i for i, s in enumerate(model.workflow.topological_order())}
    for j in sorted(plan.assignments, key=lambda x: (plan.assignments[x].start, topo[x])):
        site = site_of[j]
        step = model.step_by_id[j]
        t = max(
            math.floor(plan.assignments[j].start * scale),
            ticks(step.constraints.release),
            ticks(model.site_release[site]),
        )
        for p in model.parents_of[j]:
            t = max(t, end_t[p])
        for item in step.inputs:
            producer = model.workflow.producer(item)
            src = model.origin.get(item) if producer is None else site_of[producer]
            key = (item, src or "", site)
            if key not in moves.moves:
                continue
            if (item, site) not in arrive:
                ready = 0 if producer is None else end_t[producer]
                at = int(book.earliest((key[1], site), ready, moves.hold[key]))
                book.book((key[1], site), at, moves.hold[key])
                sent_t[item, site] = at
                arrive[item, site] = at + moves.delay[key]
            t = max(t, arrive[item, site])
        heap = free[site]
        if heap and step.cores <= len(heap):
            t = max(t, heapq.nsmallest(step.cores, heap)[-1])
            end_t[j] = t + dur[j, site]
            for _ in range(step.cores):
                heapq.heapreplace(heap, end_t[j])
        else:
            end_t[j] = t + dur[j, site]
        m.add_hint(start[j], t)
        m.add_hint(end[j], end_t[j])
        start_t[j] = t
    for (j, s), b in present.items():
        m.add_hint(b, site_of[j] == s)
    for (j, s), pieces in (pieces_of or {}).items():
        # the first piece holding the start on the step's site (pieces meet at their edges)
        held = site_of[j] == s
        chosen = next((k for k, (_, lo, hi, _) in enumerate(pieces) if lo <= start_t[j] <= hi), -1)
        for k, (lit, _, _, y) in enumerate(pieces):
            on = held and k == chosen
            m.add_hint(lit, on)
            if y is not None:
                m.add_hint(y, start_t[j] if on else 0)
    for (item, a, b), x in moves.moves.items():
        m.add_hint(x, (item, b) in sent_t and _source(model, item, site_of) == a)
    for (item, b), v in moves.sent.items():
        producer = model.workflow.producer(item)
        m.add_hint(v, sent_t.get((item, b), 0 if producer is None else end_t[producer]))
    hinted = max(end_t.values(), default=0)
    m.add_hint(makespan, hinted)
    return hinted


def _source(model: CostModel, item: str, site_of: Mapping[str, str]) -> str | None:
    producer = model.workflow.producer(item)
    return model.origin.get(item) if producer is None else site_of[producer]


class CPSATPlanner(ModelPlanner):
    """CP-SAT on the shared cost model, hinted with the best heuristic plan."""

    name = "cpsat"

    def __init__(
        self, settings: CPSATSettings | None = None, progress: Progress | None = None
    ) -> None:
        self.settings = settings or CPSATSettings()
        self.progress = progress
        self.last: CPSATResult | None = None

    def plan(
        self,
        workflow: Workflow,
        federation: Federation,
        view: SiteView,
        constraints: PlanningConstraints,
        objective: Objective,
    ) -> Plan:
        unavailable = cpsat_unavailable()
        if unavailable is not None:
            raise PlanningError(f"cpsat: {unavailable}; use the ilp planner")
        return super().plan(workflow, federation, view, constraints, objective)

    def plan_model(self, model: CostModel, objective: Objective, t0: float) -> Plan:
        inc = incumbents(model, objective, t0)
        best = inc.best(objective)
        res = solve_cpsat(model, objective, inc.ref, best, self.settings, self.progress)
        self.last = res
        notes = [
            f"cp-sat: {res.status}, {res.wall_s:.2f} s" + (f"; {res.reason}" if res.reason else "")
        ]
        if res.plan is None and best is None:
            if res.status == "INFEASIBLE":
                raise InfeasiblePlan(
                    "cpsat: the model is infeasible: relax the deadline or the budget, or "
                    "widen the steps' eligibility"
                )
            raise PlanningError(
                f"cpsat: no plan keeps the limits ({'; '.join(inc.left_out)}; {res.reason})"
            )
        chosen: Plan
        if res.plan is None:
            chosen = best  # type: ignore[assignment]  # not None: the branch above raised
        elif best is not None and better(best, res.plan, objective, inc.ref):
            notes.append(f"kept {best.metrics.planner}'s plan: cp-sat's was not better")
            chosen = best
        else:
            chosen = res.plan
        placed = {s: (a.site, a.start, a.end) for s, a in chosen.assignments.items()}
        booked = transfers_of(chosen)
        why = explain_all(model, placed, objective, None, booked)
        out = build_plan(
            model,
            placed,
            objective,
            self.name,
            "feasible",
            time.perf_counter() - t0,
            why,
            ref=inc.ref,
            notes=tuple(notes),
            transfers=booked,
        )
        if res.plan is None:
            # the engine produced nothing usable: say which heuristic's plan this is and why
            return out.with_metrics(
                status=f"fallback: {chosen.metrics.planner}", status_reason=res.reason
            )
        if out.metrics.gap is not None and out.metrics.gap <= 1e-6:
            return out.with_metrics(status="optimal")
        return out
