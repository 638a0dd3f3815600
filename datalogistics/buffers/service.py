"""The buffer service of one site: a FastAPI app over a ``BufferStore``.

Routes (every one needs ``Authorization: Bearer <capability token>``, see
``datalogistics.buffers.tokens``; *right* is what the token must grant)::

    GET    /health                          (none)  site, buffers, bytes reserved/stored, quota,
                                                    data_port (None: no data port)
    POST   /buffers                         admin   create {max_size, ttl, consumers, item, id}
    GET    /buffers                         admin   list live buffers
    GET    /buffers/{id}                    read|write|admin   state, size, sha256, ...
    POST   /buffers/{id}/data?offset=&tag=&durable=  write   append the body (X-Content-SHA256:
                                                    chunk digest; durable=false: answered
                                                    before the fsync, committed behind)
    GET    /buffers/{id}/data?offset=&limit=        read  bytes from offset
    GET    /buffers/{id}/data?session=&limit=       read  continue a named read session
    POST   /buffers/{id}/push               read    append this sealed buffer to a buffer of a
                                                    peer service {destination, token,
                                                    chunk_size, seconds, max_bytes}
    GET    /buffers/{id}/tags/{tag}         read    where a tag's chunk lies, its sha256
    POST   /buffers/{id}/seal               write   close to writes {sha256: expected digest},
                                                    checked against the bytes on disk
    POST   /buffers/{id}/drained?consumer=  read bound to that consumer: it is done
    POST   /buffers/{id}/disable            admin
    DELETE /buffers/{id}                    admin

An append may list the chunks its body is made of (``X-Chunk-SHA256s:
<length>:<sha256>,...``, instead of ``X-Content-SHA256`` and a tag): each is
verified and appended as an append of its own, the first that fails its digest
is refused (422) and the ones before it stay. A push sends the source's appends
this way, several in one request, or the same appends through the destination's data port
(``datalogistics.buffers.dataport``: a TCP port of its own, same tokens, checks and errors).

Data responses carry ``X-Content-SHA256`` (digest of the bytes returned),
``X-Offset``, ``X-Buffer-Size`` and ``X-Buffer-State``. Errors answer
``{"error": <class>, "detail": <what to change>}`` with the status of
``STATUS`` below (the only place the package maps errors to HTTP).

An append streams the request body to the file as it arrives (the memory of
the service does not grow with the size of an append). A read session drains
the buffer only for the consumer its token is bound to. The service's folder
is private (0700, files 0600), its secret included.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import secrets
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Annotated, Any

import httpx
from fastapi import Depends, FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from datalogistics.buffers.client import BufferClient, BufferRef
from datalogistics.buffers.dataport import DataPortServer
from datalogistics.buffers.push import push_buffer
from datalogistics.buffers.store import (
    DEFAULT_MAX_TTL,
    AppendLease,
    BufferInfo,
    BufferStore,
    Quota,
)
from datalogistics.buffers.tokens import Capability, Right, verify_token
from datalogistics.errors import (
    BufferGone,
    BufferNotFound,
    BufferServiceError,
    BufferStateError,
    BufferTooLarge,
    ChecksumMismatch,
    Forbidden,
    OffsetMismatch,
    PushRefused,
    QuotaExceeded,
    TagExists,
    Unauthorized,
)

STATUS: dict[type[BufferServiceError], int] = {
    Unauthorized: 401,
    Forbidden: 403,
    BufferNotFound: 404,
    BufferStateError: 409,
    TagExists: 409,
    OffsetMismatch: 409,
    BufferGone: 410,
    BufferTooLarge: 413,
    ChecksumMismatch: 422,
    QuotaExceeded: 507,
}


def error_answer(exc: Exception) -> tuple[int, dict[str, str]]:
    """The status and body answered for ``exc``: ``STATUS`` for the buffer errors, 422 for a
    ``ValueError`` (what the request got wrong), 500 otherwise."""
    if isinstance(exc, BufferServiceError):
        status = next((v for k, v in STATUS.items() if isinstance(exc, k)), 400)
    elif isinstance(exc, ValueError):
        return 422, {"error": "ValueError", "detail": str(exc)}
    else:
        status = 500
    return status, {"error": type(exc).__name__, "detail": str(exc)}


WRITE_BLOCK = 2**20
"""Bytes of an append's body handed to the writer thread at a time."""


class CreateBuffer(BaseModel):
    """Body of ``POST /buffers``."""

    model_config = ConfigDict(allow_inf_nan=False)

    max_size: int = Field(gt=0, le=2**63 - 1, description="bytes")
    ttl: float = Field(
        gt=0, description="seconds until the buffer is destroyed (at most the service's max_ttl)"
    )
    consumers: list[str] = Field(default_factory=list)
    item: str | None = None
    id: str | None = None


