"""Every planner on small cases solved by hand, on shared WfCommons instances, and on
random DAGs; the independent checker runs on every plan."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from datalogistics.flows import Flow
from federation.model import Federation
from orchestrator import (
    HEFTPlanner,
    ILPPlanner,
    ILPSettings,
    InfeasiblePlan,
    Objective,
    Plan,
    PlanningConstraints,
    Workflow,
    check_plan,
    load_workflow,
    make_planner,
)
from orchestrator.placement.costs import CostModel
from orchestrator.placement.planners.milp_data import group_steps
from tests.conftest import shared_path
from tests.orchestrator.test_placement_costs import chain, two_sites
from twin.state import Forecast, SiteView, static_view

ALL = ("heft", "greedy", "ilp", "market")
FAST = ILPSettings(time_limit=10.0)


def planned(
    name: str,
    wf: Workflow,
    fed: Federation,
    view: SiteView,
    constraints: PlanningConstraints,
    objective: Objective,
    ilp: ILPSettings = FAST,
) -> Plan:
    plan = make_planner(name, ilp).plan(wf, fed, view, constraints, objective)
    assert check_plan(plan, wf, fed, view, constraints) == []
    return plan


def test_ilp_finds_the_hand_computed_optimum_of_a_two_site_chain() -> None:
    # s0 -> s1, 10 core-s each, 10 MB between them at 1 MB/s:
    # both on fast: 5 + 5 = 10 s; both on slow: 20 s; split: >= 5 + 10 + 10 s
    fed, wf = two_sites(), chain(2, work=10.0, size=1e7)
    view = static_view(fed)
    plan = planned("ilp", wf, fed, view, PlanningConstraints(), Objective.parse("time"))
    assert plan.metrics.makespan_s == pytest.approx(10.0)
    assert {a.site for a in plan.assignments.values()} == {"fast"}
    assert plan.metrics.status == "optimal"
    assert plan.metrics.gap == pytest.approx(0.0, abs=1e-6)


def test_epsilon_mode_minimises_carbon_within_the_deadline() -> None:
    fed, wf = two_sites(), chain(2, work=10.0, size=1e7)
    view = static_view(fed)
    green = Objective.parse("carbon")
    loose = planned("ilp", wf, fed, view, PlanningConstraints(deadline=25.0), green)
    assert {a.site for a in loose.assignments.values()} == {"slow"}  # 10 g/kWh beats 1000
    assert loose.metrics.makespan_s == pytest.approx(20.0)
    tight = planned("ilp", wf, fed, view, PlanningConstraints(deadline=12.0), green)
    assert {a.site for a in tight.assignments.values()} == {"fast"}
    assert tight.metrics.carbon_kg > loose.metrics.carbon_kg
    with pytest.raises(InfeasiblePlan):
        make_planner("ilp", FAST).plan(wf, fed, view, PlanningConstraints(deadline=9.0), green)


def test_budget_is_a_hard_limit() -> None:
    doc = two_sites().to_dict()
    doc["sites"][1]["price_per_core_hour"] = 2.0  # fast is now the dear site
    fed, wf = Federation.from_dict(doc), chain(2, work=3600.0, size=1.0)
    view = static_view(fed)
    fast = planned("ilp", wf, fed, view, PlanningConstraints(), Objective.parse("time"))
    budget = fast.metrics.cost_eur * 0.8
    capped = planned("ilp", wf, fed, view, PlanningConstraints(budget=budget), Objective())
    assert capped.metrics.cost_eur <= budget
    with pytest.raises(InfeasiblePlan):
        HEFTPlanner().plan(wf, fed, view, PlanningConstraints(budget=budget), Objective())


def test_cbc_fallback_reaches_the_same_optimum_as_highs() -> None:
    fed, wf = two_sites(), chain(3, work=10.0, size=2e6)
    view = static_view(fed)
    for obj in ("time", "carbon"):
        c = PlanningConstraints(deadline=40.0)
        h = planned("ilp", wf, fed, view, c, Objective.parse(obj))
        b = planned("ilp", wf, fed, view, c, Objective.parse(obj), ILPSettings(solver="cbc"))
        assert b.metrics.objective_value == pytest.approx(h.metrics.objective_value, rel=1e-6)


def test_data_pinned_to_a_jurisdiction_pins_its_steps() -> None:
    fed = two_sites()
    wf = Workflow.from_dict(
        {
            "name": "pinned",
            "data": [
                {"id": "raw", "size": 1e6, "allowed_jurisdictions": ["FR"]},
                {"id": "out", "size": 10},
            ],
            "steps": [
                {"id": "ingest", "work": 100, "outputs": ["raw"]},
                {"id": "reduce", "work": 100, "inputs": ["raw"], "outputs": ["out"]},
                {"id": "publish", "work": 100, "inputs": ["out"]},
            ],
        }
    )
    view = static_view(fed)
    for name in ALL:
        plan = planned(name, wf, fed, view, PlanningConstraints(), Objective.parse("time"))
        assert plan.site_of("ingest") == plan.site_of("reduce") == "slow"
        assert plan.site_of("publish") == "fast"  # twice as fast, and 'out' is tiny
        assert "may reside only in FR" in plan.assignments["reduce"].why


def test_extra_eligibility_from_a_data_project_plan_is_obeyed() -> None:
    fed, wf = two_sites(), chain(2)
    view = static_view(fed)
    c = PlanningConstraints(eligible={"s0": ("FR",), "s1": ("slow",)})
    for name in ALL:
        plan = planned(name, wf, fed, view, c, Objective.parse("time"))
        assert plan.site_of("s0") == plan.site_of("s1") == "slow"


def test_unlinked_sites_cannot_carry_data_edges() -> None:
    fed = two_sites(links=[])
    wf = chain(2, size=1e6, constraints={"sites": ["slow", "fast"]})
    view = static_view(fed)
    pinned = Workflow.from_dict(
        {
            "name": "split",
            "data": [{"id": "d", "size": 10}],
            "steps": [
                {"id": "a", "work": 1, "outputs": ["d"], "constraints": {"sites": ["slow"]}},
                {"id": "b", "work": 1, "inputs": ["d"], "constraints": {"sites": ["fast"]}},
            ],
        }
    )
    for name in ALL:
        plan = planned(name, wf, fed, view, PlanningConstraints(), Objective.parse("time"))
        assert plan.site_of("s0") == plan.site_of("s1")
        with pytest.raises(InfeasiblePlan):
            make_planner(name, FAST).plan(
                pinned, fed, view, PlanningConstraints(), Objective.parse("time")
            )


def test_flows_follow_the_shared_buffer_rule() -> None:
    fed = two_sites()
    wf = Workflow.from_dict(
        {
            "name": "fan",
            "data": [{"id": "x", "size": 1e6}],
            "steps": [
                {"id": "p", "work": 10, "outputs": ["x"], "constraints": {"sites": ["slow"]}},
                {"id": "c1", "work": 10, "inputs": ["x"], "constraints": {"sites": ["fast"]}},
                {"id": "c2", "work": 40, "inputs": ["x"], "constraints": {"sites": ["fast"]}},
            ],
        }
    )
    plan = planned("heft", wf, fed, static_view(fed), PlanningConstraints(), Objective())
    flows = plan.flows()
    assert len(flows) == 1  # one item, one destination: moved once for both consumers
    f = flows[0]
    assert isinstance(f, Flow)
    assert (f.src, f.dst, f.size) == ("slow", "fast", 1e6)
    assert f.ready == f.start == plan.assignments["p"].end
    assert f.end == pytest.approx(f.start + 1.0)
    assert f.release == max(plan.assignments["c1"].end, plan.assignments["c2"].end)
    assert f.consumer_start == max(plan.assignments["c1"].start, plan.assignments["c2"].start)
    assert plan.metrics.bytes_moved == 1e6
    assert [t.item for t in plan.transfers] == ["x"]


def test_capacity_forecast_binds_and_plans_queue_for_cores() -> None:
    fed = two_sites()
    wf = Workflow.from_dict(
        {"name": "wide", "steps": [{"id": f"t{i}", "work": 20.0} for i in range(12)]}
    )
    view = static_view(fed, horizon=2)
    for sid in ("slow", "fast"):
        view[sid] = view[sid].model_copy(
            update={"available_cores": Forecast(mean=(3.0, 3.0), std=(0.5, 0.5))}
        )
    for name in ALL:
        plan = planned(name, wf, fed, view, PlanningConstraints(z=2.0), Objective.parse("time"))
        # pools of 2 cores per site: at most 4 steps run at once
        starts = sorted(a.start for a in plan.assignments.values())
        assert starts[4] > 0.0


def test_ilp_group_level_model_and_expansion_stay_valid() -> None:
    fed = two_sites()
    wf = Workflow.from_dict(
        {
            "name": "fork",
            "data": [{"id": f"o{i}", "size": 1e5} for i in range(20)],
            "steps": [
                *(
                    {"id": f"w_{i}", "name": "work", "work": 30.0, "outputs": [f"o{i}"]}
                    for i in range(20)
                ),
                {"id": "join", "work": 5.0, "inputs": [f"o{i}" for i in range(20)]},
            ],
        }
    )
    view = static_view(fed)
    model = CostModel(wf, fed, view, PlanningConstraints())
    groups = group_steps(model, 10)
    assert len(groups) == 2
    assert sorted(len(g) for g in groups.values()) == [1, 20]
    small = ILPSettings(time_limit=10.0, exact_max_steps=5)
    plan = planned("ilp", wf, fed, view, PlanningConstraints(), Objective.parse("time"), small)
    heft = planned("heft", wf, fed, view, PlanningConstraints(), Objective.parse("time"))
    assert plan.metrics.makespan_s <= heft.metrics.makespan_s + 1e-9
    assert plan.metrics.status in ("optimal", "feasible")
    assert plan.metrics.gap is not None
    assert 0.0 <= plan.metrics.gap < 1.0


@pytest.mark.parametrize("objective", ["time", "cost", "energy", "carbon", "weighted"])
def test_every_planner_on_shared_montage_passes_the_checker(
    demo_federation: Federation, objective: str
) -> None:
    wf = load_workflow(shared_path("wfinstances", "montage-chameleon-2mass-005d-001.json"))
    view = static_view(demo_federation)
    plans = {
        n: planned(n, wf, demo_federation, view, PlanningConstraints(), Objective.parse(objective))
        for n in ALL
    }
    # the ILP is warm-started from HEFT: never worse on its own objective
    ref = plans["heft"].metrics.values()
    obj = Objective.parse(objective)
    assert obj.score(plans["ilp"].metrics.values(), ref) <= obj.score(ref, ref) + 1e-9
    for p in plans.values():
        assert all(a.why for a in p.assignments.values())


def test_carbon_cut_of_at_least_20_percent_at_one_and_a_half_heft_makespan(
    demo_federation: Federation,
) -> None:
    wf = load_workflow(shared_path("wfinstances", "epigenomics-chameleon-hep-1seq-100k-001.json"))
    view = static_view(demo_federation)
    heft = planned("heft", wf, demo_federation, view, PlanningConstraints(), Objective())
    c = PlanningConstraints(deadline=1.5 * heft.metrics.makespan_s)
    green = planned("ilp", wf, demo_federation, view, c, Objective.parse("carbon"))
    assert green.metrics.makespan_s <= c.deadline  # type: ignore[operator]
    assert green.metrics.carbon_kg <= 0.8 * heft.metrics.carbon_kg


def test_market_awards_are_explained_and_prices_recorded(demo_federation: Federation) -> None:
    wf = load_workflow(shared_path("wfinstances", "helloworld-forkjoin-10-chameleon.json"))
    view = static_view(demo_federation)
    plan = planned("market", wf, demo_federation, view, PlanningConstraints(), Objective())
    assert all("contract net" in a.why for a in plan.assignments.values())
    assert any("paid to the winning bids" in n for n in plan.notes)


@st.composite
def random_dags(draw: st.DrawFn) -> Workflow:
    n = draw(st.integers(2, 12))
    steps = []
    for i in range(n):
        parents = draw(st.lists(st.integers(0, i - 1), max_size=3, unique=True)) if i else []
        steps.append(
            {
                "id": f"t{i}",
                "work": draw(st.floats(0.0, 500.0)),
                "cores": draw(st.integers(1, 3)),
                "inputs": [f"d{p}" for p in parents],
                "outputs": [f"d{i}"],
            }
        )
    data = [{"id": f"d{i}", "size": draw(st.floats(0.0, 5e7))} for i in range(n)]
    return Workflow.from_dict({"name": "random", "steps": steps, "data": data})


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(wf=random_dags(), objective=st.sampled_from(["time", "carbon", "weighted"]))
def test_random_dags_get_valid_plans_from_every_planner(wf: Workflow, objective: str) -> None:
    fed = two_sites()
    view = static_view(fed)
    obj = Objective.parse(objective)
    heft = planned("heft", wf, fed, view, PlanningConstraints(), obj)
    for name in ("greedy", "market", "ilp"):
        p = planned(name, wf, fed, view, PlanningConstraints(), obj, ILPSettings(time_limit=5.0))
        if name == "ilp":
            ref = heft.metrics.values()
            assert obj.score(p.metrics.values(), ref) <= obj.score(ref, ref) + 1e-9


def test_buffers_too_small_for_an_item_keep_its_consumer_home() -> None:
    doc = two_sites().to_dict()
    doc["sites"][1]["buffer_capacity"] = 1000  # bytes at fast
    fed = Federation.from_dict(doc)
    wf = Workflow.from_dict(
        {
            "name": "big-item",
            "data": [{"id": "x", "size": 1e6}, {"id": "y", "size": 10}],
            "steps": [
                {"id": "a", "work": 1, "outputs": ["x", "y"], "constraints": {"sites": ["slow"]}},
                {"id": "b", "work": 1000, "inputs": ["x"]},  # 2x faster on fast, but x is 1 MB
                {"id": "c", "work": 3000, "inputs": ["y"]},  # y (10 B) fits: c goes to fast
            ],
        }
    )
    view = static_view(fed)
    for name in ALL:
        plan = planned(name, wf, fed, view, PlanningConstraints(), Objective.parse("time"))
        assert plan.site_of("b") == "slow"
        assert plan.site_of("c") == "fast"


def test_local_search_walks_the_critical_chain() -> None:
    from orchestrator.placement.improve import critical_chain, improve

    fed, wf = two_sites(), chain(4, work=10.0, size=1.0)
    view = static_view(fed)
    model = CostModel(wf, fed, view, PlanningConstraints())
    # a poor start: everything on the slow site
    t, placed = 0.0, {}
    for s in ("s0", "s1", "s2", "s3"):
        placed[s] = ("slow", t, t + 10.0)
        t += 10.0
    assert critical_chain(model, placed, {}) == ["s3", "s2", "s1", "s0"]
    obj = Objective.parse("time")
    better, _, moves = improve(model, placed, {}, obj, {"time": 40.0}, PlanningConstraints(), 5.0)
    assert moves >= 1
    assert max(e for _, _, e in better.values()) < 40.0


def test_ilp_reports_its_phases_and_the_solver_verdict() -> None:
    fed, wf = two_sites(), chain(3)
    said: list[str] = []
    planner = ILPPlanner(ILPSettings(time_limit=5.0, engine="milp"), progress=said.append)
    plan = planner.plan(wf, fed, static_view(fed), PlanningConstraints(), Objective())
    assert said[:2] == ["time limit 5 s", "incumbent: HEFT, greedy, market"]
    assert any(s.startswith("solving with HIGHS") for s in said)
    assert planner.last_solve is not None
    assert planner.last_solve.status == "Optimal"
    assert any("solver highs: Optimal" in n for n in plan.notes)
