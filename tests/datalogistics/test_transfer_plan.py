"""Transfer plans from data flows: buffers, TTLs, order, and the shared capacity rule."""

from __future__ import annotations

from collections import defaultdict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from datalogistics.errors import BufferCapacityError
from datalogistics.flows import INBOUND, OUTBOUND, Flow, peak_buffer_usage
from datalogistics.transfer_plan import plan_transfers
from federation.model import Federation, load_demo_federation

FAT, HPC, GPU, EDGE, CLOUD = (
    "ddf-fatnode",
    "national-hpc",
    "gpu-centre",
    "edge-station",
    "cloud-burst",
)


def test_local_flows_use_no_buffer(demo_federation: Federation) -> None:
    plan = plan_transfers([Flow("a", 1e9, FAT, FAT, 0, 0, 0, 50)], demo_federation)
    assert plan.transfers == ()
    assert plan.allocations == ()
    assert len(plan.local_flows) == 1
    assert plan.bytes_crossing == 0
    assert plan.ok


def test_cross_site_flow_gets_two_buffers_with_ttls(demo_federation: Federation) -> None:
    flows = [Flow("vis", 2e9, EDGE, FAT, ready=10, start=20, end=40, release=100)]
    plan = plan_transfers(flows, demo_federation, slack=30)
    out = next(a for a in plan.allocations if a.role == OUTBOUND)
    inn = next(a for a in plan.allocations if a.role == INBOUND)
    assert (out.site, out.t0, out.t1, out.expires_at) == (EDGE, 10, 40, 70)
    assert (inn.site, inn.t0, inn.t1, inn.expires_at) == (FAT, 20, 100, 130)
    assert inn.ttl == 110
    [t] = plan.transfers
    assert (t.src, t.dst, t.size) == (EDGE, FAT, 2e9)
    assert t.estimated_seconds == pytest.approx(demo_federation.transfer_time(EDGE, FAT, 2e9))
    with_start = [Flow("vis", 2e9, EDGE, FAT, 10, 20, 40, 100, consumer_start=45)]
    inn = next(
        a for a in plan_transfers(with_start, demo_federation, 30).allocations if a.role == INBOUND
    )
    assert inn.expires_at == 75  # the planned consumer start + slack


def test_item_to_several_sites_is_held_once_at_the_source(demo_federation: Federation) -> None:
    flows = [
        Flow("cal", 1e9, HPC, FAT, 0, 5, 15, 60),
        Flow("cal", 1e9, HPC, GPU, 0, 8, 12, 30),
        Flow("cal", 1e9, HPC, GPU, 0, 8, 12, 50),  # a second consumer at GPU: moved once
    ]
    plan = plan_transfers(flows, demo_federation, slack=0)
    roles = defaultdict(list)
    for a in plan.allocations:
        roles[(a.site, a.role)].append(a)
    assert len(roles[(HPC, OUTBOUND)]) == 1
    assert roles[(HPC, OUTBOUND)][0].t1 == 15
    assert roles[(GPU, INBOUND)][0].t1 == 50
    assert [t.dst for t in plan.transfers] == [FAT, GPU]  # by planned start
    assert plan.bytes_crossing == 2e9


def test_capacity_is_checked_with_the_shared_rule(demo_federation: Federation) -> None:
    cap = demo_federation.site(EDGE).buffer_capacity
    flows = [
        Flow("a", cap * 0.6, HPC, EDGE, 0, 0, 10, 100),
        Flow("b", cap * 0.6, HPC, EDGE, 0, 50, 60, 100),
    ]
    plan = plan_transfers(flows, demo_federation)
    assert not plan.ok
    assert any(EDGE in p for p in plan.problems)
    assert plan.peak[EDGE] == pytest.approx(cap * 1.2)
    with pytest.raises(BufferCapacityError, match=EDGE):
        plan_transfers(flows, demo_federation, strict=True)
    # Back to back they fit: the first is released when the second arrives.
    ok = [Flow("a", cap * 0.6, HPC, EDGE, 0, 0, 10, 50), flows[1]]
    assert plan_transfers(ok, demo_federation).ok


def test_unlinked_sites_and_unknown_sites_are_problems(demo_federation: Federation) -> None:
    unlinked = Federation(name="islands", sites=demo_federation.sites)
    plan = plan_transfers([Flow("x", 1, FAT, EDGE, 0, 0, 1, 2)], unlinked)
    assert any("no link" in p for p in plan.problems)
    plan = plan_transfers([Flow("x", 1, "mars", FAT, 0, 0, 1, 2)], demo_federation)
    assert any("mars" in p for p in plan.problems)


SITES = [FAT, HPC, GPU, EDGE, CLOUD]


@st.composite
def flow_sets(draw: st.DrawFn) -> list[Flow]:
    flows = []
    for i in range(draw(st.integers(1, 12))):
        src, dst = draw(st.sampled_from(SITES)), draw(st.sampled_from(SITES))
        ready = draw(st.floats(0, 100))
        start = ready + draw(st.floats(0, 50))
        end = start + draw(st.floats(0, 50))
        release = end + draw(st.floats(0, 50))
        flows.append(
            Flow(f"i{i % 5}", draw(st.floats(1, 1e12)), src, dst, ready, start, end, release)
        )
    return flows


@settings(max_examples=60, deadline=None)
@given(flow_sets())
def test_allocations_reproduce_the_shared_peaks(flows: list[Flow]) -> None:
    """The buffers the plan creates occupy, at peak, what the ILP's rule says."""
    fed = load_demo_federation()
    plan = plan_transfers(flows, fed)
    by_site: dict[str, list[tuple[float, float, float]]] = defaultdict(list)
    for a in plan.allocations:
        by_site[a.site].append((a.t0, a.t1, a.size))
    for site, spans in by_site.items():
        # brute force, independent of any sweep: the occupancy at every moment an allocation
        # starts, summing every allocation live then (half-open [t0, t1))
        peak = max(
            (sum(size for t0, t1, size in spans if t0 <= t < t1) for t, _, _ in spans),
            default=0.0,
        )
        # a zero-length allocation occupies nothing: its site may be absent from the peaks
        assert peak == pytest.approx(plan.peak.get(site, 0.0))
    crossing = [f for f in flows if f.crosses_sites]
    assert set(plan.peak) == set(peak_buffer_usage(crossing))
    assert all(a.expires_at >= a.t0 for a in plan.allocations)
    assert {(t.item, t.src, t.dst) for t in plan.transfers} == {
        (f.item, f.src, f.dst) for f in crossing
    }


def test_relay_site_holds_an_inbound_and_an_outbound_copy(demo_federation: Federation) -> None:
    """EDGE -> FAT -> HPC: FAT receives the item and forwards it; the forward's ``ready``
    coincides with the arrival's start, and the roles still come out right."""
    flows = [
        Flow("raw", 1e9, EDGE, FAT, 0, 10, 20, 60),
        Flow("raw", 1e9, FAT, HPC, 10, 25, 35, 90),
    ]
    plan = plan_transfers(flows, demo_federation, slack=5)
    at_fat = sorted((a.role, a.t0, a.t1, a.expires_at) for a in plan.allocations if a.site == FAT)
    assert at_fat == [(INBOUND, 10, 60, 65), (OUTBOUND, 10, 35, 40)]
