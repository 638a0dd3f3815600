"""Shared link bandwidth: transfers booked on links, hand-computed and as a property.

The federation of ``two_sites``: ``slow`` and ``fast`` linked at 1 MB/s both ways, no
latency. Two 5 MB items that leave ``slow`` at once for ``fast`` take 10 s together where
one alone takes 5 s: the second waits for the first.
"""

from __future__ import annotations

import itertools
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from datalogistics.flows import Flow
from federation.model import Federation
from orchestrator import (
    GreedyPlanner,
    HEFTPlanner,
    MarketPlanner,
    Objective,
    Plan,
    PlanningConstraints,
    Workflow,
    check_plan,
)
from orchestrator.placement.costs import CostModel
from orchestrator.placement.links import LinkBook, book_transfers
from orchestrator.placement.timeshift import timeshift
from tests.orchestrator.test_placement_costs import two_sites
from twin.state import Forecast, SiteView, static_view


def fan(n: int, size: float = 5e6) -> Workflow:
    """``n`` producers ``a<i>`` pinned to ``slow`` (10 s each, in parallel), each writing
    ``size`` bytes read by its consumer ``b<i>`` pinned to ``fast`` (5 s each)."""
    steps: list[dict[str, Any]] = []
    for i in range(n):
        steps.append(
            {"id": f"a{i}", "work": 10.0, "outputs": [f"d{i}"], "constraints": {"sites": ["slow"]}}
        )
        steps.append(
            {
                "id": f"b{i}",
                "work": 10.0,
                "inputs": [f"d{i}"],
                "constraints": {"sites": ["fast"]},
            }
        )
    data = [{"id": f"d{i}", "size": size} for i in range(n)]
    return Workflow.from_dict({"name": "fan", "steps": steps, "data": data})


def plan_of(wf: Workflow, fed: Federation) -> Plan:
    return HEFTPlanner().plan(wf, fed, static_view(fed), PlanningConstraints(), Objective())


def test_one_transfer_takes_bytes_over_bandwidth() -> None:
    fed = two_sites()
    plan = plan_of(fan(1), fed)
    (f,) = plan.transfers
    assert (f.start, f.end) == (10.0, 15.0)  # 5 MB at 1 MB/s after the 10 s producer
    assert plan.assignments["b0"].start == 15.0


def test_two_transfers_on_one_link_take_twice_as_long_as_one() -> None:
    fed = two_sites()
    plan = plan_of(fan(2), fed)
    spans = sorted((f.start, f.end) for f in plan.transfers)
    # both items are ready at 10 s; the link carries one at a time: 10-15 s, then 15-20 s
    assert spans == [(10.0, 15.0), (15.0, 20.0)]
    assert sorted(plan.assignments[b].start for b in ("b0", "b1")) == [15.0, 20.0]
    assert plan.metrics.makespan_s == 25.0  # (without sharing: 20 s)
    flows = {f.item: f for f in plan.flows()}
    late = max(flows.values(), key=lambda f: f.start)
    assert late.ready == 10.0  # held at the source while it waits for the link
    assert late.start == 15.0
    assert check_plan(plan, fan(2), fed, static_view(fed), PlanningConstraints()) == []


def test_the_checker_bounds_the_rates_of_concurrent_flows_by_the_bandwidth() -> None:
    fed, wf = two_sites(), fan(2)
    view, c = static_view(fed), PlanningConstraints()
    plan = plan_of(wf, fed)
    late_item = max(plan.flows(), key=lambda f: f.start).item
    a = dict(plan.assignments)
    b_late = next(s for s in ("b0", "b1") if f"d{s[1]}" == late_item)

    def with_flows(spans: dict[str, tuple[float, float]], late_start: float) -> Plan:
        flows = tuple(
            replace(f, start=spans[f.item][0], end=spans[f.item][1]) for f in plan.flows()
        )
        asg = dict(a)
        asg[b_late] = replace(a[b_late], start=late_start, end=late_start + 5.0)
        end = max(x.end for x in asg.values())
        return replace(plan, flow_list=flows, assignments=asg).with_metrics(makespan_s=end)

    # both at the full bandwidth at once: 2 MB/s on a 1 MB/s link
    both = with_flows({"d0": (10.0, 15.0), "d1": (10.0, 15.0)}, 15.0)
    msgs = check_plan(both, wf, fed, view, c)
    assert any("link slow -> fast" in m and "bandwidth" in m for m in msgs), msgs
    # sharing it fairly instead (each at 0.5 MB/s for 10 s) keeps the bandwidth
    fair = with_flows({"d0": (10.0, 20.0), "d1": (10.0, 20.0)}, 20.0)
    early = next(s for s in ("b0", "b1") if s != b_late)
    fair = replace(
        fair,
        assignments={**fair.assignments, early: replace(a[early], start=20.0, end=25.0)},
    )
    assert [m for m in check_plan(fair, wf, fed, view, c) if "link" in m] == []
    # the reverse direction is another link: no sharing with slow -> fast
    assert fed.link("fast", "slow") is not None


