"""Dependencies shared by the routers: the service context, the caller, role checks.

Every route states who may call it with one ``Annotated`` alias::

    def list_sites(who: Member, ...)            # any role of the federation
    def register_site(who: Admin, ...)          # federation-admin
    def submit(project: ProjectWriter, ...)     # researcher of {project_id} (or admin)
    def read(project: ProjectReader, ...)       # + auditors, read-only

A later router adds its own in one line, e.g. ``SiteOperator`` for telemetry
of ``{site_id}``. Project access is checked before anything is read, and a
project the caller cannot see answers 404 exactly as a missing one does.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Path, Request
from sqlalchemy.orm import Session

from federation.api.aai import Principal, Role, Verifier
from federation.api.errors import Forbidden, NotFound, Unauthenticated
from federation.api.metrics import Metrics
from federation.model import ID_PATTERN
from federation.settings import Settings
from federation.store import Store


@dataclass
class ApiContext:
    """What every handler may need, held on ``app.state.ctx``."""

    settings: Settings
    store: Store
    verifier: Verifier
    metrics: Metrics


def get_context(request: Request) -> ApiContext:
    ctx: ApiContext = request.app.state.ctx
    return ctx


Context = Annotated[ApiContext, Depends(get_context)]


def get_session(ctx: Context) -> Iterator[Session]:
    """One store session per request, committed before the response is sent.

    ``scope="function"`` runs the commit as soon as the handler returns, so a
    failed commit is an error answer; an exception in the handler rolls back.
    """
    with ctx.store.session() as session:
        yield session


DbSession = Annotated[Session, Depends(get_session, scope="function")]


async def current_principal(request: Request, ctx: Context) -> Principal:
    """The verified caller of this request (401 without a valid bearer token)."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    try:
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("missing bearer token: send 'Authorization: Bearer <token>'")
        return await ctx.verifier.principal(token.strip())
    except Unauthenticated:
        ctx.metrics.auth_failure()
        raise


Caller = Annotated[Principal, Depends(current_principal)]


def require_member(who: Caller) -> Principal:
    if not who.is_member:
        raise Forbidden("this token carries no role of the federation")
    return who


def require_admin(who: Caller) -> Principal:
    if not who.admin:
        raise Forbidden(f"this needs the {Role.FEDERATION_ADMIN} role")
    return who


Member = Annotated[Principal, Depends(require_member)]
Admin = Annotated[Principal, Depends(require_admin)]

ProjectId = Annotated[str, Path(pattern=ID_PATTERN, max_length=128, description="project id")]


@dataclass(frozen=True)
class ProjectAccess:
    """A project the caller may act on, and who the caller is."""

    project: str
    who: Principal


def project_reader(project_id: ProjectId, who: Member) -> ProjectAccess:
    """Read access to ``project_id``: its researchers, auditors and admins; others get 404."""
    if not who.can_read_project(project_id):
        raise NotFound(f"project {project_id!r} not found")
    return ProjectAccess(project_id, who)


def project_writer(project_id: ProjectId, who: Member) -> ProjectAccess:
    """Write access to ``project_id``: its researchers and admins.

    An auditor who can see the project gets 403 (read-only role); anyone who
    cannot see it gets 404.
    """
    if not who.can_read_project(project_id):
        raise NotFound(f"project {project_id!r} not found")
    if not who.can_write_project(project_id):
        raise Forbidden(f"the {Role.AUDITOR} role is read-only")
    return ProjectAccess(project_id, who)


ProjectReader = Annotated[ProjectAccess, Depends(project_reader)]
ProjectWriter = Annotated[ProjectAccess, Depends(project_writer)]


__all__ = [
    "Admin",
    "ApiContext",
    "Caller",
    "Context",
    "DbSession",
    "Member",
    "ProjectAccess",
    "ProjectReader",
    "ProjectWriter",
    "current_principal",
    "get_context",
    "project_reader",
    "project_writer",
    "require_admin",
    "require_member",
]
