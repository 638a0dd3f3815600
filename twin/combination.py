"""Forecast combination: the structural model's forecast blended, per lead, with a seasonal one.

The structural block (level, transients, daily and weekly harmonics) forecasts
well at short leads; at long leads it reverts toward its learned daily profile,
and when the profile changes faster than the model adapts (the end of the 2022
price crisis on the Belgian market: the profile's amplitude follows the price
level) "the same hour yesterday" is better. The seasonal random walk
``y_k = y_{k-24} + e_k`` is itself a state-space model (its state: the last
day of observations, ``A`` a cyclic shift), whose ``h``-step forecast is the
value one ``season`` before the target (``ceil(h / season)`` seasons for leads
past a season). The published mean of lead ``h`` is::

    mean_h = w_h * model_h + (1 - w_h) * seasonal_h,
    w_h = s_h^p / (m_h^p + s_h^p)

with ``m_h`` and ``s_h`` the exponentially weighted mean absolute errors of the
two forecasts at that lead (each error known ``h`` slots after its forecast was
issued, so only the past is used; half-life ``half_life`` errors), and ``p``
(``power``) sharpening the weight toward the better one (Bates and Granger's
combination by inverse error, with absolute errors: prices have spikes).
Until ``warmup`` errors of a lead have been seen, the model's forecast is
published unchanged, and so is it where no seasonal value is known. The
combination is linear in the two models' states with weights that change only
as errors arrive, so it stays a (time-varying) linear state-space forecast; the
uncertainty published beside it is calibrated on its own errors
(``twin.calibration``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from twin.errors import ModelError
from twin.kalman import Array


class LeadBlender:
    """Per-lead weights between a model's forecast and the seasonal random walk's, learned online.

    Args:
        leads: number of leads (forecast slots) combined.
        half_life: errors after which an old error weighs half (default a week of hours).
        power: sharpness of the weights (``w = s^p / (m^p + s^p)``).
        warmup: errors of a lead needed before its weight moves from 1 (the model alone).
    """

    def __init__(
        self, leads: int, half_life: float = 168.0, power: float = 4.0, warmup: int = 24
    ) -> None:
        if leads < 1:
            raise ModelError(f"leads must be >= 1, got {leads}")
        if not half_life > 0:
            raise ModelError(f"half_life must be > 0, got {half_life}")
        if not power > 0:
            raise ModelError(f"power must be > 0, got {power}")
        if warmup < 0:
            raise ModelError(f"warmup must be >= 0, got {warmup}")
        self.leads = leads
        self.half_life = float(half_life)
        self.power = float(power)
        self.warmup = int(warmup)
        # bias-corrected exponentially weighted means: sums of weighted errors and of weights
        self.model_sum = np.zeros(leads)
        self.seasonal_sum = np.zeros(leads)
        self.weight_sum = np.zeros(leads)
        self.seen = np.zeros(leads, dtype=np.int64)

    @property
    def decay(self) -> float:
        """``2^(-1 / half_life)``: what an old error keeps of its weight at each new one."""
        return float(0.5 ** (1.0 / self.half_life))

    def update(self, lead: int, model_error: float, seasonal_error: float) -> None:
        """Learn from one target at ``lead`` (0-based): the errors of both forecasts of it."""
        if not (math.isfinite(model_error) and math.isfinite(seasonal_error)):
            return
        d = self.decay
        self.model_sum[lead] = d * self.model_sum[lead] + abs(model_error)
        self.seasonal_sum[lead] = d * self.seasonal_sum[lead] + abs(seasonal_error)
        self.weight_sum[lead] = d * self.weight_sum[lead] + 1.0
        self.seen[lead] += 1

    def weights(self) -> Array:
        """The model's weight ``w_h`` for every lead (1 before the warm-up is over)."""
        w = np.ones(self.leads)
        ready = (self.seen >= max(self.warmup, 1)) & (self.weight_sum > 0)
        if not ready.any():
            return w
        m = self.model_sum[ready] / self.weight_sum[ready]
        s = self.seasonal_sum[ready] / self.weight_sum[ready]
        scale = np.maximum(np.maximum(m, s), np.finfo(np.float64).tiny)
        mp = (m / scale) ** self.power
        sp = (s / scale) ** self.power
        total = mp + sp
        w[ready] = np.where(total > 0, sp / np.where(total > 0, total, 1.0), 0.5)
        return w

    def combine(self, model: Array, seasonal: Array) -> Array:
        """``w * model + (1 - w) * seasonal`` per lead (rows), the model where seasonal is nan.

        ``model`` and ``seasonal`` have the leads on their first axis (at most
        ``leads`` rows; a longer forecast keeps the last lead's weight).
        """
        model = np.asarray(model, dtype=np.float64)
        seasonal = np.asarray(seasonal, dtype=np.float64)
        w = self.weights()
        n = model.shape[0]
        if n > self.leads:
            w = np.concatenate([w, np.full(n - self.leads, w[-1])])
        w = w[:n].reshape((n,) + (1,) * (model.ndim - 1))
        out: Array = np.where(np.isfinite(seasonal), w * model + (1.0 - w) * seasonal, model)
        return out

    def to_state(self) -> dict[str, Any]:
        return {
            "half_life": self.half_life,
            "power": self.power,
            "warmup": self.warmup,
            "model_sum": self.model_sum.tolist(),
            "seasonal_sum": self.seasonal_sum.tolist(),
            "weight_sum": self.weight_sum.tolist(),
            "seen": self.seen.tolist(),
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> LeadBlender:
        sums = np.array(state["model_sum"], dtype=np.float64)
        b = cls(
            len(sums),
            float(state.get("half_life", 168.0)),
            float(state.get("power", 4.0)),
            int(state.get("warmup", 24)),
        )
        b.model_sum = sums
        b.seasonal_sum = np.array(state["seasonal_sum"], dtype=np.float64)
        b.weight_sum = np.array(state["weight_sum"], dtype=np.float64)
        b.seen = np.array(state.get("seen", [0] * len(sums)), dtype=np.int64)
        return b


def seasonal_lag(lead: int, season: int) -> int:
    """Slots back from the target to the seasonal random walk's source: ``season * ceil(h / s)``."""
    return season * math.ceil(lead / season)


__all__ = ["LeadBlender", "seasonal_lag"]
