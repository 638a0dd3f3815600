"""The batched engine against filterpy's KalmanFilter, masks, shared path, SPD, projection."""

from __future__ import annotations

import numpy as np
import pytest
from filterpy.kalman import KalmanFilter
from hypothesis import given, settings
from hypothesis import strategies as st

from twin.errors import ModelError
from twin.kalman import BatchKalman, is_spd, predict, project, update


def _spd(rng: np.random.Generator, n: int, scale: float = 1.0) -> np.ndarray:
    M = rng.standard_normal((n, n))
    return scale * (M @ M.T + n * np.eye(n))


def _problem(seed: int, N: int, n: int, m: int, shared: bool) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    A = np.eye(n) + 0.2 * rng.standard_normal((n, n)) / np.sqrt(n)
    H = rng.standard_normal((m, n))
    if shared:
        P0 = _spd(rng, n)
        Q = _spd(rng, n, 0.05)
        R = _spd(rng, m, 0.5)
    else:
        P0 = np.stack([_spd(rng, n) for _ in range(N)])
        Q = _spd(rng, n, 0.05)
        R = np.stack([_spd(rng, m, 0.5) for _ in range(N)])
    return {
        "A": A,
        "H": H,
        "Q": Q,
        "R": R,
        "P0": P0,
        "x0": rng.standard_normal((N, n)),
        "B": rng.standard_normal((n, 2)),
        "u": rng.standard_normal((N, 2)),
    }


def _filterpy(p: dict[str, np.ndarray], i: int, n: int, m: int) -> KalmanFilter:
    kf = KalmanFilter(dim_x=n, dim_z=m, dim_u=2)
    kf.x = p["x0"][i].reshape(n, 1).copy()
    kf.P = (p["P0"] if p["P0"].ndim == 2 else p["P0"][i]).copy()
    kf.F, kf.H, kf.Q, kf.B = p["A"], p["H"], p["Q"], p["B"]
    kf.R = p["R"] if p["R"].ndim == 2 else p["R"][i]
    return kf


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    N=st.integers(1, 6),
    n=st.integers(1, 6),
    m=st.integers(1, 4),
    steps=st.integers(1, 12),
    shared=st.booleans(),
    p_missing=st.sampled_from([0.0, 0.3, 0.7]),
)
def test_batched_engine_agrees_with_filterpy(
    seed: int, N: int, n: int, m: int, steps: int, shared: bool, p_missing: float
) -> None:
    """Random systems, random masks: every site's x and P equal filterpy's to 1e-9."""
    p = _problem(seed, N, n, m, shared)
    rng = np.random.default_rng(seed + 1)
    eng = BatchKalman(p["x0"], p["P0"])
    ref = [_filterpy(p, i, n, m) for i in range(N)]
    for _ in range(steps):
        z = rng.standard_normal((N, m)) * 3
        mask = rng.random((N, m)) >= p_missing
        u = rng.standard_normal((N, 2))
        eng.predict(p["A"], p["Q"], p["B"], u)
        st_ = eng.update(z, p["H"], p["R"], mask, stats=True)
        assert st_ is not None
        for i, kf in enumerate(ref):
            kf.predict(u=u[i].reshape(2, 1))
            obs = mask[i]
            if obs.any():
                R_i = kf.R[np.ix_(obs, obs)]
                kf.update(z[i][obs].reshape(-1, 1), R=R_i, H=p["H"][obs])
                np.testing.assert_allclose(st_.loglik[i], kf.log_likelihood, rtol=1e-9, atol=1e-9)
            else:
                kf.update(None)
                assert st_.dof[i] == 0
            scale = 1.0 + np.abs(kf.P).max()
            np.testing.assert_allclose(eng.x[i], kf.x[:, 0], rtol=1e-9, atol=1e-9 * scale)
            np.testing.assert_allclose(eng.covariances()[i], kf.P, rtol=1e-9, atol=1e-9 * scale)


def test_shared_path_is_taken_and_left_automatically() -> None:
    p = _problem(3, 50, 6, 4, shared=True)
    eng = BatchKalman(p["x0"], np.broadcast_to(p["P0"], (50, 6, 6)).copy())
    assert eng.shared  # identical per-site covariances collapse to one
    rng = np.random.default_rng(0)
    for _ in range(5):
        eng.predict(p["A"], p["Q"])
        eng.update(rng.standard_normal((50, 4)), p["H"], p["R"])
    assert eng.shared
    same = np.ones((50, 4), bool)
    same[:, 1] = False  # the same pattern everywhere keeps the shared path
    eng.update(rng.standard_normal((50, 4)), p["H"], p["R"], same)
    assert eng.shared
    ragged = np.ones((50, 4), bool)
    ragged[7, 2] = False
    eng.update(rng.standard_normal((50, 4)), p["H"], p["R"], ragged)
    assert not eng.shared
    assert eng.P.shape == (50, 6, 6)


