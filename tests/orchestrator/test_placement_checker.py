"""The independent checker catches each kind of broken plan (plans broken on purpose)."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import pytest

from datalogistics.flows import Flow
from federation.model import Federation
from orchestrator import (
    HEFTPlanner,
    Objective,
    Plan,
    PlanInvalid,
    PlanningConstraints,
    Workflow,
    check_plan,
    require_valid,
)
from orchestrator.placement.plan import Assignment, PlanMetrics
from tests.orchestrator.test_placement_costs import chain, two_sites
from tests.orchestrator.test_placement_inputs import unknown_at
from twin.state import AbstractSiteState, Forecast, SiteStatus, SiteView, static_view


def split_plan() -> tuple[Plan, Workflow, Federation]:
    """s0 pinned to slow, s1 to fast: one 1 MB transfer at 1 MB/s between them."""
    fed = two_sites()
    wf = chain(2, work=10.0, size=1e6)
    wf = Workflow.from_dict(
        {
            **wf.to_dict(),
            "steps": [
                {
                    **wf.steps[0].model_dump(exclude_defaults=True),
                    "constraints": {"sites": ["slow"]},
                },
                {
                    **wf.steps[1].model_dump(exclude_defaults=True),
                    "constraints": {"sites": ["fast"]},
                },
            ],
        }
    )
    plan = HEFTPlanner().plan(wf, fed, static_view(fed), PlanningConstraints(), Objective())
    return plan, wf, fed


def moved(plan: Plan, step: str, **changes: float | str) -> Plan:
    a = dict(plan.assignments)
    a[step] = replace(a[step], **changes)  # type: ignore[arg-type]
    return replace(plan, assignments=a)


def test_a_valid_plan_passes() -> None:
    plan, wf, fed = split_plan()
    view = static_view(fed)
    assert check_plan(plan, wf, fed, view, PlanningConstraints()) == []
    assert require_valid(plan, wf, fed, view, PlanningConstraints()) is plan
    assert plan.assignments["s1"].start == pytest.approx(10.0 + 1.0)


def test_starting_before_the_data_arrives_is_caught() -> None:
    plan, wf, fed = split_plan()
    s1 = plan.assignments["s1"]
    early = moved(plan, "s1", start=s1.start - 0.5, end=s1.end - 0.5)
    msgs = check_plan(early, wf, fed, static_view(fed), PlanningConstraints())
    assert any("before item d0 arrives" in m for m in msgs)


def test_a_missing_or_too_short_transfer_is_caught() -> None:
    plan, wf, fed = split_plan()
    f = plan.flows()[0]
    short = replace(plan, flow_list=(replace(f, end=f.start + 0.1),))
    msgs = check_plan(short, wf, fed, static_view(fed), PlanningConstraints())
    assert any("no valid transfer slow -> fast" in m for m in msgs)
    gone = replace(plan, flow_list=())
    assert any(
        "no valid transfer" in m
        for m in check_plan(gone, wf, fed, static_view(fed), PlanningConstraints())
    )


def test_wrong_duration_ineligible_site_and_missing_step_are_caught() -> None:
    plan, wf, fed = split_plan()
    view = static_view(fed)
    s0 = plan.assignments["s0"]
    msgs = check_plan(moved(plan, "s0", end=s0.end + 1), wf, fed, view, PlanningConstraints())
    assert any("should be" in m for m in msgs)
    msgs = check_plan(moved(plan, "s0", site="fast"), wf, fed, view, PlanningConstraints())
    assert any("allowed sites" in m for m in msgs)
    partial = replace(plan, assignments={"s0": plan.assignments["s0"]})
    assert check_plan(partial, wf, fed, view, PlanningConstraints()) == ["step s1 is not placed"]


def test_deadline_budget_and_metrics_are_recomputed() -> None:
    plan, wf, fed = split_plan()
    view = static_view(fed)
    m = plan.metrics
    msgs = check_plan(plan, wf, fed, view, PlanningConstraints(deadline=m.makespan_s - 1))
    assert any("deadline" in x for x in msgs)
    msgs = check_plan(plan, wf, fed, view, PlanningConstraints(budget=m.cost_eur / 2))
    assert any("budget" in x for x in msgs)
    lying = plan.with_metrics(
        energy_kwh=m.energy_kwh / 2, bytes_moved=0.0, carbon_kg=m.carbon_kg * 0.9
    )
    msgs = check_plan(lying, wf, fed, view, PlanningConstraints())
    assert any("metrics.energy_kwh" in x for x in msgs)
    assert any("metrics.bytes_moved" in x for x in msgs)
    assert any("metrics.carbon_kg" in x for x in msgs)
    with pytest.raises(PlanInvalid, match="is invalid"):
        require_valid(lying, wf, fed, view, PlanningConstraints())


def test_per_slot_capacity_uses_mean_minus_z_std() -> None:
    fed = two_sites()
    wf = Workflow.from_dict(
        {"name": "par", "steps": [{"id": f"t{i}", "work": 3600.0} for i in range(3)]}
    )
    view = static_view(fed, horizon=2)
    plan = HEFTPlanner().plan(wf, fed, view, PlanningConstraints(), Objective())
    # put all three on slow at t=0: fine with 4 cores...
    together = plan
    for s in ("t0", "t1", "t2"):
        together = moved(together, s, site="slow", start=0.0, end=3600.0)
    together = replace(together, flow_list=())
    together = together.with_metrics(
        makespan_s=3600.0,
        energy_kwh=3 * 0.015,
        cost_eur=3 * (0.36 + 0.0015),
        carbon_kg=3 * 0.015 * 10.0 / 1000,  # 10 gCO2e/kWh at slow
    )
    assert check_plan(together, wf, fed, view, PlanningConstraints()) == []
    # ...but not when the twin forecasts 3.5 +- 0.5 cores in slot 1 and z = 2
    tight = dict(view)
    tight["slow"] = view["slow"].model_copy(
        update={"available_cores": Forecast(mean=(4.0, 3.5), std=(0.0, 0.5))}
    )
    msgs = check_plan(together, wf, fed, tight, PlanningConstraints(z=2.0))
    assert msgs == []  # the three steps end exactly when slot 1 starts
    later = together
    for s in ("t0", "t1", "t2"):
        later = moved(later, s, start=1800.0, end=5400.0)
    later = later.with_metrics(makespan_s=5400.0)
    msgs = check_plan(later, wf, fed, tight, PlanningConstraints(z=2.0))
    assert any("3 cores in use" in m and "capacity 2.5" in m for m in msgs)


def test_buffer_overflow_is_caught_with_the_shared_rule() -> None:
    plan, wf, fed = split_plan()
    doc = fed.to_dict()
    doc["sites"][1]["buffer_capacity"] = 1000  # bytes: the 1 MB item cannot land at fast
    small = Federation.from_dict(doc)
    msgs = check_plan(plan, wf, small, static_view(small), PlanningConstraints())
    assert any(m.startswith("buffer: site fast") for m in msgs)
    assert isinstance(plan.flows()[0], Flow)


# -- plans made by hand: every figure below is worked out in the comments -------------------
TOL = 1e-6
"""The checker's tolerance: relative to the larger figure, and at least 1e-6 absolute."""
T0 = 1_700_000_000.0
"""A unix time for the views' and the plans' time 0."""


