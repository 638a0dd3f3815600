"""The data port of a buffer service (issue 19): appends from peers on a TCP socket of its
own, with the tokens, checks, bounds and errors of the HTTP append route."""

from __future__ import annotations

import hashlib
import os
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from datalogistics.buffers import BufferClient, BufferRef, BufferStore, Quota, SiteClient
from datalogistics.buffers.dataport import (
    MAGIC,
    MAX_CHUNKS,
    MAX_HEADER,
    DataPortClient,
    DataPortServer,
    recv_message,
    send_message,
)
from datalogistics.buffers.service import error_answer
from datalogistics.buffers.tokens import issue_token
from datalogistics.errors import (
    BufferStateError,
    BufferTooLarge,
    ChecksumMismatch,
    Forbidden,
    TagExists,
    Unauthorized,
)
from datalogistics.transfer import TransferEngine
from tests.datalogistics.conftest import SECRET, Clock, ServiceProcess, ServiceThread

QUOTA = Quota(max_bytes=2**30, max_count=16)
MiB = 2**20


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=120) as client:
        yield client


@pytest.fixture
def svc(tmp_path: Path, clock: Clock) -> Iterator[ServiceThread]:
    s = ServiceThread(tmp_path / "beta", "beta", QUOTA, clock, data_port=0).start()
    yield s
    s.stop()


def new_buffer(svc: ServiceThread, http: httpx.Client, size: int) -> str:
    return SiteClient(svc.url, svc.admin, http).create(size, ttl=600).id


def port_of(svc: ServiceThread) -> int:
    port = svc.data_port
    assert isinstance(port, int)
    assert port > 0
    return port


