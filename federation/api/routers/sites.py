"""``/api/v1/sites``: register, update, remove and list the federation's sites.

Writes need federation-admin and go through ``federation.api.registry.change``: the whole
federation is validated with the change (a site that a project or a link still names cannot
go), and the registry's version moves, so every process sees the change.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Path, Response
from sqlalchemy import select

from federation.api import registry
from federation.api.deps import Admin, Context, Member
from federation.api.engine import engine_of
from federation.api.errors import Conflict, NotFound
from federation.api.tables import SiteRow
from federation.errors import InvalidInput
from federation.model import ID_PATTERN, Site

router = APIRouter(prefix="/api/v1/sites", tags=["sites"])

SiteId = ID_PATTERN


def _site(row: SiteRow) -> Site:
    return Site.model_validate(row.document)


@router.get("", summary="List the registered sites", response_model=list[Site])
def list_sites(_who: Member, ctx: Context) -> list[Site]:
    """Every registered site, by id (any member of the federation)."""
    with ctx.store.session() as db:
        return [_site(r) for r in db.scalars(select(SiteRow).order_by(SiteRow.id))]


@router.get("/{site_id}", summary="One registered site", response_model=Site)
def get_site(
    _who: Member, ctx: Context, site_id: str = Path(pattern=SiteId, max_length=128)
) -> Site:
    with ctx.store.session() as db:
        row = db.get(SiteRow, site_id)
        if row is None:
            raise NotFound(f"site {site_id!r} not found")
        return _site(row)


@router.post("", status_code=201, summary="Register a site", response_model=Site)
def register_site(site: Site, who: Admin, ctx: Context) -> Site:
    """Register a new site (federation-admin); 409 if the id is taken."""
    with ctx.store.session() as db:
        if db.get(SiteRow, site.id) is not None:
            raise Conflict(f"site {site.id!r} is already registered: PUT /api/v1/sites/{site.id}")

        def edit(doc: dict[str, Any]) -> None:
            doc["sites"].append(site.model_dump(mode="json"))

        registry.change(db, edit, who.subject)
    engine_of(ctx).registry_changed()  # committed: the twin and planners see it now
    return site


@router.put("/{site_id}", summary="Replace a registered site", response_model=Site)
def update_site(
    site: Site,
    who: Admin,
    ctx: Context,
    site_id: str = Path(pattern=SiteId, max_length=128),
) -> Site:
    """Replace the description of ``site_id`` (federation-admin); the body's id must match."""
    if site.id != site_id:
        raise InvalidInput.single(
            "<api>", "body.id", f"the body's id {site.id!r} differs from the path's {site_id!r}"
        )
    with ctx.store.session() as db:
        if db.get(SiteRow, site_id) is None:
            raise NotFound(f"site {site_id!r} not found: register it with POST /api/v1/sites")

        def edit(doc: dict[str, Any]) -> None:
            doc["sites"] = [
                site.model_dump(mode="json") if s["id"] == site_id else s for s in doc["sites"]
            ]

        registry.change(db, edit, who.subject)
    engine_of(ctx).registry_changed()
    return site


@router.delete("/{site_id}", status_code=204, summary="Remove a site and its links")
def delete_site(
    who: Admin, ctx: Context, site_id: str = Path(pattern=SiteId, max_length=128)
) -> Response:
    """Remove ``site_id`` and the links to and from it (federation-admin); 409 while a
    project lists it (change the project first)."""
    with ctx.store.session() as db:
        if db.get(SiteRow, site_id) is None:
            raise NotFound(f"site {site_id!r} not found")
        users = sorted(
            p.id for p in db.scalars(select(registry.ProjectRow)) if site_id in (p.sites or ())
        )
        if users:
            raise Conflict(
                f"project(s) {', '.join(users)} may use site {site_id!r}: change them first "
                "(PUT /api/v1/projects/{id})"
            )

        def edit(doc: dict[str, Any]) -> None:
            doc["sites"] = [s for s in doc["sites"] if s["id"] != site_id]
            doc["links"] = [lk for lk in doc["links"] if site_id not in (lk["src"], lk["dst"])]

        registry.change(db, edit, who.subject)
    engine_of(ctx).registry_changed()
    return Response(status_code=204)
