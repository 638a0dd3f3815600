"""The optimiser (planner ``ilp``): the policy that runs the engines and keeps the best plan.

1. **Incumbent**: HEFT, greedy and the market plan for the requested objective and
   constraints (``incumbent``); the best limit-keeping plan is the one to beat, so the
   result is never worse than any of them.
2. **Engines** (``ILPSettings.engine``): the multi-objective MILP (pulp; HiGHS by default,
   CBC by setting: ``milp_data`` and ``milp_model``) and the CP-SAT scheduler (``cpsat``).
   ``auto`` runs, within the time limit:

   * makespan (``time``): CP-SAT alone. The MILP sees capacity only as load per site and,
     measured on capacity-bound federations, never improved on HEFT;
   * a single criterion under a deadline or budget (the epsilon mode), or a weighted
     objective: the MILP first (at most ``milp_share`` of the time), warm-started from the
     incumbent, then CP-SAT hinted with the better of the two, for the rest of the time;
     CP-SAT is skipped above ``CPSATSettings.max_steps`` steps (the group-level MILP
     scales to tens of thousands).
3. **Decoding**: the MILP's sites and starts are list-scheduled (steps start no earlier
   than the model's start when cost or carbon drive the objective), time-shifted, and
   kept when they keep the deadline and the budget; a local search on the critical chain
   follows when nothing varies in time.
4. **Result**: the best of the engines' plans and the incumbent. When no engine produced a
   usable plan (no solution in time, an error, a solution that breaks the limits once
   scheduled), the plan is the incumbent and says so: ``status`` is ``fallback: <heuristic>``
   and ``status_reason`` says why. ``optimal`` is claimed only when a valid lower bound (the
   MILP's dual bound when its model is a relaxation, or the combinatorial bound of the cost
   model) closes the plan's gap.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING

from orchestrator.errors import InfeasiblePlan, PlanningError
from orchestrator.placement.costs import CostModel
from orchestrator.placement.explain import explain_all
from orchestrator.placement.improve import improve
from orchestrator.placement.links import transfers_of
from orchestrator.placement.plan import Objective, ObjectiveKind, Plan, PlanningConstraints
from orchestrator.placement.planners.common import (
    ModelPlanner,
    better,
    limit_breach,
    time_limit_for,
)
from orchestrator.placement.planners.cpsat import (
    CPSATSettings,
    cpsat_unavailable,
    decode,
    solve_cpsat,
)
from orchestrator.placement.planners.descent import slack_descent
from orchestrator.placement.planners.incumbent import incumbents
from orchestrator.placement.planners.milp_data import (
    ILPData,
    group_steps,
    ilp_data,
    is_relaxation,
)
from orchestrator.placement.planners.milp_model import ILPVariables, build_model
from orchestrator.placement.planners.solvers import SOLVERS, Progress, SolveInfo, solve
from orchestrator.placement.schedule import build_plan
from orchestrator.placement.timeshift import has_time_variation

if TYPE_CHECKING:
    pass

ENGINES = ("auto", "milp", "cpsat")


@dataclass(frozen=True)
class ILPSettings:
    """How the optimiser runs.

    ``solver``: the MILP's, ``"highs"`` (highspy, default) or ``"cbc"`` (pulp's bundled CBC);
    ``time_limit`` in seconds for the starts and the engines together (``None``: by the
    workflow's size, ``auto_time_limit``: 20 s up to 200 steps, then 0.1 s per step up to
    60 s); ``engine``: ``auto``, ``milp`` or
    ``cpsat`` (module docstring); ``milp_share``: the MILP's share of the time when both run;
    ``exact_max_steps``: above this many steps the group-level MILP is solved;
    ``max_groups``: groups are coarsened (category prefix, then level only) until at most
    this many remain; ``threads`` for HiGHS, ``workers`` for CP-SAT; ``improve_seconds``:
    budget of the local search on the critical chain after decoding; ``search_share``: the
    share of the time limit (at most ``improve_seconds``) of the local search on the
    incumbent before the engines, for the makespan (under a budget or not); ``descent_share``: the
    share (at most ``descent_seconds``) of the slack descents among the starts under a
    deadline; ``polish_share``: the share kept from CP-SAT (at most ``descent_seconds``)
    for a slack descent from the chosen plan under a deadline (``polish``);
    ``lns_only_steps``: from this many steps on, CP-SAT's workers all improve the incumbent by
    large neighbourhood search (``CPSATSettings.lns_only_steps``; ``None``: its default
    portfolio), each search limited to ``lns_deterministic_limit`` deterministic seconds
    (``CPSATSettings.lns_deterministic_limit``; ``None``: CP-SAT's 0.1); when that search
    finds no plan better than the incumbent (by ``cpsat.LNS_GAIN`` of its objective) in
    ``lns_stall_share`` of CP-SAT's time, the rest goes to CP-SAT's default portfolio
    (``CPSATSettings.lns_stall_share``; ``None``: never).
    """

    solver: str = "highs"
    time_limit: float | None = None
    engine: str = "auto"
    milp_share: float = 0.25
    exact_max_steps: int = 120
    max_groups: int = 150
    gap_rel: float = 1e-4
    improve_seconds: float = 3.0
    search_share: float = 0.2
    descent_share: float = 0.25
    descent_seconds: float = 5.0
    polish_share: float = 0.1
    threads: int = 1
    workers: int = 2
    lns_only_steps: int | None = 150
    lns_deterministic_limit: float | None = 0.03
    lns_stall_share: float | None = 0.25
    msg: bool = False

    def __post_init__(self) -> None:
        if self.solver not in SOLVERS:
            raise ValueError(f"solver must be 'highs' or 'cbc', got {self.solver!r}")
        if self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {self.engine!r}")
        if self.threads < 1 or self.workers < 1:
            raise ValueError("threads and workers must be >= 1")
        if self.time_limit is not None and not self.time_limit > 0:
            raise ValueError("time_limit must be > 0 seconds or None")
        if not 0 < self.milp_share <= 1:
            raise ValueError("milp_share must be in (0, 1]")
        if not 0 <= self.search_share < 1:
            raise ValueError("search_share must be in [0, 1)")
        if not 0 <= self.descent_share < 1:
            raise ValueError("descent_share must be in [0, 1)")
        if not 0 <= self.polish_share < 1:
            raise ValueError("polish_share must be in [0, 1)")
        if self.descent_seconds < 0:
            raise ValueError("descent_seconds must be >= 0")
        if self.lns_only_steps is not None and self.lns_only_steps < 1:
            raise ValueError("lns_only_steps must be >= 1 or None")
        if self.lns_deterministic_limit is not None and self.lns_deterministic_limit <= 0:
            raise ValueError("lns_deterministic_limit must be > 0 or None")
        if self.lns_stall_share is not None and not 0 < self.lns_stall_share < 1:
            raise ValueError("lns_stall_share must be in (0, 1) or None")

    def limit_for(self, steps: int) -> float:
        """The time limit for a model of ``steps`` steps: ``time_limit``, or
        ``auto_time_limit(steps)`` when it is ``None``."""
        return time_limit_for(self.time_limit, steps)


def engines_for(settings: ILPSettings, objective: Objective) -> tuple[str, ...]:
    """Which engines run, in order (module docstring). When OR-Tools cannot be loaded, the
    policy runs the MILP in CP-SAT's place and its notes say why."""
    if settings.engine != "auto":
        return (settings.engine,)
    if objective.kind is ObjectiveKind.TIME:
        return ("cpsat",)
    return ("milp", "cpsat")


class ILPPlanner(ModelPlanner):
    """The optimiser: the best heuristic plan, improved by the MILP and CP-SAT."""

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

    def plan_model(self, model: CostModel, objective: Objective, t_start: float) -> Plan:
        cfg = self.settings
        time_limit = cfg.limit_for(len(model.steps))
        constraints = model.constraints
        self._say(
            f"time limit {time_limit:.0f} s"
            + (f" (by size: {len(model.steps)} steps)" if cfg.time_limit is None else "")
        )
        self._say("incumbent: HEFT, greedy, market")
        descends = constraints.deadline is not None and objective.weights()["time"] < 1.0
        inc = incumbents(
            model, objective, t_start, min(cfg.descent_seconds, cfg.descent_share * time_limit)
        )
        ref = inc.ref
        best = inc.best(objective)
        notes: list[str] = []
        if best is not None:
            notes.append(f"incumbent: {best.metrics.planner}")
            if objective.kind is ObjectiveKind.TIME:
                best, moved = self._search_first(model, objective, ref, best, t_start, time_limit)
                if moved:
                    where = "under the budget" if constraints.budget is not None else "first"
                    notes.append(f"local search {where}: {moved} moves")
        produced: list[Plan] = []
        reasons: list[str] = []
        infeasible = False
        data: ILPData | None = None
        info: SolveInfo | None = None
        engines = list(engines_for(cfg, objective))
        deadline = t_start + time_limit
        polish = min(cfg.descent_seconds, cfg.polish_share * time_limit) if descends else 0.0
        missing: str | None = None
        for engine in engines:
            if engine == "cpsat":
                missing = cpsat_unavailable()
                if missing is not None:
                    notes.append(f"cp-sat not run: {missing}")
                    if cfg.engine == "auto" and "milp" not in engines:
                        engines.append("milp")  # the MILP instead (the loop reaches it)
            left = deadline - time.perf_counter()
            if left <= 0.05:
                reasons.append(f"{engine}: no time left")
                continue
            if engine == "milp":
                share = cfg.milp_share if len(engines) > 1 else 1.0
                limit = max(0.1, min(left, time_limit * share))
                data, info, decoded, why = self._milp(model, objective, ref, best, limit)
                notes.append(f"solver {info.solver}: {info.status}, {info.wall_s:.2f} s")
                infeasible = infeasible or info.status.lower().startswith("infeasible")
            elif missing is not None:
                reasons.append(f"cp-sat: {missing}")
                continue
            else:
                cp = CPSATSettings(
                    time_limit=max(0.1, left - polish),
                    workers=cfg.workers,
                    wall_limit=polish > 0,
                    lns_only_steps=cfg.lns_only_steps,
                    lns_deterministic_limit=cfg.lns_deterministic_limit,
                    lns_stall_share=cfg.lns_stall_share,
                )
                hint = _best_of([*produced, *([best] if best else [])], objective, ref)
                res = solve_cpsat(model, objective, ref, hint, cp, self.progress)
                lns = " (LNS only)" if res.lns_only else ""
                if res.stalled_s is not None:
                    lns = (
                        f" (LNS only, then the default portfolio from {res.stalled_s:.1f} s: "
                        "no gain by then)"
                    )
                notes.append(f"cp-sat: {res.status}, {res.wall_s:.2f} s{lns}")
                decoded, why = res.plan, res.reason
                infeasible = infeasible or res.status == "INFEASIBLE"
            if decoded is not None:
                produced.append(decoded)
            elif why:
                reasons.append(why)
        engine_best = _best_of(produced, objective, ref)
        if engine_best is None and best is None:
            if infeasible:
                raise InfeasiblePlan(
                    "ilp: the model is infeasible: relax the deadline or the budget, "
                    "or widen the steps' eligibility"
                )
            raise PlanningError(
                f"ilp: no feasible plan within {time_limit:.0f} s "
                f"({'; '.join([*reasons, *inc.left_out])}); raise the time limit or relax "
                "the constraints"
            )
        fallback: tuple[str, str] | None = None
        chosen: Plan
        if engine_best is None:
            chosen = best  # type: ignore[assignment]  # not None: the branch above raised
            fallback = (chosen.metrics.planner, "; ".join(reasons) or "no engine ran")
            notes.append(f"fallback: {chosen.metrics.planner}, because {fallback[1]}")
        elif best is not None and better(best, engine_best, objective, ref):
            chosen = best
            notes.append(f"kept {best.metrics.planner}'s plan: the engines' plans were worse")
        else:
            chosen = engine_best
        if descends and polish > 0:
            chosen, moved = self._polish(model, objective, ref, chosen, deadline)
            if moved:
                notes.append(f"slack descent from the chosen plan: {chosen.metrics.planner}")
                if fallback is not None:
                    fallback = (chosen.metrics.planner, fallback[1])
        if (
            not has_time_variation(model, set(model.sites))
            and len(model.workflow) <= 3000
            and cfg.improve_seconds > 0
        ):
            self._say("local search on the critical chain")
            placed = {s: (a.site, a.start, a.end) for s, a in chosen.assignments.items()}
            improved, booked, moves = improve(
                model,
                placed,
                transfers_of(chosen),
                objective,
                ref,
                constraints,
                cfg.improve_seconds,
            )
            if moves:
                chosen = build_plan(
                    model,
                    improved,
                    objective,
                    self.name,
                    "heuristic",
                    0.0,
                    ref=ref,
                    transfers=booked,
                )
                notes.append(f"local search: {moves} improving moves on the critical chain")
        return self._finish(model, chosen, objective, ref, info, data, notes, t_start, fallback)

    def _search_first(
        self,
        model: CostModel,
        objective: Objective,
        ref: dict[str, float],
        best: Plan,
        t_start: float,
        time_limit: float,
    ) -> tuple[Plan, int]:
        """The incumbent after the local search on the critical chain (single steps and a
        step with its parents or children; under a budget, with moves paid for by slack
        steps on cheaper sites: ``improve``), within ``search_share`` of the time limit:
        CP-SAT then starts from it (measured on 1000genome-8ch on regional-4: HEFT's 267 s
        became 262 s in 0.4 s, where CP-SAT alone reached 266 s in 5 s). The makespan's
        list schedule is as early as the pools allow, so prices that vary in time are
        counted exactly."""
        cfg = self.settings
        seconds = min(cfg.improve_seconds, cfg.search_share * time_limit)
        seconds = min(seconds, t_start + time_limit - time.perf_counter())
        if seconds <= 0 or len(model.workflow) > 3000:
            return best, 0
        self._say("local search on the critical chain")
        placed = {s: (a.site, a.start, a.end) for s, a in best.assignments.items()}
        improved, booked, moves = improve(
            model, placed, transfers_of(best), objective, ref, model.constraints, seconds
        )
        if not moves:
            return best, 0
        plan = build_plan(
            model,
            improved,
            objective,
            f"{best.metrics.planner}+search",
            "heuristic",
            0.0,
            ref=ref,
            transfers=booked,
        )
        if limit_breach(plan, model.constraints) or not better(plan, best, objective, ref):
            return best, 0
        return plan, moves

    def _polish(
        self,
        model: CostModel,
        objective: Objective,
        ref: dict[str, float],
        chosen: Plan,
        until: float,
    ) -> tuple[Plan, bool]:
        """``chosen`` after a slack descent (single steps and group moves) in the time left
        until ``until``; ``chosen`` itself unless the result keeps the limits and is better."""
        seconds = until - time.perf_counter()
        if seconds <= 0.05:
            return chosen, False
        self._say("slack descent from the chosen plan")
        try:
            plan = slack_descent(model, objective, chosen, ref, seconds=seconds)
        except InfeasiblePlan:
            return chosen, False
        if limit_breach(plan, model.constraints) or not better(plan, chosen, objective, ref):
            return chosen, False
        return plan, True

    # -- the MILP ----------------------------------------------------------------------
    def _milp(
        self,
        model: CostModel,
        objective: Objective,
        ref: dict[str, float],
        incumbent: Plan | None,
        time_limit: float,
    ) -> tuple[ILPData, SolveInfo, Plan | None, str]:
        """Build, warm-start, solve and decode the MILP: (data, solver info, plan, why not)."""
        cfg = self.settings
        constraints = model.constraints
        workflow = model.workflow
        exact = len(workflow) <= cfg.exact_max_steps
        groups = (
            {s.id: [s.id] for s in workflow.steps} if exact else group_steps(model, cfg.max_groups)
        )
        span = constraints.deadline
        if span is None:
            span = incumbent.metrics.makespan_s if incumbent is not None else ref["time"]
        data = ilp_data(model, constraints, groups, ref, max(span, 1e-9), exact)
        self._say(
            f"building the {'exact' if exact else 'group-level'} model: {len(data.units)} units "
            f"x {len(data.sites)} sites x {data.slots} slots"
        )
        prob, v = build_model(data, objective)
        warm = incumbent is not None and _set_warm_start(v, data, incumbent, constraints)
        self._say(
            f"solving with {cfg.solver.upper()} "
            f"({prob.numVariables()} variables, {prob.numConstraints()} constraints, "
            f"limit {time_limit:.0f} s)"
        )
        info = solve(
            prob,
            cfg.solver,
            time_limit=time_limit,
            threads=cfg.threads,
            gap_rel=cfg.gap_rel,
            warm=warm,
            msg=cfg.msg,
            progress=self.progress,
        )
        self.last_solve = info
        self._say(f"solver: {info.status}, gap {info.gap}")
        if not info.has_solution:
            return data, info, None, info.failure() or info.status
        decoded = self._decode(model, data, v, objective, ref)
        if decoded is None:
            return data, info, None, "the MILP's solution breaks a limit once list-scheduled"
        return data, info, decoded, ""

    def _decode(
        self,
        model: CostModel,
        data: ILPData,
        v: ILPVariables,
        objective: Objective,
        ref: dict[str, float],
    ) -> Plan | None:
        """List-schedule the solver's sites and starts; None if it misses the limits."""
        site_of: dict[str, str] = {}
        start_of: dict[str, float] = {}
        for u in data.units:
            best_s, best_val = None, -1.0
            for s in data.eligible[u]:
                val = sum(v.start_in_slot[u, s, k].varValue or 0.0 for k in range(data.slots))
                if val > best_val:
                    best_s, best_val = s, val
            if best_s is None:
                return None
            s_val = v.start[u].varValue or 0.0
            for m in data.members[u]:
                site_of[m] = best_s
                start_of[m] = s_val
        plan = decode(model, objective, ref, site_of, start_of, data.time_varying)
        return None if plan is None else plan.with_metrics(planner=self.name)

    def _finish(
        self,
        model: CostModel,
        plan: Plan,
        objective: Objective,
        ref: dict[str, float],
        info: SolveInfo | None,
        data: ILPData | None,
        notes: list[str],
        t_start: float,
        fallback: tuple[str, str] | None = None,
    ) -> Plan:
        """The final plan with its explanations, bound and status.

        ``fallback`` is ``(heuristic, why)`` when no engine produced a usable plan: the
        status is then ``fallback: <heuristic>`` and ``status_reason`` says why.
        """
        placed = {s: (a.site, a.start, a.end) for s, a in plan.assignments.items()}
        booked = transfers_of(plan)
        why = explain_all(model, placed, objective, None, booked)
        relaxed = info is not None and data is not None and is_relaxation(data)
        bound = info.bound if relaxed and info is not None else None
        out = build_plan(
            model,
            placed,
            objective,
            self.name,
            "feasible",
            time.perf_counter() - t_start,
            why,
            bound=bound,
            ref=ref,
            notes=tuple(dict.fromkeys((*plan.notes, *notes))),
            transfers=booked,
        )
        if fallback is not None:
            return out.with_metrics(status=f"fallback: {fallback[0]}", status_reason=fallback[1])
        # "optimal" is a claim about this plan: its gap to a valid bound must be closed
        closed = out.metrics.gap is not None and out.metrics.gap <= self.settings.gap_rel + 1e-9
        return out.with_metrics(status="optimal") if closed else out


def _best_of(plans: list[Plan], objective: Objective, ref: dict[str, float]) -> Plan | None:
    best: Plan | None = None
    for p in plans:
        if best is None or better(p, best, objective, ref):
            best = p
    return best


def _set_warm_start(
    v: ILPVariables, data: ILPData, plan: Plan, constraints: PlanningConstraints
) -> bool:
    """Initial values from ``plan`` (by majority site per group); False if it breaks limits."""
    if limit_breach(plan, constraints):
        return False
    L = data.slot_seconds
    for u in data.units:
        sites: dict[str, int] = defaultdict(int)
        for m in data.members[u]:
            sites[plan.site_of(m)] += 1
        site = max(sites, key=lambda s: sites[s])
        if site not in data.eligible[u]:
            return False
        start = min(plan.assignments[m].start for m in data.members[u])
        k = min(data.slots - 1, int(start // L)) if data.slots > 1 else 0
        for s in data.eligible[u]:
            for kk in range(data.slots):
                v.start_in_slot[u, s, kk].setInitialValue(1.0 if (s == site and kk == k) else 0.0)
        v.start[u].setInitialValue(start)
    v.makespan.setInitialValue(plan.metrics.makespan_s)
    for e, y in v.transfer_eur.items():
        a, b = e
        pair = (plan.site_of(data.members[a][0]), plan.site_of(data.members[b][0]))
        y.setInitialValue(data.tcost[e].get(pair, 0.0))
    return True
