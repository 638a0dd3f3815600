"""Learning a block's parameters from history, RTS smoothing, and forecast backtests.

Fitting is maximum likelihood: the innovations ``y_k`` of the Kalman filter
with innovation variances ``s_k`` give the exact Gaussian log-likelihood
(prediction-error decomposition, the sum of filterpy's per-step
``log_likelihood``)::

    log L = -1/2 sum_k ( log 2pi + log s_k + y_k^2 / s_k )

maximised over the logarithms of the block's noise intensities, observation
noise and time constants by L-BFGS-B (scipy). The first week of filtering (a
quarter of a shorter series) is a burn-in left out of the sum (the prior is
diffuse). Blocks of a site model are independent with a diagonal ``R``, so a
site's likelihood is the sum of its blocks' and each block is fitted on its own
series (exactly, not as an approximation).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import minimize

from twin.errors import ModelError
from twin.kalman import Array, UpdateStats, predict, update
from twin.ssm import DAY, BlockSpec, StateSpaceModel, replace_params

HOUR = 3600.0


@dataclass
class SeriesFilter:
    """Everything one pass of the filter over a univariate series keeps.

    ``x_prior[k]``/``P_prior[k]`` are the predictions for sample ``k`` (before
    its observation), ``x_post``/``P_post`` the estimates after it, ``A[k]``
    the transition into sample ``k``; ``loglik[k]`` is 0 for a missing sample.
    """

    x_prior: Array
    P_prior: Array
    x_post: Array
    P_post: Array
    A: Array
    loglik: Array
    innovations: Array
    variances: Array


def filter_series(
    spec: BlockSpec,
    times: Array,
    values: Array,
    x0: Array | None = None,
    P0: Array | None = None,
) -> SeriesFilter:
    """Kalman-filter one series (``nan`` = missing) with the block ``spec``."""
    return cast(SeriesFilter, _filter(spec, times, values, x0, P0, keep=True))


def series_loglik(spec: BlockSpec, times: Array, values: Array) -> float:
    """Total log-likelihood of a series after the one-week burn-in (diffuse prior)."""
    return cast(float, _filter(spec, times, values, None, None, keep=False))


def burn_in_end(times: Array) -> float:
    """End of the burn-in left out of the likelihood: a week, or a quarter of a shorter series.

    The prior is diffuse, so the first innovations say more about the prior than
    about the parameters; a week lets the weekly harmonics settle.
    """
    span = float(times[-1] - times[0]) if len(times) else 0.0
    return float(times[0]) + min(7 * DAY, 0.25 * span) if len(times) else 0.0


def batch_loglik(specs: list[BlockSpec], times: Array, values: Array) -> Array:
    """Log-likelihoods of one series under several parameter sets of the same structure.

    The filters run side by side as a batch (``(B, n)`` means, ``(B, n, n)``
    covariances), so a finite-difference gradient costs about one filter pass
    instead of one per parameter. Same equations and burn-in as ``series_loglik``.
    """
    models = [StateSpaceModel((s,)) for s in specs]
    H = models[0].H
    if any(m.dim != H.shape[1] for m in models):
        raise ModelError("batch_loglik needs parameter sets of one structure")
    R = np.array([s.r for s in specs])[:, None, None]
    t = np.asarray(times, dtype=np.float64)
    y = np.asarray(values, dtype=np.float64)
    T = len(y)
    first = y[np.isfinite(y)]
    init = [m.initial({m.blocks[0].name: float(first[0])} if len(first) else None) for m in models]
    x = np.stack([i[0] for i in init])
    P = np.stack([i[1] for i in init])
    dts = np.diff(t, prepend=t[0] - (t[1] - t[0] if T > 1 else HOUR))
    trans: dict[float, tuple[Array, Array]] = {}
    burn_until = burn_in_end(t)
    total = np.zeros(len(specs))
    z = np.empty((len(specs), 1))
    for k in range(T):
        key = round(float(dts[k]), 6)
        tr = trans.get(key)
        if tr is None:
            pairs = [m.transition(key) for m in models]
            tr = trans[key] = (np.stack([a for a, _ in pairs]), np.stack([q for _, q in pairs]))
        x, P = predict(x, P, *tr)  # x- = A x, P- = A P A^T + Q (one A, Q per set)
        if y[k] == y[k]:  # observed (not nan)
            z[:] = y[k]
            x, P, st = update(x, P, z, H, R, stats=True, diagonal=True)
            if t[k] >= burn_until:
                total += cast(UpdateStats, st).loglik
    return total


def _filter(
    spec: BlockSpec,
    times: Array,
    values: Array,
    x0: Array | None,
    P0: Array | None,
    keep: bool,
) -> SeriesFilter | float:
    model = StateSpaceModel((spec,))
    H, R = model.H, model.R
    t = np.asarray(times, dtype=np.float64)
    y = np.asarray(values, dtype=np.float64)
    T = len(y)
    if T == 0:
        raise ModelError("cannot filter an empty series")
    if x0 is None or P0 is None:
        first = y[np.isfinite(y)]
        x0, P0 = model.initial({spec.name: float(first[0])} if len(first) else None)
    x = np.array(x0, dtype=np.float64)
    P = np.array(P0, dtype=np.float64)
    n = len(x)
    burn_until = burn_in_end(t)
    if keep:
        xpr = np.empty((T, n))
        Ppr = np.empty((T, n, n))
        xpo = np.empty((T, n))
        Ppo = np.empty((T, n, n))
        As = np.empty((T, n, n))
        ll = np.zeros(T)
        inn = np.full(T, np.nan)
        var = np.full(T, np.nan)
    total = 0.0
    prev = t[0] - (t[1] - t[0] if T > 1 else HOUR)
    z = np.empty(1)
    for k in range(T):
        dt = t[k] - prev
        prev = t[k]
        A, Q = model.transition(dt)
        x, P = predict(x, P, A, Q)  # x- = A x, P- = A P A^T + Q
        if keep:
            xpr[k] = x
            Ppr[k] = P
            As[k] = A
        if y[k] == y[k]:  # observed (not nan)
            z[0] = y[k]
            x, P, st = update(x, P, z, H, R, stats=True, diagonal=True)
            u = cast(UpdateStats, st)
            if t[k] >= burn_until:
                total += float(u.loglik)
            if keep:
                ll[k] = u.loglik
                inn[k] = u.innovation[0]
                var[k] = u.variance[0]
        if keep:
            xpo[k] = x
            Ppo[k] = P
    if not keep:
        return total
    return SeriesFilter(xpr, Ppr, xpo, Ppo, As, ll, inn, var)


def rts_smooth(f: SeriesFilter) -> tuple[Array, Array]:
    """Rauch-Tung-Striebel smoothing of a filtered series (offline analysis).

    Backwards from the last sample::

        G_k = P_k A_{k+1}^T (P-_{k+1})^-1
        xs_k = x_k + G_k (xs_{k+1} - x-_{k+1})
        Ps_k = P_k + G_k (Ps_{k+1} - P-_{k+1}) G_k^T
    """
    T = len(f.x_post)
    xs = f.x_post.copy()
    Ps = f.P_post.copy()
    for k in range(T - 2, -1, -1):
        G = np.linalg.solve(f.P_prior[k + 1].T, (f.P_post[k] @ f.A[k + 1].T).T).T
        xs[k] = f.x_post[k] + G @ (xs[k + 1] - f.x_prior[k + 1])
        Pk = f.P_post[k] + G @ (Ps[k + 1] - f.P_prior[k + 1]) @ G.T
        Ps[k] = 0.5 * (Pk + Pk.T)
    return xs, Ps


_FREE = {
    "structural": (
        "q_level",
        "q_trend",
        "q_ar",
        "tau_ar",
        "q_slow",
        "tau_slow",
        "q_season",
        "q_week",
        "r",
    ),
    "queue": ("q_level", "q_inflow", "tau_drain", "r"),
}


def free_parameters(spec: BlockSpec) -> list[str]:
    """The parameters fitted for a block (those its structure uses)."""
    names = []
    for p in _FREE[spec.kind]:
        if p == "q_trend" and not spec.trend:
            continue
        if p in ("q_ar", "tau_ar") and not spec.ar:
            continue
        if p in ("q_slow", "tau_slow") and not spec.slow:
            continue
        if p == "q_season" and not spec.daily:
            continue
        if p == "q_week" and not spec.weekly:
            continue
        names.append(p)
    return names


def default_spec(name: str, values: Array, **structure: Any) -> BlockSpec:
    """A structural block sized to a series: level, fast and slow transients, daily and weekly
    harmonics.

    Starting intensities are fractions of the series' variance per hour; the
    fit refines them.
    """
    y = np.asarray(values, dtype=np.float64)
    y = y[np.isfinite(y)]
    if len(y) < 2:
        raise ModelError(f"series {name!r} needs at least 2 observed values, got {len(y)}")
    v = float(np.var(y)) or 1.0
    opts: dict[str, Any] = {"ar": True, "slow": True, "daily": 3, "weekly": 2}
    opts.update(structure)
    return BlockSpec(
        name=name,
        q_level=0.01 * v / HOUR,
        q_ar=0.1 * v / HOUR,
        tau_ar=6 * HOUR,
        q_slow=0.01 * v / HOUR,
        tau_slow=3 * DAY,
        q_season=1e-4 * v / HOUR,
        q_week=1e-5 * v / HOUR,
        q_trend=1e-6 * v / HOUR**3,
        r=0.01 * v,
        scale=math.sqrt(v) + abs(float(np.mean(y))),
        **opts,
    )


@dataclass
class FitResult:
    """A fitted block, its log-likelihood before and after, and the optimiser's report."""

    spec: BlockSpec
    loglik: float
    initial_loglik: float
    evaluations: int
    samples: int
    message: str = ""
    params: dict[str, float] = field(default_factory=dict)


