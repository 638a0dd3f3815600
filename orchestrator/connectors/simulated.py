"""The ``simulated`` connector: tasks take time on a clock, nothing runs.

Used by the twin's tests, the benchmarks and the simulations: each task lasts
``duration_hint`` seconds of the connector's ``clock``. Where tasks wait for cores
is the connector's *site model* (a ``SimulatedSite``):

* ``FcfsCores`` (the default): ``cores`` cores taken first come, first served; the
  tasks' states are brought up to date whenever the connector is asked;
* any other model the caller gives: the simulations hand each site's batch queue
  (``simulations.execution``), so that workflow steps queue with the site's batch
  jobs and move on the simulator's events.

A task starts no earlier than its inputs are at the site: ``SimulatedTransfers`` is
the executor's stager for simulated runs (the items exist only as sizes; a transfer
lasts ``latency + bytes / bandwidth`` of the link), and the connector reads from it
when a task's inputs arrive. A site can be taken down (``fail``: running and queued
tasks are lost, new ones refused) and brought back (``repair``); it reports
utilisation and backlog as telemetry.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.connectors.base import (
    ConnectorError,
    SiteConnector,
    TaskInfo,
    TaskSpec,
    TaskStatus,
)

_WAITING = frozenset({TaskStatus.QUEUED, TaskStatus.RUNNING})


@dataclass(eq=False)
class SimulatedTask:
    """One task at a simulated site: what it asks for and what became of it."""

    handle: str
    run_id: str
    step_id: str
    cores: int
    duration: float
    submitted: float
    ready_at: float
    """When its inputs are at the site: it starts no earlier."""
    status: TaskStatus = TaskStatus.QUEUED
    started: float | None = None
    ended: float | None = None
    exit_code: int | None = None
    message: str = ""

    def start(self, now: float) -> None:
        self.status, self.started = TaskStatus.RUNNING, now

    def end(self, now: float, exit_code: int = 0, message: str = "") -> None:
        """The task ends at ``now``: it succeeded with exit code 0, failed otherwise."""
        ok = exit_code == 0
        self.status = TaskStatus.SUCCEEDED if ok else TaskStatus.FAILED
        self.ended, self.exit_code, self.message = now, exit_code, message


class SimulatedSite(abc.ABC):
    """Where the tasks of a ``SimulatedConnector`` wait for cores and run.

    The connector calls ``add`` for each new task (status ``QUEUED``), ``remove`` when
    a task is cancelled or lost (it must hold no core afterwards) and ``advance(now)``
    before it reads the tasks' states; the model moves each task through ``start`` and
    ``end`` (``SimulatedTask``), either in ``advance`` or on its own events.
    """

    @abc.abstractmethod
    def add(self, task: SimulatedTask) -> None: ...

    @abc.abstractmethod
    def remove(self, task: SimulatedTask) -> None: ...

    def advance(self, now: float) -> None:  # noqa: B027 - event-driven models need nothing
        """Bring the tasks' states up to ``now``."""


class FcfsCores(SimulatedSite):
    """``cores`` cores, tasks started first come, first served once their inputs are there."""

    def __init__(self, cores: int) -> None:
        if cores < 1:
            raise ValueError(f"cores must be >= 1, got {cores}")
        self.cores = cores
        self._active: dict[str, SimulatedTask] = {}  # queued or running, in submission order

    def add(self, task: SimulatedTask) -> None:
        self._active[task.handle] = task

    def remove(self, task: SimulatedTask) -> None:
        self._active.pop(task.handle, None)

    def advance(self, now: float) -> None:
        busy = 0
        for handle, t in list(self._active.items()):
            started = t.started
            if t.status is TaskStatus.RUNNING and started is not None:
                if started + t.duration <= now:
                    t.end(started + t.duration)
                    del self._active[handle]
                else:
                    busy += t.cores
        for t in self._active.values():
            if t.status is TaskStatus.QUEUED and t.ready_at <= now and busy + t.cores <= self.cores:
                t.start(now)
                busy += t.cores


