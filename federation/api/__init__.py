"""The federation REST API (FastAPI) with Keycloak AAI and multi-tenant isolation.

It sits at the top of the import graph: routers are thin handlers calling the
packages below (``federation.model``, ``orchestrator.loaders``,
``datalogistics.madpp``). ``create_app(settings)`` builds the app;
``continuum serve`` runs it with uvicorn.

Public API::

    from federation.api import create_app
    from federation.settings import Settings
    app = create_app(Settings(data_dir="/tmp/continuum"))   # local mode
    token = app.state.local_token                           # the admin token
"""

from federation.api.aai import (
    KeycloakVerifier,
    LocalVerifier,
    Principal,
    Role,
    make_verifier,
    parse_entitlement,
    principal_from_claims,
)
from federation.api.app import create_app
from federation.api.errors import ApiError

__all__ = [
    "ApiError",
    "KeycloakVerifier",
    "LocalVerifier",
    "Principal",
    "Role",
    "create_app",
    "make_verifier",
    "parse_entitlement",
    "principal_from_claims",
]
