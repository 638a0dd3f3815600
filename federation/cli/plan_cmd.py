"""CLI commands and the demo section of the placement package: ``plan`` and ``cdt solve``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
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
    human_seconds,
    write_json,
)

if TYPE_CHECKING:
    from federation.model import Federation
    from orchestrator.placement.plan import Plan
    from orchestrator.workflow import Workflow
    from twin.state import SiteView

cdt_app = typer.Typer(
    name="cdt", help="The Exa-AToW CDT scheduling-problem format.", no_args_is_help=True
)


def metrics_table(plans: list[Plan], title: str = "plan metrics") -> Table:
    """One row per plan: makespan, cost, energy, carbon, bytes moved, status, gap, wall time."""
    table = Table(title=title)
    for col in ("planner", "makespan", "cost EUR", "energy kWh", "carbon kgCO2e", "moved"):
        table.add_column(col, justify="left" if col == "planner" else "right")
    for col in ("status", "gap", "wall"):
        table.add_column(col, justify="right")
    for p in plans:
        m = p.metrics
        table.add_row(
            m.planner,
            human_seconds(m.makespan_s),
            f"{m.cost_eur:.4g}",
            f"{m.energy_kwh:.4g}",
            f"{m.carbon_kg:.4g}",
            human_bytes(m.bytes_moved),
            m.status,
            "-" if m.gap is None else f"{m.gap:.2%}",
            f"{m.wall_s:.2f} s",
        )
    return table


def sites_table(plan: Plan) -> Table:
    """Steps and busy time per site."""
    table = Table(title="placement by site")
    for col in ("site", "steps", "busy step-seconds", "first start", "last end"):
        table.add_column(col, justify="left" if col == "site" else "right")
    by: dict[str, list[Any]] = {}
    for a in plan.assignments.values():
        by.setdefault(a.site, []).append(a)
    for site, asg in sorted(by.items()):
        table.add_row(
            site,
            str(len(asg)),
            f"{sum(a.end - a.start for a in asg):.1f}",
            human_seconds(min(a.start for a in asg)),
            human_seconds(max(a.end for a in asg)),
        )
    return table


def print_explanations(plan: Plan, limit: int) -> None:
    """The ``limit`` latest-finishing steps and why they went where they went."""
    if limit <= 0:
        return
    console.print("[bold]why[/] (latest-finishing steps):")
    for a in sorted(plan.assignments.values(), key=lambda a: -a.end)[:limit]:
        console.print(f"  {a.step} -> [bold]{a.site}[/] at {a.start:.1f} s: {a.why}")
    for note in plan.notes:
        console.print(f"  note: {note}")


def warn_fallback(plan: Plan, name: str) -> None:
    """Say on stderr when the optimiser fell back to a heuristic, and why (never silent), and
    which sites' carbon intensity or power price was unknown (assumed pessimistically)."""
    fb = plan.metrics.fallback
    if fb is not None:
        err_console.print(
            f"[bold yellow]warning:[/] {name} fell back to {fb}: {plan.metrics.status_reason}",
            soft_wrap=True,
        )
    for what, sites in (
        ("carbon intensity", plan.metrics.carbon_unknown),
        ("power price", plan.metrics.price_unknown),
    ):
        if sites:
            detail = next((n for n in plan.notes if n.startswith(what)), "")
            err_console.print(
                f"[bold yellow]warning:[/] {what} unknown for {', '.join(sites)}"
                + (f" ({detail})" if detail else ""),
                soft_wrap=True,
            )


def run_planner(
    name: str,
    workflow: Workflow,
    federation: Federation,
    view: SiteView,
    constraints: Any,
    objective: Any,
    solver: str = "highs",
    time_limit: float | None = None,
    show_progress: bool = True,
) -> Plan:
    """Run one planner with a progress display, then the independent checker."""
    from orchestrator.placement.checker import require_valid
    from orchestrator.placement.planners import ILPSettings, make_planner

    settings = ILPSettings(solver=solver, time_limit=time_limit)
    if not show_progress:
        planner = make_planner(name, settings)
        plan = planner.plan(workflow, federation, view, constraints, objective)
        warn_fallback(plan, name)
        return require_valid(plan, workflow, federation, view, constraints)
    t0 = time.perf_counter()
    with console.status(f"planning with {name}...") as status:

        def progress(msg: str) -> None:
            status.update(f"[{time.perf_counter() - t0:5.1f} s] {name}: {msg}")

        planner = make_planner(name, settings, progress)
        plan = planner.plan(workflow, federation, view, constraints, objective)
        status.update("checking the plan...")
        checked = require_valid(plan, workflow, federation, view, constraints)
    warn_fallback(checked, name)
    return checked


