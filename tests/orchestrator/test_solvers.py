"""The solver adapters: HiGHS's process-wide thread scheduler, the versions of highspy the
placement ILP supports (the locked one and 1.15), and a solver failure that is never silent."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path
from typing import Any

import pulp
import pytest

from orchestrator import ILPSettings, Objective, PlanningConstraints, make_planner
from tests.conftest import REPO, run_cli, shared_path
from tests.orchestrator.test_placement_costs import chain, two_sites
from twin.state import static_view


def _tiny_mip() -> pulp.LpProblem:
    p = pulp.LpProblem("tiny", pulp.LpMinimize)
    x = p.add_variable("x", 0, 10, cat="Integer")
    y = p.add_variable("y", 0, 10)
    p += x + y
    p += x + 2 * y >= 3.5, "cover"
    return p


def _start_scheduler_with(threads: int) -> None:
    """Start HiGHS's process-wide scheduler with ``threads`` threads, as any other code in the
    process may (highspy 1.16's default does it with every core)."""
    p = _tiny_mip()
    p.solve(pulp.HiGHS(msg=False, threads=threads, timeLimit=5))


def _hand_chain_plan(settings: ILPSettings) -> tuple[str, str | None, float]:
    # s0 -> s1, 10 core-s each: both on `fast` give 10 s (the hand-computed optimum)
    fed, wf = two_sites(), chain(2, work=10.0, size=1e7)
    settings = replace(settings, engine="milp")  # HiGHS, whatever the objective
    plan = make_planner("ilp", settings).plan(
        wf, fed, static_view(fed), PlanningConstraints(), Objective.parse("time")
    )
    return plan.metrics.status, plan.metrics.status_reason, plan.metrics.makespan_s


def _fresh(script: str, python: str = sys.executable, *args: str) -> dict[str, Any]:
    """Run ``script`` in a new interpreter (HiGHS's scheduler is per process, and what it does
    depends on the process's history) and read the JSON object it prints last."""
    res = subprocess.run(
        [python, "-c", textwrap.dedent(script), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert res.returncode == 0, res.stderr
    doc: dict[str, Any] = json.loads(res.stdout.strip().splitlines()[-1])
    doc["stderr"] = res.stderr
    return doc


def test_a_solve_after_another_thread_count_still_solves() -> None:
    # the defect seen with highspy 1.16: once the process's scheduler ran with 2 threads (1.16's
    # default on this machine), every later threads=1 solve failed before it started ("Not
    # Set") and the planner fell back to HEFT without a word
    doc = _fresh(
        """
        import json
        from orchestrator import ILPSettings
        from orchestrator.placement.planners import solvers
        from tests.orchestrator.test_solvers import (
            _hand_chain_plan, _start_scheduler_with, _tiny_mip,
        )
        _start_scheduler_with(2)
        info = solvers.solve(_tiny_mip(), "highs", time_limit=5, threads=1)
        _start_scheduler_with(2)
        status, reason, makespan = _hand_chain_plan(ILPSettings(time_limit=10.0))
        plan = [status, reason, makespan]
        print(json.dumps({"tiny": [info.status, info.objective], "plan": plan}))
        """
    )
    assert doc["tiny"] == ["Optimal", pytest.approx(1.75)]
    assert doc["plan"] == ["optimal", None, pytest.approx(10.0)]


def test_a_solver_failure_is_reported_as_a_fallback_never_silently() -> None:
    # the scheduler reset taken away: the real HiGHS then fails exactly as it did with 1.16, and
    # the plan, its JSON and the CLI say so
    doc = _fresh(
        """
        import json
        from orchestrator import Objective, PlanningConstraints
        from orchestrator.placement.planners import ilp, solvers
        from federation.cli.plan_cmd import run_planner
        from tests.orchestrator.test_placement_costs import chain, two_sites
        from tests.orchestrator.test_solvers import _start_scheduler_with
        from twin.state import static_view
        solvers.reset_highs_scheduler = lambda: None
        ilp.cpsat_unavailable = lambda: "left out by the test"  # the MILP is the only engine
        _start_scheduler_with(2)
        fed, wf = two_sites(), chain(2, work=10.0, size=1e7)
        plan = run_planner("ilp", wf, fed, static_view(fed), PlanningConstraints(),
                           Objective.parse("time"), show_progress=False)
        m = plan.to_dict()["metrics"]
        print(json.dumps({"metrics": m, "fallback": plan.metrics.fallback}))
        """
    )
    m = doc["metrics"]
    assert m["status"] == "fallback: heft"
    assert doc["fallback"] == "heft"
    assert "solver highs: Not Set" in m["status_reason"]
    assert "no solution" in m["status_reason"]
    assert m["makespan_s"] == pytest.approx(10.0)  # HEFT's plan, still a valid one
    assert "warning: ilp fell back to heft: " in doc["stderr"]
    assert "solver highs: Not Set" in doc["stderr"]


def test_plan_json_on_stdout_is_json_and_the_banner_stays_off_it() -> None:
    wf = shared_path("wfinstances", "montage-chameleon-2mass-005d-001.json")
    res = run_cli("plan", str(wf), "--planner", "ilp", "--time-limit", "5", "--json", "-")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["metrics"]["planner"] == "ilp"
    assert not doc["metrics"]["status"].startswith("fallback"), doc["metrics"]


_COMPAT = """
    import json, site, sys
    site.addsitedir(sys.argv[1])  # the project's environment, after this one's own highspy
    import highspy
    from orchestrator import ILPSettings
    from tests.orchestrator.test_solvers import _hand_chain_plan, _start_scheduler_with
    _start_scheduler_with(2)
    status, reason, makespan = _hand_chain_plan(ILPSettings(time_limit=10.0))
    v = highspy.Highs().version()
    print(json.dumps({"version": v, "plan": [status, reason, makespan]}))
    """


def test_the_planner_works_with_highspy_1_15_too(tmp_path: Path) -> None:
    """A throwaway environment holding highspy 1.15.1 (hash-pinned in requirements/) in front of
    the project's: the same planner, the same answer."""
    uv = Path(sys.executable).with_name("uv")
    if not uv.exists():
        pytest.fail(f"uv is part of every lock (requirements/tools.in) but {uv} is missing")
    env = tmp_path / "h115"
    subprocess.run([str(uv), "venv", "--quiet", "--python", sys.executable, str(env)], check=True)
    py = env / "bin" / "python"
    lock = REPO / "requirements" / "highspy-1.15.txt"
    install = [str(uv), "pip", "install", "--quiet", "--python", str(py), "--require-hashes"]
    subprocess.run(
        [*install, "--no-deps", "-r", str(lock)],
        check=True,
        timeout=300,
        env={**os.environ, "UV_NO_CONFIG": "1"},
    )
    import site

    doc = _fresh(_COMPAT, str(py), site.getsitepackages()[0])
    assert doc["version"].startswith("1.15"), doc
    assert doc["plan"] == ["optimal", None, pytest.approx(10.0)]
