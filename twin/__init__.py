"""Digital twin of each site: telemetry in, a Kalman state-space estimate, an abstracted state out.

Only ``AbstractSiteState`` (forecasts with uncertainty, a health score) ever
leaves a twin; raw telemetry, job ids, user names and node names never do.
The model, its equations and every state component are documented in
``twin.ssm`` and ``twin.site`` (and docs/twin.md).

Public API::

    from twin import FederationTwin, read_telemetry
    twin = FederationTwin(federation)
    twin.ingest(read_telemetry("examples/telemetry/synthetic-demo-telemetry.csv"))
    view = twin.view()        # site id -> AbstractSiteState, judged at the wall clock
    view = twin.view(now=1768777200)        # ... or at a replayed time (end of that file)
    view["ddf-fatnode"].available_cores.mean[:3]
    twin.forecast("ddf-fatnode", controls=[(64, 3600 * 64)])  # what-if
"""

from typing import TYPE_CHECKING

from federation.lazy import lazy_exports

if TYPE_CHECKING:
    from twin.calibration import LeadCalibrator
    from twin.combination import LeadBlender
    from twin.disclosure import DisclosurePolicy, disclose
    from twin.errors import InvalidTelemetry, ModelError, TwinError
    from twin.federation_twin import FederationTwin, IngestReport, SiteFit, fit_sites
    from twin.fit import (
        BacktestResult,
        FitResult,
        backtest,
        default_spec,
        filter_series,
        fit_block,
        rts_smooth,
        series_loglik,
    )
    from twin.fleet import FleetTwin
    from twin.kalman import BatchKalman, UpdateStats, predict, project, update
    from twin.series import Series, load_series
    from twin.site import BlockForecast, SiteForecast, SiteTwin, TwinConfig, site_model
    from twin.site_service import (
        HttpPublisher,
        SiteTwinService,
        TelemetryFileSource,
        telemetry_source,
    )
    from twin.ssm import BlockSpec, StateSpaceModel, discretise
    from twin.state import AbstractSiteState, Forecast, SiteStatus, SiteView, static_view
    from twin.telemetry import (
        LocalProbe,
        ReplaySource,
        TelemetrySample,
        TelemetrySource,
        read_telemetry,
        replay,
    )

if not TYPE_CHECKING:  # mypy reads the imports above; at run time they load on first use
    __getattr__, __dir__ = lazy_exports(__name__, __file__)

__all__ = [
    "AbstractSiteState",
    "BacktestResult",
    "BatchKalman",
    "BlockForecast",
    "BlockSpec",
    "DisclosurePolicy",
    "FederationTwin",
    "FitResult",
    "FleetTwin",
    "Forecast",
    "HttpPublisher",
    "IngestReport",
    "InvalidTelemetry",
    "LeadBlender",
    "LeadCalibrator",
    "LocalProbe",
    "ModelError",
    "ReplaySource",
    "Series",
    "SiteFit",
    "SiteForecast",
    "SiteStatus",
    "SiteTwin",
    "SiteTwinService",
    "SiteView",
    "StateSpaceModel",
    "TelemetryFileSource",
    "TelemetrySample",
    "TelemetrySource",
    "TwinConfig",
    "TwinError",
    "UpdateStats",
    "backtest",
    "default_spec",
    "disclose",
    "discretise",
    "filter_series",
    "fit_block",
    "fit_sites",
    "load_series",
    "predict",
    "project",
    "read_telemetry",
    "replay",
    "rts_smooth",
    "series_loglik",
    "site_model",
    "static_view",
    "telemetry_source",
    "update",
]
