"""Authentication and authorisation: Keycloak access tokens -> a ``Principal``.

Verification (``KeycloakVerifier``): the token's signature is checked against
the realm's JSON Web Key Set (fetched with python-keycloak from
``/realms/<realm>/protocol/openid-connect/certs`` and cached by ``kid``), then
its issuer, audience, expiry and not-before, with a small clock-skew leeway. A
token signed with a ``kid`` the cache does not know triggers one refresh of the
key set (at most one per ``jwks_min_refresh_s``), which is how a realm's key
rotation reaches the API without a restart. When the realm cannot be reached
the answer is 503 (retry later), not 401: the token may well be valid.

Authorisation (``principal_from_claims``): roles come from
``realm_access.roles`` and ``resource_access.<api client>.roles``; scoped roles
are written ``site-operator:<site>`` and ``researcher:<project>``. AARC-G069
entitlements in ``eduperson_entitlement``::

    urn:<namespace>:group:<VO>[:<group>]*[:role=<role>]#<authority>

are mapped for the federation's VO (``entitlement_vo``) as::

    group:<VO>:projects:<project>[:role=member|researcher|manager]  -> researcher of project
    group:<VO>:sites:<site>:role=operator|site-operator              -> site-operator of site
    group:<VO>:role=admin|federation-admin                           -> federation-admin
    group:<VO>:role=auditor                                          -> auditor

and for any other VO listed in ``vo_projects`` (``{"<VO>[:<group>]*": project}``)
a member of that group becomes a researcher of the project. Only entitlements
of a trusted namespace (``entitlement_namespaces``) issued by a trusted
authority (``entitlement_authorities``) count: both lists are empty by
default, so none is trusted until a deployment names its own.

Any token that cannot be verified, however malformed, is a 401 whose
``WWW-Authenticate`` header is printable ASCII (``federation.api.errors``).

Local mode (``LocalVerifier``): one generated token, compared in constant time,
stands for a federation admin.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from jwcrypto import jwk, jws, jwt  # type: ignore[import-untyped]
from jwcrypto.common import JWException  # type: ignore[import-untyped]
from keycloak import KeycloakOpenID

from federation.api.errors import IdentityProviderUnavailable, Unauthenticated
from federation.settings import Settings


class Role(StrEnum):
    """The roles the API checks (the realm export defines the same names)."""

    FEDERATION_ADMIN = "federation-admin"
    SITE_OPERATOR = "site-operator"
    RESEARCHER = "researcher"
    AUDITOR = "auditor"


SIGNING_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384")
"""Asymmetric algorithms only: never ``none`` nor an HMAC keyed with a public key."""

PROJECT_ROLES = frozenset({"member", "researcher", "manager"})
OPERATOR_ROLES = frozenset({"operator", "site-operator"})
ADMIN_ROLES = frozenset({"admin", "federation-admin"})


@dataclass(frozen=True)
class Principal:
    """Who is calling, and what they may touch."""

    subject: str
    admin: bool = False
    auditor: bool = False
    sites: frozenset[str] = field(default_factory=frozenset)
    projects: frozenset[str] = field(default_factory=frozenset)
    client: str = ""

    @property
    def roles(self) -> frozenset[Role]:
        """The unscoped roles this principal holds."""
        out = set()
        if self.admin:
            out.add(Role.FEDERATION_ADMIN)
        if self.auditor:
            out.add(Role.AUDITOR)
        if self.sites:
            out.add(Role.SITE_OPERATOR)
        if self.projects:
            out.add(Role.RESEARCHER)
        return frozenset(out)

    @property
    def is_member(self) -> bool:
        """Holds at least one role of the federation."""
        return bool(self.roles)

    def can_read_project(self, project: str) -> bool:
        """Admins and auditors read every project; researchers their own."""
        return self.admin or self.auditor or project in self.projects

    def can_write_project(self, project: str) -> bool:
        """Admins and the project's researchers (auditors are read-only)."""
        return self.admin or project in self.projects

    def can_operate_site(self, site: str) -> bool:
        """Admins and the site's operators."""
        return self.admin or site in self.sites

    def visible_projects(self) -> frozenset[str] | None:
        """The projects this principal reads; None means every project."""
        return None if (self.admin or self.auditor) else self.projects


