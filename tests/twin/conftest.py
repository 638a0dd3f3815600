"""Fixtures shared by the twin's tests on real series."""

from __future__ import annotations

import numpy as np
import pytest

from federation.model import Site, load_demo_federation
from tests.conftest import shared_path
from twin.fit import default_spec, fit_block
from twin.series import load_series
from twin.site import default_blocks
from twin.ssm import BlockSpec

FRENCH_TRAIN = 1500
"""Hours of FR 2023 the carbon-intensity block is fitted on (the rest is held out)."""


@pytest.fixture(scope="session")
def french() -> tuple[Site, list[BlockSpec], np.ndarray, np.ndarray]:
    """The demo site with a carbon-intensity block fitted on 2023's first 1,500 hours."""
    path = shared_path("energy", "electricitymaps_FR_2023_hourly.csv")
    s = load_series(path, "Datetime (UTC)", "Carbon Intensity gCO₂eq/kWh (LCA)")
    train = slice(0, FRENCH_TRAIN)
    spec = default_spec("carbon_intensity", s.values[train], lower=0.0)
    fitted = fit_block(spec, s.times[train], s.values[train], window=None).spec
    site = load_demo_federation().sites[0]
    blocks = [b for b in default_blocks(site, {}) if b.name != "carbon_intensity"] + [fitted]
    return site, blocks, s.times, s.values
