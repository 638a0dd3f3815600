"""The shared cost model: formulas on hand-made sites, slot averages, eligibility reasons.

Also holds the small federations and workflows the other placement tests build on.
"""

from __future__ import annotations

from typing import Any

import pytest

from federation.model import Federation
from orchestrator.placement.costs import CostModel, SiteSeries
from orchestrator.placement.plan import PlanningConstraints
from orchestrator.workflow import Workflow
from twin.state import AbstractSiteState, Forecast, SiteStatus, static_view


def two_sites(**overrides: Any) -> Federation:
    """Site ``slow`` (speed 1, FR, 10 g/kWh) and ``fast`` (speed 2, DE, 1000 g/kWh), linked
    at 1 MB/s with no latency; ``overrides`` replace fields of the document."""
    doc: dict[str, Any] = {
        "name": "pair",
        "sites": [
            {
                "id": "slow",
                "kind": "hpc",
                "cores": 4,
                "memory": "16 GB",
                "speed": 1.0,
                "power_idle_w": 1.0,
                "power_busy_w": 10.0,
                "pue": 1.5,
                "price_per_core_hour": 0.36,
                "jurisdiction": "FR",
                "buffer_capacity": "1 TB",
                "carbon_intensity_g_per_kwh": 10.0,
                "energy_price_eur_per_kwh": 0.1,
                "labels": {"arch": "x86_64"},
            },
            {
                "id": "fast",
                "kind": "cloud",
                "cores": 4,
                "memory": "16 GB",
                "speed": 2.0,
                "power_idle_w": 1.0,
                "power_busy_w": 10.0,
                "pue": 1.5,
                "price_per_core_hour": 0.72,
                "jurisdiction": "DE",
                "buffer_capacity": "1 TB",
                "carbon_intensity_g_per_kwh": 1000.0,
                "energy_price_eur_per_kwh": 0.1,
                "labels": {"arch": "arm"},
            },
        ],
        "links": [
            {"src": "slow", "dst": "fast", "bandwidth": 1e6, "latency": 0, "symmetric": True}
        ],
    }
    doc.update(overrides)
    return Federation.from_dict(doc)


def chain(n: int = 2, work: float = 10.0, size: float = 1e7, **step_extra: Any) -> Workflow:
    """``s0 -> s1 -> ...``, each step writing ``size`` bytes read by the next."""
    steps = []
    for i in range(n):
        steps.append(
            {
                "id": f"s{i}",
                "work": work,
                "inputs": [f"d{i - 1}"] if i else [],
                "outputs": [f"d{i}"],
                **step_extra,
            }
        )
    data = [{"id": f"d{i}", "size": size} for i in range(n)]
    return Workflow.from_dict({"name": "chain", "steps": steps, "data": data})


def test_durations_energy_cost_and_carbon_follow_the_documented_formulas() -> None:
    fed = two_sites()
    wf = chain(1, work=3600.0)
    m = CostModel(wf, fed, static_view(fed), PlanningConstraints())
    assert m.duration("s0", "slow") == pytest.approx(3600.0)
    assert m.duration("s0", "fast") == pytest.approx(1800.0)
    # 1 core x 3600 s x 10 W x PUE 1.5 = 54 kJ = 0.015 kWh
    assert m.energy_kwh("s0", "slow") == pytest.approx(0.015)
    # 1 core-hour x 0.36 EUR + 0.015 kWh x 0.1 EUR/kWh
    assert m.run_cost("s0", "slow", 0.0) == pytest.approx(0.36 + 0.0015)
    # 0.015 kWh x 10 g/kWh = 0.15 g
    assert m.carbon_kg("s0", "slow", 0.0) == pytest.approx(0.15e-3)
    assert m.carbon_kg("s0", "fast", 0.0) == pytest.approx(0.0075 * 1000 / 1000)


def test_carbon_is_averaged_over_the_slots_a_step_runs_in() -> None:
    fed = two_sites()
    wf = chain(1, work=3600.0)
    view = static_view(fed, horizon=4, slot_seconds=1800.0)
    carbon = Forecast(mean=(100.0, 300.0, 500.0, 500.0), std=(0.0,) * 4)
    view["slow"] = view["slow"].model_copy(update={"carbon_intensity": carbon})
    m = CostModel(wf, fed, view, PlanningConstraints())
    kwh = m.energy_kwh("s0", "slow")
    # a 3600 s step from t=0 spans slots 0 and 1 equally: mean intensity 200
    assert m.carbon_kg("s0", "slow", 0.0) == pytest.approx(kwh * 200 / 1000)
    # from t=900: a quarter hour at 100, a half at 300, a quarter at 500 -> 300
    assert m.carbon_kg("s0", "slow", 900.0) == pytest.approx(kwh * 300 / 1000)
    # beyond the horizon the last slot persists
    assert m.carbon_kg("s0", "slow", 10 * 3600.0) == pytest.approx(kwh * 500 / 1000)


