"""The transfer engine: moves a buffer's bytes to another site's buffer over HTTP.

**Push or relay.** When the source's buffer service lists the destination's
service as a peer (``--peer``), the engine asks the source to push the bytes
straight to the destination (``BufferClient.push``, see
``datalogistics.buffers.push``; through the destination's data port when it has one): the
bytes cross the network once, and the
engine only orchestrates and checks the seal. Otherwise, and on a link with a
rate limit (the token bucket is the engine's), the engine relays them: it reads
the sealed source buffer chunk by chunk and appends each chunk to the
destination buffer, so the data never touches the orchestrator's disk. Both
ways keep the same guarantees:

* **Integrity, end to end.** The source service hashes each chunk it reads
  from its disk and sends the digest with the bytes; the engine forwards that
  digest unchanged with the append, and the destination service refuses a
  chunk whose bytes do not hash to it (``ChecksumMismatch``, nothing stored).
  Corruption on either leg is therefore caught before anything is written,
  and the chunk is read and sent again. When the last chunk is in, the
  destination is sealed with the source buffer's whole-content sha256, which
  the destination checks against the sha256 it computes from the bytes on its
  own disk (not from what it remembers receiving): bytes changed at rest
  during the transfer fail it. A destination found already full is sealed
  again, so it is checked again.
* **Pipelined.** Hashing, network and disk overlap: while the destination
  verifies and writes chunk *k*, a reader thread fetches chunk *k+1* from the
  source; the destination answers each append once it is verified and written
  (``durable=False``) and fsyncs and commits behind it, in groups, so the disk
  flushes chunk *k* while chunk *k+1* arrives. The seal waits for the last
  commit, then hashes the destination's disk. At most three chunks are held in
  memory (the one being appended, the one fetched ahead, and a re-read).
* **Resumable.** The destination only ever holds verified chunks, so its size
  is the last verified offset: a transfer started again (after the engine was
  killed, or a network failure) continues from there. A destination service
  killed before its syncer committed the last chunks cuts them off when it
  starts again, and its size then says where to resume.
* **Retries with backoff.** A failed request (connection refused, timeout,
  5xx) is retried after ``backoff * 2**k`` seconds (capped), up to ``retries``
  times per request.
* **Parallel.** ``transfer_many`` runs several items at once in threads.
* **Rate limit.** An optional token bucket per link ``(src site, dst site)``
  emulates the federation's link bandwidth (``link_limits``).
* **Telemetry.** Every finished transfer yields a ``TransferRecord``; its
  ``telemetry()`` dict is what the twin's link model ingests.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

import httpx

from datalogistics.buffers.client import BufferClient, BufferRef
from datalogistics.errors import (
    BufferServiceError,
    ChecksumMismatch,
    DataLogisticsError,
    OffsetMismatch,
    PushRefused,
    TagExists,
    TransferError,
)

if TYPE_CHECKING:
    from federation.model import Federation

T = TypeVar("T")

DEFAULT_CHUNK = 8 * 2**20


class TokenBucket:
    """A thread-safe token bucket: ``rate`` bytes per second, bursts up to ``burst`` bytes.

    ``acquire(n)`` takes ``n`` tokens and sleeps for any deficit, so the
    long-run rate of everyone sharing the bucket is at most ``rate``::

        tokens(t) = min(burst, tokens(t0) + rate * (t - t0))
        wait      = max(0, n - tokens) / rate
    """

    def __init__(
        self,
        rate: float,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError(f"a rate limit must be positive bytes per second, got {rate}")
        self.rate = float(rate)
        self.burst = float(burst if burst is not None else rate * 0.1)
        if self.burst <= 0:
            raise ValueError(f"burst must be positive bytes, got {burst}")
        self._clock = clock
        self._sleep = sleep
        self._tokens = self.burst
        self._stamp = clock()
        self._lock = threading.Lock()

    def acquire(self, n: float) -> float:
        """Take ``n`` tokens, sleeping as long as the bucket is in deficit; the seconds slept."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + self.rate * (now - self._stamp))
            self._stamp = now
            self._tokens -= n
            wait = max(0.0, -self._tokens) / self.rate
        if wait > 0:
            self._sleep(wait)
        return wait


