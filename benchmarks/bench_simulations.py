"""Benchmark of the simulations: scale, validation against KTH-SP2, and sweep speed-up.

1. Scale: the KTH-SP2 log (Parallel Workloads Archive) replayed on federations
   of 10, 100 and 1,000 sites of 100 cores each. The trace is copied
   (``copies``, each copy shifted by a random offset) and compressed in time
   (``load``) so that every site sees about the original KTH load; jobs are
   routed by the broker (power of two choices on the sites' telemetry; the
   twin is off at this scale, see the table notes). Reported: simulated jobs
   per wall-second and simulated days per wall-second. Baseline in the same
   run: the same jobs replayed through the same ``BatchQueue`` objects by a
   bare ``heapq`` event loop with round-robin routing (no Mesa, no broker,
   no power accounting), which bounds what the Mesa layer costs.
2. Validation: KTH-SP2 on one simulated 100-core site with EASY (the log's
   own scheduler) and FCFS; simulated vs recorded mean and median wait and the
   per-job correlations.
3. Sweeps: the same 4 sweep points with Dask LocalClusters of 1 and 2 workers.

Needs ../shared/data (the KTH log); ``python -m benchmarks simulations``.
``SIM_BENCH_QUICK=1`` stops the scale series at 100 sites.
"""

from __future__ import annotations

import heapq
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from federation.model import Federation
from simulations import (
    BatchQueue,
    FederationModel,
    Job,
    JobTable,
    jobs_from_trace,
    read_swf,
    scenario_from_dict,
    sweep_dask,
    sweep_local,
    validate_trace,
)

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CONTINUUM_SHARED_DATA", REPO.parent / "shared" / "data"))
KTH = SHARED / "swf" / "KTH-SP2-1996-2.1-cln.swf"
DAY = 86_400.0


def federation_of(n: int, cores: int = 100) -> Federation:
    """``n`` identical 100-core sites at reference speed (no links: jobs are independent)."""
    site = {
        "kind": "hpc",
        "cores": cores,
        "memory": "200 GB",
        "power_idle_w": 2.0,
        "power_busy_w": 9.0,
        "pue": 1.3,
        "price_per_core_hour": 0.01,
        "jurisdiction": "EU",
        "buffer_capacity": "1 TB",
    }
    return Federation.from_dict(
        {"name": f"bench-{n}", "sites": [{**site, "id": f"s{i:04d}"} for i in range(n)]}
    )


def workload_for(n_sites: int, jobs_per_site: int, seed: int = 0) -> JobTable:
    """About ``jobs_per_site`` KTH jobs per site at about KTH's load per site."""
    trace = read_swf(KTH)
    copies = max(1, math.ceil(n_sites * jobs_per_site / len(trace)))
    load = n_sites / copies  # copies x KTH rate, compressed to n_sites x KTH rate
    table = jobs_from_trace(trace, copies=copies, load=load, rng=np.random.default_rng(seed))
    keep = min(len(table), n_sites * jobs_per_site)
    return JobTable(table.submit[:keep], table.run[:keep], table.req[:keep], table.cores[:keep])


def scale_scenario(horizon: float) -> dict[str, Any]:
    return {
        "name": "scale",
        "horizon": horizon,
        "step": DAY,
        "telemetry_interval": 3600.0,
        "routing": "least-wait",
        "twin": False,
        "collect_sites": False,
        "workload": {"synthetic": {"jobs": 1, "arrival_rate_per_h": 1}},
    }


