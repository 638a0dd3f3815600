"""Faults injected into a real series stay flagged for their whole duration; false alarms."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from federation.model import Site
from twin.site import SiteTwin
from twin.ssm import BlockSpec
from twin.state import SiteStatus
from twin.telemetry import TelemetrySample

FAULT_HOURS = 96


def _replay(
    site: Site, blocks: Sequence[BlockSpec], t: np.ndarray, y: np.ndarray, accept_at: int = -1
) -> tuple[np.ndarray, SiteTwin]:
    """Feed ``y``; the hours flagged degraded (``accept_at``: the operator accepts then)."""
    tw = SiteTwin(site, {}, None, blocks)
    flagged = np.zeros(len(y), dtype=bool)
    for k in range(len(y)):
        tw.ingest(TelemetrySample(site=site.id, timestamp=t[k], carbon_intensity=float(y[k])))
        if k == accept_at:
            assert tw.accept()
        flagged[k] = tw.status()[0] is SiteStatus.DEGRADED
    return flagged, tw


@pytest.mark.parametrize(("kind", "size"), [("step", 60.0), ("step", 30.0), ("stuck", 0.0)])
def test_a_persistent_fault_stays_flagged_until_the_site_recovers(
    french: tuple[Site, list[BlockSpec], np.ndarray, np.ndarray], kind: str, size: float
) -> None:
    """A step (60 g; 30 g is about 2.3 sd of FR's day-to-day change, less than the model
    expects the level to drift in four days) or a stuck sensor, left for four days."""
    site, blocks, t, y = french
    part = slice(1500, 1500 + 24 * 42)  # six weeks the model was not fitted on
    tt, clean = t[part], y[part]
    start = 24 * 21
    for offset in (0, 7):  # two start hours: day and night
        a = start + offset
        faulty = clean.copy()
        end = a + FAULT_HOURS
        if kind == "step":
            faulty[a:end] += size  # gCO2e/kWh, left in place for four days
        else:
            faulty[a:end] = clean[a]  # the sensor repeats its last value
        flagged, tw = _replay(site, blocks, tt, faulty)
        first = a + int(np.argmax(flagged[a:end]))
        assert flagged[a:end].any()
        assert first - a <= (3 if kind == "step" else 12)  # hours to flag
        assert flagged[first:end].all()  # then flagged every hour until the fault ends
        # and ok again within 16 h of the recovery: the step's support lapses within about
        # half its 12 samples, then two windows of 6 samples after the lapse must pass
        assert not flagged[end + 16 :].any()
        assert tw.counters.faults == 1
        assert tw.counters.faults_recovered == 1


def test_an_accepted_new_level_is_no_longer_flagged(
    french: tuple[Site, list[BlockSpec], np.ndarray, np.ndarray],
) -> None:
    site, blocks, t, y = french
    part = slice(1500, 1500 + 24 * 28)
    tt, faulty = t[part], y[part].copy()
    a = 24 * 14
    faulty[a:] += 120.0  # a step that is real: it never goes away
    flagged, _ = _replay(site, blocks, tt, faulty)
    assert flagged[a + 3 :].all()  # without an operator: flagged to the end (two weeks)
    flagged, tw = _replay(site, blocks, tt, faulty, accept_at=a + 24)
    assert flagged[a + 3 : a + 24].all()
    assert not flagged[a + 25 :].any()
    assert tw.counters.faults_accepted == 1


def test_false_alarms_on_the_clean_series_are_rare(
    french: tuple[Site, list[BlockSpec], np.ndarray, np.ndarray],
) -> None:
    site, blocks, t, y = french
    part = slice(1500, None)  # the rest of 2023, never fitted on
    flagged, tw = _replay(site, blocks, t[part], y[part])
    weeks = len(y[part]) / 168
    assert tw.counters.faults / weeks <= 0.5  # false alarms per site-week
    assert flagged.mean() <= 0.02


def test_a_step_stays_flagged_while_the_series_itself_falls_by_about_its_size(
    french: tuple[Site, list[BlockSpec], np.ndarray, np.ndarray],
) -> None:
    """Real FR hours (mid-September 2023) where, 53 h into a 2-sd step, the series itself
    falls by about the step's size for six hours: six samples in a row are then better
    explained without the offset. The step still holds over its last samples as a whole
    (``twin.faults.SUPPORT_SAMPLES``), so it stays flagged to its end."""
    site, blocks, t, y = french
    a = 6089  # the fault's first hour in the year
    part = slice(a - 24 * 14, a + FAULT_HOURS + 24)  # two weeks before it, a day after
    faulty = y.copy()
    faulty[a : a + FAULT_HOURS] += 25.8  # 2 sd of the day-to-day change over the rest of 2023
    k = 24 * 14
    flagged, tw = _replay(site, blocks, t[part], faulty[part])
    first = k + int(np.argmax(flagged[k:]))
    assert first - k <= 3
    assert flagged[first : k + FAULT_HOURS].all()
    assert not flagged[k + FAULT_HOURS + 12 :].any()  # and ok again once it has ended
    assert tw.counters.faults == 1


def test_a_sensor_that_gets_stuck_while_a_fault_is_open_keeps_the_site_flagged(
    french: tuple[Site, list[BlockSpec], np.ndarray, np.ndarray],
) -> None:
    """A 60 g step for six hours, then the sensor repeats one healthy-looking value for two
    days. The repeated values agree with the reference, but a value repeated exactly is no
    evidence of a recovery: the site stays flagged from the step to the end of the stuck
    period, as one fault that became a stuck one."""
    site, blocks, t, y = french
    part = slice(1500, 1500 + 24 * 28)
    tt, faulty = t[part], y[part].copy()
    a = 24 * 14
    faulty[a : a + 6] += 60.0
    faulty[a + 6 : a + 54] = faulty[a + 6] - 60.0  # stuck at the healthy level of that hour
    flagged, tw = _replay(site, blocks, tt[: a + 54], faulty[: a + 54])
    first = a + int(np.argmax(flagged[a:]))
    assert first - a <= 3
    assert flagged[first:].all()
    assert tw.counters.faults == 1
    assert tw.fault is not None
    assert tw.fault.kind == "stuck"


def test_the_offset_hypothesis_shares_the_reference_update_gain(
    french: tuple[Site, list[BlockSpec], np.ndarray, np.ndarray],
) -> None:
    """The reference's update of ``z - offset`` is derived from its update of ``z`` (same
    gain and covariance) when ``S`` is diagonal; the general path (a full second update)
    gives the same reference, step after step."""
    site, blocks, t, y = french
    part = slice(1500, 1500 + 24 * 21)
    tt, faulty = t[part], y[part].copy()
    a = 24 * 10
    faulty[a : a + 96] += 30.0
    fast = SiteTwin(site, {}, None, blocks)
    full = SiteTwin(site, {}, None, blocks)
    offsets = 0
    for k in range(len(faulty)):
        sample = TelemetrySample(site=site.id, timestamp=tt[k], carbon_intensity=float(faulty[k]))
        fast.ingest(sample)
        full._separable = False  # the general path (a full update of z - offset)
        full.ingest(sample)
        assert (fast.fault is None) == (full.fault is None)
        if fast.fault is not None and full.fault is not None:
            offsets += bool(fast.fault.offset)
            np.testing.assert_allclose(fast.fault.x, full.fault.x, rtol=1e-9, atol=1e-9)
            np.testing.assert_allclose(fast.fault.P, full.fault.P, rtol=1e-9, atol=1e-9)
    assert offsets > 48  # the offset hypothesis was followed for days


def test_the_noise_level_is_the_median_nis_over_its_chi_square_median_floored_at_one() -> None:
    from scipy.stats import chi2

    from twin.faults import LEVEL_EVERY, NoiseLevel

    rng = np.random.default_rng(3)
    noisy = NoiseLevel(window=400, max_dof=2)
    for k in range(400 + LEVEL_EVERY):
        dof = 1 + k % 2
        nis = 3.0 * float(chi2.rvs(dof, random_state=rng))  # innovations 3x the model's variance
        if k < 399:
            assert noisy.add(nis, dof) == nis  # no estimate before the window is full
        else:
            noisy.add(nis, dof)
    assert noisy.scale == pytest.approx(3.0, rel=0.15)
    assert noisy.add(6.0, 1) == pytest.approx(6.0 / noisy.scale)
    quiet = NoiseLevel(window=400, max_dof=1)
    for _ in range(400 + LEVEL_EVERY):
        quiet.add(0.3 * float(chi2.rvs(1, random_state=rng)), 1)
    assert quiet.scale == 1.0  # never below the model's noise
    off = NoiseLevel(window=0, max_dof=1)
    for _ in range(2 * LEVEL_EVERY):
        off.add(50.0, 1)
    assert off.scale == 1.0
    resumed = NoiseLevel(window=400, max_dof=2)
    resumed.restore(noisy.to_state())
    assert resumed.scale == noisy.scale
    assert resumed.add(1.0, 1) == noisy.add(1.0, 1)


def _noisy_price_site(sd_factor: float, hours: int, seed: int) -> tuple[SiteTwin, np.ndarray]:
    """A twin of the demo site and an hourly price series drawn from its own model with
    ``sd_factor`` times the model's noise (process and observation)."""
    from federation.model import load_demo_federation

    site = load_demo_federation().sites[0]
    tw = SiteTwin(site, {})
    A, Q = tw.model.transition(3600.0)
    row = tw.model.observations.index("power_price")
    H, R = tw.model.H[row], float(tw.model.R[row, row])
    rng = np.random.default_rng(seed)
    L = np.linalg.cholesky(Q + 1e-12 * np.eye(len(Q)))
    x = tw.model.initial({"power_price": 0.1})[0]
    z = np.empty(hours)
    for k in range(hours):
        x = A @ x + sd_factor * (L @ rng.standard_normal(len(x)))
        z[k] = H @ x + sd_factor * np.sqrt(R) * rng.standard_normal()
    return tw, z


