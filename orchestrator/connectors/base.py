"""The ``SiteConnector`` plug-in point: how the executor reaches a site.

A connector runs tasks (one attempt of one step) at its site. Four methods
make the contract (parsl's Provider/Executor split is the model):

``submit(spec) -> handle``
    Start or queue the task; return a handle that survives a restart of the
    orchestrator (a path, a job id): ``status(handle)`` must answer from it
    alone after a crash.
``status(handle) -> TaskInfo``
    Where the task is; ``NOT_STARTED`` when the handle is known but the task
    never began (the executor then submits it again: at-most-once execution
    is guaranteed by the connector, e.g. an exclusive claim file).
``cancel(handle)``
    Stop the task if it runs; a no-op when it has finished.
``telemetry() -> dict``
    Current observations of the site (utilisation, queue backlog) for the
    twin; never job ids, user names or node names.

One optional method, ``capacity()``, says how many more tasks the site should
be handed now; the executor keeps the other ready steps (in priority order,
still open to a re-plan). The default, ``None``, hands it everything. Another,
``wakeup_fds()``, lets the executor sleep until a task ends rather than on a timer;
another, ``settled(handles)``, says which of the given tasks may have finished, so that
the executor asks ``status`` of those only; the default names them all.
"""

from __future__ import annotations

import abc
from collections.abc import Collection
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path


class TaskStatus(StrEnum):
    NOT_STARTED = "not-started"
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    LOST = "lost"  # started, then vanished without a result (site or process died)
    CANCELLED = "cancelled"


FINISHED = frozenset(
    {TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.LOST, TaskStatus.CANCELLED}
)


@dataclass(frozen=True)
class TaskSpec:
    """One attempt of one step, as a connector runs it.

    ``command`` is an argv list (run without a shell) or a string (run by
    ``/bin/sh -c``). ``inputs`` maps item ids to files (on the orchestrator's side) the task
    reads; ``site_inputs`` maps item ids to paths that already live at the site (an external
    input located there: linked, never moved); the task writes its declared ``outputs`` into
    its output directory under their item ids.
    """

    run_id: str
    step_id: str
    attempt: int
    command: tuple[str, ...] | str
    cores: int = 1
    inputs: dict[str, Path] = field(default_factory=dict)
    site_inputs: dict[str, str] = field(default_factory=dict)
    outputs: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    duration_hint: float = 0.0  # seconds, for simulated sites
    memory: float = 0.0  # bytes the step asks for (0: the site's default)
    work: float = 0.0  # core-seconds at the reference speed (0: unknown), for time limits

    def key(self) -> str:
        return f"{self.run_id}/{_safe(self.step_id)}/{self.attempt}"


@dataclass(frozen=True)
class TaskInfo:
    status: TaskStatus
    exit_code: int | None = None
    started_at: float | None = None
    ended_at: float | None = None
    workdir: Path | None = None
    message: str = ""

    @property
    def finished(self) -> bool:
        return self.status in FINISHED


class ConnectorError(RuntimeError):
    """A connector could not do what was asked (site down, task too large...)."""


class StagingPending(ConnectorError):
    """A file a task needs is on its way (a pull site is exporting it): ask again later."""


class SiteConnector(abc.ABC):
    """How the executor runs tasks at one site (see the module docstring)."""

    site_id: str

    @abc.abstractmethod
    def handle_for(self, spec: TaskSpec) -> str:
        """The handle ``submit(spec)`` will return, known before submitting (so the
        executor can record it first: a crash between the two then loses nothing)."""

    @abc.abstractmethod
    def submit(self, spec: TaskSpec) -> str: ...

    @abc.abstractmethod
    def status(self, handle: str) -> TaskInfo: ...

    @abc.abstractmethod
    def cancel(self, handle: str) -> None: ...

    @abc.abstractmethod
    def telemetry(self) -> dict[str, float]: ...

    def capacity(self) -> int | None:
        """How many more tasks to hand this site now: what it can start soon (its free
        slots plus a small lookahead, so that a slot that frees up starts the next task at
        once). ``None`` (the default): no limit, the site queues whatever it is given."""
        return None

    def settled(self, handles: Collection[str]) -> Collection[str]:
        """Which of ``handles`` (tasks this site was given) may no longer be queued or
        running: the executor asks ``status`` of those only. The default: all of them (a
        connector that knows cheaply which of its tasks ended, a simulated site, says so)."""
        return handles

    def healthy(self) -> bool:
        """Whether the site answers (a local pool that is not down, an agent seen lately)."""
        return True

    def wakeup_fds(self) -> list[int]:
        """File descriptors that become readable when one of this site's tasks may have ended
        (a local pool's process descriptors); the executor sleeps on them between passes
        instead of polling on a timer. Empty (the default): the executor's timer alone."""
        return []

    def output_path(self, handle: str, item_id: str) -> Path:
        """Where the task behind ``handle`` wrote ``item_id`` (for staging it onwards)."""
        raise ConnectorError(f"site {self.site_id} does not expose task outputs as files")

    def source_file(self, path: str, run_id: str, item_id: str) -> Path:
        """A file that lives at this site (``path`` on the site's file system), readable here
        for staging it to another site; ``StagingPending`` while it is being fetched."""
        raise ConnectorError(f"site {self.site_id} cannot hand out its files ({path})")

    def log_path(self, handle: str, stream: str) -> Path | None:
        """The file holding the task's ``stream`` (``stdout`` or ``stderr``) as it runs, or
        ``None`` when the site keeps none."""
        return None

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources (process pools, clients)."""


def sha256_file(path: Path) -> str:
    """The hex sha256 of a file, read in 1 MiB pieces."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:200] or "_"
