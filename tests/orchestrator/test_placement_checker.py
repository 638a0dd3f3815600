"""The independent checker catches each kind of broken plan (plans broken on purpose)."""

from __future__ import annotations

from dataclasses import replace

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
from tests.orchestrator.test_placement_costs import chain, two_sites
from twin.state import Forecast, static_view


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
