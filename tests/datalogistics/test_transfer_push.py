"""The source service pushes a sealed buffer straight to a peer's buffer (issue 19): the engine
only orchestrates, every chunk is still verified, a crash of either side resumes."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from datalogistics.buffers import BufferClient, BufferRef, Quota, SiteClient
from datalogistics.errors import ChecksumMismatch, PushRefused, TransferError
from datalogistics.transfer import TokenBucket, TransferEngine
from tests.datalogistics.conftest import Clock, ServiceProcess, ServiceThread
from tests.datalogistics.test_transfer import destination

QUOTA = Quota(max_bytes=2**30, max_count=16)
MiB = 2**20


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=120) as client:
        yield client


@pytest.fixture(params=["data port", "http"])
def peers(
    tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[tuple[ServiceThread, ServiceThread]]:
    """``alpha`` pushes to ``beta`` (its peer) through beta's data port, or through its HTTP
    route when it has none; ``beta`` has no peers."""
    clock = Clock()
    port = 0 if request.param == "data port" else None
    b = ServiceThread(tmp_path / "beta", "beta", QUOTA, clock, data_port=port).start()
    a = ServiceThread(tmp_path / "alpha", "alpha", QUOTA, clock, peers=(b.url + "/",)).start()
    yield a, b
    a.stop()
    b.stop()


def produce(svc: ServiceThread, data: bytes, http: httpx.Client, append: int) -> BufferRef:
    """A sealed buffer holding ``data`` written in appends of ``append`` bytes."""
    buf = SiteClient(svc.url, svc.admin, http).create(len(data), ttl=600)
    w = BufferClient(BufferRef(svc.url, buf.id, svc.token(buf.id, "write")), http)
    for i in range(0, len(data), append):
        w.append(data[i : i + append], offset=i)
    w.seal(hashlib.sha256(data).hexdigest())
    return BufferRef(svc.url, buf.id, svc.token(buf.id, "read"))


def read_back(svc: ServiceThread | ServiceProcess, ref: BufferRef, http: httpx.Client) -> bytes:
    reader = BufferRef(svc.url, ref.buffer, svc.token(ref.buffer, "read"))
    return BufferClient(reader, http).read()[0]


@pytest.mark.parametrize("append", [MiB, 300_000], ids=["source appends as chunks", "hashed"])
def test_a_pushed_transfer_moves_every_byte_and_the_engine_relays_none(
    peers: tuple[ServiceThread, ServiceThread], http: httpx.Client, append: int
) -> None:
    a, b = peers
    data = os.urandom(5 * MiB + 12345)
    src = produce(a, data, http, append)
    dst = destination(b, len(data), http)
    relayed: list[str] = []

    class Watch(httpx.HTTPTransport):  # the engine's own requests: none carries data
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            if request.url.path.endswith("/data"):
                relayed.append(f"{request.method} {request.url.path}")
            return super().handle_request(request)

    rec = TransferEngine(chunk_size=2 * MiB, transport=Watch()).transfer(src, dst)
    assert rec.pushed
    assert not relayed
    assert (rec.bytes, rec.total_bytes, rec.resumed_from) == (len(data), len(data), 0)
    assert rec.sha256 == hashlib.sha256(data).hexdigest()
    assert read_back(b, dst, http) == data
    assert BufferClient(dst, http).info().sha256 == rec.sha256  # sealed, checked on disk
    again = BufferClient(src, http).push(dst, MiB)  # nothing left: says the way it would go
    assert (again.done, again.sent) == (True, 0)
    assert again.channel == ("data port" if b.data_port else "http")


def test_a_service_pushes_only_to_its_peers_and_the_engine_then_relays(
    peers: tuple[ServiceThread, ServiceThread], http: httpx.Client
) -> None:
    a, b = peers
    data = os.urandom(3 * MiB)
    back = produce(b, data, http, MiB)  # beta lists no peer: it refuses to push to alpha
    dst = destination(a, len(data), http)
    with pytest.raises(PushRefused, match="not one of its peers"):
        BufferClient(back, http).push(dst, MiB)
    # nor to any other URL (a read token cannot aim the service elsewhere)
    elsewhere = BufferRef("http://10.0.0.1:9", "x", "t")
    src = produce(a, data, http, MiB)
    with pytest.raises(PushRefused):
        BufferClient(src, http).push(elsewhere, MiB)
    assert BufferClient(dst, http).info().size == 0
    rec = TransferEngine(chunk_size=MiB).transfer(back, dst)
    assert not rec.pushed
    assert rec.sha256 == hashlib.sha256(data).hexdigest()
    assert read_back(a, dst, http) == data
    # a rate-limited link is relayed too (the engine's token bucket paces it)
    dst2 = destination(b, len(data), http)
    limited = TransferEngine(chunk_size=MiB, limits={("alpha", "beta"): TokenBucket(1e9)})
    assert not limited.transfer(src, dst2).pushed


def test_bytes_rotted_on_the_source_disk_stop_a_push_at_their_chunk(
    peers: tuple[ServiceThread, ServiceThread], http: httpx.Client
) -> None:
    """The chunks before the rotted one are verified and kept; the rotted one is refused on
    every try; the transfer fails naming the checksum and the destination is never sealed."""
    a, b = peers
    data = os.urandom(4 * MiB)
    src = produce(a, data, http, MiB)
    path = a.store.path(src.buffer)
    raw = bytearray(path.read_bytes())
    raw[2 * MiB + 777] ^= 0x04
    path.write_bytes(bytes(raw))
    dst = destination(b, len(data), http)
    with pytest.raises(TransferError, match="checksum"):
        TransferEngine(chunk_size=MiB, retries=1, backoff=0).transfer(src, dst)
    info = BufferClient(dst, http).info()
    assert (info.size, info.state, info.sha256) == (2 * MiB, "created", None)
    b.store.sync(dst.buffer)  # readable once the syncer committed them
    assert read_back(b, dst, http) == data[: 2 * MiB]


def test_an_append_of_several_chunks_verifies_each_and_keeps_the_good_ones(
    peers: tuple[ServiceThread, ServiceThread], http: httpx.Client
) -> None:
    _, b = peers
    one, two = os.urandom(MiB), os.urandom(MiB // 2)
    dst = destination(b, 4 * MiB, http)
    w = BufferClient(dst, http)
    good = [
        (len(one), hashlib.sha256(one).hexdigest()),
        (len(two), hashlib.sha256(two).hexdigest()),
    ]
    bad = [good[0], (len(two), hashlib.sha256(one).hexdigest())]
    with pytest.raises(ChecksumMismatch, match=f"offset {len(one)}"):
        w.append(one + two, offset=0, chunks=bad)
    assert w.info().size == len(one)  # the first chunk was verified and stays
    info = w.append(two + one, offset=len(one), chunks=[good[1], good[0]])
    assert info.size == 2 * len(one) + len(two)
    with pytest.raises(ValueError, match="Content-Length"):
        w.append(one, chunks=[(len(one) + 1, good[0][1])])
    with pytest.raises(ValueError, match="<length>:<sha256>"):
        w.append(one, chunks=[(len(one), "nothex")])
    with pytest.raises(ValueError, match="a tag or X-Content-SHA256"):
        w.append(one, tag="t", chunks=[good[0]])
    assert w.info().size == info.size  # nothing of the refused appends stayed
    sealed = w.seal()
    assert read_back(b, dst, http) == one + two + one
    assert sealed.sha256 == hashlib.sha256(one + two + one).hexdigest()


def test_destination_killed_mid_push_restarts_and_the_transfer_resumes_verified(
    tmp_path: Path, http: httpx.Client
) -> None:
    dst_svc = ServiceProcess(tmp_path / "beta", "beta").start()
    src_svc = ServiceThread(tmp_path / "alpha", "alpha", QUOTA, Clock(), peers=(dst_svc.url,))
    src_svc.start()
    try:
        data = os.urandom(8 * MiB)
        src = produce(src_svc, data, http, MiB)
        buf = SiteClient(dst_svc.url, dst_svc.admin, http).create(len(data), ttl=600)
        dst = BufferRef(dst_svc.url, buf.id, dst_svc.token(buf.id, "write"))
        probe = BufferClient(dst, http)
        # A first push stops after 5 MiB, acknowledged before their fsync; the destination is
        # killed at once: what its syncer had not committed is cut off when it starts again.
        first = BufferClient(src, http).push(dst, MiB, max_bytes=5 * MiB)
        assert (first.offset, first.sent, first.done) == (5 * MiB, 5 * MiB, False)
        dst_svc.kill()
        dst_svc.start()  # same folder, same port
        resumed_at = probe.info().size
        assert 0 <= resumed_at <= 5 * MiB
        assert resumed_at % MiB == 0
        rec = TransferEngine(chunk_size=MiB).transfer(src, dst)
        assert rec.pushed
        assert rec.resumed_from == resumed_at
        assert read_back(dst_svc, dst, http) == data
        assert probe.info().sha256 == hashlib.sha256(data).hexdigest()
    finally:
        dst_svc.kill()
        src_svc.stop()
