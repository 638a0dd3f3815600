"""Start-up time of the CLI against the bare interpreter, measured in the same run.

Each command runs ``CONTINUUM_BENCH_CLI_ROUNDS`` times (default 15), interleaved
with ``python -c pass`` (the floor: an interpreter that does nothing). Printed
per command, with the load average: the best and the median wall time, and the
median CPU time (user + system) of the process. Target: ``continuum --help`` and
``continuum validate`` (a federation, a workflow, a data project plan) start in
under 0.5 s: the best wall time of the rounds (as ``timeit`` reports: the run
least slowed by the other processes of a shared machine) and the median CPU
time must both be under it. Exits non-zero when a target is missed.

The first run of each command writes the bytecode caches (``__pycache__``), as
an installed package has them: the rounds time starting, not compiling.
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "examples" / "quickstart"
TARGET_S = 0.5

CLI = [sys.executable, "-m", "federation.cli"]
COMMANDS: dict[str, tuple[list[str], bool]] = {
    "python -c pass (floor)": ([sys.executable, "-c", "pass"], False),
    "continuum --help": ([*CLI, "--help"], True),
    "continuum --version": ([*CLI, "--version"], False),
    "continuum plan --help": ([*CLI, "plan", "--help"], False),
    "continuum validate federation.yaml": (
        [*CLI, "validate", str(QUICKSTART / "federation.yaml")],
        True,
    ),
    "continuum validate workflow.yaml": (
        [*CLI, "validate", str(QUICKSTART / "workflow.yaml")],
        True,
    ),
    "continuum validate data-plan.json": (
        [*CLI, "validate", str(QUICKSTART / "data-plan.json")],
        True,
    ),
}
"""name -> (command, held to the target)."""


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["COLUMNS"] = "100"
    return env


def _cpu() -> float:
    use = resource.getrusage(resource.RUSAGE_CHILDREN)
    return use.ru_utime + use.ru_stime


def _once(cmd: list[str]) -> tuple[float, float]:
    """Wall and CPU seconds of one run of ``cmd``."""
    c0, t0 = _cpu(), time.perf_counter()
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, env=_env(), check=False)
    took, cpu = time.perf_counter() - t0, _cpu() - c0
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {done.returncode}: {done.stderr.decode()}")
    return took, cpu


def main() -> None:
    rounds = int(os.environ.get("CONTINUUM_BENCH_CLI_ROUNDS", "15"))
    for cmd, _ in COMMANDS.values():  # writes the bytecode caches, as an install has them
        _once(cmd)
    wall: dict[str, list[float]] = {name: [] for name in COMMANDS}
    cpu: dict[str, list[float]] = {name: [] for name in COMMANDS}
    load0 = os.getloadavg()[0]
    for _ in range(rounds):
        for name, (cmd, _) in COMMANDS.items():
            w, c = _once(cmd)
            wall[name].append(w)
            cpu[name].append(c)
    load = os.getloadavg()
    print(
        f"CLI start-up, {rounds} rounds interleaved; load average {load0:.2f} before, "
        f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f} after, on {os.cpu_count()} cores"
    )
    floor = min(wall["python -c pass (floor)"])
    print(
        f"{'command':<38} {'best wall':>9} {'- floor':>8} {'median wall':>11} "
        f"{'median CPU':>10} {'target':>7}"
    )
    missed = []
    for name, (_, held) in COMMANDS.items():
        best, med_cpu = min(wall[name]), statistics.median(cpu[name])
        verdict = ""
        if held:
            ok = best < TARGET_S and med_cpu < TARGET_S
            verdict = "ok" if ok else "MISSED"
            if not ok:
                missed.append(name)
        print(
            f"{name:<38} {best:>9.3f} {best - floor:>8.3f} {statistics.median(wall[name]):>11.3f} "
            f"{med_cpu:>10.3f} {verdict:>7}"
        )
    if missed:
        raise SystemExit(f"start-up over {TARGET_S} s: {', '.join(missed)}")
    print(f"every held command starts in under {TARGET_S} s")


if __name__ == "__main__":
    main()