@pytest.mark.parametrize("level_window", [672, 0])
def test_a_site_noisier_than_its_model_is_not_flagged_for_its_ordinary_moves(
    level_window: int,
) -> None:
    """Prices three times as noisy as the model says (a block fitted on a calm season):
    their ordinary moves are not jumps once the twin knows the site's noise level, while
    a step that stands out of that noise is flagged at once and held while it lasts."""
    from twin.site import TwinConfig

    hours, a, end = 24 * 7 * 8, 24 * 7 * 6, 24 * 7 * 6 + FAULT_HOURS
    tw0, z = _noisy_price_site(3.0, hours, seed=11)
    tw = SiteTwin(tw0.site, {}, TwinConfig(level_window=level_window))
    day_sd = float(np.std(z[24:a] - z[: a - 24]))
    z[a:end] += 3.0 * day_sd  # out of the site's own noise
    flagged = np.zeros(hours, dtype=bool)
    known = level_window + 1  # the first estimate of the site's noise level (0: none)
    for k in range(hours):
        if k == known:
            faults_unknown = tw.counters.faults
        tw.ingest(TelemetrySample(site=tw.site.id, timestamp=3600.0 * k, power_price=z[k]))
        flagged[k] = tw.status()[0] is SiteStatus.DEGRADED
        if k < a and flagged[k] and k % 24 == 9:
            tw.accept()  # the daily operator of the benchmark, before the fault
    in_fault = tw.fault is not None and tw.fault.since >= 3600 * a
    false_alarms = tw.counters.faults - in_fault - faults_unknown  # with the level known

    if level_window == 0:  # without the site's noise level: one false alarm after another
        assert false_alarms >= 5
        return
    assert tw.level.scale > 2.0
    assert false_alarms <= 1
    first = a + int(np.argmax(flagged[a:end]))
    assert flagged[a:end].any()
    assert first - a <= 3
    assert flagged[first:end].all()


