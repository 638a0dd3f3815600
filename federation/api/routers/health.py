"""``/health`` (liveness and store check) and ``/metrics`` (Prometheus text format)."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel
from sqlalchemy import text

from federation.api.deps import Context, bearer_scheme, current_principal, require_member
from federation.api.errors import ERROR_RESPONSES

router = APIRouter(tags=["health"])

PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class HealthStatus(BaseModel):
    """Whether the service and its store answer."""

    status: Literal["ok", "unavailable"]
    mode: Literal["local", "keycloak"]
    store: str


@router.get(
    "/health",
    summary="Liveness and store check (no token needed)",
    response_model=HealthStatus,
    responses={503: {"model": HealthStatus, "description": "The store does not answer."}},
)
def health(ctx: Context) -> JSONResponse:
    """``200 {"status": "ok"}`` when the store answers, ``503`` with the reason otherwise."""
    mode = "local" if ctx.settings.local_mode else "keycloak"
    body = HealthStatus(status="ok", mode=mode, store="ok")
    try:
        with ctx.store.session() as s:
            s.execute(text("SELECT 1"))
    except Exception as exc:
        body = body.model_copy(update={"status": "unavailable", "store": f"error: {exc}"})
        return JSONResponse(body.model_dump(), 503)
    return JSONResponse(body.model_dump())


@router.get(
    "/metrics",
    summary="Prometheus metrics (text exposition format 0.0.4)",
    response_class=PlainTextResponse,
    # the token is checked in the handler (it may be optional): declared here
    responses={code: ERROR_RESPONSES[code] for code in (401, 403, 503)},
)
async def metrics(request: Request, ctx: Context) -> PlainTextResponse:
    """Request counts and latencies per route, auth failures, and the stored resources.

    A token is needed unless ``CONTINUUM_METRICS_PUBLIC=true``. Only admins and
    auditors see per-project figures and the count of refused tokens; anyone
    else (an anonymous scraper included) gets totals that name no project.
    """
    credentials = await bearer_scheme(request)
    detailed = False
    if credentials is not None or not ctx.settings.metrics_public:
        who = await require_member(await current_principal(ctx, credentials))
        detailed = who.visible_projects() is None
    return PlainTextResponse(
        ctx.metrics.render(detailed=detailed), media_type=PROMETHEUS_CONTENT_TYPE
    )
