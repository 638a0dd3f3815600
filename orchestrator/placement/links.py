"""Shared link bandwidth: every transfer is booked on the link it crosses.

A link ``src -> dst`` of bandwidth ``B`` (bytes/s) and latency ``L`` (s) carries one
transfer at a time at its full bandwidth: a transfer of ``b`` bytes that gets the link
at ``t`` holds it during ``[t, t + b / B)`` and its data is at ``dst`` at
``t + b / B + L`` (the latency is the propagation delay: it holds no bandwidth). Two
transfers ready at once on one link therefore take twice as long as one: the second
waits for the first. This is the contention model of Sinnen and Sousa ("Communication
contention in task scheduling", IEEE TPDS 16(6), 2005): edges are scheduled on links as
tasks on processors. A booking may use a gap between earlier bookings (insertion).

Who books: the list scheduler (``schedule.list_schedule``) when it places a consumer (a
transfer per item and destination site, shared by every consumer of the item there);
time shifting (``timeshift``) moves bookings later with their producer; a placement given
without bookings gets them by ``book_transfers`` (first come, first served on each link).

What every plan must keep, whichever way it shares a link (``checker``): a flow of ``b``
bytes from ``start`` to ``end`` uses its link at the constant rate
``b / (end - start - L)`` during ``[start, end - L)``; at every instant the rates of a
link's flows sum to at most ``B``. A booking here is the case rate ``= B``, no overlap.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from orchestrator.placement.costs import CostModel
    from orchestrator.placement.plan import Plan

Link = tuple[str, str]
Transfers = dict[tuple[str, str], tuple[float, float]]
"""Booked transfers of a placement: (item, destination site) -> (start, end) in plan seconds."""

EPS = 1e-9
"""Slack (s) when comparing booking edges: back-to-back bookings touch, they do not overlap."""


@dataclass(frozen=True)
class Booking:
    """One transfer booked on a link: ``item`` from ``src`` to ``dst``, holding the link during
    ``[start, start + hold)``, its data at ``dst`` at ``end`` (``start + hold + latency``)."""

    item: str
    src: str
    dst: str
    start: float
    hold: float
    end: float


class LinkBook:
    """The bookings of every link: sorted, disjoint ``[start, end)`` holds per link."""

    def __init__(self) -> None:
        self.busy: dict[Link, list[tuple[float, float]]] = defaultdict(list)

    def copy(self) -> LinkBook:
        out = LinkBook()
        for k, v in self.busy.items():
            out.busy[k] = list(v)
        return out

    def earliest(
        self, link: Link, ready: float, hold: float, extra: Iterable[tuple[float, float]] = ()
    ) -> float:
        """Earliest ``t >= ready`` with ``[t, t + hold)`` free of the link's bookings and of
        ``extra`` (holds not booked yet, e.g. the other transfers of one candidate)."""
        if hold <= 0:
            return ready
        held = self.busy.get(link, [])
        extra = sorted(extra)
        t = ready
        while True:
            t = _first_gap(held, t, hold)
            moved = _first_gap(extra, t, hold) if extra else t
            if moved == t:
                return t
            t = moved

    def latest(self, link: Link, lo: float, end_by: float, hold: float) -> float | None:
        """Latest ``t`` in ``[lo, end_by - hold]`` with ``[t, t + hold)`` free (None: none)."""
        t = end_by - hold
        if hold <= 0:
            return t if t >= lo - EPS else None
        held = self.busy.get(link, [])
        i = bisect.bisect_left(held, end_by - EPS, key=lambda iv: iv[0])
        for a, b in reversed(held[:i]):
            if b <= t + EPS:
                break
            t = min(t, a - hold)
            if t < lo - EPS:
                return None
        return t if t >= lo - EPS else None

    def book(self, link: Link, start: float, hold: float) -> None:
        if hold > 0:
            bisect.insort(self.busy[link], (start, start + hold))

    def release(self, link: Link, start: float, hold: float) -> None:
        """Remove the booking ``book(link, start, hold)`` made."""
        if hold > 0:
            self.busy[link].remove((start, start + hold))


def _first_gap(held: list[tuple[float, float]], t: float, hold: float) -> float:
    """Earliest ``t' >= t`` with ``[t', t' + hold)`` clear of the sorted, disjoint ``held``."""
    i = bisect.bisect_right(held, t + EPS, key=lambda iv: iv[1])
    for a, b in held[i:]:
        if t + hold <= a + EPS:
            return t
        t = max(t, b)
    return t


@dataclass(frozen=True)
class Need:
    """A transfer a placement needs: ``item`` from ``src`` to ``dst``, ready at ``ready``,
    wanted by ``need_by`` (the start of its first consumer at ``dst``)."""

    ready: float
    need_by: float
    item: str
    size: float
    src: str
    dst: str


def needs_of(
    model: CostModel, placed: Mapping[str, tuple[str, float, float]]
) -> dict[tuple[str, str], Need]:
    """Every transfer on a link ``placed`` implies, per (item, destination site)."""
    out: dict[tuple[str, str], Need] = {}
    for item, consumers in model.consumers.items():
        producer = model.workflow.producer(item)
        if producer is None:
            src, ready = model.origin[item], 0.0
        else:
            src, _, ready = placed[producer]
        if src not in model.site_by_id:  # a URL input: no link
            continue
        size = model.workflow.item(item).size
        for c in consumers:
            dst, start, _ = placed[c]
            if dst == src:
                continue
            key = (item, dst)
            prev = out.get(key)
            if prev is None or start < prev.need_by:
                out[key] = Need(ready, start, item, size, src, dst)
    return out


def book_transfers(model: CostModel, placed: Mapping[str, tuple[str, float, float]]) -> Transfers:
    """Bookings for a placement that carries none: on each link, first come (ready) first
    served, ties by the consumer's start, each transfer at the earliest free gap.

    The placement's consumers may then start before their data arrives (the checker says
    so): the planners book while they place, and carry their bookings with the placement.
    """
    book = LinkBook()
    out: Transfers = {}
    needs = sorted(needs_of(model, placed).values(), key=lambda n: (n.ready, n.need_by, n.item))
    for n in needs:
        latency, bandwidth, _ = model.links[(n.src, n.dst)]
        hold = n.size / bandwidth
        start = book.earliest((n.src, n.dst), n.ready, hold)
        book.book((n.src, n.dst), start, hold)
        out[(n.item, n.dst)] = (start, start + hold + latency)
    return out


def rebuild(
    model: CostModel,
    placed: Mapping[str, tuple[str, float, float]],
    transfers: Mapping[tuple[str, str], tuple[float, float]],
) -> LinkBook:
    """The ``LinkBook`` holding ``transfers`` of ``placed`` (holds recomputed from the links)."""
    book = LinkBook()
    for (item, dst), (start, _) in transfers.items():
        producer = model.workflow.producer(item)
        src = model.origin.get(item) if producer is None else placed[producer][0]
        if src is None or src == dst or (src, dst) not in model.links:
            continue
        book.book((src, dst), start, model.workflow.item(item).size / model.links[(src, dst)][1])
    return book


def transfers_of(plan: Plan) -> Transfers:
    """The booked transfers a plan carries (its cross-site flows' start and end)."""
    return {(f.item, f.dst): (f.start, f.end) for f in plan.flow_list if f.crosses_sites}
