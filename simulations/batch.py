"""A site's batch queue: rigid jobs on a pool of cores, FCFS or EASY backfilling.

This is plain Python with no Mesa in it, so it can be tested on its own and
kept fast: the site agent (``simulations.agents.SiteAgent``) owns one queue
and turns the jobs it starts into completion events.

Policies
--------
``fcfs``
    Start jobs strictly in arrival order; the first job that does not fit
    blocks every job behind it.
``easy``
    EASY backfilling (Lifka 1995; Mu'alem and Feitelson, IEEE TPDS 2001): when
    the head job ``h`` does not fit, reserve for it the earliest time its
    cores are free, computed from the *requested* walltimes of the running
    jobs (the scheduler never knows actual run times)::

        shadow = min { t : free + sum_{j running, est_end(j) <= t} cores(j) >= cores(h) }
        extra  = free + sum_{j running, est_end(j) <= shadow} cores(j) - cores(h)

    then start, in queue order, any later job ``b`` that fits now and does not
    delay the reservation: ``now + req(b) <= shadow`` or ``cores(b) <= extra``
    (in the second case ``extra`` shrinks by ``cores(b)``).
"""

from __future__ import annotations

from collections import deque
from enum import StrEnum
from itertools import islice
from operator import attrgetter
from typing import Any


class QueuePolicy(StrEnum):
    """How a site's batch queue picks the next jobs to start."""

    FCFS = "fcfs"
    EASY = "easy"


class Job:
    """A rigid job: ``cores`` for ``run`` seconds; ``req`` is its walltime estimate.

    ``index`` is the job's row in the simulation's job table (-1 for workflow
    steps, which report to their ``owner``); ``epoch`` counts kills so that a
    completion event of a killed run is recognised as stale.
    """

    __slots__ = (
        "cores",
        "end",
        "epoch",
        "est_end",
        "index",
        "kills",
        "owner",
        "req",
        "run",
        "site",
        "start",
        "submit",
        "tag",
    )

    def __init__(
        self,
        index: int,
        cores: int,
        run: float,
        req: float,
        submit: float,
        owner: Any = None,
        tag: str = "",
    ) -> None:
        if cores <= 0:
            raise ValueError(f"a job needs at least one core, got {cores}")
        if run < 0:
            raise ValueError(f"a run time must be >= 0 s, got {run}")
        self.index = index
        self.cores = cores
        self.run = run
        self.req = max(req, run) if req <= 0 else req
        self.submit = submit
        self.start = -1.0
        self.end = -1.0
        self.est_end = 0.0
        self.site = -1
        self.epoch = 0
        self.kills = 0
        self.owner = owner
        self.tag = tag

    def __repr__(self) -> str:
        return f"Job({self.index}, cores={self.cores}, run={self.run}, req={self.req})"


_by_est_end = attrgetter("est_end")
_cores = attrgetter("cores")


