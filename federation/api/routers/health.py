"""``/health`` (liveness and store check) and ``/metrics`` (Prometheus text format)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from sqlalchemy import text

from federation.api.deps import Context, bearer_scheme, current_principal, require_member

router = APIRouter(tags=["health"])

PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@router.get("/health", summary="Liveness and store check (no token needed)")
def health(ctx: Context) -> JSONResponse:
    """``200 {"status": "ok"}`` when the store answers, ``503`` with the reason otherwise."""
    body: dict[str, Any] = {
        "status": "ok",
        "mode": "local" if ctx.settings.local_mode else "keycloak",
        "store": "ok",
    }
    try:
        with ctx.store.session() as s:
            s.execute(text("SELECT 1"))
    except Exception as exc:
        body.update(status="unavailable", store=f"error: {exc}")
        return JSONResponse(body, 503)
    return JSONResponse(body)


@router.get(
    "/metrics",
    summary="Prometheus metrics (text exposition format 0.0.4)",
    response_class=PlainTextResponse,
)
async def metrics(request: Request, ctx: Context) -> PlainTextResponse:
    """Request counts and latencies per route, auth failures, and the stored resources."""
    if not ctx.settings.metrics_public:
        credentials = await bearer_scheme(request)
        await require_member(await current_principal(ctx, credentials))
    return PlainTextResponse(ctx.metrics.render(), media_type=PROMETHEUS_CONTENT_TYPE)