def hand_plan(
    wf: Workflow,
    placed: dict[str, tuple[str, float, float]],
    *,
    flows: tuple[Flow, ...] = (),
    t0: float = 0.0,
    **metrics: Any,
) -> Plan:
    """A plan placing each step on ``(site, start, end)``; metrics as given (else 0, and the
    latest end as makespan)."""
    values: dict[str, Any] = {
        "makespan_s": max(end for _, _, end in placed.values()),
        "cost_eur": 0.0,
        "energy_kwh": 0.0,
        "carbon_kg": 0.0,
        "bytes_moved": 0.0,
        **metrics,
    }
    return Plan(
        workflow=wf.name,
        assignments={s: Assignment(s, site, a, b) for s, (site, a, b) in placed.items()},
        flow_list=flows,
        metrics=PlanMetrics(planner="hand", status="hand", **values),
        objective=Objective(),
        t0=t0,
    )


def flow(item: str, size: float, src: str, dst: str, start: float, end: float, **kw: Any) -> Flow:
    return Flow(item, size, src, dst, ready=start, start=start, end=end, release=end, **kw)


def violations(
    plan: Plan,
    wf: Workflow,
    fed: Federation,
    view: SiteView | None = None,
    c: PlanningConstraints | None = None,
) -> list[str]:
    """The checker's messages other than the metrics' (those plans' metrics are not the point)."""
    msgs = check_plan(plan, wf, fed, static_view(fed) if view is None else view, c or NONE)
    return [m for m in msgs if not m.startswith("metrics.")]


