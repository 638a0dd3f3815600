"""``/api/v1/federation``, ``/api/v1/links`` and ``/api/v1/projects``: the whole registry.

``PUT /api/v1/federation`` (federation-admin) takes the same document as a federation YAML
file, as JSON (``sites``, ``links`` with ``symmetric: true`` allowed, ``organisations`` with
their ``projects`` and the sites each may use), validates all of it and replaces the registry
atomically: a 422 with the field paths of every problem leaves it as it was. Links and
projects also have their own routes; every change is validated as a whole federation
(``federation.api.registry.change``). Planning, previews and runs use the registered links
and keep each project to its sites.

Projects are listed to whoever may read them (a project the caller cannot see answers 404,
as everywhere else); sites and links are known to every member.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from federation.api import registry
from federation.api.deps import Admin, Context, Member
from federation.api.engine import engine_of
from federation.api.errors import NotFound
from federation.api.registry import LinkRow, ProjectRow
from federation.api.routers._common import prefixed
from federation.errors import InvalidInput
from federation.model import ID_PATTERN, Federation, Link

router = APIRouter(prefix="/api/v1", tags=["federation"])

SiteRef = Annotated[str, Path(pattern=ID_PATTERN, max_length=128)]
ProjectRef = Annotated[str, Path(pattern=ID_PATTERN, max_length=128)]

FederationBody = Body(
    description=(
        "the federation document, as in a federation YAML file: name, description, sites, "
        "links (symmetric: true for both directions), organisations with their projects"
    ),
    examples=[
        {
            "name": "my-federation",
            "sites": [
                {
                    "id": "fr-hpc",
                    "kind": "hpc",
                    "cores": 64,
                    "memory": "256 GB",
                    "speed": 2.0,
                    "power_idle_w": 2.0,
                    "power_busy_w": 8.0,
                    "pue": 1.3,
                    "price_per_core_hour": 0.02,
                    "jurisdiction": "FR",
                    "buffer_capacity": "10 TB",
                    "carbon_intensity_g_per_kwh": 50,
                    "energy_price_eur_per_kwh": 0.1,
                }
            ],
            "links": [],
            "organisations": [{"id": "lofar", "projects": [{"id": "ddf", "sites": ["fr-hpc"]}]}],
        }
    ],
)


class ProjectInfo(BaseModel):
    """A project of the federation and the sites it may use (``null``: every site)."""

    model_config = ConfigDict(extra="forbid")

    id: str
    organisation: str
    name: str = ""
    sites: list[str] | None = None


class ProjectUpdate(BaseModel):
    """What ``PUT /api/v1/projects/{id}`` sets (the organisation is created if new)."""

    model_config = ConfigDict(extra="forbid")

    organisation: str = Field(pattern=ID_PATTERN, max_length=128)
    name: str = Field(default="", max_length=512)
    sites: list[Annotated[str, Field(pattern=ID_PATTERN, max_length=128)]] | None = Field(
        default=None, max_length=10_000, description="sites the project may use; null: every"
    )


def _changed(ctx: Any) -> None:
    engine_of(ctx).registry_changed()  # committed: the twin and planners see it now


@router.get("/federation", summary="The registered federation, as a federation document")
def get_federation(_who: Member, ctx: Context) -> dict[str, Any]:
    with ctx.store.session() as db:
        return registry.document(db)


@router.put("/federation", summary="Replace the whole registry (sites, links, projects)")
def put_federation(
    who: Admin, ctx: Context, body: dict[str, Any] = FederationBody
) -> dict[str, Any]:
    """Validate the whole document and register all of it at once (federation-admin)."""
    try:
        fed = Federation.from_dict(body, "<api>")
    except InvalidInput as exc:
        raise prefixed(exc, "body") from None
    with ctx.store.session() as db:
        registry.lock(db)
        registry.replace(db, fed, who.subject)
        doc = registry.document(db)
    _changed(ctx)
    return doc


# -- links -------------------------------------------------------------------------------


@router.get("/links", summary="Every registered link", response_model=list[Link])
def list_links(_who: Member, ctx: Context) -> list[Link]:
    with ctx.store.session() as db:
        rows = db.scalars(select(LinkRow).order_by(LinkRow.src, LinkRow.dst))
        return [Link.model_validate(r.document) for r in rows]


@router.get("/links/{src}/{dst}", summary="One link", response_model=Link)
def get_link(_who: Member, ctx: Context, src: SiteRef, dst: SiteRef) -> Link:
    with ctx.store.session() as db:
        row = db.get(LinkRow, (src, dst))
        if row is None:
            raise NotFound(f"no link {src} -> {dst}")
        return Link.model_validate(row.document)


@router.put("/links/{src}/{dst}", summary="Register or replace a link", response_model=Link)
def put_link(link: Link, who: Admin, ctx: Context, src: SiteRef, dst: SiteRef) -> Link:
    """Between two registered sites (federation-admin); the body's ends must match the path."""
    if (link.src, link.dst) != (src, dst):
        raise InvalidInput.single(
            "<api>", "body", f"the body's link {link.src} -> {link.dst} is not {src} -> {dst}"
        )

    def edit(doc: dict[str, Any]) -> None:
        doc["links"] = [lk for lk in doc["links"] if (lk["src"], lk["dst"]) != (src, dst)] + [
            link.model_dump(mode="json")
        ]

    with ctx.store.session() as db:
        registry.change(db, edit, who.subject)
    _changed(ctx)
    return link


