"""The ``simulated`` connector: tasks take time on a clock, nothing runs.

Used by the twin's tests and the simulations: a site with ``cores`` cores
runs each task for ``duration_hint`` seconds of its clock (FCFS, a task
starts when enough cores are free), can be taken down (running tasks are
lost) and reports utilisation and backlog as telemetry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from orchestrator.connectors.base import (
    ConnectorError,
    SiteConnector,
    TaskInfo,
    TaskSpec,
    TaskStatus,
)


@dataclass
class _Task:
    cores: int
    duration: float
    submitted: float
    started: float | None = None
    status: TaskStatus = TaskStatus.QUEUED


class SimulatedConnector(SiteConnector):
    """A site whose tasks last ``duration_hint`` seconds on ``clock``."""

    def __init__(self, site_id: str, cores: int, clock: Callable[[], float]) -> None:
        if cores < 1:
            raise ValueError(f"cores must be >= 1, got {cores}")
        self.site_id = site_id
        self.cores = cores
        self.clock = clock
        self._tasks: dict[str, _Task] = {}
        self._active: dict[str, _Task] = {}  # queued or running, in submission order
        self._down = False

    def handle_for(self, spec: TaskSpec) -> str:
        return f"sim:{self.site_id}:{spec.key()}"

    def submit(self, spec: TaskSpec) -> str:
        if self._down:
            raise ConnectorError(f"site {self.site_id} is down")
        handle = self.handle_for(spec)
        if handle not in self._tasks:
            cores = min(max(spec.cores, 1), self.cores)
            task = _Task(cores, max(spec.duration_hint, 0.0), self.clock())
            self._tasks[handle] = self._active[handle] = task
        self._advance()
        return handle

    def status(self, handle: str) -> TaskInfo:
        self._advance()
        t = self._tasks.get(handle)
        if t is None:
            return TaskInfo(TaskStatus.NOT_STARTED)
        ended = t.started + t.duration if t.started is not None else None
        code = 0 if t.status is TaskStatus.SUCCEEDED else None
        return TaskInfo(
            t.status, code, t.started, ended if t.status is TaskStatus.SUCCEEDED else None
        )

    def cancel(self, handle: str) -> None:
        t = self._tasks.get(handle)
        if t is not None and t.status in (TaskStatus.QUEUED, TaskStatus.RUNNING):
            t.status = TaskStatus.CANCELLED
            self._active.pop(handle, None)

    def telemetry(self) -> dict[str, float]:
        self._advance()
        busy = sum(t.cores for t in self._active.values() if t.status is TaskStatus.RUNNING)
        backlog = sum(
            t.cores * t.duration for t in self._active.values() if t.status is TaskStatus.QUEUED
        )
        return {"utilisation": busy / self.cores, "queue_backlog": backlog}

    def output_path(self, handle: str, item_id: str) -> Path:
        return Path("/dev/null")

    def fail(self) -> None:
        self._down = True
        for t in self._active.values():
            t.status = TaskStatus.LOST
        self._active.clear()

    def _advance(self) -> None:
        now = self.clock()
        busy = 0
        for handle, t in list(self._active.items()):
            started = t.started
            if t.status is TaskStatus.RUNNING and started is not None:
                if started + t.duration <= now:
                    t.status = TaskStatus.SUCCEEDED
                    del self._active[handle]
                else:
                    busy += t.cores
        for t in self._active.values():
            if t.status is TaskStatus.QUEUED and busy + t.cores <= self.cores:
                t.status = TaskStatus.RUNNING
                t.started = now
                busy += t.cores