def run_mesa(n_sites: int, jobs: JobTable, twin: str = "") -> dict[str, float]:
    """One scale run; ``twin``: "" (raw telemetry), "federation" or "fleet"."""
    horizon = float(jobs.submit.max()) + 20 * DAY
    mode = {"twin": bool(twin), "twin_mode": twin or "federation"}
    sc = scenario_from_dict({**scale_scenario(horizon), **mode}, "bench")
    t0 = time.perf_counter()
    model = FederationModel(sc, seed=1, federation=federation_of(n_sites), jobs=jobs)
    build = time.perf_counter() - t0
    model.run()
    wall = time.perf_counter() - t0
    s = model.summary()
    last_end = float(np.nanmax(model.jobs.columns()["end"]))
    return {
        "jobs": s["jobs_done"],
        "build_s": build,
        "wall_s": wall,
        "sim_days": last_end / DAY,
        "mean_wait_s": s["mean_wait_s"],
        "utilisation": s["utilisation"],
    }


def run_heapq(n_sites: int, jobs: JobTable) -> dict[str, float]:
    """The baseline: the same jobs through bare BatchQueues and a heapq loop, round-robin."""
    t0 = time.perf_counter()
    queues = [BatchQueue(100, "easy") for _ in range(n_sites)]
    events: list[tuple[float, int, int, int]] = []  # time, kind (0 end, 1 arrival), seq, job
    objs: dict[int, Job] = {}
    sub, run, req, cores = (
        jobs.submit.tolist(),
        jobs.run.tolist(),
        jobs.req.tolist(),
        jobs.cores.tolist(),
    )
    for i in range(len(sub)):
        heapq.heappush(events, (sub[i], 1, i, i))
    seq = len(sub)
    done = 0
    last = 0.0
    while events:
        t, kind, _, i = heapq.heappop(events)
        if kind == 1:
            job = Job(i, cores[i], run[i], req[i], t)
            job.site = i % n_sites
            objs[i] = job
            q = queues[job.site]
            q.submit(job)
        else:
            job = objs.pop(i)
            q = queues[job.site]
            q.finish(job)
            done += 1
            last = t
        for started in q.schedule(t):
            seq += 1
            heapq.heappush(events, (started.end, 0, seq, started.index))
    return {"jobs": done, "wall_s": time.perf_counter() - t0, "sim_days": last / DAY}


def scale_table() -> None:
    sizes = [10, 100] if os.environ.get("SIM_BENCH_QUICK") else [10, 100, 1000]
    print("\nScale: KTH-SP2 jobs on N sites of 100 cores (broker: power of two choices)")
    head = (
        f"{'sites':>6} {'engine':<22} {'jobs':>10} {'wall s':>8} {'jobs/s':>9} "
        f"{'sim d/s':>8} {'sim days':>9} {'mean wait s':>12} {'util':>6}"
    )
    print(head)
    print("-" * len(head))
    for n in sizes:
        jobs = workload_for(n, 1000)
        if n <= 100:
            base = run_heapq(n, jobs)
            print(
                f"{n:>6} {'heapq baseline (rr)':<22} {base['jobs']:>10,} {base['wall_s']:>8.1f} "
                f"{base['jobs'] / base['wall_s']:>9,.0f} {base['sim_days'] / base['wall_s']:>8.1f} "
                f"{base['sim_days']:>9.1f} {'-':>12} {'-':>6}"
            )
        engines = [("mesa DEVS + broker", "")]
        if n <= 10:
            engines.append(("  same, twin's view", "federation"))
        engines.append(("  same, FleetTwin view", "fleet"))
        for label, twin in engines:
            r = run_mesa(n, workload_for(n, 1000), twin)
            print(
                f"{n:>6} {label:<22} {r['jobs']:>10,} {r['wall_s']:>8.1f} "
                f"{r['jobs'] / r['wall_s']:>9,.0f} {r['sim_days'] / r['wall_s']:>8.1f} "
                f"{r['sim_days']:>9.1f} {r['mean_wait_s']:>12,.0f} {r['utilisation']:>6.2f}"
            )
    print(
        "(1,000 jobs per site; wall time includes building the model; the broker reads raw"
        " telemetry,\n or the view of the real FederationTwin (one SiteTwin per site) or"
        " FleetTwin (one batched filter),\n fed hourly samples, viewed hourly)"
    )


