"""``/api/v1/projects/{project_id}/plans`` and ``/api/v1/plans/{id}``: preview, approve, run.

The HEROES "budget preview and validation": a researcher asks for a plan of a
stored workflow (or a comparison of every planner) on the twin's current
view, sees its makespan, cost, energy and carbon, approves it within a budget
(409 when the plan costs more), then runs it. Runs go to the sites' pull
agents (``continuum site-agent``).

Planning goes through ``orchestrator.planning`` like the CLI: the same defaults
(``PLANNING_DEFAULTS``), and everything declared folded into the workflow (the project's
sites, the workflow's data project plan, where its external inputs live). The plan keeps
that workflow, so its run executes exactly what was previewed. A plan runs once: of
several concurrent ``run`` requests one starts the run, the others get 409.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal, cast

from fastapi import APIRouter, Path
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import CursorResult, select, update
from sqlalchemy.orm import Session

from datalogistics.items import InputLocation
from datalogistics.madpp import DataProjectPlan
from federation.api.deps import Context, Member, ProjectReader, ProjectWriter
from federation.api.engine import engine_of
from federation.api.errors import Conflict, Forbidden, NotFound
from federation.api.routers._common import UUID_PATTERN, Page, json_safe
from federation.api.tables import (
    MadppRow,
    PlanRow,
    PlanWorkflowRow,
    WorkflowInputsRow,
    WorkflowRow,
)
from federation.errors import InvalidInput
from orchestrator.errors import OrchestratorError, PlanInvalid, PlanningError
from orchestrator.execution import Launch, OnError
from orchestrator.loaders import workflow_from_data
from orchestrator.placement.plan import Plan
from orchestrator.planning import PLANNING_DEFAULTS, declare, plan_workflow
from orchestrator.workflow import Workflow

router = APIRouter(prefix="/api/v1", tags=["plans"])

PlannerName = Literal["heft", "greedy", "market", "ilp"]
ObjectiveName = Literal["time", "cost", "energy", "carbon", "weighted"]


_D = PLANNING_DEFAULTS


class PlanRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    workflow_id: str = Field(pattern=UUID_PATTERN)
    planner: PlannerName = _D.planner  # type: ignore[assignment]
    objective: ObjectiveName = _D.objective  # type: ignore[assignment]
    deadline_s: float | None = Field(default=None, gt=0)
    budget_eur: float | None = Field(default=None, ge=0)
    time_limit_s: float | None = Field(
        default=_D.time_limit_s,
        gt=0,
        le=600,
        description=(
            "The optimiser's time limit, seconds; absent or null: by the workflow's size "
            "(20 s up to 200 steps, then 0.1 s per step, at most 60 s)"
        ),
    )


class CompareRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    workflow_id: str = Field(pattern=UUID_PATTERN)
    objective: ObjectiveName = _D.objective  # type: ignore[assignment]
    deadline_s: float | None = Field(default=None, gt=0)
    budget_eur: float | None = Field(default=None, ge=0)
    time_limit_s: float | None = Field(
        default=_D.time_limit_s, gt=0, le=600, description="As in a plan request."
    )


class Approval(BaseModel):
    model_config = ConfigDict(extra="forbid")

    budget_eur: float = Field(ge=0, description="the most the project will pay for this plan")


class RunRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    synthetic: bool = Field(
        default=False,
        description=(
            "run every step as the synthetic step (CPU for the recorded runtime) instead of "
            "its own command; stored with this run only"
        ),
    )
    scale: float = Field(default=1e-3, gt=0, le=1, description="of runtimes and data sizes")
    max_attempts: int = Field(default=3, ge=1, le=20)
    on_error: Literal["cancel-job", "pause-task", "pause-job", "continue"] = "cancel-job"


class PlanInfo(BaseModel):
    model_config = ConfigDict(from_attributes=True)  # read from the table's row

    id: str
    project: str
    workflow_id: str
    planner: str
    objective: str
    state: str
    metrics: dict[str, Any]
    assignments: list[dict[str, Any]]
    approved_budget: float | None
    run_id: str | None
    created_at: datetime


def _info(row: PlanRow) -> PlanInfo:
    return PlanInfo.model_validate(row)


def _declared(db: Session, ctx: Any, project: str, workflow_id: str) -> Workflow:
    """The stored workflow with the project's sites, its data project plan and its input
    locations folded in (``orchestrator.planning.declare``)."""
    row = db.get(WorkflowRow, workflow_id)
    if row is None or row.project != project:
        raise NotFound(f"workflow {workflow_id!r} not found in project {project!r}")
    wf = workflow_from_data(row.document, f"workflow {workflow_id}")
    data_plan = None
    if row.madpp_id is not None:
        plan_row = db.get(MadppRow, row.madpp_id)
        if plan_row is not None:
            data_plan = DataProjectPlan.from_json(plan_row.document, f"madpp {row.madpp_id}")
    extra = db.get(WorkflowInputsRow, workflow_id)
    inputs = {k: InputLocation.model_validate(v) for k, v in extra.inputs.items()} if extra else {}
    fed = engine_of(ctx).federation()
    return declare(wf, fed, project=project, data_plan=data_plan, inputs=inputs, source="<api>")


def _plan(
    ctx: Any,
    wf: Workflow,
    planner: str,
    objective: str,
    deadline: float | None,
    budget: float | None,
    time_limit: float | None,
) -> Plan:
    engine = engine_of(ctx)
    try:
        return plan_workflow(
            wf,
            engine.federation(),
            engine.view(),
            planner=planner,
            objective=objective,
            time_limit_s=time_limit,
            deadline=deadline,
            budget=budget,
        )
    except PlanInvalid:
        raise  # the planner's own defect: a 500, never hidden
    except PlanningError as exc:  # infeasible limits, eligibility: the request's to change
        raise InvalidInput.single("<api>", "body", str(exc)) from None


@router.post(
    "/projects/{project_id}/plans",
    status_code=201,
    response_model=PlanInfo,
    summary="Plan a stored workflow on the twin's view (a preview)",
)
def create_plan(body: PlanRequest, access: ProjectWriter, ctx: Context) -> PlanInfo:
    with ctx.store.session() as db:
        wf = _declared(db, ctx, access.project, body.workflow_id)
    plan = _plan(
        ctx, wf, body.planner, body.objective, body.deadline_s, body.budget_eur, body.time_limit_s
    )
    metrics = json_safe(plan.metrics.to_dict())
    metrics["checker_problems"] = []  # plan_workflow refuses a plan the checker rejects
    metrics["notes"] = list(plan.notes)
    metrics["transfers"] = json_safe(plan.to_dict()["transfers"])
    row = PlanRow(
        id=str(uuid.uuid4()),
        project=access.project,
        workflow_id=body.workflow_id,
        planner=body.planner,
        objective=body.objective,
        metrics=metrics,
        assignments=[
            {
                "step": a.step,
                "site": a.site,
                "start_s": a.start,
                "end_s": a.end,
                "category": wf.step(a.step).category,
                "why": a.why,
            }
            for a in plan.assignments.values()
        ],
        created_by=access.who.subject,
    )
    with ctx.store.session() as db:
        db.add(row)
        db.flush()
        db.add(PlanWorkflowRow(plan_id=row.id, document=wf.to_dict()))
        db.flush()
        return _info(row)


@router.post("/projects/{project_id}/plans/compare", summary="Every planner on the same inputs")
def compare(body: CompareRequest, access: ProjectWriter, ctx: Context) -> dict[str, Any]:
    with ctx.store.session() as db:
        wf = _declared(db, ctx, access.project, body.workflow_id)
    out: dict[str, Any] = {}
    for name in ("heft", "greedy", "market", "ilp"):
        plan = _plan(
            ctx, wf, name, body.objective, body.deadline_s, body.budget_eur, body.time_limit_s
        )
        out[name] = {**json_safe(plan.metrics.to_dict()), "checker_problems": 0}
    return out


@router.get(
    "/projects/{project_id}/plans",
    response_model=list[PlanInfo],
    summary="List a project's plans (previews, approved, running: each with its run's id)",
)
def list_plans(access: ProjectReader, ctx: Context, page: Page) -> list[PlanInfo]:
    with ctx.store.session() as db:
        rows = db.scalars(
            select(PlanRow)
            .where(PlanRow.project == access.project)
            .order_by(PlanRow.created_at, PlanRow.id)
            .limit(page.limit)
            .offset(page.offset)
        )
        return [_info(r) for r in rows]


def _visible(db: Session, who: Any, plan_id: str) -> PlanRow:
    row = db.get(PlanRow, plan_id)
    if row is None or not who.can_read_project(row.project):
        raise NotFound(f"plan {plan_id!r} not found")
    return row


def _writable(db: Session, who: Any, plan_id: str) -> PlanRow:
    row = _visible(db, who, plan_id)
    if not who.can_write_project(row.project):
        raise Forbidden("the auditor role is read-only")
    return row


@router.get("/plans/{plan_id}", response_model=PlanInfo, summary="One plan")
def get_plan(who: Member, ctx: Context, plan_id: str = Path(pattern=UUID_PATTERN)) -> PlanInfo:
    with ctx.store.session() as db:
        return _info(_visible(db, who, plan_id))


@router.post(
    "/plans/{plan_id}/approve",
    response_model=PlanInfo,
    summary="Approve a plan within a budget (409 when it costs more)",
)
def approve(
    body: Approval, who: Member, ctx: Context, plan_id: str = Path(pattern=UUID_PATTERN)
) -> PlanInfo:
    with ctx.store.session() as db:
        row = _writable(db, who, plan_id)
        cost = float(row.metrics.get("cost_eur") or 0.0)
        if cost > body.budget_eur:
            raise Conflict(
                f"the plan costs {cost:.4g} EUR, over the budget of {body.budget_eur:.4g} EUR: "
                "plan again with a budget (budget_eur) or a cheaper objective"
            )
        if row.metrics.get("checker_problems"):
            raise Conflict("the plan failed the plan checker; plan again")
        if row.state not in ("preview", "approved"):
            raise Conflict(f"the plan is {row.state}: it can no longer be approved")
        row.state, row.approved_budget = "approved", body.budget_eur
        db.flush()
        return _info(row)


@router.post(
    "/plans/{plan_id}/run",
    status_code=202,
    response_model=PlanInfo,
    summary="Run an approved plan on the sites' pull agents",
)
def run(
    body: RunRequest, who: Member, ctx: Context, plan_id: str = Path(pattern=UUID_PATTERN)
) -> PlanInfo:
    engine = engine_of(ctx)
    with ctx.store.session() as db:
        row = _writable(db, who, plan_id)
        if row.state != "approved":
            raise Conflict(f"the plan is {row.state}: approve it first (POST .../approve)")
        # One run per plan: of concurrent requests, the one that moves the plan from
        # approved to starting goes on; the others find it moved and get 409.
        result = db.execute(
            update(PlanRow)
            .where(PlanRow.id == plan_id, PlanRow.state == "approved")
            .values(state="starting")
        )
        taken = cast(CursorResult[Any], result).rowcount
        if taken != 1:
            raise Conflict("the plan is already being run")
        doc = db.get(PlanWorkflowRow, plan_id)
        assignment = {a["step"]: a["site"] for a in row.assignments}
        project = row.project
    try:
        if doc is None:
            raise Conflict("this plan was made before plans kept their workflow: plan again")
        wf = Workflow.from_dict(doc.document, f"plan {plan_id}")
        launch = (
            Launch.synthetic(engine.federation(), body.scale, body.scale)
            if body.synthetic
            else Launch.native()
        )
        run_id = engine.submit(
            wf,
            assignment,
            project,
            launch,
            on_error=OnError(body.on_error),
            max_attempts=body.max_attempts,
        )
    except BaseException as exc:
        with ctx.store.session() as db:  # not started: the plan may be run again
            db.execute(update(PlanRow).where(PlanRow.id == plan_id).values(state="approved"))
        if isinstance(exc, OrchestratorError) and not isinstance(exc, InvalidInput):
            raise InvalidInput.single("<api>", "body", str(exc)) from None
        raise
    with ctx.store.session() as db:
        row = _writable(db, who, plan_id)
        row.state, row.run_id = "running", run_id
        db.flush()
        return _info(row)
