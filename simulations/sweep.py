"""Parameter sweeps: every combination of parameter values x planners x seeds, as one tidy table.

Two back-ends run the same points and return the same table (one row per
run: the swept parameters, planner, seed, then every summary figure):

``local``
    ``mesa.batch_run`` over ``FederationModel`` (the swept parameters are
    passed as keyword overrides with dotted names, e.g. ``workload.load``),
    in ``processes`` worker processes.
``dask``
    a Dask distributed cluster: ``LocalCluster`` with ``workers`` single-threaded
    worker processes by default, or the scheduler at ``address`` of a real
    cluster (its workers need this package installed). Each sweep point is one
    task; results come back as they finish.

Sweep values are given as text (``--sweep workload.load=1,1.5,2``) and read
as YAML scalars, so ``2`` is a number and ``easy`` a string.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pandas as pd  # type: ignore[import-untyped, unused-ignore]
import yaml

from simulations.errors import InvalidScenario
from simulations.experiment import steps_for
from simulations.model import FederationModel
from simulations.scenario import Scenario

SUMMARY_REPORTERS = (
    "jobs_done",
    "jobs_waiting",
    "mean_wait_s",
    "median_wait_s",
    "p95_wait_s",
    "mean_wait_started_s",
    "mean_bounded_slowdown",
    "jobs_makespan_s",
    "energy_kwh",
    "cost_eur",
    "carbon_kg",
    "utilisation",
    "max_site_utilisation",
    "workflows_done",
    "workflows_unfinished",
    "workflows_failed",
    "workflows_unplanned",
    "workflow_mean_makespan_s",
    "deadline_misses",
)
"""Summary figures every sweep row carries."""


def parse_sweep(items: Sequence[str]) -> dict[str, list[Any]]:
    """``["workload.load=1,2", "queue=fcfs,easy"]`` -> ``{"workload.load": [1, 2], ...}``."""
    grid: dict[str, list[Any]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        key = key.strip()
        if not sep or not key or not values.strip():
            raise InvalidScenario.single(
                "--sweep", item, "write PARAM=v1,v2 (e.g. workload.load=1,1.5,2)"
            )
        grid[key] = [yaml.safe_load(v.strip()) for v in values.split(",") if v.strip()]
    return grid


def sweep_points(scenario: Scenario, grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Every combination of the grid's values x planners x seeds (validated up front)."""
    keys = list(grid)
    points = []
    for values in itertools.product(*(grid[k] for k in keys)):
        overrides = dict(zip(keys, values, strict=True))
        scenario.with_overrides(overrides)  # fail early on a bad path or value
        for planner in scenario.planners:
            for seed in scenario.seeds:
                points.append({**overrides, "planner": planner, "seed": seed})
    return points


def run_point(scenario: dict[str, Any], point: dict[str, Any]) -> dict[str, Any]:
    """Run one sweep point to the horizon; the row of the tidy table (a Dask task).

    ``wall_s`` and ``cpu_s`` are the point's own wall and CPU seconds (their
    ratio shows how much CPU the worker actually got).
    """
    params = dict(point)
    planner, seed = params.pop("planner"), params.pop("seed")
    t0, c0 = time.perf_counter(), time.process_time()
    model = FederationModel(scenario, seed=seed, planner=planner, **params)
    model.run()
    summary = model.summary()
    row = {**point, **{k: summary[k] for k in SUMMARY_REPORTERS}}
    row["wall_s"] = time.perf_counter() - t0
    row["cpu_s"] = time.process_time() - c0
    return row


def sweep_local(
    scenario: Scenario, grid: Mapping[str, Sequence[Any]], processes: int = 1
) -> pd.DataFrame:
    """The sweep through ``mesa.batch_run`` (``processes`` worker processes)."""
    from mesa.batchrunner import batch_run

    sweep_points(scenario, grid)
    parameters: dict[str, Any] = {
        "scenario": [scenario],
        "planner": list(scenario.planners),
        "seed": list(scenario.seeds),
        **{k: list(v) for k, v in grid.items()},
    }
    rows = batch_run(
        FederationModel,
        parameters,
        number_processes=processes,
        iterations=1,
        data_collection_period=-1,
        max_steps=steps_for(scenario),
        display_progress=False,
    )
    table = pd.DataFrame(rows)
    keep = [*grid, "planner", "seed", *SUMMARY_REPORTERS]
    return table[[c for c in keep if c in table.columns]].reset_index(drop=True)


def sweep_dask(
    scenario: Scenario,
    grid: Mapping[str, Sequence[Any]],
    address: str | None = None,
    workers: int = 2,
    on_done: Callable[[int, int], None] | None = None,
) -> pd.DataFrame:
    """The sweep on Dask: a ``LocalCluster`` of ``workers`` processes, or ``address``'s cluster.

    ``on_done(done, total)`` is called as each point finishes (a progress bar).
    """
    from distributed import Client, LocalCluster, as_completed

    points = sweep_points(scenario, grid)
    data = scenario.model_dump(mode="json")
    cluster = None
    if address:
        client = Client(address)
    else:
        cluster = LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",
            host="127.0.0.1",
        )
        client = Client(cluster)
    try:
        futures = [client.submit(run_point, data, p, pure=False) for p in points]
        rows = []
        for i, fut in enumerate(as_completed(futures), 1):
            rows.append(fut.result())
            if on_done is not None:
                on_done(i, len(points))
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    table = pd.DataFrame(rows)
    order = [*grid, "planner", "seed"]
    return table.sort_values(order, kind="stable").reset_index(drop=True)


def sweep(
    scenario: Scenario,
    grid: Mapping[str, Sequence[Any]],
    backend: str = "local",
    address: str | None = None,
    workers: int = 2,
    on_done: Callable[[int, int], None] | None = None,
) -> pd.DataFrame:
    """Run the sweep on ``backend`` (``local`` or ``dask``); see the module docstring."""
    if backend == "dask" or address:
        return sweep_dask(scenario, grid, address, workers, on_done)
    if backend != "local":
        raise ValueError(f"unknown sweep backend {backend!r}; use local or dask")
    return sweep_local(scenario, grid)
