"""What one ``write()`` of fresh page cache costs on this machine (issue 19, a diagnosis).

``python -m benchmarks.page_cache_writes`` writes 1 GiB (``CONTINUUM_BENCH_TRANSFER_MB``)
into a new file from one thread, 1 MiB per ``write`` and an fsync per 8 MiB, as the
transfer's destination does, and deletes it; ``CONTINUUM_BENCH_TRANSFER_ROUNDS`` (3) pairs,
each after ``CONTINUUM_BENCH_TRANSFER_GAP`` seconds (4) of idleness: first without, then
with drop-behind (each fsynced 64 MiB dropped from the page cache with
``POSIX_FADV_DONTNEED``, what ``BufferStore`` does once its read-back has hashed a pass).
Each line prints the CPU seconds spent in the ``write`` calls and in the ``fadvise`` calls.
On a VM that reports free memory to its host (free page reporting), pages freed more than
a couple of seconds ago cost a fault in the host at their first write: without drop-behind
the file takes 1 GiB of them, with it the stream reuses the pages it has just freed.
Sets no target.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

MiB = 2**20
SYNC = 8 * MiB
DROP = 64 * MiB


def write_file(path: Path, size: int, drop: bool) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds in ``write`` and CPU seconds in ``fadvise``."""
    block = memoryview(bytearray(os.urandom(MiB)))
    in_write = in_drop = 0.0
    t0 = time.perf_counter()
    with open(path, "wb", buffering=0) as f:
        synced = dropped = 0
        for written in range(MiB, size + 1, MiB):
            c = time.thread_time()
            f.write(block)
            in_write += time.thread_time() - c
            if written % SYNC == 0:
                os.fsync(f.fileno())
                synced = written
            if drop and synced - dropped >= DROP:
                c = time.thread_time()
                os.posix_fadvise(f.fileno(), dropped, synced - dropped, os.POSIX_FADV_DONTNEED)
                in_drop += time.thread_time() - c
                dropped = synced
    return time.perf_counter() - t0, in_write, in_drop


def main() -> int:
    size = int(os.environ.get("CONTINUUM_BENCH_TRANSFER_MB", "1024")) * MiB
    rounds = int(os.environ.get("CONTINUUM_BENCH_TRANSFER_ROUNDS", "3"))
    gap = float(os.environ.get("CONTINUUM_BENCH_TRANSFER_GAP", "4"))
    with tempfile.TemporaryDirectory(prefix="page-cache-writes-") as work:
        path = Path(work) / "file.bin"
        print(f"{size / MiB:.0f} MiB, 1 MiB per write, fsync per 8 MiB, after {gap:g} s idle")
        print(f"{'drop-behind':<12} {'wall s':>7} {'write CPU s':>12} {'fadvise CPU s':>14} load")
        for _ in range(rounds):
            for drop in (False, True):
                time.sleep(gap)
                wall, in_write, in_drop = write_file(path, size, drop)
                path.unlink()
                print(
                    f"{'yes' if drop else 'no':<12} {wall:>7.2f} {in_write:>12.2f} "
                    f"{in_drop:>14.2f} {os.getloadavg()[0]:.1f}",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
