"""The federation registry of the service: sites, links, organisations and their projects.

The registry holds the same document as a federation YAML file, one row per site, link and
project (``api_sites``, ``api_links``, ``api_projects``) plus one row for the federation's
name and a version counter (``api_registry``). Every change goes through ``change``: it
applies an edit to the registered federation, validates the *whole* result as a
``Federation`` (field paths in the error, nothing stored when it fails), writes it, and bumps
the version in the same transaction, so that the engine (and every other process on the
store) rebuilds its view exactly when the registry changed.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Integer, String, delete, select, update
from sqlalchemy.orm import Mapped, Session, mapped_column

from federation.api.tables import SiteRow, UTCDateTime, utcnow
from federation.model import Federation
from federation.store import Base

FEDERATION_NAME = "federation"


class RegistryRow(Base):
    """The registry's header: the federation's name, description and change counter."""

    __tablename__ = "api_registry"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), default=FEDERATION_NAME)
    description: Mapped[str] = mapped_column(String(2000), default="")
    version: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class LinkRow(Base):
    """A directed link between two registered sites (the ``Link`` model as JSON)."""

    __tablename__ = "api_links"

    src: Mapped[str] = mapped_column(String(128), primary_key=True)
    dst: Mapped[str] = mapped_column(String(128), primary_key=True)
    document: Mapped[dict[str, Any]] = mapped_column(JSON)


class OrganisationRow(Base):
    __tablename__ = "api_organisations"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    name: Mapped[str] = mapped_column(String(512), default="")


class ProjectRow(Base):
    """A project of an organisation and the sites it may use (``None``: every site)."""

    __tablename__ = "api_projects"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    organisation: Mapped[str] = mapped_column(ForeignKey("api_organisations.id"))
    name: Mapped[str] = mapped_column(String(512), default="")
    sites: Mapped[list[str] | None] = mapped_column(JSON, default=None)


def version(db: Session) -> int:
    """The registry's change counter (0 for a registry never written)."""
    row = db.get(RegistryRow, 1)
    return row.version if row is not None else 0


def document(db: Session) -> dict[str, Any]:
    """The registered federation as the document of a federation file (may have no site)."""
    head = db.get(RegistryRow, 1)
    orgs: dict[str, dict[str, Any]] = {
        o.id: {"id": o.id, "name": o.name, "projects": []}
        for o in db.scalars(select(OrganisationRow).order_by(OrganisationRow.id))
    }
    for p in db.scalars(select(ProjectRow).order_by(ProjectRow.id)):
        project: dict[str, Any] = {"id": p.id, "name": p.name}
        if p.sites is not None:
            project["sites"] = list(p.sites)
        orgs.setdefault(p.organisation, {"id": p.organisation, "name": "", "projects": []})[
            "projects"
        ].append(project)
    return {
        "name": head.name if head is not None else FEDERATION_NAME,
        "description": head.description if head is not None else "",
        "sites": [r.document for r in db.scalars(select(SiteRow).order_by(SiteRow.id))],
        "links": [
            r.document for r in db.scalars(select(LinkRow).order_by(LinkRow.src, LinkRow.dst))
        ],
        "organisations": list(orgs.values()),
    }


def load(db: Session) -> Federation | None:
    """The registered federation, or ``None`` while no site is registered."""
    doc = document(db)
    if not doc["sites"]:
        return None
    return Federation.from_dict(doc, "<federation registry>")


def change(db: Session, edit: Callable[[dict[str, Any]], None], who: str) -> Federation:
    """Apply ``edit`` to the registry's document, validate the whole federation, store it.

    ``InvalidFederation`` (field paths of the whole document) leaves the registry as it was.
    The registry's row is written first, so that the write lock is held before the document
    is read: two changes at once apply one after the other, none is lost.
    """
    lock(db)
    doc = document(db)
    edit(doc)
    fed = Federation.from_dict(doc, "<api>")
    replace(db, fed, who)
    return fed


def lock(db: Session) -> None:
    """Take the registry's write lock in the caller's transaction (an idempotent write)."""
    if db.get(RegistryRow, 1) is None:
        db.add(RegistryRow(id=1, version=0))
        db.flush()
    db.execute(update(RegistryRow).where(RegistryRow.id == 1).values(version=RegistryRow.version))


def replace(db: Session, fed: Federation, who: str) -> None:
    """Make the registry hold exactly ``fed`` (in the caller's transaction)."""
    old_sites = {r.id: r for r in db.scalars(select(SiteRow))}
    new_sites = {s.id: s.model_dump(mode="json") for s in fed.sites}
    for sid, row in old_sites.items():
        if sid not in new_sites:
            db.delete(row)
        elif row.document != new_sites[sid]:
            row.document, row.updated_at, row.updated_by = new_sites[sid], utcnow(), who
    for sid, doc in new_sites.items():
        if sid not in old_sites:
            db.add(SiteRow(id=sid, document=doc, updated_by=who))
    db.execute(delete(LinkRow))
    db.execute(delete(ProjectRow))
    db.execute(delete(OrganisationRow))
    db.flush()
    for lk in fed.links:
        db.add(LinkRow(src=lk.src, dst=lk.dst, document=lk.model_dump(mode="json")))
    for org in fed.organisations:
        db.add(OrganisationRow(id=org.id, name=org.name))
        for p in org.projects:
            sites = list(p.sites) if p.sites is not None else None
            db.add(ProjectRow(id=p.id, organisation=org.id, name=p.name, sites=sites))
    head = db.get(RegistryRow, 1)
    if head is None:
        head = RegistryRow(id=1, version=0)
        db.add(head)
    head.name, head.description = fed.name, fed.description
    head.version = (head.version or 0) + 1
    head.updated_at = utcnow()
    db.flush()


__all__ = [
    "LinkRow",
    "OrganisationRow",
    "ProjectRow",
    "RegistryRow",
    "change",
    "document",
    "load",
    "lock",
    "replace",
    "version",
]
