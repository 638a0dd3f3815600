"""The whole path through HTTP only, as a new user walks it, with real processes.

A federation (sites, links, two projects) is registered with one ``PUT``; a WfFormat workflow
whose steps run real commands, with an external input that lives at the edge site, is
submitted with a data project plan that allows France only; the preview must keep every step
on a French site the project may use; the plan is approved and run by two
``continuum site-agent`` processes; the service (``continuum serve``) is killed with SIGKILL
once the run has made progress and started again; the run finishes by itself, every step ran
exactly once (marker files), and each step's stdout is readable through the logs route.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from federation.api.server import bind_tcp, bound_port
from tests.conftest import REPO

QUICKSTART = REPO / "examples" / "quickstart"
TOKEN = "e2e-local-admin-token-0123456789abcdef"


def free_port() -> int:
    sock = bind_tcp("127.0.0.1", 0)
    port = bound_port(sock)
    sock.close()
    return port


class Service:
    """``continuum serve`` as a user starts it: a process of its own, on a fixed port."""

    def __init__(self, data_dir: Path, port: int, database_url: str | None = None) -> None:
        self.data_dir = data_dir
        self.port = port
        self.database_url = database_url
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {
            **os.environ,
            "CONTINUUM_LOCAL_TOKEN": TOKEN,
            "CONTINUUM_RECONCILE_INTERVAL_S": "0.1",
            "CONTINUUM_AGENT_HEARTBEAT_TIMEOUT_S": "60",
        }
        if self.database_url:
            env["CONTINUUM_DATABASE_URL"] = self.database_url
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "federation.cli",
                "serve",
                "--port",
                str(self.port),
                "--data-dir",
                str(self.data_dir),
                "--log-level",
                "warning",
            ],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=open(self.data_dir / "service.log", "ab"),  # noqa: SIM115
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, (self.data_dir / "service.log").read_text()[-3000:]
            try:
                if httpx.get(f"{self.url}/health", timeout=2).is_success:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError("continuum serve did not answer in 120 s")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60
        )


def start_agent(site: str, url: str, workdir: Path, export_root: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "federation.cli",
            "site-agent",
            "--site",
            site,
            "--server",
            url,
            "--token",
            TOKEN,
            "--workdir",
            str(workdir / site),
            "--poll",
            "0.2",
            "--export-root",
            str(export_root),
        ],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=open(workdir / f"{site}.log", "ab"),
    )


def wfformat_of_quickstart(markers: Path, data: Path) -> dict[str, Any]:
    """The quick-start workflow as a WfCommons WfFormat 1.5 instance: each task runs its
    command through ``sh -c`` after noting that it ran; the observations file carries
    continuum's ``location`` extension (it lives at the edge site)."""
    doc = yaml.safe_load((QUICKSTART / "workflow.yaml").read_text())
    producer = {o: s["id"] for s in doc["steps"] for o in s.get("outputs", [])}
    children: dict[str, list[str]] = {s["id"]: [] for s in doc["steps"]}
    tasks, records = [], []
    for s in doc["steps"]:
        parents = sorted({producer[i] for i in s.get("inputs", []) if i in producer})
        for p in parents:
            children[p].append(s["id"])
        tasks.append(
            {
                "name": s["id"],
                "id": s["id"],
                "parents": parents,
                "children": [],
                "inputFiles": s.get("inputs", []),
                "outputFiles": s.get("outputs", []),
            }
        )
        script = f'echo "$CONTINUUM_SITE" >> {markers}/{s["id"]} && sleep 0.5 && {s["command"]}'
        records.append(
            {
                "id": s["id"],
                "runtimeInSeconds": float(s["work"]),
                "coreCount": 1,
                "command": {"program": "sh", "arguments": ["-c", script]},
            }
        )
    for t in tasks:
        t["children"] = children[t["id"]]
    sizes = {"observations": 2000, "report": 200}
    files = []
    for d in doc["data"]:
        entry: dict[str, Any] = {"id": d["id"], "sizeInBytes": sizes.get(d["id"], 1000)}
        if "location" in d:
            entry["location"] = {"site": "fr-edge", "path": str(data / "observations.csv")}
        files.append(entry)
    return {
        "name": "sky-survey",
        "schemaVersion": "1.5",
        "workflow": {
            "specification": {"tasks": tasks, "files": files},
            "execution": {
                "makespanInSeconds": 12.0,
                "executedAt": "2026-11-30T10:00:00Z",
                "tasks": records,
            },
        },
    }


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    data_dir = tmp_path / "service"
    data_dir.mkdir()
    svc = Service(data_dir, free_port())
    svc.start()
    try:
        yield svc
    finally:
        svc.stop()


