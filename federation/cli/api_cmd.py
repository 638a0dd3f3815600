"""CLI commands of the federation service: ``serve`` and ``aai bootstrap``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from federation.cli.common import console, err_console

aai_app = typer.Typer(
    name="aai",
    help="Keycloak realm set-up for the API (roles, clients, mappers).",
    no_args_is_help=True,
)


def serve(
    host: Annotated[str | None, typer.Option(help="Interface to bind (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="TCP port (default 8080; 0: any free).")] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(help="Folder of the SQLite store and buffers (~/.local/share/continuum)."),
    ] = None,
    federation: Annotated[
        Path | None,
        typer.Option(
            help="Register this federation (sites, links, projects) at start, when none is yet."
        ),
    ] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
) -> None:
    """Run the federation REST API (uvicorn).

    Without CONTINUUM_KEYCLOAK_URL the server runs in local mode: it binds only
    to loopback and prints one admin token; a non-loopback --host is refused.
    Every setting is also read from CONTINUUM_* variables and a .env file.
    """
    import uvicorn

    from federation.api import create_app
    from federation.api.server import bind_tcp, bound_port, freeze_startup_objects
    from federation.settings import load_settings

    settings = load_settings(host=host, port=port, data_dir=data_dir)
    app = create_app(settings)
    if federation is not None:
        if _seed(app, federation):
            console.print(f"registered the federation of {federation}")
        else:
            console.print(f"a federation is registered already: {federation} left unused")
    try:
        sock = bind_tcp(settings.host, settings.port)
    except OSError as exc:
        raise OSError(f"cannot listen on {settings.host}:{settings.port}: {exc}") from None
    bound = bound_port(sock)
    freeze_startup_objects()  # no full-collection pauses over the app's own objects
    config = uvicorn.Config(app, host=settings.host, port=bound, log_level=log_level)
    server = uvicorn.Server(config)
    url = f"http://{_url_host(settings.host)}:{bound}"
    console.print(f"continuum API on {url}  (docs: {url}/docs)  data: {settings.data_dir}")
    if app.state.local_token:
        console.print(
            f'e.g. curl -H "Authorization: Bearer $TOKEN" {url}/api/v1/sites\n'
            "local mode (no Keycloak): the dashboard (the token rides in the URL's fragment, "
            "never sent to a server) and the admin token, shown only now:\n"
            f"    {url}/#token={app.state.local_token}\n"
            f"    Authorization: Bearer {app.state.local_token}",
            soft_wrap=True,
        )
    else:
        console.print(f"Keycloak mode: tokens of {settings.issuer} for {settings.audience}")
        console.print(f"dashboard: {url}/ (log in with the realm)")
    console.file.flush()
    server.run(sockets=[sock])


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _seed(app: object, path: Path) -> bool:
    """Register the whole federation of ``path`` when the registry holds no site yet."""
    from federation.api import registry
    from federation.api.deps import ApiContext
    from federation.model import load_federation

    fed = load_federation(path)
    ctx: ApiContext = app.state.ctx  # type: ignore[attr-defined]
    with ctx.store.session() as db:
        if registry.load(db) is not None:
            return False
        registry.lock(db)
        registry.replace(db, fed, "cli")
    return True


@aai_app.command("bootstrap")
def bootstrap(
    server_url: Annotated[
        str | None, typer.Option(help="Keycloak base URL (CONTINUUM_KEYCLOAK_URL).")
    ] = None,
    realm: Annotated[str, typer.Option(help="Target realm (must exist).")] = "continuum",
    admin_realm: Annotated[str, typer.Option(help="Realm the admin logs into.")] = "master",
    username: Annotated[
        str | None, typer.Option(envvar="CONTINUUM_KEYCLOAK_ADMIN_USER", help="Admin user.")
    ] = None,
    password: Annotated[
        str | None,
        typer.Option(envvar="CONTINUUM_KEYCLOAK_ADMIN_PASSWORD", help="Admin password."),
    ] = None,
    client_id: Annotated[str, typer.Option(help="Admin client.")] = "admin-cli",
    client_secret: Annotated[
        str | None,
        typer.Option(
            envvar="CONTINUUM_KEYCLOAK_ADMIN_SECRET",
            help="Secret of a service-account admin client (instead of user/password).",
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print what would be created; connect to nothing.")
    ] = False,
) -> None:
    """Create the API's realm roles, clients, mappers, client roles and groups in a realm.

    The same content as federation/keycloak/realm-export.json (which a new
    Keycloak can import as is); existing items are kept.
    """
    from federation.api.bootstrap import bootstrap_plan, bootstrap_realm

    if dry_run:
        for action in bootstrap_plan():
            console.print(f"would create {action}")
        return
    import os

    url = server_url or os.environ.get("CONTINUUM_KEYCLOAK_URL")
    if not url:
        raise typer.BadParameter("give --server-url or set CONTINUUM_KEYCLOAK_URL")
    if not client_secret and not (username and password):
        raise typer.BadParameter(
            "give --username and --password (or CONTINUUM_KEYCLOAK_ADMIN_USER/_PASSWORD), "
            "or --client-secret of a service-account admin client"
        )
    from keycloak import KeycloakAdmin, KeycloakOpenIDConnection

    connection = KeycloakOpenIDConnection(
        server_url=url if url.endswith("/") else url + "/",
        username=username,
        password=password,
        realm_name=realm,
        user_realm_name=admin_realm,
        client_id=client_id,
        client_secret_key=client_secret,
        grant_type="client_credentials" if client_secret else "password",
    )
    try:
        done = bootstrap_realm(KeycloakAdmin(connection=connection))
    except Exception as exc:
        raise RuntimeError(f"Keycloak at {url}, realm {realm!r}: {exc}") from exc
    for action in done:
        console.print(f"created {action}")
    err_console.print(f"realm {realm!r}: {len(done)} item(s) created, the rest already existed")


def register(app: typer.Typer) -> None:
    """Add the service's commands to ``app``."""
    app.command()(serve)
    app.add_typer(aai_app)
