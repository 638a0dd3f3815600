"""The service end to end: sites, telemetry into the twin, plan preview, approval, a run
executed by the sites' pull agents, progress, logs and control; tenants kept apart."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.conftest import REPO
from tests.federation_api.conftest import LiveServer, Provider, keycloak_settings

SITE = {
    "kind": "hpc",
    "cores": 64,
    "memory": "256 GB",
    "speed": 2.0,
    "power_idle_w": 2,
    "power_busy_w": 8,
    "price_per_core_hour": 0.02,
    "jurisdiction": "FR",
    "buffer_capacity": "1 TB",
}

WORKFLOW = {
    "name": "w",
    "data": [{"id": "x", "size": 10}],
    "steps": [
        {"id": "a", "work": 10, "outputs": ["x"], "command": 'echo made > "$CONTINUUM_OUT/x"'},
        {"id": "b", "work": 10, "inputs": ["x"], "command": 'cat "$CONTINUUM_IN/x"'},
    ],
}


def agent(server: LiveServer, site: str, token: str, workdir: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "federation.cli",
            "site-agent",
            "--site",
            site,
            "--server",
            server.url,
            "--token",
            token,
            "--workdir",
            str(workdir / site),
            "--idle-exit",
            "60",
            "--poll",
            "0.1",
        ],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_run(api: httpx.Client, run_id: str, timeout: float = 90) -> dict[str, Any]:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        body: dict[str, Any] = api.get(f"/api/v1/runs/{run_id}").json()
        if body["state"] != "running":
            return body
        time.sleep(0.2)
    raise AssertionError(f"run {run_id} still running after {timeout} s")


def test_plan_approve_and_run_through_pull_agents(
    local_app: FastAPI, local_server: LiveServer, admin: httpx.Client, tmp_path: Path
) -> None:
    assert admin.get("/api/v1/twin/states").status_code == 409  # no site yet
    for sid in ("s1", "s2"):
        assert admin.post("/api/v1/sites", json={"id": sid, **SITE}).status_code == 201
    now = time.time()
    samples = [
        {"id": f"t{k}", "timestamp": now - 3600 * (5 - k), "utilisation": 0.25, "up": True}
        for k in range(5)
    ]
    first = admin.post(
        "/api/v1/sites/s1/telemetry", json={"samples": samples[:3]}, params={"wait": True}
    )
    assert first.status_code == 202
    assert first.json()["applied"] == 3
    queued = admin.post("/api/v1/sites/s1/telemetry", json={"samples": samples}).json()
    assert (queued["accepted"], queued["duplicates"]) == (2, 3)  # applied in the background
    again = admin.post(
        "/api/v1/sites/s1/telemetry", json={"samples": samples}, params={"wait": True}
    ).json()
    assert (again["accepted"], again["applied"], again["duplicates"]) == (0, 0, 5)
    assert local_app.state.ctx.engine.totals.applied == 5  # the queued two were applied too
    bad = admin.post(
        "/api/v1/sites/s1/telemetry",
        json={"samples": [{"id": "z", "timestamp": 1, "utilisation": 3}]},
    )
    assert bad.status_code == 422
    states = admin.get("/api/v1/twin/states").json()
    assert set(states) == {"s1", "s2"}
    assert states["s1"]["status"] == "ok"
    assert states["s2"]["status"] == "stale"  # no telemetry yet
    free = states["s1"]["available_cores"]["mean"][0]
    assert 40 < free < 56  # 64 cores, a quarter busy
    assert "utilisation" not in states["s1"]  # only the abstracted state leaves the twin
    what_if = admin.post(
        "/api/v1/twin/states/s1/what-if", json={"controls": [[32, 32 * 3600]]}
    ).json()
    assert what_if["expected_wait_s"] >= states["s1"]["expected_wait_s"]

    wf = admin.post("/api/v1/projects/p1/workflows", json={"workflow": WORKFLOW}).json()
    plan = admin.post(
        "/api/v1/projects/p1/plans", json={"workflow_id": wf["id"], "planner": "heft"}
    ).json()
    assert plan["state"] == "preview"
    assert plan["metrics"]["checker_problems"] == []
    assert {a["step"] for a in plan["assignments"]} == {"a", "b"}
    compared = admin.post(
        "/api/v1/projects/p1/plans/compare", json={"workflow_id": wf["id"], "time_limit_s": 5}
    ).json()
    assert set(compared) == {"heft", "greedy", "market", "ilp"}
    assert admin.post(f"/api/v1/plans/{plan['id']}/run", json={}).status_code == 409  # not approved
    over = admin.post(f"/api/v1/plans/{plan['id']}/approve", json={"budget_eur": 0.0})
    assert over.status_code == 409
    assert "over the budget" in over.text
    ok = admin.post(f"/api/v1/plans/{plan['id']}/approve", json={"budget_eur": 10.0})
    assert ok.json()["state"] == "approved"
    started = admin.post(f"/api/v1/plans/{plan['id']}/run", json={}).json()
    run_id = started["run_id"]
    assert started["state"] == "running"
    agents = [agent(local_server, s, local_app.state.local_token, tmp_path) for s in ("s1", "s2")]
    try:
        final = wait_run(admin, run_id)
    finally:
        for a in agents:
            a.terminate()
            a.communicate(timeout=30)
    assert final["state"] == "done", final
    assert final["progress"]["done"] == 2
    logs = admin.get(f"/api/v1/runs/{run_id}/steps/b/logs").json()
    assert (logs["state"], logs["exit_code"]) == ("done", 0)
    assert admin.get(f"/api/v1/runs/{run_id}/steps/zz/logs").status_code == 404
    refused = admin.post(f"/api/v1/runs/{run_id}/kill")  # a finished run stays as it is
    assert refused.status_code == 409
    assert "done" in refused.json()["message"]
    assert admin.get(f"/api/v1/runs/{run_id}").json()["state"] == "done"


@pytest.fixture(scope="module")
def kc(
    provider: Provider, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[FastAPI, LiveServer]]:
    from federation.api import create_app

    app = create_app(keycloak_settings(provider, tmp_path_factory.mktemp("orch")))
    with LiveServer(app) as server:
        yield app, server
    app.state.ctx.store.close()


def test_plans_and_runs_of_another_project_are_404(
    kc: tuple[FastAPI, LiveServer], provider: Provider
) -> None:
    _, server = kc
    admin, ra, rb = (provider.token(n) for n in ("admin-client", "researcher-a", "researcher-b"))
    with server.client(admin) as c:
        assert c.post("/api/v1/sites", json={"id": "ddf-fatnode", **SITE}).status_code == 201
    with server.client(ra) as a:
        wf = a.post("/api/v1/projects/proj-a/workflows", json={"workflow": WORKFLOW}).json()
        plan = a.post("/api/v1/projects/proj-a/plans", json={"workflow_id": wf["id"]})
        assert plan.status_code == 201
        plan_id = plan.json()["id"]
        assert a.get(f"/api/v1/plans/{plan_id}").status_code == 200
        from tests.federation_api.test_simulations_api import TINY

        sim = a.post("/api/v1/projects/proj-a/simulations", json={"scenario": TINY})
        assert sim.status_code == 202
        sim_id = sim.json()["id"]
    with server.client(rb) as b:
        assert b.get(f"/api/v1/plans/{plan_id}").status_code == 404
        assert b.get(f"/api/v1/simulations/{sim_id}").status_code == 404
        assert b.post(f"/api/v1/plans/{plan_id}/approve", json={"budget_eur": 1}).status_code == 404
        other = b.post("/api/v1/projects/proj-a/plans", json={"workflow_id": wf["id"]})
        assert other.status_code == 404
        assert (
            b.post(
                "/api/v1/sites/ddf-fatnode/telemetry",
                json={"samples": [{"id": "1", "timestamp": 1}]},
            ).status_code
            == 403
        )
    with server.client(provider.token("operator-client")) as op:
        sample = {"samples": [{"id": "1", "timestamp": time.time(), "utilisation": 0.5}]}
        assert op.post("/api/v1/sites/ddf-fatnode/telemetry", json=sample).status_code == 202


def test_a_running_steps_output_is_followed_as_it_is_written(
    local_server: LiveServer, admin: httpx.Client, local_app: FastAPI, tmp_path: Path
) -> None:
    assert admin.post("/api/v1/sites", json={"id": "s1", **SITE}).status_code == 201
    talker = {
        "name": "talker",
        "steps": [
            {
                "id": "talk",
                "work": 1,
                "command": "for i in 1 2 3 4 5 6 7 8; do echo line$i; sleep 0.5; done",
            }
        ],
    }
    wf = admin.post("/api/v1/projects/p1/workflows", json={"workflow": talker}).json()
    plan = admin.post(
        "/api/v1/projects/p1/plans", json={"workflow_id": wf["id"], "planner": "heft"}
    ).json()
    admin.post(f"/api/v1/plans/{plan['id']}/approve", json={"budget_eur": 1.0})
    run_id = admin.post(f"/api/v1/plans/{plan['id']}/run", json={}).json()["run_id"]
    worker = agent(local_server, "s1", local_app.state.local_token, tmp_path)
    try:
        end = time.monotonic() + 120
        while admin.get(f"/api/v1/runs/{run_id}").json()["steps"][0]["state"] != "running":
            assert time.monotonic() < end, "the step never started"
            time.sleep(0.1)
        text, seen_running = "", []
        with admin.stream(
            "GET", f"/api/v1/runs/{run_id}/steps/talk/logs", params={"follow": "true"}
        ) as r:
            assert r.headers["content-type"].startswith("text/plain")
            for chunk in r.iter_text():
                text += chunk
                state = admin.get(f"/api/v1/runs/{run_id}").json()["steps"][0]["state"]
                seen_running.append(state == "running")
        assert seen_running[0], "the first lines should arrive while the step still runs"
        assert text.split() == [f"line{i}" for i in range(1, 9)]  # all of it, once, in order
        assert admin.get(f"/api/v1/runs/{run_id}").json()["steps"][0]["state"] == "done"
    finally:
        worker.terminate()
        worker.communicate(timeout=30)
