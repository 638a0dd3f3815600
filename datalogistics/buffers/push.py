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

A service pushes only to the services it lists as peers (``peers`` of
``create_app``, ``--peer URL`` of ``continuum buffer serve``): anything else is
``PushRefused``, so a read token cannot make a service send requests elsewhere.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx

from datalogistics.buffers.client import BufferClient, PushResult
from datalogistics.buffers.store import BufferState, BufferStore
from datalogistics.errors import (
    BufferServiceError,
    BufferStateError,
    ChecksumMismatch,
    OffsetMismatch,
    TagExists,
)


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
    try:
        return _push(
            store, buffer_id, destination, size, chunk_size, seconds, max_bytes, retries, clock
        )
    except httpx.TransportError as exc:  # transient for the caller: it asks again
        raise BufferServiceError(f"push to {destination.ref.url} failed: {exc}") from exc


def _push(
    store: BufferStore,
    buffer_id: str,
    d: BufferClient,
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
        return PushResult(offset, size, sent, resent)
    deadline = clock() + seconds
    while offset < size and clock() < deadline and (max_bytes is None or sent < max_bytes):
        n = min(chunk_size, size - offset)
        if max_bytes is not None:
            n = min(n, max_bytes - sent)
        digest = store.range_sha256(buffer_id, offset, n)
        for attempt in range(retries + 1):
            try:
                end = d.append(
                    store.iter_range(buffer_id, offset, n),
                    offset=offset,
                    tag=f"o{offset}",
                    sha256=digest,
                    length=n,
                    durable=False,
                ).size
                break
            except ChecksumMismatch:
                if attempt == retries:
                    raise
                resent += 1  # refused, nothing stored: send it again
            except (OffsetMismatch, TagExists):
                end = d.info().size  # an earlier attempt landed after all: resync
                break
        sent += max(0, end - offset)
        offset = end
    return PushResult(offset, size, sent, resent)
