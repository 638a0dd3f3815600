"""Run the benchmarks: ``python -m benchmarks [NAME ...]`` (``make bench`` runs them all).

Each module ``benchmarks/bench_<name>.py`` defines ``main() -> None`` that
prints its table(s) (or ``main(argv) -> int``, which takes the ``--options`` given and
whose non-zero result, a missed target, becomes the exit status); NAME selects modules by
name.
"""

from __future__ import annotations

import importlib
import inspect
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
    # from the first --option on, everything goes to the modules that take options
    first = next((i for i, a in enumerate(argv) if a.startswith("-")), len(argv))
    argv, options = argv[:first], argv[first:]
    names = argv or available()
    unknown = [n for n in names if n not in available()]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; available: {', '.join(available())}")
        return 2
    status = 0
    for name in names:
        module = importlib.import_module(f"benchmarks.bench_{name}")
        print(f"\n=== benchmark: {name} ===", flush=True)
        t0 = time.perf_counter()
        takes = "argv" in inspect.signature(module.main).parameters
        rc = module.main(options) if takes else module.main()
        print(f"=== {name}: {time.perf_counter() - t0:.1f} s ===", flush=True)
        status = status or (rc if isinstance(rc, int) else 0)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
