"""``/api/v1/madpp``: machine-actionable data project plans (RDA maDMP 1.2) per project.

Plans are validated by ``datalogistics.madpp.validate_madmp`` (the official
schema, errors with JSON paths). ``PUT`` replaces a plan; the run executor will
update plans the same way after runs (datasets produced, where they live).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Body, Path
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session

from datalogistics.madpp import madmp_problems, validate_madmp
from federation.api.deps import Context, Member, ProjectReader, ProjectWriter
from federation.api.errors import Forbidden, NotFound
from federation.api.routers._common import UUID_PATTERN, Page, prefixed
from federation.api.tables import MadppRow, utcnow
from federation.errors import InvalidInput

router = APIRouter(prefix="/api/v1", tags=["madpp"])

PlanDocument = Body(description="an RDA maDMP 1.2 document (top-level 'dmp')")


class Problem(BaseModel):
    loc: str
    msg: str


class Validation(BaseModel):
    valid: bool
    problems: list[Problem]


class DataPlanInfo(BaseModel):
    """A stored data project plan."""

    id: str
    project: str
    title: str
    datasets: int
    created_at: datetime
    updated_at: datetime
    submitted_by: str


class DataPlanWithDocument(DataPlanInfo):
    document: dict[str, Any]


def validated_plan(document: dict[str, Any], where: str = "body") -> dict[str, Any]:
    """``document`` if it is a valid maDMP 1.2 plan; ``InvalidInput`` under ``where`` if not."""
    try:
        validate_madmp(document, "<api>")
    except InvalidInput as exc:
        raise prefixed(exc, where) from None
    return document


def new_plan_row(project: str, document: dict[str, Any], who: str) -> MadppRow:
    """A store row for a validated plan of ``project``."""
    return MadppRow(
        id=str(uuid.uuid4()),
        project=project,
        title=_title(document),
        document=document,
        submitted_by=who,
    )


def _title(document: dict[str, Any]) -> str:
    title = document.get("dmp", {}).get("title", "")
    return str(title)[:512]


def _info(row: MadppRow) -> DataPlanInfo:
    datasets = row.document.get("dmp", {}).get("dataset", [])
    return DataPlanInfo(
        id=row.id,
        project=row.project,
        title=row.title,
        datasets=len(datasets) if isinstance(datasets, list) else 0,
        created_at=row.created_at,
        updated_at=row.updated_at,
        submitted_by=row.submitted_by,
    )


def _visible_row(db: Session, who: Member, plan_id: str) -> MadppRow:
    row = db.get(MadppRow, plan_id)
    if row is None or not who.can_read_project(row.project):
        raise NotFound(f"data project plan {plan_id!r} not found")
    return row


@router.post("/madpp/validate", response_model=Validation, summary="Validate a plan only")
def validate_plan(_who: Member, document: dict[str, Any] = PlanDocument) -> Validation:
    """Every schema violation with its JSON path; nothing is stored."""
    problems = madmp_problems(document)
    return Validation(
        valid=not problems, problems=[Problem(loc=p.location, msg=p.message) for p in problems]
    )


@router.post(
    "/projects/{project_id}/madpp",
    status_code=201,
    response_model=DataPlanInfo,
    summary="Submit a data project plan to a project",
)
def submit_plan(
    access: ProjectWriter, ctx: Context, document: dict[str, Any] = PlanDocument
) -> DataPlanInfo:
    with ctx.store.session() as db:
        doc = validated_plan(document)
        row = new_plan_row(access.project, doc, access.who.subject)
        db.add(row)
        db.flush()
        return _info(row)


@router.get(
    "/projects/{project_id}/madpp",
    response_model=list[DataPlanInfo],
    summary="List a project's data project plans",
)
def list_plans(access: ProjectReader, ctx: Context, page: Page) -> list[DataPlanInfo]:
    with ctx.store.session() as db:
        rows = db.scalars(
            select(MadppRow)
            .where(MadppRow.project == access.project)
            .order_by(MadppRow.created_at, MadppRow.id)
            .limit(page.limit)
            .offset(page.offset)
        )
        return [_info(r) for r in rows]


@router.get("/madpp/{plan_id}", response_model=DataPlanWithDocument, summary="One plan")
def get_plan(
    who: Member, ctx: Context, plan_id: str = Path(pattern=UUID_PATTERN)
) -> DataPlanWithDocument:
    with ctx.store.session() as db:
        row = _visible_row(db, who, plan_id)
        return DataPlanWithDocument(**_info(row).model_dump(), document=row.document)


@router.put("/madpp/{plan_id}", response_model=DataPlanInfo, summary="Replace a plan")
def replace_plan(
    who: Member,
    ctx: Context,
    plan_id: str = Path(pattern=UUID_PATTERN),
    document: dict[str, Any] = PlanDocument,
) -> DataPlanInfo:
    """Replace the document (researcher of the plan's project); 404 if not visible."""
    with ctx.store.session() as db:
        row = _visible_row(db, who, plan_id)
        if not who.can_write_project(row.project):
            raise Forbidden("the auditor role is read-only")
        doc = validated_plan(document)
        row.document = doc
        row.title = _title(doc)
        row.updated_at = utcnow()
        return _info(row)
