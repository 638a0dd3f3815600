"""Benchmark of the simulations: scale, validation against KTH-SP2, and sweep speed-up.

1. Scale: the KTH-SP2 log (Parallel Workloads Archive) replayed on federations
   of 10, 100 and 1,000 sites of 100 cores each. The trace is copied
   (``copies``, each copy shifted by a random offset) and compressed in time
   (``load``) so that every site sees about the original KTH load; jobs are
   routed by the broker (power of two choices on the sites' telemetry; the
   twin is off at this scale, see the table notes). Reference in the same run:
   a bare FCFS event loop on the same job table (``bare_fcfs``: one ``heapq``,
   plain lists, round-robin, no project class); the model is judged with FCFS
   queues (the loop's policy) on CPU seconds, medians of ``ROUNDS`` rounds, and
   must reach ``SCALE_TARGET_RATIO`` of the loop's speed at 1,000 sites (exit 1
   otherwise). Extra rows: the same jobs through the model's own ``BatchQueue``
   objects (EASY) in a heapq loop, and the model with EASY queues and with a
   twin's view.
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
import statistics
import sys
import tempfile
import time
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np

from federation.model import Federation
from federation.store import Store
from orchestrator.execution import RunStore
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


def run_mesa(n_sites: int, jobs: JobTable, twin: str = "", queue: str = "easy") -> dict[str, float]:
    """One scale run; ``twin``: "" (raw telemetry), "federation" or "fleet"; ``queue``: the
    sites' policy."""
    horizon = float(jobs.submit.max()) + 20 * DAY
    mode = {"twin": bool(twin), "twin_mode": twin or "federation", "queue": queue}
    sc = scenario_from_dict({**scale_scenario(horizon), **mode}, "bench")
    t0, c0 = time.perf_counter(), time.process_time()
    model = FederationModel(sc, seed=1, federation=federation_of(n_sites), jobs=jobs)
    build = time.perf_counter() - t0
    model.run()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    s = model.summary()
    last_end = float(np.nanmax(model.jobs.columns()["end"]))
    return {
        "jobs": s["jobs_done"],
        "build_s": build,
        "wall_s": wall,
        "cpu_s": cpu,
        "sim_days": last_end / DAY,
        "mean_wait_s": s["mean_wait_s"],
        "utilisation": s["utilisation"],
    }


def bare_fcfs(
    n_sites: int,
    submit: list[float],
    run: list[float],
    cores: list[int],
    capacity: int = 100,
    site_of: list[int] | None = None,
) -> list[float]:
    """The bare event loop: FCFS queues of ``capacity`` cores, job ``i`` on site
    ``site_of[i]`` (default: round-robin, ``i % n_sites``), one ``heapq`` of ``(time, seq,
    job)`` (job -1: the next arrivals, one pending at a time, as the model's stream), plain
    lists, no project class. Returns each job's start time (NaN: never started)."""
    n = len(submit)
    site = site_of if site_of is not None else [i % n_sites for i in range(n)]
    free = [capacity] * n_sites
    waiting: list[deque[int]] = [deque() for _ in range(n_sites)]
    start = [math.nan] * n
    push, pop = heapq.heappush, heapq.heappop
    events: list[tuple[float, int, int]] = [(submit[0], 0, -1)] if n else []
    seq = 1
    i = 0
    while events:
        t, _, j = pop(events)
        if j < 0:  # the arrivals of time t
            while i < n and submit[i] <= t:
                s = site[i]
                q = waiting[s]
                q.append(i)
                f = free[s]
                while q and cores[q[0]] <= f:
                    k = q.popleft()
                    f -= cores[k]
                    start[k] = t
                    push(events, (t + run[k], seq, k))
                    seq += 1
                free[s] = f
                i += 1
            if i < n:
                push(events, (submit[i], seq, -1))
                seq += 1
            continue
        s = site[j]  # job j ends
        f = free[s] + cores[j]
        q = waiting[s]
        while q and cores[q[0]] <= f:
            k = q.popleft()
            f -= cores[k]
            start[k] = t
            push(events, (t + run[k], seq, k))
            seq += 1
        free[s] = f
    return start


