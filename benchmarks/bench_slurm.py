"""Slurm benchmark: what the Slurm connector costs per step, and how fast Slurm starts a job.

It starts its own single-host Slurm cluster (``orchestrator.connectors.slurmlocal``: one
node of 2 CPUs, munged, slurmctld and slurmd by PID; Debian's ``slurm-wlm`` and ``munge``
must be installed) and, in the same run:

Table 1, ``CONTINUUM_BENCH_SLURM_STEPS`` (default 200) short steps (``true``), wall time
from the first submission to the last step done, per step:

* ``sbatch --wrap=true`` submitted by a plain shell loop, completion read from the job
  completion log: the limit Slurm itself sets on this machine;
* the same jobs as one job array (``sbatch --array``): what batching the submissions would
  buy at most;
* the durable executor with the Slurm connector (one ``sbatch`` per step, every state
  change written to SQLite first, at most the partition's CPUs plus a lookahead in flight);
* the durable executor with the local connector (2 slots): the same steps without Slurm.

Table 2, the latency from ``sbatch`` returning to the job's script starting (read from the
clock by the script itself), over ``CONTINUUM_BENCH_SLURM_LATENCY`` (default 20) jobs
submitted one at a time to an idle cluster, with the scheduler's default parameters and
with ``SchedulerParameters=batch_sched_delay=0`` (each on a fresh cluster).

Targets (the benchmark exits non-zero when one is missed): the connector's per-step time is
at most ``SLOWDOWN_TARGET`` times the plain ``sbatch`` loop's; with ``batch_sched_delay=0``
the median latency is under ``LATENCY_TARGET_S`` and at most ``LATENCY_RATIO_TARGET`` times
the default's.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.table import Table

from federation.store import Store
from orchestrator import Workflow
from orchestrator.connectors import LocalConnector
from orchestrator.connectors.base import SiteConnector
from orchestrator.connectors.slurm import SlurmConnector
from orchestrator.connectors.slurmlocal import LocalSlurm, slurm_missing
from orchestrator.execution import Executor, RunState, RunStore
from twin.slurm_source import slurm_command

console = Console(width=140)

SLOWDOWN_TARGET = 1.5
"""The connector's per-step time, at most this many times the plain sbatch loop's."""
LATENCY_TARGET_S = 1.5
"""Median sbatch-to-running latency with batch_sched_delay=0 (FACTS: 0.1 to 1.0 s on a quiet
machine; the bound leaves room for a loaded one)."""
LATENCY_RATIO_TARGET = 0.5
"""... and at most this share of the median with the scheduler's default parameters."""


def _until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")


def _completed(cluster: LocalSlurm, workdir: Path) -> int:
    """Jobs (array tasks each) of ``workdir`` in the job completion log."""
    try:
        text = cluster.jobcomp.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return 0
    return text.count(f" WorkDir={workdir} ")


def sbatch_loop(cluster: LocalSlurm, n: int, root: Path) -> float:
    """A plain shell loop of ``sbatch --wrap=true``; seconds until all are done."""
    work = root / "loop"
    work.mkdir()
    script = f"for i in $(seq {n}); do sbatch --quiet --chdir={work} -o /dev/null --wrap=true; done"
    t0 = time.perf_counter()
    subprocess.run(["sh", "-c", script], check=True, env={**os.environ, **cluster.env})
    _until(lambda: _completed(cluster, work) >= n, 1800, f"{n} jobs of the loop")
    return time.perf_counter() - t0


def job_array(cluster: LocalSlurm, n: int, root: Path) -> float:
    """One ``sbatch --array=0-(n-1) --wrap=true``; seconds until every task is done."""
    work = root / "array"
    work.mkdir()
    t0 = time.perf_counter()
    slurm_command(
        [
            "sbatch",
            "--quiet",
            f"--array=0-{n - 1}",
            f"--chdir={work}",
            "-o",
            "/dev/null",
            "--wrap=true",
        ],
        cluster.conf,
    )
    _until(lambda: _completed(cluster, work) >= n, 1800, f"{n} tasks of the array")
    return time.perf_counter() - t0


def executor_run(conn: SiteConnector, n: int, root: Path, name: str) -> tuple[float, int]:
    """``n`` independent ``true`` steps through the durable executor; seconds, polls."""
    wf = Workflow.from_dict(
        {
            "name": "short",
            "steps": [{"id": f"s{i}", "work": 1, "command": "true"} for i in range(n)],
        }
    )
    runs = RunStore(Store.at(root / f"{name}.db"))
    ex = Executor(runs, {"a": conn}, poll_interval=0.01)
    rid = ex.submit(wf, dict.fromkeys((s.id for s in wf.steps), "a"))
    t0 = time.perf_counter()
    state = ex.run(rid, timeout=3600)
    elapsed = time.perf_counter() - t0
    if state is not RunState.DONE:
        raise RuntimeError(f"{name} run ended {state.value}")
    runs.store.close()
    return elapsed, ex.stats.polls