def test_a_link_book_fills_gaps_and_finds_the_latest_gap() -> None:
    book = LinkBook()
    link = ("x", "y")
    book.book(link, 0.0, 2.0)
    book.book(link, 5.0, 2.0)
    assert book.earliest(link, 0.0, 3.0) == 2.0  # the gap [2, 5) holds 3 s
    assert book.earliest(link, 0.0, 3.5) == 7.0
    assert book.earliest(link, 1.0, 1.0, extra=[(2.0, 4.5)]) == 7.0
    assert book.latest(link, 0.0, 10.0, 3.0) == 7.0
    assert book.latest(link, 0.0, 6.0, 3.0) == 2.0
    assert book.latest(link, 3.0, 6.0, 3.0) is None
    book.release(link, 5.0, 2.0)
    assert book.earliest(link, 0.0, 3.5) == 2.0


def test_a_placement_without_bookings_is_booked_first_come_first_served() -> None:
    fed, wf = two_sites(), fan(2)
    model = CostModel(wf, fed, static_view(fed), PlanningConstraints())
    placed = {
        "a0": ("slow", 0.0, 10.0),
        "a1": ("slow", 2.0, 12.0),
        "b0": ("fast", 15.0, 20.0),
        "b1": ("fast", 20.0, 25.0),
    }
    assert book_transfers(model, placed) == {
        ("d0", "fast"): (10.0, 15.0),
        ("d1", "fast"): (15.0, 20.0),
    }


# -- the property: every planner's plan keeps every link's bandwidth at every instant ----


def three_sites(bandwidth: float) -> Federation:
    """``two_sites`` plus an edge site, every pair linked at ``bandwidth`` with latency."""
    base = two_sites().to_dict()
    edge = {**base["sites"][0], "id": "edge", "cores": 2, "speed": 1.5}
    links = [
        {"src": a, "dst": b, "bandwidth": bandwidth, "latency": 0.5}
        for a, b in itertools.permutations(("slow", "fast", "edge"), 2)
    ]
    return Federation.from_dict({**base, "sites": [*base["sites"], edge], "links": links})


def varying_view(fed: Federation, seed: int) -> SiteView:
    """Carbon and prices that change by the hour (so time shifting moves steps and
    their transfers), slots of 60 s so that the plans span several."""
    view = static_view(fed, horizon=12, slot_seconds=60.0)
    for k, s in enumerate(fed.sites):
        carbon = tuple(100.0 + 90.0 * (((i + seed + k) * 7) % 5) for i in range(12))
        price = tuple(0.05 + 0.02 * (((i + 2 * seed + k) * 3) % 4) for i in range(12))
        view[s.id] = view[s.id].model_copy(
            update={
                "carbon_intensity": Forecast(mean=carbon, std=(0.0,) * 12),
                "power_price": Forecast(mean=price, std=(0.0,) * 12),
            }
        )
    return view


def rate_overloads(flows: list[Flow], fed: Federation) -> list[str]:
    """Brute force, not the checker's sweep: at the midpoint between any two consecutive
    edges of the flows on a link, the rates of the flows holding it sum to at most its
    bandwidth."""
    out = []
    by_link: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
    for f in flows:
        link = fed.link(f.src, f.dst)
        if link is None or f.size <= 0:
            continue
        t1 = f.end - link.latency
        by_link.setdefault((f.src, f.dst), []).append((f.start, t1, f.size / (t1 - f.start)))
    for (a, b), spans in by_link.items():
        edges = sorted({x for s, e, _ in spans for x in (s, e)})
        for lo, hi in itertools.pairwise(edges):
            if hi - lo < 1e-6:
                continue
            mid = (lo + hi) / 2
            load = sum(r for s, e, r in spans if s <= mid < e)
            if load > fed.link(a, b).bandwidth * (1 + 1e-6):  # type: ignore[union-attr]
                out.append(f"{a}->{b} at {mid}: {load}")
    return out


