"""One router per resource; each handler is a thin call into the packages below."""

from federation.api.routers import health, madpp, sites, workflows

ROUTERS = (health.router, sites.router, workflows.router, madpp.router)

__all__ = ["ROUTERS", "health", "madpp", "sites", "workflows"]
