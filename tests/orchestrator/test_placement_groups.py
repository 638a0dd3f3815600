"""Group moves: a hand-computed instance where no single-step move helps and a group move
reaches the optimum.

Two sites of two cores each, no energy price: ``cloud`` (speed 2, 1 EUR per core-hour)
and ``local`` (speed 1, 0.2 EUR per core-hour), linked both ways at 1 GB/s for 1 EUR per
GB (a paid network: a cloud's egress, a provider's ingress). A chain ``a -> b`` of one unit
of work each (3,600 core-seconds at speed 1); ``a`` writes one item of 1 GB that ``b``
reads.

* HEFT puts both on ``cloud`` (half an hour each): 1 h, ``2 * 0.5 = 1.0`` EUR.
* Moving one step alone to ``local`` saves ``0.5 - 0.2 = 0.3`` EUR of run cost but makes
  the item cross the link: 1 EUR. Either single move costs 1.7 EUR: worse than staying.
* Moving both to ``local``: 2 h (no transfer), ``2 * 0.2 = 0.4`` EUR, the optimum under a
  deadline of 2.5 h (the only other placements are the three above).

The slack descent from HEFT's plan under that deadline finds 0.4 EUR with group moves and
stays at 1.0 EUR with single steps only.
"""

from __future__ import annotations

import pytest

from federation.model import Federation
from orchestrator import Objective, PlanningConstraints, Workflow, check_plan, make_planner
from orchestrator.placement.costs import CostModel
from orchestrator.placement.groups import (
    GROUP_KINDS,
    GroupMove,
    ItemIndex,
    group_effect,
    group_moves,
    placement_values,
)
from orchestrator.placement.improve import improve
from orchestrator.placement.links import transfers_of
from orchestrator.placement.planners.descent import slack_descent
from orchestrator.placement.planners.heft import HEFTPlanner
from twin.state import static_view

UNIT = 3600.0
GB = 1e9
DEADLINE = 2.5 * UNIT
OPTIMUM_EUR = 0.4


def paid_network(cores: int = 2, bandwidth: float = GB) -> Federation:
    def site(sid: str, speed: float, price: float) -> dict[str, object]:
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

    link = {"bandwidth": bandwidth, "latency": 0.0, "cost_per_gb": 1.0}
    return Federation.from_dict(
        {
            "name": "paid-network",
            "sites": [site("cloud", 2.0, 1.0), site("local", 1.0, 0.2)],
            "links": [
                {"src": "cloud", "dst": "local", **link},
                {"src": "local", "dst": "cloud", **link},
            ],
        }
    )


def chain() -> Workflow:
    return Workflow.from_dict(
        {
            "name": "chain",
            "data": [{"id": "x", "size": GB}],
            "steps": [
                {"id": "a", "work": UNIT, "outputs": ["x"]},
                {"id": "b", "work": UNIT, "inputs": ["x"]},
            ],
        }
    )


def fork() -> Workflow:
    """``a`` writes ``x`` (1 GB), read by ``b`` and ``c``: one transfer per destination."""
    return Workflow.from_dict(
        {
            "name": "fork",
            "data": [{"id": "x", "size": GB}],
            "steps": [
                {"id": "a", "work": UNIT, "outputs": ["x"]},
                {"id": "b", "work": UNIT, "inputs": ["x"]},
                {"id": "c", "work": UNIT, "inputs": ["x"]},
            ],
        }
    )


def _model(
    wf: Workflow,
    deadline: float | None = DEADLINE,
    budget: float | None = None,
    bandwidth: float = GB,
) -> tuple[CostModel, Federation]:
    fed = paid_network(bandwidth=bandwidth)
    c = PlanningConstraints(deadline=deadline, budget=budget)
    return CostModel(wf, fed, static_view(fed), c), fed