@st.composite
def data_dags(draw: st.DrawFn) -> dict[str, Any]:
    """A random workflow whose every edge carries data: step ``j`` reads the outputs of 1 to
    3 earlier steps; steps are pinned to random sites (or free), so data crosses links."""
    n = draw(st.integers(3, 16))
    steps = []
    for j in range(n):
        parents = draw(st.sets(st.integers(0, j - 1), min_size=1, max_size=3)) if j else set()
        pin = draw(st.sampled_from(["slow", "fast", "edge", None]))
        steps.append(
            {
                "id": f"s{j}",
                "work": draw(st.integers(0, 60)),
                "cores": draw(st.integers(1, 2)),
                "inputs": [f"o{p}" for p in sorted(parents)],
                "outputs": [f"o{j}"],
                **({"constraints": {"sites": [pin]}} if pin else {}),
            }
        )
    sizes = draw(st.lists(st.integers(0, 50 * 10**6), min_size=n, max_size=n))
    data = [{"id": f"o{j}", "size": sizes[j]} for j in range(n)]
    return {"name": "random", "steps": steps, "data": data}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data_dags(),
    st.sampled_from(["time", "cost", "carbon"]),
    st.sampled_from([1e6, 2e7, 1e9]),
    st.integers(0, 5),
)
def test_no_plan_puts_more_on_a_link_than_its_bandwidth(
    data: dict[str, Any], objective: str, bandwidth: float, seed: int
) -> None:
    wf = Workflow.from_dict(data)
    fed = three_sites(bandwidth)
    view = varying_view(fed, seed)
    c = PlanningConstraints()
    obj = Objective.parse(objective)
    for planner in (HEFTPlanner(), GreedyPlanner(), MarketPlanner()):
        plan = planner.plan(wf, fed, view, c, obj)
        assert check_plan(plan, wf, fed, view, c) == [], planner.name
        assert rate_overloads(plan.flows(), fed) == [], planner.name
    # time shifting moves transfers with their producers: still within every link
    model = CostModel(wf, fed, view, c)
    heft = HEFTPlanner().plan(wf, fed, view, c, obj)
    placed = {s: (a.site, a.start, a.end) for s, a in heft.assignments.items()}
    booked = {(f.item, f.dst): (f.start, f.end) for f in heft.flows() if f.crosses_sites}
    shifted, tr, _ = timeshift(model, placed, obj, heft.metrics.makespan_s * 1.5, booked)
    flows = model.flows(shifted, tr)
    assert rate_overloads(flows, fed) == []
    for f in flows:  # each transfer leaves after its producer ends, lands before its consumers
        assert f.start >= f.ready - 1e-9
        if f.consumer_start is not None and f.crosses_sites:
            assert (
                f.end
                <= min(shifted[c][1] for c in model.consumers[f.item] if shifted[c][0] == f.dst)
                + 1e-6
            )


# -- CP-SAT sees the links shared ------------------------------------------------------


def free_consumers(n: int = 2, work: float = 18.0) -> Workflow:
    """``fan(n)`` with the consumers free to run on ``slow`` (``work`` s) or ``fast``
    (``work / 2`` s after their 5 MB came over the 1 MB/s link)."""
    doc = fan(n).to_dict()
    for s in doc["steps"]:
        if s["id"].startswith("b"):
            s["work"] = work
            s.pop("constraints", None)
    return Workflow.from_dict(doc)


def test_cpsat_models_the_shared_link_and_finds_the_hand_computed_makespan() -> None:
    """Producers end at 10 s on ``slow``. A consumer on ``fast`` ends at 10 + 5 + 9 = 24 s;
    the second one there waits for the link: 15 + 5 + 9 = 29 s; on ``slow`` it ends at
    10 + 18 = 28 s. Best: 28 s (with unshared links a model would promise 24 s, and its
    plan would take 29 s)."""
    from orchestrator.placement.planners.cpsat import CPSATSettings, cpsat_unavailable, solve_cpsat

    assert cpsat_unavailable() is None
    fed, wf = two_sites(), free_consumers()
    view, c = static_view(fed), PlanningConstraints()
    model = CostModel(wf, fed, view, c)
    obj = Objective.parse("time")
    res = solve_cpsat(model, obj, {"time": 1.0}, None, CPSATSettings(time_limit=10.0))
    assert res.status == "OPTIMAL"
    assert res.objective == pytest.approx(28.0, abs=1e-3)
    assert res.plan is not None
    assert res.plan.metrics.makespan_s == pytest.approx(28.0)
    assert check_plan(res.plan, wf, fed, view, c) == []