NONE = PlanningConstraints()


def wf_of(*steps: dict[str, Any], data: tuple[dict[str, Any], ...] = ()) -> Workflow:
    return Workflow.from_dict({"name": "w", "steps": list(steps), "data": list(data)})


def with_forecasts(view: dict[str, AbstractSiteState], site: str, **series: Any) -> None:
    """Replace forecasts of ``site`` in ``view``: ``name=(mean, ...)`` (std 0) or None."""
    update = {
        k: None if v is None else Forecast(mean=v, std=(0.0,) * len(v)) for k, v in series.items()
    }
    view[site] = view[site].model_copy(update=update)


def test_cost_and_carbon_average_the_forecast_over_the_slots_a_step_runs_in() -> None:
    # t: 4 cores on slow (speed 1) for 2 h from 00:30 under an hourly forecast:
    # kWh = 4 * 7200 s * 10 W * PUE 1.5 / 3.6e6 = 0.12
    # carbon (1800 * 10 + 3600 * 40 + 1800 * 100) / 7200 = 47.5 g/kWh: 0.0057 kg
    # price (1800 * 0.1 + 3600 * 0.2 + 1800 * 0.4) / 7200 = 0.225 EUR/kWh: 0.027 EUR,
    # plus 4 cores * 2 h * 0.36 EUR = 2.88 EUR
    fed = two_sites()
    wf = wf_of({"id": "t", "work": 4 * 7200.0, "cores": 4})
    view = static_view(fed, horizon=3, issued_at=T0)
    with_forecasts(view, "slow", carbon_intensity=(10.0, 40.0, 100.0), power_price=(0.1, 0.2, 0.4))
    figures: dict[str, Any] = {"energy_kwh": 0.12, "carbon_kg": 0.0057, "cost_eur": 2.88 + 0.027}
    plan = hand_plan(wf, {"t": ("slow", 1800.0, 9000.0)}, t0=T0, **figures)
    assert check_plan(plan, wf, fed, view, NONE) == []
    # the same run, the plan's time 0 half an hour after the forecast's
    later = hand_plan(wf, {"t": ("slow", 0.0, 7200.0)}, t0=T0 + 1800.0, **figures)
    assert check_plan(later, wf, fed, view, NONE) == []
    # each figure wrong is named with both values
    wrong = plan.with_metrics(carbon_kg=0.0040, cost_eur=2.9, makespan_s=9001.0)
    assert check_plan(wrong, wf, fed, view, NONE) == [
        "metrics.makespan_s is 9001, recomputed 9000",
        "metrics.cost_eur is 2.9, recomputed 2.907",
        "metrics.carbon_kg is 0.004, recomputed 0.0057",
    ]


def test_past_the_forecast_horizon_its_last_slot_holds() -> None:
    # two hourly slots (10, 40) g/kWh and (0.1, 0.2) EUR/kWh; t runs 00:30-02:30:
    # carbon (1800 * 10 + 5400 * 40) / 7200 = 32.5 g/kWh -> 0.12 kWh * 32.5 / 1000 = 0.0039 kg
    # price (1800 * 0.1 + 5400 * 0.2) / 7200 = 0.175 EUR/kWh -> 0.021 EUR, plus 2.88 EUR
    fed = two_sites()
    wf = wf_of({"id": "t", "work": 4 * 7200.0, "cores": 4})
    view = static_view(fed, horizon=2, issued_at=T0)
    with_forecasts(view, "slow", carbon_intensity=(10.0, 40.0), power_price=(0.1, 0.2))
    figures: dict[str, Any] = {"energy_kwh": 0.12, "carbon_kg": 0.0039, "cost_eur": 2.88 + 0.021}
    plan = hand_plan(wf, {"t": ("slow", 1800.0, 9000.0)}, t0=T0, **figures)
    assert check_plan(plan, wf, fed, view, NONE) == []
    # u: 1 core for 100 s from 02:01:40, wholly past the horizon: 40 g/kWh, 0.2 EUR/kWh
    wf = wf_of({"id": "u", "work": 100.0})
    kwh = 100 * 10 * 1.5 / 3.6e6
    plan = hand_plan(
        wf,
        {"u": ("slow", 7300.0, 7400.0)},
        t0=T0,
        energy_kwh=kwh,
        carbon_kg=kwh * 40 / 1000,
        cost_eur=100 / 3600 * 0.36 + kwh * 0.2,
    )
    assert check_plan(plan, wf, fed, view, NONE) == []