def fit_block(
    spec: BlockSpec,
    times: Array,
    values: Array,
    window: int | None = 1500,
    max_iterations: int = 80,
) -> FitResult:
    """Maximum-likelihood fit of ``spec``'s free parameters on a series.

    Only the last ``window`` samples are used (None: all); the structure
    (trend, AR, number of harmonics) is kept and the parameters in
    ``free_parameters(spec)`` are optimised in log space.
    """
    t = np.asarray(times, dtype=np.float64)
    y = np.asarray(values, dtype=np.float64)
    if window is not None and len(y) > window:
        t, y = t[-window:], y[-window:]
    if np.isfinite(y).sum() < 24:
        raise ModelError(
            f"block {spec.name!r}: at least 24 observed samples are needed to fit, "
            f"got {int(np.isfinite(y).sum())}"
        )
    names = free_parameters(spec)
    theta0 = np.array([math.log(getattr(spec, p)) for p in names])
    bounds = []
    for p, th in zip(names, theta0, strict=True):
        if p.startswith("tau"):
            bounds.append((math.log(600.0), math.log(30 * DAY)))
        else:
            bounds.append((th - 14.0, th + 8.0))
    evals = 0
    eps = 1e-4

    def make(theta: Array) -> BlockSpec:
        return replace_params(spec, **{p: math.exp(v) for p, v in zip(names, theta, strict=True)})

    def fg(theta: Array) -> tuple[float, Array]:
        """-log L and its forward-difference gradient, from one batched pass."""
        nonlocal evals
        evals += 1
        thetas = [theta] + [theta + eps * np.eye(len(theta))[i] for i in range(len(theta))]
        try:
            with np.errstate(all="ignore"):
                ll = batch_loglik([make(th) for th in thetas], t, y)
        except (np.linalg.LinAlgError, ValueError, OverflowError):
            return 1e300, np.zeros(len(theta))
        if not np.isfinite(ll).all():
            return 1e300, np.zeros(len(theta))
        return -float(ll[0]), -(ll[1:] - ll[0]) / eps

    start = -fg(theta0)[0]
    res = minimize(
        fg,
        theta0,
        jac=True,
        method="L-BFGS-B",
        bounds=bounds,
        options={"maxiter": max_iterations, "ftol": 1e-9},
    )
    best = make(res.x) if -float(res.fun) >= start else spec
    return FitResult(
        spec=best,
        loglik=max(-float(res.fun), start),
        initial_loglik=start,
        evaluations=evals,
        samples=int(np.isfinite(y).sum()),
        message=str(res.message),
        params={p: float(getattr(best, p)) for p in names},
    )


