"""The twin of one site: its state-space model, filter, anomaly test and forecasts.

The site model (``site_model``) stacks these blocks (see ``twin.ssm`` for the
equations of each kind); units are SI, as everywhere:

==================  ==========  =============================================  ===========
block               kind        states                                         bounds
==================  ==========  =============================================  ===========
utilisation         structural  level, damped trend, AR, one daily pair        0 .. 1
backlog             queue       backlog (core-s queued), inflow (core-s / s)   >= 0
power_price         structural  level, AR transient, 2 daily + 1 weekly pairs  none
carbon_intensity    structural  level, AR transient, 2 daily pairs             >= 0
link:<dst>          structural  level (bytes/s), one per outgoing link         >= 0
==================  ==========  =============================================  ===========

The control ``u = (cores, work)`` is what the orchestrator did in the interval:
``cores`` started (+) or released (-) on the site, and ``work`` core-seconds it
submitted to the queue. ``B`` adds ``cores / site.cores`` to the utilisation
level and ``work`` to the backlog, so forecasts conditioned on a planned
control sequence answer "if I send this load, what happens to the backlog".
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, cast

import numpy as np
from numpy.typing import NDArray
from scipy.special import chdtrc  # chi-square survival function, a plain ufunc

from federation.model import Site
from twin.calibration import LeadCalibrator
from twin.combination import LeadBlender, seasonal_lag
from twin.errors import ModelError
from twin.faults import GATE, CriticalValues, Fault, NoiseLevel, window_fails
from twin.kalman import Array, UpdateStats, predict, project, update
from twin.ssm import BlockSpec, StateSpaceModel
from twin.state import SiteStatus
from twin.telemetry import METRICS, TelemetrySample

HOUR = 3600.0
CONTROLS = ("cores", "work")


@dataclass(frozen=True)
class TwinConfig:
    """Forecast horizon and the thresholds of the anomaly tests.

    A window of the last ``nis_window`` updates is tested: the sum of their
    normalised innovations squared is chi-square with the sum of their observed
    dimensions as degrees of freedom when the model holds. Its upper-tail
    probability below ``alpha_degraded`` flags the site degraded, below
    ``alpha_down`` degraded with health 0 (a site is *down* only when it says so,
    ``up`` false, and stale when silent), once ``confirm`` consecutive windows agree. The test
    leaves out the window's ``trim`` most extreme samples, so that a single
    outlier does not flag a site while a fault that persists does. No sample
    for more than ``stale_after_s`` seconds: stale. A metric repeating exactly
    the same value (away from its bounds) ``stuck_after`` samples in a row is a
    stuck sensor. One sample whose own p-value is below ``alpha_jump`` is a
    suspected jump, confirmed as a fault when the next ``confirm`` samples also
    disagree with the estimate from before it. A flagged fault stays flagged
    until the site recovers or an operator accepts the new level (``twin.faults``).

    Every one of these tests reads the innovations against the level the site's
    own innovations have had over the last ``level_window`` updates, never
    below the model's: a model fitted on a calm season meets a volatile one's
    ordinary moves as chi-square outliers, so each NIS is divided by the median
    of the last ``level_window`` NIS (each over the median of its chi-square
    distribution, re-estimated every day's worth of updates, once the window is
    full) when that median exceeds the model's (``twin.faults.NoiseLevel``;
    0 turns it off). The forecasts and their bands are not changed by it.

    With ``calibrate`` the published standard deviations are rescaled per
    metric and lead by a ``LeadCalibrator`` (``twin.calibration``) that learns
    from the twin's own past forecasts, forgetting with a half-life of
    ``calibration_half_life`` errors per lead (see ``SiteTwin.forecast``).

    With ``combine`` the published means are, per metric and lead, the model's
    forecast blended with the seasonal random walk's (the value observed one
    ``season_seconds`` before the slot; ``twin.combination.LeadBlender``), with
    weights learned from both forecasts' past errors at that lead (same
    half-life).
    """

    horizon: int = 48
    slot_seconds: float = 3600.0
    nis_window: int = 6
    confirm: int = 2
    trim: int = 2
    alpha_degraded: float = 1e-3
    alpha_down: float = 1e-9
    alpha_jump: float = 1e-6
    stale_after_s: float = 3 * 3600.0
    stuck_after: int = 12
    level_window: int = 672
    calibrate: bool = True
    calibration_half_life: float = 168.0
    combine: bool = True
    season_seconds: float = 86400.0

    def __post_init__(self) -> None:
        if min(self.horizon, self.nis_window, self.confirm) < 1 or self.slot_seconds <= 0:
            raise ModelError("horizon, nis_window and confirm must be >= 1, slot_seconds > 0")
        if not 0 <= self.trim < self.nis_window:
            raise ModelError("trim must be >= 0 and smaller than nis_window")
        if not 0 < self.alpha_down < self.alpha_degraded < 1:
            raise ModelError("need 0 < alpha_down < alpha_degraded < 1")
        if not 0 < self.alpha_jump < 1:
            raise ModelError("need 0 < alpha_jump < 1")
        if self.stale_after_s <= 0:
            raise ModelError("stale_after_s must be > 0")
        if self.stuck_after < 2:
            raise ModelError("stuck_after must be >= 2 samples")
        if self.level_window < 0:
            raise ModelError("level_window must be >= 0 updates (0: off)")
        if not self.calibration_half_life > 0:
            raise ModelError("calibration_half_life must be > 0 (errors)")
        if not self.season_seconds >= self.slot_seconds:
            raise ModelError("season_seconds must be >= slot_seconds")


def default_blocks(site: Site, links: Mapping[str, float]) -> tuple[BlockSpec, ...]:
    """Blocks sized to a site's nominal figures (``links``: dst -> nominal bytes/s)."""
    # noise scales only (never a planning figure): a typical value when the nominal is unknown
    price = max(site.energy_price_eur_per_kwh or 0.1, 1e-3)
    carbon = max(site.carbon_intensity_g_per_kwh or 300.0, 1.0)
    blocks = [
        BlockSpec(
            "utilisation",
            trend=True,
            ar=True,
            daily=1,
            q_level=0.01**2 / HOUR,
            q_trend=(0.002 / HOUR) ** 2 / HOUR,
            tau_trend=6 * HOUR,
            q_ar=0.05**2 / HOUR,
            tau_ar=3 * HOUR,
            q_season=0.005**2 / HOUR,
            r=0.02**2,
            scale=0.5,
            lower=0.0,
            upper=1.0,
        ),
        BlockSpec(
            "backlog",
            kind="queue",
            q_level=(0.05 * site.cores * HOUR) ** 2 / HOUR,
            q_inflow=(0.05 * site.cores) ** 2 / HOUR,
            tau_drain=HOUR,
            r=(0.02 * site.cores * HOUR) ** 2,
            scale=site.cores * HOUR,
            lower=0.0,
        ),
        BlockSpec(
            "power_price",
            ar=True,
            daily=2,
            weekly=1,
            q_level=(0.02 * price) ** 2 / HOUR,
            q_ar=(0.1 * price) ** 2 / HOUR,
            tau_ar=6 * HOUR,
            q_season=(0.01 * price) ** 2 / HOUR,
            q_week=(0.005 * price) ** 2 / HOUR,
            r=(0.02 * price) ** 2,
            scale=price,
        ),
        BlockSpec(
            "carbon_intensity",
            ar=True,
            daily=2,
            q_level=(0.02 * carbon) ** 2 / HOUR,
            q_ar=(0.1 * carbon) ** 2 / HOUR,
            tau_ar=6 * HOUR,
            q_season=(0.01 * carbon) ** 2 / HOUR,
            r=(0.02 * carbon) ** 2,
            scale=carbon,
            lower=0.0,
        ),
    ]
    for dst, bw in sorted(links.items()):
        blocks.append(
            BlockSpec(
                f"link:{dst}",
                q_level=(0.1 * bw) ** 2 / HOUR,
                r=(0.05 * bw) ** 2,
                scale=bw,
                lower=0.0,
            )
        )
    return tuple(blocks)