def test_shared_path_equals_per_site_path() -> None:
    p = _problem(11, 30, 6, 4, shared=True)
    shared = BatchKalman(p["x0"], p["P0"])
    per_site = BatchKalman(p["x0"], np.broadcast_to(p["P0"], (30, 6, 6)).copy())
    per_site.P = np.broadcast_to(p["P0"], (30, 6, 6)).copy()  # force the per-site path
    rng = np.random.default_rng(2)
    for _ in range(20):
        z = rng.standard_normal((30, 4))
        for eng in (shared, per_site):
            eng.predict(p["A"], p["Q"])
            eng.update(z, p["H"], p["R"])
    assert shared.shared
    assert not per_site.shared
    np.testing.assert_allclose(shared.x, per_site.x, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(shared.covariances(), per_site.P, rtol=1e-9, atol=1e-9)


def test_long_shared_recursion_stays_symmetric_positive_definite() -> None:
    """FACTS.md: a shared covariance recursion diverged after ~500 steps unless re-symmetrised."""
    rng = np.random.default_rng(5)
    n, m = 6, 4
    A = np.eye(n) + 0.01 * rng.standard_normal((n, n))
    H = rng.standard_normal((m, n))
    eng = BatchKalman(np.zeros((100, n)), np.eye(n))
    for _ in range(2000):
        eng.predict(A, 1e-6 * np.eye(n))
        eng.update(rng.standard_normal((100, m)), H, 1e-4 * np.eye(m))
    assert eng.shared
    assert np.array_equal(eng.P, eng.P.T)
    assert is_spd(eng.P)
    assert np.isfinite(eng.x).all()


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), steps=st.integers(1, 40), p_missing=st.floats(0, 0.9))
def test_covariances_stay_symmetric_positive_definite(
    seed: int, steps: int, p_missing: float
) -> None:
    p = _problem(seed, 8, 5, 3, shared=False)
    rng = np.random.default_rng(seed)
    eng = BatchKalman(p["x0"], p["P0"])
    for _ in range(steps):
        eng.predict(p["A"], p["Q"])
        eng.update(rng.standard_normal((8, 3)), p["H"], p["R"], rng.random((8, 3)) >= p_missing)
        P = eng.covariances()
        assert np.array_equal(P, np.swapaxes(P, 1, 2))
        assert is_spd(P)


def test_fully_missing_update_changes_nothing() -> None:
    p = _problem(1, 4, 3, 2, shared=False)
    x, P = predict(p["x0"], p["P0"], p["A"], p["Q"])
    x2, P2, st_ = update(x, P, np.zeros((4, 2)), p["H"], p["R"], np.zeros((4, 2), bool), True)
    assert st_ is not None
    np.testing.assert_allclose(x2, x)
    np.testing.assert_allclose(P2, P, atol=1e-12)
    assert (st_.dof == 0).all()
    assert (st_.loglik == 0).all()


def test_bad_shapes_raise() -> None:
    with pytest.raises(ModelError, match="x0 must be"):
        BatchKalman(np.zeros(3), np.eye(3))
    with pytest.raises(ModelError, match="P0 must be"):
        BatchKalman(np.zeros((2, 3)), np.eye(2))
    with pytest.raises(ModelError, match="z has shape"):
        update(np.zeros((2, 3)), np.eye(3), np.zeros((3, 1)), np.ones((1, 3)), np.eye(1))


def test_projection_respects_bounds_and_weights_by_covariance() -> None:
    P = np.array([[1.0, 0.9], [0.9, 1.0]])
    D = np.eye(2)
    x = np.array([1.5, 0.5])
    xt = project(x, P, D, np.array([0.0, 0.0]), np.array([1.0, np.inf]))
    assert xt[0] == pytest.approx(1.0)
    # correlated second component is pulled along: x2 - P21/P11 * (x1 - 1)
    assert xt[1] == pytest.approx(0.5 - 0.9 * 0.5)
    # a point inside the set is unchanged
    inside = np.array([0.2, 3.0])
    np.testing.assert_array_equal(project(inside, P, D, np.zeros(2), np.array([1.0, 5.0])), inside)


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_projection_lands_in_the_box(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 4
    P = _spd(rng, n)
    D = rng.standard_normal((3, n))
    x = rng.standard_normal(n) * 5
    lo = np.array([-1.0, -np.inf, 0.0])
    hi = np.array([1.0, 0.5, np.inf])
    v = D @ project(x, P, D, lo, hi)
    assert (v >= lo - 1e-7).all()
    assert (v <= hi + 1e-7).all()


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_one_bound_past_is_projected_to_the_covariance_weighted_nearest_point(seed: int) -> None:
    """The one-bound path (no solve) against the KKT system of the same projection: the
    minimiser of (x~ - x)^T P^-1 (x~ - x) with the bound as an equality. The caller's ``D x``
    gives the same result as none."""
    rng = np.random.default_rng(seed)
    n = 5
    P = _spd(rng, n)
    D = rng.standard_normal((3, n))
    x = rng.standard_normal(n)
    v = D @ x
    lo = v - 1.0 - rng.random(3)  # every bound holds with room...
    hi = v + 1.0 + rng.random(3)
    i = int(rng.integers(3))
    if rng.random() < 0.5:  # ...but one, which x is past
        hi[i] = v[i] - 0.5
    else:
        lo[i] = v[i] + 0.5
    bound = hi[i] if v[i] > hi[i] else lo[i]
    kkt = np.zeros((n + 1, n + 1))
    Pinv = np.linalg.inv(P)
    kkt[:n, :n], kkt[:n, n], kkt[n, :n] = Pinv, D[i], D[i]
    expected = np.linalg.solve(kkt, np.append(Pinv @ x, bound))[:n]
    xt = project(x, P, D, lo, hi)
    after = D @ xt
    assert ((after >= lo - 1e-7) & (after <= hi + 1e-7)).all()
    reached = D @ expected
    if ((reached >= lo - 1e-9) & (reached <= hi + 1e-9)).all():  # one active bound: exact
        np.testing.assert_allclose(xt, expected, rtol=1e-9, atol=1e-9)
    np.testing.assert_array_equal(project(x, P, D, lo, hi, Dx=v.tolist()), xt)