@dataclass(frozen=True)
class Entitlement:
    """One parsed AARC-G069 entitlement."""

    namespace: str
    vo: str
    groups: tuple[str, ...]
    role: str | None
    authority: str | None


def parse_entitlement(value: str) -> Entitlement | None:
    """Parse ``urn:<ns>:group:<VO>[:<group>]*[:role=<role>][#<authority>]``; None if not one.

    The namespace is everything between ``urn:`` and ``:group:`` (for example
    ``mace:egi.eu`` or ``geant:example.org``); the URN is case-insensitive in
    its ``urn`` and ``group`` keywords only.
    """
    if not isinstance(value, str) or not value.lower().startswith("urn:"):
        return None
    body, _, authority = value.partition("#")
    head, sep, tail = body.partition(":group:")
    if not sep or not tail:
        return None
    parts = tail.split(":")
    role = None
    if parts[-1].startswith("role="):
        role = parts.pop()[len("role=") :] or None
    if not parts or not all(parts):
        return None
    return Entitlement(head[len("urn:") :], parts[0], tuple(parts[1:]), role, authority or None)


def entitlement_trusted(ent: Entitlement, settings: Settings) -> bool:
    """True when ``ent`` comes from a configured namespace and a configured authority.

    Nothing is trusted by default: anyone can write
    ``urn:geant:evil.org:group:continuum:role=admin#evil.org`` into an upstream
    identity provider's attributes, so a deployment lists the namespaces and
    authorities whose entitlements its Keycloak passes on.
    """
    namespaces = {n.lower() for n in settings.entitlement_namespaces}
    return (
        ent.namespace.lower() in namespaces
        and ent.authority is not None
        and ent.authority in settings.entitlement_authorities
    )


@dataclass
class _Grants:
    admin: bool = False
    auditor: bool = False
    sites: set[str] = field(default_factory=set)
    projects: set[str] = field(default_factory=set)

    def add_role(self, name: str) -> None:
        kind, _, scope = name.partition(":")
        if kind == Role.FEDERATION_ADMIN and not scope:
            self.admin = True
        elif kind == Role.AUDITOR and not scope:
            self.auditor = True
        elif kind == Role.SITE_OPERATOR and scope:
            self.sites.add(scope)
        elif kind == Role.RESEARCHER and scope:
            self.projects.add(scope)

    def add_entitlement(self, ent: Entitlement, settings: Settings) -> None:
        if not entitlement_trusted(ent, settings):
            return
        if ent.vo == settings.entitlement_vo:
            self._federation_entitlement(ent)
            return
        path = ":".join((ent.vo, *ent.groups))
        project = settings.vo_projects.get(path)
        if project and (ent.role is None or ent.role in PROJECT_ROLES):
            self.projects.add(project)

    def _federation_entitlement(self, ent: Entitlement) -> None:
        g, role = ent.groups, ent.role
        if not g:
            if role in ADMIN_ROLES:
                self.admin = True
            elif role == Role.AUDITOR:
                self.auditor = True
        elif len(g) == 2 and g[0] == "projects" and (role is None or role in PROJECT_ROLES):
            self.projects.add(g[1])
        elif len(g) == 2 and g[0] == "sites" and role in OPERATOR_ROLES:
            self.sites.add(g[1])


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, Iterable) and not isinstance(value, Mapping):
        return [v for v in value if isinstance(v, str)]
    return []


def principal_from_claims(claims: Mapping[str, Any], settings: Settings) -> Principal:
    """The ``Principal`` of verified token claims (roles and entitlements, see module doc)."""
    grants = _Grants()
    realm_access = claims.get("realm_access")
    if isinstance(realm_access, Mapping):
        for name in _strings(realm_access.get("roles")):
            grants.add_role(name)
    resource_access = claims.get("resource_access")
    if isinstance(resource_access, Mapping):
        mine = resource_access.get(settings.keycloak_client_id)
        if isinstance(mine, Mapping):
            for name in _strings(mine.get("roles")):
                grants.add_role(name)
    for value in _strings(claims.get("eduperson_entitlement")):
        ent = parse_entitlement(value)
        if ent is not None:
            grants.add_entitlement(ent, settings)
    subject = claims.get("preferred_username") or claims.get("sub") or ""
    return Principal(
        subject=str(subject),
        admin=grants.admin,
        auditor=grants.auditor,
        sites=frozenset(grants.sites),
        projects=frozenset(grants.projects),
        client=str(claims.get("azp") or claims.get("client_id") or ""),
    )


