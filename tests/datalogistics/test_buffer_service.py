"""The buffer service over real HTTP on loopback: semantics, quotas, tokens, TTL, restarts."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from datalogistics.buffers import (
    BufferClient,
    BufferRef,
    BufferStore,
    Quota,
    SiteClient,
    issue_token,
)
from datalogistics.errors import (
    BufferGone,
    BufferStateError,
    BufferTooLarge,
    ChecksumMismatch,
    Forbidden,
    OffsetMismatch,
    QuotaExceeded,
    TagExists,
    Unauthorized,
)
from tests.datalogistics.conftest import (
    SECRET,
    Clock,
    ServiceProcess,
    ServiceThread,
    Sites,
    free_port,
)


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30) as client:
        yield client


def writer(svc: ServiceThread | ServiceProcess, buffer: str, http: httpx.Client) -> BufferClient:
    return BufferClient(BufferRef(svc.url, buffer, svc.token(buffer, "write")), http)


def reader(
    svc: ServiceThread | ServiceProcess,
    buffer: str,
    http: httpx.Client,
    consumer: str | None = None,
) -> BufferClient:
    return BufferClient(BufferRef(svc.url, buffer, svc.token(buffer, "read", consumer)), http)


def test_append_read_and_seal_keep_bytes_and_digest(two_sites: Sites, http: httpx.Client) -> None:
    a, _ = two_sites
    buf = SiteClient(a.url, a.admin, http).create(1000, ttl=60, item="ms-1")
    assert buf.state == "created"
    assert buf.site == "alpha"
    w = writer(a, buf.id, http)
    parts = [os.urandom(300), os.urandom(200)]
    w.append(parts[0], offset=0, tag="p0", sha256=hashlib.sha256(parts[0]).hexdigest())
    info = w.append(parts[1], offset=300, tag="p1")
    assert info.size == 500
    whole = b"".join(parts)
    sealed = w.seal(hashlib.sha256(whole).hexdigest())
    assert sealed.state == "full"
    assert sealed.sha256 == hashlib.sha256(whole).hexdigest()
    r = reader(a, buf.id, http)
    data, digest = r.read(100, 250)
    assert data == whole[100:350]
    assert digest == hashlib.sha256(whole[100:350]).hexdigest()
    with pytest.raises(BufferStateError):
        w.append(b"more")


def test_tag_rewrite_is_409_and_keeps_the_first_write(two_sites: Sites, http: httpx.Client) -> None:
    a, _ = two_sites
    buf = SiteClient(a.url, a.admin, http).create(100, ttl=60)
    w = writer(a, buf.id, http)
    w.append(b"first", tag="t")
    r = http.post(
        f"{a.url}/buffers/{buf.id}/data",
        params={"tag": "t"},
        content=b"second",
        headers={"Authorization": f"Bearer {a.token(buf.id, 'write')}"},
    )
    assert r.status_code == 409
    assert r.json()["error"] == "TagExists"
    with pytest.raises(TagExists):
        w.append(b"second", tag="t")
    tag = http.get(
        f"{a.url}/buffers/{buf.id}/tags/t",
        headers={"Authorization": f"Bearer {a.token(buf.id, 'read')}"},
    ).json()
    assert (tag["offset"], tag["length"]) == (0, 5)
    assert reader(a, buf.id, http).read()[0] == b"first"


def test_appends_are_append_only_and_checked(two_sites: Sites, http: httpx.Client) -> None:
    a, _ = two_sites
    buf = SiteClient(a.url, a.admin, http).create(100, ttl=60)
    w = writer(a, buf.id, http)
    w.append(b"abc")
    with pytest.raises(OffsetMismatch):
        w.append(b"xyz", offset=0)
    with pytest.raises(ChecksumMismatch):
        w.append(b"xyz", sha256=hashlib.sha256(b"xyZ").hexdigest())
    assert w.info().size == 3
    assert reader(a, buf.id, http).read()[0] == b"abc"


def test_wrong_tokens_are_401_or_403(two_sites: Sites, http: httpx.Client) -> None:
    a, b = two_sites
    buf = SiteClient(a.url, a.admin, http).create(100, ttl=60)
    url = f"{a.url}/buffers/{buf.id}/data"

    def status(token: str | None) -> int:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return int(http.post(url, content=b"x", headers=headers).status_code)

    good = a.token(buf.id, "write")
    assert status(None) == 401
    assert status("not-a-token") == 401
    forged = issue_token("another-secret-0123456789", site="alpha", buffer=buf.id, right="write")
    assert status(forged) == 401
    tampered = good[:-2] + ("AA" if good[-2:] != "AA" else "BB")
    assert status(tampered) == 401
    expired = issue_token(
        SECRET, site="alpha", buffer=buf.id, right="write", ttl=5, now=a.clock() - 10
    )
    assert status(expired) == 401
    assert status(a.token(buf.id, "read")) == 403  # wrong right
    assert status(a.token("other-buffer", "write")) == 403  # wrong buffer
    assert status(b.token(buf.id, "write")) == 403  # token of another site
    assert status(a.admin) == 403  # admin creates buffers, it does not write data
    assert status(good) == 200
    with pytest.raises(Unauthorized):
        SiteClient(a.url, "bogus", http).create(10, ttl=1)
    with pytest.raises(Forbidden):
        SiteClient(a.url, good, http).create(10, ttl=1)


def test_quota_exceeded_is_507_or_413_and_nothing_is_lost(
    two_sites: Sites, http: httpx.Client
) -> None:
    a, _ = two_sites  # quota: 64 MiB, 8 buffers
    site = SiteClient(a.url, a.admin, http)
    big = site.create(48 * 2**20, ttl=60)
    payload = os.urandom(2**20)
    w = writer(a, big.id, http)
    w.append(payload)
    r = http.post(
        f"{a.url}/buffers",
        json={"max_size": 32 * 2**20, "ttl": 60},
        headers={"Authorization": f"Bearer {a.admin}"},
    )
    assert r.status_code == 507
    assert "free" in r.json()["detail"]
    small = site.create(1000, ttl=60)
    ws = writer(a, small.id, http)
    ws.append(b"k" * 900)
    with pytest.raises(BufferTooLarge):
        ws.append(b"k" * 200)
    r = http.post(
        f"{a.url}/buffers/{small.id}/data",
        content=b"k" * 200,
        headers={"Authorization": f"Bearer {a.token(small.id, 'write')}"},
    )
    assert r.status_code == 413
    for _ in range(6):
        site.create(10, ttl=60)
    with pytest.raises(QuotaExceeded, match="8 buffers"):
        site.create(10, ttl=60)
    assert reader(a, big.id, http).read()[0] == payload
    assert reader(a, small.id, http).read()[0] == b"k" * 900
    assert site.health()["buffers"] == 8


def test_ttl_expiry_removes_data(two_sites: Sites, http: httpx.Client) -> None:
    a, _ = two_sites
    site = SiteClient(a.url, a.admin, http)
    lazy = site.create(100, ttl=30)
    swept = site.create(100, ttl=30)
    kept = site.create(100, ttl=300)
    for b in (lazy, swept, kept):
        writer(a, b.id, http).append(b"payload")
    assert a.store.path(lazy.id).exists()
    a.clock.advance(31)
    with pytest.raises(BufferGone, match="TTL"):
        reader(a, lazy.id, http).read()
    assert not a.store.path(lazy.id).exists()
    assert a.store.expire() == [swept.id]  # what the service's reaper task runs
    assert not a.store.path(swept.id).exists()
    assert [b.id for b in site.list_buffers()] == [kept.id]
    assert reader(a, kept.id, http).read()[0] == b"payload"
    r = http.get(
        f"{a.url}/buffers/{swept.id}",
        headers={"Authorization": f"Bearer {a.token(swept.id, 'read')}"},
    )
    assert r.status_code == 410


def test_read_sessions_continue_and_consumers_drain_the_buffer(
    two_sites: Sites, http: httpx.Client
) -> None:
    a, _ = two_sites
    buf = SiteClient(a.url, a.admin, http).create(10, ttl=60, consumers=["img", "cal"])
    w = writer(a, buf.id, http)
    w.append(b"0123456789")
    img = reader(a, buf.id, http, consumer="img")
    assert img.read_session("img", limit=4) == (b"0123", 0)
    assert img.read_session("img", limit=4) == (b"4567", 4)
    assert img.read_session("other", limit=3) == (b"012", 0)
    info = img.info()
    assert info.state == "full"  # reached its maximum size: no more writes
    assert info.sha256 is None  # but not sealed: nobody has verified its bytes yet
    assert img.read_session("img") == (b"89", 8)
    assert img.info().drained == ()  # the end of an unsealed buffer drains nothing
    w.seal(hashlib.sha256(b"0123456789").hexdigest())
    img.read_session("img2")  # a session of another name, to the end
    assert img.read_session("img", limit=0) == (b"", 10)
    assert img.info().drained == ("img",)
    assert a.store.path(buf.id).exists()
    reader(a, buf.id, http, consumer="cal").drained("cal")
    with pytest.raises(BufferGone, match="drained"):
        img.info()
    assert not a.store.path(buf.id).exists()


def test_a_reader_cannot_drain_for_another_consumer_nor_an_unsealed_buffer(
    two_sites: Sites, http: httpx.Client
) -> None:
    """Issue 15: any read token declared every consumer drained and destroyed the buffer."""
    a, _ = two_sites
    buf = SiteClient(a.url, a.admin, http).create(100, ttl=60, consumers=["img", "cal"])
    w = writer(a, buf.id, http)
    w.append(b"0123456789")
    img = reader(a, buf.id, http, consumer="img")
    with pytest.raises(BufferStateError, match="not sealed"):
        img.drained("img")  # still being written
    w.seal()
    for token_consumer, claimed in ((None, "img"), (None, "cal"), ("img", "cal")):
        with pytest.raises(Forbidden, match="bound to"):
            reader(a, buf.id, http, consumer=token_consumer).drained(claimed)
    # a session named after another consumer reads, and drains nobody
    assert img.read_session("cal") == (b"0123456789", 0)
    assert img.info().drained == ()
    assert img.drained("img").drained == ("img",)
    assert img.info().state == "full"  # cal has not drained it: the buffer lives on
    assert img.read()[0] == b"0123456789"


def test_disabled_buffer_refuses_reads_and_writes(two_sites: Sites, http: httpx.Client) -> None:
    a, _ = two_sites
    site = SiteClient(a.url, a.admin, http)
    buf = site.create(10, ttl=60)
    writer(a, buf.id, http).append(b"x")
    assert site.disable(buf.id).state == "disabled"
    with pytest.raises(BufferStateError):
        reader(a, buf.id, http).read()
    with pytest.raises(BufferStateError):
        writer(a, buf.id, http).append(b"y")
    assert site.delete(buf.id).state == "deleted"


def test_restarted_service_keeps_its_buffers(tmp_path: Path, http: httpx.Client) -> None:
    svc = ServiceProcess(tmp_path / "site", "gamma").start()
    try:
        site = SiteClient(svc.url, svc.admin, http)
        sealed = site.create(2**20, ttl=600, item="vis")
        open_buf = site.create(2**20, ttl=600)
        data = os.urandom(2**20)
        w = writer(svc, sealed.id, http)
        w.append(data[: 2**19], tag="a")
        w.append(data[2**19 :], tag="b")
        assert w.seal().sha256 == hashlib.sha256(data).hexdigest()
        writer(svc, open_buf.id, http).append(b"half", tag="h")
        svc.kill()
        svc.start()
        info = reader(svc, sealed.id, http).info()
        assert (info.state, info.size, info.item) == ("full", 2**20, "vis")
        assert info.sha256 == hashlib.sha256(data).hexdigest()
        assert w.seal(info.sha256).sha256 == info.sha256  # checked again from the disk
        assert reader(svc, sealed.id, http).read()[0] == data
        w2 = writer(svc, open_buf.id, http)
        with pytest.raises(TagExists):
            w2.append(b"again", tag="h")  # write-once tags survive the restart too
        assert w2.append(b" more", offset=4).size == 9
        assert len(site.list_buffers()) == 2
    finally:
        svc.kill()


def test_the_reaper_destroys_expired_buffers_without_any_request(
    tmp_path: Path, clock: Clock
) -> None:
    svc = ServiceThread(tmp_path / "r", "rho", Quota(2**20, 4), clock, reap_interval=0.02).start()
    try:
        with httpx.Client() as http:
            buf = SiteClient(svc.url, svc.admin, http).create(10, ttl=5)
        path = svc.store.path(buf.id)
        assert path.exists()
        clock.advance(6)
        deadline = time.monotonic() + 10
        # the file goes first, then the buffer's row: wait for both (no request is made)
        while (path.exists() or svc.store.usage()["buffers"]) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not path.exists()
        assert svc.store.usage()["buffers"] == 0
    finally:
        svc.stop()


def test_one_append_at_a_time_per_buffer(tmp_path: Path) -> None:
    store = BufferStore(tmp_path, "s", Quota(2**20, 4))
    buf = store.create(100, ttl=60)
    lease = store.begin_append(buf.id, offset=0)
    lease.write(b"abc")
    with pytest.raises(OffsetMismatch, match="in progress"):
        store.begin_append(buf.id)
    store.abort_append(lease)
    assert store.info(buf.id).size == 0
    assert store.path(buf.id).stat().st_size == 0  # the aborted bytes were cut off
    assert store.append(buf.id, b"xyz", offset=0).size == 3
    store.close()


def test_continuum_buffer_serve_creates_a_private_secret(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "CONTINUUM_BUFFER_SECRET"}
    cmd = [
        sys.executable,
        "-m",
        "federation.cli",
        "buffer",
        "serve",
        "--site",
        "sigma",
        "--dir",
        str(tmp_path / "sigma"),
        "--port",
        str(port),
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).json()
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                assert time.monotonic() < deadline, "the service did not start"
                time.sleep(0.1)
        assert health["site"] == "sigma"
        assert isinstance(health["data_port"], int)  # peers push to its data port
        assert health["data_port"] not in (0, port)
        secret_file = tmp_path / "sigma" / "secret"
        assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
        admin = issue_token(
            secret_file.read_text().strip(), site="sigma", buffer="*", right="admin"
        )
        with httpx.Client() as http:
            assert SiteClient(f"http://127.0.0.1:{port}", admin, http).create(5, ttl=9).size == 0
    finally:
        proc.kill()
        proc.wait(timeout=10)