class Push(BaseModel):
    """Body of ``POST /buffers/{id}/push``."""

    model_config = ConfigDict(allow_inf_nan=False)

    destination: str = Field(
        description="URL of the destination buffer, one of this service's peers"
    )
    token: str = Field(description="write token of the destination buffer")
    chunk_size: int = Field(default=8 * 2**20, gt=0, le=2**30, description="bytes an append")
    seconds: float = Field(default=10.0, gt=0, le=300, description="stop after about this long")
    max_bytes: int | None = Field(default=None, gt=0, description="stop after this many bytes")


def peer_base(url: str) -> str:
    """The base URL of a peer buffer service, as compared with a push's destination."""
    return url.rstrip("/").lower()


class Seal(BaseModel):
    """Body of ``POST /buffers/{id}/seal``."""

    sha256: str | None = None


_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")
MAX_CHUNKS = 1024
"""Most chunks one append may list in ``X-Chunk-SHA256s``."""


def parse_chunk_list(value: str, content_length: str | None) -> list[tuple[int | None, str | None]]:
    """``X-Chunk-SHA256s: <length>:<sha256>,...``: the chunks of an append's body, in order,
    each appended (and verified against its digest) as an append of its own."""
    chunks: list[tuple[int | None, str | None]] = []
    for item in value.split(","):
        length, sep, digest = item.strip().partition(":")
        if not sep or not length.isdigit() or int(length) <= 0 or not _HEX64.match(digest):
            raise ValueError(
                f"X-Chunk-SHA256s lists <length>:<sha256> pairs separated by commas, got {item!r}"
            )
        chunks.append((int(length), digest.lower()))
    if len(chunks) > MAX_CHUNKS:
        raise ValueError(f"X-Chunk-SHA256s lists {len(chunks)} chunks, at most {MAX_CHUNKS}")
    total = sum(n or 0 for n, _ in chunks)
    if content_length is None or int(content_length) != total:
        raise ValueError(
            f"X-Chunk-SHA256s lists {total} bytes, the body has Content-Length {content_length}"
        )
    return chunks


async def stream_chunk(
    store: BufferStore,
    lease: AppendLease,
    body: AsyncIterator[bytes],
    length: int | None,
    rest: bytes,
) -> bytes:
    """Write ``length`` bytes of ``body`` (``rest`` first; all of it when ``length`` is None)
    through ``lease``; the bytes received past them.

    The bytes go to a worker thread one block of ``WRITE_BLOCK`` at a time, in order: the
    loop receives the next block while the thread hashes and writes this one (both release
    the GIL). Past the buffer's maximum size, the body is still read to its end so the
    client gets the 413 answer. ``abort_append`` on any failure.
    """
    loop = asyncio.get_running_loop()
    writing: asyncio.Future[None] | None = None  # the block being hashed and written
    refused: BufferTooLarge | None = None
    block: list[bytes] = []
    held = 0
    need = -1 if length is None else length

    async def hand_over() -> None:
        nonlocal writing, block, held, refused
        data = block
        block, held = [], 0
        if writing is not None:
            try:
                await writing
            except BufferTooLarge as exc:
                refused = exc
            writing = None
        if refused is None and data:
            writing = loop.run_in_executor(None, lease.write_pieces, data)

    try:
        while need != 0:
            if rest:
                piece, rest = rest, b""
            else:
                try:
                    piece = await body.__anext__()
                except StopAsyncIteration:
                    break
            if 0 <= need < len(piece):
                piece, rest = piece[:need], piece[need:]
            if need > 0:
                need -= len(piece)
            if refused is None and piece:
                block.append(piece)
                held += len(piece)
                if held >= WRITE_BLOCK:
                    await hand_over()
        await hand_over()
        await hand_over()  # waits for the last block
    except BaseException:
        if writing is not None:
            with contextlib.suppress(BaseException):
                await writing
        store.abort_append(lease)
        raise
    if refused is not None:
        store.abort_append(lease)
        raise refused
    if need > 0:
        store.abort_append(lease)
        raise ValueError(f"the body ended {need} bytes short of the chunk at {lease.start}")
    return rest


def load_or_create_secret(root: Path) -> str:
    """The secret in ``root/secret``, created (random, mode 0600 in a 0700 folder) when missing."""
    path = root / "secret"
    if path.exists():
        return path.read_text().strip()
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o700)
    value = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    return value


