"""A fast CLI: what ``--help``, ``--version`` and ``validate`` load, and ``--json -`` outputs.

Start-up time itself is measured by ``benchmarks/bench_cli.py`` (timed targets do not
belong in unit tests on a shared machine); here the cause is checked: the heavy
libraries stay out of the interpreter for the commands that do not need them.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, run_cli, shared_path

QUICKSTART = REPO / "examples" / "quickstart"
HEAVY = ("numpy", "scipy", "pandas", "sqlalchemy", "pulp", "highspy", "fastapi", "matplotlib")
"""Libraries that take seconds to import: none of them is needed to show help or validate."""


def _loaded_after(args: list[str]) -> tuple[int, list[str], str]:
    """Run the CLI's main() with ``args`` in a fresh interpreter; the modules it loaded."""
    code = (
        "import json, sys\n"
        "from federation.cli import main\n"
        "try:\n"
        f"    main({args!r})\n"
        "except SystemExit as exc:\n"
        "    status = exc.code\n"
        "sys.stdout.flush()\n"
        "sys.stderr.write('\\nMODULES ' + json.dumps(sorted(sys.modules)) + ' ' + str(status))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    head, _, tail = done.stderr.rpartition("\nMODULES ")
    modules, status = tail.rsplit(" ", 1)
    return int(status), json.loads(modules), done.stdout + head


def _heavy(modules: list[str]) -> list[str]:
    return sorted({m.split(".")[0] for m in modules} & set(HEAVY))


@pytest.mark.parametrize(
    "args",
    [["--help"], ["plan", "--help"], ["run", "--help"], ["twin", "fit", "--help"], ["--version"]],
)
def test_help_and_version_load_no_heavy_library(args: list[str]) -> None:
    status, modules, out = _loaded_after(args)
    assert status == 0, out
    assert not _heavy(modules), f"continuum {' '.join(args)} loaded {_heavy(modules)}"


@pytest.mark.parametrize("name", ["federation.yaml", "workflow.yaml", "data-plan.json"])
def test_validate_loads_no_heavy_library(name: str) -> None:
    status, modules, out = _loaded_after(["validate", str(QUICKSTART / name)])
    assert status == 0, out
    assert out.startswith("OK: "), out
    assert not _heavy(modules), f"validate {name} loaded {_heavy(modules)}"


def test_version_prints_the_package_version() -> None:
    from importlib.metadata import version

    done = run_cli("--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"continuum {version('continuum-twin')}"
    assert done.stderr == ""


def test_validate_still_reports_every_problem(tmp_path: Path) -> None:
    bad = tmp_path / "fed.yaml"
    bad.write_text("name: x\nsites:\n  - {id: a, kind: hpc, cores: -1}\n")
    done = run_cli("validate", str(bad))
    assert done.returncode == 2
    assert "sites[0]" in done.stderr
    assert done.stdout == ""


# -- every `--json -` is one JSON document on stdout, whatever else the command says ------


def _json_stdout(*args: str) -> object:
    """Run the console script; its stdout must parse as JSON (solver banners included)."""
    done = run_cli(*args)
    assert done.returncode == 0, done.stderr[-2000:]
    try:
        return json.loads(done.stdout)
    except json.JSONDecodeError as exc:
        raise AssertionError(
            f"stdout of {args} is not JSON ({exc}):\n{done.stdout[:1500]}"
        ) from None


@pytest.mark.parametrize(
    ("planner", "solver"),
    [("ilp", "highs"), ("ilp", "cbc"), ("heft", "highs"), ("market", "highs")],
)
def test_plan_json_to_stdout_is_json(planner: str, solver: str) -> None:
    plan = _json_stdout(
        "plan", str(QUICKSTART / "workflow.yaml"), "-f", str(QUICKSTART / "federation.yaml"),
        "--madpp", str(QUICKSTART / "data-plan.json"), "--planner", planner, "--solver", solver,
        "--time-limit", "5", "--json", "-",
    )  # fmt: skip
    assert isinstance(plan, dict)
    assert len(plan["assignments"]) == 5


def test_info_madpp_and_cdt_json_to_stdout_are_json() -> None:
    info = _json_stdout("info", str(QUICKSTART / "workflow.yaml"), "--json")
    assert isinstance(info, dict)
    assert info["tasks"] == 5
    constraints = _json_stdout(
        "madpp", "constraints", str(QUICKSTART / "data-plan.json"),
        "--federation", str(QUICKSTART / "federation.yaml"), "--json",
    )  # fmt: skip
    assert isinstance(constraints, dict)
    assert "eligible_sites" in constraints
    cdt = shared_path("cdt", "rcpsp_d3_10jobs.json")
    schedule = _json_stdout("cdt", "solve", str(cdt), "--time-limit", "5", "--json", "-")
    assert isinstance(schedule, dict)
    assert schedule["schedule"]


def test_twin_json_to_stdout_is_json(tmp_path: Path) -> None:
    telemetry = REPO / "examples" / "telemetry" / "synthetic-demo-telemetry.csv"
    view = _json_stdout("twin", "view", str(telemetry), "--json", "-")
    assert isinstance(view, dict)
    assert "ddf-fatnode" in view
    series = tmp_path / "hourly.csv"
    series.write_text(
        "time,value\n"
        + "".join(
            f"{1672531200 + 3600 * k},{50 + 10 * math.sin(k / 3.8):.3f}\n" for k in range(24 * 12)
        )
    )
    backtest = _json_stdout(
        "twin", "backtest", str(series), "--time-column", "time", "--value-column", "value",
        "--horizon", "6", "--window", "200", "--json", "-",
    )  # fmt: skip
    assert isinstance(backtest, dict)
    assert set(backtest["mae"]) == {"twin", "persistence", "seasonal_naive", "linear"}


# -- the lazy package APIs resolve to the objects of their modules -------------------------


@pytest.mark.parametrize(
    "package",
    ["federation", "twin", "datalogistics", "datalogistics.buffers", "orchestrator", "simulations"],
)
def test_every_public_name_resolves_to_its_modules_object(package: str) -> None:
    from federation.lazy import type_checking_imports

    pkg = importlib.import_module(package)
    assert pkg.__file__ is not None
    origins = type_checking_imports(pkg.__file__, package)
    assert set(pkg.__all__) <= set(origins) | set(vars(pkg)), package
    for name in pkg.__all__:
        module, attr = origins[name]
        assert getattr(pkg, name) is getattr(importlib.import_module(module), attr), name
        assert name in dir(pkg)
    with pytest.raises(AttributeError, match="no attribute 'not_a_name'"):
        _ = pkg.not_a_name


def test_a_public_name_keeps_its_object_when_its_submodule_loads() -> None:
    # simulations.sweep is a function of simulations/sweep.py: importing the submodule must
    # not hide the function (orchestrator.timeshift, of orchestrator/placement/timeshift.py,
    # is re-exported twice: the package's name is the function too)
    code = (
        "import orchestrator.placement.timeshift, simulations.sweep, orchestrator, simulations\n"
        "from orchestrator import timeshift\n"
        "from simulations import sweep\n"
        "print(callable(timeshift), callable(sweep), type(simulations.sweep).__name__)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "True", "function"]
