"""One router per resource; each handler is a thin call into the packages below."""

from federation.api.routers import health, identity, madpp, sites, workflows

ROUTERS = (health.router, identity.router, sites.router, workflows.router, madpp.router)

__all__ = ["ROUTERS", "health", "identity", "madpp", "sites", "workflows"]
