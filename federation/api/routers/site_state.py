"""``/api/v1/sites/{site_id}/state``: the abstracted state a site's own twin pushes.

A site that keeps its twin at home (``continuum site-agent --telemetry
SOURCE``) sends only its ``AbstractSiteState`` here (``PUT``, site-operator
of that site): the service stores that state (``api_site_states``) and no raw
telemetry at all for the site. The planners' view (``Engine.view``) takes a
pushed state in place of the central twin's estimate for that site
(``merge_pushed``); a pushed state older than ``STALE_AFTER_S`` reads
``stale``. The engine caches its view for up to a second, so a push shows
there within a second. Sites that choose to send raw telemetry keep using
``POST /api/v1/sites/{site_id}/telemetry`` and the central twin.

``POST /api/v1/sites/{site_id}/state/accept`` is an operator accepting the
site's new level after a fault (a step change that is real, a replaced
sensor): for a site twinned here the central twin closes its fault at once;
for an agent-fed site the request is stored and handed to the site's twin in
the answer to its next push (``accept_level: true``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict
from sqlalchemy import select

from federation.api.deps import Context, SiteOperator
from federation.api.engine import engine_of
from federation.api.errors import NotFound
from federation.api.tables import SiteStateRow
from federation.errors import InvalidInput
from federation.store import Store
from twin.state import AbstractSiteState, SiteStatus

router = APIRouter(prefix="/api/v1/sites/{site_id}", tags=["site state"])

STALE_AFTER_S = 3 * 3600.0
"""A pushed state older than this (by its ``issued_at``) reads stale, health 0."""


class PushReply(BaseModel):
    model_config = ConfigDict(extra="forbid")

    site: str
    accept_level: bool = False


class AcceptReply(BaseModel):
    model_config = ConfigDict(extra="forbid")

    site: str
    accepted: bool
    where: str  # "service": the central twin closed its fault; "site": handed to its twin


def _registered(ctx: Any, site: str) -> None:
    if site not in engine_of(ctx).federation().site_ids:
        raise NotFound(f"site {site!r} is not registered: POST /api/v1/sites first")


@router.put("/state", summary="Push the site's abstracted state (from its own twin)")
def push_state(body: AbstractSiteState, access: SiteOperator, ctx: Context) -> PushReply:
    """Store the state the site's twin computed; the answer may ask it to accept a new level."""
    if body.site_id != access.site:
        raise InvalidInput.single(
            "<api>",
            "body.site_id",
            f"the body's site_id {body.site_id!r} differs from the path's {access.site!r}",
        )
    _registered(ctx, access.site)
    doc = body.model_dump(mode="json")
    with ctx.store.session() as db:
        row = db.get(SiteStateRow, access.site)
        accept = False
        if row is None:
            db.add(
                SiteStateRow(
                    site_id=access.site,
                    document=doc,
                    received_at=time.time(),
                    pushed_by=access.who.subject,
                )
            )
        else:
            accept = row.accept_requested
            row.document, row.received_at, row.pushed_by = doc, time.time(), access.who.subject
            row.accept_requested = False  # handed over in this answer
    return PushReply(site=access.site, accept_level=accept)


@router.post(
    "/state/accept",
    summary="Accept the site's new level: close its fault",
    response_model=AcceptReply,
)
def accept_level(access: SiteOperator, ctx: Context) -> AcceptReply:
    _registered(ctx, access.site)
    with ctx.store.session() as db:
        row = db.get(SiteStateRow, access.site)
        if row is not None:
            row.accept_requested = True
            return AcceptReply(site=access.site, accepted=True, where="site")
    engine = engine_of(ctx)
    with engine.lock:
        accepted = engine.twin().sites[access.site].accept()
    return AcceptReply(site=access.site, accepted=accepted, where="service")


def pushed_states(store: Store) -> dict[str, AbstractSiteState]:
    """Every state pushed by a site's own twin, by site id."""
    with store.session() as db:
        rows = db.scalars(select(SiteStateRow)).all()
        return {r.site_id: AbstractSiteState.model_validate(r.document) for r in rows}


def merge_pushed(
    store: Store, view: Mapping[str, AbstractSiteState], now: float | None = None
) -> dict[str, AbstractSiteState]:
    """The central twin's ``view`` with each agent-fed site's pushed state in its place.

    A pushed state is the site's own twin's verdict, so it replaces the central
    twin's (which has no telemetry of that site); one issued more than
    ``STALE_AFTER_S`` before ``now`` reads stale with health 0. Sites not in
    ``view`` (no longer registered) are left out.
    """
    t = time.time() if now is None else now
    out = dict(view)
    for sid, state in pushed_states(store).items():
        if sid not in out:
            continue
        if t - state.issued_at > STALE_AFTER_S:
            state = state.model_copy(update={"status": SiteStatus.STALE, "health": 0.0})
        out[sid] = state
    return out
