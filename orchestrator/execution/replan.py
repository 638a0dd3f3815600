"""Re-planning the unfinished part of a run with the placement planners.

``PlannerReplanner`` answers the executor's ``ReplanRequest`` by building a
sub-workflow of the steps to place, plus *anchors*: the steps outside the
request that produce their inputs. An anchor that finished is kept with no
work, pinned to the site where it ran (its outputs wait there, in that site's
buffers, and are reused rather than recomputed); an anchor still running is
pinned with its work. The steps to place may use every site the federation
has except the excluded ones (down, or where they exhausted their attempts),
within their own constraints. The planner then costs transfers from where the
data already is, exactly as for a first plan.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from federation.model import Federation
from orchestrator.errors import PlanningError
from orchestrator.execution.executor import ReplanRequest
from orchestrator.placement.plan import Objective, Planner, PlanningConstraints
from orchestrator.workflow import StepConstraints, Workflow
from twin.state import SiteView, static_view


@dataclass
class PlannerReplanner:
    """A ``Replanner`` backed by a ``Planner`` (HEFT by default: fast, capacity-aware)."""

    federation: Federation
    planner: Planner
    view: Callable[[], SiteView] | None = None
    objective: Objective = field(default_factory=Objective)
    last_wall_s: float = 0.0

    def __call__(self, request: ReplanRequest) -> Mapping[str, str]:
        sub = sub_workflow(request, self.federation)
        view = self.view() if self.view is not None else static_view(self.federation)
        reachable = request.sites or frozenset(view)
        healthy = {k: v for k, v in view.items() if k in reachable and k not in request.excluded}
        plan = self.planner.plan(
            sub, self.federation, healthy, PlanningConstraints(), self.objective
        )
        self.last_wall_s = plan.metrics.wall_s
        return {sid: plan.assignments[sid].site for sid in request.steps}


def sub_workflow(request: ReplanRequest, federation: Federation) -> Workflow:
    """The steps to place and their anchors, with site restrictions (module docstring)."""
    wf = request.workflow
    todo = set(request.steps)
    reachable = request.sites or frozenset(federation.site_ids)
    usable = tuple(s for s in federation.site_ids if s in reachable and s not in request.excluded)
    if not usable:
        raise PlanningError("no site is left to re-plan on: every site is excluded")
    anchors = {p for sid in todo for p in wf.parents(sid) if p not in todo}
    keep = todo | anchors
    steps = []
    for step in wf.steps:
        if step.id not in keep:
            continue
        after = tuple(p for p in step.after if p in keep)
        if step.id in todo:
            allowed = usable
            if step.constraints.sites is not None:
                allowed = tuple(s for s in usable if s in step.constraints.sites)
            if not allowed:
                raise PlanningError(
                    f"step {step.id} may only run on {', '.join(step.constraints.sites or ())}, "
                    "and none of those is usable"
                )
            constraints = step.constraints.model_copy(update={"sites": allowed})
            steps.append(step.model_copy(update={"after": after, "constraints": constraints}))
        else:
            site = request.assignment[step.id]
            work = 0.0 if step.id in request.done else step.work
            pinned = StepConstraints(sites=(site,))
            # Anchors keep their outputs (the data the steps to place read) but not
            # their inputs: those were consumed already.
            steps.append(
                step.model_copy(
                    update={"after": (), "inputs": (), "work": work, "constraints": pinned}
                )
            )
    items = {i for s in steps for i in (*s.inputs, *s.outputs)}
    data = [d for d in wf.data if d.id in items]
    return Workflow.from_dict(
        {
            "name": f"{wf.name}-replan",
            "steps": [s.model_dump() for s in steps],
            "data": [d.model_dump() for d in data],
        },
        f"re-plan of run {request.run_id}",
    )


__all__ = ["PlannerReplanner", "sub_workflow"]
