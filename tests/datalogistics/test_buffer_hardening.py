"""Data verified where it rests, bounded memory, bounded lifetimes, private files (issue 15).

Each test is one defect found by an attack on a running buffer service: a seal
that trusted a digest kept in memory, appends held whole in memory, a TTL of
``Infinity``, world-readable data.
"""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from datalogistics.buffers import BufferClient, BufferRef, BufferStore, Quota, SiteClient
from datalogistics.errors import ChecksumMismatch, TransferError
from datalogistics.transfer import TransferEngine
from tests.datalogistics.conftest import SECRET, Clock, ServiceProcess, ServiceThread, Sites
from tests.datalogistics.test_transfer import destination, produce


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=120) as client:
        yield client


def _flip(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x01]))


# -- the seal hashes the disk --------------------------------------------------------------


def test_a_seal_hashes_the_bytes_on_disk_not_what_it_remembers(tmp_path: Path) -> None:
    store = BufferStore(tmp_path, "alpha", Quota(2**30, 10))
    data = os.urandom(3 * 2**20)
    digest = hashlib.sha256(data).hexdigest()
    buf = store.create(len(data) + 1, ttl=60)
    store.append(buf.id, data[: 2**20])
    _flip(store.path(buf.id), 1000)  # rot at rest, after the append was verified
    store.append(buf.id, data[2**20 :])
    with pytest.raises(ChecksumMismatch, match="on disk"):
        store.seal(buf.id, digest)
    assert store.info(buf.id).state == "error"
    store.close()


def test_a_sealed_buffer_sealed_again_is_checked_again(tmp_path: Path) -> None:
    store = BufferStore(tmp_path, "alpha", Quota(2**30, 10))
    buf = store.create(10, ttl=60)
    store.append(buf.id, b"0123456789")  # reaches its maximum: full, not yet sealed
    assert store.info(buf.id).sha256 is None
    sealed = store.seal(buf.id)
    assert sealed.sha256 == hashlib.sha256(b"0123456789").hexdigest()
    _flip(store.path(buf.id), 3)
    with pytest.raises(ChecksumMismatch):
        store.seal(buf.id)  # against the digest the first seal recorded
    assert store.info(buf.id).state == "error"
    store.close()


