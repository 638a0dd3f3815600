"""AAI end to end: a real OpenID provider at Keycloak's paths, python-keycloak, uvicorn, httpx.

Tokens come from the provider through ``KeycloakOpenID.token(grant_type=
"client_credentials")``; tokens with wrong claims are signed with the
provider's own key (so only the claim under test is wrong) or a key it does
not publish.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi import FastAPI

from federation.api import KeycloakVerifier, create_app
from orchestrator.execution.buffers import free_port
from tests.federation_api.conftest import (
    LiveServer,
    Provider,
    keycloak_settings,
    new_key,
    start_provider,
)

SITE = {
    "id": "test-hpc",
    "kind": "hpc",
    "cores": 64,
    "memory": "256 GB",
    "power_idle_w": 2.0,
    "power_busy_w": 8.0,
    "price_per_core_hour": 0.02,
    "jurisdiction": "FR",
    "buffer_capacity": "1 TB",
}


@pytest.fixture(scope="module")
def kc_app(provider: Provider, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastAPI]:
    app = create_app(keycloak_settings(provider, tmp_path_factory.mktemp("kc-api")))
    yield app
    app.state.ctx.store.close()


@pytest.fixture(scope="module")
def kc_server(kc_app: FastAPI) -> Iterator[LiveServer]:
    with LiveServer(kc_app) as server:
        yield server


@pytest.fixture(scope="module")
def tokens(provider: Provider) -> dict[str, str]:
    names = ("admin-client", "operator-client", "researcher-a", "researcher-b")
    return {n: provider.token(n) for n in (*names, "auditor-client", "nobody-client")}


def _status(server: LiveServer, token: str | None, method: str, path: str, **kw: Any) -> int:
    with server.client(token) as c:
        return c.request(method, path, **kw).status_code


def test_tokens_from_the_provider_carry_keycloak_claims(
    provider: Provider, tokens: dict[str, str]
) -> None:
    claims = provider.openid("researcher-b").decode_token(tokens["researcher-b"])
    assert claims["iss"] == provider.issuer
    assert claims["aud"] == "continuum-api"
    assert claims["azp"] == "researcher-b"
    assert claims["resource_access"]["continuum-api"]["roles"] == ["researcher:proj-b"]


def test_admin_registers_a_site_and_members_list_it(
    kc_server: LiveServer, tokens: dict[str, str]
) -> None:
    with kc_server.client(tokens["admin-client"]) as c:
        r = c.post("/api/v1/sites", json=SITE)
        assert r.status_code == 201, r.text
        assert r.json()["memory"] == 256e9
    for who in ("operator-client", "researcher-a", "auditor-client"):
        with kc_server.client(tokens[who]) as c:
            r = c.get("/api/v1/sites")
            assert r.status_code == 200
            assert "test-hpc" in [s["id"] for s in r.json()]


@pytest.mark.parametrize("who", ["operator-client", "researcher-a", "auditor-client"])
def test_registering_a_site_needs_the_admin_role(
    kc_server: LiveServer, tokens: dict[str, str], who: str
) -> None:
    body = {**SITE, "id": f"by-{who}"}
    r_status = _status(kc_server, tokens[who], "POST", "/api/v1/sites", json=body)
    assert r_status == 403
    with kc_server.client(tokens["admin-client"]) as c:
        assert c.get(f"/api/v1/sites/by-{who}").status_code == 404


def test_a_token_without_federation_roles_is_403(
    kc_server: LiveServer, tokens: dict[str, str]
) -> None:
    assert _status(kc_server, tokens["nobody-client"], "GET", "/api/v1/sites") == 403


def test_roles_of_another_client_are_ignored(kc_server: LiveServer, tokens: dict[str, str]) -> None:
    # researcher-b holds federation-admin and researcher:proj-a on "other-app" only
    assert _status(kc_server, tokens["researcher-b"], "POST", "/api/v1/sites", json=SITE) == 403
    assert _status(kc_server, tokens["researcher-b"], "GET", "/api/v1/projects/proj-a/madpp") == 404


def _tamper(token: str) -> str:
    head, payload, sig = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["realm_access"] = {"roles": ["federation-admin"]}
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{head}.{forged}.{sig}"


def test_bad_tokens_are_401(
    kc_server: LiveServer, provider: Provider, tokens: dict[str, str]
) -> None:
    now = int(time.time())
    admin_claims = {"realm_access": {"roles": ["federation-admin"]}}
    bad = {
        "tampered": _tamper(tokens["researcher-a"]),
        "expired": provider.sign({**admin_claims, "iat": now - 900, "exp": now - 600}),
        "not yet valid": provider.sign({**admin_claims, "nbf": now + 600}),
        "wrong issuer": provider.sign({**admin_claims, "iss": "http://127.0.0.1:9/realms/other"}),
        "wrong audience (forged)": provider.sign({**admin_claims, "aud": "some-other-api"}),
        "wrong audience (provider)": provider.token("other-audience"),
        "no expiry": provider.sign({**admin_claims, "exp": None}),
        "an ID token": provider.sign({**admin_claims, "typ": "ID"}),
        "a refresh token": provider.sign({**admin_claims, "typ": "Refresh"}),
        "unknown key": provider.sign(admin_claims, key=new_key("not-published")),
        "garbage": "not-a-jwt",
    }
    for name, token in bad.items():
        with kc_server.client(token) as c:
            r = c.get("/api/v1/sites")
            assert r.status_code == 401, (name, r.text)
            assert r.headers["www-authenticate"].startswith('Bearer error="invalid_token"')
            assert r.json()["error"] == "invalid_token"
    assert _status(kc_server, None, "GET", "/api/v1/sites") == 401
    # the same claims, correctly signed and dated, are accepted: each rejection is the claim's
    assert _status(kc_server, provider.sign(admin_claims), "GET", "/api/v1/sites") == 200
    bearer = provider.sign({**admin_claims, "typ": "Bearer"})
    assert _status(kc_server, bearer, "GET", "/api/v1/sites") == 200


def test_an_unsigned_or_hmac_token_is_401(kc_server: LiveServer, provider: Provider) -> None:
    def b64(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    claims: dict[str, Any] = {"iss": provider.issuer, "aud": "continuum-api"}
    claims["exp"] = int(time.time()) + 300
    claims["realm_access"] = {"roles": ["federation-admin"]}
    unsigned = f"{b64({'alg': 'none', 'kid': 'test-key-1'})}.{b64(claims)}."
    hmac_ = f"{b64({'alg': 'HS256', 'kid': 'test-key-1'})}.{b64(claims)}.c2lnbmF0dXJl"
    for token in (unsigned, hmac_):
        assert _status(kc_server, token, "GET", "/api/v1/sites") == 401


def _workflow_doc() -> dict[str, Any]:
    path = Path(__file__).resolve().parents[2] / "examples" / "workflows" / "ddf-pipeline.yaml"
    doc: dict[str, Any] = yaml.safe_load(path.read_text())
    return doc


def test_projects_are_isolated_404_not_403(kc_server: LiveServer, tokens: dict[str, str]) -> None:
    a, b = tokens["researcher-a"], tokens["researcher-b"]
    with kc_server.client(a) as c:
        r = c.post("/api/v1/projects/proj-a/workflows", json={"workflow": _workflow_doc()})
        assert r.status_code == 201, r.text
        wf_id = r.json()["id"]
        assert r.json()["project"] == "proj-a"
        assert c.get(f"/api/v1/workflows/{wf_id}").status_code == 200
        assert [w["id"] for w in c.get("/api/v1/projects/proj-a/workflows").json()] == [wf_id]
    # researcher of proj-b: proj-a's workflow, list and submission look like nothing is there
    with kc_server.client(b) as c:
        for path in (f"/api/v1/workflows/{wf_id}", "/api/v1/projects/proj-a/workflows"):
            r = c.get(path)
            assert r.status_code == 404, path
            assert r.json()["error"] == "not_found"
        r = c.post("/api/v1/projects/proj-a/workflows", json={"workflow": _workflow_doc()})
        assert r.status_code == 404
        assert c.get("/api/v1/projects/proj-b/workflows").json() == []
    # an operator is no researcher either
    assert _status(kc_server, tokens["operator-client"], "GET", f"/api/v1/workflows/{wf_id}") == 404
    # auditors and admins read everything; auditors write nothing
    for who in ("auditor-client", "admin-client"):
        assert _status(kc_server, tokens[who], "GET", f"/api/v1/workflows/{wf_id}") == 200
    r_status = _status(
        kc_server,
        tokens["auditor-client"],
        "POST",
        "/api/v1/projects/proj-a/workflows",
        json={"workflow": _workflow_doc()},
    )
    assert r_status == 403
    with kc_server.client(a) as c:
        assert len(c.get("/api/v1/projects/proj-a/workflows").json()) == 1


def test_an_unknown_kid_refreshes_the_keys_once(tmp_path: Path) -> None:
    """Key rotation: the realm starts signing with a new key; the API fetches /certs once."""
    old, new = new_key("old-key"), new_key("new-key")
    first = start_provider(tmp_path, [old])
    port = first.port
    app = create_app(keycloak_settings(first, tmp_path / "api", jwks_min_refresh_s=0))
    verifier = app.state.ctx.verifier
    assert isinstance(verifier, KeycloakVerifier)
    try:
        with LiveServer(app) as server:
            assert _status(server, first.token("admin-client"), "GET", "/api/v1/sites") == 200
            assert verifier.refreshes == 1
            assert _status(server, first.token("admin-client"), "GET", "/api/v1/sites") == 200
            assert verifier.refreshes == 1  # cached
            first.stop()
            rotated = start_provider(tmp_path, [new, old], port=port)
            try:
                token = rotated.token("admin-client")
                assert json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))["kid"] == (
                    "new-key"
                )
                assert _status(server, token, "GET", "/api/v1/sites") == 200
                assert verifier.refreshes == 2
                # a kid nobody publishes: one more refresh, then 401
                bogus = rotated.sign({}, key=new_key("bogus"))
                assert _status(server, bogus, "GET", "/api/v1/sites") == 401
                assert verifier.refreshes == 3
            finally:
                rotated.stop()
    finally:
        first.stop()
        app.state.ctx.store.close()


def test_unknown_kids_do_not_refresh_more_than_the_cooldown_allows(
    provider: Provider, tmp_path: Path
) -> None:
    app = create_app(keycloak_settings(provider, tmp_path, jwks_min_refresh_s=3600))
    verifier = app.state.ctx.verifier
    assert isinstance(verifier, KeycloakVerifier)
    try:
        with LiveServer(app) as server:
            assert _status(server, provider.token("admin-client"), "GET", "/api/v1/sites") == 200
            for i in range(3):
                bogus = provider.sign({}, key=new_key(f"bogus-{i}"))
                assert _status(server, bogus, "GET", "/api/v1/sites") == 401
            assert verifier.refreshes == 1
    finally:
        app.state.ctx.store.close()


def test_me_shows_what_the_api_made_of_each_token(
    kc_server: LiveServer, tokens: dict[str, str]
) -> None:
    def me(who: str) -> dict[str, Any]:
        with kc_server.client(tokens[who]) as c:
            r = c.get("/api/v1/me")
            assert r.status_code == 200
            body: dict[str, Any] = r.json()
            return body

    assert me("researcher-a")["projects"] == ["proj-a"]  # from the entitlement
    assert me("researcher-b")["projects"] == ["proj-b"]  # other-app's roles ignored
    assert me("researcher-b")["roles"] == ["researcher"]
    assert me("operator-client")["sites"] == ["ddf-fatnode"]
    assert me("admin-client")["roles"] == ["federation-admin"]
    assert me("nobody-client") == {
        "subject": "nobody-client",
        "client": "nobody-client",
        "roles": [],
        "projects": [],
        "sites": [],
    }
    assert _status(kc_server, None, "GET", "/api/v1/me") == 401


def test_an_unreachable_realm_is_503_not_401(provider: Provider, tmp_path: Path) -> None:
    from federation.settings import Settings

    closed = f"http://127.0.0.1:{free_port()}/"  # nothing listens there
    settings = Settings(data_dir=tmp_path, keycloak_url=closed, keycloak_timeout_s=2)
    app = create_app(settings)
    token = provider.sign({"realm_access": {"roles": ["federation-admin"]}, "iss": settings.issuer})
    try:
        with LiveServer(app) as server, server.client(token) as c:
            for _ in range(3):  # the second and third answer at once, without retrying
                r = c.get("/api/v1/sites")
                assert r.status_code == 503
                assert r.json()["error"] == "identity_provider_unavailable"
                assert r.headers["retry-after"] == "5"
        assert app.state.ctx.verifier.refreshes == 0
    finally:
        app.state.ctx.store.close()
