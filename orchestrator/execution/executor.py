"""The executor: runs a placed workflow through site connectors, durably.

One reconciliation pass (``Executor.step_once``) catches up with the store,
asks connectors where their tasks are, records what changed, promotes steps
whose parents are done, and dispatches ready steps by priority. A pass costs
what changed, not the size of the run: the executor mirrors each run in memory
and re-reads only the steps named by events it has not seen yet (every change,
by this executor, the API or the CLI, writes one), polls only the steps handed
to a connector, hands a site only what it can start soon
(``SiteConnector.capacity``; the other ready steps wait here in priority
order, still open to a re-plan), and looks at a pending step only when one of
its parents finishes. Every state change is written to the store *before* the
action it announces (several at once in one transaction when they are alike):

* a step is recorded ``running`` with its attempt number and its connector
  handle, and only then submitted; after a crash, a handle whose task never
  started is submitted again, and the connector's exclusive claim makes a
  double start impossible: every step runs exactly once per attempt;
* a finished task is read from the connector (its result file), so a task
  that finished while the orchestrator was down is picked up on restart.

Error management follows ProActive's vocabulary: a failed attempt is retried
after an exponential backoff up to ``max_attempts``; a step that exhausts its
attempts at a site is re-planned on another site when a re-planner is given
and a healthy eligible site remains; otherwise the run's ``on_error`` policy
applies (``cancel-job``, ``pause-task``, ``pause-job``, ``continue``). Runs can
be paused, resumed, killed, and their steps in error restarted.
"""

from __future__ import annotations

import contextlib
import hashlib
import heapq
import logging
import os
import select
import shutil
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol, runtime_checkable

from orchestrator.connectors.base import (
    ConnectorError,
    SiteConnector,
    StagingPending,
    TaskInfo,
    TaskSpec,
    TaskStatus,
    sha256_file,
)
from orchestrator.connectors.local import safe_name
from orchestrator.errors import OrchestratorError, PlanningError
from orchestrator.execution import synthetic
from orchestrator.execution.launch import Launch
from orchestrator.execution.logs import DEFAULT_LIMIT, STREAMS, bound_log
from orchestrator.execution.states import ACTIVE, OnError, RunState, StepState
from orchestrator.execution.store import (
    STEP_FIELDS,
    Change,
    RunRecord,
    RunStore,
    StepRecord,
)
from orchestrator.workflow import Step, Workflow

S = StepState


class Stager(Protocol):
    """Moves one data item from the site holding it to the site that needs it."""

    def stage(
        self, run_id: str, item_id: str, src_site: str, src_path: Path, dst_site: str
    ) -> Path: ...


@runtime_checkable
class ItemStager(Protocol):
    """Stages the items of simulated runs, which exist only as sizes (nothing is copied).

    Called where a real run would stage a file: for each input of a step that lives at
    another site, when the step is about to start there (``SimulatedTransfers`` accounts
    for the transfer's duration on the link, and its site starts the step after it).
    """

    def stage_item(
        self, run_id: str, step_id: str, item_id: str, size: float, src_site: str, dst_site: str
    ) -> None: ...


@dataclass
class CopyStager:
    """Stages items between site directories on one host, sha256-verified end to end.

    Each site has ``<root>/<site>/staged/<run>/``; a copy whose checksum does
    not match the source is discarded and copied again (up to ``retries``).
    """

    root: Path
    retries: int = 2
    bytes_moved: int = 0
    moves: list[tuple[str, str, str, int]] = field(default_factory=list)

    def stage(
        self, run_id: str, item_id: str, src_site: str, src_path: Path, dst_site: str
    ) -> Path:
        if src_site == dst_site:
            return src_path
        dst, want, present = staging_target(self.root, run_id, item_id, src_path, dst_site)
        if present:
            return dst
        for _ in range(self.retries + 1):
            tmp = dst.with_name(dst.name + ".part")
            shutil.copyfile(src_path, tmp)
            if sha256_file(tmp) == want:
                os.replace(tmp, dst)
                size = dst.stat().st_size
                self.bytes_moved += size
                self.moves.append((item_id, src_site, dst_site, size))
                return dst
        raise OrchestratorError(f"checksum mismatch staging {item_id} {src_site} -> {dst_site}")


def staging_target(
    root: Path, run_id: str, item_id: str, src_path: Path, dst_site: str
) -> tuple[Path, str, bool]:
    """Where a stager puts ``item_id`` at ``dst_site`` (``<root>/<site>/staged/<run>/``),
    the source's sha256, and whether a verified copy is already there (staging is
    idempotent: a restarted run does not move the same bytes twice)."""
    dst_dir = root / dst_site / "staged" / run_id
    dst_dir.mkdir(parents=True, exist_ok=True)
    dst = dst_dir / safe_name(item_id)
    want = sha256_file(src_path)
    return dst, want, dst.exists() and sha256_file(dst) == want


@dataclass(frozen=True)
class ReplanRequest:
    """What a re-planner is asked: place ``steps`` on sites other than ``excluded``."""

    run_id: str
    workflow: Workflow
    steps: tuple[str, ...]
    excluded: frozenset[str]
    assignment: Mapping[str, str]
    done: frozenset[str]
    reason: str
    sites: frozenset[str] = frozenset()
    """Sites the executor can reach (has a connector for); empty: any site."""


Replanner = Callable[[ReplanRequest], Mapping[str, str]]
"""Returns a new site for (some of) the requested steps."""


@dataclass
class ExecutorStats:
    """What the executor did, counted (for tests and benchmarks: no timings here)."""

    passes: int = 0
    full_loads: int = 0
    """Times every step of a run was read: first sight of a run, then the safety net."""
    steps_read: int = 0
    """Step rows read from the store, full loads included."""
    events_read: int = 0
    polls: int = 0
    """Connector ``status`` calls."""
    submits: int = 0


FINISHED_RUN = frozenset({RunState.DONE, RunState.CANCELLED, RunState.FAILED})

LIVE_RUN = frozenset({RunState.RUNNING, RunState.PAUSED})
RESTARTABLE_RUN = LIVE_RUN | {RunState.FAILED, RunState.CANCELLED}


CONTROLS = ("pause", "resume", "kill", "restart")
"""What a user may do to a run (``Executor.control``)."""


