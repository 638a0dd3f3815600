"""The token verifier in-process: real RS256 keys and signatures (jwcrypto), the realm's key set
served over real HTTP on loopback at Keycloak's path; each check of ``KeycloakVerifier`` alone.

``test_aai_provider.py`` runs the same checks end to end against a real OpenID provider; these
name the exact reason of every rejection and pin the refresh and cool-down rules.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from jwcrypto import jwk, jws, jwt  # type: ignore[import-untyped]

from federation.api import KeycloakVerifier, LocalVerifier, Principal, make_verifier
from federation.api.aai import SIGNING_ALGORITHMS, token_header
from federation.api.errors import IdentityProviderUnavailable, Unauthenticated
from federation.settings import Settings
from tests.federation_api.conftest import new_key

KEY = new_key("k1")
OTHER = new_key("k2")
ADMIN = {"realm_access": {"roles": ["federation-admin"]}}


class Realm:
    """The realm's ``/certs`` on a loopback port: serves ``keys`` (or fails with 500 while
    ``failing``) and counts the requests."""

    def __init__(self) -> None:
        self.keys: list[jwk.JWK] = [KEY]
        self.failing = False
        self.requests = 0
        realm = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                realm.requests += 1
                if realm.failing or not self.path.endswith("/protocol/openid-connect/certs"):
                    self.send_error(500 if realm.failing else 404)
                    return
                body = json.dumps({"keys": [k.export_public(as_dict=True) for k in realm.keys]})
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body.encode())

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)

    def settings(self, **extra: Any) -> Settings:
        for name, value in (("jwks_min_refresh_s", 3600), ("token_leeway_s", 10)):
            extra.setdefault(name, value)
        extra.setdefault("keycloak_timeout_s", 5)
        return Settings(keycloak_url=self.url, **extra)


@pytest.fixture
def realm() -> Iterator[Realm]:
    r = Realm()
    yield r
    r.stop()


def sign(settings: Settings, claims: dict[str, Any], key: jwk.JWK = KEY, **header: Any) -> str:
    now = int(time.time())
    body = {"iss": settings.issuer, "aud": settings.audience, "iat": now, "exp": now + 300}
    body.update(claims)
    body = {k: v for k, v in body.items() if v is not None}
    token = jwt.JWT(header={"alg": "RS256", "kid": key.kid, **header}, claims=body)
    token.make_signed_token(key)
    return str(token.serialize())


def b64(obj: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def verified(v: KeycloakVerifier, token: str) -> dict[str, Any]:
    return asyncio.run(v.claims(token))


def refused(v: KeycloakVerifier, token: str) -> str:
    with pytest.raises(Unauthenticated) as info:
        asyncio.run(v.claims(token))
    return str(info.value)


def loaded(settings: Settings, *keys: jwk.JWK) -> KeycloakVerifier:
    v = KeycloakVerifier(settings)
    v.use_keys({"keys": [k.export_public(as_dict=True) for k in keys or (KEY,)]})
    return v


def test_a_good_token_gives_its_claims_and_principal(realm: Realm) -> None:
    s = realm.settings()
    v = loaded(s)
    claims = verified(v, sign(s, {**ADMIN, "preferred_username": "ada", "azp": "cli"}))
    assert claims["preferred_username"] == "ada"
    who = asyncio.run(v.principal(sign(s, {**ADMIN, "preferred_username": "ada", "azp": "cli"})))
    assert who == Principal(subject="ada", admin=True, client="cli")
    for typ in ("Bearer", "bearer", "at+jwt", "AT+JWT"):
        assert verified(v, sign(s, {**ADMIN, "typ": typ}))["typ"] == typ
    assert realm.requests == 0  # the keys were given, nothing fetched


def test_each_rejection_says_which_check_failed(realm: Realm) -> None:
    s = realm.settings()
    v = loaded(s)
    now = int(time.time())
    assert refused(v, sign(s, {"exp": now - 60})) == "token expired"
    assert refused(v, sign(s, {"exp": None})).startswith("token rejected: ")
    assert "exp" in refused(v, sign(s, {"exp": None}))
    assert refused(v, sign(s, {"iss": "http://127.0.0.1:9/realms/other"})).startswith(
        "token rejected: "
    )
    assert refused(v, sign(s, {"aud": "another-api"})).startswith("token rejected: ")
    assert refused(v, sign(s, {"typ": "ID"})) == "not an access token (typ 'ID')"
    assert refused(v, sign(s, {"typ": "Refresh"})) == "not an access token (typ 'Refresh')"
    assert refused(v, sign(s, {"nbf": now + 60})) == "token not valid yet (nbf in the future)"
    # another key under the published kid: the signature does not verify
    assert refused(v, sign(s, {}, key=OTHER, kid="k1")).startswith("token signature invalid: ")
    head, _, sig = sign(s, ADMIN).split(".")
    forged = f"{head}.{b64({**ADMIN, 'iss': s.issuer, 'aud': s.audience})}.{sig}"
    assert refused(v, forged).startswith("token signature invalid: ")


def test_the_leeway_admits_small_clock_skews_only(realm: Realm) -> None:
    s = realm.settings()  # 10 s
    v = loaded(s)
    now = int(time.time())
    assert verified(v, sign(s, {"exp": now - 5}))["exp"] == now - 5
    assert verified(v, sign(s, {"nbf": now + 5}))["nbf"] == now + 5
    assert refused(v, sign(s, {"exp": now - 20})) == "token expired"
    assert refused(v, sign(s, {"nbf": now + 20})) == "token not valid yet (nbf in the future)"


def test_only_asymmetric_algorithms_and_tokens_with_a_key_id_are_read(realm: Realm) -> None:
    s = realm.settings()
    v = loaded(s)
    body = b64({**ADMIN, "iss": s.issuer, "aud": s.audience, "exp": int(time.time()) + 60})
    for alg in ("none", "HS256", None, 7):
        token = f"{b64({'alg': alg, 'kid': 'k1'})}.{body}.c2ln"
        assert refused(v, token) == f"token algorithm {alg!r} not accepted"
    for kid in (None, "", 7):
        token = f"{b64({'alg': 'RS256', 'kid': kid})}.{body}.c2ln"
        assert refused(v, token) == "token has no key id (kid)"
    assert set(SIGNING_ALGORITHMS) == {
        "RS256",
        "RS384",
        "RS512",
        "PS256",
        "PS384",
        "PS512",
        "ES256",
        "ES384",
    }
    ps = sign(s, ADMIN, alg="PS256")
    assert verified(v, ps)["realm_access"] == ADMIN["realm_access"]


def test_malformed_tokens_are_refused_before_any_key_is_looked_up(realm: Realm) -> None:
    v = KeycloakVerifier(realm.settings(jwks_min_refresh_s=0))
    header = "malformed token: its header is not base64url-encoded JSON"
    jws_shape = "malformed token: expected a signed JWT (header.payload.signature)"
    assert refused(v, "%%%.e30.c2ln") == header
    assert refused(v, f"{b64('RS256')[:-1]}x.e30.c2ln") == header
    assert refused(v, f"{b64(['RS256'])}.e30.c2ln") == jws_shape
    assert refused(v, f"{b64({'alg': 'RS256', 'kid': 'k1'})}.e30") == jws_shape
    assert refused(v, f"{b64({'alg': 'RS256', 'kid': 'k1'})}.e30.c2ln.x") == jws_shape
    assert token_header(f"{b64({'alg': 'RS256', 'kid': 'k1'})}.e30.c2ln") == {
        "alg": "RS256",
        "kid": "k1",
    }
    assert realm.requests == 0


def test_the_key_set_keeps_only_loadable_signing_keys_with_an_id(realm: Realm) -> None:
    s = realm.settings()
    v = KeycloakVerifier(s)
    enc = new_key("enc").export_public(as_dict=True) | {"use": "enc"}
    no_kid = {k: w for k, w in new_key("x").export_public(as_dict=True).items() if k != "kid"}
    v.use_keys(
        {
            "keys": [
                enc,
                no_kid,
                {"kty": "RSA", "kid": "broken", "n": "AQAB"},
                {"kty": "nonsense", "kid": "odd"},
                "not a key",
                KEY.export_public(as_dict=True),
                OTHER.export_public(as_dict=True) | {"use": "sig"},
            ]
        }
    )
    assert sorted(v._keys) == ["k1", "k2"]
    assert v.refreshes == 1
    assert refused(v, sign(s, {}, key=new_key("enc"))).startswith("token signed with a key")
    v.use_keys({})
    assert v._keys == {}
    assert v.refreshes == 2


def test_an_unknown_kid_fetches_the_realms_keys_at_most_once_per_interval(realm: Realm) -> None:
    s = realm.settings(jwks_min_refresh_s=3600)
    v = KeycloakVerifier(s)
    # nothing loaded yet: the first token fetches the key set
    assert verified(v, sign(s, ADMIN))["realm_access"] == ADMIN["realm_access"]
    assert (v.refreshes, realm.requests) == (1, 1)
    # a rotated key within the interval: refused without asking the realm again
    realm.keys = [OTHER, KEY]
    assert refused(v, sign(s, ADMIN, key=OTHER)) == (
        "token signed with a key the realm does not publish (kid k2)"
    )
    assert (v.refreshes, realm.requests) == (1, 1)
    # with no interval, the same token fetches the keys once and passes
    v = KeycloakVerifier(realm.settings(jwks_min_refresh_s=0))
    assert verified(v, sign(s, ADMIN, key=OTHER))["aud"] == s.audience
    assert verified(v, sign(s, ADMIN, key=KEY))["aud"] == s.audience  # k1 came with it
    assert realm.requests == 2
    assert refused(v, sign(s, ADMIN, key=new_key("k3"))) == (
        "token signed with a key the realm does not publish (kid k3)"
    )
    assert (v.refreshes, realm.requests) == (2, 3)


def test_an_unreachable_realm_is_unavailable_and_not_asked_again_at_once(realm: Realm) -> None:
    realm.failing = True
    s = realm.settings(jwks_min_refresh_s=3600)  # cool-down: min(3600, 5) = 5 s
    v = KeycloakVerifier(s)
    token = sign(s, ADMIN)
    for _ in range(3):
        with pytest.raises(IdentityProviderUnavailable) as info:
            asyncio.run(v.claims(token))
        assert str(info.value).startswith(f"cannot fetch the realm's keys from {s.keycloak_url}: ")
    assert (v.refreshes, realm.requests) == (0, 1)
    # a short interval makes a short cool-down: after it, the realm is asked again
    v = KeycloakVerifier(realm.settings(jwks_min_refresh_s=0.2))
    with pytest.raises(IdentityProviderUnavailable):
        asyncio.run(v.claims(token))
    assert realm.requests == 2
    time.sleep(0.3)
    realm.failing = False
    assert verified(v, token)["aud"] == s.audience
    assert (v.refreshes, realm.requests) == (1, 3)


def test_local_mode_takes_its_one_token() -> None:
    v = make_verifier(Settings(local_token="a-fixed-local-token-0123456789"))
    assert isinstance(v, LocalVerifier)
    assert v.token == "a-fixed-local-token-0123456789"
    who = asyncio.run(v.principal("a-fixed-local-token-0123456789"))
    assert who == Principal(subject="local-admin", admin=True, client="local")
    for wrong in ("", "a-fixed-local-token-012345678", "a-fixed-local-token-01234567890"):
        with pytest.raises(Unauthenticated) as info:
            asyncio.run(v.principal(wrong))
        assert str(info.value) == "unknown token: use the one printed when the server started"
    generated = make_verifier(Settings())
    assert isinstance(generated, LocalVerifier)
    assert len(generated.token) == 43  # 32 random bytes, base64url
    assert generated.token != LocalVerifier().token


def test_a_realm_setting_makes_a_keycloak_verifier(realm: Realm) -> None:
    s = realm.settings(keycloak_client_secret="s3cret", keycloak_timeout_s=7)
    v = make_verifier(s)
    assert isinstance(v, KeycloakVerifier)
    assert v.settings is s
    assert v.openid.realm_name == "continuum"
    assert v.openid.client_id == "continuum-api"
    assert v.openid.client_secret_key == "s3cret"
    assert v.openid.connection.base_url == realm.url
    assert v.openid.connection.timeout == 7
    assert KeycloakVerifier(realm.settings()).openid.client_secret_key is None


def test_two_first_tokens_at_once_fetch_the_keys_once(realm: Realm) -> None:
    s = realm.settings(jwks_min_refresh_s=3600)
    v = KeycloakVerifier(s)

    async def both() -> list[dict[str, Any]]:
        return list(await asyncio.gather(v.claims(sign(s, ADMIN)), v.claims(sign(s, ADMIN))))

    first, second = asyncio.run(both())
    assert first["aud"] == second["aud"] == s.audience
    assert (v.refreshes, realm.requests) == (1, 1)


def test_the_cool_down_after_a_failure_is_at_most_five_seconds(realm: Realm) -> None:
    realm.failing = True
    s = realm.settings(jwks_min_refresh_s=3600)
    v = KeycloakVerifier(s)
    token = sign(s, ADMIN)
    with pytest.raises(IdentityProviderUnavailable):
        asyncio.run(v.claims(token))
    realm.failing = False
    v._last_failure -= 4.5  # as if 4.5 s had passed: still cooling down
    with pytest.raises(IdentityProviderUnavailable, match="cannot fetch the realm's keys"):
        asyncio.run(v.claims(token))
    assert realm.requests == 1
    v._last_failure -= 1.0  # 5.5 s: asked again
    assert verified(v, token)["aud"] == s.audience
    assert realm.requests == 2


def test_a_key_without_a_use_is_a_signing_key(realm: Realm) -> None:
    s = realm.settings()
    v = KeycloakVerifier(s)
    bare = {k: w for k, w in KEY.export_public(as_dict=True).items() if k != "use"}
    v.use_keys({"keys": [bare]})
    assert sorted(v._keys) == ["k1"]
    assert verified(v, sign(s, ADMIN))["aud"] == s.audience


def test_claims_that_are_not_an_object_or_of_the_wrong_type_are_refused(realm: Realm) -> None:
    s = realm.settings()
    v = loaded(s)
    not_object = "token rejected: Claims check requested but claims is not a json dict"
    for payload in (b"not json", b"[1, 2]", b"123"):
        signed = jws.JWS(payload)
        signed.add_signature(KEY, None, json.dumps({"alg": "RS256", "kid": "k1"}))
        assert refused(v, signed.serialize(compact=True)) == not_object
    assert refused(v, sign(s, {"exp": "soon"})) == "token rejected: Claim exp is not an integer"


def test_the_principal_reads_the_api_clients_roles(realm: Realm) -> None:
    s = realm.settings()
    v = loaded(s)
    claims = {"sub": "u-7", "resource_access": {s.keycloak_client_id: {"roles": ["auditor"]}}}
    who = asyncio.run(v.principal(sign(s, claims)))
    assert (who.subject, who.auditor, who.admin) == ("u-7", True, False)


def test_a_verified_token_is_not_verified_again_until_it_expires_or_the_keys_change(
    realm: Realm,
) -> None:
    s = realm.settings(token_leeway_s=0)
    v = loaded(s)
    token = sign(s, {**ADMIN, "preferred_username": "ada"})
    first = verified(v, token)
    first["preferred_username"] = "changed by the caller"  # a copy: the cache keeps its own
    assert verified(v, token)["preferred_username"] == "ada"
    assert v.verifications == 1  # the second use came from the cache
    # a refused token is not cached: refused again, verified again
    bad = sign(s, {}, key=OTHER, kid="k1")
    for _ in range(2):
        assert refused(v, bad).startswith("token signature invalid: ")
    assert v.verifications == 3
    # the cache never outlives the token: one expiring in a second is refused after it
    short = sign(s, {**ADMIN, "exp": int(time.time()) + 1})
    assert verified(v, short)["realm_access"] == ADMIN["realm_access"]
    time.sleep(max(0.0, int(time.time()) + 1.05 - time.time()) + 1.0)
    assert refused(v, short) == "token expired"
    # a new key set (rotation) empties the cache: a token of the old key is verified again
    v.use_keys({"keys": [OTHER.export_public(as_dict=True)]})
    assert refused(v, token) == "token signed with a key the realm does not publish (kid k1)"
