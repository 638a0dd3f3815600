"""Continuous-time structural state-space models, discretised exactly for any interval.

A model is a stack of independent *blocks*, one per observed metric. Each
block is a linear stochastic differential equation ``dx = F x dt + dW`` with
diffusion intensity ``Qc`` (``E[dW dW^T] = Qc dt``) and one observation
``y = h^T x + v``, ``v ~ N(0, r)``. Over an interval ``dt`` (irregular sampling
is the rule, not the exception) the discrete model is::

    x_k = A(dt) x_{k-1} + B u_k + w_k,   w_k ~ N(0, Q(dt))
    y_k = C x_k + v_k,                   v_k ~ N(0, R)

with ``A(dt) = expm(F dt)`` and ``Q(dt) = int_0^dt expm(F s) Qc expm(F s)^T ds``,
both computed at once by Van Loan's method (``discretise``): never assumed
constant.

Block kinds (``BlockSpec.kind``):

``structural`` (prices, carbon intensity, utilisation, link throughput)
    ``level`` (random walk, intensity ``q_level``), optionally ``trend``
    (``d level = trend dt``, ``d trend = -trend / tau_trend dt + dW``: a damped
    trend), optionally a transient ``ar`` (Ornstein-Uhlenbeck,
    ``d ar = -ar / tau_ar dt + dW``: short-lived departures from the level),
    and seasonal harmonics: for a period ``T`` and harmonic ``j``, a pair
    ``(c_j, s_j)`` rotating at ``w_j = 2 pi j / T``
    (``d c = w s dt + dW``, ``d s = -w c dt + dW``; Harvey's trigonometric
    seasonal in continuous time). The observation is
    ``level + ar + sum_j c_j`` (daily and weekly pairs).
``queue`` (the batch queue's backlog)
    ``backlog`` ``b`` (core-seconds waiting) and ``inflow`` ``beta`` (core-seconds
    per second of background submissions): ``db = (beta - b / tau_drain) dt``
    (the queue drains with time constant ``tau_drain``), ``d beta = dW``. The
    steady state is ``b = tau_drain * beta``. The observation is ``b``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np
from scipy.linalg import expm

from twin.errors import ModelError
from twin.kalman import Array

DAY = 86_400.0
WEEK = 7 * DAY

BlockKind = Literal["structural", "queue"]


@dataclass(frozen=True)
class BlockSpec:
    """The structure and parameters of one block (one observed metric).

    Intensities ``q_*`` are per second (variance added per second of elapsed
    time); time constants ``tau_*`` are seconds; ``r`` is the observation noise
    variance; ``scale`` is the metric's typical magnitude, used for the
    initial (diffuse) covariance.
    """

    name: str
    kind: BlockKind = "structural"
    trend: bool = False
    ar: bool = False
    daily: int = 0
    weekly: int = 0
    slow: bool = False
    q_level: float = 1e-8
    q_trend: float = 1e-14
    tau_trend: float = 6 * 3600.0
    q_ar: float = 1e-6
    tau_ar: float = 6 * 3600.0
    q_slow: float = 1e-6
    tau_slow: float = 3 * DAY
    q_season: float = 1e-10
    q_week: float = 1e-10
    q_inflow: float = 1e-6
    tau_drain: float = 3600.0
    r: float = 1e-4
    scale: float = 1.0
    lower: float | None = None
    upper: float | None = None

    def state_names(self) -> list[str]:
        """Names of this block's state components, in order."""
        if self.kind == "queue":
            return [f"{self.name}.backlog", f"{self.name}.inflow"]
        names = [f"{self.name}.level"]
        if self.trend:
            names.append(f"{self.name}.trend")
        if self.ar:
            names.append(f"{self.name}.ar")
        if self.slow:
            names.append(f"{self.name}.slow")
        for j in range(1, self.daily + 1):
            names += [f"{self.name}.day{j}.c", f"{self.name}.day{j}.s"]
        for j in range(1, self.weekly + 1):
            names += [f"{self.name}.week{j}.c", f"{self.name}.week{j}.s"]
        return names

    @property
    def dim(self) -> int:
        return len(self.state_names())

    def continuous(self) -> tuple[Array, Array, Array]:
        """``(F, Qc, h)``: drift, diffusion intensity and observation row of the block."""
        k = self.dim
        F = np.zeros((k, k))
        Qc = np.zeros((k, k))
        h = np.zeros(k)
        if self.kind == "queue":
            F[0, 0] = -1.0 / self.tau_drain  # db = (beta - b / tau) dt
            F[0, 1] = 1.0
            Qc[0, 0] = self.q_level
            Qc[1, 1] = self.q_inflow  # d beta = dW
            h[0] = 1.0
            return F, Qc, h
        i = 0
        Qc[0, 0] = self.q_level  # d level = trend dt + dW
        h[0] = 1.0
        i = 1
        if self.trend:
            F[0, i] = 1.0
            F[i, i] = -1.0 / self.tau_trend  # d trend = -trend / tau dt + dW
            Qc[i, i] = self.q_trend
            i += 1
        if self.ar:
            F[i, i] = -1.0 / self.tau_ar  # d ar = -ar / tau dt + dW
            Qc[i, i] = self.q_ar
            h[i] = 1.0
            i += 1
        if self.slow:
            F[i, i] = -1.0 / self.tau_slow  # d slow = -slow / tau_slow dt + dW
            Qc[i, i] = self.q_slow
            h[i] = 1.0
            i += 1
        for period, count, q in (
            (DAY, self.daily, self.q_season),
            (WEEK, self.weekly, self.q_week),
        ):
            for j in range(1, count + 1):
                w = 2.0 * math.pi * j / period
                F[i, i + 1] = w  # d c = w s dt + dW
                F[i + 1, i] = -w  # d s = -w c dt + dW
                Qc[i, i] = Qc[i + 1, i + 1] = q
                h[i] = 1.0
                i += 2
        return F, Qc, h

    def initial(self, y0: float | None) -> tuple[Array, Array]:
        """A diffuse prior: the level at the first observation (or 0), wide variances."""
        k = self.dim
        x0 = np.zeros(k)
        if y0 is not None and math.isfinite(y0):
            x0[0] = y0
        var = np.full(k, (self.scale * 0.5) ** 2)
        var[0] = self.scale**2
        if self.kind == "queue":
            var[1] = (self.scale / self.tau_drain) ** 2
        elif self.trend:
            var[1] = (self.scale / DAY) ** 2
        return x0, np.diag(var)


