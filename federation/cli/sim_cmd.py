"""CLI commands of the simulations package: ``simulate``.

``continuum simulate SCENARIO.yaml``                       every planner x seed, tables and plots
``continuum simulate SCENARIO.yaml --sweep workload.load=1,2``   a sweep, one tidy table
``continuum simulate SCENARIO.yaml --sweep ... --dask tcp://host:8786``   on a Dask cluster
``continuum simulate --validate TRACE.swf``                 replay a log on one site, compare waits
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from federation.cli.common import (
    Column,
    DemoContext,
    console,
    fitted_table,
    human_seconds,
    write_json,
)


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>5.1f}%"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if value != value:  # NaN
            return "-"
        return f"{value:,.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return "-" if value is None else str(value)


HEADERS: dict[str, tuple[str, int]] = {
    "planner": ("planner", 0),
    "scenario": ("scenario", 0),
    "seed": ("seed", 0),
    "jobs_done": ("jobs\ndone", 1),
    "mean_wait_s": ("mean wait\ns", 1),
    "median_wait_s": ("median\nwait s", 3),
    "p95_wait_s": ("p95 wait\ns", 2),
    "utilisation": ("utili-\nsation", 2),
    "energy_kwh": ("energy\nkWh", 1),
    "cost_eur": ("cost\nEUR", 1),
    "carbon_kg": ("carbon\nkgCO2e", 1),
    "workflows_done": ("work-\nflows", 2),
    "workflow_mean_makespan_s": ("workflow\nmakespan s", 2),
    "deadline_misses": ("deadline\nmisses", 1),
}
"""Header (its unit on a second line) and rank of the summary's columns in a table."""


def _table(title: str, rows: list[dict[str, Any]], columns: list[str], more: str = "") -> Table:
    """The rows with the given columns, kept whole within the terminal (``fitted_table``).

    Swept parameters (dotted names) and the run's identity are never left out."""
    cols = []
    for c in columns:
        header, rank = HEADERS.get(c, (c, 0 if "." in c else 2))
        cols.append(Column(header, c, _fmt, rank, left=c in ("planner", "scenario")))
    return fitted_table(title, cols, rows, more=more)


SUMMARY_COLUMNS = [
    "planner",
    "seed",
    "jobs_done",
    "mean_wait_s",
    "median_wait_s",
    "p95_wait_s",
    "utilisation",
    "energy_kwh",
    "cost_eur",
    "carbon_kg",
    "workflows_done",
    "workflow_mean_makespan_s",
    "deadline_misses",
]


