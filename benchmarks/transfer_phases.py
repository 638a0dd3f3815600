"""Where a push's time goes at the destination: per phase and per thread (issue 19).

``python -m benchmarks.transfer_phases`` runs the destination's ``BufferStore`` and
``DataPortServer`` in this process and pushes 1 GiB (``CONTINUUM_BENCH_TRANSFER_MB``) to it
from a sender process of its own, the way a source service does (``DataPortClient``, 8 MiB
chunks, 32 to a request, ``durable=false``), ``CONTINUUM_BENCH_TRANSFER_ROUNDS`` times (3)
after ``CONTINUUM_BENCH_TRANSFER_GAP`` seconds (1) of idleness. Each round prints the wall and
CPU seconds of each phase (receive, write, the store's SQLite calls, the syncer's passes and
fsyncs, the read-back), timed around the project's own functions, and, per thread, the CPU
seconds, the seconds runnable but waiting for a core and the seconds blocked
(``/proc/thread-self/schedstat``). A diagnosis, not a benchmark: it sets no target.
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from datalogistics.buffers import dataport, store
from datalogistics.buffers.service import error_answer
from datalogistics.buffers.store import BufferStore, Quota
from datalogistics.buffers.tokens import issue_token

MiB = 2**20
SECRET = "phases-secret-0123456789abcdef"
REPO = Path(__file__).resolve().parents[1]

_wall: dict[str, float] = collections.defaultdict(float)
_cpu: dict[str, float] = collections.defaultdict(float)
_calls: collections.Counter[str] = collections.Counter()
_threads: dict[str, tuple[float, float, float]] = {}
_lock = threading.Lock()


def _timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t, c = time.perf_counter(), time.thread_time()
        try:
            return fn(*args, **kwargs)
        finally:
            with _lock:
                _wall[name] += time.perf_counter() - t
                _cpu[name] += time.thread_time() - c
                _calls[name] += 1

    return wrapper


def _schedstat() -> tuple[float, float]:
    """This thread's CPU seconds and seconds runnable but waiting for a core."""
    cpu, wait, _ = Path("/proc/thread-self/schedstat").read_text().split()
    return int(cpu) / 1e9, int(wait) / 1e9


def _watch_thread(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` (a thread's whole body) recording the thread's schedstat under ``name``."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        c0, w0 = _schedstat()
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            c1, w1 = _schedstat()
            _threads[name] = (c1 - c0, w1 - w0, time.perf_counter() - t0)

    return wrapper


class _WatchedPool(ThreadPoolExecutor):
    """The data port's chunk-hashing pool, its one thread's schedstat recorded at shutdown."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._t0 = time.perf_counter()
        self._s0 = self.submit(_schedstat).result()

    def shutdown(self, *args: Any, **kwargs: Any) -> None:
        c1, w1 = self.submit(_schedstat).result()
        wall = time.perf_counter() - self._t0
        _threads["chunk hashing"] = (c1 - self._s0[0], w1 - self._s0[1], wall)
        super().shutdown(*args, **kwargs)


def _minor_faults() -> int:
    """Minor page faults of this process so far (all its threads, from ``/proc``)."""
    return int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[7])


def _instrument() -> None:
    wrap: list[tuple[Any, str, str]] = [
        (dataport._Body, "_fill", "receive (recv_into)"),
        (store.AppendLease, "write_pieces", "write"),
        (BufferStore, "begin_append", "begin_append (SQLite)"),
        (BufferStore, "chain_append", "chain_append"),
        (BufferStore, "finish_append", "finish_append (SQLite)"),
        (BufferStore, "seal", "seal"),
        (BufferStore, "_sync_buffer", "syncer pass (fsync + commit)"),
        (BufferStore, "_read_back_extents", "read-back (sha256 from disk)"),
    ]
    for owner, attr, name in wrap:
        setattr(owner, attr, _timed(name, getattr(owner, attr)))
    serve = _watch_thread("receiving", dataport.DataPortServer._serve)
    setattr(dataport.DataPortServer, "_serve", serve)  # noqa: B010
    setattr(dataport, "ThreadPoolExecutor", _WatchedPool)  # noqa: B010


SENDER = """
import json, sys
from pathlib import Path
from datalogistics.buffers.dataport import DataPortClient
port, buffer, token, path, chunks = sys.argv[1:6]
chunks = json.loads(chunks)
client = DataPortClient("127.0.0.1", int(port), buffer, token)
offset = 0
for i in range(0, len(chunks), 32):
    part = chunks[i : i + 32]
    client.append(Path(path), offset, part, durable=False)
    offset += sum(n for n, _ in part)
"""


def main() -> int:
    size = int(os.environ.get("CONTINUUM_BENCH_TRANSFER_MB", "1024")) * MiB
    rounds = int(os.environ.get("CONTINUUM_BENCH_TRANSFER_ROUNDS", "3"))
    gap = float(os.environ.get("CONTINUUM_BENCH_TRANSFER_GAP", "1"))
    _instrument()
    work = Path(tempfile.mkdtemp(prefix="transfer-phases-"))
    try:
        payload = work / "payload.bin"
        whole = hashlib.sha256()
        chunks: list[tuple[int, str]] = []
        with open(payload, "wb") as f:
            for _ in range(size // (8 * MiB)):
                block = os.urandom(8 * MiB)
                whole.update(block)
                f.write(block)
                chunks.append((len(block), hashlib.sha256(block).hexdigest()))
        dst = BufferStore(work / "beta", "beta", Quota(2**40, 100))
        server = dataport.DataPortServer(dst, SECRET, error_answer).start()
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        try:
            for r in range(rounds):
                time.sleep(gap)
                _wall.clear()
                _cpu.clear()
                _calls.clear()
                _threads.clear()
                buf = dst.create(size, ttl=3600)
                tok = issue_token(SECRET, site="beta", buffer=buf.id, right="write")
                args = [str(server.port), buf.id, tok, str(payload), json.dumps(chunks)]
                faults = _minor_faults()
                t0 = time.perf_counter()
                subprocess.run([sys.executable, "-c", SENDER, *args], env=env, check=True)
                sealed = dst.seal(buf.id, whole.hexdigest())
                seconds = time.perf_counter() - t0  # the sender's start-up included
                faults = _minor_faults() - faults
                assert sealed.sha256 == whole.hexdigest()
                dst.delete(buf.id)
                print(
                    f"\nround {r + 1}: {size / MiB:.0f} MiB pushed and sealed in {seconds:.2f} s "
                    f"(sender start-up included), load {os.getloadavg()[0]:.1f}, "
                    f"{faults} minor page faults in this process"
                )
                print(f"  {'phase':<32} {'wall s':>7} {'CPU s':>7} {'calls':>6}")
                for name in sorted(_wall):
                    print(f"  {name:<32} {_wall[name]:>7.2f} {_cpu[name]:>7.2f} {_calls[name]:>6}")
                print(f"  {'thread':<32} {'CPU s':>7} {'waiting':>7} {'blocked':>7}")
                for name, (cpu, wait, wall) in _threads.items():
                    print(f"  {name:<32} {cpu:>7.2f} {wait:>7.2f} {wall - cpu - wait:>7.2f}")
        finally:
            server.stop()
            dst.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
