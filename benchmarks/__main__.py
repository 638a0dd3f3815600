"""Run the benchmarks: ``python -m benchmarks [NAME ...]`` (``make bench`` runs them all).

Each module ``benchmarks/bench_<name>.py`` defines ``main()`` that prints its
table(s) and may return ``False`` when a target was missed (the command then exits
with status 1, after running every benchmark asked for); NAME selects modules by name.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import time
from pathlib import Path


def available() -> list[str]:
    here = Path(__file__).parent
    return sorted(
        m.name.removeprefix("bench_")
        for m in pkgutil.iter_modules([str(here)])
        if m.name.startswith("bench_")
    )


def main(argv: list[str]) -> int:
    names = argv or available()
    unknown = [n for n in names if n not in available()]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; available: {', '.join(available())}")
        return 2
    missed = []
    for name in names:
        module = importlib.import_module(f"benchmarks.bench_{name}")
        print(f"\n=== benchmark: {name} ===", flush=True)
        t0 = time.perf_counter()
        if module.main() is False:
            missed.append(name)
        print(f"=== {name}: {time.perf_counter() - t0:.1f} s ===", flush=True)
    if missed:
        print(f"target(s) missed in: {', '.join(missed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
