"""CLI commands and the demo section of the data logistics package.

``continuum madpp validate FILE`` / ``continuum madpp constraints FILE``,
``continuum buffer serve`` / ``continuum buffer token``, and
``continuum transfer SRC_URL DST_URL``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from datalogistics.buffers.tokens import Right
from federation.cli.common import (
    EXIT_INVALID,
    DemoContext,
    console,
    err_console,
    human_bytes,
    human_seconds,
    write_json,
)

if TYPE_CHECKING:
    from datalogistics.madpp import DataProjectPlan

SECRET_ENV = "CONTINUUM_BUFFER_SECRET"
DEMO_TRANSFER_ROWS = 10

madpp_app = typer.Typer(
    help="Machine-actionable data project plans (RDA maDMP 1.2).", no_args_is_help=True
)
buffer_app = typer.Typer(help="Ephemeral buffer services (one per site).", no_args_is_help=True)


def _load_plan(file: Path) -> DataProjectPlan:
    """The plan in ``file``; on errors print every JSON path and exit 2."""
    from datalogistics.madpp import DataProjectPlan, InvalidPlan

    try:
        return DataProjectPlan.load(file)
    except InvalidPlan as exc:
        err_console.print(f"[bold red]error:[/] {file}: {len(exc.problems)} problem(s)")
        for p in exc.problems:
            err_console.print(f"  {p.location or '(document)'}: {p.message}", soft_wrap=True)
        raise typer.Exit(EXIT_INVALID) from None


@madpp_app.command("validate")
def madpp_validate(
    file: Annotated[Path, typer.Argument(help="An maDMP 1.2 JSON (or YAML) file.")],
) -> None:
    """Check a plan against the maDMP 1.2 schema and the orchestration extension.

    Prints one OK line, or every problem with its JSON path (exit status 2).
    """
    plan = _load_plan(file)
    ext = sum(1 for d in plan.datasets if d.continuum is not None)
    console.print(
        f"OK: plan {plan.dmp.title!r}: {len(plan.datasets)} dataset(s), "
        f"{ext} with the orchestration extension"
    )


@madpp_app.command("constraints")
def madpp_constraints(
    file: Annotated[Path, typer.Argument(help="An maDMP 1.2 JSON (or YAML) file.")],
    federation: Annotated[
        Path | None, typer.Option(help="A federation file: also list the eligible sites.")
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """The placement constraints a plan implies: where each item and each step may go."""
    from rich.table import Table

    from federation.model import load_federation

    plan = _load_plan(file)
    c = plan.to_constraints()
    fed = load_federation(federation) if federation else None
    eligible = c.eligible_sites(fed) if fed else {}
    if json_out:
        write_json({**c.to_json(), "eligible_sites": eligible} if fed else c.to_json(), None)
        return
    items = Table(title="data items")
    for col in ("item", "size", "sensitivity", "allowed jurisdictions"):
        items.add_column(col)
    for it in plan.data_items():
        allowed = ", ".join(it.allowed_jurisdictions) if it.allowed_jurisdictions else "anywhere"
        items.add_row(it.id, human_bytes(it.size), it.sensitivity.value, allowed)
    console.print(items)
    if not c.steps:
        console.print("no workflow step is pinned by this plan")
        return
    steps = Table(title="workflow steps pinned by their data")
    steps.add_column("step")
    steps.add_column("allowed jurisdictions")
    if fed:
        steps.add_column("eligible sites")
    for step, codes in sorted(c.steps.items()):
        row = [step, ", ".join(codes)]
        if fed:
            row.append(", ".join(eligible[step]) or "[red]none[/]")
        steps.add_row(*row)
    console.print(steps)


@buffer_app.command("serve")
def buffer_serve(
    site: Annotated[str, typer.Option(help="Id of the site this service belongs to.")],
    dir: Annotated[Path, typer.Option("--dir", help="Folder for the data and metadata.")],
    port: Annotated[int, typer.Option(help="TCP port.")],
    host: Annotated[str, typer.Option(help="Address to bind (loopback by default).")] = (
        "127.0.0.1"
    ),
    quota_bytes: Annotated[str, typer.Option(help="Site-wide quota, e.g. '2 TB'.")] = "1 TB",
    quota_count: Annotated[int, typer.Option(help="Most live buffers at once.")] = 10_000,
    reap_interval: Annotated[float, typer.Option(help="Seconds between TTL sweeps.")] = 30.0,
    fsync: Annotated[bool, typer.Option(help="fsync every append.")] = True,
    max_ttl: Annotated[str, typer.Option(help="Longest buffer lifetime, e.g. '7 d'.")] = "7 d",
    peer: Annotated[
        list[str] | None,
        typer.Option(
            help="Base URL of another site's buffer service this one pushes buffers to "
            "(repeatable); transfers to it skip the engine's relay."
        ),
    ] = None,
    data_port: Annotated[
        int,
        typer.Option(
            min=-1,
            max=65535,
            help="TCP port where peer services push appends (0: a free port, said by "
            "GET /health; -1: none, peers push through the HTTP route).",
        ),
    ] = 0,
) -> None:
    """Run the ephemeral buffer service of one site (until Ctrl-C).

    Tokens are checked with the secret in $CONTINUUM_BUFFER_SECRET, or in
    DIR/secret (created at first start, mode 0600).
    """
    from datalogistics.buffers import load_or_create_secret, serve
    from federation.units import parse_bytes, parse_duration

    secret = os.environ.get(SECRET_ENV) or load_or_create_secret(dir)
    where = f"${SECRET_ENV}" if os.environ.get(SECRET_ENV) else str(dir / "secret")
    console.print(
        f"buffer service of site {site} on http://{host}:{port} "
        f"(data in {dir}, token secret from {where})"
    )
    sys.stdout.flush()
    serve(
        site,
        dir,
        port,
        host=host,
        secret=secret,
        quota_bytes=int(parse_bytes(quota_bytes)),
        quota_count=quota_count,
        reap_interval=reap_interval,
        fsync=fsync,
        max_ttl=parse_duration(max_ttl),
        peers=peer or (),
        data_port=None if data_port < 0 else data_port,
    )


@buffer_app.command("token")
def buffer_token(
    site: Annotated[str, typer.Option(help="Site of the buffer service.")],
    right: Annotated[Right, typer.Option(help="read, write or admin.")],
    buffer: Annotated[str, typer.Option(help="Buffer id ('*' for admin).")] = "*",
    dir: Annotated[
        Path | None, typer.Option("--dir", help="The service's folder (reads DIR/secret).")
    ] = None,
    ttl: Annotated[str, typer.Option(help="Validity, e.g. '1 h'.")] = "1 h",
    consumer: Annotated[
        str | None, typer.Option(help="Read tokens: the consumer it reads (and drains) for.")
    ] = None,
) -> None:
    """Issue a capability token (the orchestrator's side) and print it."""
    from datalogistics.buffers.tokens import issue_token
    from federation.units import parse_duration

    secret = os.environ.get(SECRET_ENV)
    if secret is None:
        if dir is None or not (dir / "secret").exists():
            raise typer.BadParameter(f"set ${SECRET_ENV} or give --dir of a service with a secret")
        secret = (dir / "secret").read_text().strip()
    typer.echo(
        issue_token(
            secret,
            site=site,
            buffer=buffer,
            right=right,
            ttl=parse_duration(ttl),
            consumer=consumer,
        )
    )


def transfer(
    src_url: Annotated[str, typer.Argument(help="http://host:port/buffers/<id> (sealed).")],
    dst_url: Annotated[str, typer.Argument(help="http://host:port/buffers/<id> (created).")],
    src_token: Annotated[
        str, typer.Option(envvar="CONTINUUM_SRC_TOKEN", help="Read token of the source.")
    ],
    dst_token: Annotated[
        str, typer.Option(envvar="CONTINUUM_DST_TOKEN", help="Write token of the destination.")
    ],
    chunk_size: Annotated[str, typer.Option(help="Chunk size, e.g. '8 MiB'.")] = "8 MiB",
    rate: Annotated[
        str | None, typer.Option(help="Rate limit (token bucket), e.g. '100 MB/s'.")
    ] = None,
    retries: Annotated[int, typer.Option(help="Retries per request.")] = 5,
    json_out: Annotated[bool, typer.Option("--json", help="Print the telemetry record.")] = False,
) -> None:
    """Move a sealed buffer into another site's buffer: chunked, sha256-verified, resumable.

    Running it again after an interruption continues at the last verified offset.
    """
    from datalogistics.buffers import BufferRef
    from datalogistics.transfer import TokenBucket, TransferEngine
    from federation.units import parse_bytes, parse_rate

    limit = None
    if rate is not None:
        bps = parse_rate(rate)
        limit = TokenBucket(bps, burst=max(bps * 0.1, 1.0))
    engine = TransferEngine(
        chunk_size=int(parse_bytes(chunk_size)), retries=retries, default_limit=limit
    )
    rec = engine.transfer(BufferRef.parse(src_url, src_token), BufferRef.parse(dst_url, dst_token))
    if json_out:
        write_json(
            {**rec.telemetry(), "sha256": rec.sha256, "resumed_from": rec.resumed_from}, None
        )
        return
    resumed = f", resumed at byte {rec.resumed_from}" if rec.resumed_from else ""
    console.print(
        f"moved {human_bytes(rec.bytes)} {rec.src_site} -> {rec.dst_site} in "
        f"{human_seconds(rec.seconds)} ({human_bytes(rec.throughput)}/s){resumed}; "
        f"sha256 {rec.sha256} verified; {rec.retries} retries, {rec.resent_chunks} chunks re-sent"
    )


def register(app: typer.Typer) -> None:
    """Add this package's commands to ``app``."""
    app.add_typer(madpp_app, name="madpp")
    app.add_typer(buffer_app, name="buffer")
    app.command("transfer")(transfer)


def demo_section(ctx: DemoContext) -> None:
    """The data logistics part of ``continuum demo``: the transfer plan of the placement.

    Reads ``ctx.results["plan"]`` (anything with a ``flows()`` method giving
    ``datalogistics.flows.Flow`` records); writes ``transfer-plan.json`` and
    leaves the plan in ``ctx.results["transfer_plan"]``. Starts no servers.
    """
    from rich.table import Table

    from datalogistics.transfer_plan import plan_transfers

    plan = ctx.results.get("plan")
    flows_of = getattr(plan, "flows", None)
    if not callable(flows_of):
        console.print("data logistics: no placement plan in this demo run, no transfers to plan")
        return
    console.rule("data logistics")
    tp = plan_transfers(flows_of(), ctx.federation)
    if tp.allocations:
        table = Table(title="ephemeral buffers per site")
        for col in (
            "site",
            "buffers",
            "bytes allocated",
            "peak held",
            "capacity",
            "peak / capacity",
        ):
            table.add_column(col, justify="left" if col == "site" else "right")
        for site, row in tp.per_site().items():
            table.add_row(
                site,
                str(int(row["buffers"])),
                human_bytes(row["bytes"]),
                human_bytes(row["peak"]),
                human_bytes(row["capacity"]),
                f"{100 * row['peak'] / row['capacity']:.2f} %" if row["capacity"] else "-",
            )
        console.print(table)
    if tp.transfers:
        shown = tp.transfers[:DEMO_TRANSFER_ROWS]
        moves = Table(title=f"transfers in order (first {len(shown)} of {len(tp.transfers)})")
        for col in ("#", "item", "from", "to", "size", "planned start", "link time"):
            moves.add_column(col)
        for tr in shown:
            moves.add_row(
                str(tr.order),
                tr.item,
                tr.src,
                tr.dst,
                human_bytes(tr.size),
                human_seconds(tr.start),
                human_seconds(tr.estimated_seconds),
            )
        console.print(moves)
    console.print(
        f"{len(tp.transfers)} transfer(s) cross sites, {human_bytes(tp.bytes_crossing)} in all; "
        f"{len(tp.local_flows)} local flow(s) use no buffer"
    )
    for p in tp.problems:
        console.print(f"[yellow]warning:[/] {p}")
    write_json(tp.to_json(), ctx.output / "transfer-plan.json")
    ctx.results["transfer_plan"] = tp
    ctx.results.setdefault("summary", {})["data_logistics"] = {
        "transfers": len(tp.transfers),
        "bytes_crossing": tp.bytes_crossing,
        "problems": list(tp.problems),
    }
