"""Appends acknowledged before their fsync (issue 19): what a crash may cut, and how a
transfer resumes from it with its checksums verified."""

from __future__ import annotations

import ctypes
import hashlib
import mmap
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from datalogistics.buffers import BufferClient, BufferRef, BufferStore, Quota, SiteClient
from datalogistics.errors import ChecksumMismatch, OffsetMismatch
from datalogistics.transfer import TokenBucket, TransferEngine
from tests.datalogistics.conftest import Clock, ServiceProcess, ServiceThread
from tests.datalogistics.test_transfer import produce

QUOTA = Quota(max_bytes=2**30, max_count=10)


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=120) as client:
        yield client


def test_an_unsynced_append_lost_in_a_crash_is_cut_off_and_the_size_says_where_to_resume(
    tmp_path: Path,
) -> None:
    store = BufferStore(tmp_path, "s", QUOTA)
    buf = store.create(3 * 1024, ttl=600)
    a, b, c = b"a" * 1024, b"b" * 1024, b"c" * 1024
    store.append(buf.id, a)  # durable: committed before the answer
    # Holding the store's lock keeps its syncer from committing: the append below is
    # acknowledged (verified, written) but neither fsynced nor committed when the process
    # "dies" (its in-memory list of unsynced appends is lost, as in a kill).
    with store._synced:
        acked = store.append(buf.id, b, offset=1024, durable=False)
        assert acked.size == 2048  # counted where the next append starts
        assert store.read(buf.id)[0] == a  # but readable only once committed
        with pytest.raises(OffsetMismatch, match="ends at 2048"):
            store.append(buf.id, c, offset=1024, durable=False)
        store._unsynced.clear()
        restarted = BufferStore(tmp_path, "s", QUOTA)  # a new process on the same folder
    store.close()
    assert restarted.info(buf.id).size == 1024  # the unsynced bytes were cut off on start
    assert restarted.path(buf.id).stat().st_size == 1024
    restarted.append(buf.id, b, offset=1024, durable=False)
    restarted.append(buf.id, c, offset=2048, durable=False)
    digest = hashlib.sha256(a + b + c).hexdigest()
    sealed = restarted.seal(buf.id, digest)  # waits for the syncer, then checks the disk
    assert (sealed.state, sealed.size, sealed.sha256) == ("full", 3072, digest)
    assert restarted.read(buf.id)[0] == a + b + c
    restarted.close()


def test_a_seal_after_unsynced_appends_checks_the_bytes_read_back_from_disk(
    tmp_path: Path,
) -> None:
    store = BufferStore(tmp_path, "s", QUOTA)
    data = os.urandom(4 * 2**20)
    buf = store.create(len(data), ttl=600)
    for i in range(0, len(data), 2**20):
        store.append(buf.id, data[i : i + 2**20], offset=i, durable=False)
    with pytest.raises(ChecksumMismatch, match="on disk"):
        store.seal(buf.id, hashlib.sha256(data[::-1]).hexdigest())
    assert store.info(buf.id).state == "error"
    good = store.create(len(data), ttl=600)
    for i in range(0, len(data), 2**20):  # the last one durable: the seal reads it itself
        store.append(good.id, data[i : i + 2**20], offset=i, durable=i + 2**20 == len(data))
    digest = hashlib.sha256(data).hexdigest()
    assert store.seal(good.id, digest).sha256 == digest
    store.close()


