"""The CDT scheduling-problem format (Exa-AToW, "Optimal Scheduling for Cross-Facility
Workflows"): import, solve, export as JSON and CSV, check.

A multi-mode resource-constrained project scheduling problem (MRCPSP): jobs
form a DAG of finish-to-start links with minimum lags, each job runs in one
of its modes (duration, one-off cost, resource demands), renewable resources
limit every period, non-renewable ones the whole project. Two optional fields
beyond the book's data model are accepted: ``renewable: false`` on a resource
(a whole-project budget) and ``due_date`` on a job (soft; tardiness only).

Time model: integer periods from 0; job ``j`` in mode ``m`` started at ``S_j``
occupies ``[S_j, S_j + d_jm)``. Solved as a time-indexed ILP with binaries
``x_jmt`` (job j in mode m starts at t):

* ``sum_{m,t} x_jmt = 1``                                             (one mode, one start)
* ``sum_{m,t} t x_{succ,m,t} >= sum_{m,t} (t + d_m) x_{pred,m,t} + lag``   (precedence)
* ``sum_{j,m} q_jmr sum_{t = tau - d_jm + 1}^{tau} x_jmt <= Q_r``  for every period tau
                                                                    (renewable r)
* ``sum_{j,m,t} q_jmr x_jmt <= Q_r``                                  (non-renewable r)
* ``C >= sum_{m,t} (t + d_jm) x_jmt``                                 (makespan)

with ``t`` restricted to ``[release_j, min(horizon, deadline_j) - d_jm]``. Objectives:
``makespan`` (min C), ``cost`` (min sum c_jm x_jmt; the makespan breaks ties with
weight ``1e-3 / (H + 1)``, below any cost difference of 1e-3), ``weighted``
(C + cost, the book's (1')).
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Self

import pulp
from pydantic import BaseModel, ConfigDict, Field, model_validator

from federation.documents import read_document
from federation.errors import Problem, Problems, validate_document
from orchestrator.errors import InfeasiblePlan, InvalidCDT
from orchestrator.placement.planners.solvers import solve
from orchestrator.workflow import find_cycle

CDT_ID = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
OBJECTIVES = ("makespan", "cost", "weighted")


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class CDTResource(_Strict):
    resource_id: CDT_ID
    name: str = ""
    capacity: int = Field(ge=0)
    renewable: bool = True


class CDTJob(_Strict):
    job_id: CDT_ID
    name: str = ""
    release_time: int = Field(default=0, ge=0)
    deadline: int | None = Field(default=None, ge=0)
    due_date: int | None = Field(default=None, ge=0)


class CDTRequirement(_Strict):
    resource_id: CDT_ID
    demand: int = Field(ge=0)


class CDTMode(_Strict):
    mode_id: CDT_ID
    job_id: CDT_ID
    duration: int = Field(ge=0)
    cost: float = Field(ge=0)
    resource_requirements: tuple[CDTRequirement, ...] = ()

    def demand(self, resource_id: str) -> int:
        return sum(r.demand for r in self.resource_requirements if r.resource_id == resource_id)


class CDTPrecedence(_Strict):
    predecessor: CDT_ID
    successor: CDT_ID
    lag: int = Field(default=0, ge=0)


class CDTProblem(_Strict):
    """A CDT input document, validated (references, unique ids, every job a mode, no cycle)."""

    problem_name: str = ""
    horizon: int | None = Field(default=None, ge=1)
    resources: tuple[CDTResource, ...] = Field(min_length=1)
    jobs: tuple[CDTJob, ...] = Field(min_length=1)
    modes: tuple[CDTMode, ...] = Field(min_length=1)
    precedences: tuple[CDTPrecedence, ...] = ()

    @model_validator(mode="after")
    def _check_refs(self) -> Self:
        problems: list[Problem] = []
        for field, items, key in (
            ("resources", self.resources, "resource_id"),
            ("jobs", self.jobs, "job_id"),
            ("modes", self.modes, "mode_id"),
        ):
            seen: set[str] = set()
            for i, it in enumerate(items):
                ident = getattr(it, key)
                if ident in seen:
                    problems.append(Problem(f"{field}[{i}].{key}", f"duplicate id {ident!r}"))
                seen.add(ident)
        jobs = {j.job_id for j in self.jobs}
        res = {r.resource_id for r in self.resources}
        for i, m in enumerate(self.modes):
            if m.job_id not in jobs:
                problems.append(Problem(f"modes[{i}].job_id", f"unknown job {m.job_id!r}"))
            for k, r in enumerate(m.resource_requirements):
                if r.resource_id not in res:
                    problems.append(
                        Problem(
                            f"modes[{i}].resource_requirements[{k}].resource_id",
                            f"unknown resource {r.resource_id!r}; declare it in resources",
                        )
                    )
        with_mode = {m.job_id for m in self.modes}
        for i, j in enumerate(self.jobs):
            if j.job_id not in with_mode:
                problems.append(Problem(f"jobs[{i}]", f"job {j.job_id!r} has no mode"))
        for i, p in enumerate(self.precedences):
            for end in ("predecessor", "successor"):
                if getattr(p, end) not in jobs:
                    problems.append(
                        Problem(f"precedences[{i}].{end}", f"unknown job {getattr(p, end)!r}")
                    )
        if not problems:
            children: dict[str, list[str]] = {j: [] for j in jobs}
            for p in self.precedences:
                children[p.predecessor].append(p.successor)
            cycle = find_cycle(children)
            if cycle:
                problems.append(Problem("precedences", "cycle: " + " -> ".join(cycle)))
        if problems:
            raise Problems(problems)
        return self

    def modes_of(self, job_id: str) -> list[CDTMode]:
        return [m for m in self.modes if m.job_id == job_id]

    def job(self, job_id: str) -> CDTJob:
        return next(j for j in self.jobs if j.job_id == job_id)

    def safe_horizon(self) -> int:
        """The given horizon, else the largest deadline, else a sum bound (FORMAT.md)."""
        if self.horizon is not None:
            return self.horizon
        deadlines = [j.deadline for j in self.jobs if j.deadline is not None]
        if deadlines:
            return max(deadlines)
        longest = sum(max(m.duration for m in self.modes_of(j.job_id)) for j in self.jobs)
        return (
            longest + max(j.release_time for j in self.jobs) + sum(p.lag for p in self.precedences)
        )


@dataclass(frozen=True)
class ScheduledJob:
    job_id: str
    mode_id: str
    start: int
    finish: int


@dataclass(frozen=True)
class CDTSchedule:
    """A solved CDT problem: one (mode, start) per job, and how good it is."""

    problem_name: str
    objective: str
    objective_value: float
    makespan: int
    total_cost: float
    schedule: tuple[ScheduledJob, ...]
    status: str
    gap: float | None

    def to_dict(self) -> dict[str, Any]:
        """The output convention of FORMAT.md (plus ``status`` and ``gap``)."""
        return {
            "problem_name": self.problem_name,
            "objective": self.objective,
            "objective_value": self.objective_value,
            "makespan": self.makespan,
            "total_cost": self.total_cost,
            "status": self.status,
            "gap": self.gap,
            "schedule": [
                {"job_id": s.job_id, "mode_id": s.mode_id, "start": s.start, "finish": s.finish}
                for s in self.schedule
            ],
        }

    def to_csv(self) -> str:
        """``job_id,mode_id,start,finish`` rows."""
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["job_id", "mode_id", "start", "finish"])
        for s in self.schedule:
            w.writerow([s.job_id, s.mode_id, s.start, s.finish])
        return buf.getvalue()


def load_cdt(path: str | Path) -> CDTProblem:
    """Read and validate a CDT problem file; ``InvalidCDT`` names the file and the field."""
    return parse_cdt(read_document(path), str(path))


def parse_cdt(data: Any, source: str = "<cdt>") -> CDTProblem:
    return validate_document(CDTProblem, data, source, InvalidCDT, "CDT problem")


def solve_cdt(
    problem: CDTProblem,
    objective: str = "makespan",
    solver: str = "highs",
    time_limit: float = 60.0,
) -> CDTSchedule:
    """Solve the time-indexed MRCPSP; ``InfeasiblePlan`` when no schedule exists."""
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown CDT objective {objective!r}; use one of {', '.join(OBJECTIVES)}")
    H = problem.safe_horizon()
    prob = pulp.LpProblem("cdt", pulp.LpMinimize)
    x = _start_vars(prob, problem, H)
    C = prob.add_variable("C", lowBound=0)
    by_job: dict[str, list[tuple[CDTMode, int, Any]]] = defaultdict(list)
    for (jid, m, t), var in x.items():
        by_job[jid].append((m, t, var))
    add_cdt_assignment(prob, problem, by_job)
    add_cdt_precedence(prob, problem, by_job)
    add_cdt_resources(prob, problem, x, H)
    for i, j in enumerate(problem.jobs):
        prob += pulp.lpSum((t + m.duration) * v for m, t, v in by_job[j.job_id]) <= C, f"mk_{i}"
    cost = pulp.lpSum(m.cost * v for (_, m, _), v in x.items())
    if objective == "makespan":
        prob += C
    elif objective == "cost":
        # cost first; the makespan breaks ties among equally cheap schedules
        prob += cost + C * (1e-3 / (H + 1))
    else:
        prob += C + cost
    info = solve(prob, solver, time_limit=time_limit)
    status, has = info.status, info.has_solution
    gap = info.gap if has else None
    if not has:
        raise InfeasiblePlan(
            f"CDT problem {problem.problem_name!r}: no schedule within horizon {H} ({status}); "
            "raise the horizon, the deadlines or the resource capacities"
        )
    rows = []
    for j in problem.jobs:
        m, t = max(((m, t, v.varValue or 0.0) for m, t, v in by_job[j.job_id]), key=lambda r: r[2])[
            :2
        ]
        rows.append(ScheduledJob(j.job_id, m.mode_id, t, t + m.duration))
    makespan = max(r.finish for r in rows)
    total = sum(next(m for m in problem.modes if m.mode_id == r.mode_id).cost for r in rows)
    value = {"makespan": float(makespan), "cost": total, "weighted": makespan + total}[objective]
    return CDTSchedule(
        problem.problem_name,
        objective,
        value,
        makespan,
        total,
        tuple(rows),
        "optimal" if status.lower().startswith("optimal") and (gap or 0.0) <= 1e-6 else status,
        gap,
    )


def _start_vars(
    prob: pulp.LpProblem, problem: CDTProblem, H: int
) -> dict[tuple[str, CDTMode, int], Any]:
    """``x[j, m, t]`` for every start t keeping release, deadline and horizon."""
    x = {}
    for i, j in enumerate(problem.jobs):
        for mi, m in enumerate(problem.modes_of(j.job_id)):
            last = H - m.duration
            if j.deadline is not None:
                last = min(last, j.deadline - m.duration)
            for t in range(j.release_time, last + 1):
                x[j.job_id, m, t] = prob.add_variable(f"x_{i}_{mi}_{t}", cat=pulp.LpBinary)
    return x


def add_cdt_assignment(
    prob: pulp.LpProblem, problem: CDTProblem, by_job: dict[str, list[tuple[CDTMode, int, Any]]]
) -> None:
    """``sum_{m,t} x_jmt = 1`` for every job."""
    for i, j in enumerate(problem.jobs):
        prob += pulp.lpSum(v for _, _, v in by_job[j.job_id]) == 1, f"one_{i}"


def add_cdt_precedence(
    prob: pulp.LpProblem, problem: CDTProblem, by_job: dict[str, list[tuple[CDTMode, int, Any]]]
) -> None:
    """``S_succ >= F_pred + lag`` with ``S = sum t x`` and ``F = sum (t + d) x``."""
    for i, p in enumerate(problem.precedences):
        start = pulp.lpSum(t * v for _, t, v in by_job[p.successor])
        finish = pulp.lpSum((t + m.duration) * v for m, t, v in by_job[p.predecessor])
        prob += start >= finish + p.lag, f"prec_{i}"


def add_cdt_resources(
    prob: pulp.LpProblem, problem: CDTProblem, x: dict[tuple[str, CDTMode, int], Any], H: int
) -> None:
    """Renewable: demand of the jobs running in each period <= capacity; non-renewable: total."""
    for ri, r in enumerate(problem.resources):
        users = [(key, var) for key, var in x.items() if key[1].demand(r.resource_id) > 0]
        if not users:
            continue
        if not r.renewable:
            prob += (
                pulp.lpSum(k[1].demand(r.resource_id) * v for k, v in users) <= r.capacity,
                f"budget_{ri}",
            )
            continue
        for tau in range(H):
            running = [
                k[1].demand(r.resource_id) * v
                for k, v in users
                if k[2] <= tau < k[2] + k[1].duration
            ]
            if running:
                prob += pulp.lpSum(running) <= r.capacity, f"res_{ri}_{tau}"


def check_cdt(problem: CDTProblem, schedule: CDTSchedule) -> list[str]:
    """Every feasibility rule of FORMAT.md that ``schedule`` breaks (empty: feasible)."""
    out: list[str] = []
    modes = {m.mode_id: m for m in problem.modes}
    rows = {s.job_id: s for s in schedule.schedule}
    H = problem.horizon
    for j in problem.jobs:
        s = rows.get(j.job_id)
        if s is None:
            out.append(f"job {j.job_id} is not scheduled")
            continue
        m = modes.get(s.mode_id)
        if m is None or m.job_id != j.job_id:
            out.append(f"job {j.job_id}: mode {s.mode_id} is not one of its modes")
            continue
        if s.finish != s.start + m.duration:
            out.append(f"job {j.job_id}: finish {s.finish} != start {s.start} + {m.duration}")
        if s.start < j.release_time:
            out.append(f"job {j.job_id} starts before its release {j.release_time}")
        if j.deadline is not None and s.finish > j.deadline:
            out.append(f"job {j.job_id} ends after its deadline {j.deadline}")
        if H is not None and s.finish > H:
            out.append(f"job {j.job_id} ends after the horizon {H}")
    if out:
        return out
    for p in problem.precedences:
        if rows[p.successor].start < rows[p.predecessor].finish + p.lag:
            out.append(f"precedence {p.predecessor} -> {p.successor} (lag {p.lag}) broken")
    end = max(s.finish for s in rows.values())
    for r in problem.resources:
        if not r.renewable:
            used = sum(modes[s.mode_id].demand(r.resource_id) for s in rows.values())
            if used > r.capacity:
                out.append(f"resource {r.resource_id}: {used} used, budget {r.capacity}")
            continue
        for tau in range(end):
            used = sum(
                modes[s.mode_id].demand(r.resource_id)
                for s in rows.values()
                if s.start <= tau < s.finish
            )
            if used > r.capacity:
                out.append(f"resource {r.resource_id}: {used} > {r.capacity} in period {tau}")
                break
    return out


def write_cdt_outputs(
    schedule: CDTSchedule, json_path: Path | None = None, csv_path: Path | None = None
) -> None:
    """Write the schedule as JSON and/or CSV."""
    import json

    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(schedule.to_dict(), indent=2) + "\n", encoding="utf-8")
    if csv_path is not None:
        csv_path.parent.mkdir(parents=True, exist_ok=True)
        csv_path.write_text(schedule.to_csv(), encoding="utf-8")