def test_the_hand_computed_instance_is_what_the_docstring_says() -> None:
    model, _ = _model(chain())
    cost = Objective.parse("cost")
    heft = HEFTPlanner(explain=False).plan_model(model, cost, 0.0)
    assert {a.site for a in heft.assignments.values()} == {"cloud"}
    assert heft.metrics.makespan_s == pytest.approx(UNIT)
    assert heft.metrics.cost_eur == pytest.approx(1.0)
    placed = {s: (a.site, a.start, a.end) for s, a in heft.assignments.items()}
    sites = {s: v[0] for s, v in placed.items()}
    index = ItemIndex(model)
    for step in ("a", "b"):  # either step alone: 0.3 EUR saved, 1 EUR of transfer added
        alone = group_effect(model, placed, sites, index, GroupMove((step,), "local", "single"))
        assert alone.eur == pytest.approx(0.3 - 1.0)
    both = group_effect(model, placed, sites, index, GroupMove(("a", "b"), "local", "level"))
    assert both.eur == pytest.approx(1.0 - OPTIMUM_EUR)


def test_a_group_move_reaches_the_optimum_where_single_moves_cannot() -> None:
    model, fed = _model(chain())
    cost = Objective.parse("cost")
    heft = HEFTPlanner(explain=False).plan_model(model, cost, 0.0)
    ref = heft.metrics.values()
    singles = slack_descent(model, cost, heft, ref, groups=())
    assert singles.metrics.cost_eur == pytest.approx(1.0)  # no single move pays
    plan = slack_descent(model, cost, heft, ref)
    assert plan.metrics.cost_eur == pytest.approx(OPTIMUM_EUR)
    assert {a.site for a in plan.assignments.values()} == {"local"}
    assert plan.metrics.makespan_s <= DEADLINE
    c = PlanningConstraints(deadline=DEADLINE)
    assert check_plan(plan, chain(), fed, static_view(fed), c) == []


def test_the_group_moves_of_the_chain() -> None:
    model, _ = _model(chain())
    sites = {"a": "cloud", "b": "cloud"}
    moves = group_moves(model, sites, ItemIndex(model))
    assert {(m.steps, m.site) for m in moves} == {(("a", "b"), "local")}
    with pytest.raises(ValueError, match="unknown group kind"):
        group_moves(model, sites, ItemIndex(model), ("neighbours",))
    assert set(GROUP_KINDS) == {"consumers", "predecessors", "successors", "level"}


@pytest.mark.parametrize(
    ("sites", "move", "saved"),
    [
        # b joins c on local: x already goes there, so no new transfer (0.3 EUR run cost)
        ({"a": "cloud", "b": "cloud", "c": "local"}, (("b",), "local"), 0.3),
        # b leaves c on cloud for local: x now crosses once (0.3 - 1.0)
        ({"a": "cloud", "b": "cloud", "c": "cloud"}, (("b",), "local"), 0.3 - 1.0),
        # both consumers of x on local back to a's site: one transfer saved, 2 * 0.3 paid
        ({"a": "cloud", "b": "local", "c": "local"}, (("b", "c"), "cloud"), 1.0 - 0.6),
        # the producer to its consumers: the transfer goes, 0.3 saved on a
        ({"a": "cloud", "b": "local", "c": "local"}, (("a",), "local"), 1.0 + 0.3),
    ],
)
def test_the_effect_counts_one_transfer_per_item_and_destination(
    sites: dict[str, str], move: tuple[tuple[str, ...], str], saved: float
) -> None:
    """The EUR saved equals the cost of the plan before less the cost after (no energy
    price: the run cost does not depend on the start)."""
    model, _ = _model(fork(), deadline=None)
    index = ItemIndex(model)

    def placed_on(s: dict[str, str]) -> dict[str, tuple[str, float, float]]:
        out: dict[str, tuple[str, float, float]] = {}
        for step in ("a", "b", "c"):
            out[step] = (s[step], 0.0, model.duration(step, s[step]))
        return out

    before = placed_on(sites)
    after_sites = dict(sites)
    for j in move[0]:
        after_sites[j] = move[1]
    after = placed_on(after_sites)
    e = group_effect(model, before, sites, index, GroupMove(move[0], move[1], "test"))
    cost_before = model.evaluate(before, model.flows(before))["cost"]
    cost_after = model.evaluate(after, model.flows(after))["cost"]
    assert e.eur == pytest.approx(saved)
    assert e.eur == pytest.approx(cost_before - cost_after)


