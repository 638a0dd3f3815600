"""The dashboard's server side: its files and login settings, the API docs without a CDN,
and the public routes the dashboard relies on (plans of a project, explanations, step times).

The page itself is driven in a real browser by ``test_dashboard_browser.py``.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import httpx
import pytest
import yaml
from fastapi import FastAPI

from federation.api.dashboard import STATIC
from federation.settings import Settings
from tests.conftest import REPO
from tests.federation_api.conftest import LiveServer

QUICKSTART = REPO / "examples" / "quickstart"


def test_the_page_and_its_files_are_served_with_a_strict_policy(
    local_server: LiveServer,
) -> None:
    with httpx.Client(base_url=local_server.url, timeout=30) as c:
        page = c.get("/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        csp = page.headers["content-security-policy"]
        assert "script-src 'self'" in csp
        assert "connect-src 'self'" in csp
        assert "frame-ancestors 'none'" in csp
        # every script and stylesheet the page names is served from here
        refs = re.findall(r'(?:src|href)="(/[^"]+)"', page.text)
        assert "/ui/static/js/app.js" in refs
        for ref in refs:
            got = c.get(ref)
            assert got.status_code == 200, ref
        for module in (STATIC / "js").glob("*.js"):
            js = c.get(f"/ui/static/js/{module.name}")
            assert js.status_code == 200
            assert "javascript" in js.headers["content-type"]
            # the modules import each other only, by relative path
            for target in re.findall(r'from "([^"]+)"', js.text):
                assert target.startswith("./"), (module.name, target)
                assert (STATIC / "js" / target[2:]).exists()


def test_login_settings_are_public_and_hold_no_secret(
    local_server: LiveServer, tmp_path: Path
) -> None:
    with httpx.Client(base_url=local_server.url, timeout=30) as c:
        cfg = c.get("/ui/config.json").json()
    assert cfg["mode"] == "local"
    assert cfg["api"] == "/api/v1"
    assert "keycloak" not in cfg

    from federation.api.dashboard import content_security_policy, login_settings

    kc = Settings(
        data_dir=tmp_path,
        keycloak_url="https://sso.example.org/",
        keycloak_client_secret="very-secret-value",
        dashboard_client_id="my-dashboard",
    )
    out = login_settings(kc)
    assert out["mode"] == "keycloak"
    assert out["keycloak"] == {
        "issuer": "https://sso.example.org/realms/continuum",
        "client_id": "my-dashboard",
        "scope": "openid",
    }
    assert "very-secret-value" not in repr(out)
    assert "connect-src 'self' https://sso.example.org;" in content_security_policy(kc)


@pytest.mark.parametrize(
    ("page", "asset"), [("/docs", "swagger-ui-bundle.js"), ("/redoc", "redoc")]
)
def test_api_docs_load_their_scripts_from_the_package(
    local_server: LiveServer, page: str, asset: str
) -> None:
    with httpx.Client(base_url=local_server.url, timeout=30) as c:
        html = c.get(page)
        assert html.status_code == 200
        urls = re.findall(r'(?:src|href)=["\']([^"\']+)["\']', html.text)
        assert urls
        assert not [u for u in urls if u.startswith(("http:", "https:", "//"))], urls
        assert "fonts.googleapis" not in html.text
        scripts = [u for u in urls if asset in u]
        assert scripts, urls
        for url in urls:
            got = c.get(url)
            assert got.status_code == 200, url
            assert len(got.content) > (1000 if url.endswith((".js", ".css")) else 100), url
        assert c.get("/docs/oauth2-redirect").status_code == 200


def test_the_dashboard_files_are_in_the_package_data() -> None:
    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    globs = data["tool"]["setuptools"]["package-data"]["federation"]
    assert "api/dashboard/static/**/*" in globs
    files = [p for p in STATIC.rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"index.html", "app.css", "app.js", "js-yaml.min.js"}


def test_plans_are_listed_per_project_with_categories_explanations_and_step_times(
    admin: httpx.Client, local_app: FastAPI
) -> None:
    fed = yaml.safe_load((QUICKSTART / "federation.yaml").read_text())
    assert admin.put("/api/v1/federation", json=fed).status_code == 200
    doc = yaml.safe_load((QUICKSTART / "workflow.yaml").read_text())
    doc["steps"][0]["category"] = "cleaning"
    wf = admin.post("/api/v1/projects/outreach/workflows", json={"workflow": doc}).json()
    assert admin.get("/api/v1/projects/outreach/plans").json() == []
    made = []
    for planner in ("heft", "greedy"):
        r = admin.post(
            "/api/v1/projects/outreach/plans", json={"workflow_id": wf["id"], "planner": planner}
        )
        assert r.status_code == 201, r.text
        made.append(r.json())
    listed = admin.get("/api/v1/projects/outreach/plans").json()
    assert [p["id"] for p in listed] == [p["id"] for p in made]  # oldest first
    assert (
        admin.get("/api/v1/projects/outreach/plans?limit=1&offset=1").json()[0]["id"]
        == (made[1]["id"])
    )
    assert admin.get("/api/v1/projects/survey/plans").json() == []
    by_step = {a["step"]: a for a in made[0]["assignments"]}
    assert by_step["clean"]["category"] == "cleaning"
    assert by_step["bright"]["category"] == ""
    assert all(a["why"] for a in made[0]["assignments"])  # HEFT says why it chose each site
    assert isinstance(made[0]["metrics"]["transfers"], list)


def test_the_realm_export_ships_the_dashboards_public_client() -> None:
    from federation.api.bootstrap import realm_export

    settings = Settings()
    (client,) = [
        c for c in realm_export()["clients"] if c["clientId"] == settings.dashboard_client_id
    ]
    assert client["publicClient"] is True
    assert client["standardFlowEnabled"] is True
    assert client["implicitFlowEnabled"] is False
    assert client["attributes"]["pkce.code.challenge.method"] == "S256"
