"""Core commands: ``validate``, ``info`` and ``demo``."""

from __future__ import annotations

import os
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from federation.cli.common import (
    EXIT_INVALID,
    DemoContext,
    console,
    err_console,
    human_bytes,
    human_seconds,
    write_json,
)

if TYPE_CHECKING:  # the commands import what they use when they run: `--help` stays fast
    from rich.table import Table

    from federation.model import Federation
    from orchestrator.workflow import Workflow


class Kind(StrEnum):
    AUTO = "auto"
    FEDERATION = "federation"
    WORKFLOW = "workflow"
    MADPP = "madpp"


def detect_kind(data: Any) -> Kind | None:
    """What a parsed document is, from its content (each check imported only when reached)."""
    if isinstance(data, Mapping) and "sites" in data and "dmp" not in data:
        return Kind.FEDERATION
    from datalogistics.madpp import is_madmp

    if is_madmp(data):
        return Kind.MADPP
    from orchestrator.loaders import is_native_workflow
    from orchestrator.wfformat import is_wfformat

    if is_wfformat(data) or is_native_workflow(data):
        return Kind.WORKFLOW
    return None


def examples_dir() -> Path:
    """The repository's ``examples/`` folder (``CONTINUUM_EXAMPLES`` overrides it)."""
    env = os.environ.get("CONTINUUM_EXAMPLES")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "examples"


DEMO_WORKFLOW = "workflows/montage-chameleon-2mass-005d-001.json"


def validate(
    file: Annotated[Path, typer.Argument(help="A federation, workflow or data project plan.")],
    kind: Annotated[Kind, typer.Option(help="What the file is; detected by content.")] = Kind.AUTO,
) -> None:
    """Validate a federation, a workflow (native or WfFormat) or a data project plan (maDMP).

    Prints every problem with its field path and exits 2 when the file is invalid.
    """
    from federation.documents import read_document
    from federation.errors import InvalidInput

    data = read_document(file)
    what = detect_kind(data) if kind is Kind.AUTO else kind
    try:
        if what is Kind.FEDERATION:
            from federation.model import Federation

            fed = Federation.from_dict(data, str(file))
            console.print(
                f"OK: federation {fed.name!r}: {len(fed.sites)} sites, {len(fed.links)} links, "
                f"{fed.total_cores()} cores"
            )
        elif what is Kind.WORKFLOW:
            from orchestrator.loaders import workflow_from_data

            wf = workflow_from_data(data, str(file))
            console.print(
                f"OK: workflow {wf.name!r}: {len(wf)} steps, {len(wf.edges)} edges, "
                f"{len(wf.data)} data items"
            )
        elif what is Kind.MADPP:
            from datalogistics.madpp import validate_madmp

            validate_madmp(data, str(file))
            n = len(data["dmp"].get("dataset", []))
            console.print(f"OK: data project plan (maDMP 1.2) with {n} dataset(s)")
        else:
            raise InvalidInput.single(
                str(file),
                "",
                "cannot tell what this is: expected a federation ('sites'), a workflow ('steps', "
                "or WfFormat 'schemaVersion' + 'workflow') or a data project plan ('dmp')",
            )
    except InvalidInput as exc:
        err_console.print(f"[bold red]invalid:[/] {exc.source}", markup=True)
        for p in exc.problems:
            err_console.print(f"  {p.location or '(document)'}: {p.message}", soft_wrap=True)
        raise typer.Exit(EXIT_INVALID) from None


