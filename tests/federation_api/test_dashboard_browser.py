"""The dashboard in a real browser: Debian's chromium, headless, driven by Playwright.

A person's path, with real processes: ``continuum serve`` and ``continuum site-agent``; the
page logs in (the local token, or Keycloak's authorization code flow with PKCE against a
real OpenID provider), submits the quick-start workflow with its data project plan,
compares the planners, previews a plan, is refused an approval over budget, approves
within it, runs it, follows a step's log while the step runs, watches the run to its end
and reads the logs, then launches a what-if simulation. Every request the page makes is
checked against the published OpenAPI document: the dashboard uses the public API only.

Screenshots of every stage are test artefacts, written to ``test-artifacts/browser/``
(``CONTINUUM_TEST_ARTIFACTS`` elsewhere). ``make test`` installs the browser when it is
missing (root with apt-get); without it these tests skip, saying why, except under
``CI=true`` where they fail.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import yaml

from tests.conftest import REPO
from tests.federation_api.conftest import REALM, new_key, start_provider
from tests.federation_api.test_end_to_end import TOKEN, Service, free_port, start_agent

QUICKSTART = REPO / "examples" / "quickstart"
ARTIFACTS = Path(os.environ.get("CONTINUUM_TEST_ARTIFACTS", REPO / "test-artifacts")) / "browser"
CHROMIUM_FLAGS = [
    "--no-sandbox",  # root in a container: chromium's sandbox needs user namespaces
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",  # no calls home on a closed network
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SLOW_STEP = 'for i in 1 2 3 4 5 6; do echo "tick $i"; sleep 1; done'


def chromium_path() -> str | None:
    """The system browser: ``CONTINUUM_CHROMIUM``, else Debian's chromium."""
    for candidate in (os.environ.get("CONTINUUM_CHROMIUM"), "/usr/bin/chromium"):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _missing(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: a browser test may not skip)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = chromium_path()
    if executable is None:
        _missing("no chromium here: `make test` installs Debian's chromium when run as root")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("the playwright package is missing: `make .venv-dev` installs it")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
        try:
            yield b
        finally:
            b.close()


class Page:
    """A browser tab that saves numbered screenshots and records the requests it sends."""

    def __init__(self, browser: Any, name: str, base: str) -> None:
        self.context = browser.new_context(viewport={"width": 1400, "height": 1000})
        self.page = self.context.new_page()
        self.page.set_default_timeout(60_000)
        self.base = base
        self.folder = ARTIFACTS / name
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True)
        self.shots = 0
        self.requests: list[tuple[str, str]] = []
        self.errors: list[str] = []
        self.page.on("request", lambda r: self.requests.append((r.method, r.url)))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))

    def shot(self, what: str) -> Path:
        self.shots += 1
        path = self.folder / f"{self.shots:02d}-{what}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def close(self) -> None:
        self.context.close()


def api_only(requests: list[tuple[str, str]], base: str, openapi: dict[str, Any]) -> list[str]:
    """The requests to ``base`` that are neither the page's own files nor a published route."""
    templates = [
        (re.compile("^" + re.sub(r"\{[^/]+\}", "[^/]+", path) + "$"), set(ops))
        for path, ops in openapi["paths"].items()
    ]
    wrong = []
    for method, url in requests:
        parts = urlsplit(url)
        if f"{parts.scheme}://{parts.netloc}" != base:
            continue
        path = parts.path
        if path == "/" or path.startswith("/ui/"):
            if method != "GET":
                wrong.append(f"{method} {path}")
            continue
        if not any(rx.match(path) and method.lower() in ops for rx, ops in templates):
            wrong.append(f"{method} {path}")
    return wrong


def slow_workflow() -> dict[str, Any]:
    return {
        "name": "ticker",
        "data": [{"id": "ticks", "size": 100}],
        "steps": [
            {
                "id": "tick",
                "work": 6,
                "outputs": ["ticks"],
                "command": f'{SLOW_STEP} | tee "$CONTINUUM_OUT/ticks"',
            },
            {
                "id": "count",
                "work": 1,
                "inputs": ["ticks"],
                "command": 'wc -l < "$CONTINUUM_IN/ticks"',
            },
        ],
    }


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Service]:
    """``continuum serve`` with the quick-start federation and an agent at each of its sites."""
    (tmp_path / "service").mkdir()
    service = Service(tmp_path / "service", free_port())
    service.start()
    agents: list[subprocess.Popen[bytes]] = []
    try:
        fed = yaml.safe_load((QUICKSTART / "federation.yaml").read_text())
        with service.client() as c:
            assert c.put("/api/v1/federation", json=fed).status_code == 200
        agents = [
            start_agent(s, service.url, tmp_path, QUICKSTART / "data")
            for s in ("fr-hpc", "fr-edge", "de-cloud")
        ]
        yield service
    finally:
        for a in agents:
            a.terminate()
        for a in agents:
            a.wait(timeout=60)
        service.stop()