def test_a_step_of_no_work_takes_no_time_and_costs_nothing() -> None:
    fed = two_sites()
    wf = wf_of({"id": "z", "work": 0.0})
    plan = hand_plan(wf, {"z": ("slow", 100.0, 100.0)})
    assert check_plan(plan, wf, fed, static_view(fed), NONE) == []


def test_withheld_forecasts_fall_back_to_the_nominal_figures() -> None:
    # the view withholds slow's price and carbon: its nominal 0.1 EUR/kWh and 10 g/kWh count;
    # 1 core for 1 h: 0.015 kWh, 0.36 + 0.0015 EUR, 0.00015 kg, and nothing is unknown
    fed = two_sites()
    wf = wf_of({"id": "t", "work": 3600.0})
    view = static_view(fed)
    with_forecasts(view, "slow", carbon_intensity=None, power_price=None)
    figures: dict[str, Any] = {"energy_kwh": 0.015, "carbon_kg": 0.00015, "cost_eur": 0.3615}
    plan = hand_plan(wf, {"t": ("slow", 0.0, 3600.0)}, **figures)
    assert check_plan(plan, wf, fed, view, NONE) == []


def test_with_no_figure_known_anywhere_price_and_carbon_count_as_zero() -> None:
    # no site has a price or an intensity: both count as 0 and every site is named unknown;
    # 20 s on slow cost 20 / 3600 h * 0.36 EUR = 0.002 EUR for the core alone
    fed = unknown_at("*", carbon=True, price=True)
    wf = wf_of({"id": "t", "work": 20.0})
    unknown = ("fast", "slow")
    plan = hand_plan(
        wf,
        {"t": ("slow", 0.0, 20.0)},
        energy_kwh=20 * 10 * 1.5 / 3.6e6,
        cost_eur=0.002,
        carbon_unknown=unknown,
        price_unknown=unknown,
    )
    assert check_plan(plan, wf, fed, static_view(fed), NONE) == []
    lying = plan.with_metrics(price_unknown=("fast",))
    assert check_plan(lying, wf, fed, static_view(fed), NONE) == [
        "metrics.price_unknown is ['fast'], recomputed ['fast', 'slow']"
    ]


def test_gpu_hours_are_charged() -> None:
    # slow gets 2 GPUs at 3.6 EUR/h; g (1 core, 1 GPU) runs 1 h there:
    # 0.36 (core) + 3.6 (GPU) + 0.015 kWh * 0.1 EUR = 3.9615 EUR
    doc = two_sites().to_dict()
    doc["sites"][0].update(gpus=2, price_per_gpu_hour=3.6)
    fed = Federation.from_dict(doc)
    wf = wf_of({"id": "g", "work": 3600.0, "gpus": 1})
    plan = hand_plan(
        wf, {"g": ("slow", 0.0, 3600.0)}, energy_kwh=0.015, carbon_kg=0.00015, cost_eur=3.9615
    )
    assert check_plan(plan, wf, fed, static_view(fed), NONE) == []


def test_metrics_match_within_the_tolerance_of_the_larger_figure() -> None:
    fed = two_sites()
    wf = wf_of({"id": "t", "work": 9000.0})
    base = hand_plan(wf, {"t": ("slow", 0.0, 9000.0)}, energy_kwh=0.0375, carbon_kg=0.000375)
    base = base.with_metrics(cost_eur=0.9 + 0.00375)

    def names(**claims: float) -> list[str]:
        msgs = check_plan(base.with_metrics(**claims), wf, fed, static_view(fed), NONE)
        return [m.split(" ")[0] for m in msgs]

    assert names() == []
    m = 9000.0
    assert names(makespan_s=m * (1 + 0.5 * TOL)) == []  # relative to the figure
    # relative to the larger of the claim and the recomputation, whichever is claimed
    assert names(makespan_s=m + (TOL * m + 4.5e-9)) == []
    assert names(makespan_s=m - (TOL * m - 4.5e-9)) == []
    assert names(makespan_s=m * (1 + 2 * TOL)) == ["metrics.makespan_s"]
    # below 1 the tolerance is absolute: 1e-6
    assert names(bytes_moved=0.5 * TOL) == []
    assert names(bytes_moved=TOL) == []
    assert names(bytes_moved=1.5 * TOL) == ["metrics.bytes_moved"]
    # an infinite or NaN claim matches no finite figure
    assert names(cost_eur=math.inf) == ["metrics.cost_eur"]
    assert names(carbon_kg=math.nan) == ["metrics.carbon_kg"]


