"""The web dashboard served by ``continuum serve`` at ``/``, and the API docs without a CDN.

The dashboard is a client of the public API and nothing else: a page and its
scripts (``static/``, shipped in the package) that call ``/api/v1/...`` with the
caller's bearer token, exactly as any other client does. It holds no server-side
session and reaches no private route: the only routes added here serve files
and the public login settings (``/ui/config.json``: local or Keycloak mode, the
realm's issuer and the dashboard's public client id, never a secret).

Logging in: in local mode the admin token printed by ``continuum serve`` is
pasted once (or arrives in the URL fragment ``#token=...`` that ``serve``
prints, which never reaches the server); with Keycloak the page runs the
authorization code flow with PKCE (RFC 7636) against the realm, as a public
client (``dashboard_client_id``, in the shipped realm export).

``/docs`` (Swagger UI) and ``/redoc`` load their scripts from the package too
(the files of the ``fastapi-offline`` distribution), so they work on an
air-gapped login node.
"""

from __future__ import annotations

from importlib import resources
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fastapi import FastAPI
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from federation.settings import Settings

STATIC = Path(__file__).with_name("static")
PREFIX = "/ui"
"""Where the dashboard's files and its login settings are served."""
APIDOCS = f"{PREFIX}/apidocs"


def _apidocs_dir() -> Path:
    """The folder of Swagger UI's and ReDoc's files, shipped by ``fastapi-offline``."""
    return Path(str(resources.files("fastapi_offline") / "static"))


def _version() -> str:
    try:
        return version("continuum-twin")
    except PackageNotFoundError:  # a source tree that was never installed
        return "unknown"


def login_settings(settings: Settings) -> dict[str, Any]:
    """What the page needs to log in: public values only (no secret, no token)."""
    out: dict[str, Any] = {
        "mode": "local" if settings.local_mode else "keycloak",
        "api": "/api/v1",
        "version": _version(),
    }
    if not settings.local_mode:
        out["keycloak"] = {
            "issuer": settings.issuer,
            "client_id": settings.dashboard_client_id,
            "scope": "openid",
        }
    return out


def content_security_policy(settings: Settings) -> str:
    """The page may run only its own scripts and talk only to this service and the realm."""
    connect = ["'self'"]
    if not settings.local_mode:
        parts = urlsplit(settings.issuer)
        connect.append(f"{parts.scheme}://{parts.netloc}")
    return (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        f"connect-src {' '.join(connect)}; frame-ancestors 'none'; base-uri 'none'; "
        "form-action 'self'"
    )


def install(app: FastAPI, settings: Settings) -> None:
    """Serve the dashboard at ``/`` and the API docs at ``/docs`` and ``/redoc``.

    ``app`` must be created with ``docs_url=None, redoc_url=None`` (FastAPI's own pages
    load their scripts from a CDN).
    """
    csp = content_security_policy(settings)
    page_headers = {
        "Content-Security-Policy": csp,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-cache",
    }

    @app.get("/", include_in_schema=False)
    async def dashboard() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers=page_headers)

    @app.get(f"{PREFIX}/config.json", include_in_schema=False)
    async def dashboard_config() -> JSONResponse:
        return JSONResponse(login_settings(settings), headers={"Cache-Control": "no-cache"})

    app.mount(f"{PREFIX}/static", StaticFiles(directory=STATIC), name="dashboard")
    app.mount(APIDOCS, StaticFiles(directory=_apidocs_dir()), name="apidocs")
    openapi_url = app.openapi_url or "/openapi.json"
    oauth2_redirect = "/docs/oauth2-redirect"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=oauth2_redirect,
            swagger_js_url=f"{APIDOCS}/swagger-ui-bundle.js",
            swagger_css_url=f"{APIDOCS}/swagger-ui.css",
            swagger_favicon_url=f"{PREFIX}/static/favicon.svg",
        )

    @app.get(oauth2_redirect, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url=openapi_url,
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{APIDOCS}/redoc.standalone.js",
            redoc_favicon_url=f"{PREFIX}/static/favicon.svg",
            with_google_fonts=False,
        )


__all__ = ["PREFIX", "content_security_policy", "install", "login_settings"]