class RunFinished(OrchestratorError):
    """A control that a finished run cannot take (pause a done run, resume a failed one)."""


MAX_PASS_ERRORS = 5
"""Passes in a row in which a run may raise before it is failed (with the reason)."""

log = logging.getLogger(__name__)


@dataclass
class _RunView:
    """The executor's mirror of one run between passes, with indexes on it.

    The store stays the source of truth: every change is written there first,
    then mirrored here; changes made by others (the API, the CLI) are read back
    through the run's events (``RunStore.changes_since``).
    """

    run: RunRecord
    wf: Workflow
    order: dict[str, int]
    recs: dict[str, StepRecord] = field(default_factory=dict)
    by_state: dict[StepState, set[str]] = field(
        default_factory=lambda: {st: set() for st in StepState}
    )
    promote: set[str] = field(default_factory=set)
    """Pending steps whose parents may all be done now (checked at the next promotion)."""
    ready: dict[str, list[tuple[int, int, str]]] = field(default_factory=dict)
    """Per site, a heap of ``(-priority, topological index, step)`` of ready steps
    (entries made stale by a later change are skipped when popped)."""
    delayed: list[tuple[float, int, str]] = field(default_factory=list)
    """A heap of ``(not_before, topological index, step)``: ready steps waiting on a backoff."""
    last_event: int = 0
    seen: set[int] = field(default_factory=set)
    mine: set[int] = field(default_factory=set)
    """Ids of the events this executor wrote and has not read back yet: the changes
    they announce are mirrored already, so catching up skips them."""
    loaded_at: float = 0.0

    def reset(self) -> None:
        self.recs.clear()
        for ids in self.by_state.values():
            ids.clear()
        self.promote.clear()
        self.ready.clear()
        self.delayed.clear()
        self.seen.clear()
        self.mine.clear()


