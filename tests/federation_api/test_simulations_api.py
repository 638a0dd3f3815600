"""Simulations through the API: launch, follow, results; files confined; tenants apart."""

from __future__ import annotations

import time
from typing import Any

import httpx

TINY: dict[str, Any] = {
    "name": "tiny",
    "federation": "demo",
    "start": "2023-03-06T00:00:00Z",
    "horizon": "6 h",
    "workload": {
        "synthetic": {
            "jobs": 200,
            "arrival_rate_per_h": 40,
            "max_cores": 64,
            "mean_runtime": "30 min",
        }
    },
    "series": {"default": {"price": {"constant": 0.1}, "carbon": {"constant": 50}}},
    "planners": ["heft"],
    "seeds": [1, 2],
}


def test_launch_follow_and_read_results(admin: httpx.Client) -> None:
    launched = admin.post("/api/v1/projects/p1/simulations", json={"scenario": TINY})
    assert launched.status_code == 202
    sim_id = launched.json()["id"]
    end = time.monotonic() + 120
    body: dict[str, Any] = {}
    while time.monotonic() < end:
        body = admin.get(f"/api/v1/simulations/{sim_id}").json()
        if body["state"] in ("done", "failed"):
            break
        time.sleep(0.2)
    assert body["state"] == "done", body
    assert body["progress"] == 1.0
    assert [r["seed"] for r in body["results"]] == [1, 2]
    assert all(r["jobs"] == 200 for r in body["results"])
    listed = admin.get("/api/v1/projects/p1/simulations").json()
    assert [s["id"] for s in listed] == [sim_id]
    assert admin.get("/api/v1/projects/p2/simulations").json() == []


def test_scenario_files_stay_inside_the_service_folder(admin: httpx.Client) -> None:
    bad = {**TINY, "workload": {"swf": {"path": "../../../etc/passwd"}}}
    r = admin.post("/api/v1/projects/p1/simulations", json={"scenario": bad})
    assert r.status_code == 422
    assert "body.scenario.workload.swf.path" in r.text
    r = admin.post("/api/v1/projects/p1/simulations", json={"scenario": {**TINY, "horizon": -1}})
    assert r.status_code == 422
    assert "body.scenario.horizon" in r.text
    assert admin.get("/api/v1/projects/p1/simulations").json() == []