def capability(request: Request) -> Capability:
    """The capability of the request's bearer token (``Unauthorized`` if none is valid)."""
    auth = request.headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() != "bearer":
        token = ""
    store: BufferStore = request.app.state.store
    return verify_token(request.app.state.secret, token.strip(), now=store.clock())


Cap = Annotated[Capability, Depends(capability)]


def create_app(
    store: BufferStore,
    secret: str | bytes,
    reap_interval: float = 30.0,
    peers: Iterable[str] = (),
    data_port: int | None = None,
    data_host: str = "127.0.0.1",
) -> FastAPI:
    """The buffer service of ``store.site``; tokens are checked against ``secret``.

    ``peers``: base URLs (``http://host:port``) of the buffer services this one pushes
    buffers to when asked (``POST /buffers/{id}/push``); any other destination is refused.
    ``data_port``: the TCP port of the service's data port on ``data_host``, where its
    peers push appends (``datalogistics.buffers.dataport``; 0: a free port, None: no data
    port); ``GET /health`` says which (``data_port``), and runs while the app does.
    """

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        async def reap() -> None:
            while True:
                await asyncio.sleep(reap_interval)
                await run_in_threadpool(store.expire)

        if data_port is not None:
            app.state.data_port = DataPortServer(
                store, secret, error_answer, host=data_host, port=data_port
            ).start()
        task = asyncio.create_task(reap())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            if app.state.data_port is not None:
                await run_in_threadpool(app.state.data_port.stop)
                app.state.data_port = None

    app = FastAPI(title=f"continuum buffer service ({store.site})", lifespan=lifespan)
    app.state.store = store
    app.state.secret = secret
    app.state.peers = {peer_base(p) for p in peers}
    app.state.data_port = None

    @app.exception_handler(BufferServiceError)
    async def _buffer_error(_request: Request, exc: BufferServiceError) -> JSONResponse:
        status, body = error_answer(exc)
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return JSONResponse(body, status_code=status, headers=headers)

    @app.exception_handler(ValueError)
    async def _value_error(_request: Request, exc: ValueError) -> JSONResponse:
        status, body = error_answer(exc)
        return JSONResponse(body, status_code=status)

    def data_response(
        data: bytes, offset: int, info: BufferInfo, digest: str | None = None
    ) -> Response:
        return Response(
            content=data,
            media_type="application/octet-stream",
            headers={
                "X-Content-SHA256": digest or hashlib.sha256(data).hexdigest(),
                "X-Offset": str(offset),
                "X-Buffer-Size": str(info.size),
                "X-Buffer-State": info.state,
            },
        )

    @app.get("/health")
    def health() -> dict[str, Any]:
        server: DataPortServer | None = app.state.data_port
        return {**store.usage(), "data_port": server.port if server is not None else None}

    @app.post("/buffers", status_code=201)
    def create(body: CreateBuffer, cap: Cap) -> dict[str, Any]:
        cap.require(store.site, "*", Right.ADMIN)
        info = store.create(body.max_size, body.ttl, body.consumers, body.item, body.id)
        return info.to_json()

    @app.get("/buffers")
    def list_buffers(cap: Cap) -> list[dict[str, Any]]:
        cap.require(store.site, "*", Right.ADMIN)
        return [b.to_json() for b in store.list_buffers()]

    @app.get("/buffers/{buffer_id}")
    def info(buffer_id: str, cap: Cap) -> dict[str, Any]:
        if cap.right is not Right.ADMIN:
            cap.require(store.site, buffer_id, cap.right)
        else:
            cap.require(store.site, "*", Right.ADMIN)
        return store.info(buffer_id).to_json()

    @app.post("/buffers/{buffer_id}/data")
    async def append(
        buffer_id: str,
        request: Request,
        cap: Cap,
        offset: Annotated[int | None, Query(ge=0)] = None,
        tag: str | None = None,
        durable: Annotated[
            bool,
            Query(
                description="answer after the fsync and commit (false: once verified and "
                "written; the size counts it, a crash before the commit cuts it off)"
            ),
        ] = True,
    ) -> dict[str, Any]:
        cap.require(store.site, buffer_id, Right.WRITE)
        listed = request.headers.get("x-chunk-sha256s")
        if listed is None:
            chunks: list[tuple[int | None, str | None]] = [
                (None, request.headers.get("x-content-sha256"))
            ]
        else:
            chunks = parse_chunk_list(listed, request.headers.get("content-length"))
            if tag is not None or request.headers.get("x-content-sha256") is not None:
                raise ValueError(
                    "X-Chunk-SHA256s lists several chunks: a tag or X-Content-SHA256 names one"
                )
        body = request.stream().__aiter__()
        rest = b""  # bytes received past the end of the chunk being written
        info: BufferInfo | None = None
        at = offset
        for length, digest in chunks:
            lease = await run_in_threadpool(store.begin_append, buffer_id, at, tag)
            try:
                rest = await stream_chunk(store, lease, body, length, rest)
                info = await run_in_threadpool(store.finish_append, lease, digest, durable)
            except BufferServiceError:
                # Answer the refusal (413, 422) once the body is read: the chunks before
                # this one stay, verified and written; the next attempt resumes at the size.
                with contextlib.suppress(Exception):
                    async for _ in body:
                        pass
                raise
            at = lease.start + lease.written
        assert info is not None  # at least one chunk
        return info.to_json()

    @app.get("/buffers/{buffer_id}/data")
    def read(
        buffer_id: str,
        cap: Cap,
        offset: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int | None, Query(ge=0)] = None,
        session: str | None = None,
    ) -> Response:
        cap.require(store.site, buffer_id, Right.READ)
        if session is not None:
            data, start, info = store.read_session(buffer_id, session, limit, cap.consumer)
            return data_response(data, start, info)
        data, info, digest = store.read(buffer_id, offset, limit)
        return data_response(data, offset, info, digest)

    @app.post("/buffers/{buffer_id}/push")
    def push(buffer_id: str, body: Push, cap: Cap) -> dict[str, Any]:
        cap.require(store.site, buffer_id, Right.READ)
        dst = BufferRef.parse(body.destination, body.token)
        if peer_base(dst.base_url) not in app.state.peers:
            raise PushRefused(
                f"the buffer service of {store.site!r} does not push to {dst.base_url}: not one "
                "of its peers (start it with --peer URL); move the data through the engine"
            )
        with httpx.Client(timeout=60) as http:
            result = push_buffer(
                store,
                buffer_id,
                BufferClient(dst, http),
                body.chunk_size,
                seconds=body.seconds,
                max_bytes=body.max_bytes,
            )
        return result.to_json()

    @app.get("/buffers/{buffer_id}/tags/{tag}")
    def tag(buffer_id: str, tag: str, cap: Cap) -> dict[str, Any]:
        cap.require(store.site, buffer_id, Right.READ)
        t = store.tag(buffer_id, tag)
        return {
            "buffer": t.buffer,
            "tag": t.tag,
            "offset": t.offset,
            "length": t.length,
            "sha256": t.sha256,
        }

    @app.post("/buffers/{buffer_id}/seal")
    def seal(buffer_id: str, body: Seal, cap: Cap) -> dict[str, Any]:
        cap.require(store.site, buffer_id, Right.WRITE)
        return store.seal(buffer_id, body.sha256).to_json()

    @app.post("/buffers/{buffer_id}/drained")
    def drained(buffer_id: str, consumer: str, cap: Cap) -> dict[str, Any]:
        cap.require(store.site, buffer_id, Right.READ)
        cap.require_consumer(consumer)
        return store.drained(buffer_id, consumer).to_json()

    @app.post("/buffers/{buffer_id}/disable")
    def disable(buffer_id: str, cap: Cap) -> dict[str, Any]:
        cap.require(store.site, "*", Right.ADMIN)
        return store.disable(buffer_id).to_json()

    @app.delete("/buffers/{buffer_id}")
    def delete(buffer_id: str, cap: Cap) -> dict[str, Any]:
        cap.require(store.site, "*", Right.ADMIN)
        return store.delete(buffer_id).to_json()

    return app


def serve(
    site: str,
    root: str | Path,
    port: int,
    host: str = "127.0.0.1",
    secret: str | None = None,
    quota_bytes: int = 10**12,
    quota_count: int = 10_000,
    reap_interval: float = 30.0,
    fsync: bool = True,
    max_ttl: float = DEFAULT_MAX_TTL,
    peers: Iterable[str] = (),
    data_port: int | None = 0,
) -> None:
    """Run the buffer service of ``site`` on ``host:port`` until interrupted (uvicorn);
    ``peers``: the services it pushes buffers to, ``data_port``: where its peers push to it
    (0: a free port, None: none; see ``create_app``)."""
    import uvicorn

    root = Path(root)
    key = secret or load_or_create_secret(root)
    store = BufferStore(root, site, Quota(quota_bytes, quota_count), fsync=fsync, max_ttl=max_ttl)
    app = create_app(
        store, key, reap_interval=reap_interval, peers=peers, data_port=data_port, data_host=host
    )
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
    finally:
        store.close()
