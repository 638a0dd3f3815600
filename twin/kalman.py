"""Kalman filtering as pure functions over (batches of) arrays, and the batched engine.

The functions follow filterpy's procedural form and its exact arithmetic
(``KalmanFilter.predict`` / ``update``, Joseph-form covariance update), so a
batch of ``N`` sites filtered here agrees with ``N`` filterpy objects to round-off
(tests check 1e-9 on random cases). Shapes, with ``n`` states and ``m``
observations:

* ``x``: ``(N, n)`` state means; ``P``: ``(N, n, n)`` per-site covariances or
  ``(n, n)`` one covariance *shared* by every site.
* ``A``, ``Q``: ``(n, n)`` (shared) or ``(N, n, n)``; ``H``: ``(m, n)``;
  ``R``: ``(m, m)`` or ``(N, m, m)``; ``z``: ``(N, m)``.
* ``mask``: ``(N, m)`` booleans, True where the observation is present. Missing
  observations are explicit (masked), never zeros: a masked row of ``H`` and
  ``y`` is removed from the update exactly as if filterpy were called with the
  reduced ``z``, ``H``, ``R``.

When every site shares ``A``, ``Q``, ``H``, ``R``, the initial ``P`` and the
observation pattern, the covariances evolve identically: ``BatchKalman`` then
keeps one ``(n, n)`` covariance and one gain, and the mean update is two matrix
products over the whole batch (the *shared-covariance path*). It falls back to
per-site covariances automatically as soon as one of those stops holding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from twin.errors import ModelError

Array = NDArray[np.float64]
Mask = NDArray[np.bool_]

LOG_2PI = math.log(2.0 * math.pi)


def _sym(P: Array) -> Array:
    """``(P + P^T) / 2``: removes the round-off asymmetry that makes a long recursion diverge."""
    return 0.5 * (P + np.swapaxes(P, -1, -2))


def _apply(M: Array, x: Array) -> Array:
    """``M x`` for every row of ``x`` (``M`` shared ``(n, n)`` or per site ``(N, n, n)``)."""
    if M.ndim == 2:
        return x @ M.T
    out: Array = np.matmul(M, x[..., None])[..., 0]
    return out


def predict(
    x: Array,
    P: Array,
    A: Array,
    Q: Array,
    B: Array | None = None,
    u: Array | None = None,
) -> tuple[Array, Array]:
    """One prediction step for a batch.

    ``x' = A x + B u`` and ``P' = A P A^T + Q`` (filterpy's ``predict`` with
    ``alpha = 1``). ``P`` stays shared when ``P``, ``A`` and ``Q`` all are.
    """
    x_new = _apply(A, x)  # x' = A x
    if B is not None and u is not None:
        x_new = x_new + _apply(B, u)  # + B u
    AT = A.T if A.ndim == 2 else np.swapaxes(A, -1, -2)
    P_new = A @ P @ AT + Q  # P' = A P A^T + Q
    return x_new, P_new


@dataclass(frozen=True)
class UpdateStats:
    """Innovation statistics of one update, per site.

    ``nis`` is the normalised innovation squared ``y^T S^-1 y`` (chi-square with
    ``dof`` degrees of freedom when the model is right); ``loglik`` is the
    Gaussian log-likelihood of the innovation, ``-(dof log 2pi + log|S| + nis)/2``
    (filterpy's ``log_likelihood``). Sites with nothing observed have dof 0,
    nis 0 and loglik 0. ``innovation`` is ``y`` and ``variance`` the diagonal of
    ``S`` (missing entries: ``y`` 0, variance 1). ``logdet`` is ``log|S|``; None
    when ``S`` is diagonal, and then ``loglik`` computes it from ``variance`` when
    read (telemetry ingest needs only ``nis``). For a single site (``x`` of shape
    ``(n,)``) every field has one dimension less.
    """

    nis: Array
    dof: NDArray[np.int64]
    innovation: Array
    variance: Array
    logdet: Array | None = None

    @property
    def loglik(self) -> Array:
        """``-(dof log 2pi + log|S| + nis) / 2``, 0 where nothing was observed."""
        logdet = self.logdet if self.logdet is not None else np.log(self.variance).sum(axis=-1)
        ll: Array = np.where(self.dof > 0, -0.5 * (self.dof * LOG_2PI + logdet + self.nis), 0.0)
        return ll


def _masked_terms(H: Array, R: Array, y: Array, mask: Mask) -> tuple[Array, Array, Array]:
    """Per-site ``H``, ``R`` and ``y`` with the missing rows taken out.

    A missing row of ``H`` and ``y`` is zeroed and its row and column of ``R``
    replaced by the identity: the innovation covariance becomes block diagonal
    with an identity block for the missing part, the gain's column for it is
    zero, and the update equals filterpy's on the reduced observation.
    """
    fm = mask.astype(np.float64)
    Hm = H[None, :, :] * fm[:, :, None] if H.ndim == 2 else H * fm[:, :, None]
    RR = R if R.ndim == 3 else np.broadcast_to(R, (mask.shape[0], *R.shape))
    outer = fm[:, :, None] * fm[:, None, :]
    Rm = RR * outer + np.eye(mask.shape[1])[None] * (1.0 - fm)[:, :, None]
    return Hm, Rm, y * fm


def update(
    x: Array,
    P: Array,
    z: Array,
    H: Array,
    R: Array,
    mask: Mask | None = None,
    stats: bool = False,
    diagonal: bool = False,
) -> tuple[Array, Array, UpdateStats | None]:
    """One measurement update (filterpy's ``update``), for one site or a batch.

    Equations, per site::

        y = z - H x                      innovation
        S = H P H^T + R                  innovation covariance
        K = P H^T S^-1                   gain
        x+ = x + K y
        P+ = (I - K H) P (I - K H)^T + K R K^T     (Joseph form, then symmetrised)

    A single site is ``x`` of shape ``(n,)``, ``P`` ``(n, n)``, ``z`` ``(m,)``
    (``mask`` then removes the missing rows of ``H``, ``R`` and ``z``). A batch is
    ``x`` ``(N, n)`` with ``P`` per site ``(N, n, n)`` or shared ``(n, n)``; a
    shared ``P`` requires ``R`` shared and a ``mask`` that is None or the same for
    every site, and the gain is then computed once for the batch.

    ``diagonal=True`` is the fast path for an ``S`` known to be diagonal (one
    observation per site, or independent blocks with a diagonal ``R`` and no
    covariance across them, as a ``SiteTwin``'s model keeps): ``S^-1`` is then one
    over its diagonal, with no matrix inverse. The caller vouches for it.
    """
    if x.ndim == 1:
        return _update_one(x, P, z, H, R, mask, stats, diagonal)
    N, n = x.shape
    m = H.shape[-2]
    if z.shape != (N, m):
        raise ModelError(f"z has shape {z.shape}; expected ({N}, {m}) for {N} sites")
    if mask is not None and mask.all():
        mask = None
    if mask is not None and not mask.any() and not stats:
        return x, _sym(P), None
    shared = P.ndim == 2 and R.ndim == 2 and H.ndim == 2
    if shared and mask is not None and not (mask == mask[0]).all():
        shared = False
        P = np.broadcast_to(P, (N, n, n))
    zz = np.where(mask, z, 0.0) if mask is not None else z
    if shared:
        Hs, Rs = H, R
        if mask is not None:
            row = mask[0].astype(np.float64)
            Hs = H * row[:, None]
            Rs = R * np.outer(row, row) + np.diag(1.0 - row)
        y = zz - x @ Hs.T  # y = z - H x (missing entries 0)
        if mask is not None:
            y = y * mask[0]
        PHT = P @ Hs.T
        S = Hs @ PHT + Rs  # S = H P H^T + R
        SI = np.linalg.inv(S)
        K = PHT @ SI  # K = P H^T S^-1
        x_new = x + y @ K.T  # x+ = x + K y, for all sites at once
        I_KH = np.eye(n) - K @ Hs
        P_new = _sym(I_KH @ P @ I_KH.T + K @ Rs @ K.T)
        if not stats:
            return x_new, P_new, None
        nis = np.einsum("ij,jk,ik->i", y, SI, y)
        dof_row = int(mask[0].sum()) if mask is not None else m
        if not dof_row:
            nis = np.zeros(N)
        logdet_row = np.full(N, np.linalg.slogdet(S)[1])  # identity block of the missing: 0
        var = np.broadcast_to(np.diagonal(S), (N, m))
        dofs = np.full(N, dof_row, dtype=np.int64)
        return x_new, P_new, UpdateStats(nis, dofs, y, var, logdet_row)
    if P.ndim == 2:
        P = np.broadcast_to(P, (N, n, n))
    if mask is None and H.ndim == 2:
        # Unmasked with a shared H. Stacked products (numpy's own loop over the
        # sites) rather than one tall BLAS product: multithreaded BLAS on tall,
        # thin matrices collapses on a loaded machine (measured: 10x slower).
        Hb: Array = H
        Rb: Array = R
        y = zz - x @ H.T  # y = z - H x
        PHT = P @ H.T
    else:
        Hx = _apply(H, x) if H.ndim == 3 else x @ H.T
        if mask is None:
            Hb, Rb, y = H, R, zz - Hx
        else:
            Hb, Rb, y = _masked_terms(H, R, zz - Hx, mask)
        PHT = P @ np.swapaxes(Hb, -1, -2)
    if diagonal:
        # S = H P H^T + R, diagonal: s_i = (H P H^T)_ii + R_ii, S^-1 = 1 / s
        HPHT = np.einsum("nij,nji->ni", np.broadcast_to(Hb, (N, m, n)), PHT)
        s = HPHT + np.diagonal(Rb, axis1=-2, axis2=-1)
        K = PHT / s[:, None, :]  # K = P H^T S^-1
        x_new = x + np.einsum("nij,nj->ni", K, y)  # x+ = x + K y
        P_new = _sym(P - K @ np.swapaxes(PHT, 1, 2))  # (I - K H) P
        if not stats:
            return x_new, P_new, None
        nis = np.einsum("ni,ni->n", y, y / s)
        logdet: Array | None = (
            None  # log|S| = sum log s, computed if loglik is read (missing: s = 1)
        )
        var = s
    else:
        S = Hb @ PHT + Rb  # S = H P H^T + R
        SI = np.linalg.inv(S)
        K = PHT @ SI  # K = P H^T S^-1
        x_new = x + np.einsum("nij,nj->ni", K, y)  # x+ = x + K y
        # P+ = (I - K H) P = P - K (P H^T)^T, symmetrised. Equal to filterpy's Joseph
        # form for the optimal gain (to round-off), and about 1.7 times cheaper per site.
        P_new = _sym(P - K @ np.swapaxes(PHT, 1, 2))
        if not stats:
            return x_new, P_new, None
        nis = np.einsum("ni,nij,nj->n", y, SI, y)
        _, logdet = np.linalg.slogdet(S)  # identity blocks of missing entries add log 1 = 0
        var = np.diagonal(S, axis1=-2, axis2=-1)
    dof = mask.sum(axis=1).astype(np.int64) if mask is not None else np.full(N, m, np.int64)
    nis = np.where(dof > 0, nis, 0.0)
    return x_new, P_new, UpdateStats(nis, dof, y, var, logdet)


def _update_one(
    x: Array,
    P: Array,
    z: Array,
    H: Array,
    R: Array,
    mask: Mask | None,
    stats: bool,
    diagonal: bool,
) -> tuple[Array, Array, UpdateStats | None]:
    """``update`` for one site: the same equations on ``(n,)`` and ``(n, n)`` arrays.

    The missing observations are taken out of ``z``, ``H`` and ``R`` (filterpy
    called with the reduced observation), which for one site is cheaper than
    masking; this is what telemetry ingest runs on, sample after sample, so it
    is written for the fewest numpy calls (each costs about a microsecond on
    these small arrays, more than its arithmetic).
    """
    r = R.diagonal()
    if mask is not None and not mask.all():
        rows = np.flatnonzero(mask)
        z, H, r = z[rows], H[rows], r[rows]
        if not diagonal:  # a diagonal S needs only R's diagonal (np.ix_ is slow)
            R = R[np.ix_(rows, rows)]
    m = len(z)
    if m == 0:
        P0 = 0.5 * (P + P.T)
        if not stats:
            return x, P0, None
        zero = np.zeros(())
        return x, P0, UpdateStats(zero, np.zeros((), np.int64), np.zeros(0), np.zeros(0), zero)
    y = z - H @ x  # y = z - H x
    PHT = P @ H.T
    S = H @ PHT  # H P H^T (+ R below)
    logdet = None
    if diagonal:
        # S = H P H^T + R is diagonal: S^-1 is one over its diagonal s.
        s = S.diagonal() + r
        K = PHT / s  # K = P H^T S^-1
        w = y / s  # S^-1 y
    else:
        S += R  # S = H P H^T + R
        SI = np.linalg.inv(S)
        K = PHT @ SI  # K = P H^T S^-1
        w = SI @ y
        s = S.diagonal()
        if stats:
            logdet = np.asarray(np.linalg.slogdet(S)[1])
    x_new = x + PHT @ w  # x+ = x + K y
    P_new = P - K @ PHT.T  # P+ = (I - K H) P = P - K (P H^T)^T
    P_new = 0.5 * (P_new + P_new.T)  # symmetrised
    if not stats:
        return x_new, P_new, None
    nis = np.asarray(y @ w)  # y^T S^-1 y
    return x_new, P_new, UpdateStats(nis, np.asarray(m), y, s, logdet)


def is_spd(P: Array, tol: float = 0.0) -> bool:
    """Whether every covariance in ``P`` is symmetric and positive definite."""
    if not np.allclose(P, np.swapaxes(P, -1, -2), rtol=1e-12, atol=1e-12):
        return False
    try:
        np.linalg.cholesky(P)
    except np.linalg.LinAlgError:
        return False
    return bool((np.linalg.eigvalsh(P) > tol).all())


class BatchKalman:
    """A Kalman filter over ``N`` sites at once (the batched engine).

    The state is ``x`` ``(N, n)`` and either one shared covariance ``(n, n)`` or
    per-site covariances ``(N, n, n)``. The shared form is used automatically
    when the initial covariances are all equal and every call keeps them equal
    (shared ``A``, ``Q``, ``R``, the same observation pattern for all sites);
    ``shared`` tells which path is active. Per-site arrays that happen to be
    identical are collapsed to the shared form.

    Example::

        kf = BatchKalman(np.zeros((10_000, 6)), np.eye(6))
        kf.predict(A, Q)
        kf.update(z, H, R, mask=z_present)
    """

    def __init__(self, x0: Array, P0: Array) -> None:
        x0 = np.array(x0, dtype=np.float64)
        if x0.ndim != 2:
            raise ModelError(f"x0 must be (sites, states), got shape {x0.shape}")
        N, n = x0.shape
        P0 = np.array(P0, dtype=np.float64)
        if P0.shape not in ((n, n), (N, n, n)):
            raise ModelError(f"P0 must be ({n}, {n}) or ({N}, {n}, {n}), got {P0.shape}")
        self.x: Array = x0
        self.P: Array = _collapse(P0)

    @property
    def sites(self) -> int:
        return int(self.x.shape[0])

    @property
    def dim(self) -> int:
        return int(self.x.shape[1])

    @property
    def shared(self) -> bool:
        """True while one covariance serves every site (the fast path)."""
        return self.P.ndim == 2

    def covariances(self) -> Array:
        """Per-site covariances ``(N, n, n)`` (a broadcast view when shared)."""
        if self.P.ndim == 2:
            return np.broadcast_to(self.P, (self.sites, self.dim, self.dim))
        return self.P

    def predict(self, A: Array, Q: Array, B: Array | None = None, u: Array | None = None) -> None:
        """``x = A x + B u``, ``P = A P A^T + Q`` for every site."""
        A = _collapse(np.asarray(A, dtype=np.float64))
        Q = _collapse(np.asarray(Q, dtype=np.float64))
        P = self.P
        if P.ndim == 2 and (A.ndim == 3 or Q.ndim == 3):
            P = np.broadcast_to(P, (self.sites, self.dim, self.dim))
        self.x, self.P = predict(self.x, P, A, Q, B, u)

    def update(
        self,
        z: Array,
        H: Array,
        R: Array,
        mask: Mask | None = None,
        stats: bool = False,
    ) -> UpdateStats | None:
        """Apply observations ``z`` (``mask`` False where missing); returns innovation stats."""
        R = _collapse(np.asarray(R, dtype=np.float64))
        self.x, self.P, st = update(self.x, self.P, z, H, R, mask, stats)
        return st


def _collapse(M: Array) -> Array:
    """A stack of identical matrices as one matrix (so the shared path applies)."""
    if M.ndim == 3 and M.shape[0] > 0 and (M[0] == M).all():
        return np.array(M[0])
    return M


def project(
    x: Array,
    P: Array,
    D: Array,
    lower: Array,
    upper: Array,
    max_iter: int | None = None,
    Dx: list[float] | None = None,
) -> Array:
    """Project one estimate onto ``{x : lower <= D x <= upper}`` in the ``P^-1`` metric.

    Simon and Chia's estimate projection: with the active constraints ``D_a x = d_a``,
    ``x~ = x - P D_a^T (D_a P D_a^T)^-1 (D_a x - d_a)``, the minimiser of
    ``(x~ - x)^T P^-1 (x~ - x)`` on the active set. Constraints are activated
    one by one until none is violated (at most one pass per constraint). The
    covariance is left unchanged, so it stays symmetric positive definite.
    With one active constraint ``d`` (the usual case: one metric past its
    bound) the correction is ``P d (d x - b) / (d P d)``, without a solve.

    ``Dx``: ``D x`` as a list, when the caller has it (the twin checks the bounds
    after every update, so it computes it anyway).
    """
    lo, hi = lower.tolist(), upper.tolist()
    v = (D @ x).tolist() if Dx is None else Dx
    past = [i for i in range(len(v)) if v[i] < lo[i] - 1e-12 or v[i] > hi[i] + 1e-12]
    if len(past) == 1:
        # One metric past its bound: the rank-one correction, and ``D x~`` from ``D P d``
        # (the other bounds still hold: done; otherwise the active-set pass below).
        i = past[0]
        d = D[i]
        Pd = P @ d
        dPd = float(d @ Pd)
        if dPd > 0.0:
            c = (v[i] - (lo[i] if v[i] < lo[i] else hi[i])) / dPd
            dv = (D @ Pd).tolist()
            if all(
                lo[j] - (1e-9 if j == i else 1e-12)
                <= v[j] - c * dv[j]
                <= hi[j] + (1e-9 if j == i else 1e-12)
                for j in range(len(v))
            ):
                out: Array = x - Pd * c
                return out
    active: dict[int, float] = {}
    xt = x
    for _ in range(max_iter or len(D) + 1):
        v = (D @ xt).tolist()
        viol = [
            (i, lo[i] if v[i] < lo[i] else hi[i])
            for i in range(len(v))
            if (v[i] < lo[i] - 1e-12 or v[i] > hi[i] + 1e-12) and i not in active
        ]
        if not viol:
            # an active constraint is an equality only up to the solve's rounding (an
            # ill-conditioned ``D_a P D_a^T``): a residual past its bound is clipped below
            if all(lo[i] - 1e-9 <= v[i] <= hi[i] + 1e-9 for i in active):
                return xt
            break
        for i, bound in viol:
            active[i] = float(bound)
        idx = list(active)
        if len(idx) == 1:
            d = D[idx[0]]
            Pd = P @ d
            xt = x - Pd * ((float(d @ x) - active[idx[0]]) / float(d @ Pd))
            continue
        Da = D[idx]
        da = np.array([active[i] for i in idx])
        M = Da @ P @ Da.T
        try:
            corr = P @ Da.T @ np.linalg.solve(M, Da @ x - da)
        except np.linalg.LinAlgError:
            break
        xt = x - corr
    # Fallback when the active-set pass did not settle (degenerate P, rounding): clip.
    xt = xt.copy()
    v = (D @ xt).tolist()
    for i in range(len(D)):
        if v[i] < lo[i] or v[i] > hi[i]:
            row = D[i]
            target = min(max(v[i], lo[i]), hi[i])
            xt = xt + row * (target - v[i]) / float(row @ row)
    return xt


__all__ = ["BatchKalman", "UpdateStats", "is_spd", "predict", "project", "update"]