# -- capacity ---------------------------------------------------------------------------------
def cores_view(fed: Federation, site: str, mean: tuple[float, ...], std: tuple[float, ...]) -> Any:
    view = static_view(fed, horizon=len(mean))
    view[site] = view[site].model_copy(update={"available_cores": Forecast(mean=mean, std=std)})
    return view


def test_steps_may_use_every_core_forecast_one_after_another() -> None:
    fed = two_sites()
    wf = wf_of({"id": "a", "work": 40.0, "cores": 4}, {"id": "b", "work": 40.0, "cores": 4})
    plan = hand_plan(wf, {"a": ("slow", 0.0, 10.0), "b": ("slow", 10.0, 20.0)})
    assert violations(plan, wf, fed) == []
    # a forecast of 3 - 1e-6 cores still holds 3 (the tolerance), 3 - 2e-6 does not
    wf3 = wf_of({"id": "a", "work": 30.0, "cores": 3})
    plan3 = hand_plan(wf3, {"a": ("slow", 0.0, 10.0)})
    assert violations(plan3, wf3, fed, cores_view(fed, "slow", (3 - TOL,), (0.0,))) == []
    assert violations(plan3, wf3, fed, cores_view(fed, "slow", (3 - 2 * TOL,), (0.0,))) == [
        "site slow: 3 cores in use at 0.0 s, forecast capacity 3.0 (mean - z*std)"
    ]


def test_one_core_over_a_capacity_below_one_is_caught() -> None:
    fed = two_sites()
    wf = wf_of({"id": "a", "work": 10.0})
    plan = hand_plan(wf, {"a": ("slow", 0.0, 10.0)})
    assert violations(plan, wf, fed, cores_view(fed, "slow", (0.5,), (0.0,))) == [
        "site slow: 1 cores in use at 0.0 s, forecast capacity 0.5 (mean - z*std)"
    ]


def test_capacity_is_checked_after_an_idle_gap_and_the_gap_itself_is_free() -> None:
    # z = 2: capacity (4, -1, 2) per hour; a (1 core) in hour 0, nothing in hour 1 (where the
    # forecast is below zero), b (4 cores) in hour 2 where only 2 are forecast
    fed = two_sites()
    wf = wf_of({"id": "a", "work": 100.0}, {"id": "b", "work": 400.0, "cores": 4})
    plan = hand_plan(wf, {"a": ("slow", 0.0, 100.0), "b": ("slow", 7200.0, 7300.0)})
    view = cores_view(fed, "slow", (4.0, 1.0, 2.0), (0.0, 1.0, 0.0))
    assert violations(plan, wf, fed, view, PlanningConstraints(z=2.0)) == [
        "site slow: 4 cores in use at 7200.0 s, forecast capacity 2.0 (mean - z*std)"
    ]


def test_capacity_is_that_of_the_slots_the_level_holds_in() -> None:
    # 1 core forecast in hour 0, 4 in hour 1: 3 cores in hour 1 only are fine
    fed = two_sites()
    wf = wf_of({"id": "a", "work": 300.0, "cores": 3})
    view = cores_view(fed, "slow", (1.0, 4.0), (0.0, 0.0))
    plan = hand_plan(wf, {"a": ("slow", 3600.0, 3700.0)}, t0=0.0)
    assert violations(plan, wf, fed, view) == []
    # 2 cores for the second either side of 01:00, when 1 core is forecast from 01:00
    wf2 = wf_of({"id": "a", "work": 2.0, "cores": 2})
    view = cores_view(fed, "slow", (4.0, 1.0), (0.0, 0.0))
    plan2 = hand_plan(wf2, {"a": ("slow", 3599.5, 3600.5)})
    assert violations(plan2, wf2, fed, view) == [
        "site slow: 2 cores in use at 3599.5 s, forecast capacity 1.0 (mean - z*std)"
    ]


