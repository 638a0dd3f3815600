"""The data port of a buffer service: appends from its peers over a plain TCP connection.

A push (``datalogistics.buffers.push``) sends gigabytes of appends from one buffer service
to another. Through the HTTP route, every block of them goes through the destination's
HTTP stack (parser, ASGI messages, event loop, a worker thread). The data port takes the
same appends on a TCP socket of its own, served by one thread per connection that receives
each block with ``recv_into`` into one reused buffer, hashes it and writes it: the loop of
a plain socket copy, with the buffer store's append semantics (``BufferStore.begin_append``,
``AppendLease.write_pieces``, ``BufferStore.finish_append``) unchanged. The chunks of a
request acknowledged before their fsync (``durable: false``, a push) are chained
(``BufferStore.chain_append``: each verified and handed to the syncer, the next opened on the
same file without a database session); the request's last chunk is finished as any append.

The protocol, one request after another on a connection (``MAGIC``, then a 4-byte
big-endian length, then that many bytes of UTF-8 JSON, is one *message*)::

    client:  message {"token", "buffer", "offset", "chunks": [[length, sha256], ...],
                      "tag" (one chunk only), "durable"}
    server:  message {"status": 100}                   the request is accepted: send the body
             or {"status": 4xx, "body": {"error", "detail"}}    refused, send nothing
    client:  the body, sum(length) bytes: the chunks back to back
    server:  message {"status": 200, "body": <buffer info>}
             or {"status": 4xx, "body": {"error", "detail"}}

The request is checked like the HTTP append (``POST /buffers/{id}/data``) before any byte
of the body is sent: a write token of that buffer of this site (401 if missing, forged or
expired, 403 for another site, buffer or right), the buffer's state, the offset (its size),
a tag written once, at most ``MAX_CHUNKS`` chunks of positive lengths with their sha256,
a header of at most ``MAX_HEADER`` bytes. Each chunk is then verified against its sha256
and appended as an append of its own: the first that fails is refused (422, nothing of it
stored, the ones before it stay), past the buffer's maximum size is 413; the server reads
the rest of the body before it answers, so the connection stays usable. The statuses and
error bodies are the HTTP route's (one table, ``service.STATUS``), and the client raises
the same ``datalogistics.errors`` class from them.

Bounded: at most ``max_connections`` connections at once (a further one is answered 503
and closed), ``timeout`` seconds of silence closes a connection. The data port speaks
plain TCP: a peer reached over ``https`` is pushed to through its HTTP route instead.
"""

from __future__ import annotations

import contextlib
import json
import socket
import struct
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from datalogistics.buffers.client import raise_for
from datalogistics.buffers.store import AppendLease, BufferInfo, BufferStore, check_name
from datalogistics.buffers.tokens import Right, verify_token
from datalogistics.errors import BufferServiceError

MAGIC = b"CDP1"
"""The first bytes of every message (continuum data port, version 1)."""
MAX_HEADER = 256 * 2**10
"""Most bytes of one message's JSON (a request listing ``MAX_CHUNKS`` chunks fits)."""
MAX_CHUNKS = 1024
"""Most chunks one request lists (as ``X-Chunk-SHA256s`` of the HTTP route)."""
RECV_BLOCK = 2**20
"""Bytes received into the reused buffer, then hashed and written, at a time."""
CONTINUE = 100
_LENGTH = struct.Struct(">I")

ErrorAnswer = Callable[[Exception], tuple[int, dict[str, str]]]
"""Maps an error to the status and body the HTTP route answers for it."""


class DataPortAppend(BaseModel):
    """A request of the data port: append ``chunks`` to ``buffer`` from ``offset`` on."""

    model_config = ConfigDict(extra="forbid")

    token: str = Field(max_length=4096, description="write token of the buffer")
    buffer: str
    offset: int = Field(ge=0, description="where the first chunk starts: the buffer's size")
    chunks: list[tuple[int, str]] = Field(
        min_length=1, max_length=MAX_CHUNKS, description="[length, sha256] of each chunk"
    )
    tag: str | None = Field(default=None, description="write-once name of the only chunk")
    durable: bool = Field(
        default=True,
        description="answer after the fsync and commit (false: once verified and written)",
    )

    @field_validator("buffer")
    @classmethod
    def _buffer_name(cls, value: str) -> str:
        return check_name(value, "buffer id")

    @field_validator("chunks")
    @classmethod
    def _chunk_list(cls, value: list[tuple[int, str]]) -> list[tuple[int, str]]:
        for length, digest in value:
            if length <= 0 or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                raise ValueError(
                    "chunks lists [length, sha256] pairs: a positive length and 64 lowercase "
                    f"hexadecimal digits, got [{length}, {digest!r}]"
                )
        return value

    @property
    def total(self) -> int:
        return sum(length for length, _ in self.chunks)


