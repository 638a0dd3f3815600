"""CLI commands of execution (``run``, ``runs ...``) and the execution part of the demo."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from federation.cli.common import DemoContext, console, human_bytes

if TYPE_CHECKING:
    from orchestrator.execution.executor import Executor
    from orchestrator.execution.store import RunStore

runs_app = typer.Typer(help="Follow and control durable runs (state in a store file).")


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


def demo_section(ctx: DemoContext) -> None:
    """Execute the plan for real on local sites, take one site down half-way, re-plan."""
    from orchestrator import HEFTPlanner
    from orchestrator.execution.mainjob import Fault, execute_locally, write_report

    plan = ctx.results.get("plan")
    if plan is None:
        console.print("no plan to execute")
        return
    console.rule("[bold]execution")
    twin = ctx.results.get("twin")
    epoch = ctx.results.get("summary", {}).get("twin", {}).get("issued_at")
    console.print(
        "every site runs as a local process pool with its own buffer service on loopback; "
        f"{len(ctx.workflow)} steps run the synthetic WfCommons step (runtimes and sizes "
        "x 1/1000); one site goes down half-way"
    )
    with _progress() as bar:
        task = bar.add_task("running", total=len(ctx.workflow))

        def show(done: int, total: int, _: str) -> None:
            bar.update(task, completed=done, total=total)

        result = execute_locally(
            ctx.workflow,
            ctx.federation,
            plan,
            ctx.output / "run",
            replanner_planner=HEFTPlanner(),
            twin=twin,
            twin_epoch=epoch,
            fault=Fault(after=0.5),
            progress=show,
        )
    if result.failed_site is not None:
        moved = ", ".join(result.replanned_steps[:8])
        more = len(result.replanned_steps) - 8
        console.print(
            f"[bold red]fault:[/] site [bold]{result.failed_site}[/] went down half-way; "
            f"the twin flagged it down and {len(result.replanned_steps)} unfinished step(s) "
            f"were re-planned on healthy sites ({moved}{f' and {more} more' if more > 0 else ''})"
        )
    for line in result.events:
        if "replan" in line or "fault" in line:
            console.print(f"  {line}", soft_wrap=True)
    where = Table(title=f"run {result.run_id}: {result.state.value} in {result.wall_s:.1f} s")
    for col in ("site", "steps run there", "attempts"):
        where.add_column(col, justify="left" if col == "site" else "right")
    per_site: dict[str, list[int]] = {}
    for t in result.timeline:
        per_site.setdefault(t.site, [0, 0])
        per_site[t.site][0] += 1
        per_site[t.site][1] += t.attempts
    for site, (n, attempts) in sorted(per_site.items()):
        where.add_row(site, str(n), str(attempts))
    console.print(where)
    latency = result.fault_to_replan_s
    console.print(
        f"{result.transfers} transfer(s) through buffers, {human_bytes(result.bytes_moved)} moved, "
        "sha256-verified"
        + (
            f"; fault to new plan dispatched: {latency * 1000:.0f} ms"
            if latency is not None
            else ""
        )
    )
    images = {"Twin forecasts": "twin-forecast.png", "Plan (Gantt)": "plan-gantt.png"}
    images = {k: v for k, v in images.items() if (ctx.output / v).exists()}
    report = write_report(ctx.output, ctx.workflow, plan, result, images)
    console.print(f"run report written to {report}")
    ctx.results["run"] = result
    ctx.results.setdefault("summary", {})["run"] = result.summary()


def register(app: typer.Typer) -> None:
    """Add the execution commands to ``app``."""
    app.add_typer(runs_app, name="runs")
    app.command(name="run")(run_workflow)
    app.command(name="site-agent")(site_agent)


def site_agent(
    site: Annotated[str, typer.Option(help="The site this agent serves.")],
    server: Annotated[str, typer.Option(help="The federation API, e.g. https://fed.example.org")],
    token: Annotated[
        str,
        typer.Option(envvar="CONTINUUM_AGENT_TOKEN", help="Bearer token (site-operator role)."),
    ],
    workdir: Annotated[Path, typer.Option(help="Where tasks run.")] = Path("continuum-agent"),
    max_tasks: Annotated[int | None, typer.Option(help="Stop after this many tasks.")] = None,
    idle_exit: Annotated[
        float | None, typer.Option(help="Stop after this many seconds without work.")
    ] = None,
    poll: Annotated[float, typer.Option(help="Seconds between polls when idle.")] = 1.0,
    telemetry: Annotated[
        str | None,
        typer.Option(
            help="Run the site's twin here on this telemetry ('probe' or a telemetry file) "
            "and send only its abstracted state; no raw telemetry leaves the site."
        ),
    ] = None,
    state_every: Annotated[float, typer.Option(help="Seconds between state pushes.")] = 60.0,
) -> None:
    """Run inside a site that accepts no inbound connection: pull tasks from the federation
    API, run them, push results, outputs and heartbeats (outbound HTTPS only)."""
    from orchestrator.connectors.agent import SiteAgent
    from twin.site_service import start_site_twin

    stop_twin = start_site_twin(server, token, site, telemetry, state_every) if telemetry else None
    agent = SiteAgent(server, site, token, workdir, poll_s=poll, heartbeat_telemetry=not telemetry)
    try:
        done = agent.run(max_tasks=max_tasks, idle_exit_s=idle_exit)
    finally:
        agent.close()
        if stop_twin is not None:
            stop_twin()
    console.print(f"site agent {agent.agent_id} of {site}: {done} task(s) done")


def run_workflow(
    workflow: Annotated[Path, typer.Argument(help="Workflow file (native or WfFormat).")],
    federation: Annotated[
        Path | None, typer.Option("--federation", "-f", help="Federation YAML (default: demo).")
    ] = None,
    planner: Annotated[str, typer.Option(help="ilp, heft, greedy or market.")] = "heft",
    workdir: Annotated[Path, typer.Option(help="Where sites, buffers and state live.")] = Path(
        "continuum-run"
    ),
    time_scale: Annotated[float, typer.Option(help="Scale of synthetic step durations.")] = 1e-3,
    data_scale: Annotated[float, typer.Option(help="Scale of synthetic output sizes.")] = 1e-3,
    fail_site: Annotated[
        str | None, typer.Option(help="Take this site down during the run (a drill).")
    ] = None,
    fail_after: Annotated[float, typer.Option(help="Fraction of steps done before it.")] = 0.5,
    report: Annotated[Path | None, typer.Option(help="Folder for report.md.")] = None,
) -> None:
    """Plan a workflow and execute it for real on local sites (one process pool and buffer
    service per site of the federation), through the durable executor."""
    from federation.model import load_demo_federation, load_federation
    from orchestrator import Objective, PlanningConstraints, load_workflow, make_planner
    from orchestrator.execution.mainjob import Fault, execute_locally, write_report
    from twin import static_view

    fed = load_federation(federation) if federation else load_demo_federation()
    wf = load_workflow(workflow)
    if fail_site is not None and fail_site not in fed.site_ids:
        raise typer.BadParameter(f"unknown site {fail_site!r}; sites: {', '.join(fed.site_ids)}")
    if not 0.0 <= fail_after <= 1.0:
        raise typer.BadParameter("--fail-after is a fraction between 0 and 1")
    view = static_view(fed)
    plan = make_planner(planner).plan(wf, fed, view, PlanningConstraints(), Objective())
    console.print(
        f"planned {len(wf)} steps with {plan.metrics.planner}: makespan "
        f"{plan.metrics.makespan_s:.1f} s, {plan.metrics.status}"
    )
    from orchestrator import HEFTPlanner

    with _progress() as bar:
        task = bar.add_task("running", total=len(wf))
        result = execute_locally(
            wf,
            fed,
            plan,
            workdir,
            replanner_planner=HEFTPlanner(),
            fault=Fault(fail_after, fail_site) if fail_site else None,
            time_scale=time_scale,
            data_scale=data_scale,
            progress=lambda d, t, _: bar.update(task, completed=d, total=t),
        )
    for line in result.events:
        console.print(f"  {line}", soft_wrap=True)
    console.print(f"run {result.run_id}: [bold]{result.state.value}[/] in {result.wall_s:.1f} s")
    if report is not None:
        console.print(f"report: {write_report(report, wf, plan, result)}")
    if result.state.value != "done":
        raise typer.Exit(1)


def _store(state: Path) -> RunStore:
    from federation.store import Store
    from orchestrator.execution.store import RunStore

    if not state.exists():
        raise typer.BadParameter(f"no run store at {state}")
    return RunStore(Store.at(state))


def _executor(state: Path) -> Executor:
    """An executor over the run store and the local sites of the run's working directory."""
    from orchestrator.connectors.local import LocalConnector
    from orchestrator.execution.executor import Executor

    runs = _store(state)
    root = state.parent
    sites = {
        d.name: LocalConnector(d.name, d)
        for d in sorted(root.iterdir())
        if d.is_dir() and (d / "tasks").is_dir()
    }
    return Executor(runs, sites)


