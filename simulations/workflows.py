"""Workflow runs: planned by a real planner, executed by the real executor.

At its submission time a ``WorkflowRun`` folds its project's sites into the workflow
(``orchestrator.planning.declare``, as the service does), asks the model for the twin's
current view, calls the planner named by the run (``orchestrator.make_planner``: HEFT,
greedy, ILP, market) with the workflow's deadline, and submits the plan's assignment to
the simulation's executor (``simulations.execution``): from there its steps go through
the same executor as on real sites (retries, ``on_error``, re-planning, staging), their
tasks queue in the sites' batch queues behind the background jobs, and the run ends
when the executor says so. The executor starts a step when its parents are done (a
plan's own start times are a forecast: neither on real sites nor here does the
executor wait for them).

Each run ends with one of these statuses (the ``workflows`` table, the summary):
``done`` (its makespan is known; ``deadline_missed`` says whether it exceeded the
deadline), ``failed`` (the executor gave up: a step exhausted its attempts and could
not be re-planned, or ``on_error`` cancelled it), ``unplanned`` (no plan was possible
when it arrived), ``unfinished`` (still running, or paused, at the horizon: it is
neither a success nor a deadline miss, only a run the horizon cut short).
"""

from __future__ import annotations

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
from orchestrator.execution import RunState
from simulations.scenario import WorkflowSpec

if TYPE_CHECKING:
    from simulations.model import FederationModel


class WorkflowRun(Agent):
    """One submission of a workflow: planning, then its run in the executor."""

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
        self.run_id: str | None = None
        self.error = ""
        self.status = "pending"
        self.finished_at: float | None = None
        self.ended_at: float | None = None
        self.starts: dict[str, float] = {}
        self.ends: dict[str, float] = {}
        self.sites_used: set[str] = set()
        self.stats: dict[str, Any] = {}
        self._recorded = False
        model.simulator.schedule_event_absolute(self.submit, submit_at)

    def submit(self) -> None:
        """Plan the workflow on the twin's current view, then hand it to the executor."""
        model = self.model
        execution = model.execution
        assert execution is not None  # made whenever the scenario has workflows
        t0 = model.origin + model.now
        constraints = PlanningConstraints(deadline=self.spec.deadline, t0=t0)
        try:
            wf = execution.declared(self.workflow, self.spec.project)
            if self.spec.assignment is not None:
                assignment = dict(self.spec.assignment)
            else:
                planner = make_planner(model.planner_name)
                objective = Objective.parse(self.spec.objective)
                view = model.view(allowed_sites(wf))
                self.plan = planner.plan(wf, model.federation, view, constraints, objective)
                assignment = {sid: a.site for sid, a in self.plan.assignments.items()}
            self.status = "running"
            self.run_id = execution.submit(self, wf, assignment, self.spec)
        except (OrchestratorError, ValueError) as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            self.status = "unplanned"
            self.ended_at = model.now
            self._record()

    def ended(self, state: RunState, now: float, finished: bool = True) -> None:
        """The executor finished the run (``finished``), or the horizon came first."""
        execution = self.model.execution
        assert execution is not None
        assert self.run_id is not None
        if finished:
            self.status = "done" if state is RunState.DONE else "failed"
            self.ended_at = now
            if state is RunState.DONE:
                self.finished_at = now
        else:
            self.status = "unfinished"
        d = execution.details(self.run_id)
        self.starts, self.ends = d.pop("starts"), d.pop("ends")
        steps = d.pop("steps")
        self.sites_used = {r.site for sid, r in steps.items() if sid in self.starts}
        self.stats = d
        if self.status == "failed":
            last = [r.message for r in steps.values() if r.message]
            self.error = last[-1] if last else f"run {state.value}"
        self._record()

    # -- results -----------------------------------------------------------------
    def result(self) -> dict[str, Any]:
        makespan = None if self.finished_at is None else self.finished_at - self.submit_at
        deadline = self.spec.deadline
        missed = None if makespan is None or deadline is None else makespan > deadline
        return {
            "workflow": self.workflow.name,
            "instance": self.instance,
            "planner": self.model.planner_name,
            "status": self.status,
            "submitted_s": self.submit_at,
            "planned_makespan_s": self.plan.metrics.makespan_s if self.plan else None,
            "makespan_s": makespan,
            "deadline_s": deadline,
            "deadline_missed": missed,
            "outcome": self.outcome(missed),
            "error": self.error,
            "sites_used": ",".join(sorted(self.sites_used)),
            "attempts": self.stats.get("attempts", 0),
            "replans": self.stats.get("replans", 0),
            "steps_moved": self.stats.get("steps_moved", 0),
            "transfers": self.stats.get("transfers", 0),
            "bytes_moved": self.stats.get("bytes_moved", 0.0),
        }

    def outcome(self, missed: bool | None) -> str:
        """Why the run ended where it did: ``finished``, ``late`` (finished after the deadline),
        ``failed`` (a step failed for good under the run's ``on_error``: ``error`` says why),
        ``unfinished`` (still running when the simulation ended: not a deadline miss),
        ``not planned`` (the planner found no plan: ``error`` says why) or ``not submitted``
        (due after the end)."""
        if self.status == "unplanned":
            return "not planned"
        if self.status == "failed":
            return "failed"
        if self.finished_at is not None:
            return "late" if missed else "finished"
        if self.submit_at > self.model.now:
            return "not submitted"
        return "unfinished"

    def _record(self) -> None:
        if not self._recorded:
            self._recorded = True
            self.model.datacollector.add_table_row("workflows", self.result())


def allowed_sites(workflow: Workflow) -> set[str] | None:
    """The sites the workflow's steps may use when each names its own (a project's);
    ``None`` when some step may go anywhere."""
    out: set[str] = set()
    for step in workflow.steps:
        if step.constraints.sites is None:
            return None
        out.update(step.constraints.sites)
    return out


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
