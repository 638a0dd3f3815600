"""A small synchronous client of the buffer service (httpx).

Errors answered by the service come back as the same ``datalogistics.errors``
class the service raised (the body names it), so callers catch
``TagExists`` or ``QuotaExceeded`` whichever side of the wire they happened.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from datalogistics import errors
from datalogistics.buffers.store import BufferInfo
from datalogistics.errors import BufferServiceError


@dataclass(frozen=True, slots=True)
class BufferRef:
    """Where a buffer lives and the token to use it: ``http://host:port/buffers/<id>``."""

    base_url: str
    buffer: str
    token: str

    @classmethod
    def parse(cls, url: str, token: str) -> BufferRef:
        """Split ``http://host:port[/prefix]/buffers/<id>`` into base URL and buffer id."""
        parts = urlsplit(url)
        path = parts.path.rstrip("/")
        head, sep, buffer = path.rpartition("/buffers/")
        if not sep or not buffer or "/" in buffer or parts.scheme not in ("http", "https"):
            raise ValueError(f"a buffer URL looks like http://host:port/buffers/<id>, got {url!r}")
        return cls(f"{parts.scheme}://{parts.netloc}{head}", buffer, token)

    @property
    def url(self) -> str:
        return f"{self.base_url}/buffers/{self.buffer}"


def raise_for(response: httpx.Response) -> None:
    """Raise the ``datalogistics`` error a failed response carries."""
    if response.is_success:
        return
    try:
        body = response.json()
        name, detail = str(body.get("error", "")), str(body.get("detail", response.text))
    except ValueError:
        name, detail = "", response.text
    cls = getattr(errors, name, None)
    if isinstance(cls, type) and issubclass(cls, BufferServiceError):
        raise cls(detail)
    if name == "ValueError":
        raise ValueError(detail)
    raise BufferServiceError(f"HTTP {response.status_code} from {response.url}: {detail}")


@dataclass(frozen=True, slots=True)
class PushResult:
    """What one push call achieved: the destination now ends at ``offset`` (of the source's
    ``size``), ``sent`` bytes were appended, ``resent`` chunks were sent again after the
    destination refused their checksum; ``channel``: how the bytes went (``"data port"``,
    the destination's data port, or ``"http"``, its append route)."""

    offset: int
    size: int
    sent: int
    resent: int
    channel: str = "http"

    @property
    def done(self) -> bool:
        return self.offset >= self.size

    def to_json(self) -> dict[str, Any]:
        return {
            "offset": self.offset,
            "size": self.size,
            "sent": self.sent,
            "resent": self.resent,
            "channel": self.channel,
        }


