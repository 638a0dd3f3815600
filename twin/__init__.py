"""Digital twin of each site: telemetry in, a Kalman state-space estimate, an abstracted state out.

Only ``AbstractSiteState`` (forecasts with uncertainty, a health score) ever
leaves a twin; raw telemetry, job ids, user names and node names never do.

Public API::

    from twin import static_view
    view = static_view(federation)          # site id -> AbstractSiteState
    view["ddf-fatnode"].available_cores.mean[:3]
"""

from twin.state import AbstractSiteState, Forecast, SiteStatus, SiteView, static_view

__all__ = ["AbstractSiteState", "Forecast", "SiteStatus", "SiteView", "static_view"]
