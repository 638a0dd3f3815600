"""The twin of one site: ordering, duplicates, masks, bounds, what-if, anomalies, staleness."""

from __future__ import annotations

import math

import numpy as np
import pytest
from filterpy.kalman import KalmanFilter
from hypothesis import example, given, settings
from hypothesis import strategies as st

from federation.model import Federation
from twin.errors import ModelError
from twin.site import SiteTwin, TwinConfig
from twin.state import SiteStatus
from twin.telemetry import TelemetrySample

T0 = 1_767_571_200.0
H = 3600.0


def _normal(site: str, k: int, rng: np.random.Generator, cores: int = 120) -> TelemetrySample:
    hod = k % 24
    return TelemetrySample(
        site=site,
        timestamp=T0 + H * k,
        utilisation=float(
            np.clip(0.5 + 0.2 * math.sin(2 * math.pi * hod / 24) + rng.normal(0, 0.02), 0, 1)
        ),
        backlog=float(max(0.0, 0.1 * cores * H + rng.normal(0, 0.01 * cores * H))),
        power_price=0.1 + 0.02 * math.cos(2 * math.pi * (hod - 19) / 24) + rng.normal(0, 0.002),
        carbon_intensity=50 + 10 * math.cos(2 * math.pi * (hod - 19) / 24) + rng.normal(0, 1),
    )


@pytest.fixture
def twin(demo_federation: Federation) -> SiteTwin:
    site = demo_federation.site("ddf-fatnode")
    return SiteTwin(site, {"national-hpc": 28.7e6})