class ProtocolError(ValueError):
    """A message that is not one of the data port's (closes the connection)."""


def send_message(sock: socket.socket, message: dict[str, Any]) -> None:
    data = json.dumps(message, separators=(",", ":")).encode()
    sock.sendall(MAGIC + _LENGTH.pack(len(data)) + data)


def _recv_exact(sock: socket.socket, n: int) -> bytes | None:
    """``n`` bytes from ``sock``; None if the peer closed before the first of them."""
    out = bytearray(n)
    view = memoryview(out)
    got = 0
    while got < n:
        k = sock.recv_into(view[got:])
        if not k:
            if got == 0:
                return None
            raise ProtocolError(f"the connection closed {n - got} bytes into a message")
        got += k
    return bytes(out)


def recv_message(sock: socket.socket) -> dict[str, Any] | None:
    """The next message on ``sock``; None if the peer closed the connection between two."""
    head = _recv_exact(sock, len(MAGIC) + _LENGTH.size)
    if head is None:
        return None
    if head[: len(MAGIC)] != MAGIC:
        raise ProtocolError(f"not a data port message (it starts {head[:4]!r}, not {MAGIC!r})")
    (n,) = _LENGTH.unpack(head[len(MAGIC) :])
    if n > MAX_HEADER:
        raise ProtocolError(f"a data port message holds at most {MAX_HEADER} bytes, got {n}")
    data = _recv_exact(sock, n)
    if data is None:
        raise ProtocolError("the connection closed inside a message")
    try:
        message = json.loads(data)
    except ValueError as exc:
        raise ProtocolError(f"a data port message is JSON: {exc}") from None
    if not isinstance(message, dict):
        raise ProtocolError("a data port message is a JSON object")
    return message


