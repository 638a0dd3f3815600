"""CLI commands and the demo section of the twin package."""

from __future__ import annotations

import typer

from federation.cli.common import DemoContext


def register(app: typer.Typer) -> None:
    """Add this package's commands to ``app``."""


def demo_section(ctx: DemoContext) -> None:
    """The twin part of ``continuum demo``."""