class Verifier(Protocol):
    """Turns a bearer token into a ``Principal`` or raises ``Unauthenticated``."""

    async def principal(self, token: str) -> Principal: ...


class LocalVerifier:
    """Local mode: one generated admin token (as Jupyter prints at start)."""

    def __init__(self, token: str | None = None) -> None:
        self.token = token or secrets.token_urlsafe(32)

    async def principal(self, token: str) -> Principal:
        if not hmac.compare_digest(token.encode(), self.token.encode()):
            raise Unauthenticated("unknown token: use the one printed when the server started")
        return Principal(subject="local-admin", admin=True, client="local")


def token_header(token: str) -> dict[str, Any]:
    """The JOSE header of a compact JWS, without verifying anything."""
    try:
        head = token.split(".", 1)[0]
        header = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    except (ValueError, RecursionError):
        raise Unauthenticated("malformed token: its header is not base64url-encoded JSON") from None
    if not isinstance(header, dict) or token.count(".") != 2:
        raise Unauthenticated("malformed token: expected a signed JWT (header.payload.signature)")
    return header


VERIFIED_TTL_S = 60.0
"""How long a verified token is taken without a new signature check (never past ``exp``)."""
VERIFIED_MAX = 4096
"""Verified tokens kept at most (one per active client session)."""


