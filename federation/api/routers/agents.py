"""``/api/v1/agents/{site_id}``: the pull agents of sites that accept no inbound connection.

An agent inside the site (``continuum site-agent``) leases the next task,
downloads its inputs, uploads its outputs (the ``X-Content-SHA256`` header is
checked: a mismatch is 422 and nothing is kept), ships the task's stdout and
stderr as they grow (``/log``, bounded by ``step_log_limit_bytes``), reports the
result, renews its lease while the task runs, sends heartbeats, and uploads the
files of its site that the orchestrator asked for (``/exports``: an external
input located at the site, needed elsewhere). Every route needs the
site-operator role for that site (or federation-admin). Handlers call the
queue operations of ``orchestrator.connectors.pull``.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi import Path as FastPath
from fastapi.responses import FileResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from federation.api.deps import Context, SiteOperator
from federation.api.errors import ApiError, Conflict, NotFound
from orchestrator.connectors import pull
from orchestrator.connectors.base import ConnectorError

router = APIRouter(prefix="/api/v1/agents/{site_id}", tags=["agents"])


class ChecksumMismatch(ApiError):
    status = 422
    code = "checksum_mismatch"


class Result(BaseModel):
    model_config = ConfigDict(extra="forbid")

    handle: str = Field(min_length=1, max_length=700)
    exit_code: int
    started_at: float | None = None
    ended_at: float | None = None
    message: str = Field(default="", max_length=20_000)


class Heartbeat(BaseModel):
    model_config = ConfigDict(extra="forbid")

    agent: str = Field(min_length=1, max_length=256)
    telemetry: dict[str, float] = Field(default_factory=dict)


def mirror(ctx: Any, site: str) -> Path:
    """Where the orchestrator keeps a pull site's task inputs and outputs."""
    return Path(ctx.settings.data_dir) / "agents" / site


def _task(ctx: Any, site: str, handle: str) -> None:
    try:
        pull.leased_task(ctx.store, site, handle)
    except ConnectorError as exc:
        raise NotFound(str(exc)) from None


@router.post(
    "/lease",
    summary="Lease the site's next queued task (204 when none)",
    responses={204: {"description": "No task is waiting for this site."}},
)
def lease(
    access: SiteOperator,
    ctx: Context,
    agent: str = Query(min_length=1, max_length=256),
    lease_s: float = Query(default=60.0, gt=0, le=3600),
) -> Response:
    task = pull.lease(ctx.store, access.site, agent, lease_s)
    if task is None:
        return Response(status_code=204)
    task["log_limit"] = ctx.settings.step_log_limit_bytes
    import json

    return Response(json.dumps(task), media_type="application/json")


@router.post("/renew", summary="Extend the lease of a running task")
def renew(
    access: SiteOperator,
    ctx: Context,
    handle: str = Query(min_length=1, max_length=700),
    lease_s: float = Query(default=60.0, gt=0, le=3600),
) -> dict[str, bool]:
    if not pull.renew(ctx.store, access.site, handle, lease_s):
        raise Conflict(f"task {handle!r} is not leased by site {access.site}")
    return {"renewed": True}


@router.get("/input", summary="Download one input of a leased task")
def get_input(
    access: SiteOperator,
    ctx: Context,
    handle: str = Query(min_length=1, max_length=700),
    item: str = Query(min_length=1, max_length=1024),
) -> FileResponse:
    _task(ctx, access.site, handle)
    try:
        path = pull.input_file(mirror(ctx, access.site), handle, item)
    except ConnectorError as exc:
        raise NotFound(str(exc)) from None
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return FileResponse(path, headers={"X-Content-SHA256": digest})


@router.put("/output", summary="Upload one output of a leased task (sha256-checked)")
async def put_output(
    request: Request,
    access: SiteOperator,
    ctx: Context,
    handle: str = Query(min_length=1, max_length=700),
    item: str = Query(min_length=1, max_length=1024),
) -> dict[str, Any]:
    _task(ctx, access.site, handle)
    want = request.headers.get("x-content-sha256", "").lower()
    if not want:
        raise ChecksumMismatch("send the output's sha256 in the X-Content-SHA256 header")
    dst = pull.output_file(mirror(ctx, access.site), handle, item)
    part = dst.with_name(dst.name + ".upload")
    size, digest = await _receive(request, part)
    if digest != want:
        part.unlink()
        raise ChecksumMismatch(f"{item}: the bytes received do not match X-Content-SHA256")
    os.replace(part, dst)
    return {"item": item, "bytes": size, "sha256": want}


