"""What leaves a twin: the abstracted state of a site.

``AbstractSiteState`` carries forecasts with uncertainty per horizon slot,
an expected queue wait and a health verdict; never raw telemetry, job ids,
user names or node names. The orchestrator plans on a *view*: a mapping from
site id to its ``AbstractSiteState``.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from federation.model import Federation, Site


class SiteStatus(StrEnum):
    """Health verdict of a twin about its site (what the orchestrator re-plans on)."""

    OK = "ok"
    DEGRADED = "degraded"
    DOWN = "down"
    STALE = "stale"


class Forecast(BaseModel):
    """A forecast over the horizon: mean and standard deviation per slot."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    mean: tuple[float, ...]
    std: tuple[float, ...]

    @model_validator(mode="after")
    def _check(self) -> Self:
        if len(self.mean) != len(self.std):
            raise ValueError(f"mean has {len(self.mean)} slots but std has {len(self.std)}")
        if any(s < 0 for s in self.std):
            raise ValueError("a standard deviation must be >= 0")
        return self

    @classmethod
    def constant(cls, value: float, slots: int, std: float = 0.0) -> Forecast:
        return cls(mean=(float(value),) * slots, std=(float(std),) * slots)

    def __len__(self) -> int:
        return len(self.mean)

    def lower(self, z: float) -> tuple[float, ...]:
        """``mean - z * std`` per slot (a safety margin of ``z`` standard deviations)."""
        return tuple(m - z * s for m, s in zip(self.mean, self.std, strict=True))

    def upper(self, z: float) -> tuple[float, ...]:
        return tuple(m + z * s for m, s in zip(self.mean, self.std, strict=True))


class AbstractSiteState(BaseModel):
    """The abstracted, shareable state of one site.

    Slot ``k`` covers ``[issued_at + k * slot_seconds, issued_at + (k+1) * slot_seconds)``.
    ``power_price`` (EUR/kWh) and ``carbon_intensity`` (gCO2e/kWh) may be
    ``None`` when the site's disclosure policy withholds them; planners then
    fall back to the site's nominal figures.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    site_id: str
    issued_at: float = Field(default=0.0, description="unix time (s) of the start of slot 0")
    slot_seconds: float = Field(default=3600.0, gt=0)
    available_cores: Forecast
    expected_wait_s: float = Field(default=0.0, ge=0)
    power_price: Forecast | None = None
    carbon_intensity: Forecast | None = None
    health: float = Field(default=1.0, ge=0.0, le=1.0)
    status: SiteStatus = SiteStatus.OK

    @property
    def horizon(self) -> int:
        """Number of slots forecast."""
        return len(self.available_cores)

    @classmethod
    def static(
        cls,
        site: Site,
        horizon: int = 48,
        slot_seconds: float = 3600.0,
        issued_at: float = 0.0,
    ) -> AbstractSiteState:
        """A state built from the site's static figures (no telemetry): all cores free,
        nominal power price and carbon intensity (no forecast where the figure is unknown),
        no uncertainty."""
        return cls(
            site_id=site.id,
            issued_at=issued_at,
            slot_seconds=slot_seconds,
            available_cores=Forecast.constant(site.cores, horizon),
            power_price=_constant_or_none(site.energy_price_eur_per_kwh, horizon),
            carbon_intensity=_constant_or_none(site.carbon_intensity_g_per_kwh, horizon),
        )


def _constant_or_none(value: float | None, slots: int) -> Forecast | None:
    return None if value is None else Forecast.constant(value, slots)


SiteView = Mapping[str, AbstractSiteState]
"""What a planner sees of the federation: site id -> abstracted state."""


def static_view(
    federation: Federation, horizon: int = 48, slot_seconds: float = 3600.0, issued_at: float = 0.0
) -> dict[str, AbstractSiteState]:
    """A view of every site from its static figures (before any telemetry arrives)."""
    return {
        s.id: AbstractSiteState.static(s, horizon, slot_seconds, issued_at)
        for s in federation.sites
    }
