"""Workflows: a DAG of steps that consume and produce data items.

A ``Step`` asks for cores, memory and GPUs, carries its ``work`` in core-seconds
at the reference speed (a 1 GHz reference core, see ``federation.model.Site``),
the data items it reads and writes, and its placement constraints. A
``Workflow`` validates the whole graph once (unique ids, known references, no
cycle) and then answers DAG queries: topological order, levels, critical path,
total work and the bytes that flow on each edge.

Edges come from two sources and are merged: explicit ordering (``after``) and
data dependencies (the producer of an item a step reads).

The native format (YAML or JSON)::

    name: ddf-calibration
    data:
      - {id: ms, size: 1.2 TB, allowed_jurisdictions: [FR]}
      - {id: solutions, size: 2 GB}
    steps:
      - {id: killms, cores: 120, memory: 46 GB, work: 1.6e7, inputs: [ms], outputs: [solutions]}
      - {id: ddfacet, cores: 120, work: 1.0e7, inputs: [ms, solutions], after: [killms]}
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PrivateAttr

from datalogistics.items import DataItem
from federation.errors import Problem, Problems, validate_document
from federation.jurisdictions import check_jurisdiction
from federation.units import Bytes, Seconds
from orchestrator.errors import InvalidWorkflow

StepId = Annotated[str, Field(min_length=1, max_length=512)]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)


class StepConstraints(_Frozen):
    """Where and when a step may run.

    ``jurisdictions``: site jurisdictions allowed (``EU`` admits the member
    states); ``sites``: an allow-list of site ids; ``labels``: site labels that
    must match; ``release``: earliest start (s from the workflow start);
    ``deadline``: latest finish (s from the workflow start).
    """

    jurisdictions: tuple[Annotated[str, AfterValidator(check_jurisdiction)], ...] | None = None
    sites: tuple[str, ...] | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    release: Seconds = Field(default=0.0, ge=0)
    deadline: Seconds | None = Field(default=None, gt=0)


class Step(_Frozen):
    """One unit of work of a workflow."""

    id: StepId
    name: str = ""
    category: str = Field(default="", description="kind of step, e.g. a WfCommons task category")
    cores: int = Field(default=1, gt=0)
    memory: Bytes = Field(default=0.0, ge=0, description="bytes")
    gpus: int = Field(default=0, ge=0)
    work: float = Field(ge=0, description="core-seconds at the reference speed")
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    after: tuple[str, ...] = Field(default=(), description="steps that must finish first")
    constraints: StepConstraints = Field(default_factory=StepConstraints)
    priority: int = 0
    command: str | tuple[str, ...] | None = Field(
        default=None, description="a shell command line, or an argv list"
    )

    def reference_duration(self) -> float:
        """Seconds on ``cores`` reference cores: ``work / cores``."""
        return self.work / self.cores


Edge = tuple[str, str]


class Workflow(_Frozen):
    """A validated DAG of steps and the data items they exchange."""

    name: str = Field(min_length=1)
    description: str = ""
    steps: tuple[Step, ...] = Field(min_length=1)
    data: tuple[DataItem, ...] = ()

    _index: dict[str, int] = PrivateAttr(default_factory=dict)
    _items: dict[str, DataItem] = PrivateAttr(default_factory=dict)
    _producer: dict[str, str] = PrivateAttr(default_factory=dict)
    _parents: dict[str, tuple[str, ...]] = PrivateAttr(default_factory=dict)
    _children: dict[str, tuple[str, ...]] = PrivateAttr(default_factory=dict)
    _order: tuple[str, ...] = PrivateAttr(default=())

    def model_post_init(self, context: Any, /) -> None:
        # Runs right after field validation; checks references before indexing them.
        problems = _graph_problems(self)
        if problems:
            raise Problems(problems)
        self._index = {s.id: i for i, s in enumerate(self.steps)}
        self._items = {d.id: d for d in self.data}
        self._producer = {o: s.id for s in self.steps for o in s.outputs}
        parents: dict[str, list[str]] = {s.id: [] for s in self.steps}
        for s in self.steps:
            seen: set[str] = set()
            for p in (*s.after, *(self._producer.get(i, "") for i in s.inputs)):
                if p and p != s.id and p not in seen:
                    seen.add(p)
                    parents[s.id].append(p)
        children: dict[str, list[str]] = {s.id: [] for s in self.steps}
        for sid, ps in parents.items():
            for p in ps:
                children[p].append(sid)
        self._parents = {k: tuple(v) for k, v in parents.items()}
        self._children = {k: tuple(v) for k, v in children.items()}
        order = _kahn(self._index, self._parents, self._children)
        if order is None:
            cycle = find_cycle(self._children)
            raise Problems(
                [Problem("steps", "the workflow has a cycle: " + " -> ".join(cycle or ["?"]))]
            )
        self._order = tuple(order)

    # -- loading ---------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Any, source: str = "<dict>") -> Workflow:
        """Validate a native workflow; ``InvalidWorkflow`` naming ``source`` and field paths."""
        return validate_document(cls, data, source, InvalidWorkflow, "workflow")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict in the native format (``from_dict`` reads it back)."""
        return self.model_dump(mode="json", exclude_defaults=True)

    # -- lookups ---------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.steps)

    def __iter__(self) -> Iterator[Step]:  # type: ignore[override]
        return iter(self.steps)

    def step(self, step_id: str) -> Step:
        try:
            return self.steps[self._index[step_id]]
        except KeyError:
            raise KeyError(f"unknown step {step_id!r} in workflow {self.name!r}") from None

    def item(self, item_id: str) -> DataItem:
        try:
            return self._items[item_id]
        except KeyError:
            raise KeyError(f"unknown data item {item_id!r} in workflow {self.name!r}") from None

    def producer(self, item_id: str) -> str | None:
        """The step that writes ``item_id``, or None for an external input."""
        return self._producer.get(item_id)

    def parents(self, step_id: str) -> tuple[str, ...]:
        return self._parents[step_id]

    def children(self, step_id: str) -> tuple[str, ...]:
        return self._children[step_id]

    @property
    def edges(self) -> list[Edge]:
        """Every (parent, child) dependency, in topological order of the child."""
        return [(p, c) for c in self._order for p in self._parents[c]]

    @property
    def sources(self) -> list[str]:
        return [s for s in self._order if not self._parents[s]]

    @property
    def sinks(self) -> list[str]:
        return [s for s in self._order if not self._children[s]]

    def external_inputs(self) -> list[str]:
        """Items read by some step and produced by none (staged in from outside)."""
        seen: dict[str, None] = {}
        for s in self.steps:
            for i in s.inputs:
                if i not in self._producer:
                    seen[i] = None
        return list(seen)

    # -- DAG queries -----------------------------------------------------------
    def topological_order(self) -> list[str]:
        """Step ids, every parent before its children (stable: declaration order breaks ties)."""
        return list(self._order)

    def levels(self) -> dict[str, int]:
        """Level of each step: 0 for sources, else 1 + the deepest parent's level."""
        level: dict[str, int] = {}
        for s in self._order:
            ps = self._parents[s]
            level[s] = 1 + max(level[p] for p in ps) if ps else 0
        return level

    def num_levels(self) -> int:
        return 1 + max(self.levels().values())

    def edge_bytes(self, parent: str, child: str) -> float:
        """Bytes that ``parent`` writes and ``child`` reads (0 for a pure ordering edge)."""
        outs = set(self.step(parent).outputs)
        return sum(self._size(i) for i in self.step(child).inputs if i in outs)

    def bytes_on_edges(self) -> float:
        """Sum of ``edge_bytes`` over every edge (an item read by k children counts k times)."""
        return sum(self.edge_bytes(p, c) for p, c in self.edges)

    def total_work(self) -> float:
        """Core-seconds at the reference speed, over all steps."""
        return sum(s.work for s in self.steps)

    def critical_path(
        self,
        duration: Callable[[Step], float] | None = None,
        edge_delay: Callable[[str, str], float] | None = None,
    ) -> tuple[float, list[str]]:
        """Longest path through the DAG: its length in seconds and its steps.

        ``duration`` defaults to ``Step.reference_duration`` (reference cores,
        as many as the step asks for); ``edge_delay`` (default 0) adds the time
        data takes between a parent and a child.
        """
        dur = duration or Step.reference_duration
        finish: dict[str, float] = {}
        via: dict[str, str | None] = {}
        for sid in self._order:
            start, best = 0.0, None
            for p in self._parents[sid]:
                t = finish[p] + (edge_delay(p, sid) if edge_delay else 0.0)
                if t > start or (best is None and t >= start):
                    start, best = t, p
            finish[sid] = start + dur(self.step(sid))
            via[sid] = best
        end = max(self._order, key=lambda s: finish[s])
        path: list[str] = []
        cur: str | None = end
        while cur is not None:
            path.append(cur)
            cur = via[cur]
        return finish[end], path[::-1]

    def summary(self) -> dict[str, Any]:
        """Counts and sizes of the workflow, JSON-ready (what ``continuum info`` prints)."""
        length, path = self.critical_path()
        files = {i for s in self.steps for i in (*s.inputs, *s.outputs)} | set(self._items)
        return {
            "name": self.name,
            "tasks": len(self.steps),
            "edges": len(self.edges),
            "files": len(files),
            "levels": self.num_levels(),
            "critical_path_s": length,
            "critical_path_steps": len(path),
            "total_work_s": self.total_work(),
            "bytes_on_edges": self.bytes_on_edges(),
            "input_bytes": sum(self._size(i) for i in self.external_inputs()),
            "max_cores": max(s.cores for s in self.steps),
        }

    def _size(self, item_id: str) -> float:
        item = self._items.get(item_id)
        return item.size if item is not None else 0.0


