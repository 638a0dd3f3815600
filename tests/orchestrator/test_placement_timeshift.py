"""Power-price and carbon time-shifting: steps with slack move to green or cheap slots."""

from __future__ import annotations

import pytest

from orchestrator import Objective, PlanningConstraints, Workflow, check_plan, make_planner
from orchestrator.placement.costs import CostModel
from orchestrator.placement.planners import ILPSettings
from orchestrator.placement.timeshift import timeshift
from tests.orchestrator.test_placement_costs import two_sites
from twin.state import Forecast, SiteView, static_view


def dirty_then_clean(price: bool = False) -> tuple[SiteView, Workflow]:
    """Slots of 600 s at slow: 500 g/kWh (or 0.5 EUR/kWh) for 20 min, then 50 (0.05)."""
    fed = two_sites()
    view = static_view(fed, horizon=8, slot_seconds=600.0)
    series = Forecast(mean=(500.0, 500.0) + (50.0,) * 6, std=(0.0,) * 8)
    key = "carbon_intensity" if not price else "power_price"
    if price:
        series = Forecast(mean=(0.5, 0.5) + (0.05,) * 6, std=(0.0,) * 8)
    view["slow"] = view["slow"].model_copy(update={key: series})
    wf = Workflow.from_dict(
        {
            "name": "batch",
            "steps": [
                {"id": f"t{i}", "work": 300.0, "constraints": {"sites": ["slow"]}} for i in range(3)
            ],
        }
    )
    return view, wf


@pytest.mark.parametrize("planner", ["greedy", "ilp", "market"])
def test_steps_with_slack_move_to_the_low_carbon_slots(planner: str) -> None:
    fed = two_sites()
    view, wf = dirty_then_clean()
    c = PlanningConstraints(deadline=3600.0)
    heft = make_planner("heft").plan(wf, fed, view, c, Objective.parse("carbon"))
    plan = make_planner(planner, ILPSettings(time_limit=10)).plan(
        wf, fed, view, c, Objective.parse("carbon")
    )
    assert check_plan(plan, wf, fed, view, c) == []
    assert all(a.start >= 1200.0 for a in plan.assignments.values())
    assert plan.metrics.carbon_kg == pytest.approx(heft.metrics.carbon_kg / 10)
    assert plan.metrics.makespan_s <= 3600.0


def test_power_price_shifting_lowers_cost_and_keeps_the_deadline() -> None:
    fed = two_sites()
    view, wf = dirty_then_clean(price=True)
    c = PlanningConstraints(deadline=1500.0)
    model = CostModel(wf, fed, view, c)
    placed = {s.id: ("slow", 0.0, 300.0) for s in wf.steps}
    shifted, _, n = timeshift(model, placed, Objective.parse("cost"), c.deadline)
    assert n == 3
    assert all(start >= 1200.0 and end <= 1500.0 for _, start, end in shifted.values())
    before = model.evaluate(placed, model.flows(placed))["cost"]
    after = model.evaluate(shifted, model.flows(shifted))["cost"]
    assert after < before


def test_flat_forecasts_and_time_objectives_leave_plans_alone() -> None:
    fed = two_sites()
    view, wf = dirty_then_clean()
    model = CostModel(wf, fed, view, PlanningConstraints(deadline=3600.0))
    placed = {s.id: ("slow", 0.0, 300.0) for s in wf.steps}
    assert timeshift(model, placed, Objective.parse("time"), 3600.0)[2] == 0
    flat = CostModel(wf, fed, static_view(fed), PlanningConstraints(deadline=3600.0))
    assert timeshift(flat, placed, Objective.parse("carbon"), 3600.0)[2] == 0


def test_cpsat_spends_no_rounding_slack_past_the_deadline() -> None:
    """Three 100-s steps in a chain on the cheap slow site take 300 s; the deadline is 0.05 s
    shorter, so one must run on the dear fast site. The model's horizon carries a tick per
    step of rounding slack past the deadline (so that plans feasible in seconds stay feasible
    in ticks; here 100 steps, 0.1 s), enough for the all-slow chain: CP-SAT used to choose
    it, the decoded plan broke the deadline and was thrown away for a heuristic's (status
    ``fallback``). CP-SAT's own plan must keep the deadline and be the one returned."""
    base = two_sites()
    slow, fast = base.sites
    fed = base.model_copy(
        update={"sites": (slow, fast.model_copy(update={"price_per_core_hour": 2.0}))}
    )
    view = static_view(fed, horizon=2, slot_seconds=600.0)
    chain = [
        {"id": f"t{i}", "work": 400.0, "cores": 4, **({"after": [f"t{i - 1}"]} if i else {})}
        for i in range(3)
    ]
    tiny = [{"id": f"s{i}", "work": 0.01, "constraints": {"sites": ["fast"]}} for i in range(97)]
    wf = Workflow.from_dict({"name": "chain", "steps": chain + tiny})
    c = PlanningConstraints(deadline=299.95)
    for name in ("cpsat", "ilp"):
        plan = make_planner(name, ILPSettings(time_limit=10)).plan(
            wf, fed, view, c, Objective.parse("cost")
        )
        assert check_plan(plan, wf, fed, view, c) == []
        assert not plan.metrics.status.startswith("fallback"), (name, plan.notes)
        assert sorted(plan.site_of(f"t{i}") for i in range(3)) == ["fast", "slow", "slow"]