def link_limits(
    federation: Federation, scale: float = 1.0, burst_seconds: float = 0.1
) -> dict[tuple[str, str], TokenBucket]:
    """One token bucket per federation link at ``scale`` times its bandwidth."""
    return {
        (lk.src, lk.dst): TokenBucket(lk.bandwidth * scale, lk.bandwidth * scale * burst_seconds)
        for lk in federation.links
    }


@dataclass(frozen=True, slots=True)
class TransferRecord:
    """One finished transfer, as telemetry for the twin's link model.

    ``bytes`` counts what moved in this run (after a resume, less than
    ``total_bytes``); ``throughput = bytes / seconds`` in bytes per second,
    ``seconds`` being wall-clock time from the first read to the seal.
    """

    item: str | None
    src_site: str
    dst_site: str
    src_buffer: str
    dst_buffer: str
    started_at: float
    finished_at: float
    bytes: int
    total_bytes: int
    resumed_from: int
    retries: int
    resent_chunks: int
    sha256: str
    pushed: bool = False
    """True when the source service pushed the bytes straight to the destination."""

    @property
    def seconds(self) -> float:
        return max(self.finished_at - self.started_at, 1e-9)

    @property
    def throughput(self) -> float:
        """Bytes per second achieved by this run of the transfer."""
        return self.bytes / self.seconds

    def telemetry(self) -> dict[str, Any]:
        """The record the twin ingests as a link-throughput observation.

        Keys: ``kind`` (``"link_throughput"``), ``link`` (``"src->dst"``),
        ``src``, ``dst`` (site ids), ``timestamp`` (Unix seconds at the end),
        ``bytes``, ``seconds``, ``throughput`` (bytes/s), ``item``, ``retries``.
        """
        return {
            "kind": "link_throughput",
            "link": f"{self.src_site}->{self.dst_site}",
            "src": self.src_site,
            "dst": self.dst_site,
            "timestamp": self.finished_at,
            "bytes": self.bytes,
            "seconds": self.seconds,
            "throughput": self.throughput,
            "item": self.item,
            "retries": self.retries,
        }


@dataclass(frozen=True, slots=True)
class TransferJob:
    """One item to move: from the buffer ``src`` to the buffer ``dst``."""

    src: BufferRef
    dst: BufferRef
    item: str | None = None


@dataclass
class _Counters:
    retries: int = 0
    resent: int = 0
    errors: list[str] = field(default_factory=list)