def source_file(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "source.bin"
    path.write_bytes(data)
    return path


def raw_request(port: int, message: dict[str, Any]) -> dict[str, Any] | None:
    """Send ``message`` alone (no body) and return the first answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        send_message(s, message)
        return recv_message(s)


def test_the_health_says_where_the_data_port_is(svc: ServiceThread, tmp_path: Path) -> None:
    assert port_of(svc) != svc.port
    plain = ServiceThread(tmp_path / "gamma", "gamma", QUOTA, Clock()).start()
    try:
        assert plain.data_port is None  # create_app without data_port: none
    finally:
        plain.stop()


def test_a_data_port_outside_the_tcp_ports_is_refused_by_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from datalogistics.buffers.__main__ import main

    args = ["--site", "s", "--dir", str(tmp_path), "--port", "1"]
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--data-port", "70000"])
    assert exit_info.value.code == 2
    assert "--data-port must be -1 (none), 0 (a free port) or a port" in capsys.readouterr().err


def test_each_chunk_is_verified_a_corrupted_one_is_refused_and_the_good_ones_stay(
    svc: ServiceThread, http: httpx.Client, tmp_path: Path
) -> None:
    one, two = os.urandom(MiB + 7), os.urandom(MiB // 2)
    path = source_file(tmp_path, one + two + one)
    buf = new_buffer(svc, http, 4 * MiB)
    client = DataPortClient("127.0.0.1", port_of(svc), buf, svc.token(buf, "write"))
    try:
        bad = [(len(one), sha(one)), (len(two), sha(one))]  # the second digest is wrong
        with pytest.raises(ChecksumMismatch, match=f"offset {len(one)}"):
            client.append(path, 0, bad)
        w = BufferClient(BufferRef(svc.url, buf, svc.token(buf, "write")), http)
        assert w.info().size == len(one)  # the first chunk was verified and stays
        kept = client._sock
        info = client.append(path, len(one), [(len(two), sha(two)), (len(one), sha(one))])
        assert client._sock is kept  # the refusal left the connection in step
        assert info.size == 2 * len(one) + len(two)
        # a tagged chunk is written once (the file's bytes at the buffer's end go there)
        end = info.size
        three = os.urandom(1000)
        tagged = tmp_path / "tagged.bin"
        tagged.write_bytes(bytes(end) + three)
        client.append(tagged, end, [(1000, sha(three))], tag="t3")
        with pytest.raises(TagExists):
            client.append(tagged, end, [(1000, sha(three))], tag="t3")
    finally:
        client.close()
    sealed = w.seal(sha(one + two + one + three))
    reader = BufferClient(BufferRef(svc.url, buf, svc.token(buf, "read")), http)
    assert reader.read()[0] == one + two + one + three
    assert sealed.sha256 == sha(one + two + one + three)


def test_a_request_acknowledged_before_its_fsync_verifies_each_chained_chunk(
    svc: ServiceThread, http: httpx.Client, tmp_path: Path
) -> None:
    """``durable=false`` (a push's way): the chunks of one request are chained, each verified
    on its own; a corrupted one is refused with the ones after it, the ones before stay."""
    chunks = [os.urandom(MiB), os.urandom(MiB // 2), os.urandom(MiB + 3), os.urandom(999)]
    path = source_file(tmp_path, b"".join(chunks))
    buf = new_buffer(svc, http, 4 * MiB)
    client = DataPortClient("127.0.0.1", port_of(svc), buf, svc.token(buf, "write"))
    good = [(len(c), sha(c)) for c in chunks]
    try:
        bad = [good[0], good[1], (good[2][0], sha(chunks[0])), good[3]]
        with pytest.raises(ChecksumMismatch, match=f"offset {len(chunks[0]) + len(chunks[1])}"):
            client.append(path, 0, bad, durable=False)
        reader = BufferClient(BufferRef(svc.url, buf, svc.token(buf, "read")), http)
        kept = len(chunks[0]) + len(chunks[1])
        assert reader.info().size == kept  # the two chunks before it stay, none after
        info = client.append(path, kept, good[2:], durable=False)
        assert info.size == sum(len(c) for c in chunks)
    finally:
        client.close()
    w = BufferClient(BufferRef(svc.url, buf, svc.token(buf, "write")), http)
    assert w.seal(sha(b"".join(chunks))).sha256 == sha(b"".join(chunks))
    assert reader.read()[0] == b"".join(chunks)


def test_a_bad_token_is_refused_before_any_byte_of_the_body(
    svc: ServiceThread, http: httpx.Client, tmp_path: Path, clock: Clock
) -> None:
    buf = new_buffer(svc, http, MiB)
    other = new_buffer(svc, http, MiB)
    port = port_of(svc)
    chunks = [[1000, "0" * 64]]
    cases = {
        "": (401, "Unauthorized"),
        "garbage": (401, "Unauthorized"),
        issue_token("another-secret-0123456789", site="beta", buffer=buf, right="write"): (
            401,
            "Unauthorized",
        ),
        svc.token(buf, "read"): (403, "Forbidden"),
        svc.token(other, "write"): (403, "Forbidden"),
        svc.admin: (403, "Forbidden"),
        issue_token(SECRET, site="alpha", buffer=buf, right="write", now=clock()): (
            403,
            "Forbidden",
        ),
        issue_token(SECRET, site="beta", buffer=buf, right="write", ttl=1, now=clock() - 5): (
            401,
            "Unauthorized",
        ),
    }
    for token, (status, error) in cases.items():
        # the answer comes without the body being sent: the refusal needs none of it
        answer = raw_request(port, {"token": token, "buffer": buf, "offset": 0, "chunks": chunks})
        assert answer is not None
        assert (answer["status"], answer["body"]["error"]) == (status, error), token
    w = BufferClient(BufferRef(svc.url, buf, svc.token(buf, "write")), http)
    assert w.info().size == 0
    assert svc.store.path(buf).stat().st_size == 0
    # and the client raises the same classes as over HTTP
    path = source_file(tmp_path, b"x" * 1000)
    with pytest.raises(Forbidden):
        DataPortClient("127.0.0.1", port, buf, svc.token(buf, "read")).append(
            path, 0, [(1000, sha(b"x" * 1000))]
        )
    with pytest.raises(Unauthorized):
        DataPortClient("127.0.0.1", port, buf, "cb1.x.y").append(
            path, 0, [(1000, sha(b"x" * 1000))]
        )


def test_malformed_requests_get_errors_that_name_what_is_wrong(
    svc: ServiceThread, http: httpx.Client
) -> None:
    buf = new_buffer(svc, http, MiB)
    port = port_of(svc)
    token = svc.token(buf, "write")
    good = {"token": token, "buffer": buf, "offset": 0, "chunks": [[10, "a" * 64]]}
    bad: list[tuple[dict[str, Any], str]] = [
        ({**good, "chunks": []}, "chunks"),
        ({**good, "chunks": [[0, "a" * 64]]}, "positive length"),
        ({**good, "chunks": [[10, "A" * 64]]}, "lowercase"),
        ({**good, "chunks": [[10, "a" * 64]] * (MAX_CHUNKS + 1)}, "chunks"),
        ({**good, "offset": -1}, "offset"),
        ({**good, "buffer": "../etc"}, "buffer id"),
        ({**good, "extra": 1}, "extra"),
        ({k: v for k, v in good.items() if k != "token"}, "token"),
        ({**good, "chunks": [[10, "a" * 64]] * 2, "tag": "t"}, "exactly one chunk"),
    ]
    for message, words in bad:
        answer = raw_request(port, message)
        assert answer is not None
        assert answer["status"] == 422, message
        assert answer["body"]["error"] == "ValueError"
        assert words in answer["body"]["detail"], (words, answer)
    answer = raw_request(port, {**good, "offset": 5})
    assert answer is not None
    assert answer["status"] == 409
    assert "resume from its current size" in answer["body"]["detail"]
    # not the protocol at all: answered, then closed
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET / HTTP/1.1\r\n\r\n")
        answer = recv_message(s)
        assert answer is not None
        assert answer["status"] == 422
        assert "not a data port message" in answer["body"]["detail"]
        assert s.recv(1) == b""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(MAGIC + struct.pack(">I", MAX_HEADER + 1))
        answer = recv_message(s)
        assert answer is not None
        assert answer["status"] == 422
        assert f"at most {MAX_HEADER} bytes" in answer["body"]["detail"]
        assert s.recv(1) == b""
    assert BufferClient(BufferRef(svc.url, buf, token), http).info().size == 0


def test_an_append_past_the_maximum_size_is_413_and_the_chunks_before_stay(
    svc: ServiceThread, http: httpx.Client, tmp_path: Path
) -> None:
    data = os.urandom(3 * MiB)
    path = source_file(tmp_path, data)
    buf = new_buffer(svc, http, 2 * MiB)
    client = DataPortClient("127.0.0.1", port_of(svc), buf, svc.token(buf, "write"))
    try:
        chunks = [(MiB, sha(data[:MiB])), (2 * MiB, sha(data[MiB:]))]
        with pytest.raises(BufferTooLarge, match="above its maximum"):
            client.append(path, 0, chunks)
        info = client.append(path, MiB, [(MiB, sha(data[MiB : 2 * MiB]))])
    finally:
        client.close()
    assert (info.size, info.state) == (2 * MiB, "full")
    with pytest.raises(BufferStateError, match="full"):
        BufferClient(BufferRef(svc.url, buf, svc.token(buf, "write")), http).append(b"x")


def test_connections_past_the_bound_are_answered_503_and_closed(tmp_path: Path) -> None:
    store = BufferStore(tmp_path, "beta", QUOTA)
    server = DataPortServer(store, SECRET, error_answer, max_connections=1).start()
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as first:
            time.sleep(0.2)  # the first holds the only slot
            with socket.create_connection(("127.0.0.1", server.port), timeout=10) as second:
                answer = recv_message(second)
                assert answer is not None
                assert answer["status"] == 503
                assert "1 connections at most" in answer["body"]["detail"]
            send_message(first, {"token": "", "buffer": "b", "offset": 0, "chunks": [[1, "0"]]})
            answer = recv_message(first)
            assert answer is not None
            assert answer["status"] == 422
    finally:
        server.stop()
        store.close()


def test_a_push_killed_midway_resumes_from_the_last_durable_chunk(
    tmp_path: Path, http: httpx.Client
) -> None:
    """The destination (``serve``: a data port by default) is killed in the middle of a push;
    started again, it keeps every chunk that was durable before the kill, and the transfer
    resumes from there, verified byte for byte and by its sha256."""
    dst_svc = ServiceProcess(tmp_path / "beta", "beta").start()
    src_svc = ServiceThread(tmp_path / "alpha", "alpha", QUOTA, Clock(), peers=(dst_svc.url,))
    src_svc.start()
    try:
        data = os.urandom(8 * MiB)
        buf = SiteClient(src_svc.url, src_svc.admin, http).create(len(data), ttl=600)
        w = BufferClient(BufferRef(src_svc.url, buf.id, src_svc.token(buf.id, "write")), http)
        for i in range(0, len(data), MiB):
            w.append(data[i : i + MiB], offset=i)
        w.seal(sha(data))
        src = BufferClient(BufferRef(src_svc.url, buf.id, src_svc.token(buf.id, "read")), http)
        made = SiteClient(dst_svc.url, dst_svc.admin, http).create(len(data), ttl=600)
        dst = BufferRef(dst_svc.url, made.id, dst_svc.token(made.id, "write"))
        reader = BufferClient(BufferRef(dst_svc.url, made.id, dst_svc.token(made.id, "read")), http)
        first = src.push(dst, MiB, max_bytes=3 * MiB)
        assert (first.offset, first.channel) == (3 * MiB, "data port")
        deadline = time.monotonic() + 30
        while len(reader.read()[0]) < 3 * MiB:  # readable once fsynced and committed
            assert time.monotonic() < deadline, "the first 3 MiB were never committed"
            time.sleep(0.02)
        second = src.push(dst, MiB, max_bytes=2 * MiB)  # acknowledged before their fsync
        assert second.offset == 5 * MiB
        dst_svc.kill()
        dst_svc.start()  # same folder, same port, a new data port
        resumed_at = reader.info().size
        assert 3 * MiB <= resumed_at <= 5 * MiB
        assert reader.read()[0] == data[:resumed_at]
        rec = TransferEngine(chunk_size=MiB).transfer(src.ref, dst)
        assert rec.pushed
        assert rec.resumed_from == resumed_at
        assert reader.read()[0] == data
        assert reader.info().sha256 == sha(data)
    finally:
        dst_svc.kill()
        src_svc.stop()