def test_a_researcher_runs_the_quick_start_from_the_dashboard(
    browser: Any, served: Service, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    tab = Page(browser, "local-token", served.url)
    page = tab.page
    try:
        page.goto(f"{served.url}/")
        page.fill("#token", "not-the-token")
        page.click("#login-local")
        expect(page.locator("#flash")).to_contain_text("not the service's")
        page.fill("#token", TOKEN)
        page.click("#login-local")
        expect(page.locator("#sites table tbody tr")).to_have_count(3)
        expect(page.locator("#identity")).to_contain_text("local-admin")
        expect(page.locator("#links tbody tr")).to_have_count(6)
        tab.shot("federation")

        # submit the quick start (YAML workflow, JSON maDMP) to the survey project
        page.select_option("#project", "survey")
        page.click("#nav >> text=Workflows")
        page.set_input_files("input[name=workflow]", str(QUICKSTART / "workflow.yaml"))
        page.set_input_files("input[name=madpp]", str(QUICKSTART / "data-plan.json"))
        tab.shot("workflow-chosen")
        page.click("#submit-workflow button[type=submit]")
        expect(page.locator("#plan-form")).to_be_visible()
        expect(page.locator("h1")).to_contain_text("sky-survey")

        # every planner on the same inputs, then a preview with the ILP
        page.click("#compare-planners")
        expect(page.locator("#compare tbody tr")).to_have_count(4, timeout=120_000)
        expect(page.locator("#compare")).to_contain_text("optimal")
        tab.shot("planners-compared")
        page.click("#plan-form button[type=submit]")
        expect(page.locator("#plan-gantt g.bar")).to_have_count(5, timeout=120_000)
        # FR only (the data plan) and the project's sites: every step on fr-hpc, with its why
        expect(page.locator("#explanations li strong")).to_have_count(5)
        for item in page.locator("#explanations li:has(strong)").all_inner_texts():
            assert "→ fr-hpc" in item, item
        expect(page.locator("#plan-metrics")).to_contain_text("EUR")
        tab.shot("plan-preview")

        # the budget is checked; then approved within it, and run
        page.fill("#budget", "0.0000001")
        page.click("#approve button")
        expect(page.locator("#flash")).to_contain_text("over the budget")
        tab.shot("approval-refused")
        page.fill("#budget", "1")
        page.click("#approve button")
        expect(page.locator("h1 .badge")).to_have_text("approved")
        page.click("#run button")
        expect(page.locator("#run-gantt svg")).to_be_visible()
        tab.shot("run-started")
        expect(page.locator("#run-state .badge")).to_have_text("done", timeout=240_000)
        expect(page.locator("#progress-text")).to_have_text("5 / 5 steps done")
        page.click("#steps tr[data-step=report]")
        expect(page.locator("#log")).to_contain_text("bright sources: 19")
        expect(page.locator("#log")).to_contain_text("faint sources: 21")
        tab.shot("run-done-with-logs")

        # a step's log read while the step runs
        with served.client() as c:
            wf = c.post(
                "/api/v1/projects/outreach/workflows", json={"workflow": slow_workflow()}
            ).json()
        page.select_option("#project", "outreach")
        page.goto(f"{served.url}/#/plan?workflow={wf['id']}")
        page.select_option("select[name=planner]", "heft")
        page.click("#plan-form button[type=submit]")
        page.fill("#budget", "1")
        page.click("#approve button")
        expect(page.locator("h1 .badge")).to_have_text("approved")
        page.click("#run button")
        tick = page.locator("#steps tr[data-step=tick]")
        expect(tick.locator(".badge")).to_have_text("running", timeout=120_000)
        tick.click()
        expect(page.locator("#log")).to_contain_text("tick 2", timeout=30_000)
        live = page.locator("#steps tr[data-step=tick] .badge").inner_text()
        assert live == "running", "the log arrived only after the step ended"
        tab.shot("log-followed-live")
        expect(page.locator("#log")).to_contain_text("tick 6", timeout=60_000)
        expect(page.locator("#run-state .badge")).to_have_text("done", timeout=120_000)
        tab.shot("slow-run-done")

        # a what-if simulation with its plots
        page.click("#nav >> text=Simulations")
        page.click("#launch-simulation button")
        expect(page.locator("#sim-charts svg").first).to_be_visible(timeout=300_000)
        expect(page.locator("h1 .badge")).to_have_text("done")
        tab.shot("simulation")

        page.click("#nav >> text=Plans")
        expect(page.locator("#plans tbody tr")).to_have_count(1)
        tab.shot("plans")
        with served.client() as c:
            openapi = c.get("/openapi.json").json()
        assert not api_only(tab.requests, served.url, openapi), api_only(
            tab.requests, served.url, openapi
        )
        assert any(u.endswith("/logs?follow=true&stream=stdout") for _, u in tab.requests)
        assert not tab.errors, tab.errors
    except Exception:
        tab.shot("failure")
        raise
    finally:
        tab.close()


def test_a_person_logs_in_with_keycloak_pkce(browser: Any, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    provider = start_provider(
        tmp_path,
        [new_key("browser-key")],
        public_clients=[{"client_id": "continuum-dashboard", "redirect_uris": [f"{url}/"]}],
        users={"alice": {"realm_access": {"roles": ["researcher:survey"]}}},
    )
    data = tmp_path / "service"
    data.mkdir()
    env = {
        **os.environ,
        "CONTINUUM_KEYCLOAK_URL": provider.server_url,
        "CONTINUUM_KEYCLOAK_REALM": REALM,
        "CONTINUUM_KEYCLOAK_CLIENT_ID": "continuum-api",
        "CONTINUUM_DASHBOARD_CLIENT_ID": "continuum-dashboard",
    }
    log = (data / "service.log").open("ab")
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "federation.cli", "serve", "--port", str(port),
            "--data-dir", str(data), "--federation", str(QUICKSTART / "federation.yaml"),
            "--log-level", "warning",
        ],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=log,
    )  # fmt: skip
    tab = Page(browser, "keycloak-pkce", url)
    page = tab.page
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, (data / "service.log").read_text()[-3000:]
            try:
                if httpx.get(f"{url}/health", timeout=2).is_success:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "continuum serve did not start"
            time.sleep(0.1)
        assert httpx.get(f"{url}/ui/config.json").json()["keycloak"]["client_id"] == (
            "continuum-dashboard"
        )
        page.goto(f"{url}/#/workflows")
        tab.shot("login-page")
        page.click("#login-keycloak")
        page.wait_for_url(re.compile(rf"^{re.escape(provider.server_url)}"))
        page.fill("input[name=login]", "alice")
        page.fill("input[name=password]", "any password")
        tab.shot("realm-login-form")
        page.click("button[type=submit]")
        page.wait_for_url(re.compile(rf"^{re.escape(url)}/#/workflows$"))
        expect(page.locator("#identity")).to_contain_text("alice (researcher)")
        # the token's roles decide what the API shows: alice is a researcher of survey only
        expect(page.locator("#project option")).to_have_count(1)
        expect(page.locator("#project")).to_have_value("survey")
        expect(page.locator("h1")).to_have_text("Workflows of survey")
        tab.shot("logged-in")
        token_requests = [u for m, u in tab.requests if m == "POST" and "/token" in u]
        assert token_requests, "the code was not exchanged at the realm's token endpoint"
        auth = [u for _, u in tab.requests if "/protocol/openid-connect/auth?" in u]
        assert auth
        assert "code_challenge_method=S256" in auth[0]
        assert "code_challenge=" in auth[0]
        # the code went only to the realm: the service saw no code and no verifier
        served_log = (data / "service.log").read_text()
        assert "code_verifier" not in served_log
        page.click("#logout")
        expect(page.locator("#login-keycloak")).to_be_visible()
        assert not tab.errors, tab.errors
    except Exception:
        tab.shot("failure")
        raise
    finally:
        tab.close()
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        provider.stop()


def test_artifacts_folder_is_ignored_by_git() -> None:
    ignore = (REPO / ".gitignore").read_text().splitlines()
    assert "/test-artifacts/" in ignore
