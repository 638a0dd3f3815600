"""The makespan under a budget: a hand-checked instance where the budget binds.

Two sites of one core each, no energy price: ``fast`` (speed 2, 2 EUR per core-hour) and
``cheap`` (speed 1, 0.1 EUR per core-hour). Four independent steps of 4, 3, 2 and 1 units
of work (a unit: 3,600 core-seconds at speed 1). A set of ``F`` units on ``fast`` runs
``F / 2`` hours there and costs ``F`` EUR; the other ``10 - F`` run ``10 - F`` hours on
``cheap`` for ``0.1 (10 - F)`` EUR. So a plan costs ``1 + 0.9 F`` and lasts
``max(F / 2, 10 - F)`` hours:

* without a budget the best is ``F = 7`` ({4, 3} or {4, 2, 1} on fast): 3.5 h, 7.3 EUR;
* under ``B = 5.5`` EUR, ``F <= 5``, and ``F = 5`` ({4, 1} or {3, 2}) gives 5 h (18,000 s)
  at exactly 5.5 EUR (``F = 4``: 6 h): the optimum under the budget is 18,000 s.

HEFT (3.5 h, 7.3 EUR) breaks the budget; greedy and the market meet it only by weighting
the cost of every step alike, which sends everything to ``cheap`` (10 h). The budget-paced
list scheduler spends the spare budget on the first steps of the upward-rank order and
finds the optimum.
"""

from __future__ import annotations

import pytest

from federation.model import Federation
from orchestrator import (
    ILPSettings,
    Objective,
    PlanningConstraints,
    Workflow,
    check_plan,
    make_planner,
)
from orchestrator.placement.costs import CostModel
from orchestrator.placement.improve import improve
from orchestrator.placement.planners.budgeted import budget_paced
from orchestrator.placement.planners.descent import slack_descent
from orchestrator.placement.planners.heft import HEFTPlanner
from orchestrator.placement.planners.incumbent import incumbents
from twin.state import static_view

UNIT = 3600.0
BUDGET = 5.5
OPTIMUM = 5 * UNIT


def fast_and_cheap(cheap_cores: int = 1, fast_cores: int = 1) -> Federation:
    def site(sid: str, speed: float, price: float, cores: int = 1) -> dict[str, object]:
        return {
            "id": sid,
            "kind": "hpc",
            "cores": cores,
            "memory": "4 GB",
            "speed": speed,
            "power_idle_w": 1.0,
            "power_busy_w": 1.0,
            "price_per_core_hour": price,
            "jurisdiction": "FR",
            "buffer_capacity": "1 TB",
            "carbon_intensity_g_per_kwh": 100.0,
            "energy_price_eur_per_kwh": 0.0,
        }

    return Federation.from_dict(
        {
            "name": "fast-and-cheap",
            "sites": [site("fast", 2.0, 2.0, fast_cores), site("cheap", 1.0, 0.1, cheap_cores)],
            "links": [{"src": "fast", "dst": "cheap", "bandwidth": 1e9, "symmetric": True}],
        }
    )


def four_steps() -> Workflow:
    return Workflow.from_dict(
        {
            "name": "four",
            "steps": [{"id": f"w{k}", "work": k * UNIT} for k in (4, 3, 2, 1)],
        }
    )


def test_the_hand_checked_instance_is_what_the_docstring_says() -> None:
    fed, wf = fast_and_cheap(), four_steps()
    view = static_view(fed)
    heft = make_planner("heft").plan(wf, fed, view, PlanningConstraints(), Objective.parse("time"))
    assert heft.metrics.makespan_s == 3.5 * UNIT
    assert abs(heft.metrics.cost_eur - 7.3) < 1e-9
    greedy = make_planner("greedy").plan(
        wf, fed, view, PlanningConstraints(budget=BUDGET), Objective.parse("time")
    )
    assert greedy.metrics.makespan_s > OPTIMUM  # the uniform cost weight: far from it


def test_the_budget_paced_scheduler_spends_the_budget_where_it_shortens_the_plan() -> None:
    fed, wf = fast_and_cheap(), four_steps()
    c = PlanningConstraints(budget=BUDGET)
    model = CostModel(wf, fed, static_view(fed), c)
    plan = budget_paced(model, Objective.parse("time"), float("inf"))
    assert plan.metrics.makespan_s == OPTIMUM
    assert plan.metrics.cost_eur <= BUDGET + 1e-9
    best = incumbents(model, Objective.parse("time")).best(Objective.parse("time"))
    assert best is not None
    assert best.metrics.makespan_s == OPTIMUM


def test_the_optimiser_reaches_the_optimum_under_the_budget() -> None:
    fed, wf = fast_and_cheap(), four_steps()
    view = static_view(fed)
    c = PlanningConstraints(budget=BUDGET)
    plan = make_planner("ilp", ILPSettings(time_limit=10.0)).plan(
        wf, fed, view, c, Objective.parse("time")
    )
    assert check_plan(plan, wf, fed, view, c) == []
    assert plan.metrics.makespan_s == OPTIMUM
    assert plan.metrics.cost_eur <= BUDGET + 1e-9
    on_fast = {s for s, a in plan.assignments.items() if a.site == "fast"}
    assert on_fast in ({"w4", "w1"}, {"w3", "w2"})


