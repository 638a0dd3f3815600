"""Disclosure control: the only way a twin's knowledge leaves it.

``disclose`` builds an ``AbstractSiteState`` field by field from an explicit
allow list: nothing else of the twin (its state vector, raw samples, the
``private`` part of telemetry) has a path out. A site's ``DisclosurePolicy``
may withhold fields (its price, its carbon intensity, its queue wait) and
quantise the rest (round to a multiple of a quantum, so that exact figures
cannot be read back).

A site sets its policy in its labels in the federation file::

    labels:
      disclose.withhold: power_price,carbon_intensity
      disclose.quantum.available_cores: "8"
      disclose.quantum.power_price: "0.01"
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field, field_validator

from federation.model import Site
from twin.errors import ModelError
from twin.site import SiteForecast
from twin.state import AbstractSiteState, Forecast, SiteStatus

DISCLOSED = (
    "available_cores",
    "carbon_intensity",
    "expected_wait_s",
    "health",
    "power_price",
    "status",
)
"""The fields of ``AbstractSiteState`` a twin may fill (besides site id and timing)."""

WITHHOLDABLE = frozenset({"carbon_intensity", "expected_wait_s", "power_price"})
"""Fields a site may withhold; planners fall back to the site's nominal figures."""

QUANTISABLE = frozenset(
    {"available_cores", "carbon_intensity", "expected_wait_s", "health", "power_price"}
)


class DisclosurePolicy(BaseModel):
    """What a site lets its twin disclose."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    withhold: frozenset[str] = Field(default_factory=frozenset)
    quantum: dict[str, float] = Field(default_factory=dict)

    @field_validator("withhold")
    @classmethod
    def _withhold(cls, v: frozenset[str]) -> frozenset[str]:
        bad = sorted(v - WITHHOLDABLE)
        if bad:
            raise ValueError(
                f"cannot withhold {', '.join(bad)}: only {', '.join(sorted(WITHHOLDABLE))} may "
                "be withheld (planners need the rest; quantise them instead)"
            )
        return v

    @field_validator("quantum")
    @classmethod
    def _quantum(cls, v: dict[str, float]) -> dict[str, float]:
        for k, q in v.items():
            if k not in QUANTISABLE:
                raise ValueError(
                    f"cannot quantise {k!r}; quantisable: {', '.join(sorted(QUANTISABLE))}"
                )
            if not (math.isfinite(q) and q > 0):
                raise ValueError(f"quantum of {k!r} must be > 0, got {q}")
        return v

    @classmethod
    def from_site(cls, site: Site) -> DisclosurePolicy:
        """The policy declared in the site's labels (``disclose.*``); none: disclose all."""
        labels = site.labels
        withhold = frozenset(
            w.strip() for w in labels.get("disclose.withhold", "").split(",") if w.strip()
        )
        quantum: dict[str, float] = {}
        for key, value in labels.items():
            if key.startswith("disclose.quantum."):
                try:
                    quantum[key.removeprefix("disclose.quantum.")] = float(value)
                except ValueError:
                    raise ModelError(
                        f"site {site.id!r}: label {key} must be a number, got {value!r}"
                    ) from None
        try:
            return cls(withhold=withhold, quantum=quantum)
        except ValueError as exc:
            raise ModelError(f"site {site.id!r}: disclosure labels: {exc}") from None


def _q(value: float, quantum: float | None) -> float:
    """``value`` rounded to the nearest multiple of ``quantum`` (unchanged when None)."""
    if quantum is None:
        return float(value)
    return float(round(value / quantum) * quantum)


def _forecast(mean: tuple[float, ...], std: tuple[float, ...], quantum: float | None) -> Forecast:
    return Forecast(
        mean=tuple(_q(m, quantum) for m in mean),
        std=tuple(abs(_q(s, quantum)) for s in std),
    )


def disclose(
    site: Site,
    forecast: SiteForecast,
    status: SiteStatus,
    health: float,
    policy: DisclosurePolicy | None = None,
) -> AbstractSiteState:
    """The abstracted state of ``site``: built only from the allow-listed quantities.

    * available cores per slot: ``cores * (1 - utilisation)``, std ``cores * sd``;
    * expected wait: the forecast backlog at slot 0 divided by the site's cores
      (the core-seconds queued ahead of a new job, drained by every core);
    * price and carbon forecasts (mean and std per slot), unless withheld;
    * status and health from the innovation test.
    """
    pol = policy or DisclosurePolicy()
    q = pol.quantum.get
    util = forecast.blocks["utilisation"]
    cores = float(site.cores)
    avail_mean = tuple(min(max(cores * (1.0 - u), 0.0), cores) for u in util.mean)
    avail = _forecast(avail_mean, tuple(cores * s for s in util.std), q("available_cores"))
    backlog = forecast.blocks["backlog"].mean[0]
    wait = max(_q(max(backlog, 0.0) / cores, q("expected_wait_s")), 0.0)
    fields: dict[str, object] = {
        "site_id": site.id,
        "issued_at": float(forecast.issued_at),
        "slot_seconds": float(forecast.slot_seconds),
        "available_cores": avail,
        "status": status,
        "health": min(max(_q(health, q("health")), 0.0), 1.0),
    }
    if "expected_wait_s" not in pol.withhold:
        fields["expected_wait_s"] = wait
    for name in ("power_price", "carbon_intensity"):
        block = forecast.blocks.get(name)
        if block is not None and name not in pol.withhold:
            fields[name] = _forecast(block.mean, block.std, q(name))
    return AbstractSiteState.model_validate(fields)


def disclosed_fields(policy: DisclosurePolicy | None) -> tuple[str, ...]:
    """The allow list after a policy's withholdings."""
    pol = policy or DisclosurePolicy()
    return tuple(f for f in DISCLOSED if f not in pol.withhold)


def policies_for(sites: Mapping[str, Site]) -> dict[str, DisclosurePolicy]:
    """Each site's policy from its labels."""
    return {sid: DisclosurePolicy.from_site(s) for sid, s in sites.items()}


__all__ = [
    "DISCLOSED",
    "QUANTISABLE",
    "WITHHOLDABLE",
    "DisclosurePolicy",
    "disclose",
    "disclosed_fields",
    "policies_for",
]
