"""The optimiser (planner ``ilp``): never worse than a heuristic, the carbon optimum of short
chains computed by hand, no horizon cliff, and the CP-SAT engine where capacity binds."""

from __future__ import annotations

from typing import Any

import pytest

from federation.model import Federation
from orchestrator import (
    ILPSettings,
    Objective,
    Plan,
    PlanningConstraints,
    Workflow,
    check_plan,
    make_planner,
)
from orchestrator.placement.costs import CostModel
from orchestrator.placement.planners.incumbent import incumbents
from orchestrator.placement.planners.milp_data import ilp_data, slot_grid
from twin.state import Forecast, SiteView, static_view

FAST = ILPSettings(time_limit=10.0)


def pair(**site_extra: Any) -> Federation:
    """``green`` and ``steady``: 1 core each, speed 1, 100 W busy, PUE 1 (a 2,000 s step uses
    1/18 kWh), linked both ways at 1 GB/s with 1 s of latency."""
    sites = [
        {
            "id": sid,
            "kind": "hpc",
            "cores": 1,
            "memory": "4 GB",
            "power_idle_w": 10.0,
            "power_busy_w": 100.0,
            "price_per_core_hour": 0.1,
            "jurisdiction": "FR",
            "buffer_capacity": "1 TB",
            "carbon_intensity_g_per_kwh": 200.0,
            "energy_price_eur_per_kwh": 0.1,
            **site_extra,
        }
        for sid in ("green", "steady")
    ]
    links = [{"src": "green", "dst": "steady", "bandwidth": 1e9, "latency": 1.0, "symmetric": True}]
    return Federation.from_dict({"name": "pair", "sites": sites, "links": links})


def two_step_chain(work: float = 2000.0) -> Workflow:
    return Workflow.from_dict(
        {
            "name": "short",
            "data": [{"id": "d0", "size": 1.0}],
            "steps": [
                {"id": "s0", "work": work, "outputs": ["d0"]},
                {"id": "s1", "work": work, "inputs": ["d0"]},
            ],
        }
    )


def green_then_dirty(fed: Federation, horizon: int = 24) -> SiteView:
    """Slots of 2,500 s: ``green`` at 50 gCO2e/kWh in the first, 500 after; ``steady`` at 200."""
    view = static_view(fed, horizon=horizon, slot_seconds=2500.0)
    series = Forecast(mean=(50.0,) + (500.0,) * (horizon - 1), std=(0.0,) * horizon)
    view["green"] = view["green"].model_copy(update={"carbon_intensity": series})
    return view


def checked(
    plan: Plan, wf: Workflow, fed: Federation, view: SiteView, c: PlanningConstraints
) -> Plan:
    assert check_plan(plan, wf, fed, view, c) == []
    return plan


KWH = 2000 * 100 / 3.6e6  # one step: 2,000 s at 100 W


def test_carbon_optimum_of_a_two_step_chain_computed_by_hand() -> None:
    # Deadline 4,010 s: the steps run back to back from 0. On green, s0 ([0, 2000]) burns at
    # 50 g/kWh; s1 ([2000, 4000]) 500 s at 50 and 1,500 s at 500 (387.5 on average); on
    # steady everything burns at 200. The optimum is s0 on green, s1 on steady (1 s
    # transfer): (50 + 200) * KWH / 1000 kg. Green for both gives (50 + 387.5) * KWH / 1000,
    # 75 % more: what the MILP returned when it priced s1 at its slot's first instant (50).
    # Steady then green: 200 + 387.7; steady for both: 400.
    fed, wf = pair(), two_step_chain()
    view = green_then_dirty(fed)
    c = PlanningConstraints(deadline=4010.0)
    optimum = (50.0 + 200.0) * KWH / 1000
    for engine in ("auto", "milp", "cpsat"):
        settings = ILPSettings(time_limit=10.0, engine=engine, improve_seconds=0.0)
        plan = checked(
            make_planner("ilp", settings).plan(wf, fed, view, c, Objective.parse("carbon")),
            wf,
            fed,
            view,
            c,
        )
        assert (plan.site_of("s0"), plan.site_of("s1")) == ("green", "steady"), engine
        assert plan.metrics.carbon_kg == pytest.approx(optimum, rel=1e-6), engine
        assert not plan.metrics.status.startswith("fallback"), plan.metrics