def forecast_gains(spec: BlockSpec, horizon: int, dt: float = HOUR) -> Array:
    """Rows ``g_h = h^T A(dt)^h`` for ``h = 1..horizon``: ``y_{k+h} ~ g_h . x_k``."""
    model = StateSpaceModel((spec,))
    A, _ = model.transition(dt)
    out = np.empty((horizon, model.dim))
    row = model.H[0].copy()
    for h in range(horizon):
        row = row @ A
        out[h] = row
    return out


def forecast_noise(spec: BlockSpec, horizon: int, dt: float = HOUR) -> Array:
    """``h^T S_j h + r`` for ``j = 1..horizon``, ``S_j = sum_{i<j} A^i Q A^iT``.

    The part of the ``j``-step forecast variance that does not depend on the
    estimate: ``var(y_{k+j} | y_{..k}) = g_j P_k g_j^T + h^T S_j h + r``.
    """
    model = StateSpaceModel((spec,))
    A, Q = model.transition(dt)
    h = model.H[0]
    out = np.empty(horizon)
    S = np.zeros_like(Q)
    Ai = np.eye(model.dim)
    for j in range(horizon):
        S = S + Ai @ Q @ Ai.T  # S_{j+1} = S_j + A^j Q A^jT
        Ai = A @ Ai
        out[j] = h @ S @ h + spec.r
    return out


