"""What every CLI module shares: consoles, the debug flag, error reporting."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

PAGE_WIDTH = 200
"""Columns of output that is not a terminal (a log, a pipe): rich would assume 80."""


def _width(stream: object) -> int | None:
    # On a terminal (or with COLUMNS set) rich reads the width; elsewhere use a wide page,
    # and ``fitted_table`` keeps every table within it whole (no column cut short).
    isatty = getattr(stream, "isatty", None)
    if (callable(isatty) and isatty()) or "COLUMNS" in os.environ:
        return None
    return PAGE_WIDTH


console = Console(highlight=False, width=_width(sys.stdout))
err_console = Console(stderr=True, highlight=False, width=_width(sys.stderr))

EXIT_INVALID = 2
EXIT_FAILURE = 1


@dataclass
class _State:
    debug: bool = False


STATE = _State()

if TYPE_CHECKING:
    from rich.table import Table

    from federation.model import Federation
    from orchestrator.workflow import Workflow


@dataclass
class DemoContext:
    """What ``continuum demo`` hands from one section to the next.

    Sections run in order (core summary, twin, placement, data logistics,
    execution); each reads what earlier ones left in ``results`` (for
    example the twin's view under ``"view"``, the plan under ``"plan"``) and
    writes its files into ``output``.
    """

    federation: Federation
    workflow: Workflow
    output: Path
    results: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Column:
    """One column of a ``fitted_table``: its header (a second line for the unit), the row's
    key, how a value is written, and its rank (lower ranks stay when the page is narrow)."""

    header: str
    key: str
    fmt: Callable[[Any], str] = str
    rank: int = 1
    left: bool = False


def fitted_table(
    title: str,
    columns: Sequence[Column],
    rows: Sequence[Mapping[str, Any]],
    width: int | None = None,
    more: str = "",
) -> Table:
    """A table whose cells are never cut short: when the page (the console's width) cannot
    hold every column whole, the columns of the highest ranks are left out, and the
    caption says which (and ``more``: where the whole table is)."""
    from rich.table import Table

    width = width or console.width
    cells = [[c.fmt(r.get(c.key)) for c in columns] for r in rows]

    def need(i: int) -> int:
        head = max(len(line) for line in columns[i].header.split("\n"))
        return max([head, *(len(row[i]) for row in cells)]) + 3  # padding and the border

    kept = list(range(len(columns)))
    for rank in sorted({c.rank for c in columns}, reverse=True):
        if sum(need(i) for i in kept) + 1 <= width or rank == 0:
            break
        for i in sorted((i for i in kept if columns[i].rank == rank), reverse=True):
            if sum(need(i) for i in kept) + 1 <= width:
                break
            kept.remove(i)
    dropped = [
        columns[i].header.replace("-\n", "").replace("\n", " ")
        for i in range(len(columns))
        if i not in kept
    ]
    caption = ""
    if dropped:
        caption = f"left out to fit {width} columns: {', '.join(dropped)}" + (
            f" ({more})" if more else ""
        )
    table = Table(title=title, caption=caption or None)
    for i in kept:
        c = columns[i]
        table.add_column(
            c.header, justify="left" if c.left else "right", no_wrap=True, min_width=need(i) - 3
        )
    for row in cells:
        table.add_row(*(row[i] for i in kept))
    return table


def report_error(exc: BaseException) -> int:
    """Print ``exc`` as one readable line on stderr; return the exit status for it."""
    from federation.errors import InvalidInput

    if isinstance(exc, InvalidInput):
        err_console.print(f"[bold red]error:[/] {exc}", markup=True, soft_wrap=True)
        return EXIT_INVALID
    text = str(exc) or type(exc).__name__
    if isinstance(exc, KeyError) and exc.args:
        text = str(exc.args[0])
    err_console.print(f"[bold red]error:[/] {text}", markup=True, soft_wrap=True)
    return EXIT_FAILURE


def write_json(obj: Any, path: Path | None) -> None:
    """Write ``obj`` as JSON to ``path``, or to stdout when ``path`` is None or ``-``."""
    text = json.dumps(obj, indent=2, sort_keys=False, default=str)
    if path is None or str(path) == "-":
        sys.stdout.write(text + "\n")
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n", encoding="utf-8")


def human_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1000 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} PB"


def human_seconds(s: float) -> str:
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.2f} h"


ProjectOption = Annotated[
    str | None, typer.Option(help="Plan for this project: only the sites it may use.")
]
MadppOption = Annotated[
    Path | None, typer.Option(help="Data project plan (maDMP) whose rules apply.")
]
InputsOption = Annotated[
    list[str] | None,
    typer.Option("--input", help="Where an external input lives: ITEM=SITE:PATH or ITEM=URL."),
]
"""The declarations ``plan`` and ``run`` share (``declared_workflow`` folds them in)."""


def declared_workflow(
    path: Path,
    federation: Federation,
    project: str | None,
    madpp: Path | None,
    inputs: list[str] | None,
) -> Workflow:
    """The workflow file with the project's sites, the data plan's rules and the input
    locations folded in (``orchestrator.planning.declare``), as ``plan`` and ``run`` see it."""
    from datalogistics.madpp import DataProjectPlan
    from orchestrator.loaders import load_workflow
    from orchestrator.planning import declare

    data_plan = DataProjectPlan.load(madpp) if madpp is not None else None
    return declare(
        load_workflow(path),
        federation,
        project=project,
        data_plan=data_plan,
        inputs=parse_inputs(inputs),
        source=str(path),
    )


def parse_inputs(values: list[str] | None, option: str = "--input") -> dict[str, Any]:
    """``ITEM=SITE:PATH`` or ``ITEM=URL`` options as ``InputLocation``s, by item id
    (``typer.BadParameter``, exit 2, naming the bad one)."""
    from datalogistics.items import InputLocation

    out: dict[str, Any] = {}
    for value in values or ():
        item, eq, where = value.partition("=")
        if not eq or not item or not where:
            raise typer.BadParameter(
                f"{value!r}: write ITEM=SITE:PATH or ITEM=https://...", param_hint=option
            )
        try:
            if "://" in where:
                out[item] = InputLocation(url=where)
            else:
                site, colon, path = where.partition(":")
                if not colon or not site or not path:
                    raise ValueError("write ITEM=SITE:PATH or ITEM=https://...")
                out[item] = InputLocation(site=site, path=path)
        except ValueError as exc:
            raise typer.BadParameter(f"{value!r}: {exc}", param_hint=option) from None
    return out


def state_dir() -> Path:
    """Where the CLI keeps what it remembers between commands (``$XDG_STATE_HOME/continuum``)."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "continuum"


def remember_workdir(workdir: Path) -> None:
    """Note ``workdir`` as the last working directory of ``continuum run``."""
    folder = state_dir()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "last-workdir").write_text(str(workdir.resolve()) + "\n", encoding="utf-8")


def last_workdir() -> Path | None:
    """The last ``--workdir`` of ``continuum run`` on this account, if any."""
    try:
        text = (state_dir() / "last-workdir").read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return Path(text) if text else None