def site_model(
    site: Site, links: Mapping[str, float], blocks: Sequence[BlockSpec] | None = None
) -> StateSpaceModel:
    """The state-space model of ``site`` (``blocks`` overrides the default parameters)."""
    specs = tuple(blocks) if blocks is not None else default_blocks(site, links)
    names = [b.name for b in specs]
    for need in ("utilisation", "backlog"):
        if need not in names:
            raise ModelError(f"a site model needs a {need!r} block; got {names}")
    dummy = StateSpaceModel(specs)
    B = np.zeros((dummy.dim, len(CONTROLS)))
    B[dummy.index("utilisation.level"), 0] = 1.0 / site.cores  # cores started -> utilisation
    B[dummy.index("backlog.backlog"), 1] = 1.0  # work submitted -> backlog
    return StateSpaceModel(specs, CONTROLS, B)


@dataclass(frozen=True)
class BlockForecast:
    """Forecast of one observed metric per slot: mean and standard deviation."""

    mean: tuple[float, ...]
    std: tuple[float, ...]


@dataclass(frozen=True)
class SiteForecast:
    """Forecasts of every metric of a site at the middle of each slot."""

    site_id: str
    issued_at: float
    slot_seconds: float
    blocks: dict[str, BlockForecast]


@dataclass
class _Issued:
    """A forecast the twin published, kept until every slot of it has been observed."""

    t: float  # issue time (the estimate's)
    mean: Array  # (horizon, metrics), as published (bounded means clipped)
    sd: Array  # (horizon, metrics), the model's, before calibration
    model: Array  # (horizon, metrics), the model's mean before the combination (clipped)
    seasonal: Array  # (horizon, metrics), the seasonal random walk's (nan: unknown)
    scored: NDArray[np.bool_]  # (horizon, metrics): slot and metric already scored


@dataclass
class Counters:
    """What happened to the samples a twin was given."""

    applied: int = 0
    duplicates: int = 0
    rejected_out_of_order: int = 0
    conflicting: int = 0
    ignored_metrics: int = 0
    faults: int = 0
    faults_recovered: int = 0
    faults_accepted: int = 0