# -- eligibility ------------------------------------------------------------------------------
def test_each_eligibility_rule_is_named() -> None:
    fed = two_sites()
    one = wf_of({"id": "t", "work": 10.0})
    on_slow = hand_plan(one, {"t": ("slow", 0.0, 10.0)})
    down = static_view(fed)
    down["slow"] = down["slow"].model_copy(update={"status": SiteStatus.DOWN})
    assert violations(on_slow, one, fed, down) == ["step t on slow: site is down"]
    cases: list[tuple[dict[str, Any], str]] = [
        ({"constraints": {"sites": ["fast"]}}, "site not in the step's allowed sites"),
        ({"constraints": {"jurisdictions": ["DE"]}}, "jurisdiction FR not allowed for the step"),
        ({"constraints": {"labels": {"arch": "arm"}}}, "site lacks a required label"),
        ({"memory": "17 GB"}, "memory or GPUs exceed the site's"),
        ({"gpus": 1}, "memory or GPUs exceed the site's"),
    ]
    for extra, why in cases:
        wf = wf_of({"id": "t", "work": 10.0, **extra})
        assert violations(hand_plan(wf, {"t": ("slow", 0.0, 10.0)}), wf, fed) == [
            f"step t on slow: {why}"
        ], extra
    # what the site has is enough
    for extra in (
        {"constraints": {"labels": {"arch": "x86_64"}}, "memory": "16 GB"},
        {"constraints": {"jurisdictions": ["EU"], "sites": ["slow"]}},
    ):
        wf = wf_of({"id": "t", "work": 10.0, **extra})
        assert violations(hand_plan(wf, {"t": ("slow", 0.0, 10.0)}), wf, fed) == [], extra


def test_an_item_restricted_to_a_jurisdiction_may_not_be_written_elsewhere() -> None:
    fed = two_sites()
    wf = wf_of(
        {"id": "t", "work": 10.0, "outputs": ["d"]},
        data=({"id": "d", "size": 1.0, "allowed_jurisdictions": ["DE"]},),
    )
    plan = hand_plan(wf, {"t": ("slow", 0.0, 10.0)})
    assert violations(plan, wf, fed) == ["step t on slow: item d may not reside in FR"]
    assert violations(hand_plan(wf, {"t": ("fast", 0.0, 5.0)}), wf, fed) == []


def test_the_requests_eligibility_takes_site_ids_or_jurisdictions() -> None:
    fed = two_sites()
    wf = wf_of({"id": "t", "work": 10.0})
    plan = hand_plan(wf, {"t": ("slow", 0.0, 10.0)})

    def check(*eligible: str) -> list[str]:
        return violations(plan, wf, fed, c=PlanningConstraints(eligible={"t": eligible}))

    refused = ["step t on slow: not allowed by the request's eligibility"]
    assert check("fast") == refused
    assert check("DE") == refused
    assert check("slow") == []
    assert check("fr") == []  # a jurisdiction code, in any case
    assert check("fast", "EU") == []
    assert violations(plan, wf, fed, c=PlanningConstraints(eligible={"other": ("fast",)})) == []


# -- precedence and transfers -----------------------------------------------------------------
def test_a_child_may_start_when_its_parent_ends_on_the_same_site() -> None:
    fed = two_sites()
    wf = chain(2)
    at_end = hand_plan(wf, {"s0": ("slow", 0.0, 10.0), "s1": ("slow", 10.0, 20.0)})
    assert violations(at_end, wf, fed) == []
    within = hand_plan(wf, {"s0": ("slow", 0.0, 10.0), "s1": ("slow", 10 - TOL, 20 - TOL)})
    assert violations(within, wf, fed) == []
    early = hand_plan(wf, {"s0": ("slow", 0.0, 10.0), "s1": ("slow", 5.0, 15.0)})
    assert violations(early, wf, fed) == ["s1 starts at 5.000 s before its parent s0 ends (10.000)"]


def test_every_edge_and_every_item_is_checked() -> None:
    fed = two_sites()
    # s0 -> s1 on slow, then s1 -> s2 across to fast with no transfer of d1
    wf = chain(3)
    plan = hand_plan(
        wf, {"s0": ("slow", 0.0, 10.0), "s1": ("slow", 10.0, 20.0), "s2": ("fast", 40.0, 45.0)}
    )
    assert violations(plan, wf, fed) == ["item d1: no valid transfer slow -> fast for s2"]
    # c reads an external input before its parent's output
    wf = wf_of(
        {"id": "p", "work": 10.0, "outputs": ["d"]},
        {"id": "c", "work": 10.0, "inputs": ["x", "d"]},
        data=({"id": "x", "size": 1.0}, {"id": "d", "size": 1e6}),
    )
    plan = hand_plan(wf, {"p": ("slow", 0.0, 10.0), "c": ("fast", 20.0, 25.0)})
    assert violations(plan, wf, fed) == ["item d: no valid transfer slow -> fast for c"]