def discretise(F: Array, Qc: Array, dt: float) -> tuple[Array, Array]:
    """``(A, Q)`` of ``dx = F x dt + dW`` over ``dt`` seconds (Van Loan, 1978).

    ``expm([[-F, Qc], [0, F^T]] d) = [[., M12], [0, M22]]`` gives
    ``A(d) = M22^T`` and ``Q(d) = A(d) M12``. The block ``-F`` grows like
    ``exp(d / tau)`` for a decaying mode, so the step is first halved ``s`` times
    until ``||F|| d <= 1`` and then doubled back exactly::

        A(2d) = A(d)^2,   Q(2d) = A(d) Q(d) A(d)^T + Q(d)

    (scaling and squaring; a week-long gap with a 30-minute time constant
    stays accurate instead of overflowing).
    """
    if not (dt > 0 and math.isfinite(dt)):
        raise ModelError(f"a time step must be > 0 seconds, got {dt}")
    n = F.shape[0]
    norm = float(np.abs(F).sum(axis=1).max()) if n else 0.0
    s = max(0, math.ceil(math.log2(norm * dt))) if norm * dt > 1.0 else 0
    d = dt / 2**s
    M = np.zeros((2 * n, 2 * n))
    M[:n, :n] = -F
    M[:n, n:] = Qc
    M[n:, n:] = F.T
    E = expm(M * d)
    A = E[n:, n:].T
    Q = A @ E[:n, n:]
    for _ in range(s):
        Q = A @ Q @ A.T + Q
        A = A @ A
    return A, 0.5 * (Q + Q.T)


_TRANSITIONS: dict[bytes, dict[float, tuple[Array, Array]]] = {}
"""``(A, Q)`` per interval, per distinct ``(F, Qc)``: shared by every model with the same
drift and diffusion (the sites of a federation with the same blocks, a twin rebuilt from
its parameters), since each new interval costs a matrix exponential."""


def _transitions(F: Array, Qc: Array) -> dict[float, tuple[Array, Array]]:
    key = F.tobytes() + Qc.tobytes()
    hit = _TRANSITIONS.get(key)
    if hit is None:
        if len(_TRANSITIONS) >= 256:
            del _TRANSITIONS[next(iter(_TRANSITIONS))]  # the oldest model's
        hit = _TRANSITIONS[key] = {}
    return hit


