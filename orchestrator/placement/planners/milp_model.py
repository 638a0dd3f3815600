"""The placement MILP's formulation: variables, one function per constraint family, objective.

A time-indexed multi-mode model on the slot grid of ``milp_data`` (the Exa-AToW
continuum-twin model): the *modes* of a unit of work are the sites it may run on, each
with its duration, energy, cost and carbon; the *time index* is the slot it starts in.

Sets: units ``u``, sites ``s``, slots ``k = 0..K-1`` of length ``L``; edges ``(u, v)``.
Data: ``d_us`` duration, ``l_us`` core-seconds, ``e_us`` kWh, ``c_usk`` EUR and ``g_usk``
kgCO2e when started in slot ``k``, ``T_uv(s, s')`` transfer delay, ``tc_uv(s, s')``
transfer EUR, ``b_uv`` bytes, ``r_us`` arrival of the unit's located inputs at ``s``.

Variables (``ILPVariables``): ``z_usk in {0,1}`` (u runs on s, starting in slot k),
``x_us = sum_k z_usk`` (an expression), ``S_u >= release_u`` start, ``M >= 0`` makespan,
``y_uv >= 0`` transfer EUR of an edge.

Every constraint has a stable name saying its family and its indices in words
(``capacity(site=fr_hpc,slot=3)``; pulp turns ``-+[] ->/`` into ``_``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import pulp

from orchestrator.placement.plan import Objective
from orchestrator.placement.planners.milp_data import ILPData

_ILLEGAL = re.compile(r"[-+\[\] ->/]")


class Names:
    """Readable, unique constraint names: ``family(key=value,...)``."""

    def __init__(self) -> None:
        self.used: set[str] = set()

    def __call__(self, family: str, **index: object) -> str:
        inner = ",".join(f"{k}={v}" for k, v in index.items())
        name = _ILLEGAL.sub("_", f"{family}({inner})" if inner else family)
        base, n = name, 1
        while name in self.used:
            n += 1
            name = f"{base}#{n}"
        self.used.add(name)
        return name


@dataclass
class ILPVariables:
    """The model's variables, by what they mean."""

    start_in_slot: dict[tuple[str, str, int], Any]
    """``z[u, s, k]``: binary, unit u runs on site s and starts in slot k."""
    on_site: dict[tuple[str, str], Any]
    """``x[u, s] = sum_k z[u, s, k]`` (an expression, not a variable)."""
    start: dict[str, Any]
    """``S[u]``: start time (s from t0)."""
    makespan: Any
    """``M``."""
    transfer_eur: dict[tuple[str, str], Any]
    """``y[u, v]``: EUR of moving an edge's data between the units' sites."""
    names: Names


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


def add_variables(prob: pulp.LpProblem, data: ILPData) -> ILPVariables:
    """``z[u, s, k]`` binaries for eligible (u, s), starts ``S[u]``, makespan ``M``, ``y[e]``."""
    z = {}
    for i, u in enumerate(data.units):
        for j, s in enumerate(data.sites):
            if s not in data.eligible[u]:
                continue
            for k in range(data.slots):
                z[u, s, k] = _var(prob, f"z_{i}_{j}_{k}", binary=True)
    x = {
        (u, s): pulp.lpSum(z[u, s, k] for k in range(data.slots))
        for u in data.units
        for s in data.eligible[u]
    }
    S = {u: _var(prob, f"S_{i}", low=data.release[u]) for i, u in enumerate(data.units)}
    y = {e: _var(prob, f"y_{i}") for i, e in enumerate(data.edges) if data.tcost[e]}
    return ILPVariables(z, x, S, _var(prob, "M"), y, Names())


def _x(v: ILPVariables, u: str, s: str) -> Any:
    """``x[u, s]``, 0 where the site is not eligible (no variable exists)."""
    return v.on_site.get((u, s), 0)


def add_assignment_constraints(prob: pulp.LpProblem, v: ILPVariables, data: ILPData) -> None:
    """Each unit runs in exactly one mode and slot: ``sum_{s,k} z_usk = 1``.

    Eligibility (jurisdiction, labels, data, memory, located inputs...) is built in: ``z``
    exists only for the unit's eligible sites.
    """
    for u in data.units:
        prob += (
            pulp.lpSum(v.on_site[u, s] for s in data.eligible[u]) == 1,
            v.names("assign", unit=u),
        )


