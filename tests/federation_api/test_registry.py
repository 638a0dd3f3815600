"""The whole federation through the API (sites, links, projects), what planning takes from
it, the service's lifecycle, and leases given to exactly one agent."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from federation.store import Store
from orchestrator.connectors import pull
from orchestrator.connectors.base import TaskSpec
from tests.federation_api.conftest import LiveServer
from tests.federation_api.test_orchestration_api import SITE

FR = {**SITE, "jurisdiction": "FR"}


def federation(**extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "name": "pair",
        "sites": [
            {"id": "fr", **FR, "speed": 1.0},
            {"id": "de", **FR, "jurisdiction": "DE", "speed": 4.0},
        ],
        "links": [{"src": "fr", "dst": "de", "bandwidth": "1 GB/s", "symmetric": True}],
        "organisations": [
            {
                "id": "lab",
                "projects": [{"id": "ddf", "sites": ["fr"]}, {"id": "free"}],
            }
        ],
    }
    doc.update(extra)
    return doc


CHAIN: dict[str, Any] = {
    "name": "chain",
    "data": [{"id": "x", "size": 1e6}],
    "steps": [
        {"id": "a", "work": 100, "outputs": ["x"], "command": "true"},
        {"id": "b", "work": 100, "inputs": ["x"], "command": "true"},
    ],
}
SPLIT: dict[str, Any] = {
    **CHAIN,
    "name": "split",
    "steps": [
        {**CHAIN["steps"][0], "constraints": {"sites": ["fr"]}},
        {**CHAIN["steps"][1], "constraints": {"sites": ["de"]}},
    ],
}


def test_put_federation_registers_everything_or_nothing(admin: httpx.Client) -> None:
    ok = admin.put("/api/v1/federation", json=federation())
    assert ok.status_code == 200, ok.text
    got = admin.get("/api/v1/federation").json()
    assert [s["id"] for s in got["sites"]] == ["de", "fr"]
    assert {(lk["src"], lk["dst"]) for lk in got["links"]} == {("fr", "de"), ("de", "fr")}
    assert got["organisations"][0]["projects"][0] == {"id": "ddf", "name": "", "sites": ["fr"]}
    bad = federation(
        links=[{"src": "fr", "dst": "mars", "bandwidth": "1 GB/s"}],
        organisations=[{"id": "lab", "projects": [{"id": "ddf", "sites": ["venus"]}]}],
    )
    bad["sites"][0]["cores"] = -1
    refused = admin.put("/api/v1/federation", json=bad)
    assert refused.status_code == 422
    locations = {d["loc"] for d in refused.json()["detail"]}
    assert "body.sites[0].cores" in locations
    assert admin.get("/api/v1/federation").json() == got  # nothing stored


def test_links_projects_and_site_removal_have_their_routes(admin: httpx.Client) -> None:
    assert admin.put("/api/v1/federation", json=federation()).status_code == 200
    link = {"src": "de", "dst": "fr", "bandwidth": 5e6, "latency": 0.1}
    assert admin.put("/api/v1/links/de/fr", json=link).json()["bandwidth"] == 5e6
    assert admin.get("/api/v1/links/de/fr").json()["latency"] == 0.1
    wrong = admin.put("/api/v1/links/de/fr", json={**link, "dst": "de"})
    assert wrong.status_code == 422
    unknown = admin.put("/api/v1/links/de/moon", json={**link, "dst": "moon"})
    assert unknown.status_code == 422
    assert "moon" in unknown.text
    assert admin.delete("/api/v1/links/de/fr").status_code == 204
    assert admin.get("/api/v1/links/de/fr").status_code == 404
    assert len(admin.get("/api/v1/links").json()) == 1
    put = admin.put("/api/v1/projects/new", json={"organisation": "other", "sites": ["de"]})
    assert put.json() == {"id": "new", "organisation": "other", "name": "", "sites": ["de"]}
    assert (
        admin.put("/api/v1/projects/new", json={"organisation": "o", "sites": ["x"]}).status_code
        == 422
    )
    assert {p["id"] for p in admin.get("/api/v1/projects").json()} == {"ddf", "free", "new"}
    in_use = admin.delete("/api/v1/sites/de")
    assert in_use.status_code == 409
    assert "new" in in_use.json()["message"]
    assert admin.delete("/api/v1/projects/new").status_code == 204
    assert admin.delete("/api/v1/sites/de").status_code == 204
    assert admin.get("/api/v1/links").json() == []  # its links went with it


def submit_and_plan(admin: httpx.Client, project: str, workflow: dict[str, Any]) -> httpx.Response:
    wf = admin.post(f"/api/v1/projects/{project}/workflows", json={"workflow": workflow})
    assert wf.status_code == 201, wf.text
    return admin.post(
        f"/api/v1/projects/{project}/plans",
        json={"workflow_id": wf.json()["id"], "planner": "heft"},
    )


def test_planning_uses_the_registered_links_and_keeps_projects_to_their_sites(
    admin: httpx.Client,
) -> None:
    assert admin.put("/api/v1/federation", json=federation()).status_code == 200
    # Two sites forced by the steps: only possible with the link (was a 500: "add a link")
    split = submit_and_plan(admin, "free", SPLIT)
    assert split.status_code == 201, split.text
    assert split.json()["metrics"]["bytes_moved"] == 1e6
    assert [t["item"] for t in split.json()["metrics"]["transfers"]] == ["x"]
    # ddf may use fr only, though de is four times faster
    free = submit_and_plan(admin, "free", CHAIN).json()
    assert {a["site"] for a in free["assignments"]} == {"de"}
    ddf = submit_and_plan(admin, "ddf", CHAIN).json()
    assert {a["site"] for a in ddf["assignments"]} == {"fr"}
    # what the project may not use, a step cannot ask for
    refused = submit_and_plan(admin, "ddf", SPLIT)
    assert refused.status_code == 422
    assert "project ddf may use only fr" in refused.text


def test_the_lifespan_owns_the_engine(tmp_path: Path) -> None:
    from federation.api import create_app
    from federation.settings import Settings

    app: FastAPI = create_app(Settings(data_dir=tmp_path, reconcile_interval_s=0.05))
    assert app.state.ctx.engine is None  # nothing built by side effect
    with LiveServer(app):
        engine = app.state.ctx.engine
        assert engine is not None
        thread = engine._thread
        assert thread is not None
        assert thread.is_alive()  # reconciling with no request made
    assert app.state.ctx.engine is None
    assert not thread.is_alive()  # stopped at shutdown
    app.state.ctx.store.close()


def leases_at_once(store: Store, tasks: int, agents: int) -> list[str]:
    conn = pull.PullConnector("s", store, Path(store.url.split("///")[-1]).parent / "mirror")
    for i in range(tasks):
        conn.submit(TaskSpec("run", f"step{i}", 1, "true"))
    barrier = threading.Barrier(agents)
    got: list[str] = []
    lock = threading.Lock()

    def agent(k: int) -> None:
        barrier.wait()
        while True:
            task = pull.lease(store, "s", f"agent{k}")
            if task is None:
                return
            with lock:
                got.append(task["handle"])

    threads = [threading.Thread(target=agent, args=(k,)) for k in range(agents)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return got


def test_a_task_is_leased_to_exactly_one_agent_on_sqlite(tmp_path: Path) -> None:
    store = Store.at(tmp_path / "q.db")
    got = leases_at_once(store, tasks=40, agents=14)
    assert len(got) == 40
    assert len(set(got)) == 40  # none given twice
    store.close()


@pytest.mark.postgres
def test_a_task_is_leased_to_exactly_one_agent_on_postgresql(
    postgres_url: str, tmp_path: Path
) -> None:
    store = Store(postgres_url)
    try:
        store.create_tables()
        with store.engine.begin() as c:
            c.exec_driver_sql("DELETE FROM agent_tasks")
        conn = pull.PullConnector("s", store, tmp_path / "mirror")
        for i in range(40):
            conn.submit(TaskSpec("run", f"step{i}", 1, "true"))
        got: list[str] = []
        lock = threading.Lock()
        barrier = threading.Barrier(14)

        def agent(k: int) -> None:
            barrier.wait()
            misses = 0
            while misses < 3:  # SKIP LOCKED may pass over a task another agent is taking
                task = pull.lease(store, "s", f"agent{k}")
                if task is None:
                    misses += 1
                    continue
                with lock:
                    got.append(task["handle"])

        threads = [threading.Thread(target=agent, args=(k,)) for k in range(14)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(got) == 40
        assert len(set(got)) == 40
    finally:
        store.close()
