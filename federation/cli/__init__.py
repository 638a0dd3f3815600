"""The ``continuum`` command line (typer + rich), at the top of the import graph.

Every command is a thin layer over the packages' public functions. Errors end
the program with one readable line on stderr and a non-zero status (2 for an
invalid input or usage, 1 otherwise); ``--debug`` shows the traceback instead.
Each package's commands live in a module of their own here and are registered
on the one ``app``.
"""

from __future__ import annotations

import functools
import math
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

import typer
import typer.main

from federation.cli import api_cmd, common, core, data_cmd, exec_cmd, plan_cmd, sim_cmd, twin_cmd

app = typer.Typer(
    name="continuum",
    help="Federated continuum digital-twin orchestrator.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode="rich",
)


def _print_version(value: bool) -> None:
    # Eager: runs while the options are parsed, before click asks for a command.
    if value:
        from importlib.metadata import version as pkg_version

        typer.echo(f"continuum {pkg_version('continuum-twin')}")
        raise typer.Exit(0)


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks on errors."),
    version: bool = typer.Option(
        False,
        "--version",
        help="Print the version and exit.",
        is_eager=True,
        expose_value=False,
        callback=_print_version,
    ),
) -> None:
    """Federated continuum digital-twin orchestrator."""
    common.STATE.debug = debug


core.register(app)
twin_cmd.register(app)
plan_cmd.register(app)
data_cmd.register(app)
api_cmd.register(app)
sim_cmd.register(app)
exec_cmd.register(app)


def _terminated(signum: int, _frame: object) -> None:
    # SIGTERM unwinds like Ctrl-C: every ``finally`` runs, so the processes a command
    # started (buffer services, pools) are stopped by PID before it exits.
    raise SystemExit(128 + signum)


def _finite_floats(callback: Callable[..., Any]) -> Callable[..., Any]:
    """``callback`` refusing a non-finite float option (``--deadline inf``) with exit 2."""

    @functools.wraps(callback)
    def checked(*args: Any, **kwargs: Any) -> Any:
        for name, value in kwargs.items():
            values = value if isinstance(value, list | tuple) else [value]
            if any(isinstance(v, float) and not math.isfinite(v) for v in values):
                raise typer.BadParameter(
                    f"must be a finite number, got {value!r}",
                    param_hint=f"'--{name.replace('_', '-')}'",
                )
        return callback(*args, **kwargs)

    return checked


def _guard(command: Any) -> Any:
    """Every command of the tree with its float options checked (``_finite_floats``)."""
    if getattr(command, "callback", None) is not None:
        command.callback = _finite_floats(command.callback)
    for sub in getattr(command, "commands", {}).values():
        _guard(sub)
    return command


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point (``continuum``)."""
    args = list(sys.argv[1:] if argv is None else argv)
    common.STATE.debug = "--debug" in args
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        sys.exit(_run(args))
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _run(args: list[str]) -> int:
    try:
        command = _guard(typer.main.get_command(app))
        rv = command.main(args=args, prog_name="continuum", standalone_mode=False)
    except typer.Exit as exc:
        return int(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        common.err_console.print("aborted")
        return 130
    except Exception as exc:
        # Usage errors (click's, or the copy of click that newer typer vendors)
        # know how to show themselves and carry their exit status (2).
        show, exit_code = getattr(exc, "show", None), getattr(exc, "exit_code", None)
        if callable(show) and isinstance(exit_code, int):
            show()
            return exit_code
        if common.STATE.debug:
            raise
        return common.report_error(exc)
    return rv if isinstance(rv, int) else 0


__all__ = ["app", "main"]
