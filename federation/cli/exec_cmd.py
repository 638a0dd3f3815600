"""CLI commands of execution (``run``, ``runs ...``) and the execution part of the demo."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from federation.cli.common import (
    DemoContext,
    InputsOption,
    MadppOption,
    ProjectOption,
    console,
    declared_workflow,
    err_console,
    human_bytes,
    last_workdir,
    remember_workdir,
)
from federation.cli.plan_cmd import warn_fallback

if TYPE_CHECKING:
    from orchestrator.execution.executor import Executor
    from orchestrator.execution.mainjob import ExecutionResult
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
    from orchestrator.execution import Launch
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
            launch=Launch.synthetic(ctx.federation, 1e-3, 1e-3),  # the report's time_scale
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
    report = write_report(ctx.output, ctx.workflow, plan, result, images, time_scale=1e-3)
    console.print(f"run report written to {report}")
    ctx.results["run"] = result
    ctx.results.setdefault("summary", {})["run"] = result.summary()


slurm_app = typer.Typer(
    help="A real Slurm cluster on this machine (Debian's slurm-wlm and munge), to try Slurm "
    "sites: `start` prints the SLURM_CONF to export."
)


@slurm_app.command("start")
def slurm_local_start(
    directory: Annotated[
        Path, typer.Option("--dir", help="Where its configuration, state and logs live.")
    ] = Path("continuum-slurm"),
    nodes: Annotated[int, typer.Option(help="Nodes (one slurmd each).", min=1)] = 1,
    cpus: Annotated[
        int | None, typer.Option(help="CPUs per node (default: this machine's).", min=1)
    ] = None,
    partition: Annotated[str, typer.Option(help="The partition of every node.")] = "debug",
) -> None:
    """Start munged, slurmctld and the slurmd of each node in the background (by PID)."""
    import os

    from orchestrator.connectors.slurmlocal import LocalSlurm, slurm_missing

    reason = slurm_missing()
    if reason is not None:
        err_console.print(f"[bold red]error:[/] {reason}", soft_wrap=True)
        raise typer.Exit(2)
    cluster = LocalSlurm(directory, nodes=nodes, cpus=cpus or os.cpu_count() or 1)
    cluster.partitions = {partition: cluster.node_names}
    try:
        cluster.start()
    except RuntimeError as exc:
        err_console.print(f"[bold red]error:[/] the cluster did not start: {exc}", soft_wrap=True)
        raise typer.Exit(1) from None
    console.print(f"Slurm is up: partition {partition}, {nodes} node(s); now run")
    console.print(f"export SLURM_CONF={cluster.conf}", soft_wrap=True)


@slurm_app.command("stop")
def slurm_local_stop(
    directory: Annotated[Path, typer.Option("--dir", help="The folder given to start.")] = Path(
        "continuum-slurm"
    ),
) -> None:
    """Stop the daemons started by `continuum slurm-local start` (by their PIDs)."""
    from orchestrator.connectors.slurmlocal import LocalSlurm

    try:
        cluster = LocalSlurm.attach(directory)
    except RuntimeError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", soft_wrap=True)
        raise typer.Exit(2) from None
    cluster.stop()
    console.print(f"Slurm under {directory} stopped")


def register(app: typer.Typer) -> None:
    """Add the execution commands to ``app``."""
    app.add_typer(runs_app, name="runs")
    app.add_typer(slurm_app, name="slurm-local")
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
    export_root: Annotated[
        list[Path] | None,
        typer.Option(
            "--export-root",
            help="A folder whose files may leave the site when a workflow's input lives there "
            "(repeat for several; none by default).",
        ),
    ] = None,
    server_wait: Annotated[
        float, typer.Option(help="Seconds to keep retrying an unreachable federation API.")
    ] = 3600.0,
    telemetry: Annotated[
        str | None,
        typer.Option(
            help="Run the site's twin here on this telemetry ('probe' or a telemetry file) "
            "and send only its abstracted state; no raw telemetry leaves the site."
        ),
    ] = None,
    state_every: Annotated[float, typer.Option(help="Seconds between state pushes.")] = 60.0,
    slurm: Annotated[
        bool,
        typer.Option(
            help="Hand each task to the site's Slurm as a batch job (SLURM_CONF, sbatch on the "
            "PATH; --workdir on a file system the nodes share)."
        ),
    ] = False,
    partition: Annotated[
        str | None, typer.Option(help="With --slurm: the partition (default: the cluster's).")
    ] = None,
    parallel: Annotated[
        int | None,
        typer.Option(help="Tasks in flight at once (default: 1; 32 with --slurm).", min=1),
    ] = None,
) -> None:
    """Run inside a site that accepts no inbound connection: pull tasks from the federation
    API, run them (here, or as Slurm batch jobs with --slurm), push results, outputs, logs and
    heartbeats (outbound HTTPS only)."""
    from orchestrator.connectors.agent import ProcessLauncher, SiteAgent, SlurmLauncher
    from orchestrator.connectors.slurm import SlurmConnector
    from twin.site_service import start_site_twin

    if partition is not None and not slurm:
        raise typer.BadParameter("a partition is Slurm's: add --slurm", param_hint="--partition")
    launcher = (
        SlurmLauncher(SlurmConnector(site, workdir, partition=partition))
        if slurm
        else ProcessLauncher()
    )
    stop_twin = start_site_twin(server, token, site, telemetry, state_every) if telemetry else None
    agent = SiteAgent(
        server,
        site,
        token,
        workdir,
        poll_s=poll,
        export_roots=export_root or (),
        server_wait_s=server_wait,
        heartbeat_telemetry=not telemetry,
        launcher=launcher,
        parallel=parallel,
    )
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
    plan_file: Annotated[
        Path | None,
        typer.Option(
            "--plan", help="Run this saved plan (`continuum plan --json`) instead of planning."
        ),
    ] = None,
    planner: Annotated[str | None, typer.Option(help="ilp, heft, greedy or market.")] = None,
    objective: Annotated[
        str | None, typer.Option(help="time | cost | energy | carbon | weighted")
    ] = None,
    deadline: Annotated[
        float | None, typer.Option(help="Latest makespan, in seconds.", min=0.0)
    ] = None,
    budget: Annotated[float | None, typer.Option(help="Largest total cost, EUR.", min=0.0)] = None,
    time_limit: Annotated[
        float | None,
        typer.Option(
            help="The optimiser's time limit, seconds (default: by the workflow's size, "
            "20 s up to 200 steps, then 0.1 s per step, at most 60 s).",
            min=0.1,
        ),
    ] = None,
    project: ProjectOption = None,
    madpp: MadppOption = None,
    inputs: InputsOption = None,
    synthetic: Annotated[
        bool,
        typer.Option(
            help="Run every step as the synthetic WfCommons step instead of its own command."
        ),
    ] = False,
    workdir: Annotated[Path, typer.Option(help="Where sites, buffers and state live.")] = Path(
        "continuum-run"
    ),
    time_scale: Annotated[
        float, typer.Option(help="Synthetic steps: scale of durations.", min=1e-9)
    ] = 1e-3,
    data_scale: Annotated[
        float, typer.Option(help="Synthetic steps: scale of output sizes.", min=1e-9)
    ] = 1e-3,
    slots: Annotated[int, typer.Option(help="Concurrent tasks per local site.", min=1)] = 2,
    timeout: Annotated[float, typer.Option(help="Give up after this many seconds.")] = 3600.0,
    fail_site: Annotated[
        str | None, typer.Option(help="Take this site down during the run (a drill).")
    ] = None,
    fail_after: Annotated[float, typer.Option(help="Fraction of steps done before it.")] = 0.5,
    report: Annotated[Path | None, typer.Option(help="Folder for report.md.")] = None,
) -> None:
    """Execute a workflow for real on local sites (a process pool and a buffer service per
    site of the federation), through the durable executor: each step runs its own command
    (``--synthetic``: the synthetic step). Plans with the same defaults as ``continuum plan``,
    or runs a saved plan as it is (``--plan``)."""
    from federation.documents import read_document
    from federation.model import load_demo_federation, load_federation
    from federation.settings import load_settings
    from orchestrator import HEFTPlanner
    from orchestrator.execution import Launch
    from orchestrator.execution.mainjob import Fault, execute_locally, write_report
    from orchestrator.planning import plan_workflow, saved_plan

    fed = load_federation(federation) if federation else load_demo_federation()
    if fail_site is not None and fail_site not in fed.site_ids:
        raise typer.BadParameter(
            f"unknown site {fail_site!r}; sites: {', '.join(fed.site_ids)}",
            param_hint="--fail-site",
        )
    elsewhere = [
        f"{s.id} ({s.connector.kind.value})"
        for s in fed.sites
        if s.connector.kind.value in ("agent", "simulated")
    ]
    if elsewhere:
        raise typer.BadParameter(
            f"site(s) {', '.join(elsewhere)} cannot run steps here: `continuum run` runs local, "
            "slurm and dask sites (agent sites run through `continuum serve` and their "
            "`continuum site-agent`, simulated ones in `continuum simulate`)",
            param_hint="--federation",
        )
    if fail_site is not None and fed.site(fail_site).connector.kind.value != "local":
        raise typer.BadParameter(
            f"site {fail_site} is a {fed.site(fail_site).connector.kind.value} site: the drill "
            "takes down local sites (take a Slurm site's nodes down with scontrol instead)",
            param_hint="--fail-site",
        )
    if not 0.0 <= fail_after <= 1.0:
        raise typer.BadParameter("a fraction between 0 and 1", param_hint="--fail-after")
    if plan_file is not None and any(
        v is not None for v in (planner, objective, deadline, budget, time_limit)
    ):
        raise typer.BadParameter(
            "a saved plan is run as it is: drop --planner/--objective/--deadline/--budget/"
            "--time-limit, or plan again",
            param_hint="--plan",
        )
    wf = declared_workflow(workflow, fed, project, madpp, inputs)
    launch = Launch.synthetic(fed, time_scale, data_scale) if synthetic else Launch.native()
    missing = launch.missing_commands(wf)
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise typer.BadParameter(
            f"step(s) {', '.join(missing[:3])}{more} have no command: give each step a "
            "command, or run them as synthetic steps with --synthetic",
            param_hint="WORKFLOW",
        )
    if plan_file is not None:
        plan = saved_plan(read_document(plan_file), wf, str(plan_file))
        unknown = sorted({a.site for a in plan.assignments.values()} - set(fed.site_ids))
        if unknown:
            raise typer.BadParameter(
                f"the plan uses site(s) {', '.join(unknown)} that the federation does not have",
                param_hint="--plan",
            )
        console.print(f"running the saved plan {plan_file} ({plan.metrics.planner})")
    else:
        plan = plan_workflow(
            wf,
            fed,
            planner=planner,
            objective=objective,
            time_limit_s=time_limit,
            deadline=deadline,
            budget=budget,
        )
        warn_fallback(plan, plan.metrics.planner)
        console.print(
            f"planned {len(wf)} steps with {plan.metrics.planner}: makespan "
            f"{plan.metrics.makespan_s:.1f} s, {plan.metrics.status}"
        )
    console.print(f"launch: {launch.describe()}; working directory {workdir}")
    remember_workdir(workdir)
    with _progress() as bar:
        task = bar.add_task("running", total=len(wf))
        result = execute_locally(
            wf,
            fed,
            plan,
            workdir,
            replanner_planner=HEFTPlanner(),
            launch=launch,
            fault=Fault(fail_after, fail_site) if fail_site else None,
            slots=slots,
            timeout=timeout,
            startup_timeout=load_settings().buffer_startup_timeout_s,
            project=project or "",
            progress=lambda d, t, _: bar.update(task, completed=d, total=t),
        )
    _print_result(result)
    if report is not None:
        scale = launch.time_scale if launch.kind.value == "synthetic" else 1.0
        console.print(f"report: {write_report(report, wf, plan, result, time_scale=scale)}")
    if result.state.value != "done":
        raise typer.Exit(1)


def _print_result(result: ExecutionResult) -> None:
    for line in result.events:
        console.print(f"  {line}", soft_wrap=True)
    console.print(f"run {result.run_id}: [bold]{result.state.value}[/] in {result.wall_s:.1f} s")


def _state_path(state: Path | None) -> Path:
    """``--state``, else the store of the last ``continuum run --workdir``."""
    if state is not None:
        return state
    last = last_workdir()
    if last is None:
        raise typer.BadParameter(
            "no run yet on this account: give --state WORKDIR/state.db", param_hint="--state"
        )
    return last / "state.db"


def _store(state: Path | None) -> RunStore:
    from federation.store import Store
    from orchestrator.execution.store import RunStore

    path = _state_path(state)
    if not path.exists():
        raise typer.BadParameter(f"no run store at {path}", param_hint="--state")
    return RunStore(Store.at(path))


def _executor(state: Path | None) -> Executor:
    """An executor over the run store and the sites of the run's working directory, each
    through the connector its federation declares (a Slurm site's steps are cancelled with
    scancel); a folder of tasks without a declaration is a local site."""
    import json

    from federation.model import Federation
    from orchestrator.connectors.base import SiteConnector
    from orchestrator.connectors.local import LocalConnector
    from orchestrator.execution.executor import Executor
    from orchestrator.execution.mainjob import FEDERATION_FILE, site_connector

    runs = _store(state)
    root = _state_path(state).parent
    declared = {}
    if (root / FEDERATION_FILE).is_file():
        text = (root / FEDERATION_FILE).read_text(encoding="utf-8")
        declared = {s.id: s for s in Federation.from_dict(json.loads(text)).sites}
    sites: dict[str, SiteConnector] = {}
    for d in sorted(root.iterdir()):
        if d.is_dir() and (d / "tasks").is_dir():
            site = declared.get(d.name)
            sites[d.name] = (
                site_connector(site, d)
                if site is not None and site.connector.kind.value in ("local", "slurm")
                else LocalConnector(d.name, d)
            )
    return Executor(runs, sites)


def _known(runs: RunStore, run: str) -> None:
    from orchestrator.execution.store import UnknownRun

    try:
        runs.run(run)
    except UnknownRun:
        raise typer.BadParameter(f"no run {run!r} in this store", param_hint="RUN") from None


StateOpt = Annotated[
    Path | None,
    typer.Option(
        "--state", help="The run store (default: state.db of the last `continuum run --workdir`)."
    ),
]


@runs_app.command("list")
def runs_list(state: StateOpt = None) -> None:
    """Runs in a store, with their state."""
    runs = _store(state)
    table = Table()
    for col in ("run", "workflow", "state", "launch", "steps done"):
        table.add_column(col)
    for rid in runs.runs():
        rec = runs.run(rid)
        steps = runs.steps(rid)
        done = sum(1 for r in steps.values() if r.state.value == "done")
        table.add_row(rid, rec.name, rec.state.value, rec.launch.kind.value, f"{done}/{len(steps)}")
    console.print(table)


@runs_app.command("status")
def runs_status(run: str, state: StateOpt = None) -> None:
    """Every step of a run: state, site, attempts, exit code."""
    runs = _store(state)
    _known(runs, run)
    rec = runs.run(run)
    table = Table(title=f"run {run} ({rec.name}, {rec.launch.describe()}): {rec.state.value}")
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
    step: Annotated[str | None, typer.Argument(help="One step (default: every step).")] = None,
    stream: Annotated[str, typer.Option(help="stdout or stderr")] = "stdout",
    follow: Annotated[bool, typer.Option(help="Keep printing while the step runs.")] = False,
    state: StateOpt = None,
) -> None:
    """What a step's latest attempt wrote on stdout (or stderr); every step's without STEP."""
    import sys

    from orchestrator.execution.logs import follow_log, read_log
    from orchestrator.execution.states import StepState

    if stream not in ("stdout", "stderr"):
        raise typer.BadParameter("stdout or stderr", param_hint="--stream")
    ex = _executor(state)
    runs = ex.runs
    _known(runs, run)
    steps = runs.steps(run)
    if step is not None and step not in steps:
        raise typer.BadParameter(f"run {run} has no step {step!r}", param_hint="STEP")

    def path_of(sid: str) -> Path | None:
        rec = runs.steps_named(run, [sid])[sid]
        conn = ex.connectors.get(rec.site)
        return conn.log_path(rec.handle, stream) if conn is not None and rec.handle else None

    if follow:
        if step is None:
            raise typer.BadParameter("--follow needs one STEP", param_hint="--follow")
        waiting = (StepState.PENDING, StepState.READY, StepState.STAGING, StepState.RUNNING)

        def running() -> bool:
            return runs.steps_named(run, [step])[step].state in waiting

        for chunk in follow_log(lambda: path_of(step), running):
            sys.stdout.buffer.write(chunk)
            sys.stdout.flush()
        return
    for sid in [step] if step is not None else list(steps):
        text = read_log(path_of(sid)).text
        if step is None:
            if not steps[sid].handle:
                continue
            console.rule(f"{sid} ({stream})")
        sys.stdout.write(text if text else f"(no {stream})\n")
        if text and not text.endswith("\n"):
            sys.stdout.write("\n")
        sys.stdout.flush()


def _control(run: str, state: Path | None, action: str) -> Executor:
    from orchestrator.execution import RunFinished

    ex = _executor(state)
    _known(ex.runs, run)
    try:
        ex.control(run, action)
    except RunFinished as exc:
        err_console.print(f"[bold red]error:[/] {exc}", soft_wrap=True)
        raise typer.Exit(2) from None
    return ex


@runs_app.command("pause")
def runs_pause(run: str, state: StateOpt = None) -> None:
    """No new step of the run starts; running steps finish."""
    _control(run, state, "pause")
    console.print(f"run {run} paused")


@runs_app.command("resume")
def runs_resume(
    run: str,
    state: StateOpt = None,
    slots: Annotated[int, typer.Option(help="Concurrent tasks per local site.", min=1)] = 2,
    timeout: Annotated[float, typer.Option(help="Give up after this many seconds.")] = 3600.0,
) -> None:
    """Drive a paused or interrupted run (its `continuum run` was stopped or killed) to its
    end: the sites come back, tasks that finished meanwhile are picked up, none runs twice."""
    from federation.settings import load_settings
    from orchestrator import HEFTPlanner
    from orchestrator.execution import RunState
    from orchestrator.execution.mainjob import resume_locally

    runs = _store(state)
    _known(runs, run)
    rec = runs.run(run)
    if rec.state not in (RunState.RUNNING, RunState.PAUSED):
        hint = "" if rec.state is RunState.DONE else " (`continuum runs restart` first)"
        err_console.print(
            f"[bold red]error:[/] run {run} is {rec.state.value}: nothing to resume{hint}",
            soft_wrap=True,
        )
        raise typer.Exit(2)
    workdir = _state_path(state).parent
    runs.store.close()
    remember_workdir(workdir)
    with _progress() as bar:
        task = bar.add_task("running", total=None)
        result = resume_locally(
            run,
            workdir,
            replanner_planner=HEFTPlanner(),
            slots=slots,
            timeout=timeout,
            startup_timeout=load_settings().buffer_startup_timeout_s,
            progress=lambda d, t, _: bar.update(task, completed=d, total=t),
        )
    _print_result(result)
    if result.state is RunState.PAUSED:
        console.print("the run is paused (a step waits on an operator): `continuum runs resume`")
    elif result.state is not RunState.DONE:
        raise typer.Exit(1)


@runs_app.command("kill")
def runs_kill(run: str, state: StateOpt = None) -> None:
    """Stop the run's running steps and cancel the rest."""
    _control(run, state, "kill")
    console.print(f"run {run} killed")


@runs_app.command("restart")
def runs_restart(run: str, state: StateOpt = None) -> None:
    """Put the run's steps in error (failed, cancelled, paused) back in the queue; then
    `continuum runs resume RUN` drives it."""
    _control(run, state, "restart")
    console.print(f"run {run}: steps in error are back in the queue; `continuum runs resume {run}`")