StateOpt = Annotated[
    Path, typer.Option("--state", help="The run store (state.db in the run's workdir).")
]


@runs_app.command("list")
def runs_list(state: StateOpt = Path("continuum-run/state.db")) -> None:
    """Runs in a store, with their state."""
    runs = _store(state)
    table = Table()
    for col in ("run", "workflow", "state", "steps done"):
        table.add_column(col)
    for rid in runs.runs():
        rec = runs.run(rid)
        steps = runs.steps(rid)
        done = sum(1 for r in steps.values() if r.state.value == "done")
        table.add_row(rid, rec.name, rec.state.value, f"{done}/{len(steps)}")
    console.print(table)


@runs_app.command("status")
def runs_status(run: str, state: StateOpt = Path("continuum-run/state.db")) -> None:
    """Every step of a run: state, site, attempts, exit code."""
    runs = _store(state)
    rec = runs.run(run)
    table = Table(title=f"run {run} ({rec.name}): {rec.state.value}")
    for col in ("step", "state", "site", "attempts", "exit", "message"):
        table.add_column(col)
    for sid, r in runs.steps(run).items():
        table.add_row(
            sid,
            r.state.value,
            r.site,
            str(r.attempts),
            "" if r.exit_code is None else str(r.exit_code),
            r.message,
        )
    console.print(table)