class DataPortServer:
    """The data port of the buffer service over ``store`` (see the module docstring).

    ``error_answer`` maps an error to the HTTP route's status and body; ``port`` 0 binds a
    free port (``self.port`` says which once ``start`` has returned).
    """

    def __init__(
        self,
        store: BufferStore,
        secret: str | bytes,
        error_answer: ErrorAnswer,
        host: str = "127.0.0.1",
        port: int = 0,
        max_connections: int = 16,
        timeout: float = 60.0,
    ) -> None:
        if max_connections < 1:
            raise ValueError(f"max_connections must be >= 1, got {max_connections}")
        self.store = store
        self.secret = secret
        self.error_answer = error_answer
        self.host = host
        self.port = port
        self.max_connections = max_connections
        self.timeout = timeout
        self._listener: socket.socket | None = None
        self._acceptor: threading.Thread | None = None
        self._slots = threading.BoundedSemaphore(max_connections)
        self._connections: dict[socket.socket, threading.Thread] = {}
        self._lock = threading.Lock()
        self._closing = False

    def start(self) -> DataPortServer:
        self._listener = socket.create_server((self.host, self.port), backlog=64)
        self.port = self._listener.getsockname()[1]
        self._acceptor = threading.Thread(
            target=self._accept_loop, name=f"data-port-{self.store.site}", daemon=True
        )
        self._acceptor.start()
        return self

    def stop(self) -> None:
        """Close the listener and every connection; wait for their threads."""
        self._closing = True
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
        if self._acceptor is not None:
            self._acceptor.join(timeout=10)
        with self._lock:
            connections = dict(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        for thread in connections.values():
            thread.join(timeout=10)

    def _accept_loop(self) -> None:
        assert self._listener is not None  # started
        while not self._closing:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return  # closed by stop()
            # Blocking, with the kernel's own timeouts: a block arrives in one recv call
            # (MSG_WAITALL) and a silent peer still times out (EAGAIN, an OSError).
            conn.settimeout(None)
            seconds = int(self.timeout)
            micros = int((self.timeout - seconds) * 1e6)
            timeval = struct.pack("ll", seconds, micros)
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if not self._slots.acquire(blocking=False):
                threading.Thread(target=self._turn_away, args=(conn,), daemon=True).start()
                continue
            thread = threading.Thread(
                target=self._serve, args=(conn,), name="data-port-connection", daemon=True
            )
            with self._lock:
                self._connections[conn] = thread
            thread.start()

    def _turn_away(self, conn: socket.socket) -> None:
        """Answer 503 to a connection past ``max_connections`` and close it."""
        detail = f"the data port takes {self.max_connections} connections at most; retry later"
        with contextlib.suppress(OSError), conn:
            send_message(
                conn, {"status": 503, "body": {"error": "BufferServiceError", "detail": detail}}
            )
            _close_gently(conn, bytearray(MAX_HEADER))

    def _serve(self, conn: socket.socket) -> None:
        """Requests of one connection, one after another, until it closes or fails."""
        blocks = (bytearray(RECV_BLOCK), bytearray(RECV_BLOCK))
        hasher = ThreadPoolExecutor(1, thread_name_prefix="data-port-hash")
        try:
            with conn:
                while not self._closing:
                    try:
                        message = recv_message(conn)
                    except ProtocolError as exc:
                        status, body = self.error_answer(exc)
                        send_message(conn, {"status": status, "body": body})
                        _close_gently(conn, blocks[0])
                        return
                    if message is None:
                        return
                    if not self._request(conn, message, blocks, hasher):
                        return
        except OSError:
            pass  # the peer went away, or timed out: whatever it sent last stays refused
        finally:
            hasher.shutdown(wait=True)
            with self._lock:
                self._connections.pop(conn, None)
            self._slots.release()

    def _request(
        self,
        conn: socket.socket,
        message: dict[str, Any],
        blocks: tuple[bytearray, bytearray],
        hasher: ThreadPoolExecutor,
    ) -> bool:
        """Serve one request; False when the connection cannot carry another."""
        try:
            request = DataPortAppend.model_validate(message)
            if request.tag is not None and len(request.chunks) != 1:
                raise ValueError("a data port request with a tag lists exactly one chunk")
            cap = verify_token(self.secret, request.token, now=self.store.clock())
            cap.require(self.store.site, request.buffer, Right.WRITE)
            lease = self.store.begin_append(request.buffer, request.offset, request.tag)
        except (ValidationError, ValueError, BufferServiceError) as exc:
            status, refusal = self.error_answer(_plain(exc))
            send_message(conn, {"status": status, "body": refusal})
            return True  # nothing of the body was asked for: the connection stays in step
        send_message(conn, {"status": CONTINUE})
        body = _Body(conn, request.total, blocks, hasher)
        info: BufferInfo | None = None
        try:
            last = len(request.chunks) - 1
            for i, (length, digest) in enumerate(request.chunks):
                if i and lease.file.closed:  # the one before was finished: open the next
                    lease = self.store.begin_append(request.buffer, lease.start + lease.written)
                body.into(lease, length)
                if i < last and not request.durable:
                    # verified, acknowledged to the syncer, and the next one opened, without
                    # a database session: the request's last chunk checks the buffer's state
                    lease = self.store.chain_append(lease, digest)
                else:
                    info = self.store.finish_append(lease, digest, request.durable)
        except (ValueError, BufferServiceError) as exc:
            # refused (413, 422, the buffer changed): the chunks before stay; read the rest
            # of the body so the connection stays in step, then answer
            self._abort(lease)
            body.discard()
            status, answer = self.error_answer(exc)
            send_message(conn, {"status": status, "body": answer})
            return True
        except BaseException:
            self._abort(lease)
            raise
        assert info is not None  # at least one chunk
        send_message(conn, {"status": 200, "body": info.to_json()})
        return True

    def _abort(self, lease: AppendLease) -> None:
        """Cut off ``lease`` if it is still open (finished or refused, the store closed it)."""
        if not lease.file.closed:
            self.store.abort_append(lease)


def _close_gently(conn: socket.socket, block: bytearray) -> None:
    """Half-close ``conn`` and read what the peer still sends for a moment, so that the answer
    already sent reaches it (closing with unread bytes would reset the connection)."""
    with contextlib.suppress(OSError):
        conn.shutdown(socket.SHUT_WR)
        conn.settimeout(1.0)
        left = len(block)
        while left > 0 and (k := conn.recv_into(block)):
            left -= k


def _plain(exc: Exception) -> Exception:
    """A pydantic validation error as a ``ValueError`` naming the fields."""
    if isinstance(exc, ValidationError):
        fields = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'request'}: {e['msg']}" for e in exc.errors()
        )
        return ValueError(f"data port request: {fields}")
    return exc