def test_the_milp_never_counts_less_carbon_than_the_plan_emits() -> None:
    # the coefficient of a start slot is the largest over every start in the slot
    fed, wf = pair(), two_step_chain()
    view = green_then_dirty(fed)
    c = PlanningConstraints(deadline=4010.0)
    model = CostModel(wf, fed, view, c)
    data = ilp_data(model, c, {"s0": ["s0"], "s1": ["s1"]}, {"time": 1.0}, 4010.0, True)
    assert data.time_varying
    for k in range(data.slots):
        lo = k * data.slot_seconds
        hi = min((k + 1) * data.slot_seconds, 4010.0)
        for t in (lo, (lo + hi) / 2, hi):
            assert data.carbon["s1", "green", k] >= model.carbon_kg("s1", "green", t) - 1e-12


def test_a_workflow_longer_than_the_forecast_horizon_is_planned_not_handed_to_a_heuristic() -> None:
    # 4 steps of 10 h each (40 h) on a twin view of 24 one-hour slots. The old grid indexed at
    # most 24 slots from t0, so every step had to start in the first 24 h: infeasible, and the
    # plan silently came from HEFT
    fed = pair()
    wf = Workflow.from_dict(
        {
            "name": "long",
            "steps": [
                {"id": f"s{i}", "work": 36000.0, "after": [f"s{i - 1}"] if i else []}
                for i in range(4)
            ],
        }
    )
    view = static_view(fed, horizon=24)
    cheap = Forecast(mean=tuple(100.0 + 300.0 * (k % 2) for k in range(24)), std=(0.0,) * 24)
    view["green"] = view["green"].model_copy(update={"carbon_intensity": cheap})
    c = PlanningConstraints(deadline=60 * 3600.0)
    model = CostModel(wf, fed, view, c)
    K, L = slot_grid(model, c, 60 * 3600.0)
    assert K * L >= 60 * 3600.0
    assert c.max_slots >= K
    for engine in ("milp", "auto"):
        plan = checked(
            make_planner("ilp", ILPSettings(time_limit=10.0, engine=engine)).plan(
                wf, fed, view, c, Objective.parse("carbon")
            ),
            wf,
            fed,
            view,
            c,
        )
        assert not plan.metrics.status.startswith("fallback"), plan.metrics
        assert max(a.end for a in plan.assignments.values()) > 24 * 3600.0
        heft = make_planner("heft").plan(wf, fed, view, c, Objective.parse("carbon"))
        assert plan.metrics.carbon_kg <= heft.metrics.carbon_kg + 1e-12


def capacity_bound() -> tuple[Federation, Workflow, SiteView]:
    """Two 2-core sites, ``fast`` twice as fast as ``slow``; 6 independent 2-core steps of
    400 core-s and one 1-core step: HEFT's earliest-finish choices queue on ``fast``."""
    doc: dict[str, Any] = pair().to_dict()
    for s, speed in zip(doc["sites"], (1.0, 2.0), strict=True):
        s["cores"], s["speed"] = 2, speed
    doc["sites"][0]["id"], doc["sites"][1]["id"] = "slow", "fast"
    doc["links"] = [
        {"src": "slow", "dst": "fast", "bandwidth": 1e9, "latency": 0.0},
        {"src": "fast", "dst": "slow", "bandwidth": 1e9, "latency": 0.0},
    ]
    fed = Federation.from_dict(doc)
    steps = [{"id": f"w{i}", "work": 400.0, "cores": 2} for i in range(6)]
    steps.append({"id": "tail", "work": 300.0, "cores": 1})
    wf = Workflow.from_dict({"name": "wide", "steps": steps})
    return fed, wf, static_view(fed)


def test_cpsat_sees_steps_queue_for_cores_and_beats_heft_on_makespan() -> None:
    fed, wf, view = capacity_bound()
    c = PlanningConstraints()
    heft = checked(make_planner("heft").plan(wf, fed, view, c, Objective()), wf, fed, view, c)
    cp = checked(make_planner("cpsat", FAST).plan(wf, fed, view, c, Objective()), wf, fed, view, c)
    opt = checked(make_planner("ilp", FAST).plan(wf, fed, view, c, Objective()), wf, fed, view, c)
    assert cp.metrics.makespan_s < heft.metrics.makespan_s - 1e-6
    assert opt.metrics.makespan_s == pytest.approx(cp.metrics.makespan_s, rel=1e-6)
    assert any(n.startswith("cp-sat: OPTIMAL") for n in opt.notes)


