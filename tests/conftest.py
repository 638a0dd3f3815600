"""Shared fixtures: the real data in ../shared/data, and the demo federation.

Tests that need ``../shared/data`` skip with a message when it is absent (a
checkout without the shared folder beside it); ``CONTINUUM_SHARED_DATA``
points elsewhere.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from federation.model import Federation, load_demo_federation

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("CONTINUUM_SHARED_DATA", REPO.parent / "shared" / "data"))


def shared_path(*parts: str) -> Path:
    """A path under ../shared/data; skips the test when it is missing."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared data not available: {path} (set CONTINUUM_SHARED_DATA)")
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The ``shared/data`` folder beside the checkout (skips when absent)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not available at {SHARED_DATA} (set CONTINUUM_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def demo_federation() -> Federation:
    return load_demo_federation()


@pytest.fixture(scope="session")
def examples_dir() -> Path:
    return REPO / "examples"
