"""Execution benchmark: dispatch overhead per step, and fault-to-replan latency.

Table 1 runs the same DAG of no-op steps (a tree: step i waits for step
(i-1)//10) four ways, in the same run:

* ``dask.delayed`` of a no-op function on a LocalCluster (2 workers): the raw
  engine's overhead, no durability, no processes per step;
* ``dask.delayed`` of ``subprocess.run(["true"])``: the same engine starting a
  real process per step;
* the durable executor with the ``simulated`` connector: our orchestration
  overhead alone (every state change written to SQLite before acting);
* the durable executor with the ``local`` connector: a real process per step
  through the exclusive-claim runner, 2 slots (the executor hands the site its
  free slots plus 2 ahead and keeps the other ready steps).

After each executor row, its counters: passes, full loads of the run, step
rows read back and connector polls, per step: what a pass costs follows what
changed, not the size of the run.

Table 2 measures, on the local connector, the time from a site failing to the
re-plan of its unfinished steps being recorded (the twin's flag included),
over several repetitions. ProActive advertises 5 s to detect a failure and
redeploy a task at 19,000 running tasks.

``CONTINUUM_BENCH_STEPS`` (default 10000) sets the number of steps.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from federation.store import Store
from orchestrator import HEFTPlanner, Workflow
from orchestrator.connectors import LocalConnector, SimulatedConnector
from orchestrator.execution import Executor, RunState, RunStore, StepState
from orchestrator.execution.replan import PlannerReplanner

console = Console(width=140)


def tree(n: int) -> Workflow:
    steps = [{"id": "s0", "work": 0, "command": "true"}]
    steps += [
        {"id": f"s{i}", "work": 0, "command": "true", "after": [f"s{(i - 1) // 10}"]}
        for i in range(1, n)
    ]
    return Workflow.from_dict({"name": "noop-tree", "steps": steps})


def _noop(*_: object) -> int:
    return 0


def _true(*_: object) -> int:
    return subprocess.run(["true"], check=False).returncode


def dask_delayed(n: int, fn: object) -> float:
    import dask
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, dashboard_address=":0", host="127.0.0.1"
        ) as cluster,
        Client(cluster),
    ):
        nodes: list[object] = [dask.delayed(fn)()]
        for i in range(1, n):
            nodes.append(dask.delayed(fn)(nodes[(i - 1) // 10]))
        t0 = time.perf_counter()
        dask.compute(*nodes)
        return time.perf_counter() - t0


def executor_run(n: int, kind: str, root: Path) -> float:
    wf = tree(n)
    runs = RunStore(Store.at(root / f"{kind}.db"))
    if kind == "simulated":
        conn: LocalConnector | SimulatedConnector = SimulatedConnector("a", 10**6, time.monotonic)
    else:
        conn = LocalConnector("a", root / kind, slots=2)
    ex = Executor(runs, {"a": conn}, poll_interval=0.0)
    rid = ex.submit(wf, {s.id: "a" for s in wf.steps})
    t0 = time.perf_counter()
    state = ex.run(rid, timeout=3600)
    elapsed = time.perf_counter() - t0
    if state is not RunState.DONE:
        raise RuntimeError(f"{kind} run ended {state.value}")
    st = ex.stats
    console.print(
        f"  {kind}: {st.passes} passes, {st.full_loads} full load(s), "
        f"{st.steps_read / n:.1f} step rows read and {st.polls / n:.1f} polls per step"
    )
    return elapsed


def fault_to_replan(root: Path, repeats: int = 5) -> list[float]:
    from federation.model import load_demo_federation

    fed = load_demo_federation()
    a, b = fed.site_ids[0], fed.site_ids[1]
    latencies = []
    for k in range(repeats):
        wf = Workflow.from_dict(
            {
                "name": "fault",
                "steps": [{"id": f"w{i}", "work": 1, "command": "sleep 5"} for i in range(8)],
            }
        )
        runs = RunStore(Store.at(root / f"fault{k}.db"))
        sites = {s: LocalConnector(s, root / f"fault{k}" / s, slots=4) for s in (a, b)}
        # the re-planner may use every site of the federation but the failed one;
        # the executor only has connectors for a and b, so offer it those
        view_sites = fed.model_copy(update={"sites": tuple(s for s in fed.sites if s.id in (a, b))})
        replanner = PlannerReplanner(view_sites, HEFTPlanner())
        ex = Executor(runs, sites, replanner=replanner, poll_interval=0.01)
        rid = ex.submit(wf, {s.id: a for s in wf.steps})
        while sum(r.state is StepState.RUNNING for r in runs.steps(rid).values()) < 4:
            ex.step_once(rid)
        t0 = time.perf_counter()
        sites[a].fail()
        ex.site_down(rid, a, "benchmark fault")
        latencies.append(time.perf_counter() - t0)
        ex.kill(rid)
    return latencies


def main() -> None:
    n = int(os.environ.get("CONTINUUM_BENCH_STEPS", "10000"))
    root = Path(tempfile.mkdtemp(prefix="continuum-bench-exec-"))
    rows = []
    for name, run in (
        ("dask.delayed, no-op function", lambda: dask_delayed(n, _noop)),
        ("dask.delayed, one process per step", lambda: dask_delayed(n, _true)),
        ("executor + simulated connector (durable)", lambda: executor_run(n, "simulated", root)),
        (
            "executor + local connector (durable, a process per step)",
            lambda: executor_run(n, "local", root),
        ),
    ):
        console.print(f"running: {name} ({n} steps)")
        seconds = run()
        rows.append((name, seconds))
    base = rows[0][1]
    table = Table(title=f"dispatch overhead, {n} no-op steps (tree DAG), 2-core machine")
    for col in ("engine", "wall s", "ms / step", "x dask.delayed"):
        table.add_column(col, justify="left" if col == "engine" else "right")
    for name, seconds in rows:
        table.add_row(name, f"{seconds:.1f}", f"{seconds / n * 1000:.2f}", f"{seconds / base:.1f}")
    console.print(table)

    lat = fault_to_replan(root)
    t2 = Table(title="fault to re-plan recorded (local connector, HEFT re-planner, 8 steps)")
    for col in ("runs", "median ms", "max ms", "target"):
        t2.add_column(col, justify="right")
    t2.add_row(
        str(len(lat)),
        f"{statistics.median(lat) * 1000:.0f}",
        f"{max(lat) * 1000:.0f}",
        "< 1000 ms (ProActive: 5 s)",
    )
    console.print(t2)


if __name__ == "__main__":
    main()
