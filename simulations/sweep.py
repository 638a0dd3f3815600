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
import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
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


SWEEP_METRICS = (
    ("mean_wait_s", "mean wait (s)"),
    ("p95_wait_s", "95th percentile wait (s)"),
    ("utilisation", "utilisation"),
    ("energy_kwh", "energy (kWh)"),
    ("cost_eur", "cost (EUR)"),
    ("carbon_kg", "carbon (kgCO2e)"),
    ("workflow_mean_makespan_s", "workflow makespan (s)"),
    ("deadline_misses", "deadline misses"),
)
"""The figures a sweep plot shows, each in its own panel (those the table has)."""
STYLES = ("-", "--", ":", "-.")


def plot_sweep(table: pd.DataFrame, params: Sequence[str], folder: Path | str) -> list[Path]:
    """One PNG per swept parameter (``sweep-<param>.png``): each figure of ``SWEEP_METRICS``
    against the parameter's values, one line per planner; the mean over the seeds and the
    other swept parameters, the band spanning their lowest and highest value."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(folder)
    out_dir.mkdir(parents=True, exist_ok=True)
    table = table.copy()
    for key, _ in SWEEP_METRICS:  # None (no workflow, say) -> NaN; a figure with none is left out
        if key in table.columns:
            table[key] = pd.to_numeric(table[key], errors="coerce")
    metrics = [(k, label) for k, label in SWEEP_METRICS if k in table and table[k].notna().any()]
    others = {p: sorted(table[p].astype(str).unique()) for p in params}
    written: list[Path] = []
    for param in params:
        values = list(dict.fromkeys(table[param]))
        numeric = all(isinstance(v, int | float) for v in values)
        order = sorted(values) if numeric else values
        xs = order if numeric else list(range(len(order)))
        cols = min(4, len(metrics))
        rows = math.ceil(len(metrics) / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows + 0.8), squeeze=False)
        for ax, (key, label) in zip(axes.flat, metrics, strict=False):
            for k, (planner, grp) in enumerate(table.groupby("planner", sort=True)):
                stats = grp.groupby(param)[key].agg(["mean", "min", "max"]).reindex(order)
                # a style per planner: lines that coincide stay visible
                (line,) = ax.plot(
                    xs, stats["mean"], marker="os^D"[k % 4], ms=4 - k % 2, ls=STYLES[k % 4],
                    label=str(planner),
                )  # fmt: skip
                ax.fill_between(xs, stats["min"], stats["max"], color=line.get_color(), alpha=0.12)
            ax.set_title(label, fontsize=8)
            ax.tick_params(labelsize=7)
            if not numeric:
                ax.set_xticks(xs, [str(v) for v in order], fontsize=7)
        for ax in list(axes.flat)[len(metrics) :]:
            ax.set_visible(False)
        for ax in axes[-1]:
            ax.set_xlabel(param, fontsize=8)
        axes.flat[0].legend(fontsize=7, title="planner", title_fontsize=7)
        rest = ", ".join(f"{p} in {{{', '.join(v)}}}" for p, v in others.items() if p != param)
        seeds = table["seed"].nunique() if "seed" in table else 1
        fig.suptitle(
            f"Sweep of {param}: mean over {seeds} seed(s)"
            + (f" and {rest}" if rest else "")
            + "; band: lowest to highest",
            fontsize=9,
        )
        fig.tight_layout()
        path = out_dir / f"sweep-{param}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written
