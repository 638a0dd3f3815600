"""Appends acknowledged before their fsync (issue 19): what a crash may cut, and how a
transfer resumes from it with its checksums verified."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

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