class BatchQueue:
    """Cores, the jobs waiting for them (in order) and the jobs running on them."""

    __slots__ = (
        "_held",
        "backlog",
        "capacity",
        "changes",
        "free",
        "policy",
        "queue",
        "running",
    )

    def __init__(self, capacity: int, policy: QueuePolicy | str = QueuePolicy.EASY) -> None:
        if capacity <= 0:
            raise ValueError(f"a batch queue needs at least one core, got {capacity}")
        self.capacity = capacity
        self.free = capacity
        self.policy = QueuePolicy(policy)
        self.queue: deque[Job] = deque()
        self.running: set[Job] = set()
        self.backlog = 0.0
        """Requested core-seconds waiting in the queue (what telemetry reports)."""
        self.changes = 0
        """Counts the changes of the running jobs (a start, an end, a kill): the EASY
        reservation computed for a head holds while it stays the same."""
        self._held: tuple[int, Job | None, float, int] = (-1, None, 0.0, 0)

    @property
    def busy(self) -> int:
        return self.capacity - self.free

    def __len__(self) -> int:
        return len(self.queue)

    def submit(self, job: Job) -> None:
        """Append ``job`` to the queue; ``ValueError`` if it can never fit."""
        if job.cores > self.capacity:
            raise ValueError(f"job needs {job.cores} cores, the site has {self.capacity}")
        self.queue.append(job)
        self.backlog += job.cores * job.req

    def _start(self, job: Job, now: float) -> None:
        self.changes += 1
        self.free -= job.cores
        self.backlog -= job.cores * job.req
        job.start = now
        job.est_end = now + job.req
        job.end = now + job.run
        self.running.add(job)

    def schedule(self, now: float) -> list[Job]:
        """Start what the policy allows at ``now``; return the jobs started."""
        started: list[Job] = []
        q = self.queue
        free = self.free
        while q:
            head = q[0]
            c = head.cores
            if c <= free:
                q.popleft()
                # _start, inlined (the hot path)
                self.changes += 1
                free -= c
                self.backlog -= c * head.req
                head.start = now
                head.est_end = now + head.req
                head.end = now + head.run
                self.running.add(head)
                started.append(head)
                continue
            self.free = free
            if self.policy is QueuePolicy.EASY and free > 0 and len(q) > 1:
                self._backfill(now, started)
            return started
        self.free = free
        return started

    def _backfill(self, now: float, started: list[Job]) -> None:
        q = self.queue
        free = self.free
        # nothing behind the head fits in the free cores: nothing can start (and the
        # queue stays as it is), so the reservation need not be computed
        if min(map(_cores, islice(q, 1, None))) > free:
            return
        head = q[0]
        shadow, extra = self.reservation(head, now)
        kept: deque[Job] = deque([head])
        it = iter(q)
        next(it)
        for job in it:
            if free == 0:
                kept.append(job)
                continue
            c = job.cores
            if c <= free:
                ends_in_time = now + job.req <= shadow
                if ends_in_time or c <= extra:
                    self._start(job, now)
                    started.append(job)
                    free -= c
                    if not ends_in_time:
                        extra -= c
                    continue
            kept.append(job)
        if len(kept) != len(q):
            self.queue = kept

    def reservation(self, head: Job, now: float) -> tuple[float, int]:
        """``(shadow, extra)`` of the EASY reservation for ``head`` (see the module docstring).

        Jobs that overran their estimate are taken to end now. The time found (the
        earliest estimated end that frees enough cores) and the cores free then are kept
        while the running jobs and the head stay the same (``changes``): only ``now``
        moves the shadow then.
        """
        changes, held, t, avail = self._held
        if changes == self.changes and held is head:
            return (max(t, now), avail - head.cores) if avail >= 0 else (float("inf"), 0)
        t, avail = self._release(head)
        self._held = (self.changes, head, t, avail)
        return (max(t, now), avail - head.cores) if avail >= 0 else (float("inf"), 0)

    def _release(self, head: Job) -> tuple[float, int]:
        """The earliest estimated end ``t`` by which ``head`` fits, and the cores free then
        (-1 when it never does)."""
        avail = self.free
        ordered = sorted(self.running, key=_by_est_end)
        n = len(ordered)
        i = 0
        while i < n:
            t = ordered[i].est_end
            # release every job with the same estimated end together
            while i < n and ordered[i].est_end == t:
                avail += ordered[i].cores
                i += 1
            if avail >= head.cores:
                return t, avail
        return float("inf"), -1

    def finish(self, job: Job) -> None:
        """Release the cores of a running ``job``."""
        self.changes += 1
        self.running.remove(job)
        self.free += job.cores

    def withdraw(self, job: Job) -> bool:
        """Take ``job`` off the site, queued or running (a cancelled or lost task); a running
        job's pending completion is made stale (its ``epoch`` grows). False if it was on
        neither list."""
        if job in self.running:
            self.finish(job)
            job.epoch += 1
            return True
        try:
            self.queue.remove(job)
        except ValueError:
            return False
        self.backlog -= job.cores * job.req
        return True

    def kill_all(self) -> list[Job]:
        """Stop every running job (a failure) and put them back at the front of the queue.

        Killed jobs restart from scratch (no checkpointing); their ``epoch``
        grows so that their pending completion events are ignored.
        """
        self.changes += 1
        killed = sorted(self.running, key=attrgetter("start", "submit"))
        for job in killed:
            job.epoch += 1
            job.kills += 1
            job.start = job.end = -1.0
            self.backlog += job.cores * job.req
        self.running.clear()
        self.free = self.capacity
        self.queue.extendleft(reversed(killed))
        return killed