@pytest.mark.parametrize("objective", ["time", "carbon", "cost"])
def test_the_cpsat_hint_is_a_solution_of_its_model(objective: str) -> None:
    """CP-SAT drops a hint that breaks one constraint without a word: with every variable
    fixed to the incumbent's hint, the model must still be feasible (transfers waiting for
    their link, a located input, time-varying carbon and prices, a deadline)."""
    from orchestrator.placement.planners.cpsat import CPSATSettings, solve_cpsat
    from orchestrator.placement.planners.incumbent import incumbents

    fed = three_sites(2e6)
    doc = free_consumers(4).to_dict()
    doc["data"].append({"id": "ref", "size": 3e6, "location": {"site": "edge", "path": "/r"}})
    doc["steps"][1]["inputs"].append("ref")
    wf = Workflow.from_dict(doc)
    view = varying_view(fed, 1)
    heft = HEFTPlanner().plan(wf, fed, view, PlanningConstraints(), Objective())
    c = PlanningConstraints(deadline=1.3 * heft.metrics.makespan_s)
    model = CostModel(wf, fed, view, c)
    obj = Objective.parse(objective)
    inc = incumbents(model, obj)
    hint = inc.best(obj)
    assert hint is not None
    assert any(f.start > f.ready for f in hint.flows() if f.crosses_sites)  # a link is shared
    res = solve_cpsat(model, obj, inc.ref, hint, CPSATSettings(time_limit=10.0, fix_hint=True))
    assert res.status in ("OPTIMAL", "FEASIBLE"), res.reason
    # and complete: every variable hinted, the linear pieces of time-varying cost and carbon
    # too (CP-SAT otherwise searches for the missing values before it has the incumbent)
    assert res.unhinted == 0


def test_cpsat_runs_only_neighbourhood_search_from_lns_only_steps_with_a_complete_hint(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """From ``lns_only_steps`` steps on, with a hint that sets every variable, both workers
    improve the incumbent (``use_lns_only``: the parameter reaches the real solver); below
    it, or with no hint to improve, CP-SAT's default portfolio. The optimiser passes its
    own setting (150 by default) and says so in its notes; the ``cpsat`` planner, the
    benchmark's reference, keeps the default portfolio. With LNS only, each search has the
    optimiser's shorter deterministic limit (``lns_deterministic_limit``, 0.03); otherwise
    CP-SAT's own (0.1)."""
    from ortools.sat.python import cp_model

    from orchestrator import ILPSettings, make_planner
    from orchestrator.placement.planners.cpsat import CPSATSettings, solve_cpsat
    from orchestrator.placement.planners.incumbent import incumbents

    seen: list[bool] = []
    limits: list[float] = []
    solve = cp_model.CpSolver.solve

    def spy(self: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(bool(self.parameters.use_lns_only))
        limits.append(self.parameters.lns_initial_deterministic_limit)
        return solve(self, *args, **kwargs)

    monkeypatch.setattr(cp_model.CpSolver, "solve", spy)
    fed = three_sites(2e6)
    wf = free_consumers(4)
    view = varying_view(fed, 1)
    heft = HEFTPlanner().plan(wf, fed, view, PlanningConstraints(), Objective())
    c = PlanningConstraints(deadline=1.3 * heft.metrics.makespan_s)
    model = CostModel(wf, fed, view, c)
    obj = Objective.parse("carbon")
    inc = incumbents(model, obj)
    hint = inc.best(obj)
    assert hint is not None
    n = len(model.steps)
    for steps, start, expected in ((n, hint, True), (n + 1, hint, False), (1, None, False)):
        cfg = CPSATSettings(time_limit=2.0, lns_only_steps=steps, lns_deterministic_limit=0.02)
        res = solve_cpsat(model, obj, inc.ref, start, cfg)
        assert res.lns_only is expected, (steps, start is None)
        assert seen[-1] is expected, (steps, start is None)
        assert limits[-1] == pytest.approx(0.02 if expected else 0.1), (steps, start is None)
        assert res.plan is not None, res.reason
        assert check_plan(res.plan, wf, fed, view, c) == []
        if start is not None:  # the search starts from the incumbent and keeps it at worst
            assert res.plan.metrics.carbon_kg <= hint.metrics.carbon_kg * (1 + 1e-6)
    opt = make_planner("ilp", ILPSettings(time_limit=3.0, lns_only_steps=1)).plan(
        wf, fed, view, c, obj
    )
    assert any(m.startswith("cp-sat:") and m.endswith("(LNS only)") for m in opt.notes)
    assert seen[-1] is True
    assert limits[-1] == pytest.approx(0.03)
    assert ILPSettings().lns_only_steps == 150
    make_planner("cpsat", ILPSettings(time_limit=2.0)).plan(wf, fed, view, c, obj)
    assert seen[-1] is False
    assert limits[-1] == pytest.approx(0.1)
    for kind in (ILPSettings, CPSATSettings):
        with pytest.raises(ValueError, match="lns_deterministic_limit must be > 0"):
            kind(lns_deterministic_limit=0.0)
