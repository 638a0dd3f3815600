"""Energy, cost, carbon and core-seconds of every site, integrated in bulk with numpy.

A site's power is constant between two changes of its busy cores (``SiteAgent``'s
power model), so the run's figures are sums over those constant stretches. Rather
than integrate at every job start and end, the sites note each change (``note``:
site, time, busy cores after it, three list appends) and ``PowerMeter.flush`` turns
the notes into stretches and integrates all of them at once: power, energy, the price
and carbon series' exact integrals (``HourlySeries.cumulative``, vectorised), summed per
site with ``numpy.bincount``. The model flushes at the end of every step and before
anything else that changes how a stretch counts (a price factor, a site going down or
up): between two flushes every site's status, price factor and cores are constant.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from simulations.agents import SiteAgent
    from simulations.series import HourlySeries


class PowerMeter:
    """The per-site accounts (numpy arrays, one entry per site) and the pending notes."""

    def __init__(self) -> None:
        self.sites: list[SiteAgent] = []
        self.note_site: list[int] = []
        self.note_t: list[float] = []
        self.note_busy: list[int] = []
        self.last = np.zeros(0)
        """Time each site is integrated up to."""
        self.busy0 = np.zeros(0)
        """Busy cores of each site at ``last``."""
        self.energy_j = np.zeros(0)
        self.cost_eur = np.zeros(0)
        self.carbon_g = np.zeros(0)
        self.busy_core_s = np.zeros(0)
        self.up_core_s = np.zeros(0)
        self._p_busy = np.zeros(0)
        self._p_idle = np.zeros(0)
        self._cores = np.zeros(0)
        self._series: list[HourlySeries] = []
        self._price_of = np.zeros(0, dtype=np.intp)
        self._carbon_of = np.zeros(0, dtype=np.intp)
        self.flushed_at = -np.inf
        self.origin = 0.0
        """Unix time of simulated time 0 (the series' clock)."""

    def add(self, agent: SiteAgent, now: float) -> None:
        """Start the accounts of ``agent`` (its index is the next one) at ``now``."""
        self.flush(now)
        self.sites.append(agent)
        site = agent.site
        grow = (
            ("last", now),
            ("busy0", float(agent.queue.busy)),
            ("energy_j", 0.0),
            ("cost_eur", 0.0),
            ("carbon_g", 0.0),
            ("busy_core_s", 0.0),
            ("up_core_s", 0.0),
            ("_p_busy", site.power_busy_w * site.pue),
            ("_p_idle", site.power_idle_w * site.pue),
            ("_cores", float(site.cores)),
        )
        for name, value in grow:
            setattr(self, name, np.append(getattr(self, name), value))
        self._price_of = np.append(self._price_of, self._series_index(agent.price))
        self._carbon_of = np.append(self._carbon_of, self._series_index(agent.carbon))

    def _series_index(self, series: HourlySeries) -> int:
        for k, s in enumerate(self._series):
            if s is series:
                return k
        self._series.append(series)
        return len(self._series) - 1

    def flush(self, now: float) -> None:
        """Integrate every site from its ``last`` time to ``now``."""
        n = len(self.sites)
        if n == 0 or (self.flushed_at == now and not self.note_site):
            return
        self.flushed_at = now
        m = len(self.note_site)
        # stretches: each site's from ``last`` (busy0), then one from each note; a site's
        # first comes first after the stable sort by site, the notes follow in time order
        site = np.concatenate((np.arange(n), np.asarray(self.note_site, dtype=np.intp)))
        start = np.concatenate((self.last, np.asarray(self.note_t, dtype=float)))
        busy = np.concatenate((self.busy0, np.asarray(self.note_busy, dtype=float)))
        self.note_site.clear()
        self.note_t.clear()
        self.note_busy.clear()
        if m:
            order = np.argsort(site, kind="stable")
            site, start, busy = site[order], start[order], busy[order]
        end = np.empty_like(start)
        end[:-1] = start[1:]
        end[-1] = now
        closing = np.empty(site.size, dtype=bool)
        closing[:-1] = site[1:] != site[:-1]
        closing[-1] = True
        end[closing] = now
        # the state of each site over the window (constant between flushes)
        agents = self.sites
        up = np.fromiter((not a.down for a in agents), dtype=bool, count=n)
        factor = np.fromiter((a.price_factor for a in agents), dtype=float, count=n)
        on = up[site]
        dt = end - start
        cores = self._cores[site]
        p_w = np.where(on, busy * self._p_busy[site] + (cores - busy) * self._p_idle[site], 0.0)
        kw_h = p_w / 3.6e6  # W -> kW, and series-seconds -> hours
        self.energy_j += np.bincount(site, p_w * dt, minlength=n)
        self.busy_core_s += np.bincount(site, np.where(on, busy * dt, 0.0), minlength=n)
        self.up_core_s += np.bincount(site, np.where(on, cores * dt, 0.0), minlength=n)
        price = self._integrals(self._price_of[site], start, end)
        carbon = self._integrals(self._carbon_of[site], start, end)
        self.cost_eur += np.bincount(site, kw_h * factor[site] * price, minlength=n)
        self.carbon_g += np.bincount(site, kw_h * carbon, minlength=n)
        self.busy0[site[closing]] = busy[closing]
        self.last[:] = now

    def _integrals(self, which: np.ndarray, t0: np.ndarray, t1: np.ndarray) -> np.ndarray:
        """``integral(t0, t1)`` of series ``which[i]`` for each stretch ``i``."""
        t0 = t0 + self.origin
        t1 = t1 + self.origin
        if len(self._series) == 1:
            s = self._series[0]
            one: np.ndarray = s.cumulative(t1) - s.cumulative(t0)
            return one
        out = np.empty(t0.size)
        for k, s in enumerate(self._series):
            mask = which == k
            if mask.any():
                out[mask] = s.cumulative(t1[mask]) - s.cumulative(t0[mask])
        return out