def bare_easy(
    n_sites: int,
    submit: list[float],
    run: list[float],
    req: list[float],
    cores: list[int],
    capacity: int = 100,
    site_of: list[int] | None = None,
) -> list[float]:
    """``bare_fcfs`` with EASY backfilling (the rule of ``simulations.batch``), plain lists:
    the reference the model's EASY queues are checked against."""
    n = len(submit)
    site = site_of if site_of is not None else [i % n_sites for i in range(n)]
    free = [capacity] * n_sites
    waiting: list[list[int]] = [[] for _ in range(n_sites)]
    running: list[dict[int, float]] = [{} for _ in range(n_sites)]  # job -> estimated end
    start = [math.nan] * n
    events: list[tuple[float, int, int]] = [(submit[0], 0, -1)] if n else []
    seq = 1

    def schedule(s: int, t: float) -> None:
        nonlocal seq
        q, run_s = waiting[s], running[s]
        while q and cores[q[0]] <= free[s]:
            k = q.pop(0)
            free[s] -= cores[k]
            start[k] = t
            run_s[k] = t + req[k]
            heapq.heappush(events, (t + run[k], seq, k))
            seq += 1
        if not q or free[s] == 0 or len(q) < 2:
            return
        head = cores[q[0]]
        avail, shadow, extra = free[s], math.inf, 0
        ends = sorted(run_s.values())
        for e in sorted(set(ends)):
            avail += sum(cores[k] for k, ek in run_s.items() if ek == e)
            if avail >= head:
                shadow, extra = max(e, t), avail - head
                break
        f = free[s]
        kept = [q[0]]
        for k in q[1:]:
            c = cores[k]
            if f and c <= f and (t + req[k] <= shadow or c <= extra):
                if t + req[k] > shadow:
                    extra -= c
                f -= c
                start[k] = t
                run_s[k] = t + req[k]
                heapq.heappush(events, (t + run[k], seq, k))
                seq += 1
            else:
                kept.append(k)
        free[s] = f
        waiting[s] = kept

    i = 0
    while events:
        t, _, j = heapq.heappop(events)
        if j < 0:
            while i < n and submit[i] <= t:
                waiting[site[i]].append(i)
                schedule(site[i], t)
                i += 1
            if i < n:
                heapq.heappush(events, (submit[i], seq, -1))
                seq += 1
            continue
        s = site[j]
        free[s] += cores[j]
        del running[s][j]
        schedule(s, t)
    return start


def run_bare(n_sites: int, jobs: JobTable) -> dict[str, float]:
    """The reference: ``bare_fcfs`` on the job table, round-robin, timed."""
    t0, c0 = time.perf_counter(), time.process_time()
    sub, run, cores = jobs.submit.tolist(), jobs.run.tolist(), jobs.cores.tolist()
    start = bare_fcfs(n_sites, sub, run, cores)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {
        "jobs": len(start),
        "wall_s": wall,
        "cpu_s": cpu,
        "sim_days": max(s + r for s, r in zip(start, run, strict=True)) / DAY,
    }


def run_heapq(n_sites: int, jobs: JobTable) -> dict[str, float]:
    """The same jobs through the model's own ``BatchQueue``s (EASY) in a heapq loop,
    round-robin: what the queues cost without Mesa, the broker or the power accounting."""
    t0, c0 = time.perf_counter(), time.process_time()
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
    return {
        "jobs": done,
        "wall_s": time.perf_counter() - t0,
        "cpu_s": time.process_time() - c0,
        "sim_days": last / DAY,
    }


BWA = SHARED / "wfinstances" / "bwa-chameleon-small-001.json"
"""The workflow of the real-path scale run: 104 steps (WfCommons, makeflow bwa)."""
GROUP = 8
"""Sites per project in the real-path federation (each project's sites fully linked)."""


