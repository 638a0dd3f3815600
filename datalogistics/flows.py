"""Data flows between sites and the ephemeral-buffer space they hold.

One rule, shared by the placement ILP, the plan checker and the transfer
planner (so the capacity they reason about is the same):

* A cross-site flow moves ``size`` bytes of one item from ``src`` to ``dst``.
  The item sits in ``src``'s buffer from ``ready`` (its producer's end) until
  the flow's ``end``, and in ``dst``'s buffer from the flow's ``start`` until
  ``release`` (the end of the last consumer of the item at ``dst``).
* An item read by several consumers at one destination is moved once.
* A local flow (``src == dst``) uses no buffer: the data stays in the site's
  working storage.

At ``src`` an item that leaves for several destinations is held once, from
``ready`` until the last of those flows ends.

An *external* flow stages a workflow's external input from where it lives before the
run (a path at a site, or a URL; then ``src`` is the URL) into the consumer's buffer:
its source holds nothing in a buffer (the item is in the site's storage or elsewhere),
so only the destination's inbound hold counts.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Flow:
    """One item moving from the site holding it to a site that consumes it."""

    item: str
    size: float
    src: str
    dst: str
    ready: float
    start: float
    end: float
    release: float
    consumer_start: float | None = None
    """Planned start of the last consumer of the item at ``dst``, when the planner knows it
    (the transfer plan sets the destination buffer's TTL from it; else from ``release``)."""
    external: bool = False
    """An external input staged from where it lives (``src`` is its site, or its URL): no
    outbound buffer hold at the source."""

    @property
    def crosses_sites(self) -> bool:
        return self.src != self.dst


INBOUND = "inbound"
OUTBOUND = "outbound"


@dataclass(frozen=True, slots=True)
class Hold:
    """``size`` bytes of ``item`` held in ``site``'s buffer during ``[t0, t1)``.

    ``role`` is ``"inbound"`` for the copy a destination receives and
    ``"outbound"`` for the copy a source keeps until its transfers end.
    """

    site: str
    item: str
    size: float
    t0: float
    t1: float
    role: str = INBOUND


def buffer_holds(flows: Iterable[Flow]) -> list[Hold]:
    """The buffer holds that ``flows`` imply, by the rule in the module docstring."""
    at_src: dict[tuple[str, str], list[Flow]] = defaultdict(list)
    holds: list[Hold] = []
    for f in flows:
        if not f.crosses_sites:
            continue
        if not f.external:
            at_src[(f.src, f.item)].append(f)
        holds.append(Hold(f.dst, f.item, f.size, f.start, max(f.release, f.end), INBOUND))
    for (site, item), fs in at_src.items():
        t0, t1 = min(f.ready for f in fs), max(f.end for f in fs)
        holds.append(Hold(site, item, fs[0].size, t0, t1, OUTBOUND))
    return holds


def peak_buffer_usage(flows: Iterable[Flow]) -> dict[str, float]:
    """Highest number of bytes held at once in each site's buffer."""
    events: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for h in buffer_holds(flows):
        if h.t1 > h.t0:
            events[h.site].append((h.t0, h.size))
            events[h.site].append((h.t1, -h.size))
    peaks: dict[str, float] = {}
    for site, evs in events.items():
        # Releases before acquisitions at the same instant: back-to-back holds fit.
        evs.sort(key=lambda e: (e[0], e[1]))
        level = peak = 0.0
        for _, delta in evs:
            level += delta
            peak = max(peak, level)
        peaks[site] = peak
    return peaks


def buffer_violations(
    flows: Iterable[Flow], capacity: Mapping[str, float], tolerance: float = 1e-6
) -> list[str]:
    """Sites whose peak buffer use exceeds ``capacity`` (bytes), as readable messages."""
    out = []
    for site, peak in sorted(peak_buffer_usage(flows).items()):
        cap = capacity.get(site)
        if cap is not None and peak > cap * (1 + tolerance):
            out.append(f"site {site}: buffers need {peak:.0f} bytes at peak, capacity {cap:.0f}")
    return out
