"""The orchestration side of the service: the federation twin, planning and execution.

The service keeps one ``Engine`` on its context, built and started by the app's lifespan
(``create_app``) and stopped at shutdown: at start it resumes the reconciliation of the runs
left running or paused by an earlier process, without waiting for any request. Handlers
never start background work by side effect; ``engine_of`` answers 503 before the start.
The engine holds:

* the **registry's federation** (sites, links, organisations and projects, see
  ``federation.api.registry``), rebuilt when the registry's version changes;

* the **twin** of the registered sites (``FederationTwin`` on the service's
  store, snapshotted so a restarted service resumes from its last estimates,
  rebuilt when sites are registered or removed), fed by a background applier
  from the queue of telemetry that ingest recorded in the journal (replayed at
  start for what the snapshots had not seen);
* **planning** on the twin's view with the placement planners;
* the **executor** of approved plans. In a federation service every site is
  reached through its pull agent (``continuum site-agent``, outbound HTTPS
  only), so each registered site gets a ``PullConnector`` whose queue lives
  in the same store; a background thread reconciles the running and paused runs,
  each with the launch stored with it.

Its tunables are settings (``Settings.reconcile_interval_s`` and the others named
below), not constants.

Handlers call these methods; the engine holds a lock so that the background
thread and request threads never interleave inside the executor. Lock order:
the engine's lock, then the journal's (the store's writers of telemetry, in
turn), then store connections; a handler never waits for a lock while it holds
a session (the connection pool would run dry); the telemetry queue's lock comes last.
Telemetry ingest takes only the journal's lock (``?wait=true``: the engine's first), so
it never waits for the applier.

Every acknowledged sample is applied once, in time order, to the twin that serves the view,
also when the twin is rebuilt: the rebuild replays the journal, so it must not see a
sample that is then applied again from the queue. Hence (1) recording a batch and queueing
it is one step under the journal's lock, and a rebuild clears the queue and reads the
journal under the same lock, bumping the queue's generation; (2) a chunk the applier took
from the queue before a rebuild (an older generation) is in the replay and is dropped; (3)
a ``?wait=true`` batch is recorded and applied under the engine's lock, so no rebuild
comes in between; (4) there is one applier thread (started under a lock), so chunks
are applied in the order they were taken; (5) the replay counts as applied only the
samples the previous twin had not seen (its estimate's time per site), so the counters
count each sample once.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any

from federation.api import journal, registry
from federation.api.errors import Conflict, ServiceUnavailable
from federation.model import Federation
from orchestrator.connectors.pull import PullConnector
from orchestrator.execution import CopyStager, Executor, Launch, OnError, RunState, RunStore
from orchestrator.execution.replan import PlannerReplanner
from orchestrator.placement.planners import HEFTPlanner
from twin.federation_twin import FederationTwin, IngestReport
from twin.state import AbstractSiteState
from twin.telemetry import TelemetrySample

if TYPE_CHECKING:
    from federation.api.deps import ApiContext
    from orchestrator.workflow import Workflow

log = logging.getLogger(__name__)


class Engine:
    """Twin, planner view and executor of the service (see the module docstring)."""

    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx
        settings = ctx.settings
        self.reconcile_s = settings.reconcile_interval_s
        self.lock = threading.RLock()
        self._twin: FederationTwin | None = None
        self._twin_sites: tuple[str, ...] = ()
        self._executor: Executor | None = None
        self._federation: Federation | None = None
        self._federation_version = -1
        self._federation_checked = -math.inf
        self.registry_ttl_s = settings.registry_ttl_s
        self.apply_chunk = settings.twin_apply_chunk  # samples per turn of the applier
        self._last_snapshot = 0.0
        self.snapshot_every_s = settings.twin_snapshot_every_s
        self._version = 0
        self._view: tuple[tuple[int, float], dict[str, AbstractSiteState]] | None = None
        self.totals = IngestReport()
        self.replayed = 0  # samples applied from the journal at (re)start
        self._queue: deque[TelemetrySample] = deque()
        self._generation = 0  # bumped when a rebuild clears the queue (under _queue_lock)
        self._queue_lock = threading.Lock()
        # Journal writes of this process one at a time: SQLite has one writer, and its
        # busy handler backs off in sleeps of up to 100 ms, a lock wakes the next at once.
        self.journal_lock = threading.Lock()
        self._applying = False
        self._wake = threading.Event()
        self._applier: threading.Thread | None = None
        self._applier_lock = threading.Lock()  # (checked then started in one step)
        self._stop = threading.Event()
        self._wake_loop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def data_dir(self) -> Path:
        return Path(self.ctx.settings.data_dir)

    # -- the federation and its twin ---------------------------------------------------------
    def federation(self) -> Federation:
        """The registered federation (409 while no site is registered).

        Rebuilt only when the registry's version changed, so hot paths (telemetry
        ingest) do not validate every site on every request; the registry is looked at
        again after ``registry_ttl_s`` (changes made through this service call
        ``registry_changed`` and are seen at once).
        """
        if (
            self._federation is not None
            and time.monotonic() - self._federation_checked < self.registry_ttl_s
        ):
            return self._federation
        with self.ctx.store.session() as db:
            version = registry.version(db)
            self._federation_checked = time.monotonic()
            if self._federation is not None and version == self._federation_version:
                return self._federation
            fed = registry.load(db)
        if fed is None:
            raise Conflict(
                "no site is registered yet: PUT /api/v1/federation or POST /api/v1/sites first"
            )
        self._federation, self._federation_version = fed, version
        return fed

    def registry_changed(self) -> None:
        """The registry changed: read it on next use."""
        self._federation_checked = -math.inf

    def twin(self) -> FederationTwin:
        with self.lock:
            fed = self.federation()
            if self._twin is None or fed.site_ids != self._twin_sites:
                self._version += 1
                # Snapshots on a timer (``ingest``), not after every batch.
                twin = FederationTwin(fed, store=self.ctx.store, name="service", autosave=False)
                self._replay(twin, self._twin)
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

    def _replay(self, twin: FederationTwin, previous: FederationTwin | None) -> None:
        """Apply the journal's samples that the snapshots the twin resumed from had not seen.

        Under the journal's lock, the queue is emptied (its samples are in the journal,
        replayed here) and its generation bumped (a chunk the applier holds is dropped);
        a batch is recorded and queued either before (replayed) or after (queued). Of
        the replayed samples, those at or before ``previous``'s estimate of their site
        were given to the previous twin and counted then: they are applied, not counted.
        """
        with self.journal_lock:
            with self._queue_lock:
                self._queue.clear()
                self._generation += 1
            with self.ctx.store.session() as db:
                missed = [
                    s for sid, tw in twin.sites.items() for s in journal.newer_than(db, sid, tw.t)
                ]
        seen_until: dict[str, float] = {}
        if previous is not None:
            seen_until = {sid: tw.t for sid, tw in previous.sites.items() if tw.t is not None}
        seen = [s for s in missed if s.timestamp <= seen_until.get(s.site, -math.inf)]
        new = [s for s in missed if s.timestamp > seen_until.get(s.site, -math.inf)]
        if seen:  # a site's seen samples all come before its new ones: order is kept
            twin.ingest(seen)
        if new:
            report = twin.ingest(new)
            self.replayed += report.applied
            self.totals.applied += report.applied
            self.totals.duplicates += report.duplicates
            self.totals.rejected_out_of_order += report.rejected_out_of_order
            self.totals.conflicting += report.conflicting
        if missed:
            log.info(
                "replayed %d telemetry samples from the journal (%d new)", len(missed), len(new)
            )

    def ingest(self, samples: list[TelemetrySample], generation: int | None = None) -> IngestReport:
        """Apply samples to the twin now (what ``?wait=true`` and the applier call).

        ``generation``: the queue's generation the samples were taken at (the applier);
        if the twin was rebuilt since, its replay applied them and they are dropped.
        """
        with self.lock:
            twin = self.twin()
            if generation is not None and generation != self._generation:
                return IngestReport()
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
        with self.lock:
            twin = self.twin()  # (a rebuild takes the journal's lock: before it, not inside)
            with self.journal_lock:  # the store's writers of this process, in turn
                twin.snapshot()
                self._last_snapshot = time.monotonic()
                keep = self.ctx.settings.telemetry_retention_s
                with self.ctx.store.session() as db:
                    for sid, tw in twin.sites.items():
                        if tw.t is not None:
                            journal.prune(db, sid, tw.t - keep)

    def record_and_queue(self, site: str, rows: dict[str, dict[str, Any]]) -> tuple[int, int]:
        """Store new samples in the journal and queue them, in one step against rebuilds.

        ``rows``: sample id -> the journal's ``COLUMNS``. Returns (new samples, samples
        waiting in the queue).
        """
        # Built and put in time order before the lock (the rows are the API's validated
        # samples): under it, only the INSERT and the queueing.
        built = journal.to_samples(site, list(rows.values()), validated=True)
        order = sorted(range(len(built)), key=lambda i: built[i].timestamp)
        ids = list(rows)
        with self.journal_lock:
            with self.ctx.store.session() as db:
                new = journal.record(db, site, rows)
            fresh = [built[i] for i in order if ids[i] in new]
            return len(fresh), (self.enqueue(fresh) if fresh else self.queued())

    def record_and_apply(
        self, site: str, rows: dict[str, dict[str, Any]]
    ) -> tuple[int, IngestReport]:
        """Store new samples in the journal and apply them now, with no rebuild in between.

        Returns (new samples, the twin's report on them).
        """
        with self.lock:
            self.twin()  # rebuilt (if it must be) before the batch is in the journal
            with self.journal_lock, self.ctx.store.session() as db:
                new = journal.record(db, site, rows)
            fresh = journal.to_samples(
                site, [r for sid, r in rows.items() if sid in new], validated=True
            )
            return len(fresh), self.ingest(fresh)

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
        # One applier, ever: two would each take a chunk of a site's samples, and the later
        # chunk, applied first, would get the earlier one rejected as out of order (lost).
        with self._applier_lock:
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
                    generation = self._generation
                if not batch:
                    break
                try:
                    self.ingest(batch, generation)
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
        """The executor, with a pull connector for every registered site (409 with none)."""
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
            elif isinstance(self._executor.replanner, PlannerReplanner):
                self._executor.replanner.federation = fed
            for site in fed.site_ids:
                if site not in self._executor.connectors:
                    self._executor.connectors[site] = PullConnector(
                        site,
                        self.ctx.store,
                        self.data_dir / "agents" / site,
                        heartbeat_timeout=self.ctx.settings.agent_heartbeat_timeout_s,
                    )
            return self._executor

    def submit(
        self,
        workflow: Workflow,
        assignment: dict[str, str],
        project: str,
        launch: Launch,
        *,
        on_error: OnError = OnError.CANCEL_JOB,
        max_attempts: int = 3,
        run_id: str | None = None,
    ) -> str:
        """Record a run (its launch with it); the reconciliation loop drives it."""
        with self.lock:
            ex = self.executor()
            rid = ex.submit(
                workflow,
                assignment,
                project=project,
                launch=launch,
                on_error=on_error,
                max_attempts=max_attempts,
                run_id=run_id,
            )
        self._wake_loop.set()
        return rid

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the reconciliation loop (it resumes the runs left running or paused)."""
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._loop, name="continuum-executor", daemon=True
            )
            self._thread.start()

    def _loop(self) -> None:
        runs = RunStore(self.ctx.store)
        while not self._stop.is_set():
            try:
                live = runs.runs([RunState.RUNNING, RunState.PAUSED])
                if live:
                    with self.lock:
                        ex = self.executor()
                        # paused runs too: their running steps finish and are recorded; one
                        # pass over all of them, so a site shared by several runs starts the
                        # most urgent step of any (the oldest run first on equal priority);
                        # a run whose pass raises is noted in its events, the others go on
                        ex.step_all(live)
            except Conflict:
                pass  # no site registered yet: nothing can run
            except Exception:  # keep reconciling; the error goes to the log
                log.exception("reconciling runs failed")
            self._wake_loop.wait(self.reconcile_s)
            self._wake_loop.clear()

    def stop(self) -> None:
        """Stop the loop and the telemetry applier; snapshot the twin."""
        self._stop.set()
        self._wake_loop.set()
        self._wake.set()
        for thread in (self._thread, self._applier):
            if thread is not None:
                thread.join(timeout=30)
        if self._twin is not None:
            with contextlib.suppress(Exception):  # a stop must not fail on a broken store
                self.checkpoint()
        if self._executor is not None:
            for conn in self._executor.connectors.values():
                conn.close()

    def wait(self, run_id: str, timeout: float) -> RunState:
        """Block until the run leaves ``running`` (for tests and scripts)."""
        runs = RunStore(self.ctx.store)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            state = runs.run(run_id).state
            if state is not RunState.RUNNING:
                return state
            time.sleep(0.05)
        return RunState.RUNNING


def engine_of(ctx: ApiContext) -> Engine:
    """The service's engine, built by the app's lifespan (503 before the service started)."""
    engine = ctx.engine
    if engine is None:
        raise ServiceUnavailable("the service is starting: retry in a moment")
    assert isinstance(engine, Engine)
    return engine