def test_a_step_on_a_noisy_site_outlasts_hours_when_the_series_swings_back_by_its_size() -> None:
    """Prices three times as noisy as the model, a step that stands out of that noise, and
    ten hours in it when the series swings back by about the step's size (as a price does
    when its day turns): the step stays one fault, flagged throughout. A recovery is told
    only by windows of samples that all came after the step's support lapsed."""
    hours, a, end = 24 * 7 * 6, 24 * 7 * 5, 24 * 7 * 5 + FAULT_HOURS
    tw0, z = _noisy_price_site(3.0, hours, seed=11)
    tw = SiteTwin(tw0.site, {})
    day_sd = float(np.std(z[24:a] - z[: a - 24]))
    z[a:end] += 3.0 * day_sd
    z[a + 12 : a + 22] -= 3.0 * day_sd  # the series itself back at its level for ten hours
    flagged = np.zeros(hours, dtype=bool)
    for k in range(hours):
        tw.ingest(TelemetrySample(site=tw.site.id, timestamp=3600.0 * k, power_price=z[k]))
        flagged[k] = tw.status()[0] is SiteStatus.DEGRADED
        if k < a and flagged[k] and k % 24 == 9:
            tw.accept()
        if k == a - 1:
            faults = tw.counters.faults
    first = a + int(np.argmax(flagged[a:end]))
    assert first - a <= 3
    assert flagged[first:end].all()
    assert tw.counters.faults == faults + 1


