"""Calibrated forecast spread: the model's standard deviation rescaled per lead, online.

A state-space model's ``h``-step variance ``g_h P g_h^T + h S_h h^T + r`` is right
only when the model is: on real series the noise changes with the season (a
calm summer, a volatile winter) and the errors have heavier tails than a
Gaussian. ``LeadCalibrator`` keeps, for each lead, online estimates of the 80 %
and 95 % quantiles of the past standardised errors ``|z| = |y - mean| / sd``
(each error is known ``h`` hours after its forecast was issued, so only the
past is used), and publishes ``sd * c_h`` with::

    c_h = w q80_h / 1.2816 + (1 - w) q95_h / 1.9600

Each of the two factors makes its own interval exact; with heavy tails they
differ and no single spread makes both exact. The weight ``w`` balances the
two coverage errors: a relative change ``e`` of the spread moves the coverage
of the ``z`` interval by about ``2 phi(z) z e`` (``phi`` the normal density),
so with ``w = a80 / (a80 + a95)``, ``a = 2 phi(z) z``, a spread between the two
factors misses both levels by the same number of points (``w = 0.66``: the
80 % interval, whose coverage moves three times faster, weighs more).
The quantiles follow the stochastic-approximation rule in log space::

    q <- q * exp( gain * (1{|z| > q} - (1 - level)) )

so ``q`` settles where a fraction ``1 - level`` of errors exceeds it, and
forgets with a half-life of ``half_life`` errors. The forecast means are
untouched: calibration changes only the published spread.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from twin.errors import ModelError
from twin.kalman import Array

Z80 = 1.2815515655446004  # standard normal quantile at 0.90: the 80 % central interval
Z95 = 1.959963984540054  # ... at 0.975: the 95 % central interval


def _coverage_slope(z: float) -> float:
    """``2 phi(z) z``: the change of the ``z`` interval's coverage per relative spread change."""
    return 2.0 * math.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi) * z


W80 = _coverage_slope(Z80) / (_coverage_slope(Z80) + _coverage_slope(Z95))
"""Weight of the 80 % factor in the published spread factor (about 0.66)."""


class LeadCalibrator:
    """Per-lead spread factors learned online from standardised forecast errors.

    Args:
        leads: number of leads (forecast slots) calibrated.
        half_life: errors after which an old error weighs half (default a week of hours).
    """

    def __init__(self, leads: int, half_life: float = 168.0) -> None:
        if leads < 1:
            raise ModelError(f"leads must be >= 1, got {leads}")
        if not half_life > 0:
            raise ModelError(f"half_life must be > 0, got {half_life}")
        self.leads = leads
        self.half_life = float(half_life)
        self.q80 = np.full(leads, Z80)
        self.q95 = np.full(leads, Z95)
        self.seen = np.zeros(leads, dtype=np.int64)

    @property
    def rate(self) -> float:
        """``1 - 2^(-1 / half_life)``: the weight of each new error."""
        return float(1.0 - 0.5 ** (1.0 / self.half_life))

    def update(self, lead: int, z: float) -> None:
        """Learn from one standardised error ``z = (y - mean) / sd`` at ``lead`` (0-based)."""
        if not math.isfinite(z):
            return
        a = abs(z)
        g = self.rate
        # q <- q exp(gain (1{|z| > q} - (1 - level))): the gain is scaled by 1 / (1 - level)
        # so that both quantiles forget at the same speed.
        self.q80[lead] *= math.exp(g * 5.0 * ((a > self.q80[lead]) - 0.20))
        self.q95[lead] *= math.exp(g * 20.0 * ((a > self.q95[lead]) - 0.05))
        self.seen[lead] += 1

    def update_many(self, lead: int, z: Array) -> None:
        """``update`` for each finite value of ``z`` in order."""
        for v in np.asarray(z, dtype=np.float64):
            self.update(lead, float(v))

    def factor(self, lead: int | None = None) -> Array:
        """The spread factor ``c_h`` of one lead (or of every lead when ``lead`` is None)."""
        c = W80 * self.q80 / Z80 + (1.0 - W80) * self.q95 / Z95
        return c if lead is None else c[lead : lead + 1]

    def to_state(self) -> dict[str, Any]:
        return {
            "half_life": self.half_life,
            "q80": self.q80.tolist(),
            "q95": self.q95.tolist(),
            "seen": self.seen.tolist(),
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> LeadCalibrator:
        q80 = np.array(state["q80"], dtype=np.float64)
        cal = cls(len(q80), float(state.get("half_life", 168.0)))
        cal.q80 = q80
        cal.q95 = np.array(state["q95"], dtype=np.float64)
        cal.seen = np.array(state.get("seen", [0] * len(q80)), dtype=np.int64)
        return cal


def coverage(errors: Array, sd: Array, z: float) -> Array:
    """Per column: the fraction of finite ``errors`` with ``|e| <= z * sd``."""
    ok = np.isfinite(errors) & np.isfinite(sd)
    inside = (np.abs(errors) <= z * sd) & ok
    n = ok.sum(axis=0)
    out: Array = np.where(n > 0, inside.sum(axis=0) / np.maximum(n, 1), np.nan)
    return out


__all__ = ["W80", "Z80", "Z95", "LeadCalibrator", "coverage"]
