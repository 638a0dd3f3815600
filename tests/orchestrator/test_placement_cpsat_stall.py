"""CP-SAT's neighbourhood search that finds nothing hands the rest of its time over.

On montage-dss-10d (472 steps) carbon at 1.5x HEFT's makespan under a budget, on
two-centres-cloud, neighbourhood search alone (``use_lns_only``) did not improve the
incumbent in 8 s of 20 in most runs, while CP-SAT's default portfolio, whose LP solutions
guide its RINS neighbourhoods, found plans 12 % lower in carbon. With ``lns_stall_share``
the search stops when it has found nothing better than the hint by that share of its time
and the default portfolio gets the rest, from the same hint.
"""

from __future__ import annotations

from typing import Any

import pytest

import benchmarks.bench_placement as bench
from federation.model import load_federation
from orchestrator import PlanningConstraints, check_plan, load_workflow
from orchestrator.placement.costs import CostModel
from orchestrator.placement.plan import Objective
from orchestrator.placement.planners.cpsat import CPSATSettings, solve_cpsat
from orchestrator.placement.planners.incumbent import incumbents
from tests.conftest import shared_path


@pytest.fixture
def solves(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """``use_lns_only`` of every solve that reaches the real solver."""
    from ortools.sat.python import cp_model

    seen: list[bool] = []
    solve = cp_model.CpSolver.solve

    def spy(self: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(bool(self.parameters.use_lns_only))
        return solve(self, *args, **kwargs)

    monkeypatch.setattr(cp_model.CpSolver, "solve", spy)
    return seen


@pytest.fixture(scope="module")
def dss() -> tuple[Any, ...]:
    wf = load_workflow(shared_path("wfinstances", "montage-chameleon-dss-10d-001.json"))
    fed = load_federation(bench.REPO / "examples" / "federations" / "two-centres-cloud.yaml")
    shared_path("energy")
    view = bench.hourly_view(fed)
    heft = bench.run("heft", wf, fed, view, PlanningConstraints(), "time").plan
    assert heft is not None
    deadline = 1.5 * heft.metrics.makespan_s
    budget = bench.budget_of(wf, fed, view, heft, deadline)
    return wf, fed, view, deadline, budget


def test_a_search_that_finds_nothing_gives_the_rest_to_the_default_portfolio(
    dss: tuple[Any, ...], solves: list[bool]
) -> None:
    wf, fed, view, deadline, budget = dss
    c = PlanningConstraints(deadline=deadline, budget=budget)
    model = CostModel(wf, fed, view, c)
    obj = Objective.parse("carbon")
    inc = incumbents(model, obj)
    hint = inc.best(obj)
    assert hint is not None
    cfg = CPSATSettings(
        time_limit=8.0, lns_only_steps=150, lns_deterministic_limit=0.03, lns_stall_share=0.4
    )
    res = solve_cpsat(model, obj, inc.ref, hint, cfg)
    assert res.lns_only
    assert res.stalled_s is not None, "no stall: a gain within 3.2 s, or the hint not in by then"
    assert res.stalled_s >= 3.1
    assert solves[-2:] == [True, False]  # the same model solved again, default portfolio
    assert res.wall_s < 8.0 + 6.0  # the model's building (1 s alone, more under load)
    assert res.plan is not None, res.reason
    assert check_plan(res.plan, wf, fed, view, c) == []
    assert res.plan.metrics.carbon_kg <= hint.metrics.carbon_kg * (1 + 1e-6)


def _from_heft(dss: tuple[Any, ...]) -> tuple[Any, Any]:
    """CP-SAT hinted with HEFT's plan (blind to carbon), carbon under the deadline alone, 6 s
    of which a third before the hand-over: room for the presolve on a loaded machine (CI's 2
    cores under the whole suite took 0.76 s to meet a gain that comes at once when alone).
    The result and the incumbents."""
    wf, fed, view, deadline, _ = dss
    model = CostModel(wf, fed, view, PlanningConstraints(deadline=deadline))
    obj = Objective.parse("carbon")
    inc = incumbents(model, obj)
    cfg = CPSATSettings(
        time_limit=6.0, lns_only_steps=150, lns_deterministic_limit=0.03, lns_stall_share=0.34
    )
    return solve_cpsat(model, obj, inc.ref, inc.heft, cfg), inc


def test_a_search_that_improves_the_hint_is_left_to_run(
    dss: tuple[Any, ...], solves: list[bool]
) -> None:
    """Hinted with HEFT's plan (blind to carbon), neighbourhood search improves at once and
    keeps the whole time: one solve, LNS only."""
    res, inc = _from_heft(dss)
    assert res.lns_only
    assert res.stalled_s is None
    assert solves == [True]
    assert res.plan is not None, res.reason
    assert res.plan.metrics.carbon_kg < inc.heft.metrics.carbon_kg


def test_the_optimiser_hands_over_and_says_so(dss: tuple[Any, ...], solves: list[bool]) -> None:
    from orchestrator import ILPSettings, make_planner

    wf, fed, view, deadline, budget = dss
    c = PlanningConstraints(deadline=deadline, budget=budget)
    assert ILPSettings().lns_stall_share == 0.25
    # 16 s: the starts took 6 s of 8 under the whole suite on CI's 2 cores, leaving CP-SAT
    # no time to meet its hint
    plan = make_planner("ilp", ILPSettings(time_limit=16.0, lns_stall_share=0.2)).plan(
        wf, fed, view, c, Objective.parse("carbon")
    )
    notes = [n for n in plan.notes if n.startswith("cp-sat:")]
    assert len(notes) == 1, plan.notes
    assert "then the default portfolio from" in notes[0], plan.notes
    assert solves[-2:] == [True, False]
    assert check_plan(plan, wf, fed, view, c) == []
    for kind in (ILPSettings, CPSATSettings):
        for bad in (0.0, 1.0):
            with pytest.raises(ValueError, match="lns_stall_share must be in"):
                kind(lns_stall_share=bad)


def test_a_tie_break_is_not_a_gain() -> None:
    """A plan better than the hint by a rounding of its objective does not keep neighbourhood
    search running: on montage-dss-10d carbon at 1.5x on regional-4 the search found one
    better by 1.2e-6 of the objective, then nothing, and never handed over."""
    from orchestrator.placement.planners.cpsat import LNS_GAIN, OBJECTIVE_UNITS, counts_as_gain

    first = OBJECTIVE_UNITS
    assert not counts_as_gain(first, first)
    assert not counts_as_gain(first, first * (1 - 1.2e-6))
    assert not counts_as_gain(first, first * (1 - 0.99 * LNS_GAIN))
    assert counts_as_gain(first, first * (1 - LNS_GAIN))
    assert counts_as_gain(first, first * 0.9)
    # a small objective: a gain is at least one unit
    assert not counts_as_gain(3.0, 2.5)
    assert counts_as_gain(3.0, 2.0)


def test_gains_below_the_threshold_do_not_hold_back_the_hand_over(
    dss: tuple[Any, ...], solves: list[bool], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The search of the test above, which improves HEFT's plan at once, hands over when no
    gain can reach the threshold: the watch judges gains by ``LNS_GAIN``."""
    import orchestrator.placement.planners.cpsat as cpsat

    monkeypatch.setattr(cpsat, "LNS_GAIN", 1.0)  # only a plan of objective 0 would count
    res, inc = _from_heft(dss)
    assert res.lns_only
    assert res.stalled_s is not None
    assert solves == [True, False]
    assert res.plan is not None, res.reason
    assert res.plan.metrics.carbon_kg < inc.heft.metrics.carbon_kg
