"""The pull agent: a site with no inbound connection runs its steps by pulling them from the API."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import httpx
from fastapi import FastAPI

from orchestrator.connectors import LocalConnector, PullConnector
from orchestrator.execution import CopyStager, Executor, RunState, RunStore
from tests.conftest import REPO
from tests.federation_api.conftest import LiveServer, store_of
from tests.orchestrator.test_execution import lines, shell_workflow


def test_a_workflow_runs_partly_through_a_pull_agent(
    local_app: FastAPI, local_server: LiveServer, tmp_path: Path
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
    assert not hpc.healthy()  # no agent has called in yet
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
            str(tmp_path / "agent"),
            "--idle-exit",
            "60",
            "--poll",
            "0.1",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert ex.run(rid, timeout=120) is RunState.DONE
    finally:
        agent.terminate()
        _out, err = agent.communicate(timeout=30)
    assert lines(tmp_path / "markers" / "b") == ["hpc"], err
    assert lines(tmp_path / "markers" / "d") == ["hpc"]
    assert lines(tmp_path / "markers" / "c") == ["a"]
    assert hpc.healthy()
    assert "utilisation" in hpc.telemetry()
    # b's output came back through the API and fed d, on the same pull site
    steps = ex.runs.steps(rid)
    assert hpc.output_path(steps["b"].handle, "xb").read_text() == "b made this\n"


def test_agent_routes_check_roles_and_checksums(
    local_app: FastAPI, local_server: LiveServer, tmp_path: Path
) -> None:
    store = store_of(local_app)
    data_dir = Path(local_app.state.ctx.settings.data_dir)
    hpc = PullConnector("hpc", store, data_dir / "agents" / "hpc")
    from orchestrator.connectors import TaskSpec

    handle = hpc.submit(TaskSpec(run_id="r", step_id="s", attempt=1, command="true"))
    with httpx.Client(base_url=local_server.url, timeout=30) as anon:
        assert anon.post("/api/v1/agents/hpc/lease", params={"agent": "x"}).status_code == 401
    with local_server.client(local_app.state.local_token) as admin:
        leased = admin.post("/api/v1/agents/hpc/lease", params={"agent": "x"})
        assert leased.status_code == 200
        assert leased.json()["handle"] == handle
        assert admin.post("/api/v1/agents/hpc/lease", params={"agent": "x"}).status_code == 204
        bad = admin.put(
            "/api/v1/agents/hpc/output",
            params={"handle": handle, "item": "o"},
            content=b"data",
            headers={"X-Content-SHA256": hashlib.sha256(b"other").hexdigest()},
        )
        assert bad.status_code == 422
        assert not hpc.output_path(handle, "o").exists()
        good = admin.put(
            "/api/v1/agents/hpc/output",
            params={"handle": handle, "item": "o"},
            content=b"data",
            headers={"X-Content-SHA256": hashlib.sha256(b"data").hexdigest()},
        )
        assert good.status_code == 200
        assert hpc.output_path(handle, "o").read_bytes() == b"data"
        done = admin.post("/api/v1/agents/hpc/result", json={"handle": handle, "exit_code": 0})
        assert done.status_code == 200
        again = admin.post("/api/v1/agents/hpc/result", json={"handle": handle, "exit_code": 0})
        assert again.status_code == 409
        missing = admin.get("/api/v1/agents/hpc/input", params={"handle": handle, "item": "x"})
        assert missing.status_code == 404
    assert hpc.status(handle).status.value == "succeeded"