def add_slot_window_constraints(prob: pulp.LpProblem, v: ILPVariables, data: ILPData) -> None:
    """The start lies in the chosen slot: ``sum k L z <= S_u <= sum (k+1) L z`` (if K > 1).

    Also the site's expected queue wait and the arrival of located external inputs:
    ``S_u >= sum_s (wait_s + r_us) x_us``.
    """
    L = data.slot_seconds
    for u in data.units:
        waits = [
            (s, max(data.site_release[s], data.input_delay.get((u, s), 0.0)))
            for s in data.eligible[u]
        ]
        waits = [(s, w) for s, w in waits if w > 0]
        if waits:
            prob += (
                v.start[u] >= pulp.lpSum(w * v.on_site[u, s] for s, w in waits),
                v.names("site_wait", unit=u),
            )
        if data.slots == 1:
            continue
        zs = [(k, v.start_in_slot[u, s, k]) for s in data.eligible[u] for k in range(data.slots)]
        prob += v.start[u] >= pulp.lpSum(k * L * z for k, z in zs), v.names("slot_lower", unit=u)
        prob += (
            v.start[u] <= pulp.lpSum((k + 1) * L * z for k, z in zs),
            v.names("slot_upper", unit=u),
        )


def finish(v: ILPVariables, data: ILPData, u: str) -> Any:
    """``S_u + sum_s d_us x_us``."""
    return v.start[u] + pulp.lpSum(data.dur[u, s] * v.on_site[u, s] for s in data.eligible[u])


def add_precedence_constraints(prob: pulp.LpProblem, v: ILPVariables, data: ILPData) -> None:
    """Finish-to-start with inter-site transfer delays.

    ``S_v >= S_u + sum_s d_us x_us`` for every edge, and for every ordered pair of
    different sites ``S_v >= S_u + sum_s d_us x_us + T_uv(s, s') (x_us + x_vs' - 1)``
    (the pair term is active only when u is on s and v on s'). An unlinked pair
    cannot carry the edge's data: ``x_us + x_vs' <= 1``. Transfer EUR:
    ``y_uv >= tc_uv(s, s') (x_us + x_vs' - 1)``.
    """
    if not data.edges:
        return
    for a, b in data.edges:
        fin = finish(v, data, a)
        prob += v.start[b] >= fin, v.names("precedence", edge=f"{a}>{b}")
        for (s1, s2), t in data.delay[a, b].items():
            both = _x(v, a, s1) + _x(v, b, s2) - 1
            if math.isinf(t):
                prob += (
                    _x(v, a, s1) + _x(v, b, s2) <= 1,
                    v.names("no_link", edge=f"{a}>{b}", src=s1, dst=s2),
                )
            elif t > 0:
                prob += (
                    v.start[b] >= fin + t * both,
                    v.names("transfer_delay", edge=f"{a}>{b}", src=s1, dst=s2),
                )
        for (s1, s2), c in data.tcost[a, b].items():
            prob += (
                v.transfer_eur[a, b] >= c * (_x(v, a, s1) + _x(v, b, s2) - 1),
                v.names("transfer_cost", edge=f"{a}>{b}", src=s1, dst=s2),
            )


def add_capacity_constraints(prob: pulp.LpProblem, v: ILPVariables, data: ILPData) -> None:
    """The continuous-time load bound, and per-slot capacity from the forecast.

    ``M * pool_s >= sum_u l_us x_us``: a site's work cannot finish before its core-seconds
    spread over its guaranteed pool. Per slot ``k`` (if K > 1): the core-seconds that must
    run inside ``[kL, (k+1)L)`` fit the slot's ``mean - z std`` cores,
    ``sum_{u, k'} c_u o_us(k', k) z_usk' <= cap_sk L`` where ``o_us(k', k)`` is the least
    overlap with slot ``k`` of a unit started anywhere in slot ``k'`` (0 unless it is long
    enough to cover part of slot ``k`` whatever its start): a relaxation, so a long step
    is never refused for its length. (The former family charged a step's whole load to
    the slot it started in, so no step longer than a slot could start anywhere.)
    """
    L = data.slot_seconds
    for s in data.sites:
        users = [u for u in data.units if s in data.eligible[u]]
        if not users:
            continue
        if data.pool[s] > 0:
            prob += (
                data.pool[s] * v.makespan
                >= pulp.lpSum(data.load[u, s] * v.on_site[u, s] for u in users),
                v.names("site_load", site=s),
            )
        if data.slots == 1:
            continue
        for k in range(data.slots):
            terms = []
            for u in users:
                cores = data.load[u, s] / data.dur[u, s] if data.dur[u, s] > 0 else 0.0
                for k0 in range(k + 1):
                    o = _least_overlap(k0 * L, L, data.dur[u, s], k * L)
                    if o > 0:
                        terms.append(cores * o * v.start_in_slot[u, s, k0])
            if terms:
                prob += (
                    pulp.lpSum(terms) <= data.capacity[s, k] * L,
                    v.names("capacity", site=s, slot=k),
                )


