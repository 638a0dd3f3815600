"""A missing real component: a failure with its reason under CI, a skip (saying why) elsewhere."""

from __future__ import annotations

import pytest

from tests.conftest import missing


def test_a_missing_component_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=r"no Slurm here \(CI=true"):
        missing("no Slurm here")


def test_a_missing_component_skips_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no Slurm here"):
        missing("no Slurm here")
