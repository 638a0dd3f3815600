"""Workflow runs: the orchestrator agent places each workflow with a real planner.

At its submission time a ``WorkflowRun`` asks the model for the twin's
current view, calls the planner named by the run (``orchestrator.make_planner``:
HEFT, greedy, ILP, market) with the workflow's deadline, and then executes the
plan on the simulated sites: a step is submitted to its site's batch queue
when its parents are done and their outputs have crossed the links
(``federation.transfer_time``), and not before the plan's own start time for
it (a planner may time-shift a step to a cheaper or greener hour). The batch
queue decides when it actually starts, so the realised makespan includes
queueing behind the background jobs, which the plan could only forecast.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mesa import Agent

from orchestrator import (
    Objective,
    OrchestratorError,
    Plan,
    PlanningConstraints,
    Workflow,
    load_workflow,
    make_planner,
)
from simulations.batch import Job
from simulations.scenario import WorkflowSpec

if TYPE_CHECKING:
    from simulations.model import FederationModel


class WorkflowRun(Agent):
    """One submission of a workflow: planning, then execution step by step."""

    model: FederationModel

    def __init__(
        self,
        model: FederationModel,
        workflow: Workflow,
        spec: WorkflowSpec,
        instance: int,
        submit_at: float,
    ) -> None:
        super().__init__(model)
        self.workflow = workflow
        self.spec = spec
        self.instance = instance
        self.submit_at = submit_at
        self.plan: Plan | None = None
        self.error = ""
        self.finished_at: float | None = None
        self.starts: dict[str, float] = {}
        self.ends: dict[str, float] = {}
        self.sites_used: set[str] = set()
        self._waiting: dict[str, int] = {}
        model.simulator.schedule_event_absolute(self.submit, submit_at)

    def submit(self) -> None:
        """Plan the workflow on the twin's current view, then release its source steps."""
        model = self.model
        t0 = model.origin + model.now
        constraints = PlanningConstraints(deadline=self.spec.deadline, t0=t0)
        try:
            planner = make_planner(model.planner_name)
            self.plan = planner.plan(
                self.workflow,
                model.federation,
                model.view(),
                constraints,
                Objective.parse(self.spec.objective),
            )
        except (OrchestratorError, ValueError) as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            self._record()
            return
        wf = self.workflow
        self._waiting = {s.id: len(wf.parents(s.id)) for s in wf.steps}
        for sid, n in self._waiting.items():
            if n == 0:
                self._release(sid)

    def _release(self, sid: str) -> None:
        """Schedule step ``sid`` for when its inputs are at its site and its planned time came."""
        plan, wf, fed = self.plan, self.workflow, self.model.federation
        if plan is None:
            return
        site = plan.site_of(sid)
        ready = self.submit_at + max(plan.assignments[sid].start, 0.0)
        for parent in wf.parents(sid):
            src = plan.site_of(parent)
            delay = fed.transfer_time(src, site, wf.edge_bytes(parent, sid))
            ready = max(ready, self.ends[parent] + (0.0 if math.isinf(delay) else delay))
        self.model.simulator.schedule_event_absolute(
            self.on_ready, max(ready, self.model.now), function_args=[sid]
        )

    def on_ready(self, sid: str) -> None:
        """Submit step ``sid`` to the batch queue of its planned site."""
        if self.plan is None:
            return
        agent = self.model.site_agent(self.plan.site_of(sid))
        step = self.workflow.step(sid)
        cores = min(step.cores, agent.site.cores)
        run = agent.site.duration(step.work, cores) if step.work > 0 else 0.0
        self.sites_used.add(agent.site.id)
        agent.submit(Job(-1, cores, run, max(run, 1.0), self.model.now, owner=self, tag=sid))

    def step_done(self, job: Job) -> None:
        """A step ended on its site: release the children whose parents are all done."""
        sid = job.tag
        self.starts[sid] = job.start
        self.ends[sid] = job.end
        for child in self.workflow.children(sid):
            self._waiting[child] -= 1
            if self._waiting[child] == 0:
                self._release(child)
        if len(self.ends) == len(self.workflow.steps):
            self.finished_at = self.model.now
            self._record()

    # -- results -----------------------------------------------------------------
    def result(self) -> dict[str, Any]:
        makespan = None if self.finished_at is None else self.finished_at - self.submit_at
        deadline = self.spec.deadline
        missed = deadline is not None and (
            (makespan is not None and makespan > deadline)
            or (makespan is None and self.model.now - self.submit_at > deadline)
            or bool(self.error)
        )
        return {
            "workflow": self.workflow.name,
            "instance": self.instance,
            "planner": self.model.planner_name,
            "submitted_s": self.submit_at,
            "planned_makespan_s": self.plan.metrics.makespan_s if self.plan else None,
            "makespan_s": makespan,
            "deadline_s": deadline,
            "deadline_missed": missed,
            "outcome": self.outcome(missed),
            "error": self.error,
            "sites_used": ",".join(sorted(self.sites_used)),
        }

    def outcome(self, missed: bool) -> str:
        """Why the run ended where it did: ``finished``, ``late`` (finished after the deadline),
        ``unfinished`` (still running when the simulation ended), ``not planned`` (the planner
        found no plan: ``error`` says why) or ``not submitted`` (due after the end)."""
        if self.error:
            return "not planned"
        if self.finished_at is not None:
            return "late" if missed else "finished"
        if self.submit_at > self.model.now:
            return "not submitted"
        return "unfinished"

    def _record(self) -> None:
        self.model.datacollector.add_table_row("workflows", self.result())


def arm_workflows(model: FederationModel) -> None:
    """Create the scenario's workflow runs (each schedules its own submission)."""
    cache: dict[Path, Workflow] = {}
    for spec in model.scenario.workload.workflows:
        path = model.scenario.path(spec.path)
        if path not in cache:
            cache[path] = load_workflow(path)
        for k in range(spec.count):
            t = spec.submit_at + k * (spec.every or 0.0)
            if t > model.horizon:
                break
            model.workflow_runs.append(WorkflowRun(model, cache[path], spec, k, t))