@dataclass
class SimulatedTransfers:
    """The stager of simulated runs: data items exist only as sizes, transfers take time.

    ``stage_item`` (called by the executor when a step's input lives at another site)
    records that the item reaches ``dst`` at ``now + transfer_time(src, dst, size)``; an
    item already sent there is not sent again (staging is idempotent on real sites too).
    ``ready_at(run, step, site)`` is when the last input of that step reaches the site.
    """

    transfer_time: Callable[[str, str, float], float]
    clock: Callable[[], float]
    bytes_moved: float = 0.0
    moves: list[tuple[str, str, str, str, float, float, float]] = field(default_factory=list)
    """``(run, item, src, dst, bytes, start, arrival)`` of every transfer."""
    by_run: dict[str, tuple[int, float]] = field(default_factory=dict)
    """Per run: transfers made and bytes moved."""
    _arrival: dict[tuple[str, str, str], float] = field(default_factory=dict)
    _step_ready: dict[tuple[str, str, str], float] = field(default_factory=dict)

    def stage_item(
        self, run_id: str, step_id: str, item_id: str, size: float, src_site: str, dst_site: str
    ) -> None:
        key = (run_id, item_id, dst_site)
        arrival = self._arrival.get(key)
        if arrival is None:
            now = self.clock()
            delay = self.transfer_time(src_site, dst_site, size)
            if delay == float("inf"):
                raise ConnectorError(
                    f"no link from {src_site} to {dst_site}: {item_id} cannot reach {dst_site}"
                )
            arrival = self._arrival[key] = now + delay
            self.bytes_moved += size
            self.moves.append((run_id, item_id, src_site, dst_site, size, now, arrival))
            n, moved = self.by_run.get(run_id, (0, 0.0))
            self.by_run[run_id] = (n + 1, moved + size)
        at = (run_id, step_id, dst_site)
        self._step_ready[at] = max(self._step_ready.get(at, arrival), arrival)

    def ready_at(self, run_id: str, step_id: str, site: str) -> float:
        """When every input staged for ``step_id`` at ``site`` is there (-inf: none moved)."""
        return self._step_ready.get((run_id, step_id, site), float("-inf"))


class SimulatedConnector(SiteConnector):
    """A site whose tasks last ``duration_hint`` seconds on ``clock`` (module docstring)."""

    def __init__(
        self,
        site_id: str,
        cores: int,
        clock: Callable[[], float],
        site: SimulatedSite | None = None,
        transfers: SimulatedTransfers | None = None,
    ) -> None:
        if cores < 1:
            raise ValueError(f"cores must be >= 1, got {cores}")
        self.site_id = site_id
        self.cores = cores
        self.clock = clock
        self.site = site if site is not None else FcfsCores(cores)
        self.transfers = transfers
        self._tasks: dict[str, SimulatedTask] = {}
        self._active: dict[str, SimulatedTask] = {}  # queued or running (pruned lazily)
        self._down = False

    @property
    def down(self) -> bool:
        return self._down

    def handle_for(self, spec: TaskSpec) -> str:
        return f"sim:{self.site_id}:{spec.key()}"

    def submit(self, spec: TaskSpec) -> str:
        if self._down:
            raise ConnectorError(f"site {self.site_id} is down")
        handle = self.handle_for(spec)
        if handle not in self._tasks:
            now = self.clock()
            ready = now
            if self.transfers is not None:
                ready = max(now, self.transfers.ready_at(spec.run_id, spec.step_id, self.site_id))
            task = SimulatedTask(
                handle,
                spec.run_id,
                spec.step_id,
                min(max(spec.cores, 1), self.cores),
                max(spec.duration_hint, 0.0),
                now,
                ready,
            )
            self._tasks[handle] = self._active[handle] = task
            self.site.add(task)
        self.site.advance(self.clock())
        return handle

    def task(self, handle: str) -> SimulatedTask | None:
        """The task behind ``handle`` (``None``: never submitted here)."""
        return self._tasks.get(handle)

    def status(self, handle: str) -> TaskInfo:
        self.site.advance(self.clock())
        t = self._tasks.get(handle)
        if t is None:
            return TaskInfo(TaskStatus.NOT_STARTED)
        return TaskInfo(t.status, t.exit_code, t.started, t.ended, message=t.message)

    def settled(self, handles: Collection[str]) -> list[str]:
        self.site.advance(self.clock())
        tasks = self._tasks
        return [h for h in handles if (t := tasks.get(h)) is None or t.status not in _WAITING]

    def cancel(self, handle: str) -> None:
        t = self._tasks.get(handle)
        if t is not None and t.status in _WAITING:
            self.site.remove(t)
            t.status, t.ended = TaskStatus.CANCELLED, self.clock()
            self._active.pop(handle, None)

    def active(self) -> list[SimulatedTask]:
        """The tasks queued or running here, in submission order."""
        self.site.advance(self.clock())
        self._active = {h: t for h, t in self._active.items() if t.status in _WAITING}
        return list(self._active.values())

    def telemetry(self) -> dict[str, float]:
        tasks = self.active()
        busy = sum(t.cores for t in tasks if t.status is TaskStatus.RUNNING)
        backlog = sum(t.cores * t.duration for t in tasks if t.status is TaskStatus.QUEUED)
        return {"utilisation": busy / self.cores, "queue_backlog": backlog}

    def healthy(self) -> bool:
        return not self._down

    def output_path(self, handle: str, item_id: str) -> Path:
        return Path("/dev/null")

    def fail(self, reason: str = "site went down") -> list[SimulatedTask]:
        """The site goes down: every queued or running task is lost; new tasks are refused.

        Returns the tasks lost."""
        lost = self.active()
        self._down = True
        now = self.clock()
        for t in lost:
            self.site.remove(t)
            t.status, t.ended, t.message = TaskStatus.LOST, now, reason
        self._active.clear()
        return lost

    def repair(self) -> None:
        """The site is back: it takes tasks again."""
        self._down = False


__all__ = [
    "FcfsCores",
    "SimulatedConnector",
    "SimulatedSite",
    "SimulatedTask",
    "SimulatedTransfers",
]
