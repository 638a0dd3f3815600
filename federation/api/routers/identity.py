"""``/api/v1/me``: what the API made of the caller's token (roles, projects, sites)."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from federation.api.deps import Caller

router = APIRouter(prefix="/api/v1", tags=["identity"])


class Identity(BaseModel):
    """The caller as the API sees it; what to check first when a request is refused."""

    subject: str
    client: str
    roles: list[str]
    projects: list[str]
    sites: list[str]


@router.get("/me", response_model=Identity, summary="The caller's roles, projects and sites")
async def me(who: Caller) -> Identity:
    """Any valid token, even one without roles (it then shows why everything else is 403)."""
    return Identity(
        subject=who.subject,
        client=who.client,
        roles=sorted(r.value for r in who.roles),
        projects=sorted(who.projects),
        sites=sorted(who.sites),
    )
