"""Workflows in the simulation go through the real executor: one execution path.

A simulated workflow is planned by a real planner on the twin's view and then
submitted to the real ``orchestrator.execution.Executor``, as the service submits a
user's run: a run in a ``RunStore`` (an in-memory SQLite store per simulation by
default), a ``simulated`` launch (``Launch.simulated``: a step lasts ``work / (cores
x speed)`` seconds), one ``SimulatedConnector`` per site, the executor's retries with
backoff, its ``on_error`` policies, and its re-planning through ``PlannerReplanner``
(HEFT on the twin's view, as the service re-plans). What differs from a real site is
below the connector only:

* the connector's site model is the site agent's **batch queue** (``SiteQueue``): a
  step's task becomes a job in the same queue as the site's batch jobs, started by
  the site's policy (EASY or FCFS), killed with them when the site goes down;
* the stager is ``SimulatedTransfers``: when a step's input lives at another site, the
  executor stages it there as on a real site, and the transfer takes ``latency + bytes
  / bandwidth`` of the link before the task may start;
* the executor's passes are events of mesa's discrete-event simulator on the
  simulation's clock: a pass runs when a task of a run ends, when a run is submitted,
  when a site changes state, and when a retry's backoff is over (``Executor.next_due``),
  never on a timer; several runs that need a pass at the same instant share one
  (``Executor.step_all``).

A site that goes down loses the steps it holds (the connector reports them ``lost``,
refuses new ones); the executor learns it from the twin's flag at the next telemetry
tick (``twin: true``) or at once without a twin, as ``mainjob.drive`` does on real
sites, and re-plans the site's unfinished steps (``Executor.site_down``); when the
site is back (the twin no longer calls it down) it takes work again
(``Executor.site_up``). ``task_failures`` in a scenario makes tasks fail (exit 1) at
the end of their run with a given probability, to exercise retries and ``on_error``.
"""

from __future__ import annotations

import heapq
import math
from typing import TYPE_CHECKING, Any

from mesa.experimental.devs.eventlist import Priority, SimulationEvent

from federation.store import Store
from orchestrator import HEFTPlanner, Workflow
from orchestrator.connectors import (
    SimulatedConnector,
    SimulatedSite,
    SimulatedTask,
    SimulatedTransfers,
)
from orchestrator.execution import Executor, Launch, OnError, RunState, RunStore
from orchestrator.execution.replan import PlannerReplanner
from orchestrator.planning import declare
from simulations.batch import Job

if TYPE_CHECKING:
    from simulations.agents import SiteAgent
    from simulations.model import FederationModel
    from simulations.scenario import WorkflowSpec
    from simulations.workflows import WorkflowRun

FINISHED = frozenset({RunState.DONE, RunState.FAILED, RunState.CANCELLED})


class SiteQueue(SimulatedSite):
    """A site agent's batch queue as the site model of its ``SimulatedConnector``.

    Each task becomes a rigid job (its cores, its duration, requested walltime = its
    duration) submitted to the site's queue once its inputs are there (``ready_at``);
    the site's policy starts it; its end is an event of the simulator.
    """

    def __init__(self, agent: SiteAgent, execution: WorkflowExecution) -> None:
        self.agent = agent
        self.execution = execution
        self.jobs: dict[str, Job] = {}
        self.tasks: dict[Job, SimulatedTask] = {}

    def add(self, task: SimulatedTask) -> None:
        model = self.agent.model
        job = Job(-1, task.cores, task.duration, max(task.duration, 1.0), model.now, owner=self)
        self.jobs[task.handle] = job
        self.tasks[job] = task
        if task.ready_at > model.now:
            model.simulator.schedule_event_absolute(
                self.on_inputs_there, task.ready_at, function_args=[task]
            )
        else:
            self.agent.submit(job)

    def on_inputs_there(self, task: SimulatedTask) -> None:
        """The task's inputs reached the site: it joins the queue (unless it was dropped)."""
        job = self.jobs.get(task.handle)
        if job is not None:
            job.submit = self.agent.model.now
            self.agent.submit(job)

    def remove(self, task: SimulatedTask) -> None:
        job = self.jobs.pop(task.handle, None)
        if job is not None:
            del self.tasks[job]
            self.agent.withdraw(job)

    def job_started(self, job: Job) -> None:
        self.tasks[job].start(job.start)

    def job_ended(self, job: Job) -> None:
        """The step's job ended: it succeeded, or failed by the scenario's task failures."""
        task = self.tasks.pop(job)
        del self.jobs[task.handle]
        now = self.agent.model.now
        if self.execution.task_fails(self.agent):
            task.end(now, 1, "simulated task failure")
        else:
            task.end(now)
        self.execution.request(task.run_id)