def _feed(tw: SiteTwin, hours: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for k in range(hours):
        assert tw.ingest(_normal(tw.site_id, k, rng)) == "applied"


def test_out_of_order_samples_are_rejected_and_counted(twin: SiteTwin) -> None:
    _feed(twin, 10)
    assert twin.x is not None
    x, P = twin.x.copy(), twin.P.copy() if twin.P is not None else None
    late = TelemetrySample(site=twin.site_id, timestamp=T0 + 3.5 * H, utilisation=0.9)
    assert twin.ingest(late) == "rejected"
    assert twin.counters.rejected_out_of_order == 1
    np.testing.assert_array_equal(twin.x, x)
    np.testing.assert_array_equal(twin.P, P)


def test_duplicates_are_idempotent_and_conflicts_counted(twin: SiteTwin) -> None:
    rng = np.random.default_rng(1)
    samples = [_normal(twin.site_id, k, rng) for k in range(12)]
    for s in samples:
        twin.ingest(s)
    x = twin.x.copy() if twin.x is not None else None
    assert twin.ingest(samples[-1]) == "duplicate"
    for s in samples[:-1]:  # replaying the history again changes nothing either
        assert twin.ingest(s) == "rejected"
    np.testing.assert_array_equal(twin.x, x)
    assert twin.counters.duplicates == 1
    changed = samples[-1].model_copy(update={"utilisation": 0.01})
    assert twin.ingest(changed) == "conflicting"
    np.testing.assert_array_equal(twin.x, x)


def test_missing_metrics_are_masked_not_zeros(twin: SiteTwin, demo_federation: Federation) -> None:
    """A sample without utilisation leaves that block as filterpy's reduced update would."""
    _feed(twin, 30)
    assert twin.x is not None
    assert twin.P is not None
    assert twin.t is not None
    x0, P0 = twin.x.copy(), twin.P.copy()
    s = TelemetrySample(site=twin.site_id, timestamp=twin.t + H, power_price=0.3, backlog=1e5)
    twin.ingest(s)
    A, Q = twin.model.transition(H)
    kf = KalmanFilter(dim_x=len(x0), dim_z=2)
    kf.x, kf.P, kf.F, kf.Q = x0.reshape(-1, 1), P0, A, Q
    kf.predict()
    rows = [twin.model.observations.index(n) for n in ("backlog", "power_price")]
    kf.update(np.array([[1e5], [0.3]]), R=twin.model.R[np.ix_(rows, rows)], H=twin.model.H[rows])
    np.testing.assert_allclose(twin.x, kf.x[:, 0], rtol=1e-9, atol=1e-9)
    # the same sample with utilisation = 0 instead of missing moves the utilisation estimate
    other = SiteTwin(twin.site, twin.links)
    other.x, other.P, other.t, other.last_sample_t = x0, P0, s.timestamp - H, s.timestamp - H
    other.ingest(s.model_copy(update={"utilisation": 0.0}))
    u = twin.model.index("utilisation.level")
    assert other.x is not None
    assert other.x[u] < twin.x[u] - 0.01


@settings(max_examples=25, deadline=None)
# a jump that recovers at once: the recovered estimate was once left past the backlog's bound
@example(values=[(0.0, 1.0, False), (1.0, 0.0, True), (0.0, 0.0, True), (1.0, 0.0, True)])
@given(
    values=st.lists(
        st.tuples(st.floats(0, 1), st.floats(0, 1e7), st.booleans()), min_size=2, max_size=30
    )
)
def test_estimates_respect_physical_bounds(values: list[tuple[float, float, bool]]) -> None:
    from federation.model import load_demo_federation

    site = load_demo_federation().site("edge-station")
    tw = SiteTwin(site, {"ddf-fatnode": 1e8})
    for k, (u, b, jump) in enumerate(values):
        tw.ingest(
            TelemetrySample(
                site=site.id,
                timestamp=T0 + k * (H if jump else 60.0),
                utilisation=u,
                backlog=b,
                links={"ddf-fatnode": 0.0},
            )
        )
        assert tw.x is not None
        assert tw.P is not None
        D, lo, hi = tw.model.constraints()
        v = D @ tw.x
        assert (v >= lo - 1e-6).all()
        assert (v <= hi + 1e-6).all()
        assert np.allclose(tw.P, tw.P.T)
        assert (np.linalg.eigvalsh(tw.P) > 0).all()


def test_what_if_forecast_adds_the_planned_load(twin: SiteTwin) -> None:
    _feed(twin, 48)
    base = twin.forecast(horizon=6)
    work = 50.0 * H * 120  # 50 core-hours per core of queued work
    planned = twin.forecast(horizon=6, controls=[(60.0, work)])
    tau = twin.model.block("backlog").tau_drain
    b = twin.model.index("backlog.backlog")
    # x_k = A x_{k-1} + B u_k: the queued work is in the backlog of slot 0...
    diff = [
        p - q
        for p, q in zip(planned.blocks["backlog"].mean, base.blocks["backlog"].mean, strict=False)
    ]
    assert diff[0] == pytest.approx(work, rel=1e-9)
    # ...and drains with the queue's time constant over the following slots
    A, _ = twin.model.transition(H)
    assert A[b, b] == pytest.approx(math.exp(-H / tau))
    assert diff[1] == pytest.approx(A[b, b] * work, rel=1e-6)
    assert diff[3] == pytest.approx(A[b, b] ** 3 * work, rel=1e-6)
    # 60 more cores busy: utilisation up by 60 / 120 (before the bound clips it)
    du = planned.blocks["utilisation"].mean[0] - base.blocks["utilisation"].mean[0]
    assert 0 < du <= 0.5 + 1e-9
    with pytest.raises(ModelError, match="controls must be"):
        twin.forecast(horizon=2, controls=[(1.0, 0.0)] * 3)


def test_recorded_control_enters_the_next_prediction(twin: SiteTwin) -> None:
    _feed(twin, 24)
    before = twin.forecast(horizon=1).blocks["backlog"].mean[0]
    twin.control(cores=0.0, work=1e7)
    after = twin.forecast(horizon=1).blocks["backlog"].mean[0]
    assert after > before + 1e6


def test_anomaly_window_flags_degraded_with_no_health(twin: SiteTwin) -> None:
    _feed(twin, 24 * 5)
    status, health = twin.status()
    assert status is SiteStatus.OK
    assert health > 0.5
    t = twin.t or 0.0
    # the site suddenly reports an empty machine and a huge queue: innovations explode
    for k in range(1, 7):
        twin.ingest(
            TelemetrySample(
                site=twin.site_id,
                timestamp=t + k * H,
                utilisation=0.0,
                backlog=2e7,
                power_price=0.1,
                carbon_intensity=50,
            )
        )
    _stat, dof, p = twin.window_test()
    assert dof > 0
    assert p < twin.config.alpha_down
    # a statistical test alone never calls a site down: degraded, health 0
    assert twin.status() == (SiteStatus.DEGRADED, 0.0)


def test_site_reporting_down_and_silence_make_it_down_then_stale(twin: SiteTwin) -> None:
    _feed(twin, 24)
    t = twin.t or 0.0
    twin.ingest(TelemetrySample(site=twin.site_id, timestamp=t + H, up=False))
    assert twin.status()[0] is SiteStatus.DOWN
    cfg = twin.config
    later = t + H + cfg.stale_after_s + 1
    assert twin.status(later) == (SiteStatus.STALE, 0.0)
    assert twin.status(t + H + cfg.stale_after_s - 1)[0] is SiteStatus.DOWN


def test_state_round_trip(twin: SiteTwin) -> None:
    _feed(twin, 30)
    twin.control(cores=4)
    again = SiteTwin.from_state(twin.site, twin.links, twin.config, twin.to_state())
    np.testing.assert_array_equal(again.x, twin.x)
    np.testing.assert_array_equal(again.P, twin.P)
    assert again.window_test() == twin.window_test()
    assert again.forecast().blocks == twin.forecast().blocks


def test_config_and_site_checks(twin: SiteTwin) -> None:
    with pytest.raises(ModelError, match="alpha"):
        TwinConfig(alpha_degraded=1e-9, alpha_down=1e-3)
    with pytest.raises(ModelError, match="given to the twin of"):
        twin.ingest(TelemetrySample(site="elsewhere", timestamp=T0))
    with pytest.raises(ModelError, match="no estimate yet"):
        twin.forecast()


def test_k_step_state_forecast_mean_and_covariance(twin: SiteTwin) -> None:
    _feed(twin, 24)
    assert twin.x is not None
    assert twin.P is not None
    xs, Ps = twin.predict_states(horizon=4)
    A0, Q0 = twin.model.transition(0.5 * H)
    A, Q = twin.model.transition(H)
    np.testing.assert_allclose(xs[0], A0 @ twin.x)
    np.testing.assert_allclose(Ps[0], A0 @ twin.P @ A0.T + Q0)
    np.testing.assert_allclose(xs[2], A @ xs[1])
    np.testing.assert_allclose(Ps[2], A @ Ps[1] @ A.T + Q)
    lv = twin.model.index("power_price.level")
    assert Ps[3, lv, lv] > Ps[0, lv, lv]  # uncertainty grows with the lead time


def test_a_single_outlier_does_not_flag_but_a_persisting_fault_does(twin: SiteTwin) -> None:
    _feed(twin, 24 * 3)
    rng = np.random.default_rng(9)
    t = twin.t or 0.0
    normal = _normal(twin.site_id, 24 * 3, rng)
    assert normal.power_price is not None
    glitch = normal.model_copy(update={"timestamp": t + H, "power_price": normal.power_price + 0.3})
    twin.ingest(glitch)
    statuses = [twin.status()[0]]
    raw = []
    for k in range(1, 8):
        s = _normal(twin.site_id, 24 * 3 + k, rng).model_copy(update={"timestamp": t + (k + 1) * H})
        twin.ingest(s)
        statuses.append(twin.status()[0])
        raw.append(twin.window_test()[2])
    # The spike opened a suspected jump; the next sample agreed with the estimate from before
    # it, so it was an outlier: removed from the estimate and its innovations forgotten.
    assert all(p > twin.config.alpha_degraded for p in raw)
    assert twin.counters.faults == 0
    assert twin.fault is None
    assert all(st is SiteStatus.OK for st in statuses)  # one glitch never flags the site
    t = twin.t or 0.0
    flagged = []
    for k in range(1, 5):
        twin.ingest(
            TelemetrySample(site=twin.site_id, timestamp=t + k * H, utilisation=0.0, backlog=3e7)
        )
        flagged.append(twin.status()[0])
    assert flagged[0] is SiteStatus.OK  # one bad sample is not yet a fault
    assert flagged[-1] in (SiteStatus.DEGRADED, SiteStatus.DOWN)


@pytest.mark.parametrize("cross", [False, True])
def test_single_site_step_equals_the_batched_engine(twin: SiteTwin, cross: bool) -> None:
    """Ingest's single-site update is the batched engine's on a batch of one, masks included.

    ``cross``: the estimate carries covariance across blocks (set from outside the
    filter), so the innovation covariance is not diagonal and the general path runs.
    """
    from twin.kalman import predict, project, update

    rng = np.random.default_rng(7)
    _feed(twin, 5)
    assert twin._separable
    if cross:
        assert twin.P is not None
        n = twin.P.shape[0]
        C = rng.normal(0, 1, (n, n))
        M = 0.1 * np.sqrt(np.diag(twin.P))[:, None] * C / math.sqrt(n)
        twin.P = twin.P + M @ M.T  # still positive definite, now correlated across blocks
        twin._separable = twin._check_separable()
        assert not twin._separable
    for k in range(5, 60):
        assert twin.x is not None
        assert twin.P is not None
        assert twin.t is not None
        full = _normal(twin.site_id, k, rng)
        keep = rng.random(4) < 0.6
        values = {
            name: getattr(full, name) if keep[i] else None
            for i, name in enumerate(("utilisation", "backlog", "power_price", "carbon_intensity"))
        }
        sample = TelemetrySample(site=twin.site_id, timestamp=T0 + H * k, **values)
        if k % 7 == 0:
            twin.control(cores=8.0, work=3600.0)
        names = twin.model.observations
        known = sample.observed()
        z = np.array([[known.get(n, 0.0) for n in names]])
        mask = np.array([[n in known for n in names]])
        A, Q = twin.model.transition(sample.timestamp - twin.t)
        xb, Pb = predict(twin.x[None], twin.P[None], A, Q, twin.model.B, twin.pending[None])
        xb, Pb, stats = update(xb, Pb, z, twin.model.H, twin.model.R, mask, stats=True)
        window = len(twin.window)
        assert twin.ingest(sample) == "applied"
        assert stats is not None
        if mask.any():
            assert twin.window[-1][1] == int(stats.dof[0])
            assert twin.window[-1][0] == pytest.approx(float(stats.nis[0]), rel=1e-9, abs=1e-12)
        else:
            assert len(twin.window) == window  # nothing observed: nothing to test
        # round-off relative to the covariance's scale (backlog variances are ~1e10)
        np.testing.assert_allclose(twin.P, Pb[0], rtol=1e-9, atol=1e-12 * np.abs(Pb).max())
        D, lo, hi = twin.model.constraints()
        expected = project(xb[0], Pb[0], D, lo, hi)  # a no-op when within bounds
        # round-off on the scale of each state's uncertainty (links: ~1e7 bytes/s)
        tol = 1e-9 * (np.abs(expected) + np.sqrt(np.diag(Pb[0])) + 1.0)
        assert (np.abs(twin.x - expected) <= tol).all(), np.abs(twin.x - expected) / tol


def test_window_tests_computed_when_read_equal_testing_after_every_update(
    twin: SiteTwin,
) -> None:
    """``recent_p`` read at any time equals the p-values of testing the window after each
    update (the eager reference, kept here), also across a snapshot round trip."""
    from collections import deque
    from dataclasses import replace

    from scipy.special import chdtrc

    # no jump test here: a suspected jump that proves an outlier restarts the windows
    cfg = replace(twin.config, alpha_jump=1e-300)
    ref_window: deque[tuple[float, int]] = deque(maxlen=cfg.nis_window)
    ref_p: deque[float] = deque(maxlen=cfg.confirm)
    rng = np.random.default_rng(11)
    tw = SiteTwin(twin.site, twin.links, cfg, twin.model.blocks)
    for k in range(80):
        s = _normal(tw.site_id, k, rng)
        if k % 13 == 5:  # an unusual sample now and then (not a fault: that restarts windows)
            s = s.model_copy(update={"backlog": 3 * (s.backlog or 1.0)})
        before = tw.counters.applied
        assert tw.ingest(s) == "applied"
        assert tw.counters.applied == before + 1
        if k > 0:  # the first sample only sets the levels
            ref_window.append(tw.window[-1])
            kept = sorted(ref_window, key=lambda e: e[0] / e[1])[: len(ref_window) - cfg.trim]
            stat, dof = sum(v for v, _ in kept), sum(d for _, d in kept)
            ref_p.append(float(chdtrc(dof, stat)) if dof else 1.0)
        if k % 3 == 0:  # read now and then, not after every sample
            assert tw.recent_p == pytest.approx(list(ref_p), rel=1e-12)
        if k == 40:
            tw = SiteTwin.from_state(tw.site, tw.links, tw.config, tw.to_state())
    assert tw.recent_p == pytest.approx(list(ref_p), rel=1e-12)
    assert list(tw.window) == list(ref_window)
    old = tw.to_state()
    del old["history"]  # a snapshot written before the history was kept
    resumed = SiteTwin.from_state(tw.site, tw.links, tw.config, old)
    assert resumed.recent_p == pytest.approx(list(ref_p), rel=1e-12)
    assert resumed.status() == tw.status()
    for k in range(80, 84):  # and the two go on alike
        s = _normal(tw.site_id, k, rng)
        tw.ingest(s)
        resumed.ingest(s)
        assert resumed.recent_p == pytest.approx(tw.recent_p, rel=1e-12)


def test_the_window_sums_follow_the_window(demo_federation: Federation) -> None:
    """The running sums of NIS and dof that let most windows pass quickly equal the window's,
    across faults and a snapshot; and the twin flags as with the trimmed test every time."""
    site = demo_federation.site("ddf-fatnode")

    def run(quick: bool) -> tuple[list[str], SiteTwin]:
        rng, holes = np.random.default_rng(3), np.random.default_rng(4)
        tw = SiteTwin(site, {"national-hpc": 28.7e6})
        verdicts = []
        for k in range(300):
            if not quick:
                tw._trim_dof = 10**6  # the bound never holds: every window gets sorted
            s = _normal(site.id, k, rng)
            if 150 <= k < 200:  # a badly noisy utilisation sensor for two days
                u = float(np.clip((s.utilisation or 0.0) + rng.normal(0, 0.3), 0, 1))
                s = s.model_copy(update={"utilisation": u})
            if holes.random() < 0.3:
                s = s.model_copy(update={"power_price": None, "carbon_intensity": None})
            tw.ingest(s)
            if k == 250:
                tw = SiteTwin.from_state(site, tw.links, tw.config, tw.to_state())
            window = tw.window
            assert tw._wsum == pytest.approx(sum(v for v, _ in window), rel=1e-9, abs=1e-9)
            assert tw._wdof == sum(d for _, d in window)
            verdicts.append(tw.status()[0].value)
        return verdicts, tw

    quick, tw_quick = run(True)
    full, tw_full = run(False)
    assert tw_quick.counters.faults >= 1
    assert quick == full
    assert tw_quick.counters == tw_full.counters


def test_the_quick_window_pass_never_passes_a_failing_window() -> None:
    """Random windows around the critical value (mixed dof, 4 observed metrics at most):
    the quick pass on the untrimmed sums decides as the trimmed test."""
    from collections import deque

    from twin.faults import CriticalValues, trimmed_statistic, window_fails

    rng = np.random.default_rng(11)
    m, size, trim = 4, 6, 2
    critical = CriticalValues(1e-3).table(size * m)
    quick = 0
    for _ in range(20000):
        dofs = rng.integers(1, m + 1, size)
        entries = deque((float(rng.chisquare(d) * rng.uniform(0.5, 4.0)), int(d)) for d in dofs)
        total = (sum(v for v, _ in entries), int(dofs.sum()))
        fails = window_fails(entries, size, trim, total, trim * m, critical)
        stat, d = trimmed_statistic(entries, size, trim)
        assert fails == (stat > critical[d])
        low = total[1] - trim * m
        quick += low > 0 and total[0] <= critical[low]
    assert quick > 5000  # the quick pass decided a good share of them
