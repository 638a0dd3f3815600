"""Dependencies shared by the routers: the service context, the caller, role checks.

The checks are ``async def`` on purpose: they do no I/O, and FastAPI runs a
plain ``def`` dependency in the thread pool (one thread hop each, which
measurably slowed every request). Handlers that touch the store are plain
``def`` (one hop) and open ``with ctx.store.session() as db:`` themselves, so
the commit happens before the response is built and a failed commit is an
error answer.

Every route states who may call it with one ``Annotated`` alias::

    def list_sites(who: Member, ...)            # any role of the federation
    def register_site(who: Admin, ...)          # federation-admin
    def submit(project: ProjectWriter, ...)     # researcher of {project_id} (or admin)
    def read(project: ProjectReader, ...)       # + auditors, read-only

``SiteOperator`` (site-operator of ``{site_id}``, or admin) is ready for the
telemetry router; a later router needs one alias at most. Project access is
checked before anything is read, and a project the caller cannot see answers
404 exactly as a missing one does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

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
    engine: Any = None  # federation.api.engine.Engine, created on first use


async def get_context(request: Request) -> ApiContext:
    ctx: ApiContext = request.app.state.ctx
    return ctx


Context = Annotated[ApiContext, Depends(get_context)]


bearer_scheme = HTTPBearer(
    auto_error=False,
    bearerFormat="JWT",
    description="A Keycloak access token, or the local-mode token printed by `continuum serve`.",
)
"""Declares the bearer scheme in the OpenAPI document (the /docs page's Authorize button)."""


async def current_principal(
    ctx: Context,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> Principal:
    """The verified caller of this request (401 without a valid bearer token)."""
    try:
        if credentials is None or not credentials.credentials.strip():
            raise Unauthenticated("missing bearer token: send 'Authorization: Bearer <token>'")
        return await ctx.verifier.principal(credentials.credentials.strip())
    except Unauthenticated:
        ctx.metrics.auth_failure()
        raise


Caller = Annotated[Principal, Depends(current_principal)]


async def require_member(who: Caller) -> Principal:
    if not who.is_member:
        raise Forbidden("this token carries no role of the federation")
    return who


async def require_admin(who: Caller) -> Principal:
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


async def project_reader(project_id: ProjectId, who: Member) -> ProjectAccess:
    """Read access to ``project_id``: its researchers, auditors and admins; others get 404."""
    if not who.can_read_project(project_id):
        raise NotFound(f"project {project_id!r} not found")
    return ProjectAccess(project_id, who)


async def project_writer(project_id: ProjectId, who: Member) -> ProjectAccess:
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

SiteId = Annotated[str, Path(pattern=ID_PATTERN, max_length=128, description="site id")]


@dataclass(frozen=True)
class SiteAccess:
    """A site the caller operates, and who the caller is."""

    site: str
    who: Principal


async def site_operator(site_id: SiteId, who: Member) -> SiteAccess:
    """Operator rights on ``site_id`` (its site-operators and admins), for telemetry ingest.

    Sites are known to every member, so another site's operator gets 403, not 404.
    """
    if not who.can_operate_site(site_id):
        raise Forbidden(f"this needs the {Role.SITE_OPERATOR} role for site {site_id!r}")
    return SiteAccess(site_id, who)


SiteOperator = Annotated[SiteAccess, Depends(site_operator)]


__all__ = [
    "Admin",
    "ApiContext",
    "Caller",
    "Context",
    "Member",
    "ProjectAccess",
    "ProjectReader",
    "ProjectWriter",
    "SiteAccess",
    "SiteOperator",
    "current_principal",
    "get_context",
    "project_reader",
    "project_writer",
    "require_admin",
    "require_member",
    "site_operator",
]
