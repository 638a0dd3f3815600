"""The ``continuum`` command line: validate, info, demo, error handling."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from federation.model import demo_federation_path
from tests.conftest import call_main as call
from tests.conftest import run_cli as run
from tests.conftest import shared_path


def test_help_lists_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = call(capsys, "--help")
    assert code == 0
    for command in ("validate", "info", "demo"):
        assert command in out


def test_validate_each_kind(capsys: pytest.CaptureFixture[str], examples_dir: Path) -> None:
    code, out, _ = call(capsys, "validate", str(demo_federation_path()))
    assert code == 0
    assert "federation 'demo'" in out
    code, out, _ = call(capsys, "validate", str(examples_dir / "workflows" / "ddf-pipeline.yaml"))
    assert code == 0
    assert "6 steps" in out
    montage = examples_dir / "workflows" / "montage-chameleon-2mass-005d-001.json"
    code, out, _ = call(capsys, "validate", str(montage))
    assert code == 0
    assert "58 steps" in out


def test_validate_madmp_examples(capsys: pytest.CaptureFixture[str]) -> None:
    plan = shared_path("madmp", "ex9-dmp-long.json")
    code, out, _ = call(capsys, "validate", str(plan))
    assert code == 0
    assert "maDMP" in out


def test_validate_malformed_federation_prints_the_path_and_exits_2(tmp_path: Path) -> None:
    data = yaml.safe_load(demo_federation_path().read_text())
    data["sites"][3]["cores"] = -4
    data["links"][0]["dst"] = "atlantis"
    bad = tmp_path / "fed.yaml"
    bad.write_text(yaml.safe_dump(data))
    proc = run("validate", str(bad))
    assert proc.returncode == 2
    assert "sites[3].cores" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_validate_reports_every_problem(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    data = yaml.safe_load(demo_federation_path().read_text())
    data["sites"][0]["cores"] = 0
    data["links"][0]["dst"] = "atlantis"
    bad = tmp_path / "fed.yaml"
    bad.write_text(yaml.safe_dump(data))
    code, _, err = call(capsys, "validate", str(bad))
    assert code == 2
    assert "sites[0].cores" in err
    # the link problem is found once the site is valid
    data["sites"][0]["cores"] = 4
    bad.write_text(yaml.safe_dump(data))
    code, _, err = call(capsys, "validate", str(bad))
    assert code == 2
    assert "links[0].dst" in err
    assert "atlantis" in err


def test_validate_malformed_workflow_and_plan(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    wf = tmp_path / "wf.json"
    wf.write_text(
        json.dumps({"name": "w", "data": [], "steps": [{"id": "a", "work": 1, "after": ["b"]}]})
    )
    code, _, err = call(capsys, "validate", str(wf))
    assert code == 2
    assert "steps[0].after[0]" in err
    plan = tmp_path / "dmp.json"
    plan.write_text(json.dumps({"dmp": {"title": 3}}))
    code, _, err = call(capsys, "validate", str(plan))
    assert code == 2
    assert "dmp.title" in err


def test_validate_unknown_document(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    f = tmp_path / "x.yaml"
    f.write_text("hello: world\n")
    code, _, err = call(capsys, "validate", str(f))
    assert code == 2
    assert "cannot tell what this is" in err
    code, _, err = call(capsys, "validate", str(tmp_path / "missing.yaml"))
    assert code == 2
    assert "no such file" in err


def test_info_json_has_the_documented_keys(capsys: pytest.CaptureFixture[str]) -> None:
    path = shared_path("wfinstances", "montage-chameleon-2mass-005d-001.json")
    code, out, _ = call(capsys, "info", str(path), "--json")
    assert code == 0
    info = json.loads(out)
    for key in ("tasks", "edges", "files", "levels", "critical_path_s", "total_work_s"):
        assert key in info
    assert "bytes_on_edges" in info
    assert (info["tasks"], info["edges"], info["files"], info["levels"]) == (58, 114, 111, 8)


def test_info_table(capsys: pytest.CaptureFixture[str], examples_dir: Path) -> None:
    code, out, _ = call(capsys, "info", str(examples_dir / "workflows" / "ddf-pipeline.yaml"))
    assert code == 0
    assert "critical path" in out
    assert "killMS x2" in out


def test_errors_are_one_line_unless_debug(tmp_path: Path) -> None:
    bad = tmp_path / "wf.yaml"
    bad.write_text("name: w\nsteps: [{id: a, work: -1}]\n")
    proc = run("info", str(bad))
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert "steps[0].work" in proc.stderr
    proc = run("--debug", "info", str(bad))
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr


def test_usage_error_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = call(capsys, "info")
    assert code == 2
    assert "Missing argument" in err


def test_demo_needs_no_shared_data(tmp_path: Path) -> None:
    """The main job runs from the embedded defaults, even with ../shared absent."""
    out_dir = tmp_path / "out"
    env = {**os.environ, "CONTINUUM_SHARED_DATA": str(tmp_path / "nothing")}
    proc = subprocess.run(
        [sys.executable, "-m", "federation.cli", "demo", "--output", str(out_dir)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    assert "ddf-fatnode" in proc.stdout
    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["workflow"]["tasks"] == 58
    assert len(summary["federation"]["sites"]) == 5
    # the main job: executed for real, one site down half-way, re-planned, completed
    run = summary["run"]
    assert run["state"] == "done"
    assert run["failed_site"] in {s["id"] for s in summary["federation"]["sites"]}
    assert run["replanned_steps"]
    assert run["fault_to_replan_s"] is not None
    assert f"site {run['failed_site']} went down" in proc.stdout
    report = (out_dir / "report.md").read_text()
    assert "gantt-planned-vs-actual.png" in report
    assert (out_dir / "gantt-planned-vs-actual.png").stat().st_size > 0