def test_site_series_average_of_an_empty_interval_is_the_slot_value() -> None:
    ser = SiteSeries(0.0, 10.0, (1.0, 2.0), (5.0, 7.0), (4.0, 4.0))
    assert ser.average(ser.carbon, 12.0, 12.0) == 7.0
    assert ser.average(ser.carbon, 5.0, 15.0) == pytest.approx(6.0)


def test_withheld_forecasts_fall_back_to_nominal_figures() -> None:
    fed = two_sites()
    view = static_view(fed)
    view["fast"] = view["fast"].model_copy(update={"carbon_intensity": None, "power_price": None})
    m = CostModel(chain(1), fed, view, PlanningConstraints())
    assert set(m.series["fast"].carbon) == {1000.0}
    assert set(m.series["fast"].price) == {0.1}


def test_capacity_pool_is_the_worst_slot_of_mean_minus_z_std() -> None:
    fed = two_sites()
    view = static_view(fed, horizon=3)
    view["slow"] = view["slow"].model_copy(
        update={"available_cores": Forecast(mean=(4.0, 3.5, 4.0), std=(0.0, 0.5, 0.0))}
    )
    assert CostModel(chain(1), fed, view, PlanningConstraints(z=1.0)).pool["slow"] == 3
    assert CostModel(chain(1), fed, view, PlanningConstraints(z=2.0)).pool["slow"] == 2
    assert CostModel(chain(1), fed, view, PlanningConstraints(z=0.0)).pool["slow"] == 3


def test_eligibility_reasons_name_the_binding_rule() -> None:
    fed = two_sites()
    wf = Workflow.from_dict(
        {
            "name": "e",
            "data": [{"id": "secret", "size": 10, "allowed_jurisdictions": ["FR"]}],
            "steps": [
                {"id": "pinned", "work": 1, "outputs": ["secret"]},
                {"id": "arm", "work": 1, "constraints": {"labels": {"arch": "arm"}}},
                {"id": "big", "work": 1, "memory": "20 GB"},
                {"id": "gpu", "work": 1, "gpus": 1},
                {"id": "wide", "work": 1, "cores": 8},
                {"id": "dmp", "work": 1},
            ],
        }
    )
    view = static_view(fed)
    m = CostModel(wf, fed, view, PlanningConstraints(eligible={"dmp": ("DE",)}))
    assert m.eligible["pinned"] == ("slow",)
    assert "may reside only in FR" in m.why_not["pinned"]["fast"]
    assert m.eligible["arm"] == ("fast",)
    assert "label arch=arm" in m.why_not["arm"]["slow"]
    assert m.eligible["big"] == ()
    assert "memory" in m.why_not["big"]["slow"]
    assert m.eligible["gpu"] == ()
    assert "GPUs" in m.why_not["gpu"]["fast"]
    assert m.eligible["wide"] == ()
    assert "cores" in m.why_not["wide"]["slow"]
    assert m.eligible["dmp"] == ("fast",)
    down = dict(view)
    down["fast"] = AbstractSiteState.static(fed.site("fast")).model_copy(
        update={"status": SiteStatus.DOWN}
    )
    m2 = CostModel(wf, fed, down, PlanningConstraints())
    assert m2.eligible["arm"] == ()
    assert "down" in m2.why_not["arm"]["fast"]


def test_edge_delay_is_latency_plus_bytes_over_bandwidth_and_inf_when_unlinked() -> None:
    fed = two_sites()
    m = CostModel(chain(2, size=5e6), fed, static_view(fed), PlanningConstraints())
    assert m.edge_delay("s0", "s1", "slow", "fast") == pytest.approx(5.0)
    assert m.edge_delay("s0", "s1", "fast", "fast") == 0.0
    lonely = two_sites(links=[])
    m2 = CostModel(chain(2), lonely, static_view(lonely), PlanningConstraints())
    assert m2.edge_delay("s0", "s1", "slow", "fast") == float("inf")


def test_lower_bounds_do_not_exceed_any_single_site_plan() -> None:
    fed = two_sites()
    wf = chain(3, work=100.0)
    m = CostModel(wf, fed, static_view(fed), PlanningConstraints())
    lb = m.lower_bounds()
    for site in ("slow", "fast"):
        t, placed = 0.0, {}
        for s in ("s0", "s1", "s2"):
            d = m.duration(s, site)
            placed[s] = (site, t, t + d)
            t += d
        values = m.evaluate(placed, m.flows(placed))
        for term in ("time", "cost", "energy", "carbon"):
            assert lb[term] <= values[term] + 1e-12