class BufferClient:
    """Operations on one buffer with one token."""

    def __init__(self, ref: BufferRef, http: httpx.Client) -> None:
        self.ref = ref
        self.http = http
        self._auth = {"Authorization": f"Bearer {ref.token}"}

    def info(self) -> BufferInfo:
        r = self.http.get(self.ref.url, headers=self._auth)
        raise_for(r)
        return BufferInfo.from_json(r.json())

    def read(self, offset: int = 0, limit: int | None = None) -> tuple[bytes, str]:
        """Bytes from ``offset`` and the sha256 the service computed for them."""
        params: dict[str, Any] = {"offset": offset}
        if limit is not None:
            params["limit"] = limit
        r = self.http.get(f"{self.ref.url}/data", params=params, headers=self._auth)
        raise_for(r)
        return r.content, r.headers["x-content-sha256"]

    def read_session(self, name: str, limit: int | None = None) -> tuple[bytes, int]:
        """The next bytes of read session ``name`` and the offset they start at."""
        params: dict[str, Any] = {"session": name}
        if limit is not None:
            params["limit"] = limit
        r = self.http.get(f"{self.ref.url}/data", params=params, headers=self._auth)
        raise_for(r)
        return r.content, int(r.headers["x-offset"])

    @contextmanager
    def open_read(self, offset: int, limit: int) -> Iterator[httpx.Response]:
        """A streaming read of ``limit`` bytes from ``offset``: the response, body not yet read
        (its ``X-Content-SHA256`` header is the digest the service computed)."""
        params = {"offset": offset, "limit": limit}
        with self.http.stream(
            "GET", f"{self.ref.url}/data", params=params, headers=self._auth
        ) as r:
            if not r.is_success:
                r.read()
                raise_for(r)
            yield r

    def append(
        self,
        data: bytes | Iterable[bytes],
        offset: int | None = None,
        tag: str | None = None,
        sha256: str | None = None,
        length: int | None = None,
        durable: bool = True,
        chunks: Sequence[tuple[int, str]] | None = None,
    ) -> BufferInfo:
        """Append ``data`` (bytes, or pieces streamed as they come, ``length`` bytes in all).

        ``chunks``: ``(length, sha256)`` of each chunk ``data`` is made of, in order; each is
        verified and appended as an append of its own (``ChecksumMismatch`` stops at the first
        that fails, the ones before it stay), no ``tag`` nor ``sha256`` then.

        ``durable=False``: the service answers once the bytes are verified and written, before
        their fsync (its ``size`` counts them; a crash of the service before they are committed
        cuts them off, and ``info().size`` then says where to resume).
        """
        params: dict[str, Any] = {}
        if not durable:
            params["durable"] = "false"
        if offset is not None:
            params["offset"] = offset
        if tag is not None:
            params["tag"] = tag
        headers = dict(self._auth)
        if sha256 is not None:
            headers["X-Content-SHA256"] = sha256
        if chunks is not None:
            headers["X-Chunk-SHA256s"] = ",".join(f"{n}:{d}" for n, d in chunks)
        if length is not None and not isinstance(data, bytes):
            headers["Content-Length"] = str(length)
        r = self.http.post(f"{self.ref.url}/data", params=params, content=data, headers=headers)
        raise_for(r)
        return BufferInfo.from_json(r.json())

    def push(
        self,
        destination: BufferRef,
        chunk_size: int,
        seconds: float = 10.0,
        max_bytes: int | None = None,
    ) -> PushResult:
        """Ask this (sealed) buffer's service to append its bytes straight to ``destination``
        (from the destination's size on, ``chunk_size`` bytes an append, each with its sha256)
        for about ``seconds`` or ``max_bytes``; ``PushRefused`` if it is not one of the
        service's peers. Call again until ``done``: each call resumes where the last stopped."""
        body: dict[str, Any] = {
            "destination": destination.url,
            "token": destination.token,
            "chunk_size": chunk_size,
            "seconds": seconds,
        }
        if max_bytes is not None:
            body["max_bytes"] = max_bytes
        r = self.http.post(f"{self.ref.url}/push", json=body, headers=self._auth)
        raise_for(r)
        out = r.json()
        return PushResult(
            int(out["offset"]),
            int(out["size"]),
            int(out["sent"]),
            int(out["resent"]),
            str(out.get("channel", "http")),
        )

    def seal(self, sha256: str | None = None) -> BufferInfo:
        r = self.http.post(f"{self.ref.url}/seal", json={"sha256": sha256}, headers=self._auth)
        raise_for(r)
        return BufferInfo.from_json(r.json())

    def drained(self, consumer: str) -> BufferInfo:
        r = self.http.post(
            f"{self.ref.url}/drained", params={"consumer": consumer}, headers=self._auth
        )
        raise_for(r)
        return BufferInfo.from_json(r.json())


class SiteClient:
    """Administration of one site's buffer service with an admin token."""

    def __init__(self, base_url: str, admin_token: str, http: httpx.Client) -> None:
        self.base_url = base_url.rstrip("/")
        self.http = http
        self._auth = {"Authorization": f"Bearer {admin_token}"}

    def create(
        self,
        max_size: int,
        ttl: float,
        consumers: list[str] | tuple[str, ...] = (),
        item: str | None = None,
        buffer_id: str | None = None,
    ) -> BufferInfo:
        body = {
            "max_size": max_size,
            "ttl": ttl,
            "consumers": list(consumers),
            "item": item,
            "id": buffer_id,
        }
        r = self.http.post(f"{self.base_url}/buffers", json=body, headers=self._auth)
        raise_for(r)
        return BufferInfo.from_json(r.json())

    def list_buffers(self) -> list[BufferInfo]:
        r = self.http.get(f"{self.base_url}/buffers", headers=self._auth)
        raise_for(r)
        return [BufferInfo.from_json(b) for b in r.json()]

    def delete(self, buffer_id: str) -> BufferInfo:
        r = self.http.delete(f"{self.base_url}/buffers/{buffer_id}", headers=self._auth)
        raise_for(r)
        return BufferInfo.from_json(r.json())

    def disable(self, buffer_id: str) -> BufferInfo:
        r = self.http.post(f"{self.base_url}/buffers/{buffer_id}/disable", headers=self._auth)
        raise_for(r)
        return BufferInfo.from_json(r.json())

    def health(self) -> dict[str, Any]:
        r = self.http.get(f"{self.base_url}/health")
        raise_for(r)
        result: dict[str, Any] = r.json()
        return result