def _least_overlap(a: float, length: float, d: float, b: float) -> float:
    """Least overlap of ``[t, t + d)`` with ``[b, b + length)`` over starts ``t`` in
    ``[a, a + length]`` (piecewise linear in ``t``: the least is at an end)."""

    def overlap(t: float) -> float:
        return max(0.0, min(t + d, b + length) - max(t, b))

    return min(overlap(a), overlap(a + length))


def add_buffer_constraints(prob: pulp.LpProblem, v: ILPVariables, data: ILPData) -> None:
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
            edge = f"{a}>{b}"
            prob += o >= _x(v, a, s) - _x(v, b, s), v.names("buffer_out", edge=edge, site=s)
            prob += n >= _x(v, b, s) - _x(v, a, s), v.names("buffer_in", edge=edge, site=s)
            terms.append(data.ebytes[a, b] * (o + n))
        prob += pulp.lpSum(terms) <= data.buffer[s], v.names("buffer", site=s)


def add_makespan_constraints(prob: pulp.LpProblem, v: ILPVariables, data: ILPData) -> None:
    """``M >= S_u + sum_s d_us x_us`` for every unit without successors in the model."""
    has_child = {a for a, _ in data.edges}
    for u in data.units:
        if u not in has_child:
            prob += v.makespan >= finish(v, data, u), v.names("makespan", unit=u)


def add_deadline_constraints(prob: pulp.LpProblem, v: ILPVariables, data: ILPData) -> None:
    """``M <= D`` and ``S_u + d_u <= D_u`` for units with their own deadline."""
    if data.deadline_all is not None:
        prob += v.makespan <= data.deadline_all, v.names("deadline")
    for u in data.units:
        if u in data.deadline:
            prob += finish(v, data, u) <= data.deadline[u], v.names("step_deadline", unit=u)


def cost_expression(v: ILPVariables, data: ILPData) -> Any:
    """``sum c_usk z_usk + sum_e y_e + sum input EUR x_us``."""
    run = pulp.lpSum(
        data.cost[u, s, k] * v.start_in_slot[u, s, k]
        for u in data.units
        for s in data.eligible[u]
        for k in range(data.slots)
    )
    inputs = pulp.lpSum(
        c * v.on_site[u, s]
        for (u, s), c in data.input_cost.items()
        if c > 0 and (u, s) in v.on_site
    )
    return run + pulp.lpSum(v.transfer_eur.values()) + inputs


def add_budget_constraints(prob: pulp.LpProblem, v: ILPVariables, data: ILPData) -> None:
    """Budget, a non-renewable resource: ``sum c_usk z_usk + sum_e y_e <= budget``."""
    if data.budget is None:
        return
    prob += cost_expression(v, data) <= data.budget, v.names("budget")


def set_objective(
    prob: pulp.LpProblem, v: ILPVariables, data: ILPData, objective: Objective
) -> None:
    """``min sum_t w_t f_t / ref_t`` over makespan, cost, energy and carbon."""
    w = objective.weights()
    ref = {t: (data.ref[t] if data.ref[t] > 0 else 1.0) for t in w}
    energy = pulp.lpSum(
        data.energy[u, s] * v.on_site[u, s] for u in data.units for s in data.eligible[u]
    )
    carbon = pulp.lpSum(
        data.carbon[u, s, k] * v.start_in_slot[u, s, k]
        for u in data.units
        for s in data.eligible[u]
        for k in range(data.slots)
    )
    terms = {
        "time": v.makespan,
        "cost": cost_expression(v, data),
        "energy": energy,
        "carbon": carbon,
    }
    prob += pulp.lpSum(w[t] / ref[t] * terms[t] for t in w if w[t] > 0)


def build_model(data: ILPData, objective: Objective) -> tuple[pulp.LpProblem, ILPVariables]:
    """Variables, the constraint families, the objective."""
    prob = pulp.LpProblem("placement", pulp.LpMinimize)
    v = add_variables(prob, data)
    add_assignment_constraints(prob, v, data)
    add_slot_window_constraints(prob, v, data)
    add_precedence_constraints(prob, v, data)
    add_capacity_constraints(prob, v, data)
    add_buffer_constraints(prob, v, data)
    add_makespan_constraints(prob, v, data)
    add_deadline_constraints(prob, v, data)
    add_budget_constraints(prob, v, data)
    set_objective(prob, v, data, objective)
    return prob, v