@pytest.mark.parametrize("objective", ["time", "cost", "carbon", "weighted"])
def test_the_optimiser_is_never_worse_than_any_heuristic(objective: str) -> None:
    fed, wf, view = capacity_bound()
    doc = fed.to_dict()
    doc["sites"][1]["carbon_intensity_g_per_kwh"] = 20.0  # the fast site is also green
    fed = Federation.from_dict(doc)
    obj = Objective.parse(objective)
    heft = make_planner("heft").plan(wf, fed, view, PlanningConstraints(), obj)
    for factor in (1.1, 1.5):
        c = PlanningConstraints(deadline=factor * heft.metrics.makespan_s)
        ref = heft.metrics.values()
        opt = checked(make_planner("ilp", FAST).plan(wf, fed, view, c, obj), wf, fed, view, c)
        for name in ("heft", "greedy", "market"):
            h = make_planner(name).plan(wf, fed, view, c, obj)
            assert obj.score(opt.metrics.values(), ref) <= obj.score(h.metrics.values(), ref) + 1e-9


def test_the_incumbent_is_the_best_heuristic_plan_for_the_objective() -> None:
    fed, wf, view = capacity_bound()
    model = CostModel(wf, fed, view, PlanningConstraints())
    obj = Objective.parse("cost")
    inc = incumbents(model, obj)
    best = inc.best(obj)
    assert best is not None
    names = {p.metrics.planner for p in inc.plans}
    assert {"heft", "greedy", "market"} <= names
    assert all(
        obj.score(best.metrics.values(), inc.ref) <= obj.score(p.metrics.values(), inc.ref)
        for p in inc.plans
    )


def test_a_fallback_names_the_heuristic_and_why() -> None:
    # no engine can run (CP-SAT only, with no time at all): the best heuristic plan, said so
    fed, wf, view = capacity_bound()
    settings = ILPSettings(time_limit=0.01, engine="cpsat", improve_seconds=0.0)
    plan = make_planner("ilp", settings).plan(wf, fed, view, PlanningConstraints(), Objective())
    assert plan.metrics.fallback in ("heft", "greedy", "market", "heft+shift")
    assert plan.metrics.status_reason


def test_a_batch_of_workflows_is_planned_together() -> None:
    # two workflows with zero-length steps (ties in the CP-SAT hint's order) share the sites
    from orchestrator.placement import merge_workflows, split_plan_sites

    fed, wf, view = capacity_bound()
    zero = Workflow.from_dict(
        {
            "name": "zero",
            "data": [{"id": "x", "size": 1.0}],
            "steps": [
                {"id": "z", "work": 0.0, "outputs": ["x"]},  # sorts after its child
                {"id": "b", "work": 0.0, "inputs": ["x"]},
                {"id": "c", "work": 100.0, "after": ["b"]},
            ],
        }
    )
    batch = merge_workflows([wf, zero], "two")
    assert len(batch) == len(wf) + len(zero)
    assert batch.parents("1.b") == ("1.z",)
    c = PlanningConstraints()
    for name in ("cpsat", "ilp"):
        plan = checked(
            make_planner(name, FAST).plan(batch, fed, view, c, Objective()), batch, fed, view, c
        )
        parts = split_plan_sites({s: a.site for s, a in plan.assignments.items()}, 2)
        assert set(parts[0]) == {s.id for s in wf.steps}
        assert set(parts[1]) == {"z", "b", "c"}
    with pytest.raises(ValueError, match="at least one"):
        merge_workflows([])


def test_a_solution_whose_held_starts_break_the_deadline_is_laid_out_early_instead() -> None:
    # An engine's starts that, held, end past the deadline (its rounded durations, or a
    # start moved to a cheap hour too late) are laid out as early as the pools allow, in
    # the same order and on the same sites, rather than thrown away for a heuristic's plan.
    from orchestrator.placement.planners.cpsat import decode

    fed, wf = pair(), two_step_chain()
    view = green_then_dirty(fed)
    c = PlanningConstraints(deadline=4500.0)
    model = CostModel(wf, fed, view, c)
    objective = Objective.parse("carbon")
    ref = incumbents(model, objective, 0.0).ref
    sites = {"s0": "green", "s1": "steady"}
    late = {"s0": 0.0, "s1": 2600.0}  # held: s1 ends at 4,600 s, past the deadline
    plan = decode(model, objective, ref, sites, late, hold_starts=True)
    assert plan is not None
    checked(plan, wf, fed, view, c)
    assert (plan.site_of("s0"), plan.site_of("s1")) == ("green", "steady")
    assert plan.metrics.makespan_s <= 4500.0
    on_time = decode(model, objective, ref, sites, {"s0": 0.0, "s1": 2001.0}, hold_starts=True)
    assert on_time is not None
    assert on_time.assignments["s1"].start >= 2001.0  # a start that keeps the limits is held


