"""Settings: local mode binds to loopback only; insecure values refused with Keycloak."""

from __future__ import annotations

from pathlib import Path

import pytest

from federation.settings import InvalidSettings, Settings, is_loopback, load_settings


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost", "[::1]"])
def test_loopback_hosts(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "example.org"])
def test_non_loopback_hosts(host: str) -> None:
    assert not is_loopback(host)


def test_local_mode_refuses_a_public_interface() -> None:
    with pytest.raises(InvalidSettings, match=r"without Keycloak.*CONTINUUM_KEYCLOAK_URL"):
        load_settings(host="0.0.0.0")


def test_keycloak_mode_may_bind_anywhere() -> None:
    s = load_settings(host="0.0.0.0", keycloak_url="https://sso.example.org")
    assert not s.local_mode
    assert s.issuer == "https://sso.example.org/realms/continuum"
    assert s.audience == "continuum-api"
    assert s.keycloak_server_url == "https://sso.example.org/"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"keycloak_url": "http://sso.example.org/"}, "plain http"),
        ({"keycloak_url": "ftp://sso.example.org/"}, "not an http"),
        ({"keycloak_url": "https://sso.example.org/", "local_token": "x"}, "LOCAL_TOKEN"),
        ({"keycloak_url": "https://sso.example.org/", "token_leeway_s": 600}, "at most 120"),
    ],
)
def test_insecure_settings_are_refused_outside_local_mode(
    extra: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidSettings, match=message):
        load_settings(**extra)


def test_plain_http_is_allowed_to_loopback_or_when_asked() -> None:
    assert load_settings(keycloak_url="http://127.0.0.1:8081/").keycloak_url
    allowed = load_settings(keycloak_url="http://kc.internal/", allow_insecure_keycloak_http=True)
    assert allowed.keycloak_url == "http://kc.internal/"


def test_environment_variables_and_dotenv(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("CONTINUUM_PORT=9123\nCONTINUUM_MAX_BODY_BYTES=1000\n")
    monkeypatch.setenv("CONTINUUM_DATA_DIR", str(tmp_path / "data"))
    s = Settings()
    assert s.port == 9123
    assert s.max_body_bytes == 1000
    assert s.data_dir == tmp_path / "data"
    assert s.resolved_database_url() == f"sqlite:///{(tmp_path / 'data' / 'continuum.db')}"


def test_wrong_types_name_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONTINUUM_PORT", "eighty")
    with pytest.raises(InvalidSettings) as info:
        load_settings()
    assert info.value.problems[0].location == "CONTINUUM_PORT"


def test_entitlement_trust_and_public_metrics_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    default = load_settings(data_dir=tmp_path)
    assert default.entitlement_namespaces == default.entitlement_authorities == ()
    assert default.metrics_public is False  # /metrics needs a token unless made public
    monkeypatch.setenv("CONTINUUM_ENTITLEMENT_NAMESPACES", '["geant:example.org"]')
    monkeypatch.setenv("CONTINUUM_ENTITLEMENT_AUTHORITIES", '["sso.example.org"]')
    monkeypatch.setenv("CONTINUUM_METRICS_PUBLIC", "true")
    s = load_settings(data_dir=tmp_path)
    assert s.entitlement_namespaces == ("geant:example.org",)
    assert s.entitlement_authorities == ("sso.example.org",)
    assert s.metrics_public is True
