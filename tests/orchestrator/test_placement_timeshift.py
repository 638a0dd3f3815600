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
