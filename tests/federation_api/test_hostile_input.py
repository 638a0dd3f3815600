"""The attacks of issue 15 against a running service, each answered by a clear 4xx.

Over real HTTP (uvicorn on loopback): a researcher's scenario reaching for a
file outside the service's folder, non-finite numbers in bodies, tokens with
characters no HTTP header can carry, entitlements from anyone, metrics that
named projects to anonymous callers, and counters that disagreed with what
clients were told.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jwcrypto import jwk  # type: ignore[import-untyped]
from sqlalchemy import func, select

from federation.api import create_app
from federation.api.aai import KeycloakVerifier
from federation.api.errors import IdentityProviderUnavailable, Unauthenticated
from federation.api.tables import SimulationRow, SiteRow, WorkflowRow
from federation.settings import Settings
from tests.federation_api.conftest import AUDIENCE, LiveServer, new_key, store_of
from tests.federation_api.test_orchestration_api import SITE
from tests.federation_api.test_simulations_api import TINY

WORKFLOW = {"name": "w", "steps": [{"id": "a", "cores": 1, "memory": "1 GB", "work": 10.0}]}


def _count(app: FastAPI, table: Any) -> int:
    with store_of(app).session() as s:
        return int(s.scalar(select(func.count()).select_from(table)) or 0)


def _raw(client: httpx.Client, method: str, url: str, body: Any) -> httpx.Response:
    """``body`` as Python's json writes it: ``Infinity``/``NaN`` included (JSON has neither)."""
    text = json.dumps(body)  # allow_nan=True: what a hostile client sends
    return client.request(
        method, url, content=text.encode(), headers={"content-type": "application/json"}
    )


# -- files: one function decides, errors never quote ---------------------------------------


def test_a_scenario_cannot_read_a_file_outside_the_service_folder(
    admin: httpx.Client, local_app: FastAPI
) -> None:
    data_dir = Path(local_app.state.ctx.settings.data_dir)
    secret_value = "SECRET-" + "k" * 40
    secret = data_dir / "buffers" / "secret"  # a buffer service's secret, as in the attack
    secret.parent.mkdir(parents=True, exist_ok=True)
    secret.write_text(secret_value + "\n")
    base = data_dir / "simulation-data"
    base.mkdir(exist_ok=True)
    (base / "link").symlink_to(secret.parent)  # a symlink inside the folder that leads out
    home = Path.home().resolve()
    names = [
        "~/" + os.path.relpath(secret, home),  # expanded by the loader, not by the old check
        "../buffers/secret",
        str(secret),
        "link/secret",
    ]
    places = {
        "series.default.carbon.file": lambda n: {
            "series": {"default": {"carbon": {"file": n, "column": "x"}}}
        },
        "workload.swf.path": lambda n: {"workload": {"swf": {"path": n}}},
        "federation": lambda n: {"federation": n},
        "workload.workflows[0].path": lambda n: {"workload": {"workflows": [{"path": n}]}},
    }
    for name in names:
        for where, make in places.items():
            r = admin.post(
                "/api/v1/projects/p1/simulations", json={"scenario": {**TINY, **make(name)}}
            )
            assert r.status_code == 422, (name, where, r.text)
            assert r.json()["detail"][0]["loc"] == f"body.scenario.{where}"
            assert secret_value not in r.text
            assert str(base) not in r.text  # the folder it may read is not named
    assert _count(local_app, SimulationRow) == 0