def test_cpsat_models_a_varying_series_only_where_the_objective_weighs_it() -> None:
    """``green``'s carbon varies in time: CP-SAT needs its linear pieces for ``carbon``,
    not for the makespan alone, nor for the cost (its price is constant)."""
    from orchestrator.placement.planners.cpsat import _varying_sites

    fed = pair()
    view = green_then_dirty(fed)
    model = CostModel(two_step_chain(), fed, view, PlanningConstraints())
    assert _varying_sites(model) == {"green"}
    assert _varying_sites(model, price=False, carbon=True) == {"green"}
    assert _varying_sites(model, price=True, carbon=False) == set()
    assert _varying_sites(model, price=False, carbon=False) == set()
    # and the makespan planned over it is the same as over a constant series
    c = PlanningConstraints()
    flat = static_view(fed, horizon=24, slot_seconds=2500.0)
    for v in (view, flat):
        plan = checked(
            make_planner("cpsat", ILPSettings(time_limit=5.0)).plan(
                two_step_chain(), fed, v, c, Objective.parse("time")
            ),
            two_step_chain(),
            fed,
            v,
            c,
        )
        assert plan.metrics.makespan_s == pytest.approx(4000.0)


def chain(n: int, work: float = 100.0) -> Workflow:
    """``n`` steps in a row, each passing a byte to the next."""
    return Workflow.from_dict(
        {
            "name": f"chain-{n}",
            "data": [{"id": f"d{i}", "size": 1.0} for i in range(n - 1)],
            "steps": [
                {
                    "id": f"s{i}",
                    "work": work,
                    **({"inputs": [f"d{i - 1}"]} if i else {}),
                    **({"outputs": [f"d{i}"]} if i < n - 1 else {}),
                }
                for i in range(n)
            ],
        }
    )


def test_the_time_limit_by_default_grows_with_the_workflow() -> None:
    """Without a time limit the optimiser (and the ``cpsat`` planner) takes 20 s up to 200
    steps, then 0.1 s per step up to 60 s; a limit given is kept whatever the size. The
    limit reaches the planner: its progress says which it took (a chain of 250 steps, which
    CP-SAT proves optimal at once, so the test does not wait for the limit)."""
    from orchestrator.placement.planners.common import auto_time_limit
    from orchestrator.placement.planners.cpsat import CPSATSettings
    from orchestrator.placement.planners.ilp import ILPPlanner

    assert [auto_time_limit(n) for n in (1, 200, 250, 472, 600, 1001)] == pytest.approx(
        [20.0, 20.0, 25.0, 47.2, 60.0, 60.0]
    )
    assert ILPSettings().limit_for(619) == 60.0
    assert ILPSettings(time_limit=7.0).limit_for(1001) == 7.0
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="time_limit"):
            ILPSettings(time_limit=bad)
        with pytest.raises(ValueError, match="time_limit"):
            CPSATSettings(time_limit=bad)
    fed = pair()
    view = static_view(fed)
    c = PlanningConstraints()
    for n, given, said in (
        (250, None, "time limit 25 s (by size: 250 steps)"),
        (250, 9.0, "time limit 9 s"),
        (30, None, "time limit 20 s (by size: 30 steps)"),
    ):
        wf = chain(n)
        lines: list[str] = []
        planner = ILPPlanner(ILPSettings(time_limit=given, lns_only_steps=None), lines.append)
        plan = checked(planner.plan(wf, fed, view, c, Objective.parse("time")), wf, fed, view, c)
        assert said in lines
        assert any(note.startswith("cp-sat: OPTIMAL") for note in plan.notes), plan.notes
    lines = []
    make_planner("cpsat", ILPSettings(), lines.append).plan(
        chain(250), fed, view, c, Objective.parse("time")
    )
    assert any("250 steps x 2 sites, limit 25 s" in line for line in lines), lines
