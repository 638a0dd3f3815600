"""Calibrated spreads: the calibrator alone, and the bands of the published states on held-out
hours of a real series (what the planners read as ``mean - z * std``)."""

from __future__ import annotations

import numpy as np
import pytest

from federation.model import Federation, Site
from tests.twin.conftest import FRENCH_TRAIN
from twin.calibration import W80, Z80, Z95, LeadCalibrator, coverage
from twin.federation_twin import FederationTwin
from twin.site import SiteTwin, TwinConfig
from twin.ssm import BlockSpec
from twin.telemetry import TelemetrySample


def test_calibrator_learns_the_scale_of_gaussian_errors() -> None:
    rng = np.random.default_rng(1)
    cal = LeadCalibrator(2, half_life=1000)  # a long memory: the estimate's noise is small
    for z in rng.normal(0, 2.0, 8000):  # lead 0: the model's sd is half the truth
        cal.update(0, float(z))
    for z in rng.normal(0, 0.5, 8000):  # lead 1: twice the truth
        cal.update(1, float(z))
    assert cal.factor(0)[0] == pytest.approx(2.0, rel=0.06)
    assert cal.factor(1)[0] == pytest.approx(0.5, rel=0.06)
    assert list(cal.seen) == [8000, 8000]


def test_heavy_tails_miss_both_levels_by_about_the_same() -> None:
    """Student-t errors (3 dof): no Gaussian spread fits both levels; the weighted factor
    keeps each within 5 points of nominal, the plain mean of the two factors does not."""
    rng = np.random.default_rng(2)
    z = rng.standard_t(3, 20000)
    cal = LeadCalibrator(1, half_life=2000)
    for v in z[:10000]:
        cal.update(0, float(v))
    c = float(cal.factor(0)[0])
    held = z[10000:, None]
    c80, c95 = (
        coverage(held, np.full_like(held, c), Z80)[0],
        coverage(held, np.full_like(held, c), Z95)[0],
    )
    assert abs(c80 - 0.80) <= 0.05, (c80, c95)
    assert abs(c95 - 0.95) <= 0.05, (c80, c95)
    plain = 0.5 * (cal.q80[0] / Z80 + cal.q95[0] / Z95)
    p80 = coverage(held, np.full_like(held, plain), Z80)[0]
    assert abs(p80 - 0.80) > abs(c80 - 0.80)  # the weight moves the 80 % band closer
    assert 0.6 < W80 < 0.7


def _held_out_bands(
    site: Site,
    blocks: list[BlockSpec],
    t: np.ndarray,
    y: np.ndarray,
    federation: Federation,
    calibrate: bool,
    lead_count: int = 24,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Feed the series hour by hour to a ``FederationTwin`` and read the planners' view
    after each hour of the held-out part: the published carbon forecast's mean and std per
    lead, and the value each lead's slot ends with (nan past the end)."""
    fed = federation.model_copy(update={"sites": [site], "links": []})
    twin = FederationTwin(fed, TwinConfig(calibrate=calibrate), params={site.id: blocks})
    T = len(y)
    origins = np.arange(FRENCH_TRAIN, T - 1)
    means = np.full((len(origins), lead_count), np.nan)
    stds = np.full_like(means, np.nan)
    for k in range(T - 1):
        if np.isfinite(y[k]):
            twin.ingest([TelemetrySample(site=site.id, timestamp=t[k], carbon_intensity=y[k])])
        if k >= FRENCH_TRAIN:
            fc = twin.view(now=t[k])[site.id].carbon_intensity
            assert fc is not None
            means[k - FRENCH_TRAIN] = fc.mean[:lead_count]
            stds[k - FRENCH_TRAIN] = fc.std[:lead_count]
        elif k % 24 == 0:
            twin.view(now=t[k])  # the site publishes once a day while training
    # the sample at t + (j + 1) h ends slot j of a forecast issued at t
    idx = origins[:, None] + np.arange(1, lead_count + 1)[None, :]
    target = np.where(idx < T, y[np.minimum(idx, T - 1)], np.nan)
    return means, stds, target


@pytest.mark.parametrize("calibrate", [True, False])
def test_published_bands_cover_as_claimed_on_held_out_hours(
    french: tuple[Site, list[BlockSpec], np.ndarray, np.ndarray],
    demo_federation: Federation,
    calibrate: bool,
) -> None:
    """FR carbon intensity, the block fitted on the first 1,500 hours: over the following
    3,000 hours (after two weeks of learning), the 80 % and 95 % bands of the states the
    planners read cover within 5 points of nominal at every lead 1-24 h; without
    calibration (the model's spread) they do not."""
    site, blocks, t, y = french
    T = FRENCH_TRAIN + 336 + 3000
    means, stds, target = _held_out_bands(site, blocks, t[:T], y[:T], demo_federation, calibrate)
    err = (target - means)[336:]
    sd = stds[336:]
    c80, c95 = coverage(err, sd, Z80), coverage(err, sd, Z95)
    within = bool((np.abs(c80 - 0.80) <= 0.05).all() and (np.abs(c95 - 0.95) <= 0.05).all())
    assert within is calibrate, (np.round(c80, 3), np.round(c95, 3))


def test_calibration_survives_a_snapshot(
    french: tuple[Site, list[BlockSpec], np.ndarray, np.ndarray],
) -> None:
    site, blocks, t, y = french
    tw = SiteTwin(site, {}, None, blocks)
    for k in range(400):
        tw.ingest(TelemetrySample(site=site.id, timestamp=t[k], carbon_intensity=y[k]))
        tw.forecast()
    learned = tw.calibration["carbon_intensity"]
    assert learned.seen.min() > 300  # every lead has seen errors
    back = SiteTwin.from_state(site, {}, tw.config, tw.to_state())
    np.testing.assert_array_equal(back.calibration["carbon_intensity"].factor(), learned.factor())
    a, b = tw.forecast(calibrated=False), back.forecast()
    raw = np.array(a.blocks["carbon_intensity"].std)
    published = np.array(b.blocks["carbon_intensity"].std)
    np.testing.assert_allclose(published, raw * learned.factor(), rtol=1e-12)
