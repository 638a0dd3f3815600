"""The service's settings: one pydantic-settings class (environment variables, ``.env``).

Every variable carries the ``CONTINUUM_`` prefix (``CONTINUUM_KEYCLOAK_URL``,
``CONTINUUM_DATA_DIR``...). Two modes follow from them:

* **local mode** (no ``keycloak_url``): the server binds only to a loopback
  address and accepts one admin token, generated at start and printed once;
* **Keycloak mode**: access tokens are verified against the realm's keys, and
  settings that are only safe on a laptop are refused (a static admin token,
  plain HTTP to a remote Keycloak, a long clock-skew leeway).

``load_settings`` turns every refusal into one ``InvalidSettings`` error whose
message names the variable to change.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Any, Self
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from federation.errors import FederationError, InvalidInput, Problem, problems_from_pydantic

ENV_PREFIX = "CONTINUUM_"


class InvalidSettings(InvalidInput, FederationError):
    """The service's settings are unsafe or inconsistent (names the variable to change)."""


def default_data_dir() -> Path:
    """The user's data directory for continuum (``$XDG_DATA_HOME/continuum``)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "continuum"


def is_loopback(host: str) -> bool:
    """True when ``host`` names a loopback interface (``127.0.0.0/8``, ``::1``, ``localhost``)."""
    if host.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class Settings(BaseSettings):
    """Everything ``continuum serve`` and the API need to know, in one place."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_file=".env", extra="ignore", validate_default=True
    )

    host: str = Field(default="127.0.0.1", description="interface the server binds to")
    port: int = Field(default=8080, ge=0, le=65535)
    data_dir: Path = Field(
        default_factory=default_data_dir, description="holds the SQLite store and the buffers"
    )
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default: SQLite file in data_dir"
    )
    max_body_bytes: int = Field(
        default=16 * 1024 * 1024, gt=0, description="largest accepted request body (413 beyond)"
    )
    telemetry_queue_max: int = Field(
        default=1_000_000,
        gt=0,
        description="samples waiting for the twin beyond which ingest answers 503 (retry later)",
    )
    telemetry_retention_s: float = Field(
        default=86_400.0,
        gt=0,
        description="how long sample ids (and samples) are kept behind each site's estimate",
    )
    reconcile_interval_s: float = Field(
        default=0.2, gt=0, le=60, description="seconds between two passes over the runs"
    )
    registry_ttl_s: float = Field(
        default=1.0, ge=0, le=3600, description="how long the registry is trusted unchecked"
    )
    twin_apply_chunk: int = Field(
        default=32, gt=0, le=100_000, description="telemetry samples applied per applier turn"
    )
    twin_snapshot_every_s: float = Field(
        default=10.0, gt=0, description="seconds between two snapshots of the twin"
    )
    agent_heartbeat_timeout_s: float = Field(
        default=30.0, gt=0, description="a site's agent unheard for longer is unhealthy"
    )
    step_log_limit_bytes: int = Field(
        default=1024 * 1024,
        ge=1024,
        description="bytes of each step's stdout and stderr kept (head and tail beyond)",
    )
    buffer_startup_timeout_s: float = Field(
        default=120.0, gt=0, description="seconds the local buffer services have to answer"
    )
    metrics_public: bool = Field(
        default=False,
        description="serve /metrics without a token (for a Prometheus scraper); even then, "
        "anonymous callers see no project names and no count of refused tokens",
    )

    keycloak_url: str | None = Field(
        default=None, description="Keycloak base URL (e.g. https://sso.example.org/); none: local"
    )
    keycloak_realm: str = Field(default="continuum", min_length=1)
    keycloak_client_id: str = Field(
        default="continuum-api", min_length=1, description="the API's client in the realm"
    )
    keycloak_client_secret: SecretStr | None = None
    keycloak_issuer: str | None = Field(
        default=None, description="expected 'iss'; default: <keycloak_url>/realms/<realm>"
    )
    keycloak_audience: str | None = Field(
        default=None, description="expected 'aud'; default: keycloak_client_id"
    )
    keycloak_timeout_s: float = Field(default=10.0, gt=0)
    dashboard_client_id: str = Field(
        default="continuum-dashboard",
        min_length=1,
        description="the dashboard's public client in the realm (authorization code with PKCE)",
    )
    allow_insecure_keycloak_http: bool = Field(
        default=False, description="accept http:// for a Keycloak that is not on loopback"
    )
    token_leeway_s: int = Field(default=30, ge=0, description="clock skew allowed on exp/nbf")
    jwks_min_refresh_s: float = Field(
        default=30.0, ge=0, description="least time between two key refreshes on unknown kids"
    )

    entitlement_vo: str = Field(
        default="continuum", min_length=1, description="the federation's VO in entitlements"
    )
    entitlement_namespaces: tuple[str, ...] = Field(
        default=(),
        description="namespaces whose entitlements are trusted (urn:<namespace>:group:..., "
        "e.g. 'geant:example.org'); empty: no entitlement is trusted",
    )
    entitlement_authorities: tuple[str, ...] = Field(
        default=(),
        description="trusted '#<authority>' suffixes of entitlements (e.g. 'sso.example.org'); "
        "empty: no entitlement is trusted",
    )
    vo_projects: dict[str, str] = Field(
        default_factory=dict,
        description="other VO group paths mapped to project ids, e.g. {'vo.ddf.eu': 'ddf'}",
    )

    local_token: SecretStr | None = Field(
        default=None, description="local mode only: fixed admin token instead of a generated one"
    )

    @property
    def local_mode(self) -> bool:
        """True when no Keycloak is configured."""
        return not self.keycloak_url

    @property
    def issuer(self) -> str:
        """The ``iss`` that access tokens must carry."""
        if self.keycloak_issuer:
            return self.keycloak_issuer
        base = (self.keycloak_url or "").rstrip("/")
        return f"{base}/realms/{self.keycloak_realm}"

    @property
    def audience(self) -> str:
        """The ``aud`` that access tokens must contain (Keycloak's audience mapper)."""
        return self.keycloak_audience or self.keycloak_client_id

    @property
    def keycloak_server_url(self) -> str:
        """``keycloak_url`` with the trailing slash python-keycloak needs to keep its path."""
        url = self.keycloak_url or ""
        return url if url.endswith("/") else url + "/"

    def resolved_database_url(self) -> str:
        """``database_url``, or the SQLite file ``<data_dir>/continuum.db``."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'continuum.db').resolve()}"

    @model_validator(mode="after")
    def _refuse_insecure(self) -> Self:
        if self.local_mode:
            if not is_loopback(self.host):
                raise ValueError(
                    f"refusing to bind to {self.host!r} without Keycloak: local mode serves a "
                    "single admin token and binds only to loopback; use --host 127.0.0.1, or "
                    "set CONTINUUM_KEYCLOAK_URL to verify tokens against a realm"
                )
            return self
        url = urlsplit(self.keycloak_url or "")
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(
                f"CONTINUUM_KEYCLOAK_URL {self.keycloak_url!r} is not an http(s) URL "
                "(e.g. https://sso.example.org/)"
            )
        if (
            url.scheme == "http"
            and not is_loopback(url.hostname)
            and not self.allow_insecure_keycloak_http
        ):
            raise ValueError(
                f"CONTINUUM_KEYCLOAK_URL uses plain http to {url.hostname}: use https, or set "
                "CONTINUUM_ALLOW_INSECURE_KEYCLOAK_HTTP=true for a trusted network"
            )
        if self.local_token is not None:
            raise ValueError(
                "CONTINUUM_LOCAL_TOKEN is a static admin token for local mode only: unset it "
                "when CONTINUUM_KEYCLOAK_URL is set"
            )
        if self.token_leeway_s > 120:
            raise ValueError(
                f"CONTINUUM_TOKEN_LEEWAY_S={self.token_leeway_s} accepts expired tokens for too "
                "long: use at most 120 seconds"
            )
        return self


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment and ``.env``, with ``overrides`` (None values ignored).

    Raises:
        InvalidSettings: naming the variable and what to change.
    """
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**given)
    except ValidationError as exc:
        problems = [
            Problem(ENV_PREFIX + p.location.upper() if p.location else "", p.message)
            for p in problems_from_pydantic(exc.errors())
        ]
        raise InvalidSettings("settings", problems) from None


__all__ = [
    "ENV_PREFIX",
    "InvalidSettings",
    "Settings",
    "default_data_dir",
    "is_loopback",
    "load_settings",
]