class KeycloakVerifier:
    """Verifies Keycloak access tokens locally against the realm's keys."""

    def __init__(self, settings: Settings, openid: KeycloakOpenID | None = None) -> None:
        self.settings = settings
        self.openid = openid or KeycloakOpenID(
            server_url=settings.keycloak_server_url,
            realm_name=settings.keycloak_realm,
            client_id=settings.keycloak_client_id,
            client_secret_key=(
                settings.keycloak_client_secret.get_secret_value()
                if settings.keycloak_client_secret
                else None
            ),
            timeout=int(settings.keycloak_timeout_s),
        )
        self._keys: dict[str, jwk.JWK] = {}
        self._last_refresh = -float("inf")
        self._last_failure = -float("inf")
        self._unreachable = IdentityProviderUnavailable("the realm's keys are unavailable")
        self._lock = asyncio.Lock()
        self.refreshes = 0
        """How many times the key set was fetched (for tests and metrics)."""
        # Tokens verified already: token -> (claims, monotonic time until which they hold).
        # A client sends the same token with every request, and an RS256 verification
        # costs more than the rest of a small request; an entry lasts at most
        # ``VERIFIED_TTL_S`` and never past the token's ``exp``, and a new key set
        # (rotation) empties the cache, so what was refused once is refused again.
        self._verified: dict[str, tuple[dict[str, Any], float]] = {}
        self.verifications = 0
        """How many tokens were verified by signature (the cache's misses)."""

    async def refresh_keys(self) -> None:
        """Fetch the realm's signing keys (``/certs``) and replace the cache."""
        self.use_keys(await self.openid.a_certs())

    def use_keys(self, jwks: Mapping[str, Any]) -> None:
        """Replace the cached keys with the signing keys of a JWKS document (``{"keys": [...]}``).

        Keys that are not for signatures, have no ``kid``, or that jwcrypto
        cannot load are left out: they cannot have signed a token we accept.
        """
        keys: dict[str, jwk.JWK] = {}
        for cert in jwks.get("keys", []):
            if not isinstance(cert, Mapping) or cert.get("use", "sig") != "sig":
                continue
            if "kid" not in cert:
                continue
            try:
                keys[cert["kid"]] = jwk.JWK(**cert)
            except (JWException, ValueError, TypeError):
                continue
        self._keys = keys
        self._verified = {}  # verified against the old keys: verify again
        self._last_refresh = time.monotonic()
        self.refreshes += 1

    async def _key(self, kid: str) -> jwk.JWK:
        key = self._keys.get(kid)
        if key is not None:
            return key
        async with self._lock:
            key = self._keys.get(kid)
            now = time.monotonic()
            if key is None and now - self._last_refresh >= self.settings.jwks_min_refresh_s:
                if now - self._last_failure < min(self.settings.jwks_min_refresh_s, 5.0):
                    raise self._unreachable  # do not hammer a realm that just failed
                try:
                    await self.refresh_keys()
                except Exception as exc:
                    self._last_failure = time.monotonic()
                    self._unreachable = IdentityProviderUnavailable(
                        f"cannot fetch the realm's keys from {self.settings.keycloak_url}: {exc}"
                    )
                    raise self._unreachable from None
                key = self._keys.get(kid)
        if key is None:
            raise Unauthenticated(f"token signed with a key the realm does not publish (kid {kid})")
        return key

    async def claims(self, token: str) -> dict[str, Any]:
        """The verified claims of ``token``; ``Unauthenticated`` says which check failed.

        A token verified in the last ``VERIFIED_TTL_S`` seconds (and not expired since)
        is not verified again; its claims are handed out as a copy.
        """
        hit = self._verified.get(token)
        if hit is not None:
            if time.monotonic() < hit[1]:
                return dict(hit[0])
            self._verified.pop(token, None)
        claims = await self._verify(token)
        exp = claims.get("exp")
        if isinstance(exp, int | float):
            left = float(exp) + self.settings.token_leeway_s - time.time()
            if left > 0:
                if len(self._verified) >= VERIFIED_MAX:
                    self._verified.clear()  # bounded: a flood of tokens costs a re-verify
                ttl = min(left, VERIFIED_TTL_S)
                self._verified[token] = (dict(claims), time.monotonic() + ttl)
        return claims

    async def _verify(self, token: str) -> dict[str, Any]:
        self.verifications += 1
        header = token_header(token)
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in SIGNING_ALGORITHMS:
            raise Unauthenticated(f"token algorithm {alg!r} not accepted")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise Unauthenticated("token has no key id (kid)")
        key = await self._key(kid)
        s = self.settings
        try:
            claims: dict[str, Any] = self.openid.decode_token(
                token,
                validate=True,
                key=key,
                algs=[alg],
                expected_type="JWS",
                leeway=s.token_leeway_s,
                check_claims={"iss": s.issuer, "aud": s.audience, "exp": None},
            )
        except jwt.JWTExpired:
            raise Unauthenticated("token expired") from None
        except jwt.JWTMissingClaim as exc:
            raise Unauthenticated(f"token rejected: {exc}") from None
        except jwt.JWTInvalidClaimValue as exc:
            raise Unauthenticated(f"token rejected: {exc}") from None
        except (jws.InvalidJWSSignature, jws.InvalidJWSObject) as exc:
            raise Unauthenticated(f"token signature invalid: {exc}") from None
        except (JWException, ValueError, TypeError) as exc:
            raise Unauthenticated(f"token rejected: {exc}") from None
        except Exception:  # whatever else a hostile token makes the JOSE library raise
            raise Unauthenticated("token rejected: it cannot be verified") from None
        if not isinstance(claims, dict):
            raise Unauthenticated("token rejected: its claims are not a JSON object")
        typ = claims.get("typ")
        if typ is not None and str(typ).lower() not in ("bearer", "at+jwt"):
            # Keycloak's ID and refresh tokens are signed by the same key and may carry
            # the same audience: only access tokens open the API.
            raise Unauthenticated(f"not an access token (typ {typ!r})")
        nbf = claims.get("nbf")
        if isinstance(nbf, int | float) and nbf > time.time() + s.token_leeway_s:
            raise Unauthenticated("token not valid yet (nbf in the future)")
        return claims

    async def principal(self, token: str) -> Principal:
        return principal_from_claims(await self.claims(token), self.settings)


def make_verifier(settings: Settings) -> Verifier:
    """``LocalVerifier`` in local mode, ``KeycloakVerifier`` otherwise."""
    if settings.local_mode:
        local = settings.local_token.get_secret_value() if settings.local_token else None
        return LocalVerifier(local)
    return KeycloakVerifier(settings)


__all__ = [
    "Entitlement",
    "KeycloakVerifier",
    "LocalVerifier",
    "Principal",
    "Role",
    "Verifier",
    "entitlement_trusted",
    "make_verifier",
    "parse_entitlement",
    "principal_from_claims",
    "token_header",
]
