"""The orchestration side of the service: the federation twin, planning and execution.

The service keeps one ``Engine`` on ``app.state.engine``:

* the **twin** of the registered sites (``FederationTwin`` on the service's
  store, snapshotted so a restarted service resumes from its last estimates,
  rebuilt when sites are registered or removed), fed by a background applier
  from the queue of telemetry that ingest recorded in the journal (replayed at
  start for what the snapshots had not seen);
* **planning** on the twin's view with the placement planners;
* the **executor** of approved plans. In a federation service every site is
  reached through its pull agent (``continuum site-agent``, outbound HTTPS
  only), so each registered site gets a ``PullConnector`` whose queue lives
  in the same store; a background thread reconciles the running runs.

Handlers call these methods; the engine holds a lock so that the background
thread and request threads never interleave inside the executor. Lock order:
the engine's lock, then the journal's (the store's writers of telemetry, in
turn), then store connections; a handler never waits for a lock while it holds
a session (the connection pool would run dry). Telemetry ingest takes only the
journal's lock, so it never waits for the applier.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select

from federation.api import journal
from federation.api.errors import Conflict
from federation.api.tables import SiteRow
from federation.model import Federation
from orchestrator.connectors.pull import PullConnector
from orchestrator.execution import CopyStager, Executor, RunState, RunStore, synthetic_command
from orchestrator.execution.replan import PlannerReplanner
from orchestrator.planners import HEFTPlanner
from twin.federation_twin import FederationTwin, IngestReport
from twin.state import AbstractSiteState
from twin.telemetry import TelemetrySample

if TYPE_CHECKING:
    from federation.api.deps import ApiContext
    from orchestrator.workflow import Workflow

log = logging.getLogger(__name__)


class Engine:
    """Twin, planner view and executor of the service (see the module docstring)."""

    def __init__(self, ctx: ApiContext, reconcile_s: float = 0.2) -> None:
        self.ctx = ctx
        self.reconcile_s = reconcile_s
        self.lock = threading.RLock()
        self._twin: FederationTwin | None = None
        self._twin_sites: tuple[str, ...] = ()
        self._executor: Executor | None = None
        self._federation: Federation | None = None
        self._federation_version: tuple[object, ...] = ()
        self._federation_checked = -math.inf
        self.registry_ttl_s = 1.0
        self.apply_chunk = 32  # samples applied per turn of the applier (about 1 ms)
        self._last_snapshot = 0.0
        self.snapshot_every_s = 10.0
        self._version = 0
        self._view: tuple[tuple[int, float], dict[str, AbstractSiteState]] | None = None
        self.totals = IngestReport()
        self.replayed = 0  # samples applied from the journal at (re)start
        self._queue: deque[TelemetrySample] = deque()
        self._queue_lock = threading.Lock()
        # Journal writes of this process one at a time: SQLite has one writer, and its
        # busy handler backs off in sleeps of up to 100 ms, a lock wakes the next at once.
        self.journal_lock = threading.Lock()
        self._applying = False
        self._wake = threading.Event()
        self._applier: threading.Thread | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def data_dir(self) -> Path:
        return Path(self.ctx.settings.data_dir)

    # -- the federation and its twin ---------------------------------------------------------
    def federation(self) -> Federation:
        """The registered sites as a federation (409 when none is registered).

        Rebuilt only when the registry changed (count and last update), so hot
        paths (telemetry ingest) do not validate every site on every request; the
        registry is looked at again after ``registry_ttl_s`` (changes made through
        this service call ``registry_changed`` and are seen at once).
        """
        if (
            self._federation is not None
            and time.monotonic() - self._federation_checked < self.registry_ttl_s
        ):
            return self._federation
        with self.ctx.store.session() as db:
            version = tuple(db.execute(select(func.count(), func.max(SiteRow.updated_at))).one())
            self._federation_checked = time.monotonic()
            if self._federation is not None and version == self._federation_version:
                return self._federation
            docs = [r.document for r in db.scalars(select(SiteRow).order_by(SiteRow.id))]
        if not docs:
            raise Conflict("no site is registered yet: POST /api/v1/sites first")
        fed = Federation.from_dict({"name": "federation", "sites": docs}, "<site registry>")
        self._federation, self._federation_version = fed, version
        return fed

    def registry_changed(self) -> None:
        """Sites were registered, updated or removed: read the registry on next use."""
        self._federation_checked = -math.inf

    def twin(self) -> FederationTwin:
        with self.lock:
            fed = self.federation()
            if self._twin is None or fed.site_ids != self._twin_sites:
                self._version += 1
                # Snapshots on a timer (``ingest``), not after every batch.
                twin = FederationTwin(fed, store=self.ctx.store, name="service", autosave=False)
                with self._queue_lock:
                    self._queue.clear()  # what was queued is in the journal, replayed now
                self._replay(twin)
                self._twin, self._twin_sites = twin, fed.site_ids
            return self._twin

    def ensure_twin(self) -> Federation:
        """The registered federation, its twin built (and the journal replayed) if it was not.

        Takes the engine's lock only when the twin has to be (re)built, so callers on
        the hot path (ingest) do not queue behind the applier.
        """
        fed = self.federation()
        if self._twin is None or fed.site_ids != self._twin_sites:
            self.twin()
        return fed

    def _replay(self, twin: FederationTwin) -> None:
        """Apply the journal's samples that the snapshots the twin resumed from had not seen."""
        with self.ctx.store.session() as db:
            missed = [
                s for sid, tw in twin.sites.items() for s in journal.newer_than(db, sid, tw.t)
            ]
        if missed:
            report = twin.ingest(missed)
            self.replayed += report.applied
            self.totals.applied += report.applied
            log.info("replayed %d telemetry samples from the journal", report.applied)

    def ingest(self, samples: list[TelemetrySample]) -> IngestReport:
        """Apply samples to the twin now (what ``?wait=true`` and the applier call)."""
        with self.lock:
            twin = self.twin()
            report = twin.ingest(samples)
            self._version += 1
            self.totals.applied += report.applied
            self.totals.duplicates += report.duplicates
            self.totals.rejected_out_of_order += report.rejected_out_of_order
            self.totals.conflicting += report.conflicting
            self.totals.flagged.update(report.flagged)
            if time.monotonic() - self._last_snapshot >= self.snapshot_every_s:
                self.checkpoint()
            return report

    def checkpoint(self) -> None:
        """Snapshot the twin (a restarted service resumes from here) and prune the journal.

        Samples more than ``telemetry_retention_s`` behind a site's estimate are
        forgotten: the twin would reject them as out of order anyway, so their ids
        no longer protect anything.
        """
        with self.lock, self.journal_lock:  # the store's writers of this process, in turn
            twin = self.twin()
            twin.snapshot()
            self._last_snapshot = time.monotonic()
            keep = self.ctx.settings.telemetry_retention_s
            with self.ctx.store.session() as db:
                for sid, tw in twin.sites.items():
                    if tw.t is not None:
                        journal.prune(db, sid, tw.t - keep)

    def enqueue(self, samples: list[TelemetrySample]) -> int:
        """Queue samples for the background applier; returns how many wait in the queue.

        Ingest requests return as soon as the samples are validated and their ids
        recorded; one thread applies the queue to the twin in batches, so
        concurrent senders do not wait for each other's Kalman updates.
        """
        ordered = sorted(samples, key=lambda s: s.timestamp)  # chunks keep a batch's order
        with self._queue_lock:
            self._queue.extend(ordered)
            waiting = len(self._queue)
        self._wake.set()
        self._start_applier()
        return waiting

    def queued(self) -> int:
        """Samples waiting for the applier."""
        with self._queue_lock:
            return len(self._queue)

    def drain(self, timeout: float = 30.0) -> bool:
        """Wait until the queue is applied; False if it is not after ``timeout`` seconds."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self._queue_lock:
                if not self._queue and not self._applying:
                    return True
            time.sleep(0.01)
        return False

    def _start_applier(self) -> None:
        if self._applier is None or not self._applier.is_alive():
            self._applier = threading.Thread(
                target=self._apply_loop, name="continuum-telemetry", daemon=True
            )
            self._applier.start()

    def _apply_loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(0.5)
            self._wake.clear()
            while True:
                # A bounded chunk per turn: the twin's lock is never held for long, so
                # queries and plans are not kept waiting behind a large backlog.
                with self._queue_lock:
                    q = self._queue
                    batch = [q.popleft() for _ in range(min(self.apply_chunk, len(q)))]
                    self._applying = bool(batch)
                if not batch:
                    break
                try:
                    self.ingest(batch)
                except Exception:  # a bad batch must not stop the applier
                    log.exception("applying telemetry failed")
                finally:
                    with self._queue_lock:
                        self._applying = False
                # Hand the interpreter lock over: request threads waiting for it run now
                # instead of after a whole switch interval (5 ms) per wake-up.
                time.sleep(0)

    def view(self, now: float | None = None) -> dict[str, AbstractSiteState]:
        """The twin's view; cached for up to a second while no telemetry arrives."""
        with self.lock:
            key = (self._version, int(time.time()) if now is None else now)
            if self._view is not None and self._view[0] == key:
                return self._view[1]
            from federation.api.routers.site_state import merge_pushed  # (routers import us)

            view = merge_pushed(self.ctx.store, self.twin().view(now), now)  # agent-fed sites
            self._view = (key, view)
            return view

    # -- execution -----------------------------------------------------------------------------
    def executor(self) -> Executor:
        with self.lock:
            fed = self.federation()
            if self._executor is None:
                self._executor = Executor(
                    RunStore(self.ctx.store),
                    {},
                    stager=CopyStager(self.data_dir / "staging"),
                    replanner=PlannerReplanner(fed, HEFTPlanner(), view=self.view),
                    inputs_dir=self.data_dir / "inputs",
                )
            for site in fed.site_ids:
                if site not in self._executor.connectors:
                    self._executor.connectors[site] = PullConnector(
                        site, self.ctx.store, self.data_dir / "agents" / site
                    )
            return self._executor

    def submit(
        self,
        workflow: Workflow,
        assignment: dict[str, str],
        project: str,
        synthetic: bool,
        scale: float,
        **policy: Any,
    ) -> str:
        with self.lock:
            ex = self.executor()
            if synthetic:
                speed = {s.id: s.speed for s in self.federation().sites}
                ex.command = synthetic_command(scale, speed)
                ex.data_scale = scale
            rid = ex.submit(workflow, assignment, project=project, **policy)
            self._start()
            return rid

    def _start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._loop, name="continuum-executor", daemon=True
            )
            self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                with self.lock:
                    ex = self.executor()
                    # paused runs too: their running steps finish and are recorded; one
                    # pass over all of them, so a site shared by several runs starts the
                    # most urgent step of any (the oldest run first on equal priority)
                    ex.step_all(ex.runs.runs([RunState.RUNNING, RunState.PAUSED]))
            except Exception:  # keep reconciling; the error goes to the log
                log.exception("reconciling runs failed")
            self._stop.wait(self.reconcile_s)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def wait(self, run_id: str, timeout: float) -> RunState:
        """Block until the run leaves ``running`` (for tests and scripts)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self.lock:
                state = self.executor().runs.run(run_id).state
            if state is not RunState.RUNNING:
                return state
            time.sleep(0.05)
        return RunState.RUNNING


def engine_of(ctx: ApiContext) -> Engine:
    """The service's engine, created on first use."""
    if ctx.engine is None:
        ctx.engine = Engine(ctx)
    engine: Engine = ctx.engine
    return engine