@dataclass
class StateSpaceModel:
    """A stack of independent blocks, with controls entering through ``B``.

    ``controls`` names the control inputs ``u``; ``B`` has one row per state.
    ``transition(dt)`` caches ``(A, Q)`` per distinct interval, shared with every
    model of the same ``F`` and ``Qc`` (the arrays are read-only).
    """

    blocks: tuple[BlockSpec, ...]
    controls: tuple[str, ...] = ()
    B: Array = field(default_factory=lambda: np.zeros((0, 0)))
    _cache: dict[float, tuple[Array, Array]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        names = [b.name for b in self.blocks]
        if len(set(names)) != len(names):
            raise ModelError(f"block names must be unique, got {names}")
        F_parts, Q_parts = [], []
        self.state_names: list[str] = []
        self.offsets: dict[str, int] = {}
        for b in self.blocks:
            F, Qc, _ = b.continuous()
            self.offsets[b.name] = len(self.state_names)
            self.state_names += b.state_names()
            F_parts.append(F)
            Q_parts.append(Qc)
        n = len(self.state_names)
        self.F = _block_diag(F_parts, n)
        self.Qc = _block_diag(Q_parts, n)
        self.H = np.zeros((len(self.blocks), n))
        for i, b in enumerate(self.blocks):
            _, _, h = b.continuous()
            o = self.offsets[b.name]
            self.H[i, o : o + b.dim] = h
        self.R = np.diag([b.r for b in self.blocks])
        self._cache = _transitions(self.F, self.Qc)
        if self.B.size == 0:
            self.B = np.zeros((n, len(self.controls)))
        if self.B.shape != (n, len(self.controls)):
            raise ModelError(f"B must be ({n}, {len(self.controls)}), got {self.B.shape}")

    @property
    def dim(self) -> int:
        return len(self.state_names)

    @property
    def observations(self) -> list[str]:
        return [b.name for b in self.blocks]

    def block(self, name: str) -> BlockSpec:
        for b in self.blocks:
            if b.name == name:
                return b
        raise KeyError(f"no block {name!r}; blocks: {', '.join(self.observations)}")

    def index(self, state: str) -> int:
        """Position of a named state component (``"price.level"``)."""
        return self.state_names.index(state)

    def transition(self, dt: float) -> tuple[Array, Array]:
        """``(A(dt), Q(dt))``, discretised exactly (cached per interval)."""
        key = round(float(dt), 6)
        hit = self._cache.get(key)
        if hit is None:
            if len(self._cache) > 4096:
                self._cache.clear()
            A, Q = discretise(self.F, self.Qc, key)
            A.setflags(write=False)  # shared: never changed in place
            Q.setflags(write=False)
            hit = self._cache[key] = (A, Q)
        return hit

    def initial(self, first: dict[str, float] | None = None) -> tuple[Array, Array]:
        """Diffuse initial mean and covariance (levels at the first observations)."""
        xs, Ps = [], []
        for b in self.blocks:
            x0, P0 = b.initial((first or {}).get(b.name))
            xs.append(x0)
            Ps.append(P0)
        return np.concatenate(xs), _block_diag(Ps, self.dim)

    def constraints(self) -> tuple[Array, Array, Array]:
        """``(D, lower, upper)``: bounds on each block's observed value ``h^T x``."""
        rows, lo, hi = [], [], []
        for i, b in enumerate(self.blocks):
            if b.lower is None and b.upper is None:
                continue
            rows.append(self.H[i])
            lo.append(-math.inf if b.lower is None else b.lower)
            hi.append(math.inf if b.upper is None else b.upper)
        if not rows:
            return np.zeros((0, self.dim)), np.zeros(0), np.zeros(0)
        return np.array(rows), np.array(lo), np.array(hi)

    def with_blocks(self, blocks: tuple[BlockSpec, ...]) -> StateSpaceModel:
        """The same structure and controls with new block parameters."""
        return StateSpaceModel(blocks, self.controls, self.B.copy())


def _block_diag(parts: list[Array], n: int) -> Array:
    out = np.zeros((n, n))
    i = 0
    for p in parts:
        k = p.shape[0]
        out[i : i + k, i : i + k] = p
        i += k
    return out


def replace_params(spec: BlockSpec, **params: float) -> BlockSpec:
    """``spec`` with some parameters changed."""
    return replace(spec, **params)  # type: ignore[arg-type]


__all__ = ["DAY", "WEEK", "BlockSpec", "StateSpaceModel", "discretise", "replace_params"]