@runs_app.command("logs")
def runs_logs(
    run: str,
    step: str,
    stream: Annotated[str, typer.Option(help="stdout or stderr")] = "stdout",
    state: StateOpt = Path("continuum-run/state.db"),
) -> None:
    """The stdout (or stderr) of a step's latest attempt."""
    if stream not in ("stdout", "stderr"):
        raise typer.BadParameter("--stream is stdout or stderr")
    runs = _store(state)
    steps = runs.steps(run)
    if step not in steps:
        raise typer.BadParameter(f"run {run} has no step {step!r}")
    handle = steps[step].handle
    if not handle:
        raise typer.BadParameter(f"step {step} has not started")
    path = Path(handle) / stream
    console.print(path.read_text(errors="replace") if path.exists() else f"(no {stream} yet)")


@runs_app.command("pause")
def runs_pause(run: str, state: StateOpt = Path("continuum-run/state.db")) -> None:
    """No new step of the run starts; running steps finish."""
    _executor(state).pause(run)
    console.print(f"run {run} paused")


@runs_app.command("resume")
def runs_resume(run: str, state: StateOpt = Path("continuum-run/state.db")) -> None:
    """Paused steps of the run go back to the queue."""
    _executor(state).resume(run)
    console.print(f"run {run} resumed")


@runs_app.command("kill")
def runs_kill(run: str, state: StateOpt = Path("continuum-run/state.db")) -> None:
    """Stop the run's running steps and cancel the rest."""
    _executor(state).kill(run)
    console.print(f"run {run} killed")


@runs_app.command("restart")
def runs_restart(run: str, state: StateOpt = Path("continuum-run/state.db")) -> None:
    """Put the run's steps in error (failed, cancelled, paused) back in the queue."""
    steps = _executor(state).restart_failed(run)
    console.print(f"run {run}: restarted {len(steps)} step(s): {', '.join(steps)}")