# -- numbers -------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan"), "1e400"])
def test_non_finite_numbers_are_422_with_their_path_and_nothing_is_stored(
    admin: httpx.Client, local_app: FastAPI, value: float | str
) -> None:
    def number(body: dict[str, Any], path: str) -> str:
        text = json.dumps(body)
        return text.replace(f'"{path}": 10.0', f'"{path}": {value}') if value == "1e400" else text

    wf = json.loads(json.dumps(WORKFLOW))
    wf["steps"][0]["work"] = value if value != "1e400" else 10.0
    text = number({"workflow": wf}, "work")
    r = admin.post(
        "/api/v1/projects/p1/workflows",
        content=text.encode(),
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"] == "body.workflow.steps[0].work"
    site = {"id": "s1", **SITE, "speed": value if value != "1e400" else 10.0}
    text = number(site, "speed")
    for method, url in (("POST", "/api/v1/sites"), ("PUT", "/api/v1/sites/s1")):
        r = admin.request(
            method, url, content=text.encode(), headers={"content-type": "application/json"}
        )
        assert r.status_code == 422, r.text
        assert r.json()["detail"][0]["loc"] == "body.speed"
    assert _count(local_app, WorkflowRow) == 0
    assert _count(local_app, SiteRow) == 0


def test_numbers_that_only_look_large_are_fine(admin: httpx.Client) -> None:
    wf = json.loads(json.dumps(WORKFLOW))
    wf["name"] = "Infinity-NaN-1e400"  # suspicious text in a string is only checked, not refused
    wf["steps"][0]["work"] = 1e300
    assert _raw(admin, "POST", "/api/v1/projects/p1/workflows", {"workflow": wf}).status_code == 201


# -- tokens --------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unsigned(header: Any, payload: Any = None) -> str:
    h = _b64(json.dumps(header).encode())
    return f"{h}.{_b64(json.dumps(payload or {'sub': 'x'}).encode())}.c2ln"


def _signed(key: jwk.JWK, header: Any, payload: Any) -> str:
    """A compact JWS over any header and payload, really signed by ``key`` (RS256)."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(payload).encode())}"
    private = key.get_op_key("sign")
    sig = private.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{_b64(sig)}"


KEY = new_key("k1")


def _keycloak_app(data_dir: Path) -> FastAPI:
    """Keycloak mode with the realm's keys already known (no provider is contacted)."""
    s = Settings(
        data_dir=data_dir,
        keycloak_url="http://127.0.0.1:9/",
        keycloak_client_id=AUDIENCE,
        jwks_min_refresh_s=3600,
    )
    app = create_app(s)
    app.state.ctx.verifier.use_keys({"keys": [KEY.export_public(as_dict=True)]})
    return app


def test_any_malformed_token_is_401_with_a_header_that_encodes(tmp_path: Path) -> None:
    app = _keycloak_app(tmp_path)
    tokens: list[str | bytes] = [
        _unsigned({"alg": "€", "kid": "k1"}),
        _unsigned({"alg": "RS256", "kid": "€"}),
        _unsigned({"alg": "RS256", "kid": "k\r\nX-Injected: yes"}),
        _unsigned({"alg": "RS256", "kid": "k\nX-Injected: yes"}),
        _unsigned({"alg": ["RS256"], "kid": {"a": 1}}),
        _unsigned(["not", "an", "object"]),
        _signed(KEY, {"alg": "RS256", "kid": "k1"}, ["claims", "not", "an", "object"]),
        "Bearer €".encode(),  # a raw non-ASCII header value
        "a.b",
        "...",
        "x" * 4000,
    ]
    with LiveServer(app) as server:
        for token in tokens:
            value = token if isinstance(token, bytes) else f"Bearer {token}".encode()
            r = httpx.get(f"{server.url}/api/v1/me", headers={b"Authorization": value}, timeout=10)
            assert r.status_code == 401, (token, r.text)
            challenge = r.headers["www-authenticate"]
            assert challenge.startswith('Bearer error="invalid_token"')
            assert challenge.isascii()
            assert not set(challenge) & {"\r", "\n"}
            assert "x-injected" not in r.headers
            assert r.json()["error"] == "invalid_token"
    store_of(app).close()


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    extra_header=st.dictionaries(
        st.sampled_from(["crit", "b64", "typ", "cty", "jku", "x5c", "zip", "enc", "kid"]), _JSON
    ),
    payload=st.dictionaries(
        st.sampled_from(["iss", "aud", "exp", "nbf", "iat", "typ", "sub", "realm_access"]), _JSON
    )
    | _JSON,
)
def test_hostile_headers_and_claims_are_rejected_as_401_only(
    extra_header: dict[str, Any], payload: Any
) -> None:
    """Really signed tokens with any header fields and claims: Unauthenticated, or a valid
    principal, never another exception (which the service would answer as 500)."""
    verifier = KeycloakVerifier(
        Settings(keycloak_url="http://127.0.0.1:9/", jwks_min_refresh_s=3600)
    )
    verifier.use_keys({"keys": [KEY.export_public(as_dict=True)]})
    header = {**extra_header, "alg": "RS256", "kid": extra_header.get("kid", "k1")}
    token = _signed(KEY, header, payload)
    with contextlib.suppress(Unauthenticated, IdentityProviderUnavailable):
        asyncio.run(verifier.principal(token))


