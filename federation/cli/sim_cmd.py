"""CLI commands of the simulations package: ``simulate``."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the simulation commands to ``app``."""