@router.delete("/links/{src}/{dst}", status_code=204, summary="Remove a link")
def delete_link(who: Admin, ctx: Context, src: SiteRef, dst: SiteRef) -> Response:
    with ctx.store.session() as db:
        if db.get(LinkRow, (src, dst)) is None:
            raise NotFound(f"no link {src} -> {dst}")

        def edit(doc: dict[str, Any]) -> None:
            doc["links"] = [lk for lk in doc["links"] if (lk["src"], lk["dst"]) != (src, dst)]

        registry.change(db, edit, who.subject)
    _changed(ctx)
    return Response(status_code=204)


# -- projects ----------------------------------------------------------------------------


def _project(row: ProjectRow) -> ProjectInfo:
    return ProjectInfo(
        id=row.id,
        organisation=row.organisation,
        name=row.name,
        sites=list(row.sites) if row.sites is not None else None,
    )


@router.get(
    "/projects", summary="The projects the caller may read", response_model=list[ProjectInfo]
)
def list_projects(who: Member, ctx: Context) -> list[ProjectInfo]:
    with ctx.store.session() as db:
        rows = db.scalars(select(ProjectRow).order_by(ProjectRow.id))
        return [_project(r) for r in rows if who.can_read_project(r.id)]


@router.get("/projects/{project_id}", summary="One project", response_model=ProjectInfo)
def get_project(who: Member, ctx: Context, project_id: ProjectRef) -> ProjectInfo:
    with ctx.store.session() as db:
        row = db.get(ProjectRow, project_id)
        if row is None or not who.can_read_project(project_id):
            raise NotFound(f"project {project_id!r} not found")
        return _project(row)


@router.put(
    "/projects/{project_id}", summary="Register or replace a project", response_model=ProjectInfo
)
def put_project(
    body: ProjectUpdate, who: Admin, ctx: Context, project_id: ProjectRef
) -> ProjectInfo:
    """Declare a project, its organisation and the sites it may use (federation-admin)."""

    def edit(doc: dict[str, Any]) -> None:
        for org in doc["organisations"]:
            org["projects"] = [p for p in org["projects"] if p["id"] != project_id]
        project: dict[str, Any] = {"id": project_id, "name": body.name}
        if body.sites is not None:
            project["sites"] = list(body.sites)
        for org in doc["organisations"]:
            if org["id"] == body.organisation:
                org["projects"].append(project)
                break
        else:
            doc["organisations"].append(
                {"id": body.organisation, "name": "", "projects": [project]}
            )

    with ctx.store.session() as db:
        registry.change(db, edit, who.subject)
        row = db.get(ProjectRow, project_id)
        assert row is not None
        info = _project(row)
    _changed(ctx)
    return info


@router.delete("/projects/{project_id}", status_code=204, summary="Remove a project")
def delete_project(who: Admin, ctx: Context, project_id: ProjectRef) -> Response:
    with ctx.store.session() as db:
        if db.get(ProjectRow, project_id) is None:
            raise NotFound(f"project {project_id!r} not found")

        def edit(doc: dict[str, Any]) -> None:
            for org in doc["organisations"]:
                org["projects"] = [p for p in org["projects"] if p["id"] != project_id]

        registry.change(db, edit, who.subject)
    _changed(ctx)
    return Response(status_code=204)