class SiteTwin:
    """Kalman twin of one site: ingest samples, test innovations, forecast.

    The estimate ``x, P`` refers to time ``t``. A sample older than ``t`` is
    rejected and counted (never applied: the filter cannot go back in time);
    a sample at exactly ``t`` with the same values is a duplicate (ignored,
    so replaying a file twice changes nothing). Controls recorded with
    ``control`` enter the next prediction.
    """

    def __init__(
        self,
        site: Site,
        links: Mapping[str, float] | None = None,
        config: TwinConfig | None = None,
        blocks: Sequence[BlockSpec] | None = None,
    ) -> None:
        self.site = site
        self.links = dict(links or {})
        self.config = config or TwinConfig()
        self.model = site_model(site, self.links, blocks)
        self.x: Array | None = None
        self.P: Array | None = None
        self.t: float | None = None
        self.last_sample_t: float | None = None
        self.last_values: dict[str, float] = {}
        self.up = True
        self.in_service: float | None = None  # the site's own word on its cores in service
        self.pending = np.zeros(len(CONTROLS))
        # The innovations of the last ``nis_window + confirm - 1`` updates: enough to
        # test, when asked, each of the last ``confirm`` windows (tests cost a chi-square
        # each, so they run when a status is read, not after every sample).
        self._history: deque[tuple[float, int]] = deque(
            maxlen=self.config.nis_window + self.config.confirm - 1
        )
        # The sums of NIS and dof over the last ``nis_window`` entries, kept as they come:
        # a window whose untrimmed sum is below the smallest critical value it could be
        # tested against passes without the trimmed test (most samples, on a sound model).
        self._wsum = 0.0
        self._wdof = 0
        self._tests = 0  # windows to test since ``_seed`` (at most ``confirm``)
        self._seed: list[float] = []  # p-values of windows tested before a snapshot
        self._recent: tuple[int, list[float]] | None = None  # (updates, p-values) cache
        self._updates = 0
        self.counters = Counters()
        self._D, self._lo, self._hi = self.model.constraints()
        # the bounds as Python floats (checked after every update; numpy's per-call cost on
        # three numbers is larger than the comparison)
        self._limits = list(
            zip((self._lo - 1e-12).tolist(), (self._hi + 1e-12).tolist(), strict=True)
        )
        self._row = {name: i for i, name in enumerate(self.model.observations)}
        # Where each observed metric is read from a sample, in the model's order: an
        # attribute (``utilisation``...) or a link's destination (``link:<dst>``).
        self._fields: list[tuple[str, str | None, str]] = [
            (name, None, name.removeprefix("link:"))
            if name.startswith("link:")
            else (name, name, "")
            for name in self.model.observations
        ]
        self._link_dsts = frozenset(dst for _, attr, dst in self._fields if attr is None)
        self._unmodelled = tuple(m for m in METRICS if m not in self._row)
        self._dt = math.nan  # the last interval and its (A, Q): telemetry is mostly regular
        self._AQ: tuple[Array, Array] | None = None
        self._separable = self._check_separable()
        self._reduced: dict[tuple[str, ...], tuple[Array, Array]] = {}
        # Faults (``twin.faults``): the last estimates (a reference is taken from the
        # oldest), consecutive failed window tests, runs of identical values per metric.
        cfg = self.config
        self._past: deque[tuple[float, Array, Array]] = deque(
            maxlen=max(cfg.nis_window + cfg.confirm, cfg.stuck_after) + 1
        )
        self._fails = 0
        # chi-square critical values by degrees of freedom, looked up after every sample
        m = len(self.model.observations)
        self._critical = CriticalValues(cfg.alpha_degraded).table(cfg.nis_window * m)
        self._jump = CriticalValues(cfg.alpha_jump).table(m)
        self._persist = CriticalValues(cfg.alpha_degraded)(1)  # one offset: one dof
        self.level = NoiseLevel(cfg.level_window, m)
        self._trim_dof = cfg.trim * m
        self._runs: dict[str, tuple[float, int]] = {}
        self._bounds = {
            b.name: (
                -math.inf if b.lower is None else b.lower,
                math.inf if b.upper is None else b.upper,
            )
            for b in self.model.blocks
        }
        self.fault: Fault | None = None
        # Calibration (``forecast``): per metric, the spread factor of each lead, learned
        # from the forecasts published (at most one a slot) and the samples after them.
        self.calibration = {
            name: LeadCalibrator(cfg.horizon, cfg.calibration_half_life)
            for name in self.model.observations
        }
        self._issued: deque[_Issued] = deque(maxlen=cfg.horizon + 1)
        self._observed: list[tuple[float, list[str], list[float]]] = []
        # Combination (``forecast``): per metric, the weights of the model against the
        # seasonal random walk, and the samples of the last seasons it reads.
        self.blending = {
            name: LeadBlender(cfg.horizon, cfg.calibration_half_life)
            for name in self.model.observations
        }
        self._season_slots = max(1, round(cfg.season_seconds / cfg.slot_seconds))
        self._keep_s = (
            seasonal_lag(cfg.horizon, self._season_slots) * cfg.slot_seconds + cfg.slot_seconds
        )
        self._season_samples: deque[tuple[float, list[str], list[float]]] = deque()

    @property
    def site_id(self) -> str:
        return self.site.id

    # --- filtering -------------------------------------------------------------------------
    def control(self, cores: float = 0.0, work: float = 0.0) -> None:
        """Record load the orchestrator started (``cores``, negative = released) and
        ``work`` core-seconds it queued since the last sample."""
        self.pending = self.pending + np.array([cores, work], dtype=np.float64)

    def ingest(self, sample: TelemetrySample) -> str:
        """Apply one sample; returns ``applied``, ``duplicate``, ``rejected`` or ``conflicting``."""
        if sample.site != self.site.id:
            raise ModelError(
                f"sample of site {sample.site!r} given to the twin of {self.site.id!r}"
            )
        # The observed metrics in the model's order (one pass; the unknown ones counted).
        present: list[str] = []
        zs: list[float] = []
        links = sample.links
        for name, attr, dst in self._fields:
            v = getattr(sample, attr) if attr is not None else links.get(dst)
            if v is not None:
                present.append(name)
                zs.append(v)
        if self._unmodelled or (links and not self._link_dsts.issuperset(links)):
            given = len(links) + sum(getattr(sample, m) is not None for m in METRICS)
            self.counters.ignored_metrics += given - len(present)
        known = dict(zip(present, zs, strict=True))
        t = sample.timestamp
        if self.t is not None and t < self.t:
            self.counters.rejected_out_of_order += 1
            return "rejected"
        if self.t is not None and t == self.t:
            if known == self.last_values and sample.up == self.up:
                self.counters.duplicates += 1
                return "duplicate"
            self.counters.conflicting += 1
            return "conflicting"
        dof = 0
        if self.x is None or self.P is None or self.t is None:
            self.x, self.P = self.model.initial(known)
            # the first sample defines the levels; nothing to test against yet
        else:
            nis, dof = self._step(self.x, self.P, t - self.t, tuple(present), zs)
            if dof > 0:
                nis = self.level.add(nis, dof)  # what the fault tests read
                h = self._history
                if len(h) >= self.config.nis_window:  # the window's oldest entry leaves it
                    old = h[-self.config.nis_window]
                    self._wsum -= old[0]
                    self._wdof -= old[1]
                self._wsum += nis
                self._wdof += dof
                h.append((nis, dof))
                if self._tests < self.config.confirm:
                    self._tests += 1
                self._updates += 1
        self._watch(t, present, zs, dof)
        if self._limits:  # after the fault check: a recovery hands over its reference's estimate
            Dx = (self._D @ self.x).tolist()
            for v, (lo, hi) in zip(Dx, self._limits, strict=True):
                if v < lo or v > hi:
                    self.x = project(self.x, self.P, self._D, self._lo, self._hi, Dx=Dx)
                    break
        if present and self.config.combine:
            # what the seasonal forecast reads: what the site reports, as the live filter
            recent = self._season_samples
            recent.append((t, present, zs))
            if recent[0][0] < t - self._keep_s:
                recent.popleft()
        if self._issued and self.fault is None and present:
            # scored against the forecasts published before it (when the next is made)
            self._observed.append((t, present, zs))
            if len(self._observed) >= 1024:
                self._score()
        self._past.append((t, self.x, self.P))
        self.t = t
        self.last_sample_t = t
        self.last_values = known
        self.up = sample.up
        self.in_service = sample.in_service
        self.counters.applied += 1
        return "applied"

    def _observation(self, present: tuple[str, ...]) -> tuple[Array, Array]:
        """``H`` and ``R`` reduced to the observed metrics ``present`` (cached)."""
        hit = self._reduced.get(present)
        if hit is None:
            idx = [self._row[name] for name in present]
            H = np.ascontiguousarray(self.model.H[idx])
            R = np.ascontiguousarray(self.model.R[np.ix_(idx, idx)])
            hit = self._reduced[present] = (H, R)
        return hit

    def _step(
        self, x: Array, P: Array, dt: float, present: tuple[str, ...], zs: list[float]
    ) -> tuple[float, int]:
        """Predict over ``dt`` with the pending control, then update with the values ``zs``
        of the metrics ``present`` (in the model's order).

        ``twin.kalman.predict`` and ``update`` on this site's arrays, the missing
        observations taken out of ``H`` and ``R`` (cached per pattern), with the
        diagonal-``S`` fast path while the blocks stay uncorrelated
        (``_separable``). Returns the update's ``(nis, dof)``.
        """
        if dt == self._dt and self._AQ is not None:
            A, Q = self._AQ
        else:
            A, Q = self._AQ = self.model.transition(dt)
            self._dt = dt
        pending = self.pending
        if pending[0] or pending[1]:
            x, P = predict(x, P, A, Q, self.model.B, pending)  # x' = A x + B u
            self.pending = np.zeros(len(CONTROLS))
        else:
            x, P = predict(x, P, A, Q)  # x' = A x, P' = A P A^T + Q
        if not present:
            self.x, self.P = x, 0.5 * (P + P.T)
            return 0.0, 0
        H, R = self._observation(present)
        self.x, self.P, st = update(x, P, np.array(zs), H, R, stats=True, diagonal=self._separable)
        return float(cast(UpdateStats, st).nis), len(present)

    def _check_separable(self) -> bool:
        """Whether every innovation covariance ``S = H P H^T + R`` is diagonal.

        The model's blocks are independent with one observation each and ``R`` is
        diagonal, so ``S`` is diagonal when ``P`` has no covariance across blocks.
        ``A`` and ``Q`` are block diagonal, so prediction and update keep ``P`` so,
        exactly (the cross terms stay zeros, not round-off): this is checked once,
        when an estimate is set from outside the filter.
        """
        if self.P is None:
            return True
        same = np.zeros((self.model.dim, self.model.dim), dtype=bool)
        for b in self.model.blocks:
            o = self.model.offsets[b.name]
            same[o : o + b.dim, o : o + b.dim] = True
        return not np.any(self.P[~same])

    # --- faults ----------------------------------------------------------------------------
    def _watch(self, t: float, present: list[str], zs: list[float], dof: int) -> None:
        """Open a fault, or follow the open one against its reference (``twin.faults``)."""
        stuck = self._stuck(present, zs)
        if self.fault is not None:
            self._follow(t, present, zs, stuck)
            return
        cfg = self.config
        if dof > 0 and len(self._history) >= cfg.nis_window:
            fails = window_fails(
                self._history,
                cfg.nis_window,
                cfg.trim,
                (self._wsum, self._wdof),
                self._trim_dof,
                self._critical,
            )
            self._fails = self._fails + 1 if fails else 0
        if self._fails >= cfg.confirm:
            self._open("innovation", t, ())
        elif stuck:
            self._open("stuck", t, stuck)
        elif dof > 0 and self._history[-1][0] > self._jump[dof]:
            # one extreme innovation: a suspected jump, confirmed by the next samples
            self._open("jump", t, (), confirmed=False)
            f = cast(Fault, self.fault)
            if t > f.t:  # the jump's own residual against the reference: its first offset
                f.x, f.P = predict(f.x, f.P, *self.model.transition(t - f.t))
                f.t = t
            H, _ = self._observation(tuple(present))
            for name, r in zip(present, (np.array(zs) - H @ f.x).tolist(), strict=True):
                f.residuals[name] = (r, 1)

    def _stuck(self, present: list[str], zs: list[float]) -> tuple[str, ...]:
        """Metrics that repeated the same value ``stuck_after`` samples in a row (off bounds)."""
        out: tuple[str, ...] = ()
        runs = self._runs
        for name, v in zip(present, zs, strict=True):
            prev = runs.get(name)
            if prev is None or prev[0] != v:
                runs[name] = (v, 1)  # a new value starts a run
                continue
            lo, hi = self._bounds[name]
            # a value at its bound (an idle site's 0, an empty queue) repeats legitimately
            n = 1 if v <= lo or v >= hi else prev[1] + 1
            runs[name] = (v, n)
            if n >= self.config.stuck_after:
                out += (name,)
        return out

    def _open(self, kind: str, t: float, blocks: tuple[str, ...], confirmed: bool = True) -> None:
        if kind == "jump" and self._past:
            t0, x0, P0 = self._past[-1]  # the estimate just before the jump
        elif self._past:
            t0, x0, P0 = self._past[0]  # before the windows (or the run) that flagged
        else:  # resumed from a snapshot: the current estimate is all there is
            t0, x0, P0 = float(self.t or t), cast(Array, self.x), cast(Array, self.P)
        self.fault = Fault(
            kind, t, t0, x0, P0, blocks, deque(maxlen=self.config.nis_window), confirmed=confirmed
        )
        if confirmed:
            self.counters.faults += 1

    def _follow(
        self, t: float, present: list[str], zs: list[float], stuck: tuple[str, ...]
    ) -> None:
        """Predict the reference to ``t``; test the sample against it; recover when it agrees."""
        f = cast(Fault, self.fault)
        cfg = self.config
        if t > f.t:
            A, Q = self.model.transition(t - f.t)
            f.x, f.P = predict(f.x, f.P, A, Q)  # the reference, as if the fault never came
            f.t = t
        if not present:
            return
        if stuck and f.kind != "stuck":
            # a sensor got stuck while another fault was open (or suspected): it is now
            # a stuck fault, which recovers only once the value moves again
            if not f.confirmed:
                self.counters.faults += 1
            f.kind, f.blocks, f.confirmed = "stuck", stuck, True
        if stuck or (f.confirmed and any(self._runs[name][1] > 1 for name in present)):
            # still stuck, or a value repeated exactly (a sensor that may be getting
            # stuck): nothing to learn, no evidence of a recovery
            f.passed = 0
            return
        H, R = self._observation(tuple(present))
        z = np.array(zs)
        x2, P2, st = update(f.x, f.P, z, H, R, stats=True, diagonal=self._separable)
        u = cast(UpdateStats, st)
        scale = self.level.scale  # the tests read NIS over the site's noise level
        nis = float(u.nis) / scale
        f.history.append((nis, len(present)))
        if not f.confirmed:
            # The jump did not last (an outlier) when the sample agrees with the reference
            # and is no closer to the level the jump went to.
            d = np.array([_mean(f.residuals.get(name)) for name in present])
            shifted = update(f.x, f.P, z - d, H, R, stats=True, diagonal=self._separable)[2]
            nis_shifted = float(cast(UpdateStats, shifted).nis) / scale
            if chdtrc(len(present), nis) >= GATE and nis <= nis_shifted:
                self.x, self.P = x2, P2
                self._clear()
                return
            for name, r in zip(present, np.atleast_1d(u.innovation).tolist(), strict=True):
                a, n = f.residuals.get(name, (0.0, 0))
                f.residuals[name] = (a + r, n + 1)
            if len(f.history) >= cfg.confirm:
                f.confirmed = True
                f.offset = {k: a / n for k, (a, n) in f.residuals.items() if n}
                self.counters.faults += 1
            return
        if f.offset:
            # The step persists while the sample is likelier shifted by the jump's offset
            # than not: the reference then learns the healthy process from the sample less
            # the offset, so its uncertainty stays that of a filter fed every hour, and a
            # step small against the model's drift over days stays flagged until the site
            # jumps back (or an operator accepts).
            d = np.array([f.offset.get(name, 0.0) for name in present])
            if self._separable:
                # Same P, H and R: the update of z - d has the same gain and covariance,
                # its mean is x2 - K d and its NIS that of y - d (S diagonal).
                y, v = u.innovation, u.variance
                nis3 = float(((y - d) ** 2 / v).sum()) / scale
            else:
                x3, P3, st3 = update(f.x, f.P, z - d, H, R, stats=True)
                nis3 = float(cast(UpdateStats, st3).nis) / scale
            bar = self._jump[len(present)]
            if nis3 - nis > bar and chdtrc(len(present), nis) >= GATE:
                # A jump back: the sample agrees with the reference and is a jump away from
                # it plus the offset. The site may have come back (or the series itself
                # swung by the step's size): until a sample favours the offset by as much
                # again, the reference learns nothing from samples that favour it only
                # narrowly. Otherwise, in the hours the sum takes to turn, one such sample
                # (the series a hair closer to the reference plus the offset) would set a
                # reference with little noise a whole offset away from the site, and the
                # step would then explain every later sample: flagged for good.
                f.doubt = True
            f.support.append(nis - nis3)
            if sum(f.support) > 0.0:
                # The step holds over its last samples as a whole: a sample or two better
                # explained without it (the series itself moving by about the offset for
                # a few hours) do not end it, a site that jumps back does within hours.
                if f.doubt and nis - nis3 > bar:
                    f.doubt = False  # the step is back beyond doubt
                # (a sample against the offset teaches the reference nothing)
                if nis3 < nis and not f.doubt:
                    if self._separable:
                        x3, P3 = x2 - f.P @ (H.T @ (d / v)), P2  # K d = P H^T S^-1 d
                    f.x, f.P = x3, P3
                f.passed = f.lapsed = 0
                f.since_lapse.clear()
                return
            # The step's support lapsed: the site may have jumped back, or the series itself
            # moved by about the offset for a while. Only windows of samples that all came
            # after the lapse can tell a recovery (the step's own samples are not averaged
            # into them).
            f.lapsed += 1
            f.since_lapse.append(
                {
                    name: (r / var, 1.0 / var)
                    for name, r, var in zip(
                        present,
                        np.atleast_1d(u.innovation).tolist(),
                        np.atleast_1d(u.variance).tolist(),
                        strict=True,
                    )
                }
            )
            if f.lapsed < cfg.nis_window:
                f.passed = 0
                return
        # Confirmed: the reference learns only from samples whose whole window agrees
        # with it, so that it cannot drift to the faulty level one plausible sample at a time.
        if len(f.history) == cfg.nis_window and _chi2_test(f.history, 0)[2] >= cfg.alpha_degraded:
            f.x, f.P = x2, P2
            f.passed += 1
        else:
            f.passed = 0
        if f.passed >= cfg.confirm and f.offset and self._offset_persists(f):
            return
        if f.passed >= cfg.confirm:
            self.x, self.P = f.x, f.P  # the reference followed the healthy samples
            self.counters.faults_recovered += 1
            self._clear()

    def _offset_persists(self, f: Fault) -> bool:
        """Whether the samples since the step's support lapsed, which agree with the
        reference window by window, still hold one offset of their own: then the step
        persists at another size (its first offset took in a move of the series itself,
        or the fault it came with ended), and it goes on with that offset.

        Twice the log-likelihood ratio of the best single offset per metric (the samples'
        innovations against the reference, weighted by their variances), over the noise
        level, against ``chi2.isf(alpha_degraded, 1)``: the step persists while an offset
        of its own is as significant as a window that flags a site degraded."""
        acc: dict[str, tuple[float, float]] = {}
        for entry in f.since_lapse:
            for name, (a, b) in entry.items():
                a0, b0 = acc.get(name, (0.0, 0.0))
                acc[name] = (a0 + a, b0 + b)
        scale = self.level.scale
        held = {
            n: a / b for n, (a, b) in acc.items() if b > 0 and a * a / b / scale > self._persist
        }
        if not held:
            return False
        f.offset = {**f.offset, **held}
        f.support.clear()
        f.since_lapse.clear()
        f.passed = f.lapsed = 0
        f.doubt = False
        f.history.clear()
        return True

    def _clear(self) -> None:
        """No open fault, and the innovation windows start afresh."""
        self.fault = None
        self._fails = 0
        self._history.clear()
        self._wsum, self._wdof = 0.0, 0
        self._tests = 0
        self._seed = []
        self._recent = None
        self._runs.clear()
        self._past.clear()

    def accept(self) -> bool:
        """An operator accepts the site's new level: the open fault is closed (False: none).

        The live estimate, which has followed the site, is kept; the anomaly
        windows restart from the next sample.
        """
        if self.fault is None or not self.fault.confirmed:
            return False
        self.counters.faults_accepted += 1
        self._clear()
        return True

    # --- anomaly detection -----------------------------------------------------------------
    @property
    def window(self) -> list[tuple[float, int]]:
        """``(nis, dof)`` of the last ``nis_window`` updates that observed something."""
        return list(self._history)[-self.config.nis_window :]

    @property
    def recent_p(self) -> list[float]:
        """p-values of the window tests after each of the last ``confirm`` updates, oldest first.

        The same values as testing the window after every update, computed when
        asked (and cached until the next update).
        """
        if self._recent is not None and self._recent[0] == self._updates:
            return self._recent[1]
        hist = list(self._history)
        w, end = self.config.nis_window, len(hist)
        computed = [
            _chi2_test(hist[max(0, end - j - w) : end - j], self.config.trim)[2]
            for j in reversed(range(self._tests))
        ]
        p = (self._seed + computed)[-self.config.confirm :]
        self._recent = (self._updates, p)
        return p

    def window_test(self, trim: int = 0) -> tuple[float, int, float]:
        """``(statistic, dof, p_value)`` of the chi-square test on the NIS window.

        The statistic is the sum of the window's normalised innovations squared
        ``y^T S^-1 y``, chi-square with the sum of their observed dimensions as
        degrees of freedom under the model. ``trim`` leaves out that many of the
        most extreme samples (largest NIS per degree of freedom): one outlier
        then cannot flag a site, a fault that persists still does.
        """
        return _chi2_test(self.window, trim)

    def status(self, now: float | None = None) -> tuple[SiteStatus, float]:
        """The verdict and a health score in [0, 1] at time ``now`` (default: the estimate's).

        Health is 1 when the window's p-value is 1 and falls linearly in
        ``log p`` to 0 at ``alpha_down``; stale and down sites have health 0. A site whose
        last sample says only part of its cores is in service (``in_service`` < 1) is
        degraded, with that share as its health.
        """
        if self.t is None or self.last_sample_t is None:
            return SiteStatus.STALE, 0.0
        ref = self.t if now is None else now
        if ref - self.last_sample_t > self.config.stale_after_s:
            return SiteStatus.STALE, 0.0
        if not self.up:
            return SiteStatus.DOWN, 0.0
        if self.in_service is not None and self.in_service < 1.0:
            # the site says part of it is out of service (a scheduler's nodes down or drained)
            return SiteStatus.DEGRADED, self.in_service
        # the least significant of the last ``confirm`` window tests
        p = max(self.recent_p) if len(self.recent_p) == self.config.confirm else 1.0
        if self.fault is not None and self.fault.confirmed:
            # flagged until recovered or accepted, however well the live filter now fits
            ref = _chi2_test(self.fault.history, 0)[2] if self.fault.history else 0.0
            p = min(p, ref, 0.5 * self.config.alpha_degraded)
        if p < self.config.alpha_down:
            # The innovations say the model no longer explains the site, not that the
            # site stopped: a statistical test alone flags it degraded (health 0).
            # Down comes from the site itself (``up`` false) or from its silence (stale).
            return SiteStatus.DEGRADED, 0.0
        health = 1.0 - min(1.0, math.log10(max(p, 1e-300)) / math.log10(self.config.alpha_down))
        if p < self.config.alpha_degraded:
            return SiteStatus.DEGRADED, health
        return SiteStatus.OK, health

    # --- forecasts -------------------------------------------------------------------------
    def predict_states(
        self,
        horizon: int | None = None,
        slot_seconds: float | None = None,
        controls: Sequence[tuple[float, float]] | Array | None = None,
    ) -> tuple[Array, Array]:
        """k-step-ahead state means ``(H, n)`` and covariances ``(H, n, n)`` at slot middles.

        From the estimate at ``t``: ``x_{k+1} = A(dt) x_k + B u_k``,
        ``P_{k+1} = A(dt) P_k A(dt)^T + Q(dt)`` with ``dt`` half a slot for the
        first step and a slot after. ``controls[k] = (cores, work)`` is applied
        at the start of slot ``k`` (a planned dispatch), on top of any control
        recorded since the last sample.
        """
        if self.x is None or self.P is None or self.t is None:
            raise ModelError(f"site {self.site.id!r} has no estimate yet: ingest telemetry first")
        H = horizon or self.config.horizon
        s = slot_seconds or self.config.slot_seconds
        U = np.zeros((H, len(CONTROLS)))
        if controls is not None:
            c = np.asarray(controls, dtype=np.float64)
            if c.ndim != 2 or c.shape[1] != len(CONTROLS) or len(c) > H:
                raise ModelError(
                    f"controls must be at most {H} rows of (cores, work), got shape {c.shape}"
                )
            U[: len(c)] = c
        U[0] += self.pending
        xs = np.empty((H, self.model.dim))
        Ps = np.empty((H, self.model.dim, self.model.dim))
        x, P = self.x[None], self.P[None]
        for k in range(H):
            A, Q = self.model.transition(0.5 * s if k == 0 else s)
            x, P = predict(x, P, A, Q, self.model.B, U[k][None])
            xs[k], Ps[k] = x[0], P[0]
        return xs, Ps

    def forecast(
        self,
        horizon: int | None = None,
        slot_seconds: float | None = None,
        controls: Sequence[tuple[float, float]] | Array | None = None,
        calibrated: bool | None = None,
    ) -> SiteForecast:
        """Forecasts of every observed metric at the middle of each slot (see ``predict_states``).

        With ``controls`` the forecast is conditional on that planned dispatch
        (what-if). Means of bounded metrics are clipped to their bounds. The
        model's standard deviation is that of the observation, ``sqrt(h P h^T + r)``;
        ``calibrated`` (default ``config.calibrate``) multiplies it, per metric
        and lead, by the factor its ``LeadCalibrator`` learned (``twin.calibration``):
        the plain forecast (no controls, the configured horizon and slot) is
        remembered, at most one a slot, and each later sample is scored against
        it (``(y - mean) / sd`` at the lead of the slot the sample ends: a sample
        at the boundary of two slots counts for the earlier one; one sample per
        slot and metric) when the next forecast is made. Samples taken while a
        fault is open are left out. So the bands the planners read
        (``mean - z * std``) cover as often as they claim, on what this site did.
        """
        s = slot_seconds or self.config.slot_seconds
        cfg = self.config
        xs, Ps = self.predict_states(horizon, s, controls)
        Hm, r = self.model.H, np.diag(self.model.R)
        means = self._clip(xs @ Hm.T)  # E[y_k] = C x_k
        stds = np.sqrt(np.maximum(np.einsum("ij,kjl,il->ki", Hm, Ps, Hm) + r, 0.0))
        H = len(means)
        calibrate = cfg.calibrate if calibrated is None else calibrated
        combine = cfg.combine and s == cfg.slot_seconds
        if calibrate or combine:
            self._score()
        model_means, seasonal = means, np.full(means.shape, np.nan)
        if combine:
            # the unconditional forecast is combined; a what-if keeps its controls' effect
            base = means if controls is None else self._clip(self.predict_states(H, s)[0] @ Hm.T)
            seasonal = self._seasonal(H, s)
            blended = np.column_stack(
                [
                    self.blending[name].combine(base[:, i], seasonal[:, i])
                    for i, name in enumerate(self.model.observations)
                ]
            )
            means = self._clip(blended + (means - base))
        if calibrate or combine:
            t = float(cast(float, self.t))
            if (
                controls is None
                and cfg.horizon == H
                and s == cfg.slot_seconds
                and (not self._issued or t >= self._issued[-1].t + s)
            ):
                scored = np.zeros(means.shape, dtype=bool)
                self._issued.append(_Issued(t, means, stds, model_means, seasonal, scored))
        if calibrate:
            factors = np.column_stack(
                [_leads(self.calibration[name].factor(), H) for name in self.model.observations]
            )
            stds = stds * factors
        out = {
            b.name: BlockForecast(tuple(map(float, means[:, i])), tuple(map(float, stds[:, i])))
            for i, b in enumerate(self.model.blocks)
        }
        return SiteForecast(self.site.id, float(self.t or 0.0), s, out)

    def _clip(self, means: Array) -> Array:
        """Means of bounded metrics clipped to their bounds (columns in block order)."""
        for i, b in enumerate(self.model.blocks):
            if b.lower is not None or b.upper is not None:
                lo = -math.inf if b.lower is None else b.lower
                hi = math.inf if b.upper is None else b.upper
                means[:, i] = np.clip(means[:, i], lo, hi)
        return means

    def _seasonal(self, horizon: int, s: float) -> Array:
        """The seasonal random walk's forecasts ``(horizon, metrics)``, nan where unknown.

        For the slot ``(t + k s, t + (k + 1) s]``: the last sample of the metric at
        or before its end moved back ``seasonal_lag`` slots, if that sample is less
        than a season older than that time (the backtest's forward fill).
        """
        out = np.full((horizon, len(self.model.observations)), np.nan)
        if not self._season_samples or self.t is None:
            return out
        season = self._season_slots
        ends = np.array(
            [float(self.t) + (k + 1 - seasonal_lag(k + 1, season)) * s for k in range(horizon)]
        )
        span = season * s
        series: dict[str, tuple[list[float], list[float]]] = {}
        for t, present, zs in self._season_samples:  # one pass: each metric's times, values
            for name, v in zip(present, zs, strict=True):
                ts, vs = series.setdefault(name, ([], []))
                ts.append(t)
                vs.append(v)
        for name, (ts, vs) in series.items():
            i = self._row.get(name)
            if i is None:  # a metric of an older model, restored from a snapshot
                continue
            times = np.array(ts)
            j = np.searchsorted(times, ends, side="right") - 1
            ok = (j >= 0) & (times[np.maximum(j, 0)] > ends - span)
            out[:, i] = np.where(ok, np.array(vs)[np.maximum(j, 0)], np.nan)
        return out

    def _score(self) -> None:
        """Score the samples since the last call against the forecasts published before them."""
        if not self._observed:
            return
        s = self.config.slot_seconds
        H = self.config.horizon
        row = self._row
        for t, present, zs in self._observed:
            for f in self._issued:
                k = math.ceil((t - f.t) / s) - 1  # the slot (t_f + k s, t_f + (k + 1) s]
                if not 0 <= k < H:
                    continue
                for name, v in zip(present, zs, strict=True):
                    i = row[name]
                    if not f.scored[k, i]:  # the first sample of the slot
                        f.scored[k, i] = True
                        self.calibration[name].update(k, (v - f.mean[k, i]) / f.sd[k, i])
                        self.blending[name].update(k, v - f.model[k, i], v - f.seasonal[k, i])
        self._observed.clear()
        latest = float(cast(float, self.t))
        while self._issued and self._issued[0].t + H * s <= latest:
            self._issued.popleft()  # every slot of it has passed

    # --- persistence -----------------------------------------------------------------------
    def to_state(self) -> dict[str, Any]:
        """JSON-ready estimate, counters and parameters (what a snapshot stores)."""
        return {
            "x": None if self.x is None else self.x.tolist(),
            "P": None if self.P is None else self.P.tolist(),
            "t": self.t,
            "last_sample_t": self.last_sample_t,
            "last_values": self.last_values,
            "up": self.up,
            "in_service": self.in_service,
            "pending": self.pending.tolist(),
            "window": self.window,
            "history": list(self._history),
            "recent_p": self.recent_p,
            "counters": asdict(self.counters),
            "blocks": [asdict(b) for b in self.model.blocks],
            "fault": None if self.fault is None else self.fault.to_state(),
            "fails": self._fails,
            "runs": {k: list(v) for k, v in self._runs.items()},
            "level": self.level.to_state(),
            "calibration": {k: c.to_state() for k, c in self.calibration.items()},
            "blending": {k: b.to_state() for k, b in self.blending.items()},
            "recent": [[t, list(p), list(z)] for t, p, z in self._season_samples],
        }

    @classmethod
    def from_state(
        cls,
        site: Site,
        links: Mapping[str, float],
        config: TwinConfig,
        state: Mapping[str, Any],
    ) -> SiteTwin:
        """A twin resumed from ``to_state`` output (same site and links)."""
        blocks = [BlockSpec(**b) for b in state.get("blocks", [])]
        twin = cls(site, links, config, blocks or None)
        if state.get("x") is not None:
            x = np.array(state["x"], dtype=np.float64)
            if x.shape != (twin.model.dim,):
                raise ModelError(
                    f"snapshot of {site.id!r} has {x.shape[0]} states; the model has "
                    f"{twin.model.dim} (links changed?)"
                )
            twin.x = x
            twin.P = np.array(state["P"], dtype=np.float64)
            twin._separable = twin._check_separable()
        twin.t = state.get("t")
        twin.last_sample_t = state.get("last_sample_t")
        twin.last_values = dict(state.get("last_values", {}))
        twin.up = bool(state.get("up", True))
        twin.in_service = state.get("in_service")
        twin.pending = np.array(state.get("pending", [0.0, 0.0]), dtype=np.float64)
        # Older snapshots have only the window; either way the p-values saved are kept.
        saved = state.get("history", state.get("window", []))
        twin._history.extend((float(a), int(b)) for a, b in saved)
        last = list(twin._history)[-config.nis_window :]
        twin._wsum = sum(v for v, _ in last)
        twin._wdof = sum(d for _, d in last)
        twin._seed = [float(p) for p in state.get("recent_p", [])][-config.confirm :]
        twin.counters = Counters(**state.get("counters", {}))
        if state.get("fault") is not None:
            twin.fault = Fault.from_state(state["fault"], config.nis_window)
        twin._fails = int(state.get("fails", 0))
        twin._runs = {k: (float(v), int(n)) for k, (v, n) in state.get("runs", {}).items()}
        twin.level.restore(state.get("level", {}))
        for name, cal in state.get("calibration", {}).items():
            restored = LeadCalibrator.from_state(cal)
            if name in twin.calibration and restored.leads == config.horizon:
                twin.calibration[name] = restored  # (a changed horizon starts afresh)
        for name, blend in state.get("blending", {}).items():
            weights = LeadBlender.from_state(blend)
            if name in twin.blending and weights.leads == config.horizon:
                twin.blending[name] = weights
        twin._season_samples.extend(
            (float(t), [str(n) for n in p], [float(v) for v in z])
            for t, p, z in state.get("recent", [])
        )
        return twin


def _mean(acc: tuple[float, int] | None) -> float:
    """The mean of a ``(sum, count)`` accumulator (0 when empty)."""
    return acc[0] / acc[1] if acc and acc[1] else 0.0


def _leads(factor: Array, horizon: int) -> Array:
    """``factor`` per lead cut or extended (with its last value) to ``horizon`` leads."""
    if len(factor) >= horizon:
        return factor[:horizon]
    return np.concatenate([factor, np.full(horizon - len(factor), factor[-1])])


def _chi2_test(entries: Sequence[tuple[float, int]], trim: int) -> tuple[float, int, float]:
    """``(statistic, dof, p_value)`` over ``(nis, dof)`` entries, the ``trim`` most extreme out."""
    kept = sorted(entries, key=lambda e: e[0] / e[1])
    if trim:
        kept = kept[: max(len(kept) - trim, 0)]
    stat = sum(v for v, _ in kept)
    dof = sum(d for _, d in kept)
    if dof == 0:
        return 0.0, 0, 1.0
    return stat, dof, float(chdtrc(dof, stat))


__all__ = [
    "CONTROLS",
    "BlockForecast",
    "Counters",
    "SiteForecast",
    "SiteTwin",
    "TwinConfig",
    "default_blocks",
    "site_model",
]
