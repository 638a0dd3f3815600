"""The Keycloak realm the API expects, and ``bootstrap_realm`` to create it in an existing realm.

``federation/keycloak/realm-export.json`` is the single description: a real
Keycloak imports it as is (``kc.sh import --file realm-export.json``, or the
admin console's "Create realm" from a file); ``bootstrap_realm`` creates the
same realm roles, clients (with their audience and entitlement mappers),
client roles and groups in a realm that already exists, through
python-keycloak's ``KeycloakAdmin``. Both are idempotent: what exists is kept.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from keycloak import KeycloakAdmin

REALM_EXPORT = "keycloak/realm-export.json"


def realm_export() -> dict[str, Any]:
    """The realm export shipped with the package."""
    text = resources.files("federation").joinpath(REALM_EXPORT).read_text(encoding="utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


@dataclass(frozen=True)
class BootstrapAction:
    """One thing ``bootstrap_realm`` creates (when it is missing)."""

    kind: str  # realm-role, client, mapper, client-role, group
    name: str
    parent: str = ""

    def __str__(self) -> str:
        where = f" on {self.parent}" if self.parent else ""
        return f"{self.kind} {self.name}{where}"


def _client_payload(client: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in client.items() if k != "protocolMappers"}


def _groups(groups: list[dict[str, Any]], parent: str = "") -> list[BootstrapAction]:
    out = []
    for g in groups:
        out.append(BootstrapAction("group", g["name"], parent))
        out += _groups(g.get("subGroups", []), f"{parent}/{g['name']}")
    return out


def bootstrap_plan(export: dict[str, Any] | None = None) -> list[BootstrapAction]:
    """What ``bootstrap_realm`` creates, in order, from ``export`` (default: the shipped one)."""
    export = export or realm_export()
    actions = [BootstrapAction("realm-role", r["name"]) for r in export["roles"]["realm"]]
    for client in export.get("clients", []):
        cid = client["clientId"]
        actions.append(BootstrapAction("client", cid))
        actions += [
            BootstrapAction("mapper", m["name"], cid) for m in client.get("protocolMappers", [])
        ]
    for cid, roles in export["roles"].get("client", {}).items():
        actions += [BootstrapAction("client-role", r["name"], cid) for r in roles]
    return actions + _groups(export.get("groups", []))


def bootstrap_realm(
    admin: KeycloakAdmin, export: dict[str, Any] | None = None
) -> list[BootstrapAction]:
    """Create in ``admin``'s realm what ``export`` declares and is missing; return what was done.

    ``admin`` must be connected to the target realm (``realm_name``) with
    rights to manage it (realm-admin, or the master realm's admin).
    """
    export = export or realm_export()
    done: list[BootstrapAction] = []
    existing_roles = {r["name"] for r in admin.get_realm_roles()}
    for role in export["roles"]["realm"]:
        if role["name"] not in existing_roles:
            admin.create_realm_role(role, skip_exists=True)
            done.append(BootstrapAction("realm-role", role["name"]))
    for client in export.get("clients", []):
        cid = client["clientId"]
        uuid = admin.get_client_id(cid)
        if uuid is None:
            admin.create_client(_client_payload(client), skip_exists=True)
            uuid = admin.get_client_id(cid)
            done.append(BootstrapAction("client", cid))
        if uuid is None:
            raise RuntimeError(f"Keycloak did not create client {cid!r}")
        have = {m["name"] for m in admin.get_mappers_from_client(uuid)}
        for mapper in client.get("protocolMappers", []):
            if mapper["name"] not in have:
                admin.add_mapper_to_client(uuid, mapper)
                done.append(BootstrapAction("mapper", mapper["name"], cid))
    for cid, roles in export["roles"].get("client", {}).items():
        uuid = admin.get_client_id(cid)
        if uuid is None:
            raise RuntimeError(f"client {cid!r} has roles in the export but is not declared")
        for role in roles:
            name = admin.create_client_role(uuid, role, skip_exists=True)
            if name:
                done.append(BootstrapAction("client-role", role["name"], cid))
    done += _create_groups(admin, export.get("groups", []), None, "")
    return done


def _create_groups(
    admin: KeycloakAdmin, groups: list[dict[str, Any]], parent_id: str | None, parent: str
) -> list[BootstrapAction]:
    done = []
    for g in groups:
        path = f"{parent}/{g['name']}"
        try:
            found = admin.get_group_by_path(path)
        except Exception:  # python-keycloak raises KeycloakGetError on 404
            found = None
        if found and found.get("id"):
            gid = found["id"]
        else:
            gid = admin.create_group({"name": g["name"]}, parent=parent_id, skip_exists=True)
            done.append(BootstrapAction("group", g["name"], parent))
        done += _create_groups(admin, g.get("subGroups", []), gid, path)
    return done


__all__ = ["BootstrapAction", "bootstrap_plan", "bootstrap_realm", "realm_export"]
