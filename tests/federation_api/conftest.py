"""Fixtures of the API tests: a real OpenID provider at Keycloak's paths, real uvicorn servers.

The provider is panva's ``oidc-provider`` (npm), installed into
``tests/federation_api/oidc/node_modules`` on first use from the committed
``package-lock.json``, started on a free loopback port and stopped by PID.
Tests needing it skip with a message when ``node``/``npm`` are missing.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from jwcrypto import jwk, jwt  # type: ignore[import-untyped]
from keycloak import KeycloakOpenID

from federation.api.server import bind_tcp, bound_port
from federation.settings import Settings
from federation.store import Store
from tests.conftest import missing

OIDC_DIR = Path(__file__).with_name("oidc")
REALM = "continuum"
AUDIENCE = "continuum-api"
SECRET = "test-secret-0123456789"

CLIENTS: dict[str, dict[str, Any]] = {
    "admin-client": {"realm_access": {"roles": ["federation-admin", "offline_access"]}},
    "operator-client": {
        "resource_access": {AUDIENCE: {"roles": ["site-operator:ddf-fatnode"]}},
    },
    "researcher-a": {
        "realm_access": {"roles": ["researcher"]},
        "eduperson_entitlement": [
            "urn:geant:continuum.example.org:group:continuum:projects:proj-a:role=member"
            "#sso.continuum.example.org"
        ],
    },
    "researcher-b": {
        "resource_access": {
            AUDIENCE: {"roles": ["researcher:proj-b"]},
            "other-app": {"roles": ["researcher:proj-a", "federation-admin"]},
        },
    },
    "auditor-client": {"realm_access": {"roles": ["auditor"]}},
    "nobody-client": {"realm_access": {"roles": ["offline_access"]}},
}
"""Keycloak-shaped claims of each test client's access tokens."""


def new_key(kid: str) -> jwk.JWK:
    return jwk.JWK.generate(kty="RSA", size=2048, kid=kid, alg="RS256", use="sig")


def ensure_provider_installed() -> None:
    """Install oidc-provider from the lock file when node_modules is missing; skip without npm."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        missing("node and npm are needed to run the test OpenID provider (oidc-provider)")
    if (OIDC_DIR / "node_modules" / "oidc-provider" / "package.json").exists():
        return
    cmd = ["npm", "ci" if (OIDC_DIR / "package-lock.json").exists() else "install"]
    done = subprocess.run(
        [*cmd, "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=OIDC_DIR,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if done.returncode != 0:
        missing(f"cannot install oidc-provider with npm: {done.stderr.strip()[-500:]}")


@dataclass
class Provider:
    """A running oidc-provider process serving one realm at Keycloak's paths."""

    process: subprocess.Popen[str]
    port: int
    issuer: str
    keys: list[jwk.JWK]
    config_path: Path
    _openids: dict[str, KeycloakOpenID] = field(default_factory=dict)

    @property
    def server_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def openid(self, client_id: str) -> KeycloakOpenID:
        if client_id not in self._openids:
            self._openids[client_id] = KeycloakOpenID(
                server_url=self.server_url,
                realm_name=REALM,
                client_id=client_id,
                client_secret_key=SECRET,
            )
        return self._openids[client_id]

    def token(self, client_id: str) -> str:
        """An access token for ``client_id`` through python-keycloak (client credentials)."""
        answer = self.openid(client_id).token(grant_type="client_credentials")
        token: str = answer["access_token"]
        return token

    def sign(self, claims: dict[str, Any], key: jwk.JWK | None = None) -> str:
        """A token with ``claims`` signed by ``key`` (default: the provider's own signing key)."""
        key = key or self.keys[0]
        now = int(time.time())
        full = {"iss": self.issuer, "aud": AUDIENCE, "sub": "forged", "iat": now, "exp": now + 300}
        full.update(claims)
        full = {k: v for k, v in full.items() if v is not None}
        token = jwt.JWT(
            header={"alg": "RS256", "kid": key.export_public(as_dict=True)["kid"], "typ": "at+jwt"},
            claims=full,
        )
        token.make_signed_token(key)
        signed: str = token.serialize()
        return signed

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_provider(
    tmp: Path,
    keys: list[jwk.JWK],
    port: int = 0,
    public_clients: list[dict[str, Any]] | None = None,
    users: dict[str, dict[str, Any]] | None = None,
) -> Provider:
    """Start oidc-provider with ``keys`` (the first signs) on ``port`` (0: any free port).

    ``public_clients`` (``{"client_id", "redirect_uris"}``) log people in with the
    authorization code flow and PKCE, as ``users`` (login -> the claims of their tokens).
    """
    ensure_provider_installed()
    clients = [
        {"client_id": cid, "client_secret": SECRET, "ttl": 300, "claims": claims}
        for cid, claims in CLIENTS.items()
    ]
    clients.append(
        {"client_id": "other-audience", "client_secret": SECRET, "audience": "some-other-api"}
    )
    config = {
        "host": "127.0.0.1",
        "port": port,
        "realm": REALM,
        "audience": AUDIENCE,
        "keys": [json.loads(k.export_private()) for k in keys],
        "clients": clients,
        "public_clients": public_clients or [],
        "users": users or {},
    }
    path = tmp / f"oidc-{time.monotonic_ns()}.json"
    path.write_text(json.dumps(config), encoding="utf-8")
    proc = subprocess.Popen(
        ["node", str(OIDC_DIR / "server.js"), str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.wait(timeout=10)
        pytest.fail(f"oidc-provider did not start (exit {proc.returncode})")
    ready = json.loads(line)
    return Provider(proc, ready["port"], ready["issuer"], keys, path)


@pytest.fixture(scope="session")
def provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Provider]:
    """One provider for the session, signing with a fresh RSA key."""
    prov = start_provider(tmp_path_factory.mktemp("oidc"), [new_key("test-key-1")])
    try:
        yield prov
    finally:
        prov.stop()


def keycloak_settings(provider: Provider, data_dir: Path, **extra: Any) -> Settings:
    """The API's settings against ``provider``, trusting the entitlements of ``CLIENTS``."""
    extra.setdefault("entitlement_namespaces", ("geant:continuum.example.org",))
    extra.setdefault("entitlement_authorities", ("sso.continuum.example.org",))
    return Settings(
        data_dir=data_dir,
        keycloak_url=provider.server_url,
        keycloak_realm=REALM,
        keycloak_client_id=AUDIENCE,
        token_leeway_s=5,
        **extra,
    )


class LiveServer:
    """uvicorn serving ``app`` on a free loopback port, in a thread, stopped on exit."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.sock = bind_tcp("127.0.0.1", 0)
        self.port = bound_port(self.sock)
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]})

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)
        self.sock.close()

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)


@pytest.fixture
def local_app(tmp_path: Path) -> Iterator[FastAPI]:
    """A local-mode app over an SQLite file in ``tmp_path``."""
    from federation.api import create_app

    settings = Settings(data_dir=tmp_path, max_body_bytes=256 * 1024)
    app = create_app(settings)
    yield app
    app.state.ctx.store.close()


@pytest.fixture
def local_server(local_app: FastAPI) -> Iterator[LiveServer]:
    with LiveServer(local_app) as server:
        yield server


@pytest.fixture
def admin(local_server: LiveServer, local_app: FastAPI) -> Iterator[httpx.Client]:
    """An HTTP client of the local-mode server carrying its admin token."""
    with local_server.client(local_app.state.local_token) as c:
        yield c


def store_of(app: FastAPI) -> Store:
    store: Store = app.state.ctx.store
    return store
