"""Validation against a real trace: replay a Parallel Workloads Archive log on its machine.

The machine is read from the log: one simulated site per partition (a log's partitions
are separate machines: the nodes of a cluster, the sites of a grid), each as large as
the header's ``MaxProcs`` when there is one partition, else as its peak of processors
busy at once in the recorded schedule (the header does not give partition sizes). The
log's jobs (sizes, submit times, actual run times, walltime requests) go to their own
partition, scheduled by the chosen queue policy, and each job's simulated wait is
compared with the wait the log recorded: the mean, the median, the mean absolute error
per job, and their per-job Pearson and Spearman correlations, overall and per queue
(the header's ``Queue:`` lines name them).

What the replay knows of the real machine, and what it does not:

* **downtime**: where the recorded schedule shows a partition running nothing for an
  hour or more while one of its jobs waited, the machine was down (or reserved whole):
  with ``downtime=True`` those windows are replayed as outages of the site. Partial
  downtime (some nodes down) leaves no such trace and is not modelled;
* **priorities and fair share**: a log records queue numbers, not the priorities the
  scheduler gave them, so every job is scheduled by the one policy, in arrival order;
* **reservations and dedicated time**: not in the log, except as whole-machine idle
  windows (counted as downtime above);
* **the log's own cleaning**: a cleaned log (``-cln``) lacks the jobs its filter removed
  (flurries of one user, the administrators' jobs); they took processors and are gone,
  so the replay's load is lower than the machine's was; jobs without a size or a run
  time are dropped by the reader.

A log that records no waits (its submit times are start times, e.g. NASA-iPSC) is
replayed and reported without the comparison (``has_recorded_waits`` False).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import pearsonr, spearmanr

from simulations.batch import QueuePolicy
from simulations.model import FederationModel
from simulations.scenario import scenario_from_dict
from simulations.swf import SwfTrace, read_swf
from simulations.workload import jobs_from_trace

DAY = 86_400.0
IDLE_GAP_S = 3600.0
"""Shortest whole-partition idle window (while a job waits) taken for downtime."""


@dataclass(frozen=True)
class ValidationReport:
    """Simulated vs recorded waits of one replay (NaN where the log records no waits)."""

    trace: str
    credit: str
    policy: str
    scheduling_interval_s: float
    cores: int
    jobs: int
    simulated_mean_wait_s: float
    recorded_mean_wait_s: float
    simulated_median_wait_s: float
    recorded_median_wait_s: float
    pearson: float
    spearman: float
    utilisation: float
    """Processor-seconds of the jobs over the machine's, from the first submission to the
    last end (the log's own span, not the replay's padded horizon)."""
    wall_s: float
    partitions: int = 1
    queues: int = 0
    has_recorded_waits: bool = True
    mean_absolute_error_s: float = math.nan
    """Mean over jobs of |simulated wait - recorded wait|."""
    mean_wait_error: float = math.nan
    """(simulated mean wait - recorded mean wait) / recorded mean wait."""
    downtime_h: float = 0.0
    """Hours of whole-partition downtime replayed as outages (0 with ``downtime=False``)."""
    per_queue: dict[str, dict[str, float]] = field(default_factory=dict)
    """Queue (its number and the header's name) -> jobs, simulated and recorded mean wait."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def partition_sizes(trace: SwfTrace) -> dict[int, int]:
    """Processors of each partition: ``MaxProcs`` for a single one, else the peak of
    processors busy at once in the recorded schedule (start = submit + recorded wait, or
    the submit time where the wait is missing), at least its largest job."""
    parts = trace.partition_ids
    if len(parts) == 1:
        return {parts[0]: max(trace.max_procs, int(trace.procs.max()))}
    start = trace.submit + np.nan_to_num(trace.wait, nan=0.0)
    out = {}
    for p in parts:
        mine = trace.partition == p
        times = np.concatenate([start[mine], start[mine] + trace.run[mine]])
        delta = np.concatenate([trace.procs[mine], -trace.procs[mine]])
        order = np.lexsort((delta, times))  # at a tie, ends (negative) first
        peak = int(np.cumsum(delta[order]).max())
        out[p] = max(peak, int(trace.procs[mine].max()))
    return out


def recorded_downtime(
    trace: SwfTrace, partition: int, min_gap: float = IDLE_GAP_S
) -> list[tuple[float, float]]:
    """``(start, end)`` (log seconds) of the windows of at least ``min_gap`` where the
    recorded schedule ran no job of ``partition`` while one of its jobs waited."""
    mine = (trace.partition == partition) & ~np.isnan(trace.wait)
    if not mine.any():
        return []
    sub, start = trace.submit[mine], trace.submit[mine] + trace.wait[mine]
    end = start + trace.run[mine]
    times = np.concatenate([start, end])
    delta = np.concatenate([np.ones(start.size), -np.ones(end.size)])
    order = np.lexsort((-delta, times))  # at a tie, starts first: no false idle instant
    times, busy = times[order], np.cumsum(delta[order])
    waiting_from = np.sort(sub)
    starts_sorted = np.sort(start)
    out = []
    for i in np.flatnonzero(busy[:-1] == 0):
        t0, t1 = float(times[i]), float(times[i + 1])
        if t1 - t0 < min_gap:
            continue
        # some job submitted by t0 had not started by t1
        submitted = np.searchsorted(waiting_from, t0, side="right")
        started = np.searchsorted(starts_sorted, t1, side="left")
        if submitted > started:
            out.append((t0, t1))
    return out


def replay_scenario(
    sizes: dict[int, int],
    policy: QueuePolicy | str,
    horizon: float,
    interval: float = 0.0,
    outages: list[tuple[str, float, float]] | None = None,
) -> dict[str, Any]:
    """A scenario of one site per partition at reference speed, no twin (``outages``:
    ``(site, at, duration)``)."""
    sites = [
        {
            "id": site_id(p, len(sizes)),
            "kind": "hpc",
            "cores": cores,
            "memory": "1 TB",
            "power_idle_w": 2.0,
            "power_busy_w": 9.0,
            "price_per_core_hour": 0.0,
            "jurisdiction": "EU",
            "buffer_capacity": "1 TB",
        }
        for p, cores in sizes.items()
    ]
    return {
        "name": "trace-replay",
        "federation": {"name": "replay", "sites": sites},
        "horizon": horizon,
        "step": 7 * DAY,
        "queue": str(policy),
        "scheduling_interval": interval,
        "routing": "home",
        "twin": False,
        "collect_sites": False,
        "workload": {"synthetic": {"jobs": 1, "arrival_rate_per_h": 1}},
        "events": [
            {"at": at, "kind": "outage", "site": site, "duration": duration}
            for site, at, duration in outages or []
        ],
    }


def single_site_scenario(
    cores: int, policy: QueuePolicy | str, horizon: float, interval: float = 0.0
) -> dict[str, Any]:
    """A scenario of one ``cores``-core site at reference speed, jobs routed home, no twin."""
    return replay_scenario({-1: cores}, policy, horizon, interval)


def site_id(partition: int, partitions: int) -> str:
    return "replay" if partitions == 1 else f"partition-{partition}"


def validate_trace(
    trace: SwfTrace | str | Path,
    cores: int | None = None,
    policy: QueuePolicy | str = QueuePolicy.EASY,
    jobs: int | None = None,
    scheduling_interval: float = 0.0,
    downtime: bool = True,
) -> ValidationReport:
    """Replay ``trace`` on its machine (module docstring) and compare the waits.

    ``cores`` overrides the size of a single-partition machine; ``scheduling_interval``
    (s): the scheduler runs in cycles of this length; ``downtime``: replay the recorded
    whole-partition idle windows as outages.
    """
    tr = trace if isinstance(trace, SwfTrace) else read_swf(trace)
    if jobs:
        tr = tr.head(jobs)
    sizes = partition_sizes(tr)
    if cores is not None:
        if len(sizes) > 1:
            raise ValueError(
                f"{Path(tr.source).name} has {len(sizes)} partitions: their sizes come from "
                "the log, --cores applies to a single machine"
            )
        sizes = {p: cores for p in sizes}
    table = jobs_from_trace(tr)
    index = {p: i for i, p in enumerate(sizes)}
    t0_log = float(tr.submit[0])
    # jobs_from_trace keeps the log's order (sorted by submit): pin each to its partition
    table.pin[:] = [index[int(p)] for p in tr.partition]
    outages: list[tuple[str, float, float]] = []
    if downtime and tr.has_waits:
        for p in sizes:
            for a, b in recorded_downtime(tr, p):
                outages.append((site_id(p, len(sizes)), a - t0_log, b - a))
    capacity = sum(sizes.values())
    # long enough for the last job to finish even if the queues are deep
    horizon = float(table.submit.max() + table.run.sum() / capacity + 30 * DAY)
    sc = scenario_from_dict(
        replay_scenario(sizes, policy, horizon, scheduling_interval, outages), "validation"
    )
    t0 = time.perf_counter()
    model = FederationModel(sc, seed=0, jobs=table)
    model.run()
    wall = time.perf_counter() - t0
    cols = table.columns()
    done = ~np.isnan(cols["end"])
    sim = cols["wait"][done]
    rec = cols["recorded_wait"][done]
    known = ~np.isnan(rec)
    nan = math.nan
    compared = int(known.sum()) >= 2
    s_k, r_k = sim[known], rec[known]
    per_queue: dict[str, dict[str, float]] = {}
    queue_of = tr.queue[done]
    for q in sorted({int(x) for x in np.unique(queue_of)}):
        sel = queue_of == q
        name = f"{q} {tr.queues.get(q, '')}".strip() if q >= 0 else "none"
        rk = rec[sel][~np.isnan(rec[sel])]
        per_queue[name] = {
            "jobs": int(sel.sum()),
            "simulated_mean_wait_s": float(sim[sel].mean()),
            "recorded_mean_wait_s": float(rk.mean()) if rk.size else nan,
        }
    rec_mean = float(r_k.mean()) if compared else nan
    return ValidationReport(
        trace=Path(tr.source).name,
        credit=tr.credit(),
        policy=str(QueuePolicy(policy)),
        scheduling_interval_s=scheduling_interval,
        cores=capacity,
        jobs=int(done.sum()),
        simulated_mean_wait_s=float(sim.mean()),
        recorded_mean_wait_s=rec_mean,
        simulated_median_wait_s=float(np.median(sim)),
        recorded_median_wait_s=float(np.median(r_k)) if compared else nan,
        pearson=float(pearsonr(s_k, r_k).statistic) if compared else nan,
        spearman=float(spearmanr(s_k, r_k).statistic) if compared else nan,
        utilisation=_span_utilisation(cols, done, capacity),
        wall_s=wall,
        partitions=len(sizes),
        queues=max(len(tr.queues), len({int(x) for x in np.unique(tr.queue)} - {-1})),
        has_recorded_waits=compared,
        mean_absolute_error_s=float(np.abs(s_k - r_k).mean()) if compared else nan,
        mean_wait_error=(float(s_k.mean()) - rec_mean) / rec_mean if compared and rec_mean else nan,
        downtime_h=sum(d for _, _, d in outages) / 3600.0,
        per_queue=per_queue,
    )


def _span_utilisation(cols: dict[str, np.ndarray], done: np.ndarray, capacity: int) -> float:
    end = cols["end"][done]
    if not end.size:
        return 0.0
    span = float(end.max() - cols["submit"].min())
    work = float(((cols["end"] - cols["start"])[done] * cols["cores"][done]).sum())
    return work / (capacity * span) if span > 0 else 0.0
