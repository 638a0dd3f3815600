"""Validation against a real trace: replay an SWF log on one simulated site.

The log's jobs (sizes, submit times, actual run times, walltime requests) are
submitted to one site of ``cores`` cores with the chosen queue policy; each
job's simulated wait is compared with the wait the log recorded: mean and
median of both, and their per-job Pearson and Spearman correlations.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
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


@dataclass(frozen=True)
class ValidationReport:
    """Simulated vs recorded waits of one replay."""

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
    wall_s: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def single_site_scenario(
    cores: int, policy: QueuePolicy | str, horizon: float, interval: float = 0.0
) -> dict[str, Any]:
    """A scenario of one ``cores``-core site at reference speed, jobs routed home, no twin."""
    site = {
        "id": "replay",
        "kind": "hpc",
        "cores": cores,
        "memory": "1 TB",
        "power_idle_w": 2.0,
        "power_busy_w": 9.0,
        "price_per_core_hour": 0.0,
        "jurisdiction": "EU",
        "buffer_capacity": "1 TB",
    }
    return {
        "name": "trace-replay",
        "federation": {"name": "replay", "sites": [site]},
        "horizon": horizon,
        "step": 7 * DAY,
        "queue": str(policy),
        "scheduling_interval": interval,
        "routing": "home",
        "twin": False,
        "collect_sites": False,
        "workload": {"synthetic": {"jobs": 1, "arrival_rate_per_h": 1}},
    }


def validate_trace(
    trace: SwfTrace | str | Path,
    cores: int | None = None,
    policy: QueuePolicy | str = QueuePolicy.EASY,
    jobs: int | None = None,
    scheduling_interval: float = 0.0,
) -> ValidationReport:
    """Replay ``trace`` on one site of ``cores`` cores (default: the log's ``MaxProcs``).

    ``scheduling_interval`` (s): the scheduler runs in cycles of this length.
    """
    tr = trace if isinstance(trace, SwfTrace) else read_swf(trace)
    n_cores = cores or tr.max_procs
    table = jobs_from_trace(tr, jobs)
    # long enough for the last job to finish even if the queue is deep
    horizon = float(table.submit.max() + table.run.sum() / n_cores + 30 * DAY)
    sc = scenario_from_dict(
        single_site_scenario(n_cores, policy, horizon, scheduling_interval), "validation"
    )
    t0 = time.perf_counter()
    model = FederationModel(sc, seed=0, jobs=table)
    model.run()
    wall = time.perf_counter() - t0
    cols = table.columns()
    done = ~np.isnan(cols["end"]) & ~np.isnan(cols["recorded_wait"])
    sim, rec = cols["wait"][done], cols["recorded_wait"][done]
    return ValidationReport(
        trace=Path(tr.source).name,
        credit=tr.credit(),
        policy=str(QueuePolicy(policy)),
        scheduling_interval_s=scheduling_interval,
        cores=n_cores,
        jobs=int(done.sum()),
        simulated_mean_wait_s=float(sim.mean()),
        recorded_mean_wait_s=float(rec.mean()),
        simulated_median_wait_s=float(np.median(sim)),
        recorded_median_wait_s=float(np.median(rec)),
        pearson=float(pearsonr(sim, rec).statistic),
        spearman=float(spearmanr(sim, rec).statistic),
        utilisation=float(model.summary()["utilisation"]),
        wall_s=wall,
    )
