"""CLI commands of the federation service: ``serve`` and ``aai``."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the service's commands to ``app``."""