def many_sites(n: int = 9, links_every: int = 2) -> Federation:
    """``n`` sites with various buffers, some pairs linked (others not), in three projects."""
    sites = [
        {
            "id": f"s{i}",
            "kind": "hpc",
            "cores": 8,
            "memory": "32 GB",
            "speed": 1.0 + 0.25 * (i % 3),
            "power_idle_w": 1.0,
            "power_busy_w": 5.0,
            "price_per_core_hour": 0.01,
            "jurisdiction": "FR",
            "buffer_capacity": ["10 MB", "1 GB", "1 TB"][i % 3],
        }
        for i in range(n)
    ]
    links = [
        {
            "src": f"s{a}",
            "dst": f"s{b}",
            "bandwidth": f"{10 * (1 + (a + b) % 4)} MB/s",
            "latency": f"{1 + a} ms",
        }
        for a in range(n)
        for b in range(n)
        if a != b and (a + b) % links_every == 0
    ]
    projects = [{"id": f"p{k}", "sites": [f"s{i}" for i in range(k, n, 3)]} for k in range(3)]
    return Federation.from_dict(
        {
            "name": "many",
            "sites": sites,
            "links": links,
            "organisations": [{"id": "o", "projects": projects}],
        }
    )


def test_heft_ranks_sum_the_links_as_the_pairs_would() -> None:
    """The upward ranks (mean transfer delay over all ordered pairs of sites, unlinked and
    buffer-limited pairs infinite) computed from the links alone equal the pairwise sum."""
    from orchestrator.placement.schedule import upward_ranks

    fed = many_sites()
    sizes = [5e6, 5e8, 5e12]  # fits every buffer, only the 1 GB and 1 TB ones, none
    steps = [{"id": "a", "work": 10, "outputs": ["x0", "x1", "x2"]}] + [
        {"id": f"b{k}", "work": 10, "inputs": [f"x{k}"], "after": ["a"]} for k in range(3)
    ]
    wf = Workflow.from_dict(
        {
            "name": "fan",
            "steps": steps,
            "data": [{"id": f"x{k}", "size": s} for k, s in enumerate(sizes)],
        }
    )
    model = CostModel(wf, fed, static_view(fed), PlanningConstraints())
    ranks = upward_ranks(model)
    pairs = [(p, q) for p in model.sites for q in model.sites if p != q]

    def cbar(child: str) -> float:
        delays = [model.edge_delay("a", child, p, q) for p, q in pairs]
        finite = [d for d in delays if d != float("inf")]
        return sum(finite) / len(delays) if finite else 0.0

    means = [cbar(f"b{k}") for k in range(3)]
    assert means[0] > 0.0 < means[1]
    assert means[2] == 0.0  # the 5 TB item fits no buffer
    dbar = sum(model.duration("a", s) for s in model.eligible["a"]) / len(model.eligible["a"])
    expected = dbar + max(m + ranks[f"b{k}"] for k, m in enumerate(means))
    assert ranks["a"] == pytest.approx(expected, rel=1e-12)


def test_a_workflow_restricted_to_a_project_is_modelled_on_its_sites_only() -> None:
    from orchestrator import make_planner
    from orchestrator.placement.plan import Objective
    from orchestrator.planning import declare

    fed = many_sites()
    wf = declare(chain(3, size=1e6), fed, project="p1")
    model = CostModel(wf, fed, static_view(fed), PlanningConstraints())
    assert model.sites == ("s1", "s4", "s7")
    assert set(model.series) == {"s1", "s4", "s7"}
    # sites no step may use are not listed as excluded in every explanation
    plan = make_planner("heft").plan(wf, fed, static_view(fed), PlanningConstraints(), Objective())
    assert {a.site for a in plan.assignments.values()} <= {"s1", "s4", "s7"}
    assert all("s0 " not in a.why for a in plan.assignments.values())
    # unrestricted, every site is in the model
    assert CostModel(chain(3), fed, static_view(fed), PlanningConstraints()).sites == tuple(
        f"s{i}" for i in range(9)
    )


def test_the_cached_objective_bound_follows_the_weights_and_the_reference() -> None:
    """``objective_bound`` is cached per weights and reference: asked in turn for two
    references and two weightings, each answer is a fresh model's."""
    fed, wf = two_sites(), chain(3)
    view = static_view(fed)
    model = CostModel(wf, fed, view, PlanningConstraints())
    cases = [
        ({"cost": 1.0}, {"cost": 2.0, "time": 1.0}),
        ({"cost": 1.0}, {"cost": 5.0, "time": 1.0}),
        ({"carbon": 0.5, "time": 0.5}, {"carbon": 3.0, "time": 7.0}),
        ({"cost": 1.0}, {"cost": 2.0, "time": 1.0}),
    ]
    for weights, ref in cases:
        fresh = CostModel(wf, fed, view, PlanningConstraints()).objective_bound(weights, ref)
        assert model.objective_bound(weights, ref) == pytest.approx(fresh, rel=1e-12)
    assert model.objective_bound(*cases[0]) != pytest.approx(model.objective_bound(*cases[1]))
