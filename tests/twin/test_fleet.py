"""FleetTwin: many sites in one batched call, equal to filterpy site by site."""

from __future__ import annotations

import math

import numpy as np
import pytest
from filterpy.kalman import KalmanFilter

from twin.errors import ModelError
from twin.fleet import FleetTwin
from twin.ssm import BlockSpec, StateSpaceModel
from twin.state import SiteStatus

H = 3600.0
BLOCKS = (
    BlockSpec(
        "price", ar=True, daily=1, q_level=1e-8, q_ar=1e-7, q_season=1e-10, r=1e-5, scale=0.1
    ),
    BlockSpec("carbon", daily=1, q_level=1e-2, q_season=1e-4, r=4.0, scale=50.0),
)


def _obs(N: int, T: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    k = np.arange(T)[:, None]
    price = 0.1 + 0.02 * np.cos(2 * np.pi * k / 24) + rng.normal(0, 0.003, (T, N))
    carbon = 50 + 10 * np.cos(2 * np.pi * (k - 19) / 24) + rng.normal(0, 2, (T, N))
    return np.stack([price, carbon], axis=2)  # (T, N, m)


def test_fleet_equals_filterpy_per_site_with_missing_data() -> None:
    N, T = 7, 40
    z = _obs(N, T)
    rng = np.random.default_rng(1)
    z[rng.random(z.shape) < 0.2] = np.nan
    fleet = FleetTwin(BLOCKS, [f"s{i}" for i in range(N)])
    model = StateSpaceModel(BLOCKS)
    x0, P0 = model.initial()
    ref = []
    for _ in range(N):
        kf = KalmanFilter(dim_x=model.dim, dim_z=2)
        kf.x, kf.P, kf.H, kf.R = x0.reshape(-1, 1).copy(), P0.copy(), model.H, model.R
        ref.append(kf)
    for k in range(T):
        fleet.step(k * H, z[k])
        A, Q = model.transition(H)
        for i, kf in enumerate(ref):
            if k:
                kf.F, kf.Q = A, Q
                kf.predict()
            obs = np.isfinite(z[k, i])
            if obs.any():
                kf.update(z[k, i][obs].reshape(-1, 1), R=model.R[np.ix_(obs, obs)], H=model.H[obs])
            np.testing.assert_allclose(fleet.kf.x[i], kf.x[:, 0], rtol=1e-9, atol=1e-9)
    assert not fleet.shared  # masks differed between sites


def test_complete_data_keeps_the_shared_path_and_flags_a_faulty_site() -> None:
    N, T = 1000, 24 * 4
    z = _obs(N, T, seed=3)
    # site 17's carbon readings go erratic for the last six hours (+-300 g, alternating)
    z[-6:, 17, 1] += 300.0 * np.array([1, -1, 1, -1, 1, -1])
    fleet = FleetTwin(BLOCKS, [f"s{i}" for i in range(N)], first=z[0])
    for k in range(T):
        fleet.step(k * H, z[k])
    assert fleet.shared
    st = fleet.statuses()
    assert st[17] in (SiteStatus.DEGRADED, SiteStatus.DOWN)
    assert sum(s is not SiteStatus.OK for s in st) <= 5  # false alarms stay rare
    means, stds = fleet.forecast(24)
    assert means.shape == (24, N, 2)
    assert (stds > 0).all()
    assert abs(float(np.median(means[:, :, 0])) - 0.1) < 0.02


def test_bounds_are_enforced_for_every_site() -> None:
    blocks = (BlockSpec("u", trend=True, q_level=1e-4, q_trend=1e-9, r=1e-4, lower=0.0, upper=1.0),)
    N = 50
    fleet = FleetTwin(blocks, [str(i) for i in range(N)])
    rng = np.random.default_rng(0)
    for k in range(30):
        z = np.clip(rng.normal(0.95 + 0.01 * k, 0.05, (N, 1)), 0, 1)
        fleet.step(k * 600.0, z)
        v = fleet.kf.x @ fleet.model.H[0]
        assert (v >= -1e-9).all()
        assert (v <= 1 + 1e-9).all()


def test_fleet_input_checks() -> None:
    fleet = FleetTwin(BLOCKS, ["a", "b"])
    with pytest.raises(ModelError, match="z must be"):
        fleet.step(0.0, np.zeros((3, 2)))
    with pytest.raises(ModelError, match="no estimate yet"):
        fleet.forecast(3)
    fleet.step(0.0, np.zeros((2, 2)))
    with pytest.raises(ModelError, match="not after"):
        fleet.step(0.0, np.zeros((2, 2)))
    with pytest.raises(ModelError, match="at least one site"):
        FleetTwin(BLOCKS, [])
    assert math.isfinite(float(fleet.window_p()[0]))
