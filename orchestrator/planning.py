"""One way to plan, whichever way the request comes in: Python, the CLI, the API, the dashboard.

``PLANNING_DEFAULTS`` is the one table of defaults (planner, objective, solver time limit)
that ``continuum plan``, ``continuum run``, the API's plan routes and the dashboard share, so
that a run executes what a preview showed.

``declare`` folds everything a user declared into the workflow itself, so that it reaches
every planner and every re-plan of the run (the run stores its workflow):

* **where external inputs live**: ``inputs`` maps an external input's id to an
  ``InputLocation`` (a site and a path, or a URL), beside any ``location`` the workflow file
  gives; the planners count the transfer from that site, the executor stages it from there;
* **the project's sites**: a project of the federation that lists its sites restricts every
  step to them (``Step.constraints.sites``); a project the federation does not declare may
  use every site;
* **a data project plan** (maDMP with the ``continuum`` extension): each dataset that names
  an item of the workflow narrows the item's allowed jurisdictions (intersection), its
  retention (the shorter) and gives its size when the workflow has none; the steps the plan
  says produce or consume a dataset are restricted to the jurisdictions it allows.

A conflict (a step left with no site, an input at an unknown site) is an ``InvalidInput``
naming the field, never a silently ignored declaration.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from datalogistics.items import InputLocation
from federation.errors import InvalidInput, Problem
from federation.jurisdictions import intersect_jurisdictions
from orchestrator.errors import InvalidWorkflow
from orchestrator.workflow import Workflow

if TYPE_CHECKING:
    from datalogistics.madpp import DataProjectPlan
    from federation.model import Federation
    from orchestrator.placement.plan import Plan
    from twin.state import SiteView


@dataclass(frozen=True)
class PlanningDefaults:
    """What a planning request uses when it does not say."""

    planner: str = "ilp"
    objective: str = "weighted"
    time_limit_s: float | None = None
    """The optimiser's wall-clock limit, seconds; ``None``: by the workflow's size
    (``auto_time_limit``: 20 s up to 200 steps, then 0.1 s per step, at most 60 s)."""


PLANNING_DEFAULTS = PlanningDefaults()


def declare(
    workflow: Workflow,
    federation: Federation,
    *,
    project: str | None = None,
    data_plan: DataProjectPlan | None = None,
    inputs: Mapping[str, InputLocation] | None = None,
    source: str = "<request>",
) -> Workflow:
    """``workflow`` with the project's sites, the data plan's rules and the input locations
    folded in (module docstring); ``InvalidInput`` naming what conflicts."""
    problems: list[Problem] = []
    doc: dict[str, Any] = workflow.to_dict()
    data = {d["id"]: d for d in doc.get("data", [])}
    external = set(workflow.external_inputs())
    sites = set(federation.site_ids)

    for item, loc in (inputs or {}).items():
        if item not in external:
            what = "is produced by a step" if item in data else "is not an input of the workflow"
            problems.append(Problem(f"inputs.{item}", f"{item!r} {what}: only external inputs"))
            continue
        data.setdefault(item, {"id": item, "size": 0.0})["location"] = loc.model_dump(
            mode="json", exclude_none=True
        )
    for item, d in data.items():
        site = (d.get("location") or {}).get("site")
        if site is not None and site not in sites:
            problems.append(
                Problem(
                    f"data.{item}.location.site",
                    f"unknown site {site!r}; the federation's sites: {', '.join(sorted(sites))}",
                )
            )

    steps = {s["id"]: s for s in doc["steps"]}
    if data_plan is not None:
        _fold_data_plan(data_plan, data, steps, problems)
    if project is not None:
        _fold_project(project, federation, steps, problems)
    if problems:
        raise InvalidInput(source, problems)
    doc["data"] = list(data.values())
    try:
        return Workflow.from_dict(doc, source)
    except InvalidWorkflow as exc:  # a declaration made the workflow inconsistent
        raise InvalidInput(source, exc.problems) from None


def _fold_data_plan(
    plan: DataProjectPlan,
    data: dict[str, dict[str, Any]],
    steps: dict[str, dict[str, Any]],
    problems: list[Problem],
) -> None:
    for i, ds in enumerate(plan.datasets):
        item = data.get(ds.item_id)
        if item is None:
            continue  # a plan may describe the data of several workflows
        ext = ds.continuum
        allowed = ext.allowed_jurisdictions if ext else None
        if allowed is not None:
            both = intersect_jurisdictions(item.get("allowed_jurisdictions"), allowed)
            if both is not None and not both:
                problems.append(
                    Problem(
                        f"dmp.dataset[{i}].continuum.allowed_jurisdictions",
                        f"item {ds.item_id} may reside only in "
                        f"{', '.join(item['allowed_jurisdictions'])}, the plan allows only "
                        f"{', '.join(allowed)}: nowhere is left",
                    )
                )
            item["allowed_jurisdictions"] = list(both or ())
        if ext is not None and ext.retention is not None:
            old = item.get("retention")
            item["retention"] = ext.retention if old is None else min(old, ext.retention)
        if not item.get("size") and ext is not None and ext.expected_size:
            item["size"] = ext.expected_size
    rules = plan.to_constraints().steps
    for sid, allowed_steps in rules.items():
        step = steps.get(sid)
        if step is None:
            continue
        c = step.setdefault("constraints", {})
        both = intersect_jurisdictions(c.get("jurisdictions"), allowed_steps)
        if both is not None and not both:
            problems.append(
                Problem(
                    f"steps.{sid}.constraints.jurisdictions",
                    f"step {sid} may run only in {', '.join(c['jurisdictions'])}, the data "
                    f"plan allows only {', '.join(allowed_steps)}",
                )
            )
        c["jurisdictions"] = list(both or ())


def _fold_project(
    project: str,
    federation: Federation,
    steps: dict[str, dict[str, Any]],
    problems: list[Problem],
) -> None:
    try:
        allowed = federation.project(project).sites
    except KeyError:
        return  # a project the federation does not declare may use every site
    if allowed is None:
        return
    for sid, step in steps.items():
        c = step.setdefault("constraints", {})
        own = c.get("sites")
        keep = [s for s in (own if own is not None else allowed) if s in allowed]
        if not keep:
            problems.append(
                Problem(
                    f"steps.{sid}.constraints.sites",
                    f"step {sid} may run only on {', '.join(own or ())}, and project "
                    f"{project} may use only {', '.join(allowed) or 'no site'}",
                )
            )
        c["sites"] = keep


def plan_workflow(
    workflow: Workflow,
    federation: Federation,
    view: SiteView | None = None,
    *,
    planner: str | None = None,
    objective: str | None = None,
    time_limit_s: float | None = None,
    deadline: float | None = None,
    budget: float | None = None,
    progress: Callable[[str], None] | None = None,
) -> Plan:
    """Plan ``workflow`` (already ``declare``-d) with the shared defaults, then check the
    plan independently (``PlanInvalid`` when the checker finds a problem)."""
    from orchestrator.placement.checker import require_valid
    from orchestrator.placement.plan import Objective, PlanningConstraints
    from orchestrator.placement.planners import ILPSettings, make_planner
    from twin.state import static_view

    d = PLANNING_DEFAULTS
    name = planner or d.planner
    view = view if view is not None else static_view(federation)
    settings = ILPSettings(time_limit=time_limit_s or d.time_limit_s)
    constraints = PlanningConstraints(deadline=deadline, budget=budget)
    plan = make_planner(name, settings, progress).plan(
        workflow, federation, view, constraints, Objective.parse(objective or d.objective)
    )
    return require_valid(plan, workflow, federation, view, constraints)


def saved_plan(doc: Any, workflow: Workflow, source: str) -> Plan:
    """A plan saved by ``continuum plan --json`` (``Plan.to_dict()``), read back for running
    exactly what was previewed; ``InvalidInput`` naming what does not fit ``workflow`` (a step
    without a site, a step the workflow does not have)."""
    from orchestrator.placement.plan import Assignment, Objective, Plan, PlanMetrics

    rows = doc.get("assignments") if isinstance(doc, Mapping) else None
    if not isinstance(rows, list):
        raise InvalidInput.single(source, "assignments", "a saved plan needs a list of them")
    assignments: dict[str, Assignment] = {}
    for i, row in enumerate(rows):
        try:
            a = Assignment(
                str(row["step"]),
                str(row["site"]),
                float(row.get("start_s", 0.0)),
                float(row.get("end_s", 0.0)),
            )
        except (KeyError, TypeError, ValueError, AttributeError):
            raise InvalidInput.single(
                source, f"assignments[{i}]", "needs a step, a site, start_s and end_s"
            ) from None
        assignments[a.step] = a
    steps = {s.id for s in workflow.steps}
    extra, missing = sorted(set(assignments) - steps), sorted(steps - set(assignments))
    if extra or missing:
        parts = []
        if missing:
            parts.append(f"no site for {', '.join(missing[:5])}")
        if extra:
            parts.append(f"unknown steps {', '.join(extra[:5])}")
        raise InvalidInput.single(
            source, "assignments", f"the plan is not one of this workflow: {'; '.join(parts)}"
        )
    m = doc.get("metrics") if isinstance(doc.get("metrics"), Mapping) else {}
    metrics = PlanMetrics(
        makespan_s=float(m.get("makespan_s") or 0.0),
        cost_eur=float(m.get("cost_eur") or 0.0),
        energy_kwh=float(m.get("energy_kwh") or 0.0),
        carbon_kg=float(m.get("carbon_kg") or 0.0),
        bytes_moved=float(m.get("bytes_moved") or 0.0),
        planner=str(m.get("planner") or "saved"),
        status=str(m.get("status") or "saved"),
        gap=m.get("gap"),
    )
    try:
        objective = Objective.parse(str(doc.get("objective") or PLANNING_DEFAULTS.objective))
    except ValueError as exc:
        raise InvalidInput.single(source, "objective", str(exc)) from None
    return Plan(workflow.name, assignments, (), metrics, objective, float(doc.get("t0") or 0.0))


__all__ = [
    "PLANNING_DEFAULTS",
    "PlanningDefaults",
    "declare",
    "plan_workflow",
    "saved_plan",
]