def simulate(
    scenario: Annotated[
        Path | None, typer.Argument(help="Scenario YAML (see examples/scenarios/).")
    ] = None,
    sweep: Annotated[
        list[str] | None,
        typer.Option("--sweep", help="PARAM=v1,v2 (dotted path, e.g. workload.load=1,2); repeat."),
    ] = None,
    dask: Annotated[
        str | None,
        typer.Option("--dask", help="Run the sweep on the Dask scheduler at ADDRESS."),
    ] = None,
    workers: Annotated[
        int, typer.Option("--workers", help="Dask LocalCluster workers (with --dask local).")
    ] = 2,
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Folder for tables and plots.")
    ] = Path("sim-output"),
    seed: Annotated[
        list[int] | None, typer.Option("--seed", help="Override the scenario's seeds; repeat.")
    ] = None,
    validate: Annotated[
        Path | None,
        typer.Option("--validate", help="Replay this SWF log on one site and compare waits."),
    ] = None,
    cores: Annotated[
        int | None,
        typer.Option("--cores", help="Cores for --validate (default: the log's MaxProcs)."),
    ] = None,
    downtime: Annotated[
        bool,
        typer.Option(
            "--downtime/--no-downtime",
            help="With --validate: replay the log's whole-machine idle windows as outages.",
        ),
    ] = True,
    no_plots: Annotated[bool, typer.Option("--no-plots", help="Skip the PNG plots.")] = False,
) -> None:
    """Run a what-if scenario on the simulated federation (or a sweep, or a trace validation)."""
    from simulations import compare, load_scenario, run_scenario, save_results, validate_trace
    from simulations.sweep import parse_sweep
    from simulations.sweep import sweep as run_sweep

    if validate is not None:
        from simulations import InvalidTrace, read_swf

        try:
            trace = read_swf(validate)
        except InvalidTrace as exc:
            raise typer.BadParameter(str(exc), param_hint="--validate") from None
        rows = []
        for policy in ("easy", "fcfs"):
            with console.status(f"replaying {validate.name} with {policy}"):
                try:
                    report = validate_trace(trace, cores, policy, downtime=downtime)
                except ValueError as exc:
                    raise typer.BadParameter(str(exc), param_hint="--cores") from None
                rows.append(report.to_dict())
        console.print(rows[0]["credit"])
        first = rows[0]
        console.print(
            f"machine from the log: {first['partitions']} partition(s), {first['cores']} "
            f"processors, {first['queues']} queue(s); {first['downtime_h']:.0f} h of recorded "
            "downtime replayed as outages"
        )
        cols = [
            "policy",
            "jobs",
            "simulated_mean_wait_s",
            "recorded_mean_wait_s",
            "mean_wait_error",
            "mean_absolute_error_s",
            "simulated_median_wait_s",
            "recorded_median_wait_s",
            "pearson",
            "spearman",
            "utilisation",
        ]
        console.print(_table("Simulated vs recorded waits", rows, cols))
        if not first["has_recorded_waits"]:
            console.print(
                "the log records no waits (its submit times are start times): only the replay's "
                "own figures are shown"
            )
        write_json(rows, output / "validation.json")
        return
    if scenario is None:
        raise typer.BadParameter("give a SCENARIO.yaml (or --validate TRACE.swf)")
    sc = load_scenario(scenario)
    if seed:
        sc = sc.with_overrides({"seeds": list(seed)})
    if sweep or dask:
        grid = parse_sweep(sweep or [])
        backend = "dask" if dask else "local"
        address = None if dask in (None, "local") else dask
        with _progress() as bar:
            n = len(sc.planners) * len(sc.seeds)
            for values in grid.values():
                n *= len(values)
            task = bar.add_task(f"sweep of {sc.name} ({backend})", total=n)

            def done(i: int, total: int) -> None:
                bar.update(task, completed=i)

            table = run_sweep(sc, grid, backend, address, workers, done)
            bar.update(task, completed=n)
        output.mkdir(parents=True, exist_ok=True)
        table.to_csv(output / "sweep.csv", index=False)
        cols = [*grid, *[c for c in SUMMARY_COLUMNS if c in table.columns]]
        console.print(
            _table(
                f"Sweep of {sc.name}",
                table.to_dict("records"),
                cols,
                more=f"every column: {output / 'sweep.csv'}",
            )
        )
        console.print(f"sweep table: {output / 'sweep.csv'}")
        if not no_plots:
            from simulations.sweep import plot_sweep

            plots = plot_sweep(table, list(grid), output)
            console.print(f"sweep plots (one per swept parameter): {', '.join(map(str, plots))}")
        return
    with _progress() as bar:
        tasks: dict[str, TaskID] = {}

        def progress(label: str, fraction: float) -> None:
            if label not in tasks:
                tasks[label] = bar.add_task(f"{sc.name}: {label}", total=1.0)
            bar.update(tasks[label], completed=fraction)

        results = run_scenario(sc, progress)
    written = save_results(results, output, plots=not no_plots)
    rows = compare(results).to_dict("records")
    title = f"{sc.name}: {human_seconds(sc.horizon)} simulated"
    console.print(
        _table(title, rows, SUMMARY_COLUMNS, more=f"every column: {output / 'comparison.csv'}")
    )
    credit = next((r.credit for r in results if r.credit), "")
    if credit:
        console.print(f"workload: {credit}")
    console.print(f"{len(written)} files written under {output}")


def demo_section(ctx: DemoContext) -> None:
    """The simulation part of ``continuum demo``: a one-day what-if on the demo federation.

    The demo workflow is submitted every 6 hours on top of a synthetic batch
    load, placed by HEFT on the twin's view, first as is and then with the
    power price doubled at every site for the afternoon; tables and plots go
    to ``<output>/simulation``, the comparison to ``results["simulation"]``.
    """
    from simulations import compare, run_scenario, save_results, scenario_from_dict

    console.rule("[bold]simulation")
    out = ctx.output / "simulation"
    out.mkdir(parents=True, exist_ok=True)
    wf_path = out / "workflow.json"
    write_json(ctx.workflow.to_dict(), wf_path)
    base: dict[str, Any] = {
        "name": "demo-what-if",
        "federation": ctx.federation.to_dict(),
        "horizon": "1 d",
        "routing": "least-wait",
        "workload": {
            "synthetic": {"jobs": 1500, "arrival_rate_per_h": 60, "max_cores": 128},
            "workflows": [
                {"path": str(wf_path.resolve()), "submit_at": "1 h", "every": "6 h", "count": 4}
            ],
        },
        "series": {"default": {"price": {"daily": {"mean": 0.15, "amplitude": 0.05}}}},
        "planners": ["heft"],
        "seeds": [1],
    }
    spike = {
        **base,
        "name": "demo-price-spike",
        "events": [{"at": "12 h", "kind": "price_spike", "factor": 2, "duration": "6 h"}],
    }
    results = []
    for doc in (base, spike):
        sc = scenario_from_dict(doc, "demo")
        with console.status(f"simulating {sc.name}"):
            results += run_scenario(sc)
    rows = compare(results).to_dict("records")
    for row, doc in zip(rows, (base, spike), strict=True):
        row["scenario"] = doc["name"]
    save_results(results[:1], out / "baseline")
    save_results(results[1:], out / "price-spike")
    console.print(
        _table("What if the power price doubles for 6 h?", rows, ["scenario", *SUMMARY_COLUMNS[2:]])
    )
    ctx.results["simulation"] = rows
    console.print(f"simulation tables and plots: {out}")


def register(app: typer.Typer) -> None:
    """Add the simulation commands to ``app``."""
    app.command("simulate")(simulate)
