"""Roles and AARC-G069 entitlements -> Principal (pure functions, no server)."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from federation.api import LocalVerifier, Principal, Role, parse_entitlement, principal_from_claims
from federation.api.deps import site_operator
from federation.api.errors import Forbidden, Unauthenticated
from federation.settings import Settings

SETTINGS = Settings(
    entitlement_vo="continuum",
    vo_projects={"vo.lofar.eu:ddf": "ddf"},
    entitlement_namespaces=("geant:x.org", "mace:egi.eu"),
    entitlement_authorities=("sso.x.org", "aai.egi.eu"),
)


def test_parse_entitlement_splits_namespace_vo_groups_role_and_authority() -> None:
    ent = parse_entitlement("urn:mace:egi.eu:group:vo.lofar.eu:ddf:imaging:role=member#aai.egi.eu")
    assert ent is not None
    assert ent.namespace == "mace:egi.eu"
    assert ent.vo == "vo.lofar.eu"
    assert ent.groups == ("ddf", "imaging")
    assert ent.role == "member"
    assert ent.authority == "aai.egi.eu"
    bare = parse_entitlement("urn:geant:example.org:group:continuum")
    assert bare is not None
    assert (bare.vo, bare.groups, bare.role, bare.authority) == ("continuum", (), None, None)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "continuum",
        "urn:mace:egi.eu:vo.lofar.eu",
        "urn:x:group:",
        "urn:x:group:a::b",
        "x:group:a",
    ],
)
def test_parse_entitlement_rejects_non_entitlements(value: str) -> None:
    assert parse_entitlement(value) is None


def test_realm_and_own_client_roles_map_to_scoped_grants() -> None:
    p = principal_from_claims(
        {
            "sub": "u1",
            "preferred_username": "alice",
            "realm_access": {"roles": ["auditor", "offline_access", "researcher:ignored-no"]},
            "resource_access": {
                "continuum-api": {"roles": ["site-operator:ddf-fatnode", "researcher:proj-a"]},
                "other-client": {"roles": ["federation-admin", "researcher:proj-z"]},
            },
        },
        SETTINGS,
    )
    assert p.subject == "alice"
    assert p.auditor
    assert not p.admin
    assert p.sites == {"ddf-fatnode"}
    assert p.projects == {"proj-a", "ignored-no"}
    assert p.roles == {Role.AUDITOR, Role.SITE_OPERATOR, Role.RESEARCHER}


def test_unscoped_operator_and_researcher_roles_grant_nothing_by_themselves() -> None:
    p = principal_from_claims(
        {"realm_access": {"roles": ["site-operator", "researcher"]}}, SETTINGS
    )
    assert not p.is_member


def test_entitlements_of_the_federation_vo() -> None:
    ents = [
        "urn:geant:x.org:group:continuum:projects:proj-a#sso.x.org",
        "urn:geant:x.org:group:continuum:projects:proj-b:role=manager#sso.x.org",
        "urn:geant:x.org:group:continuum:projects:proj-c:role=guest#sso.x.org",
        "urn:geant:x.org:group:continuum:sites:gpu-centre:role=operator#sso.x.org",
        "urn:geant:x.org:group:continuum:sites:edge-station#sso.x.org",
        "urn:geant:x.org:group:continuum:role=auditor#sso.x.org",
        "urn:geant:x.org:group:elsewhere:projects:proj-d#sso.x.org",
    ]
    p = principal_from_claims({"sub": "s", "eduperson_entitlement": ents}, SETTINGS)
    assert p.projects == {"proj-a", "proj-b"}  # guest is no researcher; other VOs unmapped
    assert p.sites == {"gpu-centre"}  # a site group without the operator role grants nothing
    assert p.auditor
    assert not p.admin
    ent = "urn:geant:x.org:group:continuum:role=federation-admin#sso.x.org"
    admin = principal_from_claims({"eduperson_entitlement": ent}, SETTINGS)
    assert admin.admin


def test_other_vos_map_to_projects_only_when_configured() -> None:
    claims = {
        "eduperson_entitlement": [
            "urn:mace:egi.eu:group:vo.lofar.eu:ddf:role=member#aai.egi.eu",
            "urn:mace:egi.eu:group:vo.lofar.eu:role=member#aai.egi.eu",
        ]
    }
    assert principal_from_claims(claims, SETTINGS).projects == {"ddf"}


def test_untrusted_authorities_are_ignored() -> None:
    settings = Settings(entitlement_namespaces=("g:x",), entitlement_authorities=("sso.x.org",))
    claims = {
        "eduperson_entitlement": [
            "urn:g:x:group:continuum:projects:good#sso.x.org",
            "urn:g:x:group:continuum:projects:bad#evil.example",
            "urn:g:x:group:continuum:role=admin",
        ]
    }
    p = principal_from_claims(claims, settings)
    assert p.projects == {"good"}
    assert not p.admin


ATTACK = "urn:geant:evil.org:group:continuum:role=admin#evil.org"


def test_no_entitlement_is_trusted_until_namespaces_and_authorities_are_configured() -> None:
    """The attack of issue 15: any namespace and authority made the caller an admin."""
    claims = {
        "eduperson_entitlement": [
            ATTACK,
            "urn:geant:x.org:group:continuum:projects:proj-a#sso.x.org",
        ]
    }
    p = principal_from_claims(claims, Settings())
    assert not p.admin
    assert not p.projects
    assert not p.is_member


@pytest.mark.parametrize(
    ("namespaces", "authorities"),
    [
        (("geant:x.org",), ("sso.x.org",)),  # the attacker's namespace and authority: neither
        (("geant:evil.org",), ("sso.x.org",)),  # a trusted namespace, another authority
        (("geant:x.org",), ("evil.org",)),  # a trusted authority, another namespace
    ],
)
def test_an_entitlement_needs_both_a_trusted_namespace_and_authority(
    namespaces: tuple[str, ...], authorities: tuple[str, ...]
) -> None:
    settings = Settings(entitlement_namespaces=namespaces, entitlement_authorities=authorities)
    assert not principal_from_claims({"eduperson_entitlement": [ATTACK]}, settings).admin
    trusted = Settings(
        entitlement_namespaces=("geant:evil.org",), entitlement_authorities=("evil.org",)
    )
    assert principal_from_claims({"eduperson_entitlement": [ATTACK]}, trusted).admin


def test_principal_permissions() -> None:
    researcher = Principal("r", projects=frozenset({"a"}))
    auditor = Principal("au", auditor=True)
    admin = Principal("ad", admin=True)
    assert researcher.can_write_project("a")
    assert not researcher.can_read_project("b")
    assert auditor.can_read_project("b")
    assert not auditor.can_write_project("b")
    assert admin.can_write_project("b")
    assert admin.can_operate_site("any")
    assert researcher.visible_projects() == frozenset({"a"})
    assert auditor.visible_projects() is None


def test_local_verifier_accepts_only_its_token() -> None:
    verifier = LocalVerifier()
    assert len(verifier.token) >= 40
    who = asyncio.run(verifier.principal(verifier.token))
    assert who.admin
    with pytest.raises(Unauthenticated):
        asyncio.run(verifier.principal(verifier.token[:-1] + "x"))
    assert LocalVerifier().token != verifier.token


def test_site_operator_dependency_for_telemetry_routes() -> None:
    operator = Principal("o", sites=frozenset({"ddf-fatnode"}))
    assert asyncio.run(site_operator("ddf-fatnode", operator)).site == "ddf-fatnode"
    with pytest.raises(Forbidden):
        asyncio.run(site_operator("gpu-centre", operator))
    researcher = Principal("r", projects=frozenset({"ddf-fatnode"}))
    with pytest.raises(Forbidden):
        asyncio.run(site_operator("ddf-fatnode", researcher))
    assert asyncio.run(site_operator("gpu-centre", Principal("a", admin=True))).who.admin


_PART = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789.-_", min_size=1, max_size=12)


@given(
    namespace=st.lists(_PART.filter(lambda p: p != "group"), min_size=1, max_size=3).map(":".join),
    vo=_PART,
    groups=st.lists(_PART.filter(lambda g: g != "group"), max_size=3).map(tuple),
    role=st.none() | _PART,
    authority=st.none() | _PART,
)
def test_entitlements_round_trip(
    namespace: str, vo: str, groups: tuple[str, ...], role: str | None, authority: str | None
) -> None:
    text = f"urn:{namespace}:group:" + ":".join((vo, *groups))
    text += f":role={role}" if role else ""
    text += f"#{authority}" if authority else ""
    ent = parse_entitlement(text)
    assert ent is not None
    assert (ent.namespace, ent.vo, ent.groups, ent.role, ent.authority) == (
        namespace,
        vo,
        groups,
        role,
        authority,
    )


def test_a_project_group_of_another_vo_grants_its_project_for_member_roles_only() -> None:
    def projects(value: str) -> frozenset[str]:
        claims = {"eduperson_entitlement": [value]}
        return principal_from_claims(claims, SETTINGS).projects

    group = "urn:mace:egi.eu:group:vo.lofar.eu:ddf"
    assert projects(f"{group}#aai.egi.eu") == {"ddf"}
    for role in ("member", "researcher", "manager"):
        assert projects(f"{group}:role={role}#aai.egi.eu") == {"ddf"}
    for role in ("admin", "operator", "auditor"):
        assert projects(f"{group}:role={role}#aai.egi.eu") == frozenset()


def test_the_first_group_keyword_ends_the_namespace() -> None:
    ent = parse_entitlement("urn:geant:x.org:group:continuum:group:sub#sso.x.org")
    assert ent is not None
    assert (ent.namespace, ent.vo, ent.groups) == ("geant:x.org", "continuum", ("group", "sub"))


def test_subject_and_client_fall_back_to_sub_and_client_id() -> None:
    full = {"preferred_username": "ada", "sub": "u-1", "azp": "cli", "client_id": "other"}
    who = principal_from_claims(full, SETTINGS)
    assert (who.subject, who.client) == ("ada", "cli")
    bare = {"sub": "u-1", "client_id": "svc"}
    who = principal_from_claims(bare, SETTINGS)
    assert (who.subject, who.client) == ("u-1", "svc")
    nobody = principal_from_claims({}, SETTINGS)
    assert (nobody.subject, nobody.client) == ("", "")