class Executor:
    """Runs workflows placed on sites, through ``SiteConnector``s, with durable state.

    A pass costs what changed, not the size of the run: the executor mirrors
    each run in memory and re-reads only the steps named by events it has not
    seen (all of them on first sight and every ``resync_s`` seconds, a safety
    net); it polls only the steps handed to a connector, and hands a site only
    what it can start soon (``SiteConnector.capacity``), keeping the other ready
    steps in a priority queue; a pending step is looked at when a parent
    finishes, not on every pass.
    """

    def __init__(
        self,
        runs: RunStore,
        connectors: Mapping[str, SiteConnector],
        *,
        stager: Stager | ItemStager | None = None,
        replanner: Replanner | None = None,
        inputs_dir: Path | None = None,
        poll_interval: float = 0.05,
        clock: Callable[[], float] = time.time,
        resync_s: float = 30.0,
        fetch_timeout_s: float = 600.0,
        log_limit: int = DEFAULT_LIMIT,
        sole_writer: bool = False,
    ) -> None:
        self.runs = runs
        self.connectors = dict(connectors)
        self.stager = stager
        self.replanner = replanner
        self.inputs_dir = inputs_dir
        self.poll_interval = poll_interval
        self.clock = clock
        self.resync_s = resync_s
        self.fetch_timeout_s = fetch_timeout_s
        self.log_limit = log_limit
        self.sole_writer = sole_writer
        """No one else (the API, the CLI, another executor) changes this store's runs: the
        changes are not read back after each pass (a simulation's executor and its own
        store). Off by default: a service's runs are changed from outside."""
        self.pass_errors: dict[str, int] = {}
        """Consecutive passes in which a run raised (reset by a clean pass)."""
        self.down_sites: set[str] = set()
        self.stats = ExecutorStats()
        self._workflows: dict[str, Workflow] = {}
        self._views: dict[str, _RunView] = {}
        self._in_pass = False
        # SQLite commits writers one at a time, so event ids become visible in order;
        # elsewhere (PostgreSQL) a transaction holding a smaller id may commit after a
        # larger one is read: look back over the last ids too.
        self._lookback = 0 if runs.store.engine.dialect.name == "sqlite" else 256

    # -- submitting and controlling ------------------------------------------------------
    def submit(
        self,
        workflow: Workflow,
        assignment: Mapping[str, str],
        *,
        on_error: OnError | str = OnError.CANCEL_JOB,
        max_attempts: int = 3,
        backoff_s: float = 0.5,
        project: str = "",
        launch: Launch | None = None,
        run_id: str | None = None,
    ) -> str:
        """Record a new run of ``workflow`` (each step on its assigned site) and return its id.

        ``launch`` says how its steps run (default: their own commands). Where steps may run
        travels in the workflow itself (``Step.constraints``: what the user declared, the
        project's sites and a data plan's rules folded in by ``orchestrator.planning``), so
        re-plans keep to it. Refused, with nothing stored, when a site has no connector, a step
        is placed on a site its constraints exclude, or a native launch meets a step without
        a command.
        """
        launch = launch or Launch()
        unknown = sorted({s for s in assignment.values() if s not in self.connectors})
        if unknown:
            raise OrchestratorError(f"no connector for site(s): {', '.join(unknown)}")
        wrong = [
            f"{step.id} on {assignment[step.id]} (may use {', '.join(step.constraints.sites)})"
            for step in workflow.steps
            if step.constraints.sites is not None
            and assignment.get(step.id) not in step.constraints.sites
        ]
        if wrong:
            raise OrchestratorError(f"steps placed where they may not run: {'; '.join(wrong[:5])}")
        missing = launch.missing_commands(workflow)
        if missing:
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            raise OrchestratorError(
                f"step(s) {', '.join(missing[:5])}{more} have no command: give each step a "
                "command, or run with a synthetic launch"
            )
        rid = self.runs.create_run(
            workflow,
            assignment,
            on_error=OnError(on_error),
            max_attempts=max_attempts,
            backoff_s=backoff_s,
            project=project,
            run_id=run_id,
            launch=launch,
        )
        self._workflows[rid] = workflow
        return rid

    def _controllable(self, run_id: str, action: str, allowed: frozenset[RunState]) -> _RunView:
        view = self._view(run_id)
        if view.run.state not in allowed:
            raise RunFinished(
                f"run {run_id} is {view.run.state.value}: it cannot be {action} any more"
            )
        return view

    def pause(self, run_id: str) -> None:
        """No new step starts; running steps finish; waiting steps are paused.

        ``RunFinished`` for a run that is done, failed or cancelled."""
        view = self._controllable(run_id, "paused", LIVE_RUN)
        self._set_run_state(run_id, view, RunState.PAUSED, "paused by user")
        waiting = self._ordered(view, view.by_state[S.PENDING] | view.by_state[S.READY])
        self._apply(run_id, view, [(sid, [S.PAUSED], "run paused", {}) for sid in waiting])

    def resume(self, run_id: str) -> None:
        """Paused steps go back to the queue (``RunFinished`` for a finished run)."""
        view = self._controllable(run_id, "resumed", LIVE_RUN)
        self._set_run_state(run_id, view, RunState.RUNNING, "resumed by user")
        paused = self._ordered(view, view.by_state[S.PAUSED])
        self._apply(run_id, view, [(sid, [S.PENDING], "run resumed", {}) for sid in paused])

    def kill(self, run_id: str) -> None:
        """Cancel every unfinished step (running tasks are stopped) and the run.

        ``RunFinished`` for a run that is done, failed or cancelled already.
        """
        view = self._controllable(run_id, "killed", LIVE_RUN)
        for sid in self._ordered(view, view.by_state[S.STAGING] | view.by_state[S.RUNNING]):
            rec = view.recs[sid]
            if rec.handle:
                self._connector(rec.site).cancel(rec.handle)
        alive = [sid for sid, r in view.recs.items() if r.state not in (S.DONE, S.CANCELLED)]
        self._apply(run_id, view, [(sid, [S.CANCELLED], "run killed", {}) for sid in alive])
        self._set_run_state(run_id, view, RunState.CANCELLED, "killed by user")
        if not self._in_pass:
            self._views.pop(run_id, None)

    def restart_failed(self, run_id: str) -> list[str]:
        """Put steps in error (failed, cancelled, paused) back in the queue with fresh attempts.

        A failed or killed run runs again; ``RunFinished`` for a run that is done."""
        view = self._controllable(run_id, "restarted", RESTARTABLE_RUN)
        changes: list[Change] = []
        for sid in self._ordered(
            view, view.by_state[S.FAILED] | view.by_state[S.CANCELLED] | view.by_state[S.PAUSED]
        ):
            rec = view.recs[sid]
            target = S.READY if rec.state is S.FAILED else S.PENDING
            # a fresh series where it was: the cause is fixed, its site is usable again
            fields = {"attempt_base": rec.attempts, "not_before": 0.0, "failed_sites": ""}
            changes.append((sid, [target], "restarted by user", fields))
        self._apply(run_id, view, changes)
        restarted = [c[0] for c in changes]
        if restarted:
            self._set_run_state(
                run_id, view, RunState.RUNNING, f"restarted {len(restarted)} step(s)"
            )
        return restarted

    def control(self, run_id: str, action: str) -> None:
        """One of ``CONTROLS`` by name (what the API and the CLI call); ``ValueError`` for
        another name, ``RunFinished`` for a run that cannot take it."""
        methods = {
            "pause": self.pause,
            "resume": self.resume,
            "kill": self.kill,
            "restart": self.restart_failed,
        }
        if action not in methods:
            raise ValueError(f"unknown control {action!r}; use one of {', '.join(CONTROLS)}")
        methods[action](run_id)

    def site_down(self, run_id: str, site: str, reason: str = "site down") -> list[str]:
        """A site is down: its unfinished steps go back to the queue and are re-planned."""
        view = self._view(run_id)
        self.down_sites.add(site)
        moved = []
        back: list[Change] = []
        conn = self._connector(site)
        for sid, rec in view.recs.items():
            if rec.site != site or rec.state in (S.DONE, S.CANCELLED):
                continue
            if rec.state in ACTIVE:
                with contextlib.suppress(ConnectorError):
                    conn.cancel(rec.handle)
                if rec.state is S.RUNNING and self._succeeded(conn, rec.handle):
                    continue  # it finished before the site went down: the next pass records it
                back.append((sid, [S.READY], reason, {"attempt_base": rec.attempt_base + 1}))
            moved.append(sid)
        self._apply(run_id, view, back)
        if moved:
            self._replan(run_id, moved, reason)
        return moved

    def site_up(self, site: str) -> None:
        """A site that was down is back: it is handed work and re-plans may use it again.

        Steps moved away while it was down stay where they were moved."""
        self.down_sites.discard(site)

    def next_due(self, run_ids: Iterable[str]) -> float | None:
        """When the first step of these runs waiting on a retry's backoff may start, on the
        executor's clock (``None``: none waits). A driver on a simulated clock passes again
        then; a polling loop does not need it."""
        due = [
            view.delayed[0][0]
            for rid in run_ids
            if (view := self._views.get(rid)) is not None and view.delayed
        ]
        return min(due, default=None)

    @staticmethod
    def _succeeded(conn: SiteConnector, handle: str) -> bool:
        """Whether the task behind ``handle`` has finished well (a connector that cannot
        tell is taken to say no)."""
        if not handle:
            return False
        try:
            return conn.status(handle).status is TaskStatus.SUCCEEDED
        except (ConnectorError, OSError):
            return False

    # -- running -------------------------------------------------------------------------
    def run(self, run_id: str, timeout: float | None = None) -> RunState:
        """Reconcile until the run is done, failed, cancelled or paused (or ``timeout`` s)."""
        end = None if timeout is None else time.monotonic() + timeout
        while True:
            state = self.step_once(run_id)
            if state is not RunState.RUNNING:
                return state
            if end is not None and time.monotonic() > end:
                return state
            self.wait(self.poll_interval)

    def wait(self, timeout: float) -> None:
        """Sleep between passes: up to ``timeout`` seconds, less when a connector's task ends
        first (``SiteConnector.wakeup_fds``), so a finished step is seen at once without
        polling on a short timer."""
        fds = [fd for conn in self.connectors.values() for fd in conn.wakeup_fds()]
        if not fds:
            time.sleep(timeout)
            return
        poller = select.poll()
        for fd in fds:
            poller.register(fd, select.POLLIN)
        with contextlib.suppress(InterruptedError, OSError):
            poller.poll(timeout * 1000)

    def step_once(self, run_id: str) -> RunState:
        """One reconciliation pass; returns the run's state afterwards."""
        return self.step_all([run_id])[run_id]

    def step_all(self, run_ids: Iterable[str]) -> dict[str, RunState]:
        """One reconciliation pass over several runs; each run's state afterwards.

        Each run is caught up and polled, its pending steps promoted; then every
        site is handed its ready steps across the runs, highest priority first
        (ties: the run listed first, then the workflow's topological order), so a
        site shared by several runs starts the most urgent step of any of them.
        """
        states: dict[str, RunState] = {}
        live: list[tuple[str, _RunView]] = []
        errors: dict[str, Exception] = {}
        self._in_pass = True
        try:
            for run_id in dict.fromkeys(run_ids):
                self.stats.passes += 1
                try:
                    if run_id not in self._views:
                        state = self.runs.run(run_id).state
                        if state in FINISHED_RUN:
                            states[run_id] = state
                            continue
                    view = self._view(run_id)
                    if view.run.state in FINISHED_RUN:
                        states[run_id] = view.run.state
                        continue
                    self._poll(run_id, view)
                    self._promote(run_id, view)
                except Exception as exc:  # this run's trouble, not the other runs'
                    errors[run_id] = exc
                    continue
                live.append((run_id, view))
            self._dispatch([(rid, v) for rid, v in live if v.run.state is RunState.RUNNING], errors)
            for run_id, view in live:
                if run_id not in errors:
                    try:
                        states[run_id] = self._settle(run_id, view)
                    except Exception as exc:
                        errors[run_id] = exc
        finally:
            self._in_pass = False
        for run_id, error in errors.items():
            states[run_id] = self._run_error(run_id, error)
        for run_id, state in states.items():
            if run_id not in errors:
                self.pass_errors.pop(run_id, None)
            if state in FINISHED_RUN:
                self._views.pop(run_id, None)  # nothing more to follow (a restart reloads it)
        return states

    def _run_error(self, run_id: str, exc: Exception) -> RunState:
        """A pass over one run raised: note it in the run's events (the other runs go on);
        after ``MAX_PASS_ERRORS`` passes in a row the run fails, saying why."""
        self._views.pop(run_id, None)  # read it afresh next time
        count = self.pass_errors.get(run_id, 0) + 1
        what = f"{type(exc).__name__}: {exc}"[:1500]
        try:
            self.runs.log(run_id, "error", f"reconciliation failed ({count} in a row): {what}")
        except Exception:
            raise exc from None  # the store itself fails: no run is to blame, none counted
        self.pass_errors[run_id] = count
        if count == 1:
            log.warning("run %s: reconciliation failed: %s", run_id, what, exc_info=exc)
        try:
            if count >= MAX_PASS_ERRORS:
                self.runs.set_run_state(
                    run_id, RunState.FAILED, f"reconciliation failed {count} times: {what}"
                )
                self.pass_errors.pop(run_id, None)
                return RunState.FAILED
            return self.runs.run(run_id).state
        except Exception:
            raise exc from None  # the store itself fails: nothing per run to be done

    # -- the run's mirror ----------------------------------------------------------------
    def _view(self, run_id: str) -> _RunView:
        """The run as this executor knows it, brought up to date with the store (a sole
        writer knows every change already)."""
        view = self._views.get(run_id)
        if view is None or time.monotonic() - view.loaded_at > self.resync_s:
            return self._load(run_id)
        if not self.sole_writer:
            self._catch_up(run_id, view)
        return view

    def _load(self, run_id: str) -> _RunView:
        """Read every step of the run (first sight, or the periodic safety net)."""
        last, recs = self.runs.snapshot(run_id)
        run = self.runs.run(run_id)
        view = self._views.get(run_id)
        if view is None:
            wf = self._workflow(run_id)
            order = {sid: i for i, sid in enumerate(wf.topological_order())}
            view = self._views[run_id] = _RunView(run, wf, order)
        else:
            view.reset()  # in place: a pass holding this view sees the reload
            view.run = run
        view.last_event = last
        view.loaded_at = time.monotonic()
        for rec in recs.values():
            self._set(view, rec)
        self.stats.full_loads += 1
        self.stats.steps_read += len(recs)
        return view

    def _catch_up(self, run_id: str, view: _RunView) -> None:
        """Re-read what changed since the last event seen: the steps the new events name,
        and the run when its state changed."""
        events = self.runs.changes_since(run_id, view.last_event - self._lookback)
        if self._lookback:
            events = [e for e in events if e[0] not in view.seen]
        if not events:
            return
        self.stats.events_read += len(events)
        view.last_event = max(view.last_event, events[-1][0])
        if self._lookback:
            floor = view.last_event - self._lookback
            view.seen = {i for i in view.seen if i > floor}
            view.seen.update(e[0] for e in events)
        mine = view.mine
        names = set()
        for i, step, _ in events:
            if i in mine:
                mine.discard(i)
            elif step:
                names.add(step)
        if mine:  # every id noted is committed, hence read by now: keep none for ever
            view.mine = {i for i in mine if i > view.last_event}
        if any(not step and kind.startswith("run:") for _, step, kind in events):
            view.run = self.runs.run(run_id)
        if names:
            recs = self.runs.steps_named(run_id, names)
            self.stats.steps_read += len(recs)
            for rec in recs.values():
                self._set(view, rec)

    def _set(self, view: _RunView, rec: StepRecord) -> None:
        """Mirror one step, keeping the indexes (states, promotion, ready queues) in step."""
        sid = rec.step_id
        old = view.recs.get(sid)
        if old == rec:
            return
        view.recs[sid] = rec
        was = None if old is None else old.state
        if old is not None:
            view.by_state[old.state].discard(sid)
        view.by_state[rec.state].add(sid)
        if rec.state is S.PENDING and was is not S.PENDING:
            view.promote.add(sid)
        elif rec.state is S.DONE and was is not S.DONE:
            view.promote.update(view.wf.children(sid))
        elif rec.state is S.READY and (
            old is None
            or was is not S.READY
            or (old.site, old.priority, old.not_before) != (rec.site, rec.priority, rec.not_before)
        ):
            self._enqueue(view, rec)

    @staticmethod
    def _enqueue(view: _RunView, rec: StepRecord) -> None:
        entry = (-rec.priority, view.order[rec.step_id], rec.step_id)
        heapq.heappush(view.ready.setdefault(rec.site, []), entry)

    @staticmethod
    def _ordered(view: _RunView, ids: Iterable[str]) -> list[str]:
        return sorted(ids, key=view.order.__getitem__)

    def _steps(self, run_id: str) -> dict[str, StepRecord]:
        view = self._views.get(run_id)
        return (view if view is not None else self._load(run_id)).recs

    def _move(
        self,
        run_id: str,
        step_id: str,
        wanted: StepState | list[StepState],
        detail: str = "",
        **fields: object,
    ) -> StepRecord:
        """Record a transition in the store, then in the mirror."""
        chain = [wanted] if isinstance(wanted, StepState) else wanted
        return self._apply(run_id, self._views[run_id], [(step_id, chain, detail, fields)])[0]

    def _update(self, run_id: str, step_id: str, **fields: object) -> StepRecord:
        for k in fields:
            if k not in STEP_FIELDS:
                raise AttributeError(f"cannot set {k!r} on a step here")
        return self._apply(run_id, self._views[run_id], [(step_id, [], "", fields)])[0]

    def _apply(self, run_id: str, view: _RunView, changes: list[Change]) -> list[StepRecord]:
        """Record several changes in one transaction, then in the mirror."""
        recs, noted = self.runs.apply_noted(run_id, changes)
        if not self.sole_writer:  # a sole writer reads nothing back: nothing to skip
            view.mine.update(noted)
        for rec in recs:
            self._set(view, rec)
        return recs

    def _set_run_state(self, run_id: str, view: _RunView, state: RunState, detail: str) -> None:
        self.runs.set_run_state(run_id, state, detail)
        view.run = replace(view.run, state=state)

    def _workflow(self, run_id: str) -> Workflow:
        wf = self._workflows.get(run_id)
        if wf is None:
            wf = self._workflows[run_id] = self.runs.workflow(run_id)
        return wf

    def _connector(self, site: str) -> SiteConnector:
        try:
            return self.connectors[site]
        except KeyError:
            raise OrchestratorError(f"no connector for site {site!r}") from None

    # -- one pass ------------------------------------------------------------------------
    def _poll(self, run_id: str, view: _RunView) -> None:
        """Ask connectors about the steps handed to them (those each connector says may
        have finished: ``SiteConnector.settled``); record every finish at once."""
        run = view.run
        asked = set(view.by_state[S.STAGING])
        handed: dict[str, dict[str, str]] = {}
        for sid in view.by_state[S.RUNNING]:
            rec = view.recs[sid]
            handed.setdefault(rec.site, {})[rec.handle] = sid
        for site, steps in handed.items():
            asked.update(steps[h] for h in self._connector(site).settled(steps.keys()))
        active = self._ordered(view, asked)
        done: list[Change] = []
        other: list[tuple[StepRecord, TaskInfo | None]] = []
        for sid in active:
            rec = view.recs[sid]
            if rec.state is S.STAGING:
                other.append((rec, None))
                continue
            conn = self._connector(rec.site)
            info = conn.status(rec.handle)
            self.stats.polls += 1
            if info.status is TaskStatus.SUCCEEDED:
                missing = self._missing_outputs(view, conn, rec)
                if missing:
                    # exit 0 is not enough: what the step declared it writes must be there
                    info = replace(
                        info,
                        status=TaskStatus.FAILED,
                        message="exited 0 without writing its declared output(s): "
                        + ", ".join(missing),
                    )
                    other.append((rec, info))
                    continue
                fields = {"exit_code": 0, "ended_at": info.ended_at, "message": ""}
                done.append((sid, [S.DONE], f"done at {rec.site}", fields))
            elif info.status not in (TaskStatus.QUEUED, TaskStatus.RUNNING):
                other.append((rec, info))
        for sid, *_ in done:
            self._bound_logs(view.recs[sid])
        for rec, found in other:
            if found is not None:
                self._bound_logs(rec)
        self._apply(run_id, view, done)
        for rec, found in other:
            if view.recs[rec.step_id] != rec:
                continue  # moved meanwhile (a re-plan, a kill after another failure)
            if found is None:
                # Interrupted while staging (a crash): stage again from the start.
                self._move(run_id, rec.step_id, S.READY, "staging interrupted")
            else:
                self._finished_badly(
                    run_id, rec, found, run.max_attempts, run.backoff_s, run.on_error
                )

    def _bound_logs(self, rec: StepRecord) -> None:
        """Keep at most ``log_limit`` bytes of a finished task's streams (head and tail)."""
        conn = self.connectors.get(rec.site)
        if conn is None or not rec.handle:
            return
        for stream in STREAMS:
            with contextlib.suppress(OSError):
                bound_log(conn.log_path(rec.handle, stream), self.log_limit)

    @staticmethod
    def _missing_outputs(view: _RunView, conn: SiteConnector, rec: StepRecord) -> list[str]:
        """The declared outputs of a finished step that its task did not write."""
        if not view.run.launch.moves_data:
            return []
        missing = []
        for item in view.wf.step(rec.step_id).outputs:
            try:
                path = conn.output_path(rec.handle, item)
            except ConnectorError:
                return []  # the site keeps no files (a simulated site)
            if not path.is_file():
                missing.append(item)
        return missing

    def _finished_badly(
        self,
        run_id: str,
        rec: StepRecord,
        info: TaskInfo,
        max_attempts: int,
        backoff: float,
        on_error: OnError,
    ) -> None:
        conn = self._connector(rec.site)
        st = info.status
        if st is TaskStatus.NOT_STARTED:
            spec = self._spec(run_id, rec.step_id, rec.site, rec.attempts)
            conn.submit(spec)
            self.stats.submits += 1
            self.runs.log(
                run_id, "resubmitted", f"attempt {rec.attempts} at {rec.site}", rec.step_id
            )
        elif st in (TaskStatus.FAILED, TaskStatus.LOST, TaskStatus.CANCELLED):
            why = f"attempt {rec.attempts} at {rec.site} {st.value}"
            if info.exit_code is not None:
                why += f" (exit {info.exit_code})"
            if info.message:
                why += f": {info.message}"
            self._move(
                run_id,
                rec.step_id,
                S.FAILED,
                why[:2000],
                exit_code=info.exit_code,
                ended_at=info.ended_at,
                message=why[:2000],
            )
            self._after_failure(run_id, rec, max_attempts, backoff, on_error, why)

    def _after_failure(
        self,
        run_id: str,
        rec: StepRecord,
        max_attempts: int,
        backoff: float,
        on_error: OnError,
        why: str,
    ) -> None:
        if rec.site in self.down_sites:
            self._move(run_id, rec.step_id, S.READY, "site down", attempt_base=rec.attempt_base + 1)
            self._replan(run_id, [rec.step_id], f"site {rec.site} down")
            return
        if rec.attempts_in_series < max_attempts:
            delay = backoff * 2 ** (rec.attempts_in_series - 1)
            self._move(
                run_id,
                rec.step_id,
                S.READY,
                f"retry in {delay:.2f} s",
                not_before=self.clock() + delay,
            )
            return
        failed_sites = (*rec.failed_sites, rec.site)
        self._update(run_id, rec.step_id, failed_sites=",".join(failed_sites))
        if self.replanner is not None:
            before = rec.site
            self._move(
                run_id, rec.step_id, S.READY, "attempts exhausted", attempt_base=rec.attempts
            )
            self._replan(
                run_id, [rec.step_id], f"{rec.step_id} exhausted its attempts at {rec.site}"
            )
            after = self._steps(run_id)[rec.step_id]
            if after.site != before:
                return
            self._move(
                run_id, rec.step_id, S.FAILED, "no other site to re-plan on", message=why[:2000]
            )
        self._apply_policy(run_id, rec.step_id, on_error, why)

    def _apply_policy(self, run_id: str, step_id: str, on_error: OnError, why: str) -> None:
        self.runs.log(run_id, "on-error", f"{on_error.value}: {why}", step_id)
        if on_error is OnError.PAUSE_TASK:
            self._move(run_id, step_id, S.PAUSED, "paused after its last attempt")
        elif on_error is OnError.PAUSE_JOB:
            self.pause(run_id)
        elif on_error is OnError.CANCEL_JOB:
            self.kill(run_id)
            self._set_run_state(
                run_id, self._views[run_id], RunState.FAILED, f"cancelled after {step_id} failed"
            )

    def _replan(self, run_id: str, step_ids: Iterable[str], reason: str) -> None:
        view = self._views[run_id]
        steps = view.recs
        todo = tuple(s for s in step_ids if steps[s].state not in (S.DONE, S.CANCELLED))
        if not todo:
            return
        if self.replanner is None:
            self.runs.log(run_id, "replan", f"{reason}; no re-planner configured")
            return
        t0 = time.perf_counter()
        excluded = set(self.down_sites)
        for s in todo:
            excluded.update(steps[s].failed_sites)
        request = ReplanRequest(
            run_id=run_id,
            workflow=view.wf,
            steps=todo,
            excluded=frozenset(excluded),
            assignment={sid: r.site for sid, r in steps.items()},
            done=frozenset(view.by_state[S.DONE]),
            reason=reason,
            sites=frozenset(self.connectors),
        )
        try:
            new = self.replanner(request)
        except PlanningError as exc:  # no site can take them: they stay where they were
            self.runs.log(run_id, "replan", f"{reason}; no re-plan possible: {exc}"[:2000])
            return
        changes: list[Change] = []
        for sid in todo:
            site = new.get(sid)
            if site is None or site == steps[sid].site:
                continue
            if site not in self.connectors or site in excluded:
                raise OrchestratorError(f"re-planner put {sid} on unusable site {site!r}")
            changes.append((sid, [], f"re-planned to {site}", {"site": site}))
        self._apply(run_id, view, changes)
        moves = [f"{sid} -> {fields['site']}" for sid, _, _, fields in changes]
        ms = (time.perf_counter() - t0) * 1000
        self.runs.log(
            run_id,
            "replan",
            f"{reason}: re-planned {len(moves)} step(s) in {ms:.0f} ms: {', '.join(moves)}",
        )

    def _launch(self, run_id: str) -> Launch:
        view = self._views.get(run_id)
        return view.run.launch if view is not None else self.runs.run(run_id).launch

    def _spec(self, run_id: str, step_id: str, site: str, attempt: int) -> TaskSpec:
        wf = self._workflow(run_id)
        step = wf.step(step_id)
        launch = self._launch(run_id)
        inputs: dict[str, Path] = {}
        at_site: dict[str, str] = {}
        if launch.moves_data:
            inputs, at_site = self._stage_inputs(run_id, wf, step, site, launch)
        elif isinstance(self.stager, ItemStager):
            for item, src_site in self._item_sources(run_id, wf, step, site):
                self.stager.stage_item(run_id, step_id, item, wf.item(item).size, src_site, site)
        return TaskSpec(
            run_id=run_id,
            step_id=step_id,
            attempt=attempt,
            command=launch.command(wf, step, site),
            cores=step.cores,
            inputs=inputs,
            site_inputs=at_site,
            outputs=step.outputs if launch.moves_data else (),
            duration_hint=0.0 if launch.moves_data else launch.duration(step, site),
            memory=step.memory,
            # what this attempt is expected to cost (a synthetic step lasts its work scaled)
            work=step.work * (launch.time_scale if launch.kind.value == "synthetic" else 1.0),
        )

    def _stage_inputs(
        self, run_id: str, wf: Workflow, step: Step, site: str, launch: Launch
    ) -> tuple[dict[str, Path], dict[str, str]]:
        """The step's inputs: files here to hand to the connector (staged from other sites
        when they live elsewhere), and the paths of inputs that already live at the site."""
        steps = self._steps(run_id)
        paths: dict[str, Path] = {}
        at_site: dict[str, str] = {}
        for item in step.inputs:
            producer = wf.producer(item)
            if producer is not None:
                prec = steps[producer]
                src_site = prec.site
                src = self._connector(src_site).output_path(prec.handle, item)
                if not src.is_file():
                    raise OrchestratorError(
                        f"input {item} of {step.id}: its producer {producer} left no file at "
                        f"{src_site}"
                    )
            else:
                location = wf.item(item).location
                if location is None:
                    if launch.kind.value != "synthetic":
                        continue  # an unlocated external input is the step's own business
                    src_site, src = site, self._generated_input(run_id, wf, item, launch)
                elif location.url is not None:
                    src_site, src = site, self._fetched_input(run_id, wf, item, location.url)
                else:
                    if location.site is None or location.path is None:  # never: validated
                        raise OrchestratorError(f"input {item}: a location needs a site and a path")
                    if location.site == site:
                        at_site[item] = location.path  # already where the step runs
                        continue
                    src_site = location.site
                    src = self._connector(src_site).source_file(location.path, run_id, item)
            if src_site != site:
                if self.stager is None or isinstance(self.stager, ItemStager):
                    raise OrchestratorError(
                        f"{step.id} at {site} needs {item} from {src_site} and no stager is set"
                    )
                src = self.stager.stage(run_id, item, src_site, src, site)
            paths[item] = src
        return paths, at_site

    def _inputs_dir(self, run_id: str) -> Path:
        base = (self.inputs_dir or Path("inputs")) / run_id
        base.mkdir(parents=True, exist_ok=True)
        return base

    def _generated_input(self, run_id: str, wf: Workflow, item: str, launch: Launch) -> Path:
        """An external input of a synthetic run: ``size x data_scale`` generated bytes."""
        path = self._inputs_dir(run_id) / safe_name(item)
        if not path.exists():
            synthetic.write_output(path, int(wf.item(item).size * launch.data_scale), item)
        return path

    def _fetched_input(self, run_id: str, wf: Workflow, item: str, url: str) -> Path:
        """An external input at a URL, downloaded once per run (checked against the item's
        declared ``sha256:`` checksum when it has one)."""
        import httpx

        path = self._inputs_dir(run_id) / safe_name(item)
        want = wf.item(item).checksum
        expected = want.split(":", 1)[1] if want and want.startswith("sha256:") else None
        if path.exists() and (expected is None or sha256_file(path) == expected):
            return path
        tmp = path.with_name(path.name + ".part")
        h = hashlib.sha256()
        try:
            with (
                httpx.stream("GET", url, timeout=self.fetch_timeout_s, follow_redirects=True) as r,
                open(tmp, "wb") as f,
            ):
                r.raise_for_status()
                for chunk in r.iter_bytes(1 << 20):
                    h.update(chunk)
                    f.write(chunk)
        except httpx.HTTPError as exc:
            tmp.unlink(missing_ok=True)
            raise OrchestratorError(f"input {item}: could not fetch {url}: {exc}") from None
        if expected is not None and h.hexdigest() != expected:
            tmp.unlink(missing_ok=True)
            raise OrchestratorError(
                f"input {item}: {url} does not match its declared checksum {want}"
            )
        os.replace(tmp, path)
        return path

    def _promote(self, run_id: str, view: _RunView) -> None:
        """Pending steps whose parents are all done become ready (only those a change
        concerned are looked at: children of steps that finished, steps that became
        pending)."""
        if not view.promote:
            return
        recs, wf = view.recs, view.wf
        ready = [
            sid
            for sid in view.promote
            if recs[sid].state is S.PENDING
            and all(recs[p].state is S.DONE for p in wf.parents(sid))
        ]
        changes: list[Change] = [
            (sid, [S.READY], "parents done", {}) for sid in self._ordered(view, ready)
        ]
        self._apply(run_id, view, changes)
        view.promote.clear()

    def _dispatch(
        self, runs: list[tuple[str, _RunView]], errors: dict[str, Exception] | None = None
    ) -> None:
        """Hand each site its ready steps, highest priority first across ``runs``, as many as
        it can start soon (``SiteConnector.capacity``); the rest wait here, where a re-plan can
        still move them and a step of higher priority that becomes ready later goes first."""
        now = self.clock()
        for _, view in runs:
            while view.delayed and view.delayed[0][0] <= now:
                _, _, sid = heapq.heappop(view.delayed)
                rec = view.recs[sid]
                if rec.state is S.READY:
                    self._enqueue(view, rec)
        for site in sorted({site for _, view in runs for site, heap in view.ready.items() if heap}):
            if site in self.down_sites:
                continue
            room = self._connector(site).capacity()
            # A merge of the runs' heaps for this site: (-priority, run's rank, index, run).
            fronts: list[tuple[int, int, int, str]] = []
            views = dict(runs)
            for rank, (run_id, view) in enumerate(runs):
                heap = view.ready.get(site)
                if heap:
                    fronts.append((heap[0][0], rank, heap[0][1], run_id))
            heapq.heapify(fronts)
            picked: dict[str, dict[str, StepRecord]] = {}
            count = 0
            while fronts and (room is None or count < room):
                _, rank, _, run_id = heapq.heappop(fronts)
                view = views[run_id]
                heap = view.ready[site]
                _, index, sid = heapq.heappop(heap)
                if heap:
                    heapq.heappush(fronts, (heap[0][0], rank, heap[0][1], run_id))
                rec = view.recs[sid]
                mine = picked.setdefault(run_id, {})
                if rec.state is not S.READY or rec.site != site or sid in mine:
                    continue  # a stale entry: the step moved on since it was queued
                if rec.not_before > now:
                    heapq.heappush(view.delayed, (rec.not_before, index, sid))
                    continue
                mine[sid] = rec
                count += 1
            for run_id, recs in picked.items():
                if recs:
                    try:
                        self._start(run_id, views[run_id], site, list(recs.values()))
                    except Exception as exc:
                        if errors is None:
                            raise
                        errors[run_id] = exc

    def _start(self, run_id: str, view: _RunView, site: str, recs: list[StepRecord]) -> None:
        """Start steps at ``site``: those whose inputs are all there are recorded running in
        one transaction, then submitted; the others are staged first, one by one. A step that
        cannot be launched (no command, an input that cannot be read) fails by itself."""
        if self.replanner is not None:
            # A step queued at a site it exhausted its attempts at: the crash of an earlier
            # orchestrator fell between "attempts exhausted" and its re-plan. Re-plan it now.
            stale = [r for r in recs if site in r.failed_sites]
            if stale:
                self._finish_replan(run_id, view, [r.step_id for r in stale], site)
                recs = [r for r in recs if site not in r.failed_sites]
        conn = self._connector(site)
        plain: list[StepRecord] = []
        staged: list[StepRecord] = []
        for rec in recs:
            (staged if self._needs_staging(view, rec.step_id, site) else plain).append(rec)
        specs: list[tuple[str, TaskSpec, str]] = []
        broken: list[tuple[StepRecord, Exception]] = []
        for rec in plain:
            try:
                spec = self._spec(run_id, rec.step_id, site, rec.attempts + 1)
            except (OrchestratorError, ConnectorError, OSError) as exc:
                broken.append((rec, exc))
                continue
            specs.append((rec.step_id, spec, conn.handle_for(spec)))
        if specs:
            self._apply(
                run_id,
                view,
                [
                    (
                        sid,
                        [S.STAGING, S.RUNNING],
                        f"attempt {spec.attempt} at {site}",
                        {"attempts": spec.attempt, "handle": handle, "started_at": self.clock()},
                    )
                    for sid, spec, handle in specs
                ],
            )
            for sid, spec, _ in specs:
                try:
                    conn.submit(spec)
                    self.stats.submits += 1
                except ConnectorError as exc:
                    self._refused(run_id, view, sid, site, exc)
        for rec, why in broken:
            if view.recs[rec.step_id] == rec:
                self._move(run_id, rec.step_id, S.STAGING, f"launching at {site}")
                self._launch_failed(run_id, view, rec, site, why)
        for rec in staged:
            if site in self.down_sites:
                break
            if view.recs[rec.step_id] == rec:
                self._start_staged(run_id, view, conn, rec)
        if site in self.down_sites:
            # The site refused work: what still waits for it goes elsewhere too.
            rest = [s for s in view.by_state[S.READY] if view.recs[s].site == site]
            if rest:
                self._replan(run_id, self._ordered(view, rest), f"site {site} refused work")

    def _finish_replan(self, run_id: str, view: _RunView, sids: list[str], site: str) -> None:
        """Re-plan steps that wait at a site they failed at; a step no other site can take
        fails, and the run's ``on_error`` policy applies."""
        self._replan(run_id, sids, f"resuming the re-plan of steps that failed at {site}")
        for sid in sids:
            rec = view.recs[sid]
            if rec.state is S.READY and rec.site == site:
                why = f"{sid} exhausted its attempts at {site}; no other site to re-plan on"
                self._move(run_id, sid, [S.STAGING, S.FAILED], why, message=why)
                self._apply_policy(run_id, sid, view.run.on_error, why)

    def _start_staged(
        self, run_id: str, view: _RunView, conn: SiteConnector, rec: StepRecord
    ) -> None:
        site, attempt = rec.site, rec.attempts + 1
        self._move(run_id, rec.step_id, S.STAGING, f"staging at {site}")
        try:
            spec = self._spec(run_id, rec.step_id, site, attempt)
        except StagingPending as exc:
            # An input is on its way (a pull site exporting it): look again shortly.
            self._move(
                run_id, rec.step_id, S.READY, f"waiting: {exc}", not_before=self.clock() + 1.0
            )
            return
        except (OrchestratorError, ConnectorError, OSError) as exc:
            self._launch_failed(run_id, view, rec, site, exc)
            return
        try:
            handle = conn.handle_for(spec)
            self._move(
                run_id,
                rec.step_id,
                S.RUNNING,
                f"attempt {attempt} at {site}",
                attempts=attempt,
                handle=handle,
                started_at=self.clock(),
            )
            conn.submit(spec)
            self.stats.submits += 1
        except ConnectorError as exc:
            self._refused(run_id, view, rec.step_id, site, exc)

    def _launch_failed(
        self, run_id: str, view: _RunView, rec: StepRecord, site: str, exc: Exception
    ) -> None:
        """A step in staging could not be launched: that attempt fails, with the reason, and
        the run's retry and ``on_error`` policies apply as to any failed attempt."""
        attempt = rec.attempts + 1
        why = f"attempt {attempt} at {site} could not start: {exc}"
        failed = self._move(
            run_id,
            rec.step_id,
            S.FAILED,
            why[:2000],
            attempts=attempt,
            ended_at=self.clock(),
            message=why[:2000],
        )
        run = view.run
        self._after_failure(run_id, failed, run.max_attempts, run.backoff_s, run.on_error, why)

    def _refused(
        self, run_id: str, view: _RunView, step_id: str, site: str, exc: ConnectorError
    ) -> None:
        cur = view.recs[step_id]
        self._move(run_id, step_id, S.READY, str(exc), attempt_base=cur.attempt_base + 1)
        self.down_sites.add(site)
        self._replan(run_id, [step_id], f"site {site} refused work: {exc}")

    def _item_sources(
        self, run_id: str, wf: Workflow, step: Step, site: str
    ) -> list[tuple[str, str]]:
        """``(item, site it comes from)`` of each input of a simulated step that lives at
        another site: made there by its producer, or an external input located there (an
        input at a URL is fetched by the orchestrator's host: no site-to-site transfer)."""
        steps = self._steps(run_id)
        out = []
        for item in step.inputs:
            producer = wf.producer(item)
            if producer is not None:
                src = steps[producer].site
            else:
                location = wf.item(item).location
                if location is None or location.site is None:
                    continue
                src = location.site
            if src != site:
                out.append((item, src))
        return out

    def _needs_staging(self, view: _RunView, step_id: str, site: str) -> bool:
        """True when an input of the step lives elsewhere (another site, a URL); for a
        simulated run, when an input crosses sites and the stager accounts for items."""
        wf = view.wf
        if not view.run.launch.moves_data:
            if not isinstance(self.stager, ItemStager):
                return False
            return bool(self._item_sources(view.run.id, wf, wf.step(step_id), site))
        for item in wf.step(step_id).inputs:
            producer = wf.producer(item)
            if producer is not None:
                if view.recs[producer].site != site:
                    return True
                continue
            location = wf.item(item).location
            if location is not None and (location.url is not None or location.site != site):
                return True
        return False

    def _settle(self, run_id: str, view: _RunView) -> RunState:
        if view.run.state is not RunState.RUNNING:
            return view.run.state
        by = view.by_state
        if view.recs and len(by[S.DONE]) == len(view.recs):
            self._set_run_state(run_id, view, RunState.DONE, "all steps done")
            return RunState.DONE
        if by[S.STAGING] or by[S.RUNNING] or by[S.READY]:
            return RunState.RUNNING
        # Nothing runs or can start: the rest waits on paused or failed steps.
        if by[S.PAUSED]:
            self._set_run_state(run_id, view, RunState.PAUSED, "waiting on paused steps")
            return RunState.PAUSED
        if by[S.FAILED] or by[S.CANCELLED]:
            self._set_run_state(run_id, view, RunState.FAILED, "no step can make progress")
            return RunState.FAILED
        return RunState.RUNNING