def test_a_site_that_comes_back_reads_ok_again_after_a_step(
    french: tuple[Site, list[BlockSpec], np.ndarray, np.ndarray],
) -> None:
    """A 2-sd step (26 g) from 21 July 2023 02:00 UTC for four days, after three weeks with
    the daily operator: flagged throughout, then `ok` within 30 h of its end. Before the
    jump back put the step in doubt, one hour after the end where the series sat a hair
    closer to the reference plus the offset set the reference a whole offset below the
    site, and the site stayed flagged for good (more than three days here)."""
    site, blocks, t, y = french
    a0, warm = 1500 + 3326, 24 * 21
    tt, v = t[a0 - warm : a0 + FAULT_HOURS + 72], y[a0 - warm : a0 + FAULT_HOURS + 72].copy()
    v[warm : warm + FAULT_HOURS] += 26.0
    tw = SiteTwin(site, {}, None, blocks)
    flagged = np.zeros(len(v), dtype=bool)
    for k in range(len(v)):
        tw.ingest(TelemetrySample(site=site.id, timestamp=tt[k], carbon_intensity=float(v[k])))
        flagged[k] = tw.status()[0] is SiteStatus.DEGRADED
        if k < warm and flagged[k] and int(tt[k] // 3600) % 24 == 9:
            tw.accept()
    assert flagged[warm + 2 : warm + FAULT_HOURS].all()
    assert not flagged[warm + FAULT_HOURS + 30 :].any()
    assert tw.counters.faults_recovered == 1


def test_a_step_whose_first_offset_took_in_a_real_move_stays_flagged() -> None:
    """Belgian day-ahead prices, 2022 (a year the fault path was not developed on): the block
    fitted on the first 1,500 hours, a week with the daily operator, then a step of 2 sd of
    the day-to-day change for four days from 11 March 12:00 UTC (the fault benchmark's first
    start hour). A real price move was flagged just before and is still open: the jump's
    offset takes in that move, which ends within a day, while the step goes on. Once the
    offset no longer explains the samples, the samples since then still hold an offset of
    their own, so the step persists at that size. Held 47.9 % of its time before, when the
    site read `ok` as soon as the windows of those samples passed against the reference."""
    from federation.model import load_demo_federation
    from tests.conftest import shared_path
    from twin.fit import default_spec, fit_block
    from twin.series import load_series
    from twin.site import default_blocks

    s = load_series(
        shared_path("energy", "entsoe_BE_dayahead_prices_2022_2024_hourly.csv"), "time", "DAM_price"
    )
    keep = s.times < 1672531200.0  # 2022
    t, y = s.times[keep], s.values[keep]
    fitted = fit_block(default_spec("power_price", y[:1500]), t[:1500], y[:1500], window=None)
    site = load_demo_federation().sites[0]
    blocks = [b for b in default_blocks(site, {}) if b.name != "power_price"] + [fitted.spec]
    tt, v = t[1500:], y[1500:].copy()
    day_sd = float(np.nanstd(v[24:] - v[:-24]))
    a = 24 * 7
    v[a : a + FAULT_HOURS] += 2.0 * day_sd
    tw = SiteTwin(site, {}, None, blocks)
    flagged = np.zeros(a + FAULT_HOURS, dtype=bool)
    for k in range(a + FAULT_HOURS):
        if np.isfinite(v[k]):
            tw.ingest(TelemetrySample(site=site.id, timestamp=tt[k], power_price=float(v[k])))
        flagged[k] = tw.status(tt[k])[0] is SiteStatus.DEGRADED
        if k < a and flagged[k] and int(tt[k] // 3600) % 24 == 9:
            tw.accept()
    held = flagged[a:]
    first = int(np.argmax(held))
    assert held.any()
    assert first <= 2
    assert held[first:].mean() >= 0.8, held[first:].mean()