def _cached_pages(path: Path) -> tuple[int, int]:
    """How many pages of the file at ``path`` the page cache holds, of how many
    (``mincore`` on a private mapping of the file, which reports the page cache's pages)."""
    libc = ctypes.CDLL(None, use_errno=True)
    size = path.stat().st_size
    pages = -(-size // mmap.PAGESIZE)
    with open(path, "rb") as f, mmap.mmap(f.fileno(), size, access=mmap.ACCESS_COPY) as m:
        address = ctypes.addressof(ctypes.c_char.from_buffer(m))  # the export is dropped
        vec = (ctypes.c_ubyte * pages)()
        if libc.mincore(ctypes.c_void_p(address), ctypes.c_size_t(size), vec) != 0:
            raise OSError(ctypes.get_errno(), "mincore failed")
    return sum(b & 1 for b in vec), pages


def test_bytes_read_back_after_their_fsync_leave_the_page_cache_and_read_intact_from_disk(
    tmp_path: Path,
) -> None:
    data = os.urandom(8 * 2**20)
    digest = hashlib.sha256(data).hexdigest()

    def write(store: BufferStore, durable: bool) -> str:
        buf = store.create(len(data), ttl=600)
        for i in range(0, len(data), 2**20):
            store.append(buf.id, data[i : i + 2**20], offset=i, durable=durable)
        assert store.seal(buf.id, digest).sha256 == digest
        return buf.id

    store = BufferStore(tmp_path / "drop", "s", QUOTA, sync_bytes=2 * 2**20)
    streamed = write(store, durable=False)  # the syncer's passes, each read back
    cached, pages = _cached_pages(store.path(streamed))
    assert cached == 0, f"{cached} of {pages} pages read back still in the page cache"
    assert store.read(streamed)[0] == data  # read again, from disk
    # the control: durable appends are not read back, so their pages stay cached (the
    # measure above can see cached pages), and so do a store's without drop-behind
    durable = write(store, durable=True)
    assert _cached_pages(store.path(durable))[0] > pages // 2
    store.close()
    keep = BufferStore(tmp_path / "keep", "s", QUOTA, sync_bytes=2 * 2**20, drop_behind=False)
    kept = write(keep, durable=False)
    assert _cached_pages(keep.path(kept))[0] > pages // 2
    assert keep.read(kept)[0] == data
    keep.close()


def test_destination_killed_mid_transfer_restarts_and_the_transfer_resumes_verified(
    tmp_path: Path, http: httpx.Client
) -> None:
    src_svc = ServiceThread(tmp_path / "alpha", "alpha", QUOTA, Clock()).start()
    dst_svc = ServiceProcess(tmp_path / "beta", "beta").start()
    try:
        data = os.urandom(8 * 2**20)
        src = produce(src_svc, data, http)
        buf = SiteClient(dst_svc.url, dst_svc.admin, http).create(len(data), ttl=600)
        dst = BufferRef(dst_svc.url, buf.id, dst_svc.token(buf.id, "write"))
        probe = BufferClient(dst, http)
        # The engine in a thread, held to 4 MB/s so the service is killed mid-transfer.
        failures: list[BaseException] = []

        def run() -> None:
            engine = TransferEngine(
                chunk_size=2**19,
                retries=0,
                limits={("alpha", "beta"): TokenBucket(4e6, 2**19)},
            )
            try:
                engine.transfer(src, dst)
            except BaseException as exc:  # the kill makes it fail: expected
                failures.append(exc)

        t = threading.Thread(target=run)
        t.start()
        deadline = time.monotonic() + 60
        while probe.info().size < 3 * 2**20:  # progress observed, then the kill
            assert t.is_alive(), failures
            assert time.monotonic() < deadline, "the transfer made no progress"
            time.sleep(0.01)
        dst_svc.kill()
        t.join(timeout=60)
        assert failures, "the transfer should have failed when its destination died"
        dst_svc.start()  # same folder, same port
        resumed_at = probe.info().size
        assert 0 < resumed_at < len(data)
        assert resumed_at % 2**19 == 0  # only whole verified chunks survive
        rec = TransferEngine(chunk_size=2**19).transfer(src, dst)
        assert rec.resumed_from == resumed_at
        reader = BufferClient(BufferRef(dst_svc.url, buf.id, dst_svc.token(buf.id, "read")), http)
        assert reader.read()[0] == data
        assert probe.info().sha256 == hashlib.sha256(data).hexdigest()
    finally:
        dst_svc.kill()
        src_svc.stop()


MiB = 2**20


def _chain(store: BufferStore, buffer_id: str, chunks: list[bytes], start: int) -> None:
    """Append ``chunks`` from ``start`` as one chained stream (the data port's way): each
    verified and acknowledged to the syncer, the last one finished on its own."""
    lease = store.begin_append(buffer_id, start)
    for i, chunk in enumerate(chunks):
        lease.write(chunk)
        digest = hashlib.sha256(chunk).hexdigest()
        if i < len(chunks) - 1:
            lease = store.chain_append(lease, digest)
        else:
            store.finish_append(lease, digest, durable=False)


def test_chained_appends_verify_each_chunk_and_hold_the_buffer_until_the_last(
    tmp_path: Path,
) -> None:
    # no resume point by bytes or by time: only when someone waits for one (the seal)
    store = BufferStore(tmp_path, "s", QUOTA, sync_bytes=2**40, sync_delay=3600)
    a, b, c = os.urandom(1000), os.urandom(1000), os.urandom(1000)
    buf = store.create(3000, ttl=600)
    lease = store.begin_append(buf.id, 0)
    lease.write(a)
    lease = store.chain_append(lease, hashlib.sha256(a).hexdigest())
    assert (lease.start, store.info(buf.id).size) == (1000, 1000)  # acknowledged, counted
    with pytest.raises(OffsetMismatch, match="in progress"):  # the chain holds the buffer
        store.begin_append(buf.id, 1000)
    with pytest.raises(OffsetMismatch, match="in progress"):
        store.seal(buf.id)
    lease.write(b)
    with pytest.raises(ChecksumMismatch, match="offset 1000"):  # corrupted: cut off
        store.chain_append(lease, hashlib.sha256(c).hexdigest())
    assert store.info(buf.id).size == 1000  # the chunk before it stays
    assert store.path(buf.id).stat().st_size == 1000
    tagged = store.begin_append(buf.id, 1000, tag="t")
    tagged.write(b)
    with pytest.raises(ValueError, match="tag cannot be chained"):
        store.chain_append(tagged, hashlib.sha256(b).hexdigest())
    _chain(store, buf.id, [b, c], 1000)
    # the refused seal above had the syncer commit a; b and c are acknowledged, not committed
    assert store.read(buf.id)[0] == a
    digest = hashlib.sha256(a + b + c).hexdigest()
    sealed: list[str | None] = []
    sealing = threading.Thread(
        target=lambda: sealed.append(store.seal(buf.id, digest).sha256), daemon=True
    )
    sealing.start()  # the seal waits for the syncer, which syncs an awaited buffer at once
    sealing.join(timeout=60)
    assert sealed == [digest]
    assert store.read(buf.id)[0] == a + b + c
    store.close()


def test_resume_points_come_per_sync_bytes_and_a_crash_keeps_whole_chunks_in_order(
    tmp_path: Path,
) -> None:
    """The syncer fsyncs and commits a resume point per ``sync_bytes`` of acknowledged
    appends, not per chunk. A crash loses the appends after the last resume point, whole;
    the transfer resumes from the restarted store's size and ends with every chunk once, in
    order, and the right sha256."""
    chunks = [os.urandom(MiB) for _ in range(8)]
    data = b"".join(chunks)
    # sync_delay: never by time here, only by bytes (3 MiB) or when awaited
    store = BufferStore(tmp_path, "s", QUOTA, sync_bytes=3 * MiB, sync_delay=3600)
    passes: list[int] = []
    sync_buffer = store._sync_buffer

    def counted(buffer_id: str, extents: list[Any]) -> None:
        passes.append(sum(e.length for e in extents))
        sync_buffer(buffer_id, extents)

    store._sync_buffer = counted  # type: ignore[method-assign]
    buf = store.create(len(data), ttl=600)
    _chain(store, buf.id, chunks, 0)
    assert store.info(buf.id).size == len(data)  # all acknowledged
    deadline = time.monotonic() + 60
    while True:  # the syncer commits by 3 MiB: all but a tail of at most 2 MiB
        with store._synced:
            pending = sum(e.length for e in store._unsynced.get(buf.id, []))
            if pending < 3 * MiB:
                # "crash": the list of acknowledged, unsynced appends is lost with the
                # process, and a new process starts on the same folder
                store._unsynced.clear()
                restarted = BufferStore(tmp_path, "s", QUOTA)
                break
        assert time.monotonic() < deadline, "the syncer never recorded a resume point"
        time.sleep(0.01)
    store.close()
    assert passes  # no fsync per chunk: a resume point per 3 MiB or more
    assert all(n >= 3 * MiB for n in passes)
    assert len(passes) <= 2
    resumed_at = restarted.info(buf.id).size
    assert resumed_at % MiB == 0  # whole chunks only
    assert 6 * MiB <= resumed_at <= 8 * MiB
    assert restarted.path(buf.id).stat().st_size == resumed_at  # the rest was cut off
    assert restarted.read(buf.id)[0] == data[:resumed_at]
    if resumed_at < len(data):
        _chain(restarted, buf.id, chunks[resumed_at // MiB :], resumed_at)
    digest = hashlib.sha256(data).hexdigest()
    sealed = restarted.seal(buf.id, digest)  # awaited: the syncer commits the tail at once
    assert (sealed.state, sealed.size, sealed.sha256) == ("full", len(data), digest)
    extents = restarted.extents_from(buf.id, 0, len(data), 100)
    assert [(o, n) for o, n, _ in extents] == [(i * MiB, MiB) for i in range(8)]
    assert [d for _, _, d in extents] == [hashlib.sha256(c).hexdigest() for c in chunks]
    assert restarted.read(buf.id)[0] == data
    restarted.close()
