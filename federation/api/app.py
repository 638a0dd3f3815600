"""The FastAPI application: ``create_app(settings)``.

The app holds an ``ApiContext`` (settings, store, token verifier, metrics) on
``app.state.ctx``; routers reach it through ``federation.api.deps``. Two pure
ASGI middlewares wrap everything: the request-size limit (413 before any
handler runs, so nothing is stored) and the metrics timer.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI
from sqlalchemy import func, select
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from federation.api import dashboard, errors
from federation.api.aai import LocalVerifier, Verifier, make_verifier
from federation.api.deps import ApiContext
from federation.api.engine import Engine
from federation.api.errors import declare_error_responses, error_body, refuse_non_finite
from federation.api.metrics import TELEMETRY_DUPLICATES, Metrics
from federation.api.routers import ROUTERS
from federation.api.tables import MadppRow, SiteRow, WorkflowRow
from federation.settings import Settings, load_settings
from federation.store import Store
from twin.federation_twin import IngestReport

API_VERSION = "1"


class BodySizeLimit:
    """Answers 413 to a request whose body exceeds ``limit`` bytes.

    A declared ``Content-Length`` over the limit is refused before reading;
    a streamed body is counted as it arrives and refused when it passes the
    limit, before the handler sees it.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > self.limit:
                    await self._refuse(send)
                    return
        received = 0
        started = refused = False

        async def counting_receive() -> Message:
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    # Answer 413 now and tell the app the client left: the handler
                    # never sees the body, and whatever the app answers is dropped.
                    refused = True
                    if not started:
                        await self._refuse(send)
                    return {"type": "http.disconnect"}
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if refused:
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        await self.app(scope, counting_receive, tracking_send)

    async def _refuse(self, send: Send) -> None:
        body = json.dumps(
            error_body(
                "payload_too_large",
                f"request body over {self.limit} bytes (CONTINUUM_MAX_BODY_BYTES)",
            )
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


class RequestMetrics:
    """Times every HTTP request and counts it by method, route template and status."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.observe_request(
                scope["method"], template, status, time.perf_counter() - start
            )


def _register_gauges(metrics: Metrics, store: Store) -> None:
    def count(table: Any) -> list[tuple[dict[str, str], float]]:
        with store.session() as s:
            return [({}, float(s.scalar(select(func.count()).select_from(table)) or 0))]

    def per_project(table: Any) -> list[tuple[dict[str, str], float]]:
        with store.session() as s:
            rows = s.execute(select(table.project, func.count()).group_by(table.project))
            return [({"project": p}, float(n)) for p, n in rows]

    metrics.gauge("continuum_sites", "Registered sites.", lambda: count(SiteRow))
    metrics.gauge(
        "continuum_workflows", "Stored workflows per project.", lambda: per_project(WorkflowRow)
    )
    metrics.gauge(
        "continuum_madpp_plans",
        "Stored data project plans per project.",
        lambda: per_project(MadppRow),
    )


def _register_telemetry_metrics(metrics: Metrics, ctx: ApiContext) -> None:
    def samples() -> list[tuple[dict[str, str], float]]:
        engine = ctx.engine
        t = engine.totals if engine is not None else IngestReport()
        return [
            ({"outcome": "applied"}, float(t.applied)),
            # duplicates the journal caught (told to the client) and any the twin caught
            (
                {"outcome": "duplicate"},
                float(t.duplicates + ctx.metrics.counted(TELEMETRY_DUPLICATES)),
            ),
            ({"outcome": "out_of_order"}, float(t.rejected_out_of_order)),
            ({"outcome": "conflicting"}, float(t.conflicting)),
        ]

    def queued() -> list[tuple[dict[str, str], float]]:
        return [({}, float(ctx.engine.queued() if ctx.engine is not None else 0))]

    def replayed() -> list[tuple[dict[str, str], float]]:
        return [({}, float(ctx.engine.replayed if ctx.engine is not None else 0))]

    metrics.counter(
        "continuum_telemetry_samples_total",
        "Telemetry samples the twin processed, by outcome (replayed ones count as applied).",
        samples,
    )
    metrics.counter(
        "continuum_telemetry_replayed_total",
        "Samples applied from the journal at start (acknowledged before a stop).",
        replayed,
    )
    metrics.gauge("continuum_telemetry_queued", "Samples waiting for the twin.", queued)


def create_app(
    settings: Settings | None = None,
    *,
    store: Store | None = None,
    verifier: Verifier | None = None,
) -> FastAPI:
    """The federation REST API.

    Args:
        settings: defaults to ``load_settings()`` (environment, ``.env``).
        store: defaults to the store at ``settings.resolved_database_url()``
            (the data directory is created).
        verifier: defaults to ``make_verifier(settings)``: Keycloak when
            configured, else local mode with one generated admin token, readable
            as ``app.state.local_token``.
    """
    settings = settings or load_settings()
    if store is None:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        (settings.data_dir / "buffers").mkdir(exist_ok=True)
        store = Store(settings.resolved_database_url())
    else:
        store.create_tables()
    verifier = verifier or make_verifier(settings)
    metrics = Metrics()
    _register_gauges(metrics, store)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # The service owns its engine: built and started here (the runs left running or
        # paused by an earlier process resume now, with no request needed), stopped last.
        ctx: ApiContext = app.state.ctx
        engine = Engine(ctx)
        ctx.engine = engine
        engine.start()
        try:
            yield
        finally:
            engine.stop()
            ctx.engine = None

    app = FastAPI(
        lifespan=lifespan,
        docs_url=None,  # served by the dashboard module from the package's files (no CDN)
        redoc_url=None,
        title="continuum federation API",
        version=API_VERSION,
        description=(
            "Federated continuum digital twin: sites, workflows and data project plans. "
            "Send 'Authorization: Bearer <token>' (a Keycloak access token, or the local-mode "
            "token printed by `continuum serve`)."
        ),
        dependencies=[Depends(refuse_non_finite)],
    )
    app.state.ctx = ApiContext(settings=settings, store=store, verifier=verifier, metrics=metrics)
    _register_telemetry_metrics(metrics, app.state.ctx)
    app.state.local_token = verifier.token if isinstance(verifier, LocalVerifier) else None
    errors.install(app)
    for router in ROUTERS:
        app.include_router(router)
    # the published schema declares every error answer (ErrorBody), routes added later included
    declare_error_responses(app)
    dashboard.install(app, settings)
    app.add_middleware(RequestMetrics, metrics=metrics)
    app.add_middleware(BodySizeLimit, limit=settings.max_body_bytes)
    return app


__all__ = ["API_VERSION", "BodySizeLimit", "RequestMetrics", "create_app"]