def latency(cluster: LocalSlurm, jobs: int, root: Path) -> list[float]:
    """Seconds from sbatch returning to each job's script starting, one job at a time."""
    work = root / "latency"
    work.mkdir(exist_ok=True)
    out = []
    for i in range(jobs):
        mark = work / f"start-{i}"
        slurm_command(
            [
                "sbatch",
                "--quiet",
                f"--chdir={work}",
                "-o",
                "/dev/null",
                f"--wrap=date +%s.%N > {mark}",
            ],
            cluster.conf,
        )
        submitted = time.time()

        def started_job(m: Path = mark) -> bool:
            return m.exists() and m.stat().st_size > 0

        _until(started_job, 120, "the job to start")
        started = float(mark.read_text())
        out.append(max(0.0, started - submitted))
        _until(lambda: not _active(cluster), 120, "the job to end")
    return out


def _active(cluster: LocalSlurm) -> bool:
    return bool(slurm_command(["squeue", "--noheader", "--format=%i"], cluster.conf).strip())


def main() -> None:
    reason = slurm_missing()
    if reason is not None:
        console.print(f"[bold red]cannot run:[/] {reason}")
        sys.exit(2)
    n = int(os.environ.get("CONTINUUM_BENCH_SLURM_STEPS", "200"))
    jobs = int(os.environ.get("CONTINUUM_BENCH_SLURM_LATENCY", "20"))
    root = Path(tempfile.mkdtemp(prefix="continuum-bench-slurm-"))
    load = os.getloadavg()[0]
    rows: list[tuple[str, float, str]] = []
    missed: list[str] = []
    try:
        cluster = LocalSlurm(root / "cluster", nodes=1, cpus=2, min_job_age_s=3600)
        with cluster:
            os.environ["SLURM_CONF"] = str(cluster.conf)
            console.print(f"running: sbatch loop ({n} jobs)")
            loop = sbatch_loop(cluster, n, root)
            rows.append(("plain `sbatch --wrap=true` shell loop", loop, ""))
            console.print(f"running: one job array ({n} tasks)")
            rows.append(("one job array (`sbatch --array`)", job_array(cluster, n, root), ""))
            console.print(f"running: executor + Slurm connector ({n} steps)")
            slurm_conn = SlurmConnector("a", root / "slurm-site", refresh_s=0.5)
            seconds, polls = executor_run(slurm_conn, n, root, "slurm")
            rows.append(
                (
                    "executor + Slurm connector (durable, one sbatch per step)",
                    seconds,
                    f"{polls / n:.1f} polls, {slurm_conn.submitted} sbatch",
                )
            )
        console.print(f"running: executor + local connector ({n} steps)")
        local_s, polls = executor_run(
            LocalConnector("a", root / "local-site", slots=2), n, root, "local"
        )
        rows.append(
            ("executor + local connector (2 slots, no Slurm)", local_s, f"{polls / n:.1f} polls")
        )
        table = Table(
            title=f"{n} short steps (`true`), one node of 2 CPUs; load average {load:.1f} at start"
        )
        for col in ("engine", "wall s", "ms / step", "x sbatch loop", "notes"):
            table.add_column(col, justify="left" if col in ("engine", "notes") else "right")
        for name, seconds, notes in rows:
            table.add_row(
                name, f"{seconds:.1f}", f"{seconds / n * 1000:.0f}", f"{seconds / loop:.2f}", notes
            )
        console.print(table)
        slowdown = rows[2][1] / loop
        if slowdown > SLOWDOWN_TARGET:
            missed.append(f"Slurm connector {slowdown:.2f} x the sbatch loop (> {SLOWDOWN_TARGET})")

        lat: dict[str, list[float]] = {}
        for label, delay0 in (("scheduler default", False), ("batch_sched_delay=0", True)):
            console.print(f"running: sbatch-to-running latency, {label} ({jobs} jobs)")
            where = root / f"latency-{int(delay0)}"
            c = LocalSlurm(where, nodes=1, cpus=2, batch_sched_delay_zero=delay0)
            with c:
                latency(c, 1, where)  # the scheduler's first pass
                lat[label] = latency(c, jobs, where)
        t2 = Table(
            title=f"sbatch to the job's script running, {jobs} jobs one at a time, idle cluster"
        )
        for col in ("scheduler", "median s", "p90 s", "max s", "target"):
            t2.add_column(col, justify="left" if col == "scheduler" else "right")
        for label, values in lat.items():
            ordered = sorted(values)
            t2.add_row(
                label,
                f"{statistics.median(values):.2f}",
                f"{ordered[int(0.9 * (len(ordered) - 1))]:.2f}",
                f"{ordered[-1]:.2f}",
                f"< {LATENCY_TARGET_S:.1f} s, <= {LATENCY_RATIO_TARGET} x default"
                if "=0" in label
                else "",
            )
        console.print(t2)
        zero = statistics.median(lat["batch_sched_delay=0"])
        default = statistics.median(lat["scheduler default"])
        if zero >= LATENCY_TARGET_S or zero > LATENCY_RATIO_TARGET * default:
            missed.append(
                f"median latency with batch_sched_delay=0 {zero:.2f} s (target < "
                f"{LATENCY_TARGET_S} s and <= {LATENCY_RATIO_TARGET} x the default's "
                f"{default:.2f} s)"
            )
        console.print(f"load average at the end: {os.getloadavg()[0]:.1f}")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if missed:
        console.print("[bold red]missed:[/] " + "; ".join(missed))
        sys.exit(1)


if __name__ == "__main__":
    main()
