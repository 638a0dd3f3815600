"""The twin at the site: only ``AbstractSiteState`` reaches the service, never raw telemetry."""

from __future__ import annotations

import math
import struct
import subprocess
import sys
import time
from pathlib import Path

import httpx
from fastapi import FastAPI

from federation.api.engine import engine_of
from tests.conftest import REPO
from tests.federation_api.conftest import LiveServer
from tests.federation_api.test_orchestration_api import SITE
from twin.site_service import HttpPublisher, SiteTwinService, TelemetryFileSource
from twin.state import SiteStatus

NODE = "node-zx81-secret"


def _row(k: int) -> tuple[float, float, float]:
    """Hour ``k``'s utilisation, backlog and carbon intensity: 7-8 significant digits that no
    twin computation produces by chance, found in the database only if stored raw."""
    util = round(0.4172931 + 0.1 * math.sin(2 * math.pi * k / 24), 7)
    backlog = round(31415.9265 + 977.31 * math.cos(2 * math.pi * k / 24), 4)
    carbon = round(271.828183 + 23.3 * math.sin(2 * math.pi * (k - 5) / 24), 6)
    return util, backlog, carbon


UTIL, BACKLOG, CARBON = _row(0)


def _telemetry(path: Path, site: str, hours: int = 30) -> float:
    """A telemetry CSV of ``site`` ending a minute ago; returns its last timestamp."""
    end = time.time() - 60
    rows = ["timestamp,site,utilisation,backlog,carbon_intensity,node"]
    for k in range(hours):
        t = end - 3600.0 * (hours - 1 - k)
        u, b, c = _row(k)
        rows.append(f"{t:.0f},{site},{u},{b},{c},{NODE}")
    path.write_text("\n".join(rows) + "\n")
    return end


def _db_bytes(app: FastAPI) -> bytes:
    """The service's SQLite database and its write-ahead log, as stored on disk."""
    data_dir = Path(app.state.ctx.settings.data_dir)
    return b"".join(p.read_bytes() for p in sorted(data_dir.glob("continuum.db*")))


def _raw_traces(blob: bytes, hours: int = 30) -> list[str]:
    """Which distinctive raw values appear in ``blob``, as text or as a stored double."""
    found = []
    for v in sorted({v for k in range(hours) for v in _row(k)}):
        if str(v).encode() in blob or struct.pack(">d", v) in blob or struct.pack("<d", v) in blob:
            found.append(str(v))
    if NODE.encode() in blob:
        found.append(NODE)
    return found


def test_agent_fed_site_sends_only_its_state_and_no_raw_value_reaches_the_database(
    local_app: FastAPI, local_server: LiveServer, admin: httpx.Client, tmp_path: Path
) -> None:
    for sid in ("agent-fed", "raw-fed"):
        assert admin.post("/api/v1/sites", json={"id": sid, **SITE}).status_code == 201
    telemetry = tmp_path / "site-telemetry.csv"
    _telemetry(telemetry, "agent-fed")
    agent = subprocess.run(
        [
            sys.executable, "-m", "federation.cli", "site-agent",
            "--site", "agent-fed", "--server", local_server.url,
            "--token", local_app.state.local_token, "--workdir", str(tmp_path / "agent"),
            "--telemetry", str(telemetry), "--state-every", "0.2",
            "--idle-exit", "1.5", "--poll", "0.1",
        ],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert agent.returncode == 0, agent.stderr
    state = admin.get("/api/v1/twin/states/agent-fed").json()
    assert state["site_id"] == "agent-fed"
    assert state["status"] == "ok"  # the site's own twin had 30 h of telemetry
    assert state["carbon_intensity"]["mean"][0] > 200  # its forecast, not the static figure
    engine = engine_of(local_app.state.ctx)
    assert engine.twin().sites["agent-fed"].x is None  # the central twin never saw a sample
    assert _raw_traces(_db_bytes(local_app)) == []
    # The search finds raw values where they are stored: a site that sends raw telemetry.
    samples = [
        {"id": f"s{k}", "timestamp": time.time() - 3600 * (3 - k), "utilisation": UTIL,
         "backlog": BACKLOG, "carbon_intensity": CARBON}
        for k in range(3)
    ]  # fmt: skip
    r = admin.post("/api/v1/sites/raw-fed/telemetry", json={"samples": samples}, params={"wait": 1})
    assert r.status_code == 202, r.text
    assert set(_raw_traces(_db_bytes(local_app))) >= {str(UTIL), str(BACKLOG), str(CARBON)}


def test_operator_accepts_a_new_level_through_the_next_push(
    local_app: FastAPI, local_server: LiveServer, admin: httpx.Client, tmp_path: Path
) -> None:
    assert admin.post("/api/v1/sites", json={"id": "agent-fed", **SITE}).status_code == 201
    telemetry = tmp_path / "t.csv"
    end = _telemetry(telemetry, "agent-fed", hours=40)
    publisher = HttpPublisher(local_server.url, local_app.state.local_token)
    service = SiteTwinService(
        publisher.site("agent-fed"), TelemetryFileSource(telemetry, "agent-fed"), publisher
    )
    assert service.tick(end).status is SiteStatus.OK
    # a step of the carbon intensity that persists: flagged, and it stays flagged
    with telemetry.open("a") as fh:
        for k in range(1, 13):
            u, b, c = _row(40 + k)
            fh.write(f"{end + 600 * k:.0f},agent-fed,{u},{b},{c + 400},{NODE}\n")
    assert service.tick(end + 7200).status is SiteStatus.DEGRADED
    assert admin.get("/api/v1/twin/states/agent-fed").json()["status"] == "degraded"
    cli = subprocess.run(
        [
            sys.executable, "-m", "federation.cli", "twin", "accept", "agent-fed",
            "--server", local_server.url, "--token", local_app.state.local_token,
        ],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    assert "applies it at its next state push" in cli.stdout
    state = service.tick(end + 7200)  # the push's answer carries the operator's request
    assert service.accepted == 1
    assert state.status is SiteStatus.OK
    time.sleep(1.1)  # the engine caches its view for up to a second
    assert admin.get("/api/v1/twin/states/agent-fed").json()["status"] == "ok"
    # a site twinned centrally: the central twin answers (no fault open here)
    assert admin.post("/api/v1/sites", json={"id": "raw-fed", **SITE}).status_code == 201
    r = admin.post("/api/v1/sites/raw-fed/state/accept")
    assert r.json() == {"site": "raw-fed", "accepted": False, "where": "service"}
    # a state must name the site of the path
    other = admin.put("/api/v1/sites/other/state", json=state.model_dump(mode="json"))
    assert other.status_code == 422  # the body names agent-fed, the path another site
    publisher.close()