def plan(
    workflow: Annotated[Path, typer.Argument(help="Workflow file (WfFormat or native).")],
    federation: Annotated[
        Path | None,
        typer.Option("--federation", "-f", help="Federation YAML (default: the demo federation)."),
    ] = None,
    objective: Annotated[
        str | None,
        typer.Option(help="time | cost | energy | carbon | weighted (default: weighted)"),
    ] = None,
    deadline: Annotated[
        float | None, typer.Option(help="Latest makespan, in seconds.", min=0.0)
    ] = None,
    budget: Annotated[
        float | None, typer.Option(help="Largest total cost, in EUR.", min=0.0)
    ] = None,
    planner: Annotated[
        str | None, typer.Option(help="ilp | cpsat | heft | greedy | market (default: ilp)")
    ] = None,
    project: ProjectOption = None,
    madpp: MadppOption = None,
    inputs: InputsOption = None,
    gantt: Annotated[Path | None, typer.Option(help="Write a Gantt chart PNG here.")] = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Write the plan as JSON here ('-': stdout).")
    ] = None,
    solver: Annotated[str, typer.Option(help="ILP solver: highs | cbc")] = "highs",
    time_limit: Annotated[
        float | None,
        typer.Option(
            help="The optimiser's time limit, seconds (default: by the workflow's size, "
            "20 s up to 200 steps, then 0.1 s per step, at most 60 s).",
            min=0.1,
        ),
    ] = None,
    why: Annotated[int, typer.Option(help="How many placements to explain.", min=0)] = 8,
) -> None:
    """Place a workflow's steps on the federation's sites and print the metrics.

    The defaults are those of ``continuum run`` and the API (``PLANNING_DEFAULTS``); what
    ``--project``, ``--madpp`` and ``--input`` declare is folded into the workflow before
    planning. ``continuum run --plan FILE`` runs the plan written by ``--json FILE``."""
    from federation.model import load_demo_federation, load_federation
    from orchestrator.placement.plan import Objective, PlanningConstraints
    from orchestrator.placement.planners import PLANNERS
    from orchestrator.planning import PLANNING_DEFAULTS
    from twin.state import static_view

    d = PLANNING_DEFAULTS
    planner = planner or d.planner
    objective = objective or d.objective
    if planner not in PLANNERS:
        raise typer.BadParameter(f"use one of {', '.join(PLANNERS)}", param_hint="--planner")
    try:
        obj = Objective.parse(objective)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--objective") from None
    if solver not in ("highs", "cbc"):
        raise typer.BadParameter("use highs or cbc", param_hint="--solver")
    fed = load_federation(federation) if federation else load_demo_federation()
    wf = declared_workflow(workflow, fed, project, madpp, inputs)
    view = static_view(fed)
    constraints = PlanningConstraints(deadline=deadline, budget=budget)
    to_stdout = json_out is not None and str(json_out) == "-"
    result = run_planner(
        planner,
        wf,
        fed,
        view,
        constraints,
        obj,
        solver,
        time_limit or d.time_limit_s,
        not to_stdout,
    )
    if json_out is not None:
        write_json(result.to_dict(), json_out)
    if to_stdout:
        return
    console.print(
        f"workflow [bold]{wf.name}[/] ({len(wf)} steps) on [bold]{fed.name}[/]; "
        f"objective {obj.kind.value}; checker: ok"
    )
    console.print(metrics_table([result]))
    console.print(sites_table(result))
    print_explanations(result, why)
    if gantt is not None:
        from orchestrator.placement.gantt import plan_gantt

        console.print(f"Gantt chart written to {plan_gantt(result, gantt, workflow=wf)}")
    if json_out is not None:
        console.print(f"plan written to {json_out}")