def wait_for(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout:.0f} s")


def test_the_whole_path_through_http_survives_a_sigkill_of_the_service(
    service: Service, tmp_path: Path
) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    data = tmp_path / "edge-data"
    data.mkdir()
    (data / "observations.csv").write_bytes((QUICKSTART / "data" / "observations.csv").read_bytes())
    federation = yaml.safe_load((QUICKSTART / "federation.yaml").read_text())
    with service.client() as c:
        put = c.put("/api/v1/federation", json=federation)
        assert put.status_code == 200, put.text
        got = c.get("/api/v1/federation").json()
        assert len(got["links"]) == 6  # symmetric links, both directions
        projects = {p["id"]: p for p in c.get("/api/v1/projects").json()}
        assert projects["survey"]["sites"] == ["fr-hpc", "de-cloud"]
        plan_doc = json.loads((QUICKSTART / "data-plan.json").read_text())
        sub = c.post(
            "/api/v1/projects/survey/workflows",
            json={"workflow": wfformat_of_quickstart(markers, data), "madpp": plan_doc},
        )
        assert sub.status_code == 201, sub.text
        preview = c.post("/api/v1/projects/survey/plans", json={"workflow_id": sub.json()["id"]})
        assert preview.status_code == 201, preview.text
        plan = preview.json()
        # FR only (the data plan) and fr-hpc or de-cloud (the project): fr-hpc for all
        assert {a["site"] for a in plan["assignments"]} == {"fr-hpc"}
        assert plan["planner"] == "ilp"
        # the external input's transfer, from where it lives to its first consumer's site
        moves = {(t["item"], t["src"], t["dst"]) for t in plan["metrics"]["transfers"]}
        assert ("observations", "fr-edge", "fr-hpc") in moves
        assert plan["metrics"]["bytes_moved"] >= 2000
        approved = c.post(f"/api/v1/plans/{plan['id']}/approve", json={"budget_eur": 1.0})
        assert approved.json()["state"] == "approved", approved.text
        started = c.post(f"/api/v1/plans/{plan['id']}/run", json={})
        assert started.status_code == 202, started.text
        run_id = started.json()["run_id"]
        assert c.post(f"/api/v1/plans/{plan['id']}/run", json={}).status_code == 409

    agents = [start_agent(s, service.url, tmp_path, data) for s in ("fr-hpc", "fr-edge")]
    try:

        def progress() -> bool:
            with service.client() as c:
                done = int(c.get(f"/api/v1/runs/{run_id}").json()["progress"]["done"])
            return done >= 1

        wait_for(progress, 180, "a first step done")
        service.kill()  # SIGKILL mid-run: no shutdown code runs
        with service.client() as c, pytest.raises(httpx.TransportError):
            c.get(f"/api/v1/runs/{run_id}")
        service.start()  # the same data directory and port

        def finished() -> dict[str, Any] | None:
            with service.client() as c:
                status: dict[str, Any] = c.get(f"/api/v1/runs/{run_id}").json()
            return status if status["state"] != "running" else None

        final = wait_for(finished, 240, "the run's end after the restart")
    finally:
        for a in agents:
            a.terminate()
        for a in agents:
            a.wait(timeout=60)
    assert final["state"] == "done", json.dumps(final, indent=1)[:4000]
    assert final["launch"]["kind"] == "native"
    for step in ("clean", "bright", "faint", "catalogue", "report"):
        assert (markers / step).read_text().split() == ["fr-hpc"], step  # exactly once
    with service.client() as c:
        logs = c.get(f"/api/v1/runs/{run_id}/steps/report/logs").json()
        assert "bright sources: 19" in logs["stdout"]
        assert logs["state"] == "done"
        followed = c.get(f"/api/v1/runs/{run_id}/steps/report/logs", params={"follow": "true"})
        assert followed.headers["content-type"].startswith("text/plain")
        assert "faint sources: 21" in followed.text
        events = [e["kind"] for e in c.get(f"/api/v1/runs/{run_id}").json()["events"]]
        assert "error" not in events


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_concurrent_runs_of_one_approved_plan_make_one_run(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue("postgres_url") if backend == "postgresql" else None
    (tmp_path / "service").mkdir()
    service = Service(tmp_path / "service", free_port(), url)
    service.start()
    try:
        plan_id = approved_plan(service)
        codes: list[int] = []
        barrier = threading.Barrier(6)

        def run() -> None:
            with service.client() as c:
                barrier.wait()
                codes.append(c.post(f"/api/v1/plans/{plan_id}/run", json={}).status_code)

        threads = [threading.Thread(target=run) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(codes) == [202, 409, 409, 409, 409, 409]
        with service.client() as c:
            assert c.get(f"/api/v1/plans/{plan_id}").json()["state"] == "running"
    finally:
        service.stop()


def approved_plan(service: Service) -> str:
    federation = yaml.safe_load((QUICKSTART / "federation.yaml").read_text())
    doc = yaml.safe_load((QUICKSTART / "workflow.yaml").read_text())
    with service.client() as c:
        assert c.put("/api/v1/federation", json=federation).status_code == 200
        wf = c.post("/api/v1/projects/outreach/workflows", json={"workflow": doc}).json()
        plan = c.post(
            "/api/v1/projects/outreach/plans", json={"workflow_id": wf["id"], "planner": "heft"}
        ).json()
        c.post(f"/api/v1/plans/{plan['id']}/approve", json={"budget_eur": 1.0})
        plan_id: str = plan["id"]
        return plan_id


def test_a_crash_of_postgresql_mid_run_loses_nothing_acknowledged(tmp_path: Path) -> None:
    """PostgreSQL itself is SIGKILLed while a run is in flight and started again: the service
    and its agents ride it out (503 and retries meanwhile), the run completes with every step
    run once, and every telemetry sample the service acknowledged is still in its journal."""
    from sqlalchemy import func, select

    from federation.api.tables import TelemetryRow
    from federation.store import Store
    from tests.conftest import PostgresCluster

    cluster = PostgresCluster()  # its own, so that killing it disturbs no other test
    (tmp_path / "service").mkdir()
    service = Service(tmp_path / "service", free_port(), cluster.url)
    markers = tmp_path / "markers"
    markers.mkdir()
    data = tmp_path / "edge-data"
    data.mkdir()
    (data / "observations.csv").write_bytes((QUICKSTART / "data" / "observations.csv").read_bytes())
    agents: list[subprocess.Popen[bytes]] = []
    try:
        service.start()
        federation = yaml.safe_load((QUICKSTART / "federation.yaml").read_text())
        now = time.time()
        with service.client() as c:
            assert c.put("/api/v1/federation", json=federation).status_code == 200
            samples = [
                {"id": f"t{k}", "timestamp": now - 60 * (30 - k), "utilisation": 0.4}
                for k in range(30)
            ]
            told = c.post("/api/v1/sites/fr-hpc/telemetry", json={"samples": samples})
            assert told.status_code == 202, told.text
            assert told.json()["accepted"] == 30
            sub = c.post(
                "/api/v1/projects/outreach/workflows",
                json={"workflow": wfformat_of_quickstart(markers, data)},
            )
            assert sub.status_code == 201, sub.text
            plan = c.post(
                "/api/v1/projects/outreach/plans",
                json={"workflow_id": sub.json()["id"], "planner": "heft"},
            ).json()
            assert c.post(
                f"/api/v1/plans/{plan['id']}/approve", json={"budget_eur": 1.0}
            ).is_success
            run_id = c.post(f"/api/v1/plans/{plan['id']}/run", json={}).json()["run_id"]
        sites = sorted({a["site"] for a in plan["assignments"]} | {"fr-edge"})
        agents = [start_agent(s, service.url, tmp_path, data) for s in sites]

        def progress() -> bool:
            with service.client() as c:
                r = c.get(f"/api/v1/runs/{run_id}")
            return r.is_success and int(r.json()["progress"]["done"]) >= 1

        wait_for(progress, 180, "a first step done")
        cluster.kill()  # the database crashes mid-run
        with service.client() as c:
            down = c.get(f"/api/v1/runs/{run_id}")
            assert down.status_code == 503, down.text  # retry later, nothing stored
            assert down.headers["Retry-After"] == "1"
        time.sleep(1.0)  # a second of outage: agents and the engine keep retrying
        cluster.start()

        def finished() -> dict[str, Any] | None:
            with service.client() as c:
                r = c.get(f"/api/v1/runs/{run_id}")
            if not r.is_success:
                return None
            status: dict[str, Any] = r.json()
            return status if status["state"] != "running" else None

        final = wait_for(finished, 240, "the run's end after PostgreSQL came back")
        assert final["state"] == "done", json.dumps(final, indent=1)[:4000]
        for step in ("clean", "bright", "faint", "catalogue", "report"):
            assert len((markers / step).read_text().split()) == 1, step  # exactly once
        store = Store(cluster.url)
        with store.session() as db:
            kept = db.scalar(
                select(func.count()).select_from(TelemetryRow).where(TelemetryRow.site == "fr-hpc")
            )
        store.close()
        assert kept == 30  # every acknowledged sample survived the crash
    finally:
        for a in agents:
            a.terminate()
        for a in agents:
            a.wait(timeout=60)
        service.stop()
        cluster.stop()
