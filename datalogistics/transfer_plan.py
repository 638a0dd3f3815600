"""From the data flows of a placement plan to a transfer plan.

Input: the ``Flow`` records of a plan (``Plan.flows()`` in the orchestrator;
this package sits below it and sees only the flows). Output:

* which flows cross sites (a local flow, ``src == dst``, needs no buffer and
  no transfer: the data stays in the site's working storage);
* the buffer allocations per site: exactly the holds of
  ``datalogistics.flows.buffer_holds``, the rule the placement ILP and the
  plan checker use, so the capacity checked here is the capacity the planner
  constrained (peaks by ``peak_buffer_usage``, overflows by
  ``buffer_violations``, against each site's ``buffer_capacity``);
* the lifetime of each buffer: an inbound buffer (at the consumer's site)
  lives until the planned start of the item's last consumer there plus
  ``slack`` (``Flow.consumer_start``, or the flow's ``release`` when the
  planner did not give it); an outbound buffer (at the producer's site) until
  its last transfer ends plus ``slack``. TTL is a safety net: a buffer is
  normally destroyed earlier, when its consumers have drained it;
* the transfer order: by planned start, larger items first on ties.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from datalogistics.errors import BufferCapacityError
from datalogistics.flows import (
    INBOUND,
    Flow,
    buffer_holds,
    buffer_violations,
    peak_buffer_usage,
)

if TYPE_CHECKING:
    from federation.model import Federation


@dataclass(frozen=True, slots=True)
class BufferAllocation:
    """A buffer to create at ``site`` for ``item``: ``size`` bytes from ``t0``, destroyed at
    ``expires_at`` at the latest (``ttl = expires_at - t0``)."""

    site: str
    item: str
    size: float
    role: str
    t0: float
    t1: float
    expires_at: float

    @property
    def ttl(self) -> float:
        return self.expires_at - self.t0


@dataclass(frozen=True, slots=True)
class PlannedTransfer:
    """One cross-site move, in the order the engine should start them."""

    order: int
    item: str
    size: float
    src: str
    dst: str
    start: float
    end: float
    estimated_seconds: float


@dataclass(frozen=True)
class TransferPlan:
    """The data logistics of a placement plan (see the module docstring)."""

    transfers: tuple[PlannedTransfer, ...]
    allocations: tuple[BufferAllocation, ...]
    local_flows: tuple[Flow, ...]
    peak: dict[str, float]
    capacity: dict[str, float]
    problems: tuple[str, ...]

    @property
    def bytes_crossing(self) -> float:
        """Bytes moved between sites."""
        return sum(t.size for t in self.transfers)

    @property
    def ok(self) -> bool:
        return not self.problems

    def per_site(self) -> dict[str, dict[str, float]]:
        """Per site: buffers allocated, bytes allocated, peak bytes held at once, capacity."""
        out: dict[str, dict[str, float]] = {}
        for site in sorted({a.site for a in self.allocations} | set(self.peak)):
            allocs = [a for a in self.allocations if a.site == site]
            out[site] = {
                "buffers": len(allocs),
                "bytes": sum(a.size for a in allocs),
                "peak": self.peak.get(site, 0.0),
                "capacity": self.capacity.get(site, math.inf),
            }
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "transfers": [asdict(t) for t in self.transfers],
            "allocations": [{**asdict(a), "ttl": a.ttl} for a in self.allocations],
            "local_flows": len(self.local_flows),
            "bytes_crossing": self.bytes_crossing,
            "per_site": self.per_site(),
            "problems": list(self.problems),
        }


def _unique(flows: Iterable[Flow]) -> list[Flow]:
    """One flow per (item, src, dst): an item read by several consumers at a site moves once."""
    merged: dict[tuple[str, str, str], Flow] = {}
    for f in flows:
        key = (f.item, f.src, f.dst)
        if key not in merged:
            merged[key] = f
            continue
        g = merged[key]
        starts = [x for x in (f.consumer_start, g.consumer_start) if x is not None]
        merged[key] = Flow(
            f.item,
            max(f.size, g.size),
            f.src,
            f.dst,
            min(f.ready, g.ready),
            min(f.start, g.start),
            max(f.end, g.end),
            max(f.release, g.release),
            max(starts) if starts else None,
            f.external,
        )
    return list(merged.values())


def plan_transfers(
    flows: Iterable[Flow], federation: Federation, slack: float = 600.0, strict: bool = False
) -> TransferPlan:
    """The transfer plan of ``flows`` over ``federation`` (see the module docstring).

    ``slack`` (seconds) is added to every buffer's planned end to give its
    TTL. Problems (a site's buffers over capacity, a cross-site flow without
    a link, an unknown site) are listed in ``problems``; with ``strict`` they
    raise ``BufferCapacityError`` instead.
    """
    if slack < 0:
        raise ValueError(f"slack must be >= 0 seconds, got {slack}")
    flows = _unique(flows)
    known = set(federation.site_ids)
    problems = [
        f"flow of {f.item}: unknown site {s!r}"
        for f in flows
        for s in (f.src, f.dst)
        if s not in known and not (f.external and s == f.src and "://" in s)  # a URL input
    ]
    crossing = [f for f in flows if f.crosses_sites]
    local = tuple(f for f in flows if not f.crosses_sites)
    inbound = {(f.dst, f.item, f.start): f for f in crossing}
    outbound_end: dict[tuple[str, str], float] = {}
    for f in crossing:
        outbound_end[(f.src, f.item)] = max(outbound_end.get((f.src, f.item), f.end), f.end)

    allocations = []
    for h in buffer_holds(crossing):
        into = inbound.get((h.site, h.item, h.t0)) if h.role == INBOUND else None
        if into is not None:
            last_use = into.consumer_start if into.consumer_start is not None else into.release
            expires = max(last_use, into.end) + slack
        else:
            expires = outbound_end[(h.site, h.item)] + slack
        allocations.append(BufferAllocation(h.site, h.item, h.size, h.role, h.t0, h.t1, expires))
    allocations.sort(key=lambda a: (a.t0, a.site, a.item, a.role))

    ordered = sorted(crossing, key=lambda f: (f.start, -f.size, f.item, f.dst))
    transfers = []
    for i, f in enumerate(ordered):
        est = math.inf
        if f.src in known and f.dst in known:
            est = federation.transfer_time(f.src, f.dst, f.size)
            if math.isinf(est):
                problems.append(f"flow of {f.item}: no link from {f.src} to {f.dst}")
        transfers.append(PlannedTransfer(i, f.item, f.size, f.src, f.dst, f.start, f.end, est))

    capacity = {s.id: float(s.buffer_capacity) for s in federation.sites}
    problems.extend(buffer_violations(crossing, capacity))
    if strict and problems:
        raise BufferCapacityError("; ".join(problems))
    return TransferPlan(
        transfers=tuple(transfers),
        allocations=tuple(allocations),
        local_flows=local,
        peak=peak_buffer_usage(crossing),
        capacity=capacity,
        problems=tuple(problems),
    )
