"""One router per resource; each handler is a thin call into the packages below."""

from federation.api.routers import (
    agents,
    federation,
    health,
    identity,
    madpp,
    plans,
    runs,
    simulations,
    site_state,
    sites,
    telemetry,
    twin,
    workflows,
)

ROUTERS = (
    health.router,
    identity.router,
    federation.router,
    sites.router,
    workflows.router,
    madpp.router,
    agents.router,
    telemetry.router,
    site_state.router,
    twin.router,
    plans.router,
    runs.router,
    simulations.router,
)

__all__ = [
    "ROUTERS",
    "agents",
    "federation",
    "health",
    "identity",
    "madpp",
    "plans",
    "runs",
    "simulations",
    "site_state",
    "sites",
    "telemetry",
    "twin",
    "workflows",
]
