"""A sealed buffer pushed by its own service straight into a buffer of another service.

The transfer engine relays every byte when it moves a buffer (source service ->
engine -> destination service). With a push, the source service appends its
bytes to the destination itself, and the engine only orchestrates: it asks for
the push, and seals the destination with the source's sha256 (the destination
hashes its disk). Every guarantee of the relay holds, with the same appends:

* each chunk goes with its sha256 (the one recorded when the source received
  those bytes when the chunk is exactly one of its appends, else hashed from the
  source's disk), and the destination refuses a chunk that does not hash to it
  (nothing stored); the chunk is sent again, up to ``retries`` times;
* appends name their offset and the write-once tag ``o<offset>`` (the relay's),
  ask for ``durable=false`` (verified and written before the answer, fsynced and
  committed behind by the destination's syncer), and a push starts from the
  destination's size: a push, or a relay, resumes any earlier run;
* a push call is bounded (``seconds``, ``max_bytes``): it stops after the chunk
  that crosses either, and the caller asks again.

The appends go to the destination's data port (``datalogistics.buffers.dataport``: the same
appends on a TCP port of its own, without the HTTP stack) when its ``GET /health`` names one
and it is reached over plain ``http``, else to its append route; ``PushResult.channel`` says
which.

A service pushes only to the services it lists as peers (``peers`` of
``create_app``, ``--peer URL`` of ``continuum buffer serve``): anything else is
``PushRefused``, so a read token cannot make a service send requests elsewhere.
"""

from __future__ import annotations

import http.client
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import httpx

from datalogistics.buffers.client import BufferClient, PushResult, raise_for
from datalogistics.buffers.dataport import DataPortClient
from datalogistics.buffers.store import BufferInfo, BufferState, BufferStore
from datalogistics.errors import (
    BufferGone,
    BufferServiceError,
    BufferStateError,
    ChecksumMismatch,
    OffsetMismatch,
    TagExists,
)

REQUEST_BYTES = 256 * 2**20
"""Most bytes one append request of a push carries (several chunks)."""
MAX_CHUNKS = 64
"""Most chunks one append request of a push lists."""
MIN_EXTENT = 2**20
"""The source's appends go as they are when at least this long (or the chunk size)."""


class _DataPortSender:
    """Appends to one destination buffer through its service's data port."""

    channel = "data port"

    def __init__(self, dst: BufferClient, port: int) -> None:
        host = urlsplit(dst.ref.base_url).hostname or "127.0.0.1"
        self._client = DataPortClient(host, port, dst.ref.buffer, dst.ref.token)

    def close(self) -> None:
        self._client.close()

    def append(
        self, path: Path, offset: int, chunks: list[tuple[int, str]], tag: str | None
    ) -> BufferInfo:
        return self._client.append(path, offset, chunks, tag, durable=False)


def _sender(dst: BufferClient) -> _DataPortSender | _FileSender:
    """The destination's data port when its service has one (and is reached over plain
    http), else its HTTP route."""
    if urlsplit(dst.ref.base_url).scheme == "http":
        r = dst.http.get(f"{dst.ref.base_url}/health")
        raise_for(r)
        port = r.json().get("data_port")
        if isinstance(port, int) and 0 < port < 65536:
            return _DataPortSender(dst, port)
    return _FileSender(dst)


