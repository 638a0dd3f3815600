"""Group moves: several steps moved to one site at once, their effect counted exactly.

A move of one step can be worse than staying while the same move of the step *with* its
neighbours is better: a transfer is paid once per item and destination site
(``CostModel.flows``), so moving one consumer of an item off the producer's site costs the
whole transfer (a cloud's egress), and moving it back saves nothing while another consumer
of the item stays where it is. The slack descent (``planners.descent``) and the local
search (``improve``) therefore also try, besides single steps:

* **consumers**: every consumer of one item on one site, moved to the item's source
  site (the transfer of that item to that site disappears);
* **with predecessors** / **with successors**: a step with its parents, or with its
  children, moved to one site (the edges between them stay on one site): a site one of
  them is on, or, for up to ``SMALL_GROUP`` steps, a site where the step alone would
  gain (``promising``) but for its transfers;
* **level**: every step of one category on one site (WfCommons task names carry
  the category: ``mBackground_ID...``), moved to another site.

``group_effect`` counts a move's change of cost (run cost at the current starts, energy price
included, and the EUR of every transfer it adds or removes, one per item and destination
site), energy and carbon, and the least seconds it delays the plan's steps
(durations and transfer delays on the new sites, along the group's own edges; queueing for
cores is not counted: callers list-schedule the result).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass

from orchestrator.placement.costs import CostModel

Placed = Mapping[str, tuple[str, float, float]]

GROUP_KINDS = ("consumers", "predecessors", "successors", "level")
"""The kinds of group moves (module docstring), in the order they are generated."""
SMALL_GROUP = 4
"""A step and its parents (or children) up to this many are also tried on sites none of
them is on (where ``promising``)."""
HUB_DEGREE = 16
"""A step with more parents and children than this (a merge of a thousand branches) is
not added to the group of each of its neighbours: each such group would count the hub's
thousand transfers (11 s on seismology-1000p)."""


@dataclass(frozen=True)
class GroupMove:
    """Steps moved together to ``site``; ``kind``: one of ``GROUP_KINDS`` (or ``single``)."""

    steps: tuple[str, ...]
    site: str
    kind: str


@dataclass(frozen=True)
class MoveEffect:
    """What a move changes: EUR, kWh and kgCO2e saved (positive: better), and whether it
    fits in the steps' slack (``fits``; False when a needed link is missing)."""

    eur: float
    kwh: float
    kg: float
    fits: bool


class ItemIndex:
    """Per step the items it produces and consumes that cross sites when split, and per
    item its producer (None for a located external input), size and source (site)."""

    def __init__(self, model: CostModel) -> None:
        wf = model.workflow
        self.producer: dict[str, str | None] = {}
        self.size: dict[str, float] = {}
        self.outputs: dict[str, list[str]] = defaultdict(list)
        self.inputs: dict[str, list[str]] = defaultdict(list)
        for item, consumers in model.consumers.items():
            prod = wf.producer(item)
            self.producer[item] = prod
            self.size[item] = wf.item(item).size
            if prod is not None:
                self.outputs[prod].append(item)
            for c in consumers:
                self.inputs[c].append(item)
        self.origin = model.origin


def _degree(model: CostModel, step: str) -> int:
    return len(model.parents_of[step]) + len(model.children_of[step])


def _category(model: CostModel, step: str) -> str:
    s = model.step_by_id[step]
    if s.category:
        return s.category
    name = s.name or s.id
    return name.split("_ID")[0] if "_ID" in name else name.rsplit("_", 1)[0]


def group_moves(
    model: CostModel,
    sites: Mapping[str, str],
    index: ItemIndex,
    kinds: Iterable[str] = GROUP_KINDS,
    promising: Callable[[str, str], bool] | None = None,
) -> list[GroupMove]:
    """The group moves of ``kinds`` from the placement ``sites`` (step -> site); only groups
    of two steps or more whose every step is eligible on the target and not already there.
    ``promising(step, site)``: whether a step and its parents (or children) are tried on a
    site none of them is on (all eligible sites when None)."""
    wanted = set(kinds)
    unknown = wanted - set(GROUP_KINDS)
    if unknown:
        raise ValueError(f"unknown group kind(s) {sorted(unknown)}: use {', '.join(GROUP_KINDS)}")
    out: list[GroupMove] = []
    seen: set[tuple[frozenset[str], str]] = set()

    def add(steps: Iterable[str], site: str, kind: str) -> None:
        group = tuple(sorted({s for s in steps if sites[s] != site}))
        if len(group) < 2 or any(site not in model.eligible[s] for s in group):
            return
        key = (frozenset(group), site)
        if key not in seen:
            seen.add(key)
            out.append(GroupMove(group, site, kind))

    if "consumers" in wanted:
        for item, consumers in model.consumers.items():
            prod = index.producer[item]
            src = sites[prod] if prod is not None else index.origin.get(item)
            if src is None or src not in model.site_by_id:
                continue
            by_site: dict[str, list[str]] = defaultdict(list)
            for c in consumers:
                if sites[c] != src:
                    by_site[sites[c]].append(c)
            for members in by_site.values():
                if len(members) == 1:
                    # a lone consumer: with its own children (its outputs follow it)
                    members = [*members, *model.children_of[members[0]]]
                add(members, src, "consumers")
    for kind, near in (("predecessors", model.parents_of), ("successors", model.children_of)):
        if kind not in wanted:
            continue
        for step in sites:
            if not near[step]:
                continue
            # a few steps to any site, more gathered on a site one of them is on already
            if any(_degree(model, n) > HUB_DEGREE for n in near[step]):
                continue  # a hub's own group is tried once, not with each of its neighbours
            pack = (step, *near[step])
            targets = {sites[m] for m in pack}
            if len(pack) <= SMALL_GROUP:
                targets.update(
                    x for x in model.eligible[step] if promising is None or promising(step, x)
                )
            for site in sorted(targets):
                add(pack, site, kind)
    if "level" in wanted:
        by_cat: dict[tuple[str, str], list[str]] = defaultdict(list)
        for step, site in sites.items():
            by_cat[(_category(model, step), site)].append(step)
        for (_, here), members in by_cat.items():
            for site in model.sites:
                if site != here:
                    add(members, site, "level")
    return out


