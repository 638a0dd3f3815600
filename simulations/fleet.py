"""Telemetry of thousands of simulated sites into the real ``twin.FleetTwin``.

With ``scenario.twin_mode: fleet`` every site's telemetry goes into one
``FleetTwin`` (one batched Kalman predict/update per telemetry tick over the
whole federation, the twin's vectorised anomaly test) instead of one
``SiteTwin`` per site: what makes a twin-driven broker affordable at 1,000
sites. All sites share the block structure and parameters of the first
site's model (``twin.site_model``), so the mode suits federations of alike
sites. The view handed to the broker and the planners is the usual
``AbstractSiteState`` per site, built from the fleet's one-slot forecast:

    expected_wait = max(backlog_mean, 0) / cores                    [s]
    available_cores = cores * (1 - clip(utilisation_mean, 0, 1))    (std: cores * utilisation_std)

and the power price and carbon forecasts as they are; a site whose last
sample said it was down is reported down (as ``FederationTwin`` does with a
sample's ``up`` flag).
"""

from __future__ import annotations

import math
from collections.abc import Collection
from typing import TYPE_CHECKING

import numpy as np

from twin import AbstractSiteState, FleetTwin, Forecast, SiteStatus, site_model

if TYPE_CHECKING:
    from simulations.agents import SiteAgent


class FleetTelemetry:
    """The sites known at the start, filtered together by a ``FleetTwin``."""

    def __init__(self, agents: list[SiteAgent]) -> None:
        self.agents = list(agents)
        blocks = site_model(self.agents[0].site, {}).blocks
        self.fleet = FleetTwin(blocks, [a.site.id for a in self.agents])
        self.columns = list(self.fleet.model.observations)
        self._up = np.ones(len(self.agents), dtype=bool)

    def tick(self, stamp: float) -> None:
        """One telemetry tick at unix time ``stamp`` (missing values are NaN, masked)."""
        z = np.full((len(self.agents), len(self.columns)), np.nan)
        for i, a in enumerate(self.agents):
            obs = a.observations()
            self._up[i] = not a.down
            for j, name in enumerate(self.columns):
                v = obs.get(name)
                if v is not None:
                    z[i, j] = v
        self.fleet.step(stamp, z)

    def down(self) -> set[str]:
        """The sites whose last sample said they were down (the fleet's DOWN verdicts)."""
        return {a.site.id for a, up in zip(self.agents, self._up, strict=True) if not up}

    def view(
        self, stamp: float, slot_seconds: float = 3600.0, sites: Collection[str] | None = None
    ) -> dict[str, AbstractSiteState]:
        """Each site's abstracted state from the fleet's one-slot forecast (see the module doc);
        only ``sites``' when given."""
        if self.fleet.t is None:
            return {}
        means, stds = self.fleet.forecast(1, slot_seconds)
        statuses = self.fleet.statuses()
        p = self.fleet.window_p()
        col = {name: j for j, name in enumerate(self.columns)}
        alpha_down = self.fleet.config.alpha_down
        out: dict[str, AbstractSiteState] = {}
        for i, a in enumerate(self.agents):
            if sites is not None and a.site.id not in sites:
                continue
            cores = a.site.cores
            util = min(max(float(means[0, i, col["utilisation"]]), 0.0), 1.0)
            util_std = float(stds[0, i, col["utilisation"]])
            backlog = max(float(means[0, i, col["backlog"]]), 0.0)
            status = statuses[i] if self._up[i] else SiteStatus.DOWN
            health = 1.0 - min(1.0, math.log10(max(float(p[i]), 1e-300)) / math.log10(alpha_down))
            out[a.site.id] = AbstractSiteState(
                site_id=a.site.id,
                issued_at=stamp,
                slot_seconds=slot_seconds,
                available_cores=Forecast(mean=(cores * (1.0 - util),), std=(cores * util_std,)),
                expected_wait_s=backlog / cores,
                power_price=_one(means, stds, i, col["power_price"]),
                carbon_intensity=Forecast(
                    mean=(max(float(means[0, i, col["carbon_intensity"]]), 0.0),),
                    std=(float(stds[0, i, col["carbon_intensity"]]),),
                ),
                health=0.0 if status is SiteStatus.DOWN else max(health, 0.0),
                status=status,
            )
        return out


def _one(means: np.ndarray, stds: np.ndarray, i: int, j: int) -> Forecast:
    return Forecast(mean=(float(means[0, i, j]),), std=(float(stds[0, i, j]),))