def test_a_group_move_that_breaks_the_slack_does_not_fit() -> None:
    """Under a deadline of 1.5 h both steps on ``local`` (2 h) cannot fit: the descent
    keeps HEFT's plan."""
    model, _ = _model(chain(), deadline=1.5 * UNIT)
    cost = Objective.parse("cost")
    heft = HEFTPlanner(explain=False).plan_model(model, cost, 0.0)
    plan = slack_descent(model, cost, heft, heft.metrics.values())
    assert plan.metrics.cost_eur == pytest.approx(1.0)
    assert plan.metrics.makespan_s <= 1.5 * UNIT


def test_the_local_search_moves_a_step_with_its_parent() -> None:
    """The makespan from both steps on ``local`` (2 h) over a slow link (the item takes
    2 h to cross): ``a`` alone on ``cloud`` gives 0.5 + 2 + 1 = 3.5 h, ``b`` alone 1 + 2 +
    0.5 = 3.5 h, both on ``cloud`` 1 h. Only the pair's move is shorter: the local search
    finds 1 h with group moves and nothing without."""
    model, _ = _model(chain(), deadline=None, bandwidth=GB / (2 * UNIT))
    time_obj = Objective.parse("time")
    placed = {"a": ("local", 0.0, UNIT), "b": ("local", UNIT, 2 * UNIT)}
    ref = {"time": 2 * UNIT, "cost": 0.4, "energy": 1.0, "carbon": 1.0}
    alone, _, moves = improve(model, placed, {}, time_obj, ref, model.constraints, 5.0, False)
    assert moves == 0
    assert max(e for _, _, e in alone.values()) == pytest.approx(2 * UNIT)
    best, booked, moves = improve(model, placed, {}, time_obj, ref, model.constraints, 5.0)
    assert moves >= 1
    assert {v[0] for v in best.values()} == {"cloud"}
    assert max(e for _, _, e in best.values()) == pytest.approx(UNIT)
    assert booked == {}


def test_the_optimiser_is_never_worse_than_the_group_descent() -> None:
    fed = paid_network()
    c = PlanningConstraints(deadline=DEADLINE)
    view = static_view(fed)
    plan = make_planner("ilp").plan(chain(), fed, view, c, Objective.parse("cost"))
    assert plan.metrics.cost_eur == pytest.approx(OPTIMUM_EUR)
    assert check_plan(plan, chain(), fed, view, c) == []
    assert transfers_of(plan) == {}


@pytest.mark.parametrize("sites", ["ccc", "cll", "lcl", "llc", "lll", "clc"])
def test_the_fast_values_are_the_cost_models(sites: str) -> None:
    """``placement_values`` (the descent's score) equals ``CostModel.evaluate`` of the
    list-scheduled placement, transfers included."""
    from orchestrator.placement.schedule import list_schedule, upward_ranks

    model, _ = _model(fork(), deadline=None)
    fixed = {j: {"c": "cloud", "l": "local"}[x] for j, x in zip("abc", sites, strict=True)}
    placed, booked, _ = list_schedule(model, upward_ranks(model), lambda s, o: o[0], fixed)
    fast = placement_values(model, ItemIndex(model), placed)
    full = model.evaluate(placed, model.flows(placed, booked))
    for term in ("time", "cost", "energy", "carbon"):
        assert fast[term] == pytest.approx(full[term])