class WorkflowExecution:
    """The simulation's executor, connectors, stager and re-planner (module docstring)."""

    def __init__(self, model: FederationModel, runs: RunStore | None = None) -> None:
        self.model = model
        self.runs = runs if runs is not None else RunStore(Store("sqlite://"))
        self.transfers = SimulatedTransfers(self.transfer_time, self.clock)
        self.replanner = PlannerReplanner(model.federation, HEFTPlanner(), view=model.view)
        self.executor = Executor(
            self.runs,
            {},
            stager=self.transfers,
            replanner=self.replanner,
            clock=self.clock,
            poll_interval=0.0,
            resync_s=math.inf,
            sole_writer=True,  # this executor is its store's only writer
        )
        self.connectors: dict[str, SimulatedConnector] = {}
        self.by_run: dict[str, WorkflowRun] = {}
        self.live: dict[str, int] = {}
        """Runs not finished yet, with their rank (order of submission)."""
        self.flagged: set[str] = set()
        """Sites the executor was told are down."""
        self.passes = 0
        self._rank = 0
        self._dirty: set[str] = set()
        self._wake: list[tuple[float, str]] = []
        self._pass: SimulationEvent | None = None
        self._pass_at = math.inf
        self._declared: dict[tuple[int, str, int], Workflow] = {}
        fails = model.scenario.task_failures
        self._fail_p = 0.0 if fails is None else fails.probability
        self._fail_sites = None if fails is None or fails.sites is None else set(fails.sites)
        for agent in model.sites:
            self.attach(agent)

    # -- the simulation's side ---------------------------------------------------------
    def clock(self) -> float:
        """The executor's and connectors' clock: simulated seconds."""
        return self.model.now

    def transfer_time(self, src: str, dst: str, nbytes: float) -> float:
        return self.model.federation.transfer_time(src, dst, nbytes)

    def attach(self, agent: SiteAgent) -> None:
        """Give a site (one at the start, or one that joins) its connector."""
        site = agent.site
        conn = SimulatedConnector(
            site.id, site.cores, self.clock, site=SiteQueue(agent, self), transfers=self.transfers
        )
        agent.connector = conn
        self.connectors[site.id] = conn
        self.executor.connectors[site.id] = conn
        self.replanner.federation = self.model.federation

    def task_fails(self, agent: SiteAgent) -> bool:
        if self._fail_p <= 0.0:
            return False
        if self._fail_sites is not None and agent.site.id not in self._fail_sites:
            return False
        return bool(self.model.random.random() < self._fail_p)

    # -- runs ----------------------------------------------------------------------------
    def declared(self, workflow: Workflow, project: str | None) -> Workflow:
        """``workflow`` with ``project``'s sites folded in (``orchestrator.planning.declare``,
        as the service does), once per workflow, project and federation."""
        if project is None:
            return workflow
        key = (id(workflow), project, id(self.model.federation))
        wf = self._declared.get(key)
        if wf is None:
            wf = self._declared[key] = declare(workflow, self.model.federation, project=project)
        return wf

    def submit(
        self,
        run: WorkflowRun,
        workflow: Workflow,
        assignment: dict[str, str],
        spec: WorkflowSpec,
    ) -> str:
        """Submit a planned workflow to the executor (as the service does) and pass on it."""
        rid = self.executor.submit(
            workflow,
            assignment,
            launch=Launch.simulated(self.model.federation),
            on_error=OnError(spec.on_error),
            max_attempts=spec.max_attempts,
            backoff_s=spec.backoff,
            project=spec.project or "",
            run_id=f"{workflow.name}-{run.instance}-{self._rank}",
        )
        self.by_run[rid] = run
        self.live[rid] = self._rank
        self._rank += 1
        self.request(rid)
        return rid

    def request(self, run_id: str) -> None:
        """Run ``run_id`` needs a pass now (after the other events of this instant)."""
        if run_id in self.live:
            self._dirty.add(run_id)
            self._schedule(self.model.now)

    def _schedule(self, t: float) -> None:
        if t >= self._pass_at:
            return
        if self._pass is not None:
            self._pass.cancel()
        self._pass = self.model.simulator.schedule_event_absolute(
            self.on_pass, t, priority=Priority.LOW
        )
        self._pass_at = t

    def on_pass(self) -> None:
        """One pass of the executor over the runs that need one (``Executor.step_all``)."""
        now = self.model.now
        self._pass, self._pass_at = None, math.inf
        while self._wake and self._wake[0][0] <= now:
            self._dirty.add(heapq.heappop(self._wake)[1])
        due = sorted((r for r in self._dirty if r in self.live), key=self.live.__getitem__)
        self._dirty.clear()
        if due:
            self.passes += 1
            for rid, state in self.executor.step_all(due).items():
                if state in FINISHED:
                    del self.live[rid]
                    self.by_run[rid].ended(state, now)
                    continue
                t = self.executor.next_due([rid])
                if t is not None:
                    heapq.heappush(self._wake, (max(t, now), rid))
        if self._dirty:
            self._schedule(now)
        elif self._wake:
            self._schedule(self._wake[0][0])

    # -- sites going down and coming back -------------------------------------------------
    def site_went_down(self, agent: SiteAgent) -> None:
        """The site's connector loses its tasks; without a twin the executor is told now."""
        site = agent.site.id
        lost = self.connectors[site].fail(f"site {site} went down")
        for rid in dict.fromkeys(t.run_id for t in lost):
            self.request(rid)
        if not self.model.has_twin:
            self.flag_down(site, "the executor flagged site down")

    def site_came_up(self, agent: SiteAgent) -> None:
        site = agent.site.id
        self.connectors[site].repair()
        if not self.model.has_twin:
            self.flag_up(site)

    def on_statuses(self, down: set[str]) -> None:
        """The twin's verdicts at a telemetry tick: ``down`` are the sites it calls down."""
        for site in sorted(down - self.flagged):
            self.flag_down(site, "the twin flagged site down")
        back = (self.flagged | self.executor.down_sites) - down
        for site in sorted(back):
            if site in self.connectors and not self.connectors[site].down:
                self.flag_up(site)

    def flag_down(self, site: str, reason: str) -> None:
        """Tell the executor ``site`` is down: each live run's unfinished steps there are
        re-planned (``Executor.site_down``)."""
        if site in self.flagged:
            return
        self.flagged.add(site)
        for rid in list(self.live):
            if self.executor.site_down(rid, site, reason):
                self.request(rid)

    def flag_up(self, site: str) -> None:
        self.flagged.discard(site)
        if site in self.executor.down_sites:
            self.executor.site_up(site)
            for rid in self.live:
                self.request(rid)

    # -- the end -------------------------------------------------------------------------
    def finish(self) -> None:
        """At the horizon: the runs still going are recorded as unfinished."""
        for rid in list(self.live):
            self.by_run[rid].ended(self.runs.run(rid).state, self.model.now, finished=False)

    def details(self, run_id: str) -> dict[str, Any]:
        """What became of each step of a run: its site, the start and end of its last
        attempt at the site (from the connector's task), attempts, re-plans, transfers."""
        steps = self.runs.steps(run_id)
        starts: dict[str, float] = {}
        ends: dict[str, float] = {}
        for sid, rec in steps.items():
            conn = self.connectors.get(rec.site)
            task = conn.task(rec.handle) if conn is not None and rec.handle else None
            if task is not None and task.started is not None:
                starts[sid] = task.started
                if task.ended is not None:
                    ends[sid] = task.ended
        replans = [
            d
            for *_, d in self.runs.events(run_id, "replan")
            if ": re-planned " in d and ": re-planned 0 " not in d
        ]
        moved = [d for *_, d in self.runs.events(run_id, "update") if d.startswith("re-planned")]
        transfers, nbytes = self.transfers.by_run.get(run_id, (0, 0.0))
        return {
            "steps": steps,
            "starts": starts,
            "ends": ends,
            "attempts": sum(r.attempts for r in steps.values()),
            "replans": len(replans),
            "steps_moved": len(moved),
            "transfers": transfers,
            "bytes_moved": nbytes,
        }