def test_items_between_unlinked_sites_are_named() -> None:
    fed = two_sites(links=[])
    wf = wf_of(
        {"id": "p", "work": 10.0, "outputs": ["d", "e"]},
        {"id": "c", "work": 10.0, "inputs": ["d", "e"]},
        data=({"id": "d", "size": 1.0}, {"id": "e", "size": 1.0}),
    )
    plan = hand_plan(wf, {"p": ("slow", 0.0, 10.0), "c": ("fast", 20.0, 25.0)})
    assert violations(plan, wf, fed) == [
        "item d: no link slow -> fast for edge p -> c",
        "item e: no link slow -> fast for edge p -> c",
    ]


def transfer_case(start: float, end: float, child_start: float) -> list[str]:
    """p (no work, ends at 0) on slow, c on fast reading p's 1 MB (1 s over the link) moved
    during [start, end]; the checker's messages."""
    fed = two_sites()
    wf = wf_of(
        {"id": "p", "work": 0.0, "outputs": ["d"]},
        {"id": "c", "work": 10.0, "inputs": ["d"]},
        data=({"id": "d", "size": 1e6},),
    )
    plan = hand_plan(
        wf,
        {"p": ("slow", 0.0, 0.0), "c": ("fast", child_start, child_start + 5.0)},
        flows=(flow("d", 1e6, "slow", "fast", start, end),),
    )
    return violations(plan, wf, fed)


def test_a_transfer_must_start_after_its_producer_last_long_enough_and_arrive_in_time() -> None:
    assert transfer_case(0.0, 1.0, 1.0) == []
    assert transfer_case(-TOL, 1.0 - TOL, 1.0) == []  # within the tolerance
    assert transfer_case(-2 * TOL, 1.0, 1.0) == ["item d: no valid transfer slow -> fast for c"]
    assert (1.0 - TOL) - 0.0 == 1.0 - TOL
    assert transfer_case(0.0, 1.0 - TOL, 1.0) == []
    assert transfer_case(0.0, 0.9, 1.0) == ["item d: no valid transfer slow -> fast for c"]
    assert transfer_case(0.0, 1.0 + TOL, 1.0) == []
    assert transfer_case(0.0, 2.0, 1.0) == ["c starts at 1.000 s before item d arrives"]


# -- external inputs with a location ---------------------------------------------------------
def input_case(*flows: Flow, consumer_start: float = 4.0, links: bool = True) -> list[str]:
    """reduce (10 s on fast) reads raw (4 MB at slow: 4 s over the link) and x (no location)."""
    fed = two_sites() if links else two_sites(links=[])
    wf = wf_of(
        {"id": "reduce", "work": 20.0, "inputs": ["x", "raw"]},
        data=(
            {"id": "x", "size": 1.0},
            {"id": "raw", "size": 4e6, "location": {"site": "slow", "path": "/a/raw"}},
        ),
    )
    plan = hand_plan(wf, {"reduce": ("fast", consumer_start, consumer_start + 10.0)}, flows=flows)
    return violations(plan, wf, fed)


def raw(start: float, end: float, src: str = "slow", external: bool = True) -> Flow:
    return flow("raw", 4e6, src, "fast", start, end, external=external)


def test_a_located_input_must_be_moved_from_where_it_lives_in_time() -> None:
    none = ["input raw: no valid flow slow -> fast for reduce"]
    assert input_case(raw(0.0, 4.0)) == []
    assert input_case() == none
    assert input_case(raw(0.0, 4.0, src="https://elsewhere.example.org/raw")) == none
    assert input_case(raw(0.0, 4.0, external=False)) == none  # a flow of a produced item
    assert input_case(raw(5.0, 5.5), consumer_start=6.0) == none  # too short for 4 MB
    assert input_case(raw(-TOL, 4.0 - TOL)) == []
    assert input_case(raw(-2 * TOL, 4.0)) == none
    assert input_case(raw(0.0, 4.0 - TOL)) == []
    assert input_case(raw(0.0, 4.0 + TOL)) == []
    assert input_case(raw(0.0, 5.0)) == ["reduce starts at 4.000 s before input raw arrives"]
    assert input_case(raw(0.0, 4.0), links=False) == ["input raw: no link slow -> fast for reduce"]