def transfer_eur(model: CostModel, index: ItemIndex, item: str, sites: Mapping[str, str]) -> float:
    """EUR of moving ``item`` to every site that consumes it under ``sites`` (inf: unlinked)."""
    prod = index.producer[item]
    src = sites[prod] if prod is not None else index.origin[item]
    if src not in model.site_by_id:
        return 0.0  # a URL input costs nothing
    size = index.size[item]
    dsts = {sites[c] for c in model.consumers[item]}
    return sum(model.transfer_cost(src, d, size) for d in dsts if d != src)


def placement_values(model: CostModel, index: ItemIndex, placed: Placed) -> dict[str, float]:
    """Makespan, cost, energy and carbon of a full placement, as ``CostModel.evaluate``
    counts them (one transfer per item and destination site) without building its flows:
    the descent scores hundreds of list schedules."""
    makespan, cost, energy, carbon = model.run_totals(placed)
    sites = {s: v[0] for s, v in placed.items()}
    cost += sum(transfer_eur(model, index, item, sites) for item in index.producer)
    return {"time": makespan, "cost": cost, "energy": energy, "carbon": carbon}


class _Overlay(Mapping[str, str]):
    """``base`` with the steps of ``moved`` on ``site`` (a read-only view, no copy)."""

    def __init__(self, base: Mapping[str, str], moved: frozenset[str], site: str) -> None:
        self.base, self.moved, self.site = base, moved, site

    def __getitem__(self, step: str) -> str:
        return self.site if step in self.moved else self.base[step]

    def __iter__(self) -> Iterator[str]:
        return iter(self.base)

    def __len__(self) -> int:
        return len(self.base)


def group_effect(
    model: CostModel,
    placed: Placed,
    sites: Mapping[str, str],
    index: ItemIndex,
    move: GroupMove,
    slack: Mapping[str, float] | None = None,
    base: Mapping[str, float] | None = None,
    worth: Callable[[MoveEffect], bool] | None = None,
) -> MoveEffect:
    """The change ``move`` makes to the placement ``placed`` (``sites``: its sites), at the
    steps' current starts (module docstring). ``fits``: every moved step, delayed by its
    own lengthening and its moved parents' (along the group's edges, in topological
    order), still ends within its ``slack`` towards its children that stay (``slack``
    None: always fits unless a link is missing). ``base``: per item, the EUR of its
    transfers under ``sites`` (``transfer_eur``; computed when None). ``worth``: when it
    says a move's savings are not worth it, the delays are not computed (``fits`` False)."""
    group = frozenset(move.steps)
    alt = move.site
    after = _Overlay(sites, group, alt)
    eur = kwh = kg = 0.0
    for j in move.steps:
        here, start, _ = placed[j]
        eur += model.run_cost(j, here, start) - model.run_cost(j, alt, start)
        kwh += model.energy_kwh(j, here) - model.energy_kwh(j, alt)
        kg += model.carbon_kg(j, here, start) - model.carbon_kg(j, alt, start)
    items = {i for j in move.steps for i in (*index.outputs[j], *index.inputs[j])}
    for item in items:
        old = base[item] if base is not None else transfer_eur(model, index, item, sites)
        new = transfer_eur(model, index, item, after)
        if math.isinf(new):
            return MoveEffect(eur, kwh, kg, False)
        eur += old - new
    if worth is not None and not worth(MoveEffect(eur, kwh, kg, True)):
        return MoveEffect(eur, kwh, kg, False)
    # the delays: along the group's edges in topological order
    shift: dict[str, float] = {}
    fits = True
    for j in _topological(model, move.steps):
        here = sites[j]
        start_shift = 0.0
        for p in model.parents_of[j]:
            old_d = model.edge_delay(p, j, sites[p], here)
            new_d = model.edge_delay(p, j, after[p], alt)
            if math.isinf(new_d):
                return MoveEffect(eur, kwh, kg, False)
            start_shift = max(start_shift, shift.get(p, 0.0) + new_d - old_d)
        if j in model.located:
            start_shift = max(start_shift, model.input_delay(j, alt) - model.input_delay(j, here))
        end_shift = max(0.0, start_shift) + model.duration(j, alt) - model.duration(j, here)
        shift[j] = end_shift
        late = end_shift
        for c in model.children_of[j]:
            if c in group:
                continue
            new_d = model.edge_delay(j, c, alt, sites[c])
            if math.isinf(new_d):
                return MoveEffect(eur, kwh, kg, False)
            late = max(late, end_shift + new_d - model.edge_delay(j, c, here, sites[c]))
        if slack is not None and late > slack[j] + 1e-9:
            fits = False
    return MoveEffect(eur, kwh, kg, fits)


def _topological(model: CostModel, steps: Iterable[str]) -> list[str]:
    """``steps`` parents first (Kahn's order within the set)."""
    members = set(steps)
    waiting = {s: sum(p in members for p in model.parents_of[s]) for s in members}
    ready = sorted(s for s, n in waiting.items() if n == 0)
    out: list[str] = []
    while ready:
        s = ready.pop()
        out.append(s)
        for c in model.children_of[s]:
            if c in members:
                waiting[c] -= 1
                if waiting[c] == 0:
                    ready.append(c)
    return out