@cdt_app.command("solve")
def cdt_solve(
    file: Annotated[Path, typer.Argument(help="CDT problem JSON.")],
    objective: Annotated[str, typer.Option(help="makespan | cost | weighted")] = "makespan",
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Write the schedule as JSON here ('-': stdout).")
    ] = None,
    csv_out: Annotated[
        Path | None, typer.Option("--csv", help="Write the schedule as CSV.")
    ] = None,
    gantt: Annotated[Path | None, typer.Option(help="Write a Gantt chart PNG here.")] = None,
    solver: Annotated[str, typer.Option(help="highs | cbc")] = "highs",
    time_limit: Annotated[float, typer.Option(help="Seconds.", min=0.1)] = 60.0,
) -> None:
    """Solve a CDT (MRCPSP) problem file and print the schedule."""
    from orchestrator.errors import PlanInvalid
    from orchestrator.placement.cdt import (
        OBJECTIVES,
        check_cdt,
        load_cdt,
        solve_cdt,
        write_cdt_outputs,
    )

    if objective not in OBJECTIVES:
        raise typer.BadParameter(f"use one of {', '.join(OBJECTIVES)}", param_hint="--objective")
    problem = load_cdt(file)
    with console.status(f"solving {file.name} ({objective}) with {solver}..."):
        sched = solve_cdt(problem, objective, solver, time_limit)
    violations = check_cdt(problem, sched)
    if violations:
        raise PlanInvalid("cdt", violations)
    if json_out is not None and str(json_out) == "-":
        write_json(sched.to_dict(), None)
        return
    write_cdt_outputs(sched, json_out, csv_out)
    table = Table(
        title=f"{problem.problem_name or file.name}: {objective} = {sched.objective_value:g}"
    )
    for col in ("job", "mode", "start", "finish"):
        table.add_column(col, justify="left" if col in ("job", "mode") else "right")
    for s in sched.schedule:
        table.add_row(s.job_id, s.mode_id, str(s.start), str(s.finish))
    console.print(table)
    gap = "-" if sched.gap is None else f"{sched.gap:.2%}"
    console.print(
        f"makespan {sched.makespan}, total cost {sched.total_cost:g}, status {sched.status}, "
        f"gap {gap}; checker: ok"
    )
    for path in (json_out, csv_out):
        if path is not None:
            console.print(f"written {path}")
    if gantt is not None:
        from orchestrator.placement.gantt import cdt_gantt

        console.print(f"Gantt chart written to {cdt_gantt(sched, gantt)}")


def register(app: typer.Typer) -> None:
    """Add this package's commands to ``app``."""
    app.command("plan")(plan)
    app.add_typer(cdt_app)


def demo_section(ctx: DemoContext) -> None:
    """The placement part of ``continuum demo``: four planners on the demo workflow.

    Uses the twin's view (``ctx.results["view"]``) when the twin section left one,
    else the federation's static figures; the ILP's plan goes to
    ``ctx.results["plan"]`` and its metrics to ``ctx.results["summary"]["plan"]``.
    """
    from orchestrator.placement.checker import require_valid
    from orchestrator.placement.gantt import plan_gantt
    from orchestrator.placement.plan import Objective, PlanningConstraints
    from orchestrator.placement.planners import make_planner
    from twin.state import static_view

    console.rule("[bold]placement")
    view = ctx.results.get("view") or static_view(ctx.federation)
    source = "the twin's view" if "view" in ctx.results else "static site figures"
    objective = Objective.parse("weighted")
    constraints = PlanningConstraints()
    heft = require_valid(
        make_planner("heft").plan(ctx.workflow, ctx.federation, view, constraints, objective),
        ctx.workflow,
        ctx.federation,
        view,
        constraints,
    )
    # the carbon-aware run: deadline 1.5x HEFT's makespan (the epsilon-constraint mode)
    deadline = PlanningConstraints(deadline=1.5 * heft.metrics.makespan_s)
    plans = [heft]
    for name in ("greedy", "market"):
        plans.append(run_planner(name, ctx.workflow, ctx.federation, view, constraints, objective))
    ilp = run_planner(
        "ilp", ctx.workflow, ctx.federation, view, constraints, objective, time_limit=8.0
    )
    plans.append(ilp)
    green = run_planner(
        "ilp",
        ctx.workflow,
        ctx.federation,
        view,
        deadline,
        Objective.parse("carbon"),
        time_limit=8.0,
    )
    plans.append(green.with_metrics(planner="ilp carbon, deadline 1.5x HEFT"))
    console.print(
        f"planning {ctx.workflow.name} ({len(ctx.workflow)} steps) on {source}; "
        "every plan passed the independent checker"
    )
    console.print(metrics_table(plans, "planners compared (objective: weighted)"))
    cut = 1 - green.metrics.carbon_kg / heft.metrics.carbon_kg if heft.metrics.carbon_kg else 0.0
    console.print(
        f"carbon-aware ILP cuts carbon by {cut:.0%} against HEFT within 1.5x its makespan"
    )
    print_explanations(ilp, 4)
    png = plan_gantt(ilp, ctx.output / "plan-gantt.png", workflow=ctx.workflow)
    write_json(ilp.to_dict(), ctx.output / "plan.json")
    console.print(f"Gantt chart written to {png}; plan to {ctx.output / 'plan.json'}")
    ctx.results["plan"] = ilp
    ctx.results.setdefault("summary", {})["plan"] = {
        **ilp.metrics.to_dict(),
        "compared": {p.metrics.planner: p.metrics.to_dict() for p in plans},
        "carbon_cut_vs_heft_at_1_5x_deadline": cut,
    }
