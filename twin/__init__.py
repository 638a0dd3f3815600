"""Digital twin of each site: telemetry in, a Kalman state-space estimate, an abstracted state out.

Only ``AbstractSiteState`` (forecasts with uncertainty, a health score) ever
leaves a twin; raw telemetry, job ids, user names and node names never do.
"""

__all__: list[str] = []