class TransferEngine:
    """Moves sealed buffers between buffer services (see the module docstring).

    ``limits`` maps a link ``(src site, dst site)`` to its token bucket;
    ``default_limit`` applies to links not in ``limits`` (None: unlimited).
    ``transport`` is handed to ``httpx.Client`` (for example to bind a local
    address or inject a faulty network in tests); ``on_record`` receives each
    finished transfer's record (the twin's telemetry sink). ``push``: ask the
    source service to push the bytes straight to the destination (it does when
    the destination's service is one of its peers; otherwise, and on a
    rate-limited link, the engine relays them).
    """

    def __init__(
        self,
        chunk_size: int = DEFAULT_CHUNK,
        retries: int = 5,
        backoff: float = 0.1,
        backoff_max: float = 5.0,
        timeout: float = 60.0,
        limits: Mapping[tuple[str, str], TokenBucket] | None = None,
        default_limit: TokenBucket | None = None,
        on_record: Callable[[TransferRecord], None] | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        push: bool = True,
    ) -> None:
        if chunk_size <= 0:
            raise ValueError(f"chunk_size must be positive bytes, got {chunk_size}")
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        self.chunk_size = chunk_size
        self.retries = retries
        self.backoff = backoff
        self.backoff_max = backoff_max
        self.timeout = timeout
        self.limits = dict(limits or {})
        self.default_limit = default_limit
        self.on_record = on_record
        self.transport = transport
        self.push = push
        self._sleep = sleep

    # -- one item ----------------------------------------------------------------
    def _retrying(self, what: str, fn: Callable[[], T], c: _Counters) -> T:
        """``fn()``, retried with exponential backoff on transient failures."""
        for attempt in range(self.retries + 1):
            try:
                return fn()
            except (httpx.TransportError, BufferServiceError) as exc:
                transient = isinstance(exc, httpx.TransportError) or type(exc) is BufferServiceError
                if not transient or attempt == self.retries:
                    raise
                c.retries += 1
                c.errors.append(f"{what}: {exc}")
                self._sleep(min(self.backoff_max, self.backoff * 2**attempt))
        raise AssertionError("unreachable")  # the loop returns or raises

    def transfer(self, src: BufferRef, dst: BufferRef, item: str | None = None) -> TransferRecord:
        """Move the sealed buffer ``src`` into ``dst`` (created empty, or partly filled by an
        earlier interrupted run); the record of the transfer. ``TransferError`` on failure."""
        name = item or src.buffer
        try:
            with httpx.Client(transport=self.transport, timeout=self.timeout) as http:
                return self._transfer(BufferClient(src, http), BufferClient(dst, http), item)
        except TransferError:
            raise
        except (DataLogisticsError, httpx.HTTPError) as exc:
            raise TransferError(f"transfer of {name} from {src.url} to {dst.url}: {exc}") from exc

    def _transfer(self, s: BufferClient, d: BufferClient, item: str | None) -> TransferRecord:
        c = _Counters()
        sinfo = self._retrying("source info", s.info, c)
        if sinfo.state != "full" or sinfo.sha256 is None:
            raise TransferError(
                f"source buffer {sinfo.id} is {sinfo.state}: seal it before transferring"
            )
        dinfo = self._retrying("destination info", d.info, c)
        if dinfo.size > sinfo.size:
            raise TransferError(
                f"destination buffer {dinfo.id} holds {dinfo.size} bytes, more than the "
                f"{sinfo.size} of the source: it holds something else"
            )
        if dinfo.max_size < sinfo.size:
            raise TransferError(
                f"destination buffer {dinfo.id} takes at most {dinfo.max_size} bytes, the source "
                f"holds {sinfo.size}: create it with max_size >= {sinfo.size}"
            )
        bucket = self.limits.get((sinfo.site, dinfo.site), self.default_limit)
        started = time.time()
        offset = resumed_from = dinfo.size
        pushed = False
        if dinfo.state != "full":
            # A rate-limited link needs the engine's token bucket on the way: relay it.
            pushed = self.push and bucket is None and self._push(s, d, sinfo.size, c)
            if not pushed:
                offset = self._retrying("destination info", d.info, c).size
                self._move_chunks(s, d, offset, sinfo.size, bucket, c)
        # the destination hashes its disk: a mismatch is ChecksumMismatch, never retried
        final = self._retrying("seal", lambda: d.seal(sinfo.sha256), c)
        if final.sha256 != sinfo.sha256:
            raise TransferError(
                f"destination {final.id} sha256 {final.sha256} != source sha256 {sinfo.sha256}"
            )
        record = TransferRecord(
            item=item or sinfo.item,
            src_site=sinfo.site,
            dst_site=dinfo.site,
            src_buffer=sinfo.id,
            dst_buffer=dinfo.id,
            started_at=started,
            finished_at=time.time(),
            bytes=sinfo.size - resumed_from,
            total_bytes=sinfo.size,
            resumed_from=resumed_from,
            retries=c.retries,
            resent_chunks=c.resent,
            sha256=sinfo.sha256,
            pushed=pushed,
        )
        if self.on_record is not None:
            self.on_record(record)
        return record

    def _push(self, s: BufferClient, d: BufferClient, size: int, c: _Counters) -> bool:
        """Have the source service push its bytes straight to the destination, call after
        call until it is all there; False (nothing done) when the source refuses to push
        there (not one of its peers: relay instead). ``TransferError`` after ``retries``
        calls in a row that moved nothing."""
        seconds = max(1.0, min(10.0, self.timeout / 4))  # each call answers well within timeout
        stalled = 0
        while True:
            try:
                r = self._retrying(
                    "push", partial(s.push, d.ref, self.chunk_size, seconds=seconds), c
                )
            except PushRefused:
                return False
            except ChecksumMismatch as exc:
                raise TransferError(
                    f"a chunk pushed from {s.ref.url} failed its checksum at the destination "
                    f"every time it was sent: {exc}"
                ) from exc
            c.resent += r.resent
            if r.done:
                return True
            stalled = 0 if r.sent else stalled + 1
            if stalled > self.retries:
                raise TransferError(
                    f"the push from {s.ref.url} to {d.ref.url} moved nothing {stalled} times "
                    f"in a row (destination at {r.offset} of {r.size} bytes)"
                )

    def _read_chunk(
        self, s: BufferClient, offset: int, n: int, c: _Counters
    ) -> tuple[int, bytes, str]:
        """The ``n`` source bytes at ``offset`` and the digest the source sent with them."""
        data, digest = self._retrying("chunk read", partial(s.read, offset, n), c)
        return offset, data, digest

    def _move_chunks(
        self,
        s: BufferClient,
        d: BufferClient,
        offset: int,
        size: int,
        bucket: TokenBucket | None,
        c: _Counters,
    ) -> None:
        """Copy ``[offset, size)`` chunk by chunk, reading the next chunk while one is appended."""
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="transfer-read") as reader:

            def ahead(at: int) -> Future[tuple[int, bytes, str]]:
                return reader.submit(self._read_chunk, s, at, min(self.chunk_size, size - at), c)

            pending = ahead(offset)
            while offset < size:
                at, data, digest = pending.result()
                if at != offset:  # the destination moved (a resync): fetch where it is
                    pending = ahead(offset)
                    continue
                if offset + len(data) < size:
                    pending = ahead(offset + len(data))
                offset = self._move_chunk(s, d, offset, data, digest, bucket, c)

    def _move_chunk(
        self,
        s: BufferClient,
        d: BufferClient,
        offset: int,
        data: bytes,
        digest: str,
        bucket: TokenBucket | None,
        c: _Counters,
    ) -> int:
        """Append the chunk at ``offset`` (read again after a checksum failure); the
        destination's new end (the next offset)."""
        for _ in range(self.retries + 1):
            try:
                if bucket is not None:
                    bucket.acquire(len(data))
                append = partial(d.append, data, offset, f"o{offset}", digest, durable=False)
                return self._retrying("chunk", append, c).size
            except ChecksumMismatch as exc:
                c.resent += 1  # corrupted on the way: nothing was stored, send it again
                c.errors.append(str(exc))
                _, data, digest = self._read_chunk(s, offset, len(data), c)
            except (OffsetMismatch, TagExists):
                # An earlier attempt landed after all (its answer was lost): resync.
                return self._retrying("destination info", d.info, c).size
        raise TransferError(
            f"chunk at offset {offset} failed its checksum {self.retries + 1} times: "
            f"{c.errors[-1] if c.errors else ''}"
        )

    # -- several items ---------------------------------------------------------------
    def transfer_many(self, jobs: Sequence[TransferJob], parallel: int = 4) -> list[TransferRecord]:
        """Run ``jobs`` with up to ``parallel`` at once; their records in the order given.

        Every job runs to its end; if any failed, ``TransferError`` lists them
        all (``.records`` holds the ones that succeeded).
        """
        if parallel < 1:
            raise ValueError(f"parallel must be >= 1, got {parallel}")
        with ThreadPoolExecutor(max_workers=parallel) as pool:
            futures = [pool.submit(self.transfer, j.src, j.dst, j.item) for j in jobs]
        records: list[TransferRecord] = []
        failures: list[str] = []
        for f in futures:
            exc = f.exception()
            if exc is None:
                records.append(f.result())
            else:
                failures.append(str(exc))
        if failures:
            raise TransferError(
                f"{len(failures)} of {len(jobs)} transfers failed: {failures[0]}", records
            )
        return records
