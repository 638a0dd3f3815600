"""``/api/v1/projects/{project_id}/workflows`` and ``/api/v1/workflows/{id}``.

A researcher submits a workflow (WfCommons WfFormat 1.4 to 1.6 or the native
format) to one of their projects, optionally with the id of a data project
plan of the same project. The document is validated by
``orchestrator.loaders.workflow_from_data`` and stored with its summary; it is
visible only to that project's researchers, auditors and admins (404 for
anyone else).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Path
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from datalogistics.items import InputLocation
from federation.api.deps import Context, Member, ProjectReader, ProjectWriter
from federation.api.errors import NotFound
from federation.api.routers._common import UUID_PATTERN, Page, json_safe, prefixed
from federation.api.routers.madpp import new_plan_row, validated_plan
from federation.api.tables import MadppRow, WorkflowInputsRow, WorkflowRow
from federation.errors import InvalidInput, Problem
from orchestrator.loaders import workflow_from_data
from orchestrator.wfformat import is_wfformat

router = APIRouter(prefix="/api/v1", tags=["workflows"])


class WorkflowSubmission(BaseModel):
    """A workflow document and, optionally, the data project plan it follows."""

    model_config = ConfigDict(extra="forbid")

    workflow: dict[str, Any] = Field(
        description="WfCommons WfFormat 1.4 to 1.6 instance or native workflow ('steps')"
    )
    madpp_id: str | None = Field(
        default=None, pattern=UUID_PATTERN, description="a data project plan of the same project"
    )
    madpp: dict[str, Any] | None = Field(
        default=None, description="or a new maDMP 1.2 plan, stored with the workflow"
    )
    inputs: dict[str, InputLocation] = Field(
        default_factory=dict,
        max_length=10_000,
        description=(
            "where external inputs live before the run: item id -> {site, path} or {url} "
            "(beside any 'location' the workflow document gives)"
        ),
    )


class WorkflowInfo(BaseModel):
    """A stored workflow: who submitted it where, and its summary."""

    model_config = ConfigDict(from_attributes=True)  # read from the table's row

    id: str
    project: str
    name: str
    format: str
    madpp_id: str | None
    created_at: datetime
    submitted_by: str
    summary: dict[str, Any]
    inputs: dict[str, InputLocation] = Field(default_factory=dict)


def _info(row: WorkflowRow, db: Session) -> WorkflowInfo:
    info = WorkflowInfo.model_validate(row)
    extra = db.get(WorkflowInputsRow, row.id)
    if extra is not None:
        info.inputs = {k: InputLocation.model_validate(v) for k, v in extra.inputs.items()}
    return info


def _visible_row(db: Session, who: Member, workflow_id: str) -> WorkflowRow:
    row = db.get(WorkflowRow, workflow_id)
    if row is None or not who.can_read_project(row.project):
        raise NotFound(f"workflow {workflow_id!r} not found")
    return row


@router.post(
    "/projects/{project_id}/workflows",
    status_code=201,
    response_model=WorkflowInfo,
    summary="Submit a workflow to a project",
)
def submit_workflow(body: WorkflowSubmission, access: ProjectWriter, ctx: Context) -> WorkflowInfo:
    """Validate and store a workflow of ``project_id`` (researcher of the project)."""
    with ctx.store.session() as db:
        try:
            wf = workflow_from_data(body.workflow, "<api>")
        except InvalidInput as exc:
            raise prefixed(exc, "body.workflow") from None
        external = set(wf.external_inputs())
        wrong = [
            Problem(f"body.inputs.{item}", f"{item!r} is not an external input of the workflow")
            for item in body.inputs
            if item not in external
        ]
        if wrong:
            raise InvalidInput("<api>", wrong)
        if body.madpp is not None and body.madpp_id is not None:
            raise InvalidInput.single(
                "<api>", "body.madpp", "give either madpp (a new plan) or madpp_id, not both"
            )
        madpp_id = body.madpp_id
        if body.madpp is not None:
            plan_row = new_plan_row(
                access.project, validated_plan(body.madpp, "body.madpp"), access.who.subject
            )
            db.add(plan_row)
            db.flush()  # the plan's row first: the workflow's madpp_id refers to it
            madpp_id = plan_row.id
        elif body.madpp_id is not None:
            plan = db.get(MadppRow, body.madpp_id)
            if plan is None or plan.project != access.project:
                raise InvalidInput.single(
                    "<api>",
                    "body.madpp_id",
                    f"no data project plan {body.madpp_id!r} in project {access.project!r}: "
                    f"submit it first (POST /api/v1/projects/{access.project}/madpp)",
                )
        row = WorkflowRow(
            id=str(uuid.uuid4()),
            project=access.project,
            name=wf.name,
            format="wfformat" if is_wfformat(body.workflow) else "native",
            document=body.workflow,
            summary=json_safe(wf.summary()),
            madpp_id=madpp_id,
            submitted_by=access.who.subject,
        )
        db.add(row)
        db.flush()
        if body.inputs:
            db.add(
                WorkflowInputsRow(
                    workflow_id=row.id,
                    inputs={
                        k: v.model_dump(mode="json", exclude_none=True)
                        for k, v in body.inputs.items()
                    },
                )
            )
            db.flush()
        return _info(row, db)


@router.get(
    "/projects/{project_id}/workflows",
    response_model=list[WorkflowInfo],
    summary="List a project's workflows",
)
def list_workflows(access: ProjectReader, ctx: Context, page: Page) -> list[WorkflowInfo]:
    with ctx.store.session() as db:
        rows = db.scalars(
            select(WorkflowRow)
            .where(WorkflowRow.project == access.project)
            .order_by(WorkflowRow.created_at, WorkflowRow.id)
            .limit(page.limit)
            .offset(page.offset)
        )
        return [_info(r, db) for r in rows]


@router.get("/workflows/{workflow_id}", response_model=WorkflowInfo, summary="One workflow")
def get_workflow(
    who: Member, ctx: Context, workflow_id: str = Path(pattern=UUID_PATTERN)
) -> WorkflowInfo:
    """The workflow; 404 when it does not exist or belongs to a project the caller cannot see."""
    with ctx.store.session() as db:
        return _info(_visible_row(db, who, workflow_id), db)


@router.get("/workflows/{workflow_id}/document", summary="The workflow document as submitted")
def get_workflow_document(
    who: Member, ctx: Context, workflow_id: str = Path(pattern=UUID_PATTERN)
) -> dict[str, Any]:
    with ctx.store.session() as db:
        return _visible_row(db, who, workflow_id).document
