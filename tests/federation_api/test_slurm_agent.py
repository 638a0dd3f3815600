"""A site deployed as real HPC sites are: its agent pulls the steps from the API (no
inbound connection) and hands them to the site's Slurm (``continuum site-agent --slurm``),
against the test session's cluster."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from fastapi import FastAPI

from orchestrator.connectors import LocalConnector, PullConnector
from orchestrator.connectors.slurm import JobCompletionLog
from orchestrator.connectors.slurmlocal import LocalSlurm
from orchestrator.execution import CopyStager, Executor, RunState, RunStore
from tests.conftest import REPO
from tests.federation_api.conftest import LiveServer, store_of
from tests.orchestrator.test_execution import lines, shell_workflow
from tests.orchestrator.test_slurm_connector import until


def test_a_pull_site_runs_its_steps_as_slurm_jobs(
    slurm: LocalSlurm, local_app: FastAPI, local_server: LiveServer, tmp_path: Path
) -> None:
    (tmp_path / "markers").mkdir()
    wf = shell_workflow(tmp_path / "markers")
    store = store_of(local_app)
    data_dir = Path(local_app.state.ctx.settings.data_dir)
    hpc = PullConnector("hpc", store, data_dir / "agents" / "hpc")
    sites = {"a": LocalConnector("a", tmp_path / "a", slots=2), "hpc": hpc}
    ex = Executor(
        RunStore(store),
        sites,
        stager=CopyStager(tmp_path / "stage"),
        inputs_dir=tmp_path / "inputs",
        poll_interval=0.02,
    )
    rid = ex.submit(wf, {"a": "a", "b": "hpc", "c": "a", "d": "hpc"})
    agent_dir = tmp_path / "agent"
    agent = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "federation.cli",
            "site-agent",
            "--site",
            "hpc",
            "--server",
            local_server.url,
            "--token",
            local_app.state.local_token,
            "--workdir",
            str(agent_dir),
            "--idle-exit",
            "60",
            "--poll",
            "0.2",
            "--slurm",
            "--partition",
            "debug",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert ex.run(rid, timeout=180) is RunState.DONE
        # the heartbeat carries the partition's telemetry (read from the scheduler)
        until(lambda: "in_service" in hpc.telemetry(), 30, "the agent's Slurm telemetry")
    finally:
        agent.terminate()
        _out, err = agent.communicate(timeout=30)
    assert lines(tmp_path / "markers" / "b") == ["hpc"], err
    assert lines(tmp_path / "markers" / "d") == ["hpc"]
    assert lines(tmp_path / "markers" / "c") == ["a"]
    assert hpc.telemetry()["in_service"] == 1.0
    steps = ex.runs.steps(rid)
    assert hpc.output_path(steps["b"].handle, "xb").read_text() == "b made this\n"
    # b and d ran as Slurm jobs, named with the run's ids, in the agent's task folders
    log = JobCompletionLog(slurm.jobcomp)
    names = {f"continuum:{rid}:{s}:1" for s in ("b", "d")}
    until(lambda: names <= {r.name for r in log.records()}, 60, "the jobs' records")
    for rec in log.records():
        if rec.name in names:
            assert rec.state == "COMPLETED"
            assert rec.workdir.startswith(str(agent_dir.resolve()))
