"""The synthetic step that lets any WfCommons instance run end to end.

``python -m orchestrator.execution.synthetic --seconds S [--in ITEM ...] [--out ITEM:BYTES ...]``
checks that its inputs are in ``$CONTINUUM_IN``, burns one core for ``S``
seconds (a busy loop, so the site's utilisation is real), then writes each
output into ``$CONTINUUM_OUT`` with the given size. The executor builds this
command from a step's recorded work and output sizes, both scaled by a factor
(default 1/1000).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from pathlib import Path

CHUNK = 1 << 20


def burn(seconds: float) -> int:
    """Spin for ``seconds`` of wall time; returns the iterations (so the loop is not elided)."""
    end = time.perf_counter() + max(seconds, 0.0)
    n = 0
    while time.perf_counter() < end:
        n += 1
    return n


def write_output(path: Path, size: int, seed: str) -> None:
    """``size`` bytes of deterministic, incompressible-looking data derived from ``seed``."""
    block = hashlib.sha256(seed.encode()).digest() * (CHUNK // 32)
    with open(path, "wb") as f:
        left = size
        while left > 0:
            n = min(left, CHUNK)
            f.write(block[:n])
            left -= n
        f.flush()
        os.fsync(f.fileno())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="synthetic", description=__doc__)
    parser.add_argument("--seconds", type=float, default=0.0)
    parser.add_argument("--in", dest="inputs", action="append", default=[])
    parser.add_argument("--out", dest="outputs", action="append", default=[])
    args = parser.parse_args(argv)
    in_dir = Path(os.environ.get("CONTINUUM_IN", "in"))
    out_dir = Path(os.environ.get("CONTINUUM_OUT", "out"))
    missing = [i for i in args.inputs if not (in_dir / i).exists()]
    if missing:
        print(f"missing inputs in {in_dir}: {', '.join(missing)}", file=sys.stderr)
        return 3
    burn(args.seconds)
    out_dir.mkdir(parents=True, exist_ok=True)
    for spec in args.outputs:
        name, _, size = spec.rpartition(":")
        if not name or not size.isdigit():
            print(f"--out takes NAME:BYTES, got {spec!r}", file=sys.stderr)
            return 2
        write_output(out_dir / name, int(size), name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