def _graph_problems(wf: Workflow) -> list[Problem]:
    problems: list[Problem] = []
    step_pos: dict[str, int] = {}
    for i, s in enumerate(wf.steps):
        if s.id in step_pos:
            problems.append(
                Problem(
                    f"steps[{i}].id", f"duplicate step id {s.id!r} (also steps[{step_pos[s.id]}])"
                )
            )
        step_pos.setdefault(s.id, i)
    item_pos: dict[str, int] = {}
    for i, d in enumerate(wf.data):
        if d.id in item_pos:
            problems.append(
                Problem(
                    f"data[{i}].id", f"duplicate data item {d.id!r} (also data[{item_pos[d.id]}])"
                )
            )
        item_pos.setdefault(d.id, i)
    producer: dict[str, str] = {}
    for i, s in enumerate(wf.steps):
        for k, p in enumerate(s.after):
            if p not in step_pos:
                problems.append(Problem(f"steps[{i}].after[{k}]", f"unknown parent step {p!r}"))
        for field in ("inputs", "outputs"):
            for k, ref in enumerate(getattr(s, field)):
                if ref not in item_pos:
                    problems.append(
                        Problem(
                            f"steps[{i}].{field}[{k}]",
                            f"unknown data item {ref!r}; declare it in data",
                        )
                    )
        for k, out in enumerate(s.outputs):
            if out in producer and producer[out] != s.id:
                problems.append(
                    Problem(
                        f"steps[{i}].outputs[{k}]",
                        f"data item {out!r} is already produced by step {producer[out]!r}",
                    )
                )
            producer.setdefault(out, s.id)
        if s.id in s.after:
            problems.append(
                Problem(f"steps[{i}].after", f"the workflow has a cycle: {s.id} -> {s.id}")
            )
    for i, d in enumerate(wf.data):
        if d.location is not None and d.id in producer:
            problems.append(
                Problem(
                    f"data[{i}].location",
                    f"data item {d.id!r} is produced by step {producer[d.id]!r}: only an "
                    "external input (read by steps, produced by none) has a location",
                )
            )
    return problems