def validation_table() -> None:
    print("\nValidation: KTH-SP2 (28k jobs) on one simulated 100-core site")
    rows = [
        validate_trace(KTH, cores=100, policy=p, scheduling_interval=c)
        for p, c in (("easy", 0.0), ("easy", 300.0), ("fcfs", 0.0))
    ]
    print(rows[0].credit)
    head = (
        f"{'policy':<6} {'cycle s':>7} {'jobs':>7} {'mean wait sim':>14} {'mean wait rec':>14} "
        f"{'median sim':>11} {'median rec':>11} {'pearson':>8} {'spearman':>9} {'wall s':>7}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        print(
            f"{r.policy:<6} {r.scheduling_interval_s:>7.0f} {r.jobs:>7,} "
            f"{r.simulated_mean_wait_s:>14,.0f} "
            f"{r.recorded_mean_wait_s:>14,.0f} {r.simulated_median_wait_s:>11,.0f} "
            f"{r.recorded_median_wait_s:>11,.0f} {r.pearson:>8.3f} {r.spearman:>9.3f} "
            f"{r.wall_s:>7.1f}"
        )


def sweep_table() -> None:
    print("\nSweep speed-up: 6 points (load 1 to 2.25; 50 sites, 150k synthetic jobs each)")
    sc = scenario_from_dict(
        {
            "name": "sweep-bench",
            "federation": {
                "name": "sweep",
                "sites": [
                    {
                        "id": f"s{i}",
                        "kind": "hpc",
                        "cores": 100,
                        "memory": "200 GB",
                        "power_idle_w": 2,
                        "power_busy_w": 9,
                        "price_per_core_hour": 0.01,
                        "jurisdiction": "EU",
                        "buffer_capacity": "1 TB",
                    }
                    for i in range(50)
                ],
            },
            "horizon": 21 * DAY,
            "step": DAY,
            "twin": False,
            "collect_sites": False,
            "workload": {
                "synthetic": {
                    "jobs": 150_000,
                    "arrival_rate_per_h": 300,
                    "max_cores": 64,
                    "mean_runtime": "1 h",
                }
            },
        },
        "bench",
    )
    grid = {"workload.load": [1, 1.25, 1.5, 1.75, 2, 2.25]}
    head = (
        f"{'backend':<26} {'points':>6} {'wall s':>8} {'points wall/cpu s':>18} "
        f"{'speed-up':>9} {'load avg':>9}"
    )
    print(head)
    print("-" * len(head))
    rows: list[tuple[str, int, float, str]] = []
    t0 = time.perf_counter()
    local = sweep_local(sc, grid)
    rows.append(("mesa batch_run, 1 process", len(local), time.perf_counter() - t0, "-"))
    load = [os.getloadavg()[0]]
    for workers in (1, 2):
        t0 = time.perf_counter()
        table = sweep_dask(sc, grid, workers=workers)
        wall = time.perf_counter() - t0
        points = f"{table['wall_s'].sum():.1f} / {table['cpu_s'].sum():.1f}"
        rows.append((f"dask LocalCluster, {workers} wkr", len(table), wall, points))
        load.append(os.getloadavg()[0])
    one_worker = rows[1][2]
    for (label, n, wall, points), la in zip(rows, load, strict=True):
        print(f"{label:<26} {n:>6} {wall:>8.1f} {points:>18} {one_worker / wall:>9.2f} {la:>9.1f}")
    print(
        "(speed-up against 1 Dask worker; Dask times include starting the cluster; 'points"
        " wall/cpu' sums\n the points' own wall and CPU seconds: wall above CPU means the"
        " workers waited for a core; the\n load average shows how busy the 2 shared cores were)"
    )


def main() -> None:
    if not KTH.is_file():
        print(f"skipped: {KTH} not found (set CONTINUUM_SHARED_DATA)")
        return
    validation_table()
    sweep_table()
    scale_table()


if __name__ == "__main__":
    main()
