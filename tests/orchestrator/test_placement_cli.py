"""``continuum plan``, ``continuum cdt solve`` and the placement demo section, end to end."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from federation.cli import app
from federation.cli.common import DemoContext
from federation.cli.plan_cmd import demo_section
from federation.model import Federation
from orchestrator import Plan, load_workflow
from tests.conftest import call_main, shared_path

METRIC_KEYS = {
    "makespan_s",
    "cost_eur",
    "energy_kwh",
    "carbon_kg",
    "bytes_moved",
    "planner",
    "status",
    "status_reason",
    "gap",
    "wall_s",
    "carbon_unknown_sites",
    "price_unknown_sites",
}


@pytest.mark.parametrize("planner", ["ilp", "heft", "greedy", "market"])
def test_plan_writes_the_documented_json_and_a_gantt(tmp_path: Path, planner: str) -> None:
    wf = shared_path("wfinstances", "montage-chameleon-2mass-005d-001.json")
    out, png = tmp_path / "plan.json", tmp_path / "g.png"
    res = CliRunner().invoke(
        app,
        [
            "plan",
            str(wf),
            "--planner",
            planner,
            "--objective",
            "carbon",
            "--deadline",
            "60",
            "--json",
            str(out),
            "--gantt",
            str(png),
        ],
    )
    assert res.exit_code == 0, res.output
    assert "checker: ok" in res.output
    assert "why" in res.output
    doc = json.loads(out.read_text())
    assert set(doc["metrics"]) == METRIC_KEYS
    assert doc["metrics"]["planner"] == planner
    assert len(doc["assignments"]) == 58
    assert set(doc["assignments"][0]) == {"step", "site", "start_s", "end_s"}
    assert doc["metrics"]["makespan_s"] <= 60
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_plan_reports_bad_options_and_infeasible_limits(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wf = str(shared_path("wfinstances", "montage-chameleon-2mass-005d-001.json"))
    out = tmp_path / "plan.json"
    # invalid input or usage: exit 2 and a message naming the option and what to use
    for args, message in [
        (
            ["--objective", "speed"],
            "--objective: unknown objective 'speed'; use one of time, cost, energy, carbon",
        ),
        (["--planner", "foo"], "--planner: use one of ilp, heft, greedy, market, cpsat"),
        (["--deadline", "-5"], "'--deadline': Input should be greater than or equal to 0"),
        (["--budget", "inf"], "'--budget': must be a finite number, got inf"),
    ]:
        code, _, err = call_main(capsys, "plan", wf, *args, "--json", str(out))
        assert code == 2, args
        assert message in err, err
    # a valid request whose limit cannot be met: exit 1 (not an input error), naming the
    # planner, the makespan it reached and the deadline, and no plan written
    code, _, err = call_main(
        capsys, "plan", wf, "--deadline", "1", "--planner", "heft", "--json", str(out)
    )
    assert code == 1
    assert re.search(r"heft: makespan [0-9.]+ s exceeds the deadline 1\.0 s", err), err
    assert not out.exists()


def test_cdt_solve_prints_and_writes_the_schedule(tmp_path: Path) -> None:
    f = shared_path("cdt", "rcpsp_d3_10jobs.json")
    out = tmp_path / "s.json"
    res = CliRunner().invoke(
        app, ["cdt", "solve", str(f), "--json", str(out), "--csv", str(tmp_path / "s.csv")]
    )
    assert res.exit_code == 0, res.output
    doc = json.loads(out.read_text())
    assert doc["objective_value"] == 24
    assert len(doc["schedule"]) == 10
    assert set(doc["schedule"][0]) == {"job_id", "mode_id", "start", "finish"}
    assert "checker: ok" in res.output


def test_demo_section_plans_and_leaves_its_results(
    tmp_path: Path, demo_federation: Federation
) -> None:
    wf = load_workflow(shared_path("wfinstances", "montage-chameleon-2mass-005d-001.json"))
    ctx = DemoContext(federation=demo_federation, workflow=wf, output=tmp_path)
    demo_section(ctx)
    assert isinstance(ctx.results["plan"], Plan)
    summary = ctx.results["summary"]["plan"]
    assert set(summary) >= METRIC_KEYS
    assert set(summary["compared"]) >= {"heft", "greedy", "market", "ilp"}
    assert summary["carbon_cut_vs_heft_at_1_5x_deadline"] >= 0.2
    assert (tmp_path / "plan-gantt.png").exists()
    assert (tmp_path / "plan.json").exists()


def test_plan_json_to_stdout_is_pure_json() -> None:
    wf = shared_path("wfinstances", "helloworld-chain-5-chameleon.json")
    res = CliRunner().invoke(app, ["plan", str(wf), "--planner", "heft", "--json", "-"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert set(doc["metrics"]) == METRIC_KEYS
    assert len(doc["assignments"]) == 5
