"""Exactly once after SIGKILL, with kills that land.

The orchestrator (``tests/orchestrator/exec_driver.py``, a process of its own) is killed with
SIGKILL when the test *observes* a point of the run in the store, never after a guessed
delay: during a step, during a transfer between sites, between two steps, and when a step
has exhausted its attempts and is due for a re-plan. Each kill must land before the run is
done; the driver is then started again. On SQLite and on PostgreSQL (fsync on), every step's
side effect (a line in its marker file, one per attempt) happens exactly once.

It goes red when recovery breaks exactly-once (checked locally: an executor that, on first
sight of a run, puts the steps recorded running back in the queue instead of adopting their
tasks ran a, b and c twice). The last guard, the task runner's exclusive claim, is proven by
``test_many_runners_started_at_once_on_one_task_run_it_once`` (red without the claim); the
executor's write-before-act order and the claim protect the same window (a task handed to its
site again while its first runner starts), so breaking one of them alone duplicates nothing.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from federation.store import Store, sqlite_url
from orchestrator import Workflow
from orchestrator.execution import OnError, RunState, RunStore
from tests.conftest import REPO

Events = list[tuple[float, str, str, str]]


def crash_workflow(markers: Path, big_mb: int) -> Workflow:
    """a -> (b, c) -> d. ``a`` writes a big item that ``b`` reads on the other site (a
    transfer of ``big_mb`` MB); ``c`` fails where it is first placed (site a) and succeeds
    once re-planned (site b). Each step notes every attempt in its marker file."""

    def cmd(step: str, body: str) -> str:
        return f'echo "$CONTINUUM_SITE" >> {markers}/{step} && {body}'

    return Workflow.from_dict(
        {
            "name": "crash",
            "data": [
                {"id": "big", "size": big_mb * 1e6},
                {"id": "xa", "size": 3},
                {"id": "xb", "size": 3},
                {"id": "xc", "size": 3},
            ],
            "steps": [
                {
                    "id": "a",
                    "work": 1,
                    "outputs": ["big", "xa"],
                    "command": cmd(
                        "a",
                        f"sleep 1.5 && head -c {big_mb * 1000000} /dev/urandom "
                        '> "$CONTINUUM_OUT/big" && echo a > "$CONTINUUM_OUT/xa"',
                    ),
                },
                {
                    "id": "b",
                    "work": 1,
                    "inputs": ["big", "xa"],
                    "outputs": ["xb"],
                    "command": cmd("b", 'sleep 1.5 && echo b > "$CONTINUUM_OUT/xb"'),
                },
                {
                    "id": "c",
                    "work": 1,
                    "inputs": ["xa"],
                    "outputs": ["xc"],
                    "command": cmd(
                        "c", 'test "$CONTINUUM_SITE" = b && sleep 3 && echo c > "$CONTINUUM_OUT/xc"'
                    ),
                },
                {
                    "id": "d",
                    "work": 1,
                    "inputs": ["xb", "xc"],
                    "command": cmd("d", "sleep 0.5"),
                },
            ],
        }
    )


def seen(events: Events, step: str, kind: str, detail: str = "") -> bool:
    return any(s == step and k == kind and detail in d for _, s, k, d in events)


TRIGGERS: dict[str, Callable[[Events], bool]] = {
    # a's command runs (recorded running, not done)
    "during a step": lambda ev: (
        seen(ev, "a", "staging->running") and not seen(ev, "a", "running->done")
    ),
    # b is staging the big item from a to b
    "during a transfer": lambda ev: (
        seen(ev, "b", "ready->staging", "staging at b") and not seen(ev, "b", "staging->running")
    ),
    # c exhausted its attempt at a: the kill follows the re-plan's record at once
    "at a re-plan": lambda ev: seen(ev, "c", "failed->ready", "attempts exhausted"),
    # b is done, d not started yet
    "between steps": lambda ev: (
        seen(ev, "b", "running->done") and not seen(ev, "d", "ready->staging")
    ),
}


def lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_sigkill_at_observed_points_then_restart_runs_every_step_exactly_once(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if backend == "postgresql":
        url = request.getfixturevalue("postgres_url")
    else:
        url = sqlite_url(tmp_path / "state.db")
    markers = tmp_path / "markers"
    markers.mkdir()
    work = tmp_path / "work"
    store = Store(url)
    runs = RunStore(store)
    wf = crash_workflow(markers, big_mb=150)
    rid = runs.create_run(
        wf, {"a": "a", "b": "b", "c": "a", "d": "b"}, max_attempts=1, on_error=OnError.CONTINUE
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "tests.orchestrator.exec_driver", url, str(work), rid]
    landed: list[str] = []
    deadline = time.monotonic() + 600
    while True:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)
        killed = False
        while proc.poll() is None and time.monotonic() < deadline:
            events = runs.events(rid)
            due = [n for n, t in TRIGGERS.items() if n not in landed and t(events)]
            if due:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                assert runs.run(rid).state is RunState.RUNNING  # it landed mid-run
                landed.append(due[0])
                killed = True
                break
            time.sleep(0.01)
        if not killed:
            out, _ = proc.communicate(timeout=60)
            assert proc.returncode == 0, out
            break
    assert set(landed) == set(TRIGGERS), f"kills landed at {landed}"
    assert runs.run(rid).state is RunState.DONE
    # each attempt's side effect once: c failed once at a, then ran at b
    assert {s: lines(markers / s) for s in "abcd"} == {
        "a": ["a"],
        "b": ["b"],
        "c": ["a", "b"],
        "d": ["b"],
    }
    staged = work / "b" / "staged" / rid / "big"
    assert staged.stat().st_size == 150_000_000  # the transfer completed, once verified
    store.close()