# -- observability -----------------------------------------------------------------------


def _metric(text: str, name: str) -> float:
    m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    assert m is not None, (name, text)
    return float(m.group(1))


def test_public_metrics_name_no_project_and_hide_auth_failures(tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path, metrics_public=True))
    with (
        LiveServer(app) as server,
        server.client(app.state.local_token) as admin,
        server.client() as anonymous,
    ):
        for project in ("secret-project", "other-project"):
            r = admin.post(f"/api/v1/projects/{project}/workflows", json={"workflow": WORKFLOW})
            assert r.status_code == 201
        assert anonymous.get("/api/v1/me").status_code == 401
        public = anonymous.get("/metrics")
        assert public.status_code == 200
        assert "secret-project" not in public.text
        assert "project=" not in public.text
        assert _metric(public.text, "continuum_workflows") == 2
        assert "continuum_auth_failures_total" not in public.text
        full = admin.get("/metrics").text
        assert _metric(full, 'continuum_workflows{project="secret-project"}') == 1
        assert _metric(full, "continuum_auth_failures_total") == 1
    store_of(app).close()


def test_telemetry_counters_agree_with_what_clients_were_told(tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path))
    samples = [{"id": f"s{k}", "timestamp": 1.7e9 + 60 * k, "utilisation": 0.5} for k in range(6)]
    told = {"accepted": 0, "duplicates": 0}
    with LiveServer(app) as server, server.client(app.state.local_token) as c:
        assert c.post("/api/v1/sites", json={"id": "s1", **SITE}).status_code == 201
        for batch, wait in ((samples[:4], True), (samples, True), (samples, False)):
            r = c.post("/api/v1/sites/s1/telemetry", json={"samples": batch}, params={"wait": wait})
            assert r.status_code == 202, r.text
            for k in told:
                told[k] += r.json()[k]
        assert told == {"accepted": 6, "duplicates": 10}
        text = c.get("/metrics").text
    prefix = "continuum_telemetry_samples_total"
    assert _metric(text, f'{prefix}{{outcome="duplicate"}}') == told["duplicates"]
    assert _metric(text, f'{prefix}{{outcome="applied"}}') == told["accepted"]
    store_of(app).close()


# -- the published schema ----------------------------------------------------------------


def test_the_published_schema_has_unique_names_and_the_real_error_body(
    local_app: FastAPI,
) -> None:
    doc = local_app.openapi()
    names = set(doc["components"]["schemas"])
    assert not [n for n in names if "__" in n]  # FastAPI's fallback for two models of one name
    assert "HTTPValidationError" not in names  # a 422 body this API never sends
    ref = {"$ref": "#/components/schemas/ErrorBody"}
    for path, item in doc["paths"].items():
        for method, op in item.items():
            responses = op["responses"]
            if op.get("security"):
                for code in ("401", "403", "404", "503"):
                    assert responses[code]["content"]["application/json"]["schema"] == ref
            if op.get("parameters") or "requestBody" in op:
                assert responses["422"]["content"]["application/json"]["schema"] == ref, (
                    method,
                    path,
                )