class _Body:
    """The body of one request: ``left`` bytes still to come on ``conn``.

    Each block is received into one of two reused buffers with one ``recv_into``, written,
    and handed to ``hasher`` (one thread) for the chunk's sha256, while the next block is
    received into the other buffer: receiving and writing overlap hashing (each releases
    the GIL), and a buffer is received into again only once its hash is done.
    """

    def __init__(
        self,
        conn: socket.socket,
        left: int,
        blocks: tuple[bytearray, bytearray],
        hasher: ThreadPoolExecutor,
    ) -> None:
        self.conn = conn
        self.left = left
        self.views = (memoryview(blocks[0]), memoryview(blocks[1]))
        self.hasher = hasher

    def _fill(self, view: memoryview, want: int) -> memoryview:
        got = 0
        while got < want:
            k = self.conn.recv_into(view[got:want], want - got, socket.MSG_WAITALL)
            if not k:
                raise ConnectionError(f"the connection closed {self.left - got} bytes short")
            got += k
        self.left -= want
        return view[:want]

    def into(self, lease: AppendLease, length: int) -> None:
        """The next ``length`` bytes through ``lease`` (written block by block, hashed
        behind; ``BufferTooLarge`` past the buffer's maximum size, that block not written).
        Returns once every block is hashed."""
        hashing: list[Future[None] | None] = [None, None]
        i = 0
        try:
            while length:
                if (done := hashing[i]) is not None:
                    done.result()  # this buffer's last block is hashed: receive into it
                    hashing[i] = None
                piece = self._fill(self.views[i], min(length, len(self.views[i])))
                lease.write_pieces((piece,), hashed=False)
                hashing[i] = self.hasher.submit(lease.digest.update, piece)
                length -= len(piece)
                i ^= 1
        finally:
            for pending in hashing:
                if pending is not None:
                    pending.result()

    def discard(self) -> None:
        """Read and drop the rest of the body."""
        while self.left:
            self._fill(self.views[0], min(self.left, len(self.views[0])))


class DataPortClient:
    """Appends to one buffer through its service's data port at ``host:port`` (the bodies
    sent from a file with ``sendfile``: the bytes never enter this process)."""

    def __init__(
        self, host: str, port: int, buffer: str, token: str, timeout: float = 60.0
    ) -> None:
        self.host = host
        self.port = port
        self.buffer = buffer
        self.token = token
        self.timeout = timeout
        self._sock: socket.socket | None = None

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def append(
        self,
        path: Path,
        offset: int,
        chunks: Sequence[tuple[int, str]],
        tag: str | None = None,
        durable: bool = True,
    ) -> BufferInfo:
        """Append the bytes ``[offset, offset + sum(lengths))`` of the file at ``path`` as
        ``chunks`` (each ``(length, sha256)``) at ``offset`` of the buffer; its info after."""
        sock = self._sock
        if sock is None:
            sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._sock = sock
        request: dict[str, Any] = {
            "token": self.token,
            "buffer": self.buffer,
            "offset": offset,
            "chunks": [[n, d] for n, d in chunks],
            "durable": durable,
        }
        if tag is not None:
            request["tag"] = tag
        n = sum(length for length, _ in chunks)
        try:
            send_message(sock, request)
            answer = self._answer(sock)
            if answer.get("status") == CONTINUE:
                with open(path, "rb") as f:
                    if sock.sendfile(f, offset, n) != n:
                        raise BufferServiceError(
                            f"the source file {path.name} ended before {offset + n}"
                        )
                answer = self._answer(sock)
        except BaseException:
            self.close()
            raise
        status = int(answer.get("status", 0))
        url = f"tcp://{self.host}:{self.port}/buffers/{self.buffer}/data"
        response = httpx.Response(
            status, json=answer.get("body"), request=httpx.Request("POST", url)
        )
        raise_for(response)
        return BufferInfo.from_json(response.json())

    def _answer(self, sock: socket.socket) -> dict[str, Any]:
        answer = recv_message(sock)
        if answer is None:
            raise ConnectionError(f"the data port {self.host}:{self.port} closed the connection")
        return answer