def project_federation(n: int, cores: int = 100) -> Federation:
    """``n`` sites as ``federation_of``, in projects of ``GROUP`` sites linked at 1 GB/s."""
    doc = federation_of(n, cores).to_dict()
    ids = [s["id"] for s in doc["sites"]]
    groups = [ids[k : k + GROUP] for k in range(0, n, GROUP)]
    doc["links"] = [
        {"src": a, "dst": b, "bandwidth": "1 GB/s", "latency": "5 ms"}
        for g in groups
        for a in g
        for b in g
        if a != b
    ]
    doc["organisations"] = [
        {"id": "bench", "projects": [{"id": f"p{k}", "sites": g} for k, g in enumerate(groups)]}
    ]
    return Federation.from_dict(doc, "benchmark federation")


def workflow_specs(n_sites: int, n_workflows: int, span: float) -> list[dict[str, Any]]:
    """``n_workflows`` submissions of the bwa workflow spread evenly over ``span`` seconds,
    in turn in each project (so each project gets its share)."""
    projects = max(1, n_sites // GROUP)
    per = math.ceil(n_workflows / projects)
    gap = span / n_workflows
    return [
        {
            "path": str(BWA),
            "project": f"p{k}",
            "submit_at": k * gap,
            "every": gap * projects,
            "count": min(per, math.ceil((n_workflows - k) / projects)),
        }
        for k in range(min(projects, n_workflows))
    ]


def run_real_path(
    n_sites: int, n_workflows: int, jobs: JobTable, store: str = ":memory:"
) -> dict[str, float]:
    """Batch jobs and workflows, the workflows through the real executor (``store``: where
    the executor writes, an SQLite file or ``:memory:``)."""
    span = float(jobs.submit.max())
    doc = {
        **scale_scenario(span + 20 * DAY),
        "workload": {
            "synthetic": {"jobs": 1, "arrival_rate_per_h": 1},
            "workflows": workflow_specs(n_sites, n_workflows, span),
        },
    }
    sc = scenario_from_dict(doc, "bench")
    t0, c0 = time.perf_counter(), time.process_time()
    run_store = RunStore(Store.at(store) if store != ":memory:" else Store("sqlite://"))
    model = FederationModel(
        sc, seed=1, federation=project_federation(n_sites), jobs=jobs, run_store=run_store
    )
    model.run()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    run_store.store.close()
    s = model.summary()
    assert model.execution is not None
    steps = sum(len(r.workflow.steps) for r in model.workflow_runs if r.run_id is not None)
    return {
        "jobs": s["jobs_done"],
        "workflows": s["workflows"],
        "workflows_done": s["workflows_done"],
        "steps": steps,
        "passes": model.execution.passes,
        "wall_s": wall,
        "cpu_s": cpu,
        "makespan_s": s["workflow_mean_makespan_s"] or 0.0,
    }


def run_heapq_workflows(n_sites: int, n_workflows: int, jobs: JobTable) -> dict[str, float]:
    """The baseline of the real-path run: the same batch jobs and the same workflows' steps
    through bare ``BatchQueue``s in one ``heapq`` loop. A step is a job released when its
    parents end, on the first site of its workflow's project (where HEFT puts this
    workflow too); batch jobs go round-robin. No Mesa, no planner, no executor, no store."""
    from orchestrator import load_workflow

    wf = load_workflow(BWA)
    order = wf.topological_order()
    index = {sid: i for i, sid in enumerate(order)}
    parents = [[index[p] for p in wf.parents(sid)] for sid in order]
    children = [[index[c] for c in wf.children(sid)] for sid in order]
    work = [wf.step(sid).work / wf.step(sid).cores for sid in order]
    cores_of = [wf.step(sid).cores for sid in order]
    span = float(jobs.submit.max())
    submits = [
        (spec["submit_at"] + c * spec["every"], int(spec["project"][1:]) * GROUP)
        for spec in workflow_specs(n_sites, n_workflows, span)
        for c in range(spec["count"])
    ]
    t0, c0 = time.perf_counter(), time.process_time()
    queues = [BatchQueue(100, "easy") for _ in range(n_sites)]
    # (time, kind, seq, payload): kind 0 end, 1 batch arrival, 2 workflow submission
    events: list[tuple[float, int, int, Any]] = []
    sub, run, req, cores = (
        jobs.submit.tolist(),
        jobs.run.tolist(),
        jobs.req.tolist(),
        jobs.cores.tolist(),
    )
    for i in range(len(sub)):
        events.append((sub[i], 1, i, i))
    seq = len(sub)
    for w, (t, site) in enumerate(submits):
        seq += 1
        events.append((t, 2, seq, (w, site)))
    heapq.heapify(events)
    waiting: dict[int, list[int]] = {}
    steps_done = 0
    done = 0
    while events:
        t, kind, _, payload = heapq.heappop(events)
        if kind == 1:
            i = payload
            job = Job(i, cores[i], run[i], req[i], t)
            job.site = i % n_sites
            q = queues[job.site]
            q.submit(job)
        elif kind == 2:
            w, site = payload
            waiting[w] = [len(p) for p in parents]
            q = queues[site]
            for k, p in enumerate(parents):
                if not p:
                    step = Job(-1, cores_of[k], work[k], max(work[k], 1.0), t, (w, site), str(k))
                    step.site = site
                    q.submit(step)
        else:
            job = payload
            q = queues[job.site]
            q.finish(job)
            if job.owner is None:
                done += 1
            else:
                steps_done += 1
                w, site = job.owner
                for c in children[int(job.tag)]:
                    waiting[w][c] -= 1
                    if waiting[w][c] == 0:
                        step = Job(
                            -1, cores_of[c], work[c], max(work[c], 1.0), t, job.owner, str(c)
                        )
                        step.site = site
                        q.submit(step)
        for started in q.schedule(t):
            seq += 1
            heapq.heappush(events, (started.end, 0, seq, started))
    return {
        "jobs": done,
        "steps": steps_done,
        "workflows": len(submits),
        "wall_s": time.perf_counter() - t0,
        "cpu_s": time.process_time() - c0,
    }


REAL_PATH_TARGET_S = 600.0
"""1,000 sites, 1,000,000 batch jobs and 1,000 workflows through the executor: 10 minutes."""


def real_path_table() -> bool:
    """Workflows through the real executor at scale; True when the target is met."""
    quick = bool(os.environ.get("SIM_BENCH_QUICK"))
    print(
        "\nReal path at scale: KTH-SP2 batch jobs plus bwa workflows (104 steps) through the"
        " real executor\n(HEFT per workflow on its project's 8 sites, one SimulatedConnector per"
        " site over its batch queue)"
    )
    head = (
        f"{'sites':>6} {'engine':<30} {'jobs':>10} {'workflows':>9} {'steps':>8} "
        f"{'passes':>8} {'wall s':>8} {'cpu s':>8} {'steps/s':>8} {'load':>5}"
    )
    print(head)
    print("-" * len(head))
    ok = True
    rows: list[tuple[int, int, str]] = [(100, 100, ":memory:"), (100, 100, "file")]
    if not quick:
        rows.append((1000, 1000, ":memory:"))
    for n, n_wf, store in rows:
        jobs = workload_for(n, 1000)
        base = run_heapq_workflows(n, n_wf, jobs)
        print(
            f"{n:>6} {'heapq baseline':<30} {base['jobs']:>10,} {base['workflows']:>9,} "
            f"{base['steps']:>8,} {'-':>8} {base['wall_s']:>8.1f} {base['cpu_s']:>8.1f} "
            f"{base['steps'] / base['wall_s']:>8,.0f} {os.getloadavg()[0]:>5.1f}"
        )
        with tempfile.TemporaryDirectory() as tmp:
            where = store if store == ":memory:" else str(Path(tmp) / "runs.db")
            r = run_real_path(n, n_wf, workload_for(n, 1000), where)
        label = f"mesa + executor, {'in-memory' if store == ':memory:' else 'file'} SQLite"
        print(
            f"{n:>6} {label:<30} {r['jobs']:>10,} {r['workflows_done']:>9,} {r['steps']:>8,} "
            f"{r['passes']:>8,} {r['wall_s']:>8.1f} {r['cpu_s']:>8.1f} "
            f"{r['steps'] / r['wall_s']:>8,.0f} "
            f"{os.getloadavg()[0]:>5.1f}"
        )
        if n == 1000:
            met = r["wall_s"] < REAL_PATH_TARGET_S and r["workflows_done"] == r["workflows"]
            ok = ok and met
            print(
                f"target: under {REAL_PATH_TARGET_S:.0f} s with every workflow done: "
                f"{'met' if met else 'NOT met'} ({r['wall_s']:.0f} s wall, {r['cpu_s']:.0f} s CPU; "
                f"{r['wall_s'] / base['wall_s']:.1f} x the heapq baseline's wall, "
                f"{r['cpu_s'] / base['cpu_s']:.1f} x its CPU)"
            )
    print(
        "(wall time includes building the model and planning every workflow; the baseline"
        " replays the same\n jobs and steps through bare BatchQueues; the load average is"
        " the 1-minute figure after each row)"
    )
    return ok


SCALE_TARGET_RATIO = 0.25
"""The 1,000-site, 1,000,000-job run at >= 25 % of the bare event loop's speed, same run."""
ROUNDS = 3
"""Rounds of the reference and of the judged row (their medians make the ratio)."""


def scale_table() -> bool:
    """The model against the bare FCFS event loop on the same jobs; True when the
    1,000-site run (FCFS, the loop's policy) is at ``SCALE_TARGET_RATIO`` of the loop's speed
    or better, on CPU seconds measured in this run (medians of ``ROUNDS`` rounds)."""
    sizes = [10, 100] if os.environ.get("SIM_BENCH_QUICK") else [10, 100, 1000]
    print("\nScale: KTH-SP2 jobs on N sites of 100 cores (broker: power of two choices)")
    head = (
        f"{'sites':>6} {'engine':<30} {'jobs':>10} {'wall s':>8} {'jobs/s':>9} "
        f"{'sim days':>9} {'mean wait s':>12} {'util':>5} {'cpu s':>7} {'x bare':>7} {'load':>5}"
    )
    print(head)
    print("-" * len(head))
    ok = True

    def line(n: int, label: str, r: dict[str, float], ratio: float) -> None:
        wait = f"{r['mean_wait_s']:>12,.0f}" if "mean_wait_s" in r else f"{'-':>12}"
        util = f"{r['utilisation']:>5.2f}" if "utilisation" in r else f"{'-':>5}"
        print(
            f"{n:>6} {label:<30} {r['jobs']:>10,} {r['wall_s']:>8.1f} "
            f"{r['jobs'] / r['wall_s']:>9,.0f} {r['sim_days']:>9.1f} {wait} {util} "
            f"{r['cpu_s']:>7.2f} {ratio:>7.2f} {os.getloadavg()[0]:>5.1f}"
        )

    for n in sizes:
        jobs = workload_for(n, 1000)
        bare_runs, fcfs_runs = [], []
        for _ in range(ROUNDS):  # interleaved: both sides see the same load
            bare_runs.append(run_bare(n, jobs))
            fcfs_runs.append(run_mesa(n, workload_for(n, 1000), queue="fcfs"))
        bare_cpu = statistics.median(r["cpu_s"] for r in bare_runs)
        fcfs_cpu = statistics.median(r["cpu_s"] for r in fcfs_runs)
        bare = min(bare_runs, key=lambda r: abs(r["cpu_s"] - bare_cpu))
        fcfs = min(fcfs_runs, key=lambda r: abs(r["cpu_s"] - fcfs_cpu))
        line(n, "bare heapq loop, FCFS (rr)", bare, 1.0)
        base = run_heapq(n, jobs)
        line(n, "heapq + model's queues, EASY", base, bare_cpu / base["cpu_s"])
        line(n, "mesa model, FCFS", fcfs, bare_cpu / fcfs_cpu)
        engines = [("mesa model, EASY", "")]
        if n <= 10:
            engines.append(("  same, twin's view", "federation"))
        engines.append(("  same, FleetTwin view", "fleet"))
        for label, twin in engines:
            r = run_mesa(n, workload_for(n, 1000), twin)
            line(n, label, r, bare_cpu / r["cpu_s"])
        if n == max(sizes):
            ratio = bare_cpu / fcfs_cpu
            met = ratio >= SCALE_TARGET_RATIO
            ok = ok and (met or n < 1000)
            print(
                f"target: the model (FCFS, as the loop) at >= {SCALE_TARGET_RATIO:.2f} x the bare"
                f" loop's speed at {n:,} sites: {'met' if met else 'NOT met'} (median CPU s of"
                f" {ROUNDS} rounds: {fcfs_cpu:.2f} against {bare_cpu:.2f}, ratio {ratio:.2f};"
                f" load {os.getloadavg()[0]:.1f})"
            )
    print(
        "(1,000 jobs per site; 'x bare': the bare loop's CPU seconds over the row's (medians of"
        f" {ROUNDS} rounds for\n the bare loop and the model's FCFS row; CPU, not wall: the 2"
        " cores are shared); the model's times include\n building it, the broker's routing"
        " (power of two choices on hourly telemetry), the power, cost and\n carbon accounts"
        " and the daily data collection; the bare loop routes round-robin and keeps none of\n"
        " them; the model's twin rows read the view of the real FederationTwin (one SiteTwin"
        " per site) or\n FleetTwin (one batched filter), fed hourly samples, viewed hourly)"
    )
    return ok


TRACES = (KTH, REPO / "examples" / "traces" / "NASA-iPSC-1993-3.1-cln.swf.gz")
"""Every shipped trace (the docs' validation table has a row set for each)."""


def validation_table() -> None:
    for trace in TRACES:
        rows = [
            validate_trace(trace, policy=p, scheduling_interval=c, downtime=d)
            for p, c, d in (
                ("easy", 0.0, True),
                ("easy", 0.0, False),
                ("easy", 300.0, True),
                ("fcfs", 0.0, True),
            )
        ]
        first = rows[0]
        print(
            f"\nValidation: {trace.name} ({first.jobs:,} jobs; {first.partitions} partition(s),"
            f" {first.cores} cores, {first.queues} queue(s))"
        )
        print(first.credit)
        head = (
            f"{'policy':<6} {'cycle s':>7} {'downtime':>8} {'mean wait sim':>14} "
            f"{'mean wait rec':>14} {'error':>7} {'median sim':>11} {'median rec':>11} "
            f"{'MAE s':>8} {'pearson':>8} {'spearman':>9} {'util':>5} {'wall s':>7}"
        )
        print(head)
        print("-" * len(head))
        for r in rows:
            down = "off" if r is rows[1] else "on"
            print(
                f"{r.policy:<6} {r.scheduling_interval_s:>7.0f} {down:>8} "
                f"{r.simulated_mean_wait_s:>14,.0f} {r.recorded_mean_wait_s:>14,.0f} "
                f"{r.mean_wait_error:>7.2f} {r.simulated_median_wait_s:>11,.0f} "
                f"{r.recorded_median_wait_s:>11,.0f} {r.mean_absolute_error_s:>8,.0f} "
                f"{r.pearson:>8.3f} {r.spearman:>9.3f} {r.utilisation:>5.2f} {r.wall_s:>7.1f}"
            )
        for name, q in first.per_queue.items():
            print(
                f"  queue {name} (EASY, downtime on): "
                + ", ".join(f"{k} {v:,.3g}" for k, v in q.items())
            )
        if not first.has_recorded_waits:
            print("  (the log records no waits: its submit times are start times; replay only)")


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


def main() -> int:
    """0 when every target is met, 1 when one is missed (the exit status)."""
    if not KTH.is_file():
        print(f"skipped: {KTH} not found (set CONTINUUM_SHARED_DATA)")
        return 0
    validation_table()
    sweep_table()
    ok = scale_table()
    ok = real_path_table() and ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