def _kahn(
    index: Mapping[str, int],
    parents: Mapping[str, Sequence[str]],
    children: Mapping[str, Sequence[str]],
) -> list[str] | None:
    """Kahn's algorithm; ties broken by declaration order. None if there is a cycle."""
    import heapq

    indeg = {s: len(ps) for s, ps in parents.items()}
    heap = [(index[s], s) for s, d in indeg.items() if d == 0]
    heapq.heapify(heap)
    order: list[str] = []
    while heap:
        _, s = heapq.heappop(heap)
        order.append(s)
        for c in children[s]:
            indeg[c] -= 1
            if indeg[c] == 0:
                heapq.heappush(heap, (index[c], c))
    return order if len(order) == len(indeg) else None


def find_cycle(children: Mapping[str, Sequence[str]]) -> list[str] | None:
    """One cycle of the graph as ``[a, b, ..., a]``, or None (iterative DFS)."""
    WHITE, GREY, BLACK = 0, 1, 2
    colour = dict.fromkeys(children, WHITE)
    for root in children:
        if colour[root] != WHITE:
            continue
        stack: list[tuple[str, Iterator[str]]] = [(root, iter(children[root]))]
        path = [root]
        colour[root] = GREY
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                colour[node] = BLACK
                stack.pop()
                path.pop()
            elif colour.get(nxt, BLACK) == GREY:
                return [*path[path.index(nxt) :], nxt]
            elif colour.get(nxt) == WHITE:
                colour[nxt] = GREY
                stack.append((nxt, iter(children[nxt])))
                path.append(nxt)
    return None


def topological_generations(wf: Workflow) -> list[list[str]]:
    """Steps grouped by level (all steps of a generation are independent)."""
    levels = wf.levels()
    out: list[list[str]] = [[] for _ in range(1 + max(levels.values()))]
    for sid in wf.topological_order():
        out[levels[sid]].append(sid)
    return out


def reachable(children: Mapping[str, Sequence[str]], start: str) -> set[str]:
    """Every node reachable from ``start`` (excluding itself unless on a cycle)."""
    seen: set[str] = set()
    queue = deque(children.get(start, ()))
    while queue:
        n = queue.popleft()
        if n not in seen:
            seen.add(n)
            queue.extend(children.get(n, ()))
    return seen
