"""The executor: runs a placed workflow through site connectors, durably.

One reconciliation pass (``Executor.step_once``) reads the run from the
store, asks connectors where their tasks are, records what changed, promotes
steps whose parents are done, and dispatches ready steps by priority. Every
state change is written to the store *before* the action it announces:

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
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from orchestrator.connectors.base import ConnectorError, SiteConnector, TaskSpec, TaskStatus
from orchestrator.connectors.local import safe_name
from orchestrator.errors import OrchestratorError
from orchestrator.execution import synthetic
from orchestrator.execution.states import ACTIVE, OnError, RunState, StepState
from orchestrator.execution.store import RunStore, StepRecord
from orchestrator.workflow import Step, Workflow

S = StepState


class Stager(Protocol):
    """Moves one data item from the site holding it to the site that needs it."""

    def stage(
        self, run_id: str, item_id: str, src_site: str, src_path: Path, dst_site: str
    ) -> Path: ...


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


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


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

CommandBuilder = Callable[[Step, str], "tuple[str, ...] | str"]


def synthetic_command(
    scale: float = 1e-3, speed: Mapping[str, float] | None = None
) -> CommandBuilder:
    """Commands for WfCommons steps: burn ``duration x scale`` s, write outputs ``x scale`` bytes.

    ``speed`` (site id -> per-core speed) turns work into the duration on that
    site; without it the reference duration (``work / cores``) is used. Output
    sizes come from the command line the executor passes (see ``Executor``).
    """

    def build(step: Step, site: str) -> tuple[str, ...]:
        factor = (speed or {}).get(site, 1.0)
        seconds = step.work / (step.cores * factor) * scale
        # Started as a script (standard library only), not with -m, to keep it light.
        return (sys.executable, synthetic.__file__, "--seconds", f"{seconds:.4f}")

    return build


class Executor:
    """Runs workflows placed on sites, through ``SiteConnector``s, with durable state."""

    def __init__(
        self,
        runs: RunStore,
        connectors: Mapping[str, SiteConnector],
        *,
        stager: Stager | None = None,
        replanner: Replanner | None = None,
        command: CommandBuilder | None = None,
        data_scale: float = 1e-3,
        inputs_dir: Path | None = None,
        poll_interval: float = 0.05,
        clock: Callable[[], float] = time.time,
        duration: Callable[[Step, str], float] | None = None,
        move_data: bool = True,
    ) -> None:
        self.runs = runs
        self.connectors = dict(connectors)
        self.stager = stager
        self.replanner = replanner
        self.command = command
        self.data_scale = data_scale
        self.inputs_dir = inputs_dir
        self.poll_interval = poll_interval
        self.clock = clock
        # For simulated sites: how long a step lasts there (``TaskSpec.duration_hint``),
        # and whether data is materialised and staged at all.
        self.duration = duration
        self.move_data = move_data
        self.down_sites: set[str] = set()
        self._workflows: dict[str, Workflow] = {}
        self._order: dict[str, dict[str, int]] = {}
        # The steps of each run as last read or written by this executor. The store
        # stays the source of truth: every change is written there first, then
        # mirrored here; each pass starts from a fresh read.
        self._cache: dict[str, dict[str, StepRecord]] = {}

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
    ) -> str:
        unknown = sorted({s for s in assignment.values() if s not in self.connectors})
        if unknown:
            raise OrchestratorError(f"no connector for site(s): {', '.join(unknown)}")
        rid = self.runs.create_run(
            workflow,
            assignment,
            on_error=OnError(on_error),
            max_attempts=max_attempts,
            backoff_s=backoff_s,
            project=project,
        )
        self._workflows[rid] = workflow
        return rid

    def pause(self, run_id: str) -> None:
        """No new step starts; running steps finish; waiting steps are paused."""
        self._cache[run_id] = self.runs.steps(run_id)
        self.runs.set_run_state(run_id, RunState.PAUSED, "paused by user")
        for rec in self._steps(run_id).values():
            if rec.state in (S.PENDING, S.READY):
                self._move(run_id, rec.step_id, S.PAUSED, "run paused")

    def resume(self, run_id: str) -> None:
        self._cache[run_id] = self.runs.steps(run_id)
        self.runs.set_run_state(run_id, RunState.RUNNING, "resumed by user")
        for rec in self._steps(run_id).values():
            if rec.state is S.PAUSED:
                self._move(run_id, rec.step_id, S.PENDING, "run resumed")

    def kill(self, run_id: str) -> None:
        """Cancel every unfinished step (running tasks are stopped) and the run.

        A finished run (done) stays as it is.
        """
        if self.runs.run(run_id).state is RunState.DONE:
            return
        self._cache[run_id] = self.runs.steps(run_id)
        for rec in self._steps(run_id).values():
            if rec.state in ACTIVE and rec.handle:
                self._connector(rec.site).cancel(rec.handle)
            if rec.state not in (S.DONE, S.CANCELLED):
                self._move(run_id, rec.step_id, S.CANCELLED, "run killed")
        self.runs.set_run_state(run_id, RunState.CANCELLED, "killed by user")

    def restart_failed(self, run_id: str) -> list[str]:
        """Put steps in error (failed, cancelled, paused) back in the queue with fresh attempts."""
        self._cache[run_id] = self.runs.steps(run_id)
        restarted = []
        for rec in self._steps(run_id).values():
            if rec.state in (S.FAILED, S.CANCELLED, S.PAUSED):
                target = S.READY if rec.state is S.FAILED else S.PENDING
                self._move(
                    run_id,
                    rec.step_id,
                    target,
                    "restarted by user",
                    attempt_base=rec.attempts,
                    not_before=0.0,
                )
                restarted.append(rec.step_id)
        if restarted:
            self.runs.set_run_state(run_id, RunState.RUNNING, f"restarted {len(restarted)} step(s)")
        return restarted

    def site_down(self, run_id: str, site: str, reason: str = "site down") -> list[str]:
        """A site is down: its unfinished steps go back to the queue and are re-planned."""
        self._cache[run_id] = self.runs.steps(run_id)
        self.down_sites.add(site)
        moved = []
        for rec in self._steps(run_id).values():
            if rec.site != site or rec.state in (S.DONE, S.CANCELLED):
                continue
            if rec.state in ACTIVE:
                with contextlib.suppress(ConnectorError):
                    self._connector(site).cancel(rec.handle)
                self._move(run_id, rec.step_id, S.READY, reason, attempt_base=rec.attempt_base + 1)
            moved.append(rec.step_id)
        if moved:
            self._replan(run_id, moved, reason)
        return moved

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
            time.sleep(self.poll_interval)

    def step_once(self, run_id: str) -> RunState:
        """One reconciliation pass; returns the run's state afterwards."""
        run = self.runs.run(run_id)
        if run.state in (RunState.DONE, RunState.CANCELLED, RunState.FAILED):
            return run.state
        wf = self._workflow(run_id)
        self._cache[run_id] = self.runs.steps(run_id)
        active = [r for r in self._steps(run_id).values() if r.state in ACTIVE]
        for rec in active:
            if self._steps(run_id)[rec.step_id] == rec:  # not moved by a re-plan meanwhile
                self._poll(run_id, rec, run.max_attempts, run.backoff_s, run.on_error)
        steps = self._steps(run_id)
        done = {sid for sid, r in steps.items() if r.state is S.DONE}
        promote = [
            sid
            for sid, rec in steps.items()
            if rec.state is S.PENDING and all(p in done for p in wf.parents(sid))
        ]
        for rec in self.runs.transition_many(run_id, promote, S.READY, "parents done"):
            steps[rec.step_id] = rec
        run = self.runs.run(run_id)
        if run.state is RunState.RUNNING:
            self._dispatch(run_id, wf)
        return self._settle(run_id, wf)

    # -- internals -----------------------------------------------------------------------
    def _steps(self, run_id: str) -> dict[str, StepRecord]:
        cache = self._cache.get(run_id)
        if cache is None:
            cache = self._cache[run_id] = self.runs.steps(run_id)
        return cache

    def _move(
        self,
        run_id: str,
        step_id: str,
        wanted: StepState | list[StepState],
        detail: str = "",
        **fields: object,
    ) -> StepRecord:
        """Record a transition in the store, then in the pass cache."""
        rec = self.runs.transition(run_id, step_id, wanted, detail, **fields)
        self._steps(run_id)[step_id] = rec
        return rec

    def _update(self, run_id: str, step_id: str, **fields: object) -> StepRecord:
        rec = self.runs.update_step(run_id, step_id, **fields)
        self._steps(run_id)[step_id] = rec
        return rec

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

    def _poll(
        self, run_id: str, rec: StepRecord, max_attempts: int, backoff: float, on_error: OnError
    ) -> None:
        if rec.state is S.STAGING:
            # Interrupted while staging (a crash): stage again from the start.
            self._move(run_id, rec.step_id, S.READY, "staging interrupted")
            return
        conn = self._connector(rec.site)
        info = conn.status(rec.handle)
        st = info.status
        if st is TaskStatus.SUCCEEDED:
            self._move(
                run_id,
                rec.step_id,
                S.DONE,
                f"done at {rec.site}",
                exit_code=0,
                ended_at=info.ended_at,
            )
        elif st is TaskStatus.NOT_STARTED:
            spec = self._spec(run_id, rec.step_id, rec.site, rec.attempts)
            conn.submit(spec)
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
                run_id, rec.step_id, S.FAILED, why, exit_code=info.exit_code, ended_at=info.ended_at
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
            before = self._steps(run_id)[rec.step_id].site
            self._move(
                run_id, rec.step_id, S.READY, "attempts exhausted", attempt_base=rec.attempts
            )
            self._replan(
                run_id, [rec.step_id], f"{rec.step_id} exhausted its attempts at {rec.site}"
            )
            after = self._steps(run_id)[rec.step_id]
            if after.site != before:
                return
            self._move(run_id, rec.step_id, S.FAILED, "no other site to re-plan on")
        self._apply_policy(run_id, rec.step_id, on_error, why)

    def _apply_policy(self, run_id: str, step_id: str, on_error: OnError, why: str) -> None:
        self.runs.log(run_id, "on-error", f"{on_error.value}: {why}", step_id)
        if on_error is OnError.PAUSE_TASK:
            self._move(run_id, step_id, S.PAUSED, "paused after its last attempt")
        elif on_error is OnError.PAUSE_JOB:
            self.pause(run_id)
        elif on_error is OnError.CANCEL_JOB:
            self.kill(run_id)
            self.runs.set_run_state(run_id, RunState.FAILED, f"cancelled after {step_id} failed")

    def _replan(self, run_id: str, step_ids: Iterable[str], reason: str) -> None:
        steps = self._steps(run_id)
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
            workflow=self._workflow(run_id),
            steps=todo,
            excluded=frozenset(excluded),
            assignment={sid: r.site for sid, r in steps.items()},
            done=frozenset(sid for sid, r in steps.items() if r.state is S.DONE),
            reason=reason,
            sites=frozenset(self.connectors),
        )
        new = self.replanner(request)
        moves = []
        for sid in todo:
            site = new.get(sid)
            if site is None or site == steps[sid].site:
                continue
            if site not in self.connectors or site in excluded:
                raise OrchestratorError(f"re-planner put {sid} on unusable site {site!r}")
            self._update(run_id, sid, site=site)
            moves.append(f"{sid} -> {site}")
        ms = (time.perf_counter() - t0) * 1000
        self.runs.log(
            run_id,
            "replan",
            f"{reason}: re-planned {len(moves)} step(s) in {ms:.0f} ms: {', '.join(moves)}",
        )

    def _spec(self, run_id: str, step_id: str, site: str, attempt: int) -> TaskSpec:
        wf = self._workflow(run_id)
        step = wf.step(step_id)
        if self.command is not None:
            command = self.command(step, site)
            if not isinstance(command, str):
                command = (
                    *command,
                    *(f"--in={safe_name(i)}" for i in step.inputs),
                    *(
                        f"--out={safe_name(o)}:{int(wf.item(o).size * self.data_scale)}"
                        for o in step.outputs
                    ),
                )
        elif step.command is not None:
            command = step.command
        elif not self.move_data:
            command = "true"  # a simulated site runs nothing
        else:
            raise OrchestratorError(f"step {step_id!r} has no command and no command builder")
        return TaskSpec(
            run_id=run_id,
            step_id=step_id,
            attempt=attempt,
            command=command,
            cores=step.cores,
            inputs=self._stage_inputs(run_id, wf, step, site) if self.move_data else {},
            outputs=step.outputs,
            duration_hint=self.duration(step, site) if self.duration is not None else 0.0,
        )

    def _stage_inputs(self, run_id: str, wf: Workflow, step: Step, site: str) -> dict[str, Path]:
        steps = self._steps(run_id)
        paths: dict[str, Path] = {}
        for item in step.inputs:
            producer = wf.producer(item)
            if producer is None:
                src_site, src = site, self._external_input(run_id, wf, item)
            else:
                prec = steps[producer]
                src_site = prec.site
                src = self._connector(src_site).output_path(prec.handle, item)
            if src_site != site:
                if self.stager is None:
                    raise OrchestratorError(
                        f"{step.id} at {site} needs {item} from {src_site} and no stager is set"
                    )
                src = self.stager.stage(run_id, item, src_site, src, site)
            paths[item] = src
        return paths

    def _external_input(self, run_id: str, wf: Workflow, item: str) -> Path:
        base = (self.inputs_dir or Path("inputs")) / run_id
        base.mkdir(parents=True, exist_ok=True)
        path = base / safe_name(item)
        if not path.exists():
            synthetic.write_output(path, int(wf.item(item).size * self.data_scale), item)
        return path

    def _dispatch(self, run_id: str, wf: Workflow) -> None:
        now = self.clock()
        order = self._order.get(run_id)
        if order is None:
            order = self._order[run_id] = {sid: i for i, sid in enumerate(wf.topological_order())}
        ready = [
            r
            for r in self._steps(run_id).values()
            if r.state is S.READY and r.not_before <= now and r.site not in self.down_sites
        ]
        ready.sort(key=lambda r: (-r.priority, order[r.step_id]))
        for rec in ready:
            if self._steps(run_id)[rec.step_id] != rec:
                continue  # moved by a re-plan during this pass
            conn = self._connector(rec.site)
            attempt = rec.attempts + 1
            staging = self._needs_staging(run_id, wf, rec.step_id, rec.site)
            try:
                if staging:
                    self._move(run_id, rec.step_id, S.STAGING, f"staging at {rec.site}")
                spec = self._spec(run_id, rec.step_id, rec.site, attempt)
                handle = conn.handle_for(spec)
                self._move(
                    run_id,
                    rec.step_id,
                    [S.RUNNING] if staging else [S.STAGING, S.RUNNING],
                    f"attempt {attempt} at {rec.site}",
                    attempts=attempt,
                    handle=handle,
                    started_at=self.clock(),
                )
                conn.submit(spec)
            except ConnectorError as exc:
                cur = self._steps(run_id)[rec.step_id]
                self._move(
                    run_id, rec.step_id, S.READY, str(exc), attempt_base=cur.attempt_base + 1
                )
                self.down_sites.add(rec.site)
                self._replan(run_id, [rec.step_id], f"site {rec.site} refused work: {exc}")

    def _needs_staging(self, run_id: str, wf: Workflow, step_id: str, site: str) -> bool:
        """True when an input of the step lives at another site."""
        if not self.move_data:
            return False
        steps = self._steps(run_id)
        for item in wf.step(step_id).inputs:
            producer = wf.producer(item)
            if producer is not None and steps[producer].site != site:
                return True
        return False

    def _settle(self, run_id: str, wf: Workflow) -> RunState:
        run = self.runs.run(run_id)
        if run.state is not RunState.RUNNING:
            return run.state
        steps = self._steps(run_id)
        states = {r.state for r in steps.values()}
        if states == {S.DONE}:
            self.runs.set_run_state(run_id, RunState.DONE, "all steps done")
            return RunState.DONE
        if states & (ACTIVE | {S.READY}):
            return RunState.RUNNING
        # Nothing runs or can start: the rest waits on paused or failed steps.
        if S.PAUSED in states:
            self.runs.set_run_state(run_id, RunState.PAUSED, "waiting on paused steps")
            return RunState.PAUSED
        if states & {S.FAILED, S.CANCELLED}:
            self.runs.set_run_state(run_id, RunState.FAILED, "no step can make progress")
            return RunState.FAILED
        return RunState.RUNNING
