"""Twins of many sites at once: one block structure, one batched filter call per tick.

``FleetTwin`` is for large federations and for simulations with thousands
of simulated sites. Every site has the same blocks (the same
``StateSpaceModel``), and all of them report on a common clock. Each tick is
one ``BatchKalman`` predict and update over the whole fleet, with masks for
sites or metrics that did not report. While no site is missing anything, the
fleet stays on the shared-covariance path (one covariance for every site).
The anomaly test is the same as ``SiteTwin``'s, vectorised: a trimmed NIS
window, tested against a chi-square distribution and confirmed over
consecutive windows.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray
from scipy.special import chdtrc  # chi-square survival function, a plain ufunc

from twin.errors import ModelError
from twin.kalman import Array, BatchKalman
from twin.site import TwinConfig
from twin.ssm import BlockSpec, StateSpaceModel
from twin.state import SiteStatus

STATUS_CODES = (SiteStatus.OK, SiteStatus.DEGRADED, SiteStatus.DOWN)


class FleetTwin:
    """``N`` sites with identical blocks, filtered together.

    Args:
        blocks: the block structure and parameters every site shares.
        site_ids: one id per site (row order of every array).
        first: optional ``(N, m)`` first observations (nan = unknown) to centre
            the diffuse prior on; otherwise the levels start at 0.
        config: anomaly thresholds (``nis_window``, ``trim``, ``confirm``, alphas).
    """

    def __init__(
        self,
        blocks: Sequence[BlockSpec],
        site_ids: Sequence[str],
        first: Array | None = None,
        config: TwinConfig | None = None,
    ) -> None:
        self.model = StateSpaceModel(tuple(blocks))
        self.site_ids = list(site_ids)
        self.config = config or TwinConfig()
        N, m = len(self.site_ids), len(self.model.observations)
        if N == 0:
            raise ModelError("a fleet needs at least one site")
        x0, P0 = self.model.initial()
        X = np.tile(x0, (N, 1))
        if first is not None:
            f = np.asarray(first, dtype=np.float64)
            if f.shape != (N, m):
                raise ModelError(f"first must be ({N}, {m}), got {f.shape}")
            for j, b in enumerate(self.model.blocks):
                o = self.model.offsets[b.name]
                X[:, o] = np.where(np.isfinite(f[:, j]), f[:, j], 0.0)
        self.kf = BatchKalman(X, P0)  # one P0 for all: the shared path applies
        self.t: float | None = None
        W = self.config.nis_window
        self._nis = np.zeros((N, W))
        self._dof = np.zeros((N, W), dtype=np.int64)
        self._recent = np.ones((N, self.config.confirm))
        self._ticks = 0
        self._D, self._lo, self._hi = self.model.constraints()

    @property
    def size(self) -> int:
        return len(self.site_ids)

    @property
    def shared(self) -> bool:
        """Whether the fleet is still on the shared-covariance path."""
        return self.kf.shared

    def step(self, t: float, z: Array) -> None:
        """Advance to time ``t`` and apply observations ``z`` ``(N, m)`` (nan = missing)."""
        z = np.asarray(z, dtype=np.float64)
        if z.shape != (self.size, len(self.model.observations)):
            raise ModelError(
                f"z must be ({self.size}, {len(self.model.observations)}): one row per site, "
                f"columns {self.model.observations}; got {z.shape}"
            )
        if self.t is not None:
            if t <= self.t:
                raise ModelError(f"tick at {t} is not after the last one ({self.t})")
            A, Q = self.model.transition(t - self.t)
            self.kf.predict(A, Q)  # x = A x, P = A P A^T + Q for every site
        mask = np.isfinite(z)
        st = self.kf.update(np.where(mask, z, 0.0), self.model.H, self.model.R, mask, stats=True)
        self._project()
        if st is not None and self.t is not None:
            k = self._ticks % self.config.nis_window
            self._nis[:, k] = st.nis
            self._dof[:, k] = st.dof
            self._ticks += 1
            self._recent[:, (self._ticks - 1) % self.config.confirm] = self.window_p()
        self.t = float(t)

    def _project(self) -> None:
        """Bounds on each block's observed value, one constraint at a time (vectorised).

        For a violated bound ``d`` of row ``D_i``:
        ``x = x - P D_i^T (D_i x - d) / (D_i P D_i^T)`` (Simon and Chia's
        projection with one active constraint; with several, applied in turn).
        """
        if not len(self._D):
            return
        x = self.kf.x
        P = self.kf.P
        for i, Di in enumerate(self._D):
            v = x @ Di
            target = np.clip(v, self._lo[i], self._hi[i])
            viol = v - target
            if not viol.any():
                continue
            if P.ndim == 2:
                PD = P @ Di
                x = x - np.outer(viol / float(Di @ PD), PD)
            else:
                PD = P @ Di  # (N, n)
                x = x - (viol / (PD @ Di))[:, None] * PD
        self.kf.x = x

    def window_p(self) -> NDArray[np.float64]:
        """Per site: p-value of the trimmed chi-square test on the NIS window."""
        filled = min(self._ticks, self.config.nis_window)
        if filled == 0:
            return np.ones(self.size)
        nis = self._nis[:, :filled]
        dof = self._dof[:, :filled]
        ratio = np.where(dof > 0, nis / np.maximum(dof, 1), -np.inf)
        order = np.argsort(ratio, axis=1)
        keep = order[:, : max(filled - self.config.trim, 0)]
        stat = np.take_along_axis(nis, keep, axis=1).sum(axis=1)
        d = np.take_along_axis(dof, keep, axis=1).sum(axis=1)
        return np.where(d > 0, chdtrc(np.maximum(d, 1), stat), 1.0)

    def statuses(self) -> list[SiteStatus]:
        """Each site's verdict (ok or degraded) from the last ``confirm`` window tests.

        As for a single site's twin, the innovation test alone flags a site
        degraded, never down (down is what a site says of itself).
        """
        p = self._recent.max(axis=1)
        code = np.where(p < self.config.alpha_degraded, 1, 0)
        return [STATUS_CODES[c] for c in code]

    def forecast(self, horizon: int, slot_seconds: float = 3600.0) -> tuple[Array, Array]:
        """Mean and std ``(horizon, N, m)`` of every observed metric at each slot's middle."""
        if self.t is None:
            raise ModelError("the fleet has no estimate yet: call step() first")
        x, P = self.kf.x, self.kf.P
        Hm, r = self.model.H, np.diag(self.model.R)
        means = np.empty((horizon, self.size, len(r)))
        stds = np.empty_like(means)
        for k in range(horizon):
            A, Q = self.model.transition(0.5 * slot_seconds if k == 0 else slot_seconds)
            x = x @ A.T
            P = A @ P @ np.swapaxes(A, -1, -2) + Q
            means[k] = x @ Hm.T
            var = np.einsum("ij,...jk,ik->...i", Hm, P, Hm) + r
            stds[k] = np.sqrt(np.maximum(var, 0.0))
        return means, stds


__all__ = ["FleetTwin"]