def info(
    workflow: Annotated[Path, typer.Argument(help="A workflow file (native or WfFormat).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Summarise a workflow: tasks, edges, levels, critical path, work and bytes on edges."""
    from orchestrator.loaders import load_workflow

    wf = load_workflow(workflow)
    summary = wf.summary()
    if as_json:
        write_json(summary, None)
        return
    console.print(workflow_table(wf, summary))


def workflow_table(wf: Workflow, summary: dict[str, Any] | None = None) -> Table:
    from rich.table import Table

    s = summary or wf.summary()
    table = Table(title=f"workflow {wf.name}", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value", justify="right")
    table.add_row("tasks", str(s["tasks"]))
    table.add_row("edges (dependencies)", str(s["edges"]))
    table.add_row("files", str(s["files"]))
    table.add_row("levels", str(s["levels"]))
    table.add_row("critical path (reference cores)", human_seconds(s["critical_path_s"]))
    table.add_row("total work (core-seconds, 1 GHz ref.)", f"{s['total_work_s']:.0f}")
    table.add_row("bytes on edges", human_bytes(s["bytes_on_edges"]))
    table.add_row("external input bytes", human_bytes(s["input_bytes"]))
    categories: dict[str, int] = {}
    for step in wf.steps:
        categories[step.category or "-"] = categories.get(step.category or "-", 0) + 1
    top = sorted(categories.items(), key=lambda kv: -kv[1])[:6]
    table.add_row("categories", ", ".join(f"{k} x{v}" for k, v in top))
    return table


def federation_table(fed: Federation) -> Table:
    """The sites, one row each; the least needed columns leave a narrow terminal first."""
    from federation.cli.common import Column, fitted_table

    rows = [
        {
            "site": st.id,
            "kind": st.kind.value,
            "jurisdiction": st.jurisdiction,
            "cores": st.cores,
            "gpus": st.gpus,
            "memory": human_bytes(st.memory),
            "speed": f"{st.speed:g}",
            "price": f"{st.price_per_core_hour:.3f}",
            "power": f"{st.power_busy_w:g}",
            "pue": f"{st.pue:g}",
            "carbon": "unknown"
            if st.carbon_intensity_g_per_kwh is None
            else f"{st.carbon_intensity_g_per_kwh:g}",
            "buffer": human_bytes(st.buffer_capacity),
        }
        for st in fed.sites
    ]
    columns = [
        Column("site", "site", rank=0, left=True),
        Column("kind", "kind", left=True),
        Column("juris.", "jurisdiction", left=True),
        Column("cores", "cores", rank=0),
        Column("gpus", "gpus", rank=2),
        Column("memory", "memory", rank=2),
        Column("speed", "speed", rank=2),
        Column("price\nEUR/core-h", "price"),
        Column("busy\nW/core", "power", rank=3),
        Column("PUE", "pue", rank=3),
        Column("carbon\ngCO2e/kWh", "carbon"),
        Column("buffer", "buffer", rank=3),
    ]
    return fitted_table(f"federation {fed.name}", columns, rows)


def links_table(fed: Federation) -> Table:
    from rich.table import Table

    table = Table(title="links")
    for col in ("from", "to", "bandwidth", "latency", "EUR/GB"):
        table.add_column(col)
    for lk in fed.links:
        table.add_row(
            lk.src,
            lk.dst,
            f"{human_bytes(lk.bandwidth)}/s",
            f"{lk.latency * 1000:.0f} ms",
            f"{lk.cost_per_gb:.3f}",
        )
    return table


def demo(
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Folder for the demo's outputs.")
    ] = Path("demo-output"),
    workflow: Annotated[
        Path | None, typer.Option(help="Workflow to use instead of the embedded example.")
    ] = None,
) -> None:
    """The main job on the embedded defaults: demo federation and a WfCommons workflow."""
    from federation.model import load_demo_federation

    fed = load_demo_federation()
    wf_path = workflow or examples_dir() / DEMO_WORKFLOW
    from orchestrator.loaders import load_workflow

    wf = load_workflow(wf_path)
    console.rule("[bold]continuum demo")
    console.print(
        f"federation: [bold]{fed.name}[/] ({len(fed.sites)} sites, {fed.total_cores()} cores)"
    )
    console.print(federation_table(fed))
    console.print(links_table(fed))
    console.print(f"workflow: [bold]{wf.name}[/] from {wf_path}")
    summary = wf.summary()
    console.print(workflow_table(wf, summary))
    output.mkdir(parents=True, exist_ok=True)
    ctx = DemoContext(federation=fed, workflow=wf, output=output)
    from federation.cli import data_cmd, exec_cmd, plan_cmd, sim_cmd, twin_cmd

    sections = (
        twin_cmd.demo_section,
        plan_cmd.demo_section,
        data_cmd.demo_section,
        exec_cmd.demo_section,
        sim_cmd.demo_section,
    )
    for section in sections:
        section(ctx)
    write_json(
        {"federation": fed.to_dict(), "workflow": summary, **ctx.results.get("summary", {})},
        output / "summary.json",
    )
    console.print(f"summary written to {output / 'summary.json'}")


def register(app: typer.Typer) -> None:
    app.command()(validate)
    app.command()(info)
    app.command()(demo)
