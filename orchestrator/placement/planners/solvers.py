"""Solver adapters: run a pulp model on HiGHS (highspy) or CBC and report what the solver says.

pulp's own status is not enough (it says "Optimal" after a time limit with an incumbent), so
every solve returns a ``SolveInfo`` read from the solver itself: its model status, whether it
holds a primal solution, the objective, the dual bound and the gap.

HiGHS keeps one thread scheduler per *process*. Once a solve has started it with some number of
threads, a later solve that asks for another number fails before it starts: ``run()`` returns an
error and the model status stays ``Not Set`` (``Option 'threads' is set to 1 but the scheduler
has already been initialized to use 2 threads``). highspy 1.16 made this bite: its default
(``threads = 0``, automatic) now starts the scheduler with every core, where 1.15 started it
with half of them, so on a 2-core machine any solve without an explicit thread count (the CDT
solver's, a notebook's) made every later ``threads=1`` solve of the placement ILP fail. Here
every HiGHS solve goes through ``solve_highs``, which always sets the thread count, resets the
process's scheduler first (``resetThreadScheduler`` in 1.16, ``resetGlobalScheduler`` in 1.15:
the method was renamed) and holds a process-wide lock while it solves.

HiGHS also prints its banner on the C ``stdout`` the first time a ``Highs`` object is built,
whatever ``output_flag`` says; ``_quiet_banner`` sends it to stderr so that ``--json -``
output stays JSON.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import os
import re
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulp

Progress = Callable[[str], None]

SOLVERS = ("highs", "cbc")

_HIGHS_LOCK = threading.Lock()
_BANNER_DONE = False


@dataclass
class SolveInfo:
    """What the solver itself says (not pulp's status)."""

    solver: str
    status: str
    has_solution: bool
    objective: float | None = None
    bound: float | None = None
    gap: float | None = None
    wall_s: float = 0.0
    error: str | None = None
    """Why the solver did not run or stopped with an error (``None`` when it ran normally)."""

    def failure(self) -> str | None:
        """A one-line reason when the solver produced no solution, else ``None``."""
        if self.has_solution:
            return None
        why = f"solver {self.solver}: {self.status} after {self.wall_s:.2f} s, no solution"
        return f"{why} ({self.error})" if self.error else why


def reset_highs_scheduler() -> None:
    """Destroy HiGHS's process-wide thread scheduler so that the next solve sets its own size.

    The method is ``resetThreadScheduler`` from highspy 1.16 on, ``resetGlobalScheduler``
    before (both exist in 1.16, only the second in 1.15).
    """
    import highspy

    reset = getattr(highspy.Highs, "resetThreadScheduler", None) or getattr(
        highspy.Highs, "resetGlobalScheduler", None
    )
    if reset is not None:
        reset(True)


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """Point file descriptor 1 at stderr for the block, C stdio buffers flushed on both sides."""
    libc = ctypes.CDLL(None)
    sys.stdout.flush()
    libc.fflush(None)
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        libc.fflush(None)
        os.dup2(saved, 1)
        os.close(saved)


def _quiet_banner() -> None:
    """Build the process's first ``Highs`` with stdout on stderr (it prints a banner once)."""
    global _BANNER_DONE
    if _BANNER_DONE:
        return
    import highspy

    try:
        with _stdout_to_stderr():
            highspy.Highs()
    except OSError:  # no file descriptors to juggle (an embedded interpreter): let it print
        highspy.Highs()
    _BANNER_DONE = True


class _HiGHS(pulp.HiGHS):
    """pulp's highspy interface, plus a MIP start from the variables' initial values, live
    progress (incumbent, dual bound, gap) through HiGHS's callbacks, and the run's own status."""

    def __init__(self, warm: bool, progress: Progress | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.warm = warm
        self.progress = progress
        self.run_status: str | None = None

    def callSolver(self, lp: Any) -> None:  # noqa: N802 (pulp's method name)
        import highspy
        import numpy as np

        h = lp.solverModel
        if self.warm:
            cols = sorted(lp.variables(), key=lambda var: var.index)
            vals = np.array([float(c.varValue or 0.0) for c in cols], dtype=np.float64)
            idx = np.arange(len(cols), dtype=np.int32)
            h.setSolution(len(cols), idx, vals)
        if self.progress is not None:
            report = self.progress
            last = [-1.0]

            def on_event(event: Any) -> None:
                d = event.data_out
                if d.running_time - last[0] < 0.25:
                    return
                last[0] = d.running_time
                inc = d.objective_function_value
                inc_s = f"{inc:.6g}" if math.isfinite(inc) else "-"
                gap = f"{d.mip_gap:.2%}" if math.isfinite(d.mip_gap) else "-"
                report(
                    f"HiGHS {d.running_time:.1f} s: incumbent {inc_s}, "
                    f"bound {d.mip_dual_bound:.6g}, gap {gap}"
                )

            h.cbMipImprovingSolution.subscribe(on_event)
            h.cbMipInterrupt.subscribe(on_event)
        status = h.run()
        if status == highspy.HighsStatus.kError:
            self.run_status = "HiGHS run() returned an error before solving"


def solve_highs(
    prob: pulp.LpProblem,
    *,
    time_limit: float,
    threads: int = 1,
    gap_rel: float | None = None,
    warm: bool = False,
    msg: bool = False,
    progress: Progress | None = None,
) -> SolveInfo:
    """Solve ``prob`` with HiGHS, with exactly ``threads`` threads; the solver's own verdict."""
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    t0 = time.perf_counter()
    with _HIGHS_LOCK:
        _quiet_banner()
        reset_highs_scheduler()
        solver = _HiGHS(
            warm,
            progress,
            msg=msg,
            timeLimit=time_limit,
            gapRel=gap_rel,
            threads=threads,
        )
        prob.solve(solver)
        h = prob.solverModel
        info = h.getInfo()
        status = h.modelStatusToString(h.getModelStatus())
    has = info.primal_solution_status == 2
    obj = info.objective_function_value if has else None
    bound = info.mip_dual_bound
    gap = info.mip_gap if has else None
    return SolveInfo(
        "highs",
        status,
        has,
        obj,
        bound if math.isfinite(bound) else None,
        gap if gap is not None and math.isfinite(gap) else None,
        time.perf_counter() - t0,
        solver.run_status,
    )


def solve_cbc(
    prob: pulp.LpProblem,
    *,
    time_limit: float,
    threads: int = 1,
    gap_rel: float | None = None,
    warm: bool = False,
    msg: bool = False,
) -> SolveInfo:
    """Solve ``prob`` with pulp's bundled CBC; status, bound and gap read from CBC's log."""
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "cbc.log"
        solver = pulp.PULP_CBC_CMD(
            msg=msg,
            timeLimit=time_limit,
            gapRel=gap_rel,
            warmStart=warm,
            logPath=str(log),
            threads=threads,
        )
        prob.solve(solver)
        text = log.read_text(errors="replace") if log.exists() else ""
    return cbc_info(text, prob, time.perf_counter() - t0)


def cbc_info(text: str, prob: pulp.LpProblem, wall: float) -> SolveInfo:
    """Read CBC's own verdict, objective, bound and gap from its log."""
    m = re.search(r"Result - (.+)", text)
    status = m.group(1).strip() if m else pulp.LpStatus[prob.status]
    has = prob.sol_status in (pulp.LpSolutionOptimal, pulp.LpSolutionIntegerFeasible)
    obj_m = re.search(r"Objective value:\s+([-+0-9.eE]+)", text)
    bound_m = re.search(r"Lower bound:\s+([-+0-9.eE]+)", text)
    gap_m = re.search(r"Gap:\s+([-+0-9.eE]+)", text)
    obj = float(obj_m.group(1)) if obj_m and has else None
    bound = float(bound_m.group(1)) if bound_m else None
    gap = float(gap_m.group(1)) if gap_m and has else None
    if status.startswith("Optimal") and has and obj is not None:
        bound = obj if bound is None else bound
        gap = 0.0 if gap is None else gap
    return SolveInfo("cbc", status, has, obj, bound, gap, wall)


def solve(
    prob: pulp.LpProblem,
    solver: str,
    *,
    time_limit: float,
    threads: int = 1,
    gap_rel: float | None = None,
    warm: bool = False,
    msg: bool = False,
    progress: Progress | None = None,
) -> SolveInfo:
    """Solve with ``solver`` (``"highs"`` or ``"cbc"``)."""
    if solver == "highs":
        return solve_highs(
            prob,
            time_limit=time_limit,
            threads=threads,
            gap_rel=gap_rel,
            warm=warm,
            msg=msg,
            progress=progress,
        )
    if solver == "cbc":
        return solve_cbc(
            prob, time_limit=time_limit, threads=threads, gap_rel=gap_rel, warm=warm, msg=msg
        )
    raise ValueError(f"unknown solver {solver!r}; use one of {', '.join(SOLVERS)}")