@router.post("/log", summary="Append a chunk of a leased task's stdout or stderr")
async def append_log(
    request: Request,
    access: SiteOperator,
    ctx: Context,
    handle: str = Query(min_length=1, max_length=700),
    stream: Literal["stdout", "stderr"] = Query(),
    offset: int = Query(ge=0, le=2**40, description="where the chunk starts in the stream"),
) -> dict[str, Any]:
    _task(ctx, access.site, handle)
    data = await request.body()
    try:
        size = pull.append_log(
            mirror(ctx, access.site),
            handle,
            stream,
            offset,
            data,
            ctx.settings.step_log_limit_bytes + 4096,  # the note between head and tail
        )
    except ConnectorError as exc:
        raise Conflict(str(exc)) from None
    return {"stream": stream, "bytes": size}


@router.get("/exports", summary="Files of the site the orchestrator waits for")
def exports(access: SiteOperator, ctx: Context) -> list[dict[str, str]]:
    return pull.pending_exports(ctx.store, access.site)


class ExportFailure(BaseModel):
    model_config = ConfigDict(extra="forbid")

    error: str = Field(min_length=1, max_length=2000)


@router.put("/exports/{export_id}", summary="Upload a file of the site (sha256-checked)")
async def put_export(
    request: Request,
    access: SiteOperator,
    ctx: Context,
    export_id: str = FastPath(pattern=r"^[0-9a-f]{32}$"),
) -> dict[str, Any]:
    try:
        pull.export_row(ctx.store, access.site, export_id)
    except ConnectorError as exc:
        raise NotFound(str(exc)) from None
    want = request.headers.get("x-content-sha256", "").lower()
    if not want:
        raise ChecksumMismatch("send the file's sha256 in the X-Content-SHA256 header")
    dst = pull.export_file(mirror(ctx, access.site), export_id)
    dst.parent.mkdir(parents=True, exist_ok=True)
    size, digest = await _receive(request, dst)
    if digest != want:
        raise ChecksumMismatch("the bytes received do not match X-Content-SHA256")
    pull.finish_export(ctx.store, access.site, export_id, sha256=digest, size=size)
    return {"id": export_id, "bytes": size, "sha256": digest}


@router.post("/exports/{export_id}/failed", summary="The site cannot read the file asked for")
def export_failed(
    body: ExportFailure,
    access: SiteOperator,
    ctx: Context,
    export_id: str = FastPath(pattern=r"^[0-9a-f]{32}$"),
) -> dict[str, str]:
    try:
        pull.finish_export(ctx.store, access.site, export_id, error=body.error)
    except ConnectorError as exc:
        raise NotFound(str(exc)) from None
    return {"id": export_id, "state": "failed"}


async def _receive(request: Request, dst: Path) -> tuple[int, str]:
    """Stream the request's body into ``dst`` (renamed into place once whole and synced);
    its size and sha256. A partial body leaves nothing at ``dst``."""
    tmp = dst.with_name(dst.name + ".part")
    h = hashlib.sha256()
    size = 0
    with open(tmp, "wb") as f:
        async for chunk in request.stream():
            h.update(chunk)
            f.write(chunk)
            size += len(chunk)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, dst)
    return size, h.hexdigest()


@router.post("/result", summary="Report a leased task's result")
def result(body: Result, access: SiteOperator, ctx: Context) -> dict[str, str]:
    try:
        pull.complete(
            ctx.store,
            access.site,
            body.handle,
            body.exit_code,
            body.started_at,
            body.ended_at,
            body.message,
        )
    except ConnectorError as exc:
        raise Conflict(str(exc)) from None
    return {"handle": body.handle, "state": "done"}


@router.post("/heartbeat", summary="The agent is alive; current observations of the site")
def beat(body: Heartbeat, access: SiteOperator, ctx: Context) -> dict[str, str]:
    pull.heartbeat(ctx.store, access.site, body.agent, body.telemetry)
    return {"site": access.site}