def test_every_located_input_of_a_step_is_checked() -> None:
    # local lives at fast, where reduce runs: no flow needed; raw and raw2 at slow, unlinked
    fed = two_sites(links=[])
    wf = wf_of(
        {"id": "reduce", "work": 20.0, "inputs": ["local", "raw", "raw2"]},
        data=(
            {"id": "local", "size": 1.0, "location": {"site": "fast", "path": "/l"}},
            {"id": "raw", "size": 4e6, "location": {"site": "slow", "path": "/a/raw"}},
            {"id": "raw2", "size": 4e6, "location": {"site": "slow", "path": "/a/raw2"}},
        ),
    )
    plan = hand_plan(wf, {"reduce": ("fast", 4.0, 14.0)})
    assert violations(plan, wf, fed) == [
        "input raw: no link slow -> fast for reduce",
        "input raw2: no link slow -> fast for reduce",
    ]


# -- completeness, durations, releases, deadlines, budget -------------------------------------
def test_keys_sites_and_durations_are_named() -> None:
    fed = two_sites()
    wf = chain(2)
    plan = hand_plan(wf, {"s0": ("slow", 0.0, 10.0), "s1": ("slow", 10.0, 20.0)})
    swapped = replace(plan, assignments={**plan.assignments, "s1": Assignment("s0", "slow", 0, 10)})
    assert violations(swapped, wf, fed) == ["assignment under key s1 names step s0"]
    nowhere = hand_plan(wf, {"s0": ("mars", 0.0, 10.0), "s1": ("slow", 10.0, 20.0)})
    assert violations(nowhere, wf, fed) == ["step s0 placed on unknown site mars"]
    long = hand_plan(wf, {"s0": ("slow", 1.0, 12.0), "s1": ("slow", 12.0, 22.0)})
    assert violations(long, wf, fed) == ["step s0: lasts 11 s, should be 10 s"]


def test_a_view_without_a_site_uses_its_static_figures() -> None:
    plan, wf, fed = split_plan()
    assert check_plan(plan, wf, fed, {}, NONE) == []


def test_releases_and_step_deadlines_hold_to_the_tolerance() -> None:
    fed = two_sites()
    wf = wf_of({"id": "t", "work": 10.0, "constraints": {"release": 5.0, "deadline": 20.0}})

    def at(start: float, end: float | None = None) -> list[str]:
        end = start + 10.0 if end is None else end
        return violations(hand_plan(wf, {"t": ("slow", start, end)}), wf, fed)

    assert at(5.0) == []
    assert at(5.0 - TOL) == []
    assert at(3.0) == ["step t starts at 3.000 s, before 5.000 s"]
    assert at(10.0) == []  # ends at its deadline
    assert at(10.0 + TOL, 20.0 + TOL) == []
    assert at(11.0) == ["step t ends at 21.0 s, after its deadline 20.0 s"]
    # the expected queue wait at the site delays the earliest start too
    wait = static_view(fed)
    wait["slow"] = wait["slow"].model_copy(update={"expected_wait_s": 8.0})
    plan = hand_plan(wf, {"t": ("slow", 6.0, 16.0)})
    assert violations(plan, wf, fed, wait) == ["step t starts at 6.000 s, before 8.000 s"]


def test_the_requests_deadline_and_budget_hold_to_the_tolerance() -> None:
    plan, wf, fed = split_plan()
    m = plan.metrics

    def limits(**c: Any) -> list[str]:
        return violations(plan, wf, fed, c=PlanningConstraints(**c))

    assert limits(deadline=m.makespan_s, budget=m.cost_eur) == []
    assert limits(deadline=m.makespan_s - TOL) == []
    assert limits(budget=m.cost_eur / (1 + TOL)) == []
    assert limits(deadline=m.makespan_s - 3 * TOL) == [
        f"makespan {m.makespan_s:.1f} s exceeds the deadline {m.makespan_s - 3 * TOL:.1f} s"
    ]
    assert limits(budget=m.cost_eur * (1 - 3 * TOL)) == [
        f"cost {m.cost_eur:.4g} EUR exceeds the budget {m.cost_eur * (1 - 3 * TOL):.4g} EUR"
    ]


def test_require_valid_names_the_planner_and_every_violation() -> None:
    plan, wf, fed = split_plan()
    lying = plan.with_metrics(bytes_moved=0.0, energy_kwh=0.0)
    with pytest.raises(PlanInvalid, match="plan from heft is invalid") as info:
        require_valid(lying, wf, fed, static_view(fed), NONE)
    assert str(info.value).endswith("(and 1 more)")
    assert [v.split(" ")[0] for v in info.value.violations] == [
        "metrics.energy_kwh",
        "metrics.bytes_moved",
    ]
