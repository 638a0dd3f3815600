"""Faults that stay flagged until the site recovers or an operator accepts the new level.

A Kalman filter adapts to whatever it is fed: left alone, a step change or a
stuck sensor is absorbed within hours and the innovation test reads ``ok``
again although nothing was repaired. So when a ``SiteTwin`` flags a fault it
keeps a **reference**: its estimate from before the fault (the oldest of the
last few estimates it keeps), predicted forward with the model and updated
only with the samples that agree with it (gated at ``GATE``). The live filter
goes on tracking what the site reports, so its forecasts follow a real new
level; the *flag* follows the reference:

* the site **recovers** when ``confirm`` consecutive windows of
  ``nis_window`` samples, tested *untrimmed* against the reference, pass
  (``p >= alpha_degraded``); the live estimate is then reset to the
  reference's, which has followed the healthy samples;
* an operator **accepts** the new level (``SiteTwin.accept``, the API's
  ``POST /api/v1/sites/{id}/state/accept``, ``continuum twin accept``): the
  reference is dropped and the live filter, already on the new level, is kept.

Three kinds of fault open a reference: ``innovation`` (the trimmed chi-square
window test failed ``confirm`` times in a row, as before), ``jump`` (one
sample's own p-value below ``alpha_jump``: with little observation noise a
step change is one huge innovation that the filter absorbs at once, and the
trimmed window, built to ignore single outliers, never sees it; the jump is
flagged only when the next ``confirm`` samples are also better explained by
the level it jumped to than by the reference, otherwise it was an outlier and
is forgotten; a confirmed jump keeps its ``offset``, the mean residual of the
jump and of those samples, and while a sample is better explained by the
reference plus the offset the reference learns from the sample less the
offset: it follows the healthy process under the fault, its uncertainty does
not grow until the offset looks plausible, and the fault stays flagged until
the site jumps back or an operator accepts) and ``stuck`` (a
metric repeated exactly the same value ``stuck_after`` samples in a row,
away from its bounds: a utilisation of 0 or 1 and an empty queue repeat
legitimately). A stuck fault recovers only once the value moves again and
agrees with the reference.

Once a step's support has lapsed (its offset no longer explains its last
samples better), a recovery is tested only on windows of samples that all came
after the lapse (``Fault.lapsed``). A sample that agrees with the reference and
is a jump away from the reference plus the offset (a jump back) puts the step
in doubt (``Fault.doubt``): until a sample favours the offset by as much again,
the reference learns nothing from samples that favour it only narrowly. A
recovery after a lapse also asks the samples since the lapse whether they hold
an offset of their own (significant at ``alpha_degraded``, one dof): if they
do, the step persists with that offset (``Fault.since_lapse``; its first
offset may have taken in a real move of the series that has since ended).

Every test above reads a sample's NIS over the site's **noise level**
(``NoiseLevel``): the median, over the last ``level_window`` updates, of each
NIS over the median of its chi-square distribution, when that exceeds 1. A
block fitted on a calm season (January's prices) meets a volatile one's
ordinary moves (spring's solar hours) as p < 1e-6 jumps, one after the other;
the median is the innovations' typical size, which a fault of a few days
barely moves, whereas their mean or a high quantile follows the faults
themselves. It never goes below 1: the model's noise is the floor, so a site
noisier than its model is not held to a bar its model would fail, and a
quieter one is not flagged for ordinary moves.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.special import chdtri  # inverse of the chi-square survival function

from twin.kalman import Array

GATE = 1e-2
"""A sample updates the reference only when its own chi-square p-value is at least this."""

SUPPORT_SAMPLES = 12
"""A confirmed step lasts while it explains its last this many samples better (in sum)."""

FAULT_KINDS = ("innovation", "jump", "stuck")


@dataclass
class Fault:
    """An open fault of a site and its reference estimate (see the module docstring)."""

    kind: str
    since: float  # time of the sample that opened the fault (unix s)
    t: float  # time of the reference estimate
    x: Array
    P: Array
    blocks: tuple[str, ...] = ()  # stuck metrics (empty for an innovation fault)
    history: deque[tuple[float, int]] = field(default_factory=deque)
    passed: int = 0  # consecutive passing windows against the reference
    confirmed: bool = True  # a suspected jump is confirmed by the samples after it
    # a jump's offset per metric: the mean residual against the reference of the samples
    # that confirmed it (sums and counts while it is suspected)
    offset: dict[str, float] = field(default_factory=dict)
    residuals: dict[str, tuple[float, int]] = field(default_factory=dict)
    # per sample since the offset was confirmed, NIS without the offset less NIS with it
    # (twice the log-likelihood ratio of "the step persists"; positive: it does), the last
    # ``SUPPORT_SAMPLES``
    support: deque[float] = field(default_factory=lambda: deque(maxlen=SUPPORT_SAMPLES))
    # samples in a row since the step's support last held (0 while it holds): a recovery
    # is tested only on windows of samples that came after it lapsed
    lapsed: int = 0
    # a jump back was seen and no sample has favoured the offset as strongly since
    doubt: bool = False
    # per sample tested against the reference since the step's support lapsed, per metric:
    # (innovation / variance, 1 / variance), the last ``SUPPORT_SAMPLES``
    since_lapse: deque[dict[str, tuple[float, float]]] = field(
        default_factory=lambda: deque(maxlen=SUPPORT_SAMPLES)
    )

    def to_state(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "since": self.since,
            "t": self.t,
            "x": self.x.tolist(),
            "P": self.P.tolist(),
            "blocks": list(self.blocks),
            "history": list(self.history),
            "passed": self.passed,
            "confirmed": self.confirmed,
            "offset": dict(self.offset),
            "residuals": {k: list(v) for k, v in self.residuals.items()},
            "support": list(self.support),
            "lapsed": self.lapsed,
            "doubt": self.doubt,
            "since_lapse": [{k: list(v) for k, v in e.items()} for e in self.since_lapse],
        }

    @classmethod
    def from_state(cls, state: dict[str, Any], window: int) -> Fault:
        return cls(
            kind=str(state["kind"]),
            since=float(state["since"]),
            t=float(state["t"]),
            x=np.array(state["x"], dtype=np.float64),
            P=np.array(state["P"], dtype=np.float64),
            blocks=tuple(state.get("blocks", ())),
            history=deque(((float(a), int(b)) for a, b in state.get("history", [])), window),
            passed=int(state.get("passed", 0)),
            confirmed=bool(state.get("confirmed", True)),
            offset={str(k): float(v) for k, v in state.get("offset", {}).items()},
            residuals={
                str(k): (float(a), int(n)) for k, (a, n) in state.get("residuals", {}).items()
            },
            support=deque((float(v) for v in state.get("support", ())), SUPPORT_SAMPLES),
            lapsed=int(state.get("lapsed", 0)),
            doubt=bool(state.get("doubt", False)),
            since_lapse=deque(
                (
                    {str(k): (float(a), float(b)) for k, (a, b) in e.items()}
                    for e in state.get("since_lapse", ())
                ),
                SUPPORT_SAMPLES,
            ),
        )


class CriticalValues:
    """``chi2.isf(alpha, dof)`` per degrees of freedom, computed once each.

    Comparing a window's statistic with its critical value is the same test as
    comparing its p-value with ``alpha``, without a special function per sample.
    """

    def __init__(self, alpha: float) -> None:
        self.alpha = alpha
        self._cache: dict[int, float] = {}

    def __call__(self, dof: int) -> float:
        hit = self._cache.get(dof)
        if hit is None:
            hit = self._cache[dof] = float(chdtri(dof, self.alpha))
        return hit

    def table(self, max_dof: int) -> list[float]:
        """The critical values for ``0..max_dof`` degrees of freedom (0: infinite), by index."""
        return [math.inf] + [self(d) for d in range(1, max_dof + 1)]


def trimmed_statistic(entries: deque[tuple[float, int]], size: int, trim: int) -> tuple[float, int]:
    """Sum of NIS and of dof over the last ``size`` entries, the ``trim`` most extreme out."""
    window = list(entries)[-size:]
    if trim:
        window.sort(key=lambda e: e[0] / e[1])
        window = window[: len(window) - trim]
    return sum(v for v, _ in window), sum(d for _, d in window)


def window_fails(
    entries: deque[tuple[float, int]],
    size: int,
    trim: int,
    total: tuple[float, int],
    trim_dof: int,
    critical: list[float],
) -> bool:
    """Whether the last ``size`` entries fail the trimmed chi-square test at ``critical``.

    ``total`` is the untrimmed ``(sum of NIS, sum of dof)`` of those entries, kept as they
    come. The trimmed statistic is at most the untrimmed sum, its dof at least
    ``dof - trim_dof`` (``trim`` entries of at most ``trim_dof / trim`` dof each left out),
    and the critical value grows with the dof: a sum below the critical value of that
    bound passes without sorting the window (most windows, on a sound model).
    """
    low = total[1] - trim_dof
    if low > 0 and total[0] <= critical[low] * (1.0 - 1e-9):
        return False
    stat, dof = trimmed_statistic(entries, size, trim)
    return bool(dof) and stat > critical[dof]


LEVEL_EVERY = 168
"""The noise level is re-estimated after this many updates (a week of hourly telemetry)."""


class NoiseLevel:
    """The size of a site's innovations against its model's: what its fault tests divide by.

    ``add`` records one update's NIS and returns it over ``scale``, the median
    of the last ``window`` NIS, each over the median of the chi-square
    distribution with its degrees of freedom (1 when the model's noise is
    right), floored at 1 and re-estimated every ``LEVEL_EVERY`` updates once
    the window is full (``window`` 0: always 1).
    """

    def __init__(self, window: int, max_dof: int) -> None:
        self.window = window
        self.scale = 1.0
        self._median = [math.nan] + [float(chdtri(d, 0.5)) for d in range(1, max_dof + 1)]
        self._recent: deque[float] = deque(maxlen=max(window, 1))
        self._since = 0

    def add(self, nis: float, dof: int) -> float:
        """Record one update's ``nis`` (``dof`` observed); returns ``nis / scale``."""
        if self.window:
            recent = self._recent
            recent.append(nis / self._median[dof])
            self._since += 1
            if self._since >= LEVEL_EVERY and len(recent) == self.window:
                self._since = 0
                self.scale = max(1.0, statistics.median(recent))
        return nis / self.scale

    def to_state(self) -> dict[str, Any]:
        return {"scale": self.scale, "recent": list(self._recent), "since": self._since}

    def restore(self, state: dict[str, Any]) -> None:
        """Resume from ``to_state`` output (a snapshot)."""
        self.scale = float(state.get("scale", 1.0))
        self._recent.extend(float(v) for v in state.get("recent", ()))
        self._since = int(state.get("since", 0))


__all__ = [
    "FAULT_KINDS",
    "GATE",
    "LEVEL_EVERY",
    "SUPPORT_SAMPLES",
    "CriticalValues",
    "Fault",
    "NoiseLevel",
    "trimmed_statistic",
    "window_fails",
]