LINEAR_LAGS = (0, 1, 2, 3)
"""Lags of the origin used by the direct linear baseline (besides 24 h and 168 h)."""


def direct_linear(
    times: Array,
    filled: Array,
    observed: Array,
    split: int,
    horizon: int,
    origins: NDArray[np.int64],
) -> Array:
    """Forecasts of the direct linear model, one least-squares fit per lead.

    For lead ``h``: ``y_{k+h} ~ sum_l a_l y_{k-l} (l in LINEAR_LAGS) + b y_{k+h-24}
    + c y_{k+h-168} + d_{hour(k+h)}`` (one intercept per hour of day), fitted on
    the origins of the training part whose target is observed. ``filled`` is the
    forward-filled series (what is known at the origin); returns ``(origins, horizon)``.
    """
    hour = ((np.asarray(times) // 3600) % 24).astype(np.int64)
    out = np.full((len(origins), horizon), np.nan)
    first = max(168, max(LINEAR_LAGS))

    def features(k: NDArray[np.int64], h: int) -> Array:
        cols = [filled[k - lag] for lag in LINEAR_LAGS]
        cols += [filled[k + h - 24], filled[k + h - 168]]
        onehot = np.zeros((len(k), 24))
        onehot[np.arange(len(k)), hour[np.minimum(k + h, len(hour) - 1)]] = 1.0
        return np.column_stack([*cols, onehot])

    for h in range(1, horizon + 1):
        train = np.arange(first, split - h)
        target = observed[train + h]
        ok = np.isfinite(target)
        if ok.sum() < 48:
            continue
        X: Array = features(train, h)[ok]
        w = np.linalg.lstsq(X, target[ok], rcond=None)[0]
        usable = origins >= first
        out[usable, h - 1] = features(origins[usable], h) @ w
    return out


@dataclass
class BacktestResult:
    """Out-of-sample forecast errors and interval calibration of the twin against baselines.

    ``mae`` maps method (``twin``, ``persistence``, ``seasonal_naive``,
    ``linear``) to the mean absolute error over every origin in the held-out
    part and every lead 1..horizon; ``mae_by_horizon`` keeps the per-lead values.
    ``coverage_80``/``coverage_95`` are, per lead, the fraction of held-out
    values inside the twin's calibrated 80 % and 95 % intervals
    (``mean +- z sd``), ``width_80``/``width_95`` their mean widths.
    """

    mae: dict[str, float]
    mae_by_horizon: dict[str, list[float]]
    horizon: int
    train_samples: int
    test_samples: int
    origins: int
    fit: FitResult
    coverage_80: list[float] = field(default_factory=list)
    coverage_95: list[float] = field(default_factory=list)
    width_80: list[float] = field(default_factory=list)
    width_95: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "mae": self.mae,
            "mae_by_horizon": self.mae_by_horizon,
            "coverage_80": self.coverage_80,
            "coverage_95": self.coverage_95,
            "width_80": self.width_80,
            "width_95": self.width_95,
            "horizon": self.horizon,
            "train_samples": self.train_samples,
            "test_samples": self.test_samples,
            "origins": self.origins,
            "fitted": self.fit.params,
            "loglik": self.fit.loglik,
        }


def backtest(
    times: Array,
    values: Array,
    horizon: int = 24,
    test_fraction: float = 0.2,
    spec: BlockSpec | None = None,
    season: int = 24,
    window: int | None = None,
    half_life: float = 168.0,
    combine: bool = True,
) -> BacktestResult:
    """Fit on the first part of a regular hourly series, forecast the held-out rest.

    The parameters are fitted by maximum likelihood on the training part (its
    last ``window`` samples; default None: all of it, so that the noise is not
    learned on one calm season); the filter then runs over the whole series.
    From every origin ``k`` in the held-out part, each method forecasts
    ``y_{k+1..k+horizon}`` using data up to ``k`` only: the twin with
    ``g_h . x_k`` (filtered estimate) combined per lead with the seasonal
    naive forecast by a ``LeadBlender`` that has seen only the errors known at
    ``k`` (``twin.combination``; ``combine=False``: the structural model
    alone), persistence with the last observed value,
    seasonal naive with the value one ``season`` earlier
    (``y_{k+h-season*ceil(h/season)}``), and the direct linear model
    (``direct_linear``, least squares on the training part). The twin's
    intervals use its ``h``-step standard deviation rescaled by a
    ``LeadCalibrator`` that has seen only the errors known at ``k``.
    """
    from twin.calibration import Z80, Z95, LeadCalibrator, coverage
    from twin.combination import LeadBlender, seasonal_lag

    t = np.asarray(times, dtype=np.float64)
    y = np.asarray(values, dtype=np.float64)
    T = len(y)
    if not 0 < test_fraction < 1:
        raise ModelError(f"test_fraction must be in (0, 1), got {test_fraction}")
    if horizon < 1:
        raise ModelError(f"horizon must be >= 1, got {horizon}")
    split = round(T * (1 - test_fraction))
    if split < 2 * season or T - split <= horizon:
        raise ModelError(
            f"series of {T} samples is too short for a {horizon}-step backtest with a "
            f"{test_fraction:.0%} held-out part: give at least {2 * season + horizon + 1} samples"
        )
    spec = spec or default_spec("series", y[:split])
    fitted = fit_block(spec, t[:split], y[:split], window=window)
    f = filter_series(fitted.spec, t, y)
    dt = float(np.median(np.diff(t)))
    G = forecast_gains(fitted.spec, horizon, dt)
    noise = forecast_noise(fitted.spec, horizon, dt)
    # Forward-filled observations: what persistence and seasonal naive may use at k.
    filled = y.copy()
    for k in range(1, T):
        if not np.isfinite(filled[k]):
            filled[k] = filled[k - 1]
    every = np.arange(0, T - 1)
    idx_all = every[:, None] + np.arange(1, horizon + 1)[None, :]
    target_all = np.where(idx_all < T, y[np.minimum(idx_all, T - 1)], np.nan)
    model_all = f.x_post[every] @ G.T
    # The seasonal random walk's forecasts: the value ``season * ceil(h / season)`` before.
    seasonal_all = np.empty((T - 1, horizon))
    for h in range(1, horizon + 1):
        src = every + h - seasonal_lag(h, season)
        seasonal_all[:, h - 1] = np.where(src >= 0, filled[np.maximum(src, 0)], np.nan)
    # var(y_{k+h} | y_..k) = g_h P_k g_h^T + h^T S_h h + r
    sd_all = np.sqrt(np.einsum("hi,kij,hj->kh", G, f.P_post[every], G) + noise[None, :])
    # Combine and calibrate online: at origin k, the targets of lead h issued at k - h are
    # known; the blender learns from both forecasts' errors, the calibrator from the
    # published (combined) forecast's.
    cal = LeadCalibrator(horizon, half_life)
    blender = LeadBlender(horizon, half_life) if combine else None
    mean_all = model_all.copy()
    factor = np.ones((T - 1, horizon))
    for k in range(T - 1):
        for h in range(1, min(horizon, k) + 1):
            j = k - h
            seen = float(target_all[j, h - 1])
            if blender is not None:
                blender.update(h - 1, seen - model_all[j, h - 1], seen - seasonal_all[j, h - 1])
            cal.update(h - 1, (seen - mean_all[j, h - 1]) / sd_all[j, h - 1])
        factor[k] = cal.factor()
        if blender is not None:
            mean_all[k] = blender.combine(model_all[k], seasonal_all[k])
    origins = np.arange(split - 1, T - 1)
    preds = {
        "twin": mean_all[origins],
        "persistence": np.repeat(filled[origins][:, None], horizon, axis=1),
        "seasonal_naive": seasonal_all[origins],
        "linear": direct_linear(t, filled, y, split, horizon, origins),
    }
    target = target_all[origins]
    ok = np.isfinite(target)
    mae: dict[str, float] = {}
    by_h: dict[str, list[float]] = {}
    for name, p in preds.items():
        err = np.abs(p - target)
        err = np.where(ok & np.isfinite(p), err, np.nan)
        mae[name] = float(np.nanmean(err))
        by_h[name] = [float(v) for v in np.nanmean(err, axis=0)]
    sd = sd_all[origins] * factor[origins]
    err = np.where(ok, target - preds["twin"], np.nan)
    return BacktestResult(
        mae=mae,
        mae_by_horizon=by_h,
        horizon=horizon,
        train_samples=split,
        test_samples=T - split,
        origins=len(origins),
        fit=fitted,
        coverage_80=[float(v) for v in coverage(err, sd, Z80)],
        coverage_95=[float(v) for v in coverage(err, sd, Z95)],
        width_80=[float(v) for v in np.nanmean(2 * Z80 * sd, axis=0)],
        width_95=[float(v) for v in np.nanmean(2 * Z95 * sd, axis=0)],
    )


__all__ = [
    "BacktestResult",
    "FitResult",
    "SeriesFilter",
    "backtest",
    "batch_loglik",
    "burn_in_end",
    "default_spec",
    "direct_linear",
    "filter_series",
    "fit_block",
    "forecast_gains",
    "forecast_noise",
    "free_parameters",
    "rts_smooth",
    "series_loglik",
]
