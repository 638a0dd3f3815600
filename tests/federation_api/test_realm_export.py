"""The shipped Keycloak realm export agrees with what the API checks.

``bootstrap_realm`` needs Keycloak's admin API, which the test provider does
not have; what is tested here is the export it applies (the same one a real
Keycloak imports), the plan it follows, and the CLI's dry run.
"""

from __future__ import annotations

import subprocess
import sys

from federation.api import Role, principal_from_claims
from federation.api.bootstrap import bootstrap_plan, realm_export
from federation.settings import Settings


def test_realm_roles_are_the_api_roles() -> None:
    export = realm_export()
    assert {r["name"] for r in export["roles"]["realm"]} == {r.value for r in Role}
    assert export["realm"] == Settings().keycloak_realm


def test_every_client_puts_the_api_in_the_audience() -> None:
    export = realm_export()
    audience = Settings().audience
    client_ids = {c["clientId"] for c in export["clients"]}
    assert Settings().keycloak_client_id in client_ids
    for client in export["clients"]:
        mappers = [
            m for m in client["protocolMappers"] if m["protocolMapper"] == "oidc-audience-mapper"
        ]
        assert len(mappers) == 1, client["clientId"]
        assert mappers[0]["config"]["included.client.audience"] == audience
        assert mappers[0]["config"]["access.token.claim"] == "true"


def test_the_entitlement_mapper_fills_the_claim_the_api_reads() -> None:
    api = next(c for c in realm_export()["clients"] if c["clientId"] == "continuum-api")
    (mapper,) = [m for m in api["protocolMappers"] if m["name"] == "eduperson_entitlement"]
    assert mapper["config"]["claim.name"] == "eduperson_entitlement"
    assert mapper["config"]["multivalued"] == "true"


def test_scoped_client_roles_of_the_export_grant_what_they_say() -> None:
    settings = Settings()
    roles = [r["name"] for r in realm_export()["roles"]["client"][settings.keycloak_client_id]]
    p = principal_from_claims(
        {"resource_access": {settings.keycloak_client_id: {"roles": roles}}}, settings
    )
    assert p.projects == {"demo"}
    assert p.sites == {"ddf-fatnode"}


def test_bootstrap_plan_covers_the_export_and_the_cli_dry_run_prints_it() -> None:
    export = realm_export()
    plan = bootstrap_plan(export)
    kinds = [a.kind for a in plan]
    assert kinds.count("realm-role") == len(export["roles"]["realm"])
    assert kinds.count("client") == len(export["clients"])
    assert kinds.count("mapper") == sum(len(c["protocolMappers"]) for c in export["clients"])
    assert "group projects on /continuum" in [str(a) for a in plan]
    out = subprocess.run(
        [sys.executable, "-m", "federation.cli", "aai", "bootstrap", "--dry-run"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert out.count("would create") == len(plan)
    assert "would create client continuum-api" in out


def test_the_export_says_how_entitlements_become_trusted() -> None:
    """Issue 15: none is trusted by default; the export names the two settings to change."""
    attributes = realm_export()["attributes"]
    howto = attributes["continuum.entitlement.howto"]
    for field in ("entitlement_namespaces", "entitlement_authorities"):
        assert field in Settings.model_fields
        assert Settings.model_fields[field].default == ()
        assert f"CONTINUUM_{field.upper()}" in howto
    assert attributes["continuum.entitlement.namespaces"] == ""
    assert attributes["continuum.entitlement.authorities"] == ""