class FlipAfterFirstChunk(httpx.HTTPTransport):
    """Real HTTP; once the destination has committed its first chunk, a byte of it is
    changed on the destination's disk (as a failing disk, or another process, would)."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        self.flipped = False

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        if request.method == "POST" and request.url.path.endswith("/data") and not self.flipped:
            response.read()
            if response.is_success:
                _flip(self.path, 7)
                self.flipped = True
        return response


def test_a_byte_flipped_at_the_destination_mid_transfer_fails_the_transfer(
    two_sites: Sites, http: httpx.Client
) -> None:
    a, b = two_sites
    data = os.urandom(3 * 2**20)
    src = produce(a, data, http)
    dst = destination(b, len(data), http)
    network = FlipAfterFirstChunk(b.store.path(dst.buffer))
    engine = TransferEngine(chunk_size=2**20, retries=1, backoff=0, transport=network)
    with pytest.raises(TransferError, match="sha256"):
        engine.transfer(src, dst)
    assert network.flipped
    info = BufferClient(dst, http).info()
    assert info.state == "error"
    assert info.sha256 is None  # the source's digest was never recorded for other bytes


def test_the_cli_transfer_exits_non_zero_when_the_destination_rotted(
    two_sites: Sites, http: httpx.Client
) -> None:
    """Resume a transfer whose destination's committed bytes changed in between: exit 1."""
    a, b = two_sites
    data = os.urandom(2 * 2**20)
    src = produce(a, data, http)
    dst = destination(b, len(data), http)
    BufferClient(dst, http).append(data[: 2**20], offset=0, tag="o0")  # a first run's chunk
    _flip(b.store.path(dst.buffer), 99)
    done = subprocess.run(
        [sys.executable, "-m", "federation.cli", "transfer", src.url, dst.url],
        env={**os.environ, "CONTINUUM_SRC_TOKEN": src.token, "CONTINUUM_DST_TOKEN": dst.token},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "sha256" in done.stderr
    assert BufferClient(dst, http).info().state == "error"


# -- bounded memory ----------------------------------------------------------------------


def _peak_rss(pid: int) -> int:
    """The process's peak resident set (VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc")


def _pieces(n: int, piece: int = 2**20) -> Iterator[bytes]:
    block = hashlib.sha256(b"seed").digest() * (piece // 32)
    for k in range(n // piece):
        yield block[k % 32 :] + block[: k % 32]


def test_a_large_append_streams_to_disk_in_bounded_memory(tmp_path: Path) -> None:
    """The service's peak RSS does not grow with the size of an append (it took 157 MB ->
    1.3 GB for one 600 MiB append when the pieces were kept and joined)."""
    if not Path("/proc/self/status").exists():
        pytest.skip("needs /proc to read a process's peak RSS")
    svc = ServiceProcess(tmp_path / "site", "gamma").start()
    assert svc.proc is not None
    big = 384 * 2**20
    try:
        with httpx.Client(timeout=300) as http:
            site = SiteClient(svc.url, svc.admin, http)
            warm = site.create(16 * 2**20, ttl=600)
            w = BufferClient(BufferRef(svc.url, warm.id, svc.token(warm.id, "write")), http)
            w.append(_pieces(16 * 2**20), length=16 * 2**20)  # every code path loaded once
            before = _peak_rss(svc.proc.pid)
            buf = site.create(big, ttl=600)
            digest = hashlib.sha256()
            for piece in _pieces(big):
                digest.update(piece)
            w = BufferClient(BufferRef(svc.url, buf.id, svc.token(buf.id, "write")), http)
            info = w.append(_pieces(big), sha256=digest.hexdigest(), length=big)
            assert info.size == big
            sealed = w.seal(digest.hexdigest())
            grown = _peak_rss(svc.proc.pid) - before
    finally:
        svc.kill()
    assert sealed.state == "full"
    print(f"peak RSS of the buffer service grew by {grown / 2**20:.1f} MiB for {big >> 20} MiB")
    assert grown < 48 * 2**20, f"peak RSS grew by {grown / 2**20:.0f} MiB for a 384 MiB append"


# -- lifetimes ----------------------------------------------------------------------------


def test_ttl_must_be_finite_and_within_the_configured_maximum(
    two_sites: Sites, http: httpx.Client
) -> None:
    a, _ = two_sites
    url = f"{a.url}/buffers"
    auth = {"Authorization": f"Bearer {a.admin}", "content-type": "application/json"}
    for ttl in ("Infinity", "NaN", "1e400", str(8 * 86_400)):
        body = f'{{"max_size": 10, "ttl": {ttl}}}'.encode()
        r = http.post(url, content=body, headers=auth)
        assert r.status_code == 422, (ttl, r.text)
    assert SiteClient(a.url, a.admin, http).list_buffers() == []
    with pytest.raises(ValueError, match="at most 60"):
        BufferStore(a.root / "other", "alpha", Quota(100, 1), max_ttl=60).create(10, ttl=61)
    with pytest.raises(ValueError, match="finite"):
        BufferStore(a.root / "other2", "alpha", Quota(100, 1), max_ttl=float("inf"))


# -- private files -----------------------------------------------------------------------


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_data_and_metadata_are_private(tmp_path: Path) -> None:
    """0700 folders, 0600 files, whatever the umask says (the attack read them with 0644)."""
    old = os.umask(0o022)
    try:
        svc = ServiceThread(tmp_path / "site", "alpha", Quota(2**20, 4), Clock()).start()
        try:
            with httpx.Client() as http:
                buf = SiteClient(svc.url, svc.admin, http).create(10, ttl=60)
                w = BufferClient(BufferRef(svc.url, buf.id, svc.token(buf.id, "write")), http)
                w.append(b"0123456789")
                w.seal()
        finally:
            svc.stop()
    finally:
        os.umask(old)
    root = tmp_path / "site"
    assert _mode(root) == 0o700
    assert _mode(root / "data") == 0o700
    files = [p for p in root.rglob("*") if p.is_file()]
    assert root / "buffers.db" in files
    assert root / "data" / f"{buf.id}.buf" in files
    assert {p.name: _mode(p) for p in files} == {p.name: 0o600 for p in files}


def test_the_secret_file_is_private(tmp_path: Path) -> None:
    from datalogistics.buffers import load_or_create_secret

    old = os.umask(0o022)
    try:
        value = load_or_create_secret(tmp_path / "svc")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "svc") == 0o700
    assert _mode(tmp_path / "svc" / "secret") == 0o600
    assert load_or_create_secret(tmp_path / "svc") == value != SECRET