def test_the_local_search_pays_for_a_faster_site_with_a_step_that_has_slack() -> None:
    """``cheap`` has two cores here; a chain ``a -> b`` and a step ``c``, one unit each.
    With ``F`` units on ``fast`` a plan costs ``0.3 + 0.9 F``: the budget 1.25 allows one.
    The start puts ``c`` on ``fast`` (2 h: the chain runs on ``cheap``); the optimum puts a
    step of the chain there and ``c`` on ``cheap``'s second core (1.5 h, 1.2 EUR). Moving
    ``b`` alone to ``fast`` breaks the budget and moving ``a`` queues it behind ``c``: only
    the move paid for by ``c`` (it has an hour of slack) reaches the optimum."""
    fed = fast_and_cheap(cheap_cores=2)
    wf = Workflow.from_dict(
        {
            "name": "chain-and-one",
            "data": [{"id": "d", "size": 1.0}],
            "steps": [
                {"id": "a", "work": UNIT, "outputs": ["d"]},
                {"id": "b", "work": UNIT, "inputs": ["d"]},
                {"id": "c", "work": UNIT},
            ],
        }
    )
    c = PlanningConstraints(budget=1.25)
    model = CostModel(wf, fed, static_view(fed), c)
    start = {
        "a": ("cheap", 0.0, UNIT),
        "b": ("cheap", UNIT, 2 * UNIT),
        "c": ("fast", 0.0, UNIT / 2),
    }
    time = Objective.parse("time")
    ref = {"time": 2 * UNIT, "cost": 1.2, "energy": 1.0, "carbon": 1.0}
    placed, booked, moves = improve(model, start, {}, time, ref, c, 10.0)
    values = model.evaluate(placed, model.flows(placed, booked))
    assert moves >= 1
    assert abs(values["time"] - 1.5 * UNIT) < 1e-3  # (a byte crosses the link)
    assert values["cost"] <= 1.25
    assert placed["c"][0] == "cheap"


def test_slack_descent_moves_the_step_with_slack_to_the_cheaper_site() -> None:
    """``fast`` and ``cheap`` with two cores each; steps ``a`` (2 units) and ``c`` (1 unit),
    independent. HEFT puts both on ``fast`` (1 h, 2 + 1 = 3 EUR). Under a deadline of
    1.1 h and the cost objective, ``c`` fits on ``cheap`` (1 h, 0.1 EUR) and ``a`` does
    not (2 h): the optimum is 2.1 EUR, which the descent from HEFT's plan reaches."""
    fed = fast_and_cheap(cheap_cores=2, fast_cores=2)
    wf = Workflow.from_dict(
        {"name": "two", "steps": [{"id": "a", "work": 2 * UNIT}, {"id": "c", "work": UNIT}]}
    )
    c = PlanningConstraints(deadline=1.1 * UNIT)
    model = CostModel(wf, fed, static_view(fed), c)
    cost = Objective.parse("cost")
    heft = HEFTPlanner(explain=False).plan_model(model, cost, 0.0)
    assert {s: a.site for s, a in heft.assignments.items()} == {"a": "fast", "c": "fast"}
    plan = slack_descent(model, cost, heft, heft.metrics.values())
    assert {s: a.site for s, a in plan.assignments.items()} == {"a": "fast", "c": "cheap"}
    assert abs(plan.metrics.cost_eur - 2.1) < 1e-9
    assert plan.metrics.makespan_s <= 1.1 * UNIT


@pytest.mark.parametrize("name", ["search_share", "descent_share"])
@pytest.mark.parametrize("share", [-0.1, 1.0])
def test_the_shares_of_the_starts_must_be_fractions_below_one(name: str, share: float) -> None:
    with pytest.raises(ValueError, match=name):
        ILPSettings(**{name: share})  # type: ignore[arg-type]


def test_the_starts_are_not_explained_but_the_optimisers_plan_is() -> None:
    """The optimiser's starts (HEFT, greedy, the market...) skip their per-step explanations
    (time the engines get on large instances); the plan it returns explains every step."""
    fed, wf = fast_and_cheap(), four_steps()
    view = static_view(fed)
    c = PlanningConstraints(deadline=12 * UNIT)
    model = CostModel(wf, fed, view, c)
    starts = incumbents(model, Objective.parse("cost"))
    assert {"greedy", "market"} <= {p.metrics.planner for p in starts.plans}
    for p in starts.plans:
        assert all(a.why == "" for a in p.assignments.values()), p.metrics.planner
    plan = make_planner("ilp", ILPSettings(time_limit=2.0)).plan(
        wf, fed, view, c, Objective.parse("cost")
    )
    assert all(a.why for a in plan.assignments.values())
    # the planners called on their own still explain
    alone = make_planner("greedy").plan(wf, fed, view, c, Objective.parse("cost"))
    assert all(a.why for a in alone.assignments.values())