class _FileSender:
    """Appends to one destination buffer whose bodies go from a file with ``sendfile`` (the
    bytes never enter this process; over TLS the socket falls back to plain sends)."""

    channel = "http"

    def __init__(self, dst: BufferClient, timeout: float = 60.0) -> None:
        self.dst = dst
        self.timeout = timeout
        parts = urlsplit(dst.ref.url)
        self._https = parts.scheme == "https"
        self._netloc = parts.netloc
        self._path = f"{parts.path}/data"
        self._conn: http.client.HTTPConnection | None = None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def append(
        self, path: Path, offset: int, chunks: list[tuple[int, str]], tag: str | None
    ) -> BufferInfo:
        """Append the file's bytes from ``offset`` on as ``chunks`` (``durable=false``); one
        chunk may carry a ``tag``."""
        n = sum(length for length, _ in chunks)
        params = {"offset": str(offset), "durable": "false"}
        if tag is not None:
            params["tag"] = tag
            headers = {"X-Content-SHA256": chunks[0][1]}
        else:
            headers = {"X-Chunk-SHA256s": ",".join(f"{k}:{h}" for k, h in chunks)}
        conn = self._conn
        if conn is None:
            kind = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            conn = self._conn = kind(self._netloc, timeout=self.timeout)
        try:
            conn.putrequest("POST", f"{self._path}?{urlencode(params)}", skip_accept_encoding=True)
            for k, v in {**self.dst._auth, **headers, "Content-Length": str(n)}.items():
                conn.putheader(k, v)
            conn.endheaders()
            assert conn.sock is not None  # endheaders connected it
            with open(path, "rb") as f:
                if conn.sock.sendfile(f, offset, n) != n:
                    raise BufferGone(f"the source file {path.name} ended before {offset + n}")
            answer = conn.getresponse()
            body = answer.read()
            status = answer.status
        except BaseException:
            self.close()
            raise
        if answer.will_close:
            self.close()
        url = f"{self.dst.ref.url}/data"
        response = httpx.Response(status, content=body, request=httpx.Request("POST", url))
        raise_for(response)
        return BufferInfo.from_json(response.json())


def push_buffer(
    store: BufferStore,
    buffer_id: str,
    destination: BufferClient,
    chunk_size: int,
    seconds: float = 10.0,
    max_bytes: int | None = None,
    retries: int = 3,
    clock: Callable[[], float] = time.monotonic,
) -> PushResult:
    """Append the sealed buffer ``buffer_id`` of ``store`` to ``destination`` from the
    destination's size on (see the module docstring); what this call achieved."""
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be positive bytes, got {chunk_size}")
    info = store.info(buffer_id)
    if info.state != BufferState.FULL or info.sha256 is None:
        raise BufferStateError(f"buffer {buffer_id!r} is {info.state}: seal it before pushing it")
    size = info.size
    sender = _sender(destination)
    try:
        return _push(
            store,
            buffer_id,
            destination,
            sender,
            size,
            chunk_size,
            seconds,
            max_bytes,
            retries,
            clock,
        )
    except (httpx.TransportError, OSError, http.client.HTTPException) as exc:
        # transient for the caller: it asks again, and the push resumes at the destination's size
        raise BufferServiceError(f"push to {destination.ref.url} failed: {exc}") from exc
    finally:
        sender.close()


def _push(
    store: BufferStore,
    buffer_id: str,
    d: BufferClient,
    sender: _DataPortSender | _FileSender,
    size: int,
    chunk_size: int,
    seconds: float,
    max_bytes: int | None,
    retries: int,
    clock: Callable[[], float],
) -> PushResult:
    dinfo = d.info()
    if dinfo.size > size:
        raise BufferStateError(
            f"destination buffer {dinfo.id} holds {dinfo.size} bytes, more than the {size} "
            f"of buffer {buffer_id!r}: it holds something else"
        )
    offset = dinfo.size
    sent = resent = 0
    if dinfo.state != BufferState.CREATED:
        return PushResult(offset, size, sent, resent, sender.channel)
    deadline = clock() + seconds
    while offset < size and clock() < deadline and (max_bytes is None or sent < max_bytes):
        room = REQUEST_BYTES if max_bytes is None else min(REQUEST_BYTES, max_bytes - sent)
        # The source's own appends from here on, each with the digest recorded when it
        # arrived, go in one request (one append each at the destination)...
        extents = store.extents_from(
            buffer_id, offset, room, MAX_CHUNKS, min_length=min(chunk_size, MIN_EXTENT)
        )
        chunks = [(length, sha) for _, length, sha in extents]
        tag = None
        if not extents:  # ... else one chunk, its digest hashed from the source's disk
            n = min(chunk_size, size - offset, room)
            chunks, tag = [(n, store.range_sha256(buffer_id, offset, n))], f"o{offset}"
        for attempt in range(retries + 1):
            try:
                end = sender.append(store.path(buffer_id), offset, chunks, tag).size
                break
            except ChecksumMismatch:
                if attempt == retries:
                    raise
                resent += 1  # refused, nothing of it stored: send again from where it stands
                end = d.info().size
                if end != offset:
                    break
            except (OffsetMismatch, TagExists):
                end = d.info().size  # an earlier attempt landed after all: resync
                break
        sent += max(0, end - offset)
        offset = end
    return PushResult(offset, size, sent, resent, sender.channel)
