"""Batch-job streams for a simulation: from an SWF trace or a synthetic generator.

A ``JobTable`` holds one row per job as numpy columns: what arrives
(``submit`` in simulated seconds, ``run`` and ``req`` in seconds on the
reference machine, ``cores``, the ``recorded_wait`` of the log or NaN, the
``pin``: a site index the job must go to, or -1 to let the broker route it)
and what the simulation made of it (``site``, ``start``, ``end``, ``kills``).
Rows are added when a load event duplicates arrivals, so columns grow by
doubling.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

from simulations.scenario import SwfSpec, SyntheticSpec
from simulations.swf import SwfTrace, read_swf

_INPUT = ("submit", "run", "req", "cores", "recorded_wait", "pin")
_OUTPUT = ("site", "start", "end", "kills")


class JobTable:
    """Jobs as columns (see the module docstring); ``n`` rows are in use."""

    def __init__(
        self,
        submit: np.ndarray,
        run: np.ndarray,
        req: np.ndarray,
        cores: np.ndarray,
        recorded_wait: np.ndarray | None = None,
        credit: str = "",
        pin: np.ndarray | None = None,
    ) -> None:
        n = int(submit.size)
        if not (run.size == req.size == cores.size == n):
            raise ValueError("submit, run, req and cores must have the same length")
        order = np.argsort(submit, kind="stable")
        self.n = n
        self.arrivals = n
        """Rows that arrive from the stream itself (the first ``arrivals`` rows)."""
        self.credit = credit
        self.submit = submit[order].astype(float)
        self.run = run[order].astype(float)
        self.req = np.maximum(req[order].astype(float), 1.0)
        self.cores = cores[order].astype(np.int64)
        self.recorded_wait = (
            np.full(n, np.nan) if recorded_wait is None else recorded_wait[order].astype(float)
        )
        self.pin = np.full(n, -1, dtype=np.int64) if pin is None else pin[order].astype(np.int64)
        self.site = np.full(n, -1, dtype=np.int64)
        self.start = np.full(n, np.nan)
        self.end = np.full(n, np.nan)
        self.kills = np.zeros(n, dtype=np.int64)

    def __len__(self) -> int:
        return self.n

    def append_copy(self, i: int, submit: float) -> int:
        """Add a copy of row ``i`` submitted at ``submit``; return its row."""
        if self.n == self.submit.size:
            size = max(16, 2 * self.n)
            for name in (*_INPUT, *_OUTPUT):
                col = getattr(self, name)
                fill = {"site": -1, "kills": 0, "cores": 0, "pin": -1}.get(name, np.nan)
                grown = np.full(size, fill, dtype=col.dtype)
                grown[: self.n] = col[: self.n]
                setattr(self, name, grown)
        j = self.n
        self.submit[j] = submit
        self.run[j] = self.run[i]
        self.req[j] = self.req[i]
        self.cores[j] = self.cores[i]
        self.pin[j] = self.pin[i]
        self.recorded_wait[j] = np.nan
        self.n += 1
        return j

    def columns(self) -> dict[str, np.ndarray]:
        """Every column cut to the rows in use, plus ``wait`` (start - submit)."""
        out = {name: getattr(self, name)[: self.n] for name in (*_INPUT, *_OUTPUT)}
        out["wait"] = out["start"] - out["submit"]
        return out


def jobs_from_swf(
    spec: SwfSpec, resolve: Callable[[str], Path], load: float, rng: np.random.Generator
) -> JobTable:
    """The jobs of an SWF trace, times relative to its first submission, arrival rate x ``load``.

    ``resolve`` turns ``spec.path`` into the file to read (``Scenario.path``: relative to the
    scenario, confined to its folders).
    """
    trace = read_swf(resolve(spec.path))
    return jobs_from_trace(trace, spec.jobs, spec.copies, spec.speed, load, rng)


def jobs_from_trace(
    trace: SwfTrace,
    jobs: int | None = None,
    copies: int = 1,
    speed: float = 1.0,
    load: float = 1.0,
    rng: np.random.Generator | None = None,
) -> JobTable:
    """A job table from a trace: first ``jobs`` jobs, ``copies`` time-shifted copies.

    Run times and requests are converted to reference-core seconds
    (``x speed``); copy ``c >= 1`` is shifted by a uniform random offset
    within the trace's span, wrapping around (``(t + offset) mod span``), so
    that the copies' peaks do not coincide.
    """
    t = trace.head(jobs) if jobs else trace
    if len(t) == 0:
        raise ValueError(f"{trace.source}: no usable job in the trace")
    sub0 = t.submit - t.submit[0]
    span = float(sub0[-1]) + 1.0
    subs = [sub0]
    gen = rng if rng is not None else np.random.default_rng(0)
    for _ in range(1, copies):
        offset = gen.uniform(0.0, span)
        subs.append(np.mod(sub0 + offset, span))
    submit = np.concatenate(subs) / load
    return JobTable(
        submit,
        np.tile(t.run * speed, copies),
        np.tile(t.req_time * speed, copies),
        np.tile(t.procs, copies),
        np.concatenate([t.wait] + [np.full(len(t), np.nan)] * (copies - 1)),
        credit=t.credit(),
    )


def synthetic_jobs(spec: SyntheticSpec, load: float, rng: np.random.Generator) -> JobTable:
    """Poisson arrivals at ``arrival_rate_per_h x load``, ``jobs x load`` of them (the stream
    spans the same time whatever the load: more load is more work, not the same work
    sooner); sizes and run times as documented.

    Log-normal run time with mean ``m`` and shape ``sigma``: ``mu = ln m - sigma^2 / 2``.

    Common random numbers: each column is drawn from a stream of its own, so the first
    ``jobs`` jobs at any load are the same jobs (same sizes, same run times, arrivals
    closer together by the load): a sweep over the load compares more work with the same
    work, not with another sample. ``rng`` gives the streams' seeds (a fixed number of
    draws, whatever the load).
    """
    n = max(1, round(spec.jobs * load))
    gaps, sizes, runs, over = (
        np.random.default_rng(int(s)) for s in rng.integers(0, 2**63 - 1, 4, dtype=np.int64)
    )
    rate = spec.arrival_rate_per_h * load / 3600.0
    submit = np.cumsum(gaps.exponential(1.0, n)) / rate
    submit -= submit[0]
    kmax = math.floor(math.log2(spec.max_cores))
    cores = 2 ** sizes.integers(0, kmax + 1, n)
    mu = math.log(spec.mean_runtime) - spec.sigma**2 / 2
    run = np.maximum(runs.lognormal(mu, spec.sigma, n), 1.0)
    req = np.ceil(run * over.uniform(1.0, spec.overestimate, n) / 60.0) * 60.0
    return JobTable(submit, run, req, cores)
