"""``/api/v1/twin``: the abstracted states and forecasts of the sites (any member).

Only ``AbstractSiteState`` leaves the twin: forecasts with their uncertainty,
expected wait, health and status, through each site's disclosure policy;
never raw telemetry.
"""

from __future__ import annotations

from fastapi import APIRouter, Path
from pydantic import BaseModel, ConfigDict, Field

from federation.api.deps import Context, Member
from federation.api.engine import engine_of
from federation.api.errors import NotFound
from federation.errors import InvalidInput
from federation.model import ID_PATTERN
from twin.disclosure import disclose
from twin.errors import TwinError
from twin.state import AbstractSiteState

router = APIRouter(prefix="/api/v1/twin", tags=["twin"])


class WhatIf(BaseModel):
    """Load the orchestrator would send, per horizon slot: (cores, core-seconds of work)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    controls: list[tuple[float, float]] = Field(
        min_length=1,
        max_length=168,
        description="(cores, core-seconds) per slot; negative values release load",
    )


@router.get(
    "/states", summary="Every site's abstracted state", response_model=dict[str, AbstractSiteState]
)
def states(_who: Member, ctx: Context) -> dict[str, AbstractSiteState]:
    return engine_of(ctx).view()


@router.get(
    "/states/{site_id}", summary="One site's abstracted state", response_model=AbstractSiteState
)
def state(
    _who: Member, ctx: Context, site_id: str = Path(pattern=ID_PATTERN, max_length=128)
) -> AbstractSiteState:
    view = engine_of(ctx).view()
    if site_id not in view:
        raise NotFound(f"site {site_id!r} not found")
    return view[site_id]


@router.post(
    "/states/{site_id}/what-if",
    summary="The site's state if this load were sent (conditional forecast)",
    response_model=AbstractSiteState,
)
def what_if(
    body: WhatIf,
    _who: Member,
    ctx: Context,
    site_id: str = Path(pattern=ID_PATTERN, max_length=128),
) -> AbstractSiteState:
    engine = engine_of(ctx)
    with engine.lock:
        twin = engine.twin()
        if site_id not in twin.sites:
            raise NotFound(f"site {site_id!r} not found")
        try:
            forecast = twin.forecast(site_id, controls=body.controls)
        except (TwinError, ValueError) as exc:
            raise InvalidInput.single("<api>", "body.controls", str(exc)) from None
        status = twin.status()[site_id]
        health = twin.view()[site_id].health
        return disclose(twin.sites[site_id].site, forecast, status, health, twin.policies[site_id])
