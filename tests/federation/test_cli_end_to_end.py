"""The quick start through the CLI, as a new user walks it: plan with what the project and its
data plan allow, save the plan, run exactly that plan with the steps' own commands, kill the
run (SIGKILL) once it has made progress, resume it, read its logs."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, call_main

QUICKSTART = REPO / "examples" / "quickstart"


def marked_workflow(tmp: Path, markers: Path, pause_s: float = 1.0) -> Path:
    """The quick-start workflow, each step first noting that it ran (its marker file) and
    lasting ``pause_s`` seconds, its input located by an absolute path."""
    doc = yaml.safe_load((QUICKSTART / "workflow.yaml").read_text())
    for step in doc["steps"]:
        step["command"] = (
            f'echo "$CONTINUUM_SITE" >> {markers}/{step["id"]} && sleep {pause_s} && '
            f"{{ {step['command'].strip()}\n}}"
        )
    for item in doc["data"]:
        if "location" in item:
            item["location"]["path"] = str(QUICKSTART / "data" / "observations.csv")
    path = tmp / "workflow.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "federation.cli", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


def steps_done(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db, timeout=5) as c:
            return int(
                c.execute("select count(*) from exec_steps where state='done'").fetchone()[0]
            )
    except sqlite3.Error:
        return 0


def buffer_services_of(work: Path) -> list[int]:
    """PIDs of buffer service processes whose folder is under ``work``."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        text = [c.decode(errors="replace") for c in cmd]
        if "datalogistics.buffers" in text and any(t.startswith(str(work)) for t in text):
            pids.append(int(proc.name))
    return pids


def test_plan_save_run_kill_resume_logs_through_the_cli(tmp_path: Path) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    wf = marked_workflow(tmp_path, markers)
    work = tmp_path / "work"
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state"), "COLUMNS": "200"}
    declared = [
        "-f",
        str(QUICKSTART / "federation.yaml"),
        "--project",
        "survey",
        "--madpp",
        str(QUICKSTART / "data-plan.json"),
    ]
    planned = cli("plan", str(wf), *declared, "--json", str(tmp_path / "plan.json"), env=env)
    assert planned.returncode == 0, planned.stderr
    plan = json.loads((tmp_path / "plan.json").read_text())
    # the project may use fr-hpc and de-cloud, the data plan allows FR only: fr-hpc alone
    assert {a["site"] for a in plan["assignments"]} == {"fr-hpc"}
    assert plan["metrics"]["planner"] == "ilp"  # the shared default
    moves = {(t["item"], t["src"], t["dst"]) for t in plan["transfers"]}
    assert ("observations", "fr-edge", "fr-hpc") in moves  # where the input lives counts

    run = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "federation.cli",
            "run",
            str(wf),
            *declared,
            "--plan",
            str(tmp_path / "plan.json"),
            "--workdir",
            str(work),
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    # kill it once the run has made progress (a step done), not after a guessed delay
    deadline = time.monotonic() + 120
    while steps_done(work / "state.db") < 1:
        assert run.poll() is None, run.stderr.read() if run.stderr else ""
        assert time.monotonic() < deadline, "no step finished in 120 s"
        time.sleep(0.05)
    assert buffer_services_of(work), "the run's buffer services should be running"
    run.send_signal(signal.SIGKILL)
    run.wait(timeout=30)
    done_at_kill = steps_done(work / "state.db")
    assert 1 <= done_at_kill < 5
    # its buffer services go with it (parent-death signal), none is left behind
    deadline = time.monotonic() + 15
    while buffer_services_of(work) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert buffer_services_of(work) == []

    listed = cli("runs", "list", env=env)  # no --state: the last --workdir's store
    assert listed.returncode == 0, listed.stderr
    run_id = listed.stdout.split("│")[1].strip() if "│" in listed.stdout else ""
    assert len(run_id) == 12, listed.stdout
    assert "running" in listed.stdout

    resumed = cli("runs", "resume", run_id, env=env)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"run {run_id}: done" in resumed.stdout
    for step in ("clean", "bright", "faint", "catalogue", "report"):
        ran = (markers / step).read_text().split()
        assert ran == ["fr-hpc"], (step, ran)  # once, where the plan put it
    report = cli("runs", "logs", run_id, "report", env=env)
    assert report.returncode == 0, report.stderr
    assert "bright sources: 19" in report.stdout
    assert "faint sources: 21" in report.stdout
    everything = cli("runs", "logs", run_id, env=env)
    assert everything.stdout.count("(stdout)") == 5
    again = cli("runs", "resume", run_id, env=env)
    assert again.returncode == 2
    assert "is done" in again.stderr
    assert cli("runs", "pause", run_id, env=env).returncode == 2


def test_run_executes_the_steps_own_commands_and_names_steps_without_one(
    tmp_path: Path,
) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    wf = marked_workflow(tmp_path, markers, pause_s=0.0)
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state")}
    fed = str(QUICKSTART / "federation.yaml")
    ok = cli("run", str(wf), "-f", fed, "--workdir", str(tmp_path / "w1"), env=env)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "planned 5 steps with ilp" in ok.stdout  # the same default planner as `plan`
    assert "launch: native commands" in ok.stdout
    assert all((markers / s).exists() for s in ("clean", "bright", "faint", "catalogue", "report"))
    bare = tmp_path / "bare.yaml"
    bare.write_text("name: bare\nsteps:\n  - {id: lonely, work: 1}\n")
    refused = cli("run", str(bare), "-f", fed, "--workdir", str(tmp_path / "w2"), env=env)
    assert refused.returncode == 2
    assert "lonely have no command" in refused.stderr
    assert not (tmp_path / "w2").exists()


@pytest.mark.parametrize(
    ("value", "message"),
    [("raw", "ITEM=SITE:PATH"), ("raw=ftp://x", "http"), ("nope=fr-hpc:/x", "nope")],
)
def test_bad_input_locations_exit_2_naming_them(
    value: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = call_main(
        capsys,
        "plan",
        str(QUICKSTART / "workflow.yaml"),
        "-f",
        str(QUICKSTART / "federation.yaml"),
        "--input",
        value,
    )
    assert code == 2, out
    assert message in err
