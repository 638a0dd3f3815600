"""Transfer throughput between two buffer services on loopback, and buffer operations per second.

Baselines measured in the same run, on the same bytes:

* ``cp`` of the file (page cache to page cache, no checksum, no fsync);
* a raw HTTP stream: a minimal ASGI server streams the file, the client pipes
  it into a minimal ASGI sink that writes it to disk (same uvicorn, same
  loopback, no checksum, no fsync);
* the transfer engine between two buffer services, each in its own process:
  per-chunk sha256 on both sides, end-to-end sha256 at the seal, fsync of
  every chunk at the destination. Target: at least 50 % of the raw stream.

Then the buffer service's own operations (create, 4 KiB append with fsync,
4 KiB read, info) one after another on a keep-alive connection.

``CONTINUUM_BENCH_TRANSFER_MB`` sets the payload (default 256 MiB),
``CONTINUUM_BENCH_TRANSFER_ROUNDS`` the rounds (default 5; each round runs every method once,
interleaved, and the best time of each method is kept).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from datalogistics.buffers import BufferClient, BufferRef, SiteClient, issue_token
from datalogistics.transfer import TransferEngine
from orchestrator.execution.buffers import free_port

REPO = Path(__file__).resolve().parents[1]
SECRET = "bench-secret-0123456789abcdef"
MiB = 2**20

Scope = dict[str, Any]
Receive = Callable[[], Any]
Send = Callable[[dict[str, Any]], Any]


def raw_source(path: str) -> Callable[[Scope, Receive, Send], Any]:
    """A bare ASGI app streaming ``path`` in 1 MiB pieces (the raw HTTP baseline's sender)."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        size = os.path.getsize(path)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", str(size).encode())],
            }
        )
        with open(path, "rb") as f:
            while block := f.read(MiB):
                await send({"type": "http.response.body", "body": block, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    return app


def raw_sink(path: str) -> Callable[[Scope, Receive, Send], Any]:
    """A bare ASGI app writing the request body to ``path`` (the raw baseline's receiver)."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        with open(path, "wb") as f:
            more = True
            while more:
                msg = await receive()
                f.write(msg.get("body", b""))
                more = msg.get("more_body", False)
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    return app


def run_raw(kind: str, path: str, port: int) -> None:
    """Entry point of the raw servers' processes."""
    import uvicorn

    app = raw_source(path) if kind == "source" else raw_sink(path)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def start(cmd: list[str], url: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "CONTINUUM_BUFFER_SECRET": SECRET, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, env=env, cwd=REPO, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1)
            return proc
        except httpx.TransportError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"server {cmd} did not start")


def buffer_service(site: str, root: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [
        sys.executable,
        "-m",
        "datalogistics.buffers",
        "--site",
        site,
        "--dir",
        str(root),
        "--port",
        str(port),
        "--quota-bytes",
        str(2**40),
    ]
    return start(cmd, f"{url}/health"), url


def raw_server(kind: str, path: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    code = (
        f"from benchmarks.bench_transfer import run_raw; run_raw({kind!r}, {str(path)!r}, {port})"
    )
    url = f"http://127.0.0.1:{port}"
    return start([sys.executable, "-c", code], url), url


def token(site: str, buffer: str, right: str) -> str:
    return issue_token(SECRET, site=site, buffer=buffer, right=right)


def best_of(n: int, fn: Callable[[], None]) -> float:
    """The shortest of ``n`` runs of ``fn``, in seconds."""
    best = float("inf")
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    size = int(os.environ.get("CONTINUUM_BENCH_TRANSFER_MB", "256")) * MiB
    rounds = int(os.environ.get("CONTINUUM_BENCH_TRANSFER_ROUNDS", "5"))
    work = Path(tempfile.mkdtemp(prefix="bench-transfer-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        payload = work / "payload.bin"
        with open(payload, "wb") as f:
            for _ in range(size // MiB):
                f.write(os.urandom(MiB))
        digest = hashlib.sha256(payload.read_bytes()).hexdigest()
        methods: dict[str, Callable[[], None]] = {}

        # Baseline 1: cp.
        def cp() -> None:
            subprocess.run(["cp", str(payload), str(work / "copy.bin")], check=True)

        methods["cp (no checksum, no fsync)"] = cp

        # Baseline 2: raw HTTP stream, source server -> client -> sink server.
        p1, src_url = raw_server("source", payload)
        p2, sink_url = raw_server("sink", work / "sunk.bin")
        procs += [p1, p2]

        def raw_http() -> None:
            with httpx.Client(timeout=120) as http, http.stream("GET", src_url) as r:
                http.post(sink_url, content=r.iter_bytes(MiB)).raise_for_status()

        raw_http()
        sunk = hashlib.sha256((work / "sunk.bin").read_bytes()).hexdigest()
        if sunk != digest:
            raise RuntimeError("the raw HTTP baseline did not copy the bytes intact")
        raw_label = "raw HTTP stream (no checksum, no fsync)"
        methods[raw_label] = raw_http

        # The transfer engine between two buffer services.
        pa, a_url = buffer_service("alpha", work / "alpha")
        pb, b_url = buffer_service("beta", work / "beta")
        procs += [pa, pb]
        with httpx.Client(timeout=120) as http:
            src = SiteClient(a_url, token("alpha", "*", "admin"), http).create(size, ttl=3600)
            w = BufferClient(BufferRef(a_url, src.id, token("alpha", src.id, "write")), http)
            with open(payload, "rb") as fin:
                while block := fin.read(8 * MiB):
                    w.append(block)
            w.seal(digest)
            src_ref = BufferRef(a_url, src.id, token("alpha", src.id, "read"))
            site_b = SiteClient(b_url, token("beta", "*", "admin"), http)
            for chunk in (4 * MiB, 8 * MiB, 16 * MiB):

                def engine(chunk: int = chunk) -> None:
                    dst = site_b.create(size, ttl=3600)
                    ref = BufferRef(b_url, dst.id, token("beta", dst.id, "write"))
                    rec = TransferEngine(chunk_size=chunk).transfer(src_ref, ref)
                    if rec.sha256 != digest:
                        raise RuntimeError("transfer did not verify")
                    site_b.delete(dst.id)

                label = f"transfer engine, {chunk // MiB} MiB chunks (sha256 + fsync)"
                methods[label] = engine

            # Rounds interleave the methods so that each sees the same load on the machine.
            best = dict.fromkeys(methods, float("inf"))
            for _ in range(rounds):
                for name, fn in methods.items():
                    best[name] = min(best[name], best_of(1, fn))
        rows = list(best.items())
        raw = best[raw_label]
        print(
            f"\ntransfer of {size / MiB:.0f} MiB on loopback, best of {rounds} interleaved rounds"
        )
        print(f"{'method':<52} {'seconds':>8} {'MB/s':>9} {'% of raw HTTP':>14}")
        for name, secs in rows:
            print(f"{name:<52} {secs:>8.3f} {size / secs / 1e6:>9.1f} {100 * raw / secs:>13.0f} %")

        ops_table(a_url)
    finally:
        for p in procs:
            p.kill()
            p.wait(timeout=10)
        shutil.rmtree(work, ignore_errors=True)


def ops_table(url: str, n: int = 300) -> None:
    """Buffer operations per second, one after another on a keep-alive connection."""
    admin = token("alpha", "*", "admin")
    block = os.urandom(4096)
    with httpx.Client(timeout=60) as http:
        site = SiteClient(url, admin, http)
        ids: list[str] = []

        def creates() -> Iterator[None]:
            for _ in range(n):
                ids.append(site.create(4096 * n, ttl=3600).id)
                yield

        def timed(gen: Iterator[None]) -> float:
            t0 = time.perf_counter()
            for _ in gen:
                pass
            return n / (time.perf_counter() - t0)

        rates = {"create buffer": timed(creates())}
        w = BufferClient(BufferRef(url, ids[0], token("alpha", ids[0], "write")), http)
        r = BufferClient(BufferRef(url, ids[0], token("alpha", ids[0], "read")), http)

        def appends() -> Iterator[None]:
            for i in range(n):
                w.append(block, tag=f"t{i}")
                yield

        def reads() -> Iterator[None]:
            for i in range(n):
                r.read(i * 4096, 4096)
                yield

        def infos() -> Iterator[None]:
            for _ in range(n):
                r.info()
                yield

        rates["append 4 KiB (tag, sha256, fsync)"] = timed(appends())
        rates["read 4 KiB (sha256)"] = timed(reads())
        rates["info"] = timed(infos())

        def deletes() -> Iterator[None]:
            for i in ids:
                site.delete(i)
                yield

        rates["delete buffer"] = timed(deletes())
    print(f"\nbuffer service operations, {n} sequential requests each")
    print(f"{'operation':<40} {'ops/s':>9}")
    for name, rate in rates.items():
        print(f"{name:<40} {rate:>9.0f}")


if __name__ == "__main__":
    main()
