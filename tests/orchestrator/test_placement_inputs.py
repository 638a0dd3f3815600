"""External inputs with a location, and sites whose carbon or price is unknown: counted by the
cost model and every planner, recomputed by the checker, reported in the plan."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from federation.model import Federation
from orchestrator import (
    ILPSettings,
    Objective,
    PlanningConstraints,
    PlanningError,
    Workflow,
    check_plan,
    make_planner,
)
from orchestrator.placement.costs import CostModel
from tests.conftest import call_main
from tests.orchestrator.test_placement_costs import two_sites
from twin.state import Forecast, static_view

ALL = ("heft", "greedy", "market", "ilp", "cpsat")
FAST = ILPSettings(time_limit=5.0)


def located(location: dict[str, Any], size: float = 4e6) -> Workflow:
    """One step reading an external input of ``size`` bytes that lives at ``location``."""
    return Workflow.from_dict(
        {
            "name": "ingest",
            "data": [{"id": "raw", "size": size, "location": location}],
            "steps": [{"id": "reduce", "work": 20.0, "inputs": ["raw"]}],
        }
    )


def test_an_input_at_a_site_is_moved_to_its_consumer_and_counted() -> None:
    # raw (4 MB) lives at slow; reduce is 10 s on fast (speed 2) after a 4 s transfer at
    # 1 MB/s, 20 s on slow with no transfer: HEFT and the optimiser take fast (14 s)
    fed, wf = two_sites(), located({"site": "slow", "path": "/archive/raw"})
    view = static_view(fed)
    for name in ALL:
        plan = make_planner(name, FAST).plan(wf, fed, view, PlanningConstraints(), Objective())
        assert check_plan(plan, wf, fed, view, PlanningConstraints()) == [], name
        if name in ("heft", "ilp", "cpsat"):
            assert plan.site_of("reduce") == "fast", name
            assert plan.assignments["reduce"].start == pytest.approx(4.0), name
        flows = plan.flows()
        assert len(flows) == 1
        f = flows[0]
        assert (f.item, f.src, f.dst, f.external) == ("raw", "slow", plan.site_of("reduce"), True)
        if f.crosses_sites:
            assert f.end - f.start == pytest.approx(4.0)
            assert plan.metrics.bytes_moved == 4e6
            assert [t.item for t in plan.transfers] == ["raw"]


def test_an_input_link_cost_is_charged_and_the_source_holds_no_buffer() -> None:
    doc = two_sites().to_dict()
    doc["links"] = [
        {"src": "slow", "dst": "fast", "bandwidth": 1e6, "latency": 0, "cost_per_gb": 100.0},
        {"src": "fast", "dst": "slow", "bandwidth": 1e6, "latency": 0},
    ]
    doc["sites"][0]["buffer_capacity"] = 1000  # slow's buffer cannot hold raw: no matter
    fed = Federation.from_dict(doc)
    wf = located({"site": "slow", "path": "/archive/raw"})
    view = static_view(fed)
    c = PlanningConstraints(eligible={"reduce": ("fast",)})
    plan = make_planner("heft").plan(wf, fed, view, c, Objective())
    assert check_plan(plan, wf, fed, view, c) == []
    model = CostModel(wf, fed, view, c)
    run = model.run_cost("reduce", "fast", plan.assignments["reduce"].start)
    assert plan.metrics.cost_eur == pytest.approx(run + 100.0 * 4e6 / 1e9)


def test_a_site_without_a_link_from_the_input_is_not_eligible() -> None:
    fed = two_sites(links=[])
    wf = located({"site": "slow", "path": "/archive/raw"})
    model = CostModel(wf, fed, static_view(fed), PlanningConstraints())
    assert model.eligible["reduce"] == ("slow",)
    assert model.why_not["reduce"]["fast"] == "input raw lives at slow: no link slow -> fast"
    plan = make_planner("ilp", FAST).plan(
        wf, fed, static_view(fed), PlanningConstraints(), Objective()
    )
    assert plan.site_of("reduce") == "slow"
    assert "no link slow -> fast" in plan.assignments["reduce"].why


def test_a_url_input_counts_its_bytes_with_no_delay_and_no_cost() -> None:
    fed = two_sites()
    wf = located({"url": "https://data.example.org/raw.ms"})
    view = static_view(fed)
    plan = make_planner("heft").plan(wf, fed, view, PlanningConstraints(), Objective())
    assert check_plan(plan, wf, fed, view, PlanningConstraints()) == []
    (f,) = plan.flows()
    assert (f.src, f.dst, f.external) == ("https://data.example.org/raw.ms", "fast", True)
    assert f.start == f.end == 0.0
    assert plan.assignments["reduce"].start == 0.0
    assert plan.metrics.bytes_moved == 4e6
    model = CostModel(wf, fed, view, PlanningConstraints())
    assert plan.metrics.cost_eur == pytest.approx(model.run_cost("reduce", "fast", 0.0))


def test_the_checker_catches_a_consumer_that_starts_before_its_input_arrives() -> None:
    fed, wf = two_sites(), located({"site": "slow", "path": "/archive/raw"})
    view = static_view(fed)
    plan = make_planner("heft").plan(wf, fed, view, PlanningConstraints(), Objective())
    early = dict(plan.assignments)
    early["reduce"] = replace(early["reduce"], start=0.0, end=10.0)
    broken = replace(plan, assignments=early).with_metrics(makespan_s=10.0)
    msgs = check_plan(broken, wf, fed, view, PlanningConstraints())
    assert any("before input raw arrives" in m for m in msgs)
    none = replace(plan, flow_list=()).with_metrics(bytes_moved=0.0)
    msgs = check_plan(none, wf, fed, view, PlanningConstraints())
    assert any("no valid flow slow -> fast" in m for m in msgs)


# -- unknown carbon and prices ---------------------------------------------------------------
def unknown_at(site: str, *, carbon: bool = True, price: bool = False) -> Federation:
    doc = two_sites().to_dict()
    for s in doc["sites"]:
        if s["id"] == site or site == "*":
            if carbon:
                s.pop("carbon_intensity_g_per_kwh")
            if price:
                s.pop("energy_price_eur_per_kwh")
    return Federation.from_dict(doc)


def test_no_silent_default_for_a_site_without_figures() -> None:
    fed = unknown_at("fast", price=True)
    site = next(s for s in fed.sites if s.id == "fast")
    assert site.carbon_intensity_g_per_kwh is None
    assert site.energy_price_eur_per_kwh is None
    assert static_view(fed)["fast"].carbon_intensity is None


def test_an_unknown_carbon_intensity_is_the_highest_known_and_is_reported() -> None:
    # slow is known at 10 g/kWh, fast unknown: fast counts as 10 (the highest known) -- and
    # with a forecast peaking at 40 at slow, as 40
    fed = unknown_at("fast")
    wf = Workflow.from_dict({"name": "one", "steps": [{"id": "t", "work": 20.0}]})
    view = static_view(fed, horizon=2)
    c = PlanningConstraints(eligible={"t": ("fast",)})
    plan = make_planner("heft").plan(wf, fed, view, c, Objective())
    assert plan.metrics.carbon_unknown == ("fast",)
    assert plan.metrics.carbon_kg == pytest.approx(plan.metrics.energy_kwh * 10.0 / 1000)
    assert plan.to_dict()["metrics"]["carbon_unknown_sites"] == ["fast"]
    assert any("assumed 10 gCO2e/kWh" in n for n in plan.notes)
    assert check_plan(plan, wf, fed, view, c) == []
    view["slow"] = view["slow"].model_copy(
        update={"carbon_intensity": Forecast(mean=(5.0, 40.0), std=(0.0, 0.0))}
    )
    plan = make_planner("heft").plan(wf, fed, view, c, Objective())
    assert plan.metrics.carbon_kg == pytest.approx(plan.metrics.energy_kwh * 40.0 / 1000)
    assert check_plan(plan, wf, fed, view, c) == []
    lying = plan.with_metrics(carbon_unknown=())
    assert any("metrics.carbon_unknown" in m for m in check_plan(lying, wf, fed, view, c))


def test_an_unknown_site_is_never_chosen_for_being_green() -> None:
    # fast is twice as fast but its carbon is unknown: counted at slow's 10 g/kWh, it gets no
    # advantage from a silent default (it used to be 300)
    fed = unknown_at("fast")
    doc = fed.to_dict()
    doc["sites"][0]["carbon_intensity_g_per_kwh"] = 100.0
    fed = Federation.from_dict(doc)
    wf = Workflow.from_dict({"name": "one", "steps": [{"id": "t", "work": 20.0}]})
    model = CostModel(wf, fed, static_view(fed), PlanningConstraints())
    assert model.series["fast"].carbon == (100.0,) * 48
    assert model.carbon_unknown == ("fast",)


@pytest.mark.parametrize("name", ALL)
def test_a_carbon_objective_with_nothing_known_is_refused(name: str) -> None:
    fed = unknown_at("*")
    wf = Workflow.from_dict({"name": "one", "steps": [{"id": "t", "work": 20.0}]})
    view = static_view(fed)
    with pytest.raises(PlanningError, match="carbon intensity of every site"):
        make_planner(name, FAST).plan(
            wf, fed, view, PlanningConstraints(), Objective.parse("carbon")
        )
    # other objectives plan, count carbon as 0 and say so
    plan = make_planner(name, FAST).plan(wf, fed, view, PlanningConstraints(), Objective())
    assert plan.metrics.carbon_kg == 0.0
    assert plan.metrics.carbon_unknown == ("fast", "slow")
    assert "carbon intensity unknown for every site: counted as 0" in plan.notes


def test_a_cost_objective_or_a_budget_with_no_known_price_is_refused() -> None:
    fed = unknown_at("*", carbon=False, price=True)
    wf = Workflow.from_dict({"name": "one", "steps": [{"id": "t", "work": 20.0}]})
    view = static_view(fed)
    with pytest.raises(PlanningError, match="power price of every site"):
        make_planner("heft").plan(wf, fed, view, PlanningConstraints(), Objective.parse("cost"))
    with pytest.raises(PlanningError, match="power price of every site"):
        make_planner("greedy").plan(wf, fed, view, PlanningConstraints(budget=1.0), Objective())


def test_plan_warns_about_unknown_figures(
    capsys: pytest.CaptureFixture[str], tmp_path: Any
) -> None:
    fed = unknown_at("fast", price=True)
    (tmp_path / "fed.yaml").write_text(__import__("json").dumps(fed.to_dict()))
    wf = located({"site": "slow", "path": "/a"})
    (tmp_path / "wf.json").write_text(__import__("json").dumps(wf.to_dict()))
    code, out, err = call_main(
        capsys,
        "plan",
        str(tmp_path / "wf.json"),
        "--federation",
        str(tmp_path / "fed.yaml"),
        "--planner",
        "heft",
    )
    assert code == 0, out + err
    assert "warning: carbon intensity unknown for fast" in err
    assert "warning: power price unknown for fast" in err
