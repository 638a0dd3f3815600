"""The transfer engine between two real buffer services on loopback."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from datalogistics.buffers import BufferClient, BufferRef, SiteClient
from datalogistics.errors import TransferError
from datalogistics.transfer import TokenBucket, TransferEngine, TransferJob, TransferRecord
from tests.datalogistics.conftest import ServiceThread, Sites


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30) as client:
        yield client


def produce(svc: ServiceThread, data: bytes, http: httpx.Client, item: str = "x") -> BufferRef:
    """A sealed buffer holding ``data`` at ``svc``; its read reference."""
    buf = SiteClient(svc.url, svc.admin, http).create(len(data), ttl=600, item=item)
    w = BufferClient(BufferRef(svc.url, buf.id, svc.token(buf.id, "write")), http)
    for i in range(0, len(data), 2**20):
        w.append(data[i : i + 2**20], offset=i)
    w.seal(hashlib.sha256(data).hexdigest())
    return BufferRef(svc.url, buf.id, svc.token(buf.id, "read"))


def destination(svc: ServiceThread, size: int, http: httpx.Client) -> BufferRef:
    buf = SiteClient(svc.url, svc.admin, http).create(size, ttl=600)
    return BufferRef(svc.url, buf.id, svc.token(buf.id, "write"))


def read_all(svc: ServiceThread, ref: BufferRef, http: httpx.Client) -> bytes:
    r = BufferClient(BufferRef(svc.url, ref.buffer, svc.token(ref.buffer, "read")), http)
    return r.read()[0]


class FaultyNetwork(httpx.HTTPTransport):
    """Real HTTP, but flips one byte of the first chunk(s) on the chosen leg, or refuses
    the first connections."""

    def __init__(self, corrupt_writes: int = 0, corrupt_reads: int = 0, refuse: int = 0) -> None:
        super().__init__()
        self.corrupt_writes = corrupt_writes
        self.corrupt_reads = corrupt_reads
        self.refuse = refuse

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if self.refuse:
            self.refuse -= 1
            raise httpx.ConnectError("connection refused (injected)", request=request)
        is_data = request.url.path.endswith("/data")
        if is_data and request.method == "POST" and self.corrupt_writes:
            self.corrupt_writes -= 1
            body = bytearray(request.read())
            body[len(body) // 2] ^= 0xFF
            request = httpx.Request(
                request.method, request.url, headers=request.headers, content=bytes(body)
            )
        response = super().handle_request(request)
        if is_data and request.method == "GET" and self.corrupt_reads:
            self.corrupt_reads -= 1
            body = bytearray(response.read())
            body[0] ^= 0x01
            return httpx.Response(
                response.status_code, headers=response.headers, content=bytes(body)
            )
        return response


def test_transfer_moves_bytes_and_reports_throughput(two_sites: Sites, http: httpx.Client) -> None:
    a, b = two_sites
    data = os.urandom(3 * 2**20 + 123)
    src = produce(a, data, http, item="vis")
    dst = destination(b, len(data), http)
    seen: list[TransferRecord] = []
    rec = TransferEngine(chunk_size=2**20, on_record=seen.append).transfer(src, dst)
    assert read_all(b, dst, http) == data
    assert rec.sha256 == hashlib.sha256(data).hexdigest()
    assert (rec.bytes, rec.total_bytes, rec.resumed_from) == (len(data), len(data), 0)
    assert seen == [rec]
    t = rec.telemetry()
    assert (t["link"], t["src"], t["dst"], t["item"]) == ("alpha->beta", "alpha", "beta", "vis")
    assert t["throughput"] == pytest.approx(t["bytes"] / t["seconds"])
    assert BufferClient(dst, http).info().state == "full"


@pytest.mark.parametrize("leg", ["write", "read"])
def test_corrupted_chunk_is_detected_and_resent(
    two_sites: Sites, http: httpx.Client, leg: str
) -> None:
    a, b = two_sites
    data = os.urandom(2**20 * 2)
    src = produce(a, data, http)
    dst = destination(b, len(data), http)
    net = FaultyNetwork(corrupt_writes=int(leg == "write"), corrupt_reads=int(leg == "read"))
    rec = TransferEngine(chunk_size=2**19, transport=net).transfer(src, dst)
    assert rec.resent_chunks == 1
    assert read_all(b, dst, http) == data
    assert BufferClient(dst, http).info().sha256 == hashlib.sha256(data).hexdigest()


def test_corruption_on_every_attempt_fails_without_storing_bad_bytes(
    two_sites: Sites, http: httpx.Client
) -> None:
    a, b = two_sites
    data = os.urandom(2**16)
    src = produce(a, data, http)
    dst = destination(b, len(data), http)
    engine = TransferEngine(transport=FaultyNetwork(corrupt_writes=100), retries=2, backoff=0)
    with pytest.raises(TransferError, match="checksum"):
        engine.transfer(src, dst)
    assert BufferClient(dst, http).info().size == 0


def test_connection_failures_are_retried_with_backoff(two_sites: Sites, http: httpx.Client) -> None:
    a, b = two_sites
    data = os.urandom(2**16)
    src = produce(a, data, http)
    dst = destination(b, len(data), http)
    waits: list[float] = []
    engine = TransferEngine(transport=FaultyNetwork(refuse=3), backoff=0.5, sleep=waits.append)
    rec = engine.transfer(src, dst)
    assert rec.retries == 3
    assert waits == [0.5, 1.0, 2.0]
    assert read_all(b, dst, http) == data
    engine = TransferEngine(transport=FaultyNetwork(refuse=10), retries=2, sleep=waits.append)
    with pytest.raises(TransferError, match="refused"):
        engine.transfer(src, destination(b, len(data), http))


def test_transfer_killed_half_way_resumes_at_the_last_verified_offset(
    two_sites: Sites, http: httpx.Client
) -> None:
    a, b = two_sites
    data = os.urandom(6 * 2**20)
    src = produce(a, data, http)
    dst = destination(b, len(data), http)
    # The engine in its own process, held to 2 MB/s so that it is still running when killed.
    script = (
        "import sys\n"
        "from datalogistics.buffers import BufferRef\n"
        "from datalogistics.transfer import TokenBucket, TransferEngine\n"
        "src = BufferRef.parse(sys.argv[1], sys.argv[2])\n"
        "dst = BufferRef.parse(sys.argv[3], sys.argv[4])\n"
        "limits = {('alpha', 'beta'): TokenBucket(2e6, 2**18)}\n"
        "TransferEngine(chunk_size=2**18, limits=limits).transfer(src, dst)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script, src.url, src.token, dst.url, dst.token],
        stderr=subprocess.PIPE,
    )
    probe = BufferClient(dst, http)
    try:
        deadline = time.monotonic() + 60
        while probe.info().size < 2**20 * 2:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "the transfer made no progress"
            time.sleep(0.02)
    finally:
        proc.kill()
        proc.wait(timeout=10)
    stopped_at = probe.info().size
    assert 0 < stopped_at < len(data)
    assert probe.info().state == "created"
    rec = TransferEngine(chunk_size=2**18).transfer(src, dst)
    assert rec.resumed_from == stopped_at
    assert rec.bytes == len(data) - stopped_at
    assert read_all(b, dst, http) == data
    assert probe.info().sha256 == hashlib.sha256(data).hexdigest()


def test_several_items_in_parallel_through_a_rate_limited_link(
    two_sites: Sites, http: httpx.Client
) -> None:
    a, b = two_sites
    items = {f"item-{i}": os.urandom(2**18 + i) for i in range(4)}
    jobs = [
        TransferJob(produce(a, d, http, item=k), destination(b, len(d), http), k)
        for k, d in items.items()
    ]
    bucket = TokenBucket(rate=50e6, burst=2**18)
    seen: list[TransferRecord] = []
    engine = TransferEngine(limits={("alpha", "beta"): bucket}, on_record=seen.append)
    records = engine.transfer_many(jobs, parallel=3)
    assert [r.item for r in records] == list(items)
    assert sorted(r.item or "" for r in seen) == sorted(items)
    for job, (_, d) in zip(jobs, items.items(), strict=True):
        assert read_all(b, job.dst, http) == d


def test_unsealed_source_is_refused(two_sites: Sites, http: httpx.Client) -> None:
    a, b = two_sites
    buf = SiteClient(a.url, a.admin, http).create(100, ttl=60)
    src = BufferRef(a.url, buf.id, a.token(buf.id, "read"))
    with pytest.raises(TransferError, match="seal it"):
        TransferEngine().transfer(src, destination(b, 100, http))


def test_token_bucket_holds_the_long_run_rate() -> None:
    now = [0.0]

    def sleep(s: float) -> None:
        now[0] += s

    bucket = TokenBucket(rate=100.0, burst=10.0, clock=lambda: now[0], sleep=sleep)
    assert bucket.acquire(10) == 0.0  # the burst is free
    assert bucket.acquire(50) == pytest.approx(0.5)
    for _ in range(20):
        bucket.acquire(25)
    assert now[0] == pytest.approx((10 + 50 + 500 - 10) / 100.0)
    with pytest.raises(ValueError, match="positive"):
        TokenBucket(rate=0)


def test_buffer_urls_parse() -> None:
    ref = BufferRef.parse("http://127.0.0.1:8000/prefix/buffers/abc", "t")
    assert (ref.base_url, ref.buffer, ref.url) == (
        "http://127.0.0.1:8000/prefix",
        "abc",
        "http://127.0.0.1:8000/prefix/buffers/abc",
    )
    with pytest.raises(ValueError, match="buffers/<id>"):
        BufferRef.parse("http://127.0.0.1:8000/abc", "t")


def test_bytes_rotted_on_the_source_disk_are_caught_end_to_end(
    two_sites: Sites, http: httpx.Client
) -> None:
    """Digests are recorded when bytes are written: a bit flipped later on the source's disk
    fails the destination's check instead of being blessed by a fresh hash."""
    a, b = two_sites
    data = os.urandom(2**20)
    src = produce(a, data, http)
    path = a.store.path(src.buffer)
    raw = bytearray(path.read_bytes())
    raw[12345] ^= 0x10
    path.write_bytes(bytes(raw))
    dst = destination(b, len(data), http)
    with pytest.raises(TransferError, match="checksum"):
        TransferEngine(chunk_size=2**20, retries=1, backoff=0).transfer(src, dst)
    assert BufferClient(dst, http).info().size == 0
