"""Sites, workflows and data project plans over real HTTP (local mode, SQLite file)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from fastapi import FastAPI
from sqlalchemy import func, select

from federation.api import create_app
from federation.api.tables import MadppRow, SiteRow, WorkflowRow
from federation.model import load_demo_federation
from federation.settings import Settings
from orchestrator.loaders import load_workflow
from tests.conftest import shared_path
from tests.federation_api.conftest import LiveServer, store_of

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = REPO / "examples" / "workflows"

MINIMAL_DMP: dict[str, Any] = {
    "dmp": {
        "title": "DDF imaging of one LOFAR field",
        "contact": {
            "contact_id": {"identifier": "0000-0002-1825-0097", "type": "orcid"},
            "mbox": "pi@example.org",
            "name": "A. Researcher",
        },
        "created": "2026-01-10T10:00:00Z",
        "modified": "2026-01-10T10:00:00Z",
        "dmp_id": {"identifier": "https://example.org/dmp/1", "type": "url"},
        "ethical_issues_exist": "no",
        "language": "eng",
        "dataset": [
            {
                "dataset_id": {"identifier": "raw-ms", "type": "other"},
                "title": "Raw measurement sets",
                "personal_data": "no",
                "sensitive_data": "no",
            }
        ],
    }
}


def _site(**changes: Any) -> dict[str, Any]:
    site = load_demo_federation().site("gpu-centre").model_dump(mode="json")
    site.update({"id": "new-site", **changes})
    return site


def _count(app: FastAPI, table: Any) -> int:
    with store_of(app).session() as s:
        return int(s.scalar(select(func.count()).select_from(table)) or 0)


# -- sites -------------------------------------------------------------------------------


def test_register_get_update_list_sites(admin: httpx.Client) -> None:
    r = admin.post("/api/v1/sites", json=_site())
    assert r.status_code == 201, r.text
    assert admin.post("/api/v1/sites", json=_site()).status_code == 409
    r = admin.put("/api/v1/sites/new-site", json=_site(cores=999, memory="1 TB"))
    assert r.status_code == 200, r.text
    got = admin.get("/api/v1/sites/new-site").json()
    assert got["cores"] == 999
    assert got["memory"] == 1e12
    assert [s["id"] for s in admin.get("/api/v1/sites").json()] == ["new-site"]
    assert admin.get("/api/v1/sites/nope").status_code == 404
    assert admin.put("/api/v1/sites/nope", json=_site(id="nope")).status_code == 404


def test_sites_survive_a_restart(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    first = create_app(settings)
    with LiveServer(first) as server, server.client(first.state.local_token) as c:
        assert c.post("/api/v1/sites", json=_site()).status_code == 201
    store_of(first).close()
    second = create_app(settings)
    assert second.state.local_token != first.state.local_token
    with LiveServer(second) as server, server.client(second.state.local_token) as c:
        assert [s["id"] for s in c.get("/api/v1/sites").json()] == ["new-site"]
        with server.client(first.state.local_token) as stale:
            assert stale.get("/api/v1/sites").status_code == 401
    store_of(second).close()


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        (_site(colour="blue"), "body.colour"),
        (_site(cores="many"), "body.cores"),
        (_site(cores=-4), "body.cores"),
        (_site(memory="12 parsecs"), "body.memory"),
        (_site(power_idle_w=50.0, power_busy_w=10.0), "body"),
        ({k: v for k, v in _site().items() if k != "kind"}, "body.kind"),
    ],
)
def test_bad_sites_are_422_with_the_field_path_and_nothing_is_stored(
    admin: httpx.Client, local_app: FastAPI, body: dict[str, Any], loc: str
) -> None:
    r = admin.post("/api/v1/sites", json=body)
    assert r.status_code == 422, r.text
    payload = r.json()
    assert payload["error"] == "invalid_input"
    assert loc in [d["loc"] for d in payload["detail"]]
    assert _count(local_app, SiteRow) == 0


def test_update_with_another_id_is_422(admin: httpx.Client) -> None:
    admin.post("/api/v1/sites", json=_site())
    r = admin.put("/api/v1/sites/new-site", json=_site(id="other"))
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == "body.id"


def test_oversized_bodies_are_413_and_nothing_is_stored(
    admin: httpx.Client, local_app: FastAPI
) -> None:
    big = _site(labels={f"k{i}": "x" * 100 for i in range(3000)})  # about 330 kB > 256 kiB
    r = admin.post("/api/v1/sites", json=big)
    assert r.status_code == 413
    assert r.json()["error"] == "payload_too_large"

    def chunks() -> Any:  # no Content-Length: the limit is counted as the body streams
        data = json.dumps(big).encode()
        for i in range(0, len(data), 16384):
            yield data[i : i + 16384]

    r = admin.post("/api/v1/sites", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert _count(local_app, SiteRow) == 0
    assert admin.post("/api/v1/sites", json=_site()).status_code == 201  # still serving


def test_malformed_json_is_422(admin: httpx.Client) -> None:
    r = admin.post(
        "/api/v1/sites", content=b'{"id": "x",', headers={"content-type": "application/json"}
    )
    assert r.status_code == 422


# -- workflows ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "fmt"),
    [("ddf-pipeline.yaml", "native"), ("montage-chameleon-2mass-005d-001.json", "wfformat")],
)
def test_submit_and_read_workflows(admin: httpx.Client, name: str, fmt: str) -> None:
    path = WORKFLOWS / name
    doc = (
        yaml.safe_load(path.read_text()) if path.suffix == ".yaml" else json.loads(path.read_text())
    )
    expected = load_workflow(path).summary()
    r = admin.post("/api/v1/projects/demo/workflows", json={"workflow": doc})
    assert r.status_code == 201, r.text
    info = r.json()
    assert info["format"] == fmt
    assert info["project"] == "demo"
    assert info["summary"]["tasks"] == expected["tasks"]
    assert info["summary"]["edges"] == expected["edges"]
    assert info["summary"]["total_work_s"] == pytest.approx(expected["total_work_s"])
    assert admin.get(f"/api/v1/workflows/{info['id']}").json() == info
    assert admin.get(f"/api/v1/workflows/{info['id']}/document").json() == doc
    assert [w["id"] for w in admin.get("/api/v1/projects/demo/workflows").json()] == [info["id"]]
    assert admin.get("/api/v1/projects/other/workflows").json() == []


def test_invalid_workflows_are_422_with_paths_and_nothing_is_stored(
    admin: httpx.Client, local_app: FastAPI
) -> None:
    doc = yaml.safe_load((WORKFLOWS / "ddf-pipeline.yaml").read_text())
    bad = copy.deepcopy(doc)
    bad["steps"][1]["cores"] = "lots"
    r = admin.post("/api/v1/projects/demo/workflows", json={"workflow": bad})
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == "body.workflow.steps[1].cores"
    cyclic = copy.deepcopy(doc)
    cyclic["steps"][0]["after"] = [cyclic["steps"][-1]["id"]]
    assert (
        admin.post("/api/v1/projects/demo/workflows", json={"workflow": cyclic}).status_code == 422
    )
    r = admin.post("/api/v1/projects/demo/workflows", json={"workflow": {"tasks": []}})
    assert r.status_code == 422
    r = admin.post("/api/v1/projects/demo/workflows", json={"workflow": doc, "priority": 3})
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == "body.priority"
    assert _count(local_app, WorkflowRow) == 0


def test_a_workflow_names_a_plan_of_its_own_project(admin: httpx.Client) -> None:
    plan = admin.post("/api/v1/projects/demo/madpp", json=MINIMAL_DMP).json()["id"]
    doc = yaml.safe_load((WORKFLOWS / "ddf-pipeline.yaml").read_text())
    r = admin.post("/api/v1/projects/other/workflows", json={"workflow": doc, "madpp_id": plan})
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == "body.madpp_id"
    r = admin.post("/api/v1/projects/demo/workflows", json={"workflow": doc, "madpp_id": plan})
    assert r.status_code == 201
    assert r.json()["madpp_id"] == plan


def test_unknown_workflow_ids_are_404(admin: httpx.Client) -> None:
    r = admin.get("/api/v1/workflows/00000000-0000-0000-0000-000000000000")
    assert r.status_code == 404
    assert admin.get("/api/v1/workflows/not-a-uuid").status_code == 422


# -- data project plans ------------------------------------------------------------------


def test_submit_validate_get_and_replace_a_plan(admin: httpx.Client) -> None:
    r = admin.post("/api/v1/projects/demo/madpp", json=MINIMAL_DMP)
    assert r.status_code == 201, r.text
    info = r.json()
    assert info["datasets"] == 1
    assert info["title"] == "DDF imaging of one LOFAR field"
    got = admin.get(f"/api/v1/madpp/{info['id']}").json()
    assert got["document"] == MINIMAL_DMP
    updated = copy.deepcopy(MINIMAL_DMP)
    updated["dmp"]["dataset"].append({**updated["dmp"]["dataset"][0], "title": "Images"})
    r = admin.put(f"/api/v1/madpp/{info['id']}", json=updated)
    assert r.status_code == 200
    assert r.json()["datasets"] == 2
    assert [p["datasets"] for p in admin.get("/api/v1/projects/demo/madpp").json()] == [2]
    v = admin.post("/api/v1/madpp/validate", json=MINIMAL_DMP).json()
    assert v == {"valid": True, "problems": []}


def test_invalid_plans_are_422_with_json_paths_and_nothing_is_stored(
    admin: httpx.Client, local_app: FastAPI
) -> None:
    bad = copy.deepcopy(MINIMAL_DMP)
    del bad["dmp"]["dataset"][0]["title"]
    bad["dmp"]["ethical_issues_exist"] = "perhaps"
    r = admin.post("/api/v1/projects/demo/madpp", json=bad)
    assert r.status_code == 422
    locs = [d["loc"] for d in r.json()["detail"]]
    assert "body.dmp.dataset[0]" in locs
    assert "body.dmp.ethical_issues_exist" in locs
    v = admin.post("/api/v1/madpp/validate", json=bad).json()
    assert not v["valid"]
    assert {p["loc"] for p in v["problems"]} == {"dmp.dataset[0]", "dmp.ethical_issues_exist"}
    assert _count(local_app, MadppRow) == 0


def test_real_madmp_examples_are_accepted(admin: httpx.Client) -> None:
    doc = json.loads(shared_path("madmp", "ex9-dmp-long.json").read_text())
    r = admin.post("/api/v1/projects/demo/madpp", json=doc)
    assert r.status_code == 201, r.text
    assert r.json()["datasets"] == len(doc["dmp"]["dataset"])


# -- health and metrics ------------------------------------------------------------------


def test_health_and_metrics(local_server: LiveServer, admin: httpx.Client) -> None:
    with local_server.client() as anonymous:
        assert anonymous.get("/health").json() == {"status": "ok", "mode": "local", "store": "ok"}
        admin.post("/api/v1/sites", json=_site())
        admin.get("/api/v1/sites/new-site")
        anonymous.get("/api/v1/sites")
    r = admin.get("/metrics")
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = r.text
    assert (
        'continuum_http_requests_total{method="POST",route="/api/v1/sites",status="201"} 1' in text
    )
    assert 'route="/api/v1/sites/{site_id}"' in text  # templates, never raw paths
    assert "continuum_auth_failures_total 1" in text
    assert "continuum_sites 1" in text
    assert 'continuum_http_request_duration_seconds_bucket{le="+Inf",method="GET"' in text


def test_metrics_need_a_token_by_default_and_openapi_declares_bearer(tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path))
    schemes = app.openapi()["components"]["securitySchemes"]
    assert {s["scheme"] for s in schemes.values()} == {"bearer"}
    with LiveServer(app) as server:
        with server.client() as anonymous:
            r = anonymous.get("/metrics")
            assert r.status_code == 401
            assert r.headers["www-authenticate"].startswith("Bearer")
        with server.client(app.state.local_token) as c:
            assert c.get("/metrics").status_code == 200
    store_of(app).close()


def test_a_workflow_may_bring_its_plan_along(admin: httpx.Client, local_app: FastAPI) -> None:
    doc = yaml.safe_load((WORKFLOWS / "ddf-pipeline.yaml").read_text())
    bad_plan = copy.deepcopy(MINIMAL_DMP)
    bad_plan["dmp"]["language"] = 42
    r = admin.post("/api/v1/projects/demo/workflows", json={"workflow": doc, "madpp": bad_plan})
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == "body.madpp.dmp.language"
    assert _count(local_app, MadppRow) == 0
    assert _count(local_app, WorkflowRow) == 0
    both = {
        "workflow": doc,
        "madpp": MINIMAL_DMP,
        "madpp_id": "0" * 8 + "-0000-0000-0000-" + "0" * 12,
    }
    assert admin.post("/api/v1/projects/demo/workflows", json=both).status_code == 422
    r = admin.post("/api/v1/projects/demo/workflows", json={"workflow": doc, "madpp": MINIMAL_DMP})
    assert r.status_code == 201, r.text
    plans = admin.get("/api/v1/projects/demo/madpp").json()
    assert [p["id"] for p in plans] == [r.json()["madpp_id"]]


def test_lists_are_paged_oldest_first(admin: httpx.Client) -> None:
    ids = [admin.post("/api/v1/projects/demo/madpp", json=MINIMAL_DMP).json()["id"] for _ in "abc"]
    assert [p["id"] for p in admin.get("/api/v1/projects/demo/madpp").json()] == ids
    page = admin.get("/api/v1/projects/demo/madpp", params={"limit": 2}).json()
    assert [p["id"] for p in page] == ids[:2]
    page = admin.get("/api/v1/projects/demo/madpp", params={"limit": 2, "offset": 2}).json()
    assert [p["id"] for p in page] == ids[2:]
    r = admin.get("/api/v1/projects/demo/workflows", params={"limit": 0})
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == "query.limit"
