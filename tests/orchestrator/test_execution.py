"""Execution: real processes, durable state, exactly-once after SIGKILL, errors, re-planning."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from federation.store import Store
from orchestrator import Workflow, load_workflow
from orchestrator.connectors import LocalConnector, SimulatedConnector, TaskStatus
from orchestrator.errors import PlanningError
from orchestrator.execution import (
    CopyStager,
    Executor,
    IllegalTransition,
    OnError,
    ReplanRequest,
    RunState,
    RunStore,
    StepState,
)
from orchestrator.execution.launch import Launch, LaunchKind
from tests.orchestrator.exec_driver import build


def shell_workflow(
    markers: Path, sleep: float = 0.0, fail_on: Mapping[str, str] | None = None
) -> Workflow:
    """a -> (b, c) -> d; each step appends to its marker file and writes its output."""

    def cmd(step: str, out: str | None, reads: list[str]) -> str:
        parts = [f'echo "$CONTINUUM_SITE" >> {markers}/{step}']
        for r in reads:
            parts.append(f'test -s "$CONTINUUM_IN/{r}"')
        if fail_on and step in fail_on:
            parts.append(fail_on[step])
        if sleep:
            parts.append(f"sleep {sleep}")
        if out:
            parts.append(f'echo "{step} made this" > "$CONTINUUM_OUT/{out}"')
        return " && ".join(parts)

    return Workflow.from_dict(
        {
            "name": "shell",
            "data": [{"id": i, "size": 20} for i in ("xa", "xb", "xc")],
            "steps": [
                {"id": "a", "work": 1, "outputs": ["xa"], "command": cmd("a", "xa", [])},
                {
                    "id": "b",
                    "work": 1,
                    "inputs": ["xa"],
                    "outputs": ["xb"],
                    "command": cmd("b", "xb", ["xa"]),
                },
                {
                    "id": "c",
                    "work": 1,
                    "inputs": ["xa"],
                    "outputs": ["xc"],
                    "command": cmd("c", "xc", ["xa"]),
                },
                {
                    "id": "d",
                    "work": 1,
                    "inputs": ["xb", "xc"],
                    "command": cmd("d", None, ["xb", "xc"]),
                },
            ],
        }
    )


def lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


@pytest.fixture
def work(tmp_path: Path) -> Path:
    (tmp_path / "markers").mkdir()
    return tmp_path


def make_executor(work: Path, **kw: Any) -> Executor:
    runs = RunStore(Store.at(work / "state.db"))
    sites = {s: LocalConnector(s, work / s, slots=2) for s in ("a", "b")}
    return Executor(
        runs, sites, stager=CopyStager(work), inputs_dir=work / "inputs", poll_interval=0.01, **kw
    )


def test_a_workflow_runs_across_two_sites_with_staged_data(work: Path) -> None:
    wf = shell_workflow(work / "markers")
    ex = make_executor(work)
    rid = ex.submit(wf, {"a": "a", "b": "b", "c": "a", "d": "b"})
    assert ex.run(rid, timeout=60) is RunState.DONE
    for step, site in {"a": "a", "b": "b", "c": "a", "d": "b"}.items():
        assert lines(work / "markers" / step) == [site]
    stager = ex.stager
    assert isinstance(stager, CopyStager)
    # xa goes a -> b once (for step b); xc goes a -> b for d; xb is local to b
    assert sorted((m[0], m[1], m[2]) for m in stager.moves) == [("xa", "a", "b"), ("xc", "a", "b")]
    steps = ex.runs.steps(rid)
    assert all(r.state is StepState.DONE and r.attempts == 1 for r in steps.values())


def test_retries_with_backoff_then_success(work: Path) -> None:
    counter = work / "count"
    # b fails on its first two attempts, succeeds on the third
    flaky = f'n=$(cat {counter} 2>/dev/null || echo 0); echo $((n+1)) > {counter}; test "$n" -ge 2'
    wf = shell_workflow(work / "markers", fail_on={"b": flaky})
    ex = make_executor(work)
    rid = ex.submit(wf, dict.fromkeys("abcd", "a"), max_attempts=3, backoff_s=0.05)
    assert ex.run(rid, timeout=60) is RunState.DONE
    assert ex.runs.steps(rid)["b"].attempts == 3
    retries = [d for _, s, k, d in ex.runs.events(rid) if s == "b" and k == "failed->ready"]
    assert len(retries) == 2
    assert retries[0].startswith("retry in 0.05")
    assert retries[1].startswith("retry in 0.10")


@pytest.mark.parametrize(
    "policy", [OnError.CANCEL_JOB, OnError.CONTINUE, OnError.PAUSE_TASK, OnError.PAUSE_JOB]
)
def test_on_error_policies(work: Path, policy: OnError) -> None:
    wf = shell_workflow(work / "markers", fail_on={"b": "false"})
    ex = make_executor(work)
    rid = ex.submit(wf, dict.fromkeys("abcd", "a"), on_error=policy, max_attempts=2, backoff_s=0.01)
    state = ex.run(rid, timeout=60)
    steps = ex.runs.steps(rid)
    assert steps["b"].attempts == 2
    assert steps["d"].state is not StepState.DONE
    if policy is OnError.CANCEL_JOB:
        assert state is RunState.FAILED
        assert steps["d"].state is StepState.CANCELLED
    elif policy is OnError.CONTINUE:
        assert state is RunState.FAILED
        assert steps["c"].state is StepState.DONE  # the independent branch finished
        assert steps["b"].state is StepState.FAILED
    elif policy is OnError.PAUSE_TASK:
        assert state is RunState.PAUSED
        assert steps["b"].state is StepState.PAUSED
    else:
        assert state is RunState.PAUSED


def test_restart_in_error_steps_after_the_cause_is_fixed(work: Path) -> None:
    gate = work / "gate"
    wf = shell_workflow(work / "markers", fail_on={"b": f"test -e {gate}"})
    ex = make_executor(work)
    rid = ex.submit(wf, dict.fromkeys("abcd", "a"), on_error=OnError.PAUSE_TASK, max_attempts=1)
    assert ex.run(rid, timeout=60) is RunState.PAUSED
    gate.touch()
    assert ex.restart_failed(rid) == ["b"]
    assert ex.run(rid, timeout=60) is RunState.DONE
    assert lines(work / "markers" / "b") == ["a", "a"]
    assert lines(work / "markers" / "a") == ["a"]


def test_pause_resume_and_kill(work: Path) -> None:
    wf = shell_workflow(work / "markers", sleep=0.2)
    ex = make_executor(work)
    rid = ex.submit(wf, dict.fromkeys("abcd", "a"))
    ex.step_once(rid)  # a starts
    ex.pause(rid)
    assert ex.run(rid, timeout=5) is RunState.PAUSED
    deadline = time.monotonic() + 30
    while ex.runs.steps(rid)["a"].state is not StepState.DONE and time.monotonic() < deadline:
        ex.step_once(rid)  # running work finishes while the run is paused
        time.sleep(0.05)
    assert ex.runs.steps(rid)["a"].state is StepState.DONE
    assert ex.runs.steps(rid)["b"].state is StepState.PAUSED
    assert lines(work / "markers" / "b") == []
    ex.resume(rid)
    ex.step_once(rid)
    ex.step_once(rid)
    ex.kill(rid)
    assert ex.runs.run(rid).state is RunState.CANCELLED
    assert {r.state for r in ex.runs.steps(rid).values()} <= {StepState.DONE, StepState.CANCELLED}
    with pytest.raises(IllegalTransition, match="cannot go from done to running"):
        ex.runs.transition(rid, "a", StepState.RUNNING)


def test_higher_priority_dispatches_first(tmp_path: Path) -> None:
    order = tmp_path / "order"
    steps = [
        {"id": f"s{p}", "work": 1, "priority": p, "command": f"echo s{p} >> {order}"}
        for p in (1, 5, 3, 9, 2)
    ]
    wf = Workflow.from_dict({"name": "prio", "steps": steps})
    runs = RunStore(Store.at(tmp_path / "db.sqlite"))
    ex = Executor(runs, {"a": LocalConnector("a", tmp_path / "a", slots=1)}, poll_interval=0.01)
    rid = ex.submit(wf, {f"s{p}": "a" for p in (1, 5, 3, 9, 2)})
    assert ex.run(rid, timeout=60) is RunState.DONE
    started = sorted(ex.runs.steps(rid).values(), key=lambda r: r.started_at or 0)
    assert [r.step_id for r in started] == ["s9", "s5", "s3", "s2", "s1"]
    assert order.read_text().split() == ["s9", "s5", "s3", "s2", "s1"]  # as they ran


def move_to_b(req: ReplanRequest) -> dict[str, str]:
    """A re-planner for the tests: every requested step to the one site not excluded."""
    assert "b" not in req.excluded
    return dict.fromkeys(req.steps, "b")


def test_site_failing_half_way_is_replanned_and_the_run_completes(work: Path) -> None:
    wf = shell_workflow(work / "markers", sleep=0.3)
    ex = make_executor(work, replanner=move_to_b)
    rid = ex.submit(wf, {"a": "b", "b": "a", "c": "a", "d": "a"})
    while ex.runs.steps(rid)["b"].state is not StepState.RUNNING:
        ex.step_once(rid)
        time.sleep(0.01)
    site_a = ex.connectors["a"]
    assert isinstance(site_a, LocalConnector)
    site_a.fail()
    moved = ex.site_down(rid, "a", "site a stopped answering")
    assert set(moved) == {"b", "c", "d"}
    assert ex.run(rid, timeout=60) is RunState.DONE
    assert {r.site for r in ex.runs.steps(rid).values()} == {"b"}
    replans = [d for _, _, k, d in ex.runs.events(rid) if k == "replan"]
    assert any("site a stopped answering" in d and "re-planned 3 step(s)" in d for d in replans)
    assert lines(work / "markers" / "d") == ["b"]


def test_a_step_that_finished_just_before_its_site_went_down_is_not_run_again(
    work: Path,
) -> None:
    """The task is over (its result is written) but no pass has read it yet when the site is
    declared down: the step is done where it ran, not re-planned and run a second time."""
    wf = shell_workflow(work / "markers")
    ex = make_executor(work, replanner=move_to_b)
    rid = ex.submit(wf, dict.fromkeys("abcd", "a"))
    while ex.runs.steps(rid)["a"].state is not StepState.RUNNING:
        ex.step_once(rid)
    handle = ex.runs.steps(rid)["a"].handle
    site_a = ex.connectors["a"]
    deadline = time.monotonic() + 60
    while site_a.status(handle).status is not TaskStatus.SUCCEEDED:
        assert time.monotonic() < deadline, "the task did not end"
        time.sleep(0.01)  # the task ends; the executor does not look
    moved = ex.site_down(rid, "a", "site a went down")
    assert "a" not in moved
    assert set(moved) == {"b", "c", "d"}
    assert ex.run(rid, timeout=60) is RunState.DONE
    assert ex.runs.steps(rid)["a"].site == "a"
    assert ex.runs.steps(rid)["a"].attempts == 1
    assert lines(work / "markers" / "a") == ["a"]  # once


def test_exhausted_attempts_at_one_site_moves_the_step(work: Path) -> None:
    only_on_b = 'test "$CONTINUUM_SITE" = b'
    wf = shell_workflow(work / "markers", fail_on={"c": only_on_b})
    ex = make_executor(work, replanner=move_to_b)
    rid = ex.submit(wf, dict.fromkeys("abcd", "a"), max_attempts=2, backoff_s=0.01)
    assert ex.run(rid, timeout=60) is RunState.DONE
    assert lines(work / "markers" / "c") == ["a", "a", "b"]
    assert ex.runs.steps(rid)["c"].failed_sites == ("a",)


def anywhere_but_excluded(req: ReplanRequest) -> dict[str, str]:
    """A re-planner for the tests: the first site not excluded, or none (a planning error)."""
    free = [s for s in ("a", "b") if s not in req.excluded]
    if not free:
        raise PlanningError("every site is excluded")
    return dict.fromkeys(req.steps, free[0])


def test_a_step_failing_on_every_site_fails_the_run_by_its_policy(work: Path) -> None:
    """Attempts exhausted at a, re-planned to b, exhausted there: no site is left, the
    step fails (it was sent back to the queue for the re-plan) and cancel-job applies."""
    wf = shell_workflow(work / "markers", fail_on={"c": "false"})
    ex = make_executor(work, replanner=anywhere_but_excluded)
    rid = ex.submit(wf, dict.fromkeys("abcd", "a"), max_attempts=2, backoff_s=0.01)
    assert ex.run(rid, timeout=60) is RunState.FAILED
    assert lines(work / "markers" / "c") == ["a", "a", "b", "b"]
    steps = ex.runs.steps(rid)
    assert steps["c"].state is StepState.CANCELLED
    assert steps["c"].failed_sites == ("a", "b")
    kinds = [k for _, s, k, _ in ex.runs.events(rid) if s == "c" and "->" in k]
    assert kinds[-2:] == ["ready->failed", "failed->cancelled"]
    assert not [d for _, _, k, d in ex.runs.events(rid) if k == "error"]


def test_wfcommons_instance_runs_end_to_end_with_the_synthetic_step(
    work: Path, examples_dir: Path
) -> None:
    wf = load_workflow(examples_dir / "workflows" / "helloworld-forkjoin-10-chameleon.json")
    ex = make_executor(work)
    order = wf.topological_order()
    assignment = {sid: ("a" if i % 2 else "b") for i, sid in enumerate(order)}
    rid = ex.submit(wf, assignment, launch=Launch(LaunchKind.SYNTHETIC, 1e-4, 1e-5))
    assert ex.run(rid, timeout=120) is RunState.DONE
    steps = ex.runs.steps(rid)
    for step in wf.steps:
        conn = ex.connectors[steps[step.id].site]
        for out in step.outputs:
            path = conn.output_path(steps[step.id].handle, out)
            assert path.stat().st_size == int(wf.item(out).size * 1e-5)


def test_dask_connector_runs_a_workflow_on_a_local_cluster(work: Path) -> None:
    from orchestrator.connectors.dask import DaskConnector

    wf = shell_workflow(work / "markers")
    runs = RunStore(Store.at(work / "state.db"))
    dask_site = DaskConnector("d", work / "d", n_workers=2)
    try:
        sites = {"d": dask_site, "a": LocalConnector("a", work / "a", slots=2)}
        ex = Executor(
            runs, sites, stager=CopyStager(work), inputs_dir=work / "inputs", poll_interval=0.02
        )
        rid = ex.submit(wf, {"a": "d", "b": "d", "c": "a", "d": "d"})
        assert ex.run(rid, timeout=120) is RunState.DONE
        assert lines(work / "markers" / "b") == ["d"]
        assert dask_site.telemetry()["workers"] == 2
    finally:
        dask_site.close()


def test_store_records_every_transition_before_acting(work: Path) -> None:
    wf = shell_workflow(work / "markers")
    ex = build(work / "state.db", work)
    rid = ex.submit(wf, dict.fromkeys("abcd", "a"))
    assert ex.run(rid, timeout=60) is RunState.DONE
    kinds = [k for _, s, k, _ in ex.runs.events(rid) if s == "a"]
    assert kinds == ["pending->ready", "ready->staging", "staging->running", "running->done"]
    spec = json.loads((Path(ex.runs.steps(rid)["a"].handle) / "spec.json").read_text())
    assert "CONTINUUM_OUT" in spec["env"]


def test_simulated_sites_run_steps_for_their_duration_on_the_executors_clock(
    tmp_path: Path,
) -> None:
    now = [0.0]

    def clock() -> float:
        return now[0]

    wf = Workflow.from_dict(
        {
            "name": "sim",
            "data": [{"id": "x", "size": 1e9}],
            "steps": [
                {"id": "a", "work": 20, "cores": 2, "outputs": ["x"]},
                {"id": "b", "work": 40, "cores": 1, "inputs": ["x"]},
            ],
        }
    )
    ex = Executor(
        RunStore(Store.at(tmp_path / "sim.db")),
        {"s": SimulatedConnector("s", cores=4, clock=clock)},
        clock=clock,
    )
    rid = ex.submit(
        wf, {"a": "s", "b": "s"}, launch=Launch(LaunchKind.SIMULATED, 1.0, 1.0, {"s": 1.0})
    )
    for t in (0.0, 9.0, 10.0, 49.0, 50.0):
        now[0] = t
        state = ex.step_once(rid)
        steps = ex.runs.steps(rid)
        if t < 10:
            assert steps["a"].state is StepState.RUNNING
        elif t < 50:
            assert steps["a"].state is StepState.DONE
            assert steps["b"].state is StepState.RUNNING
    assert state is RunState.DONE
    assert ex.runs.steps(rid)["b"].started_at == 10.0
    assert not (tmp_path / "inputs").exists()  # nothing materialised for a simulated site


@pytest.mark.parametrize("shell", ["/bin/sh", "bash"])
def test_many_runners_started_at_once_on_one_task_run_it_once(tmp_path: Path, shell: str) -> None:
    """The exclusive claim is the last guard of exactly-once: a task handed to the site again
    after a crash (its first runner still starting) must not run twice, however many runners
    race for it."""
    import shutil

    from orchestrator.connectors.local import RUNNER_SCRIPT

    exe = shutil.which(shell)
    if exe is None:
        pytest.skip(f"{shell} is not installed")
    task = tmp_path / "task"
    task.mkdir()
    (task / "task.sh").write_text('echo ran >> "$PWD/../marker"; sleep 0.2\n')
    racers = [
        subprocess.Popen([exe, RUNNER_SCRIPT, str(task)], stdin=subprocess.DEVNULL)
        for _ in range(12)
    ]
    for r in racers:
        assert r.wait(timeout=60) == 0
    assert (tmp_path / "marker").read_text() == "ran\n"


@pytest.mark.parametrize("shell", ["/bin/sh", "bash"])
def test_claim_runner_runs_a_task_once_under_any_shell(tmp_path: Path, shell: str) -> None:
    """runner.sh: the task runs once, in its folder, without the runner's arguments; its
    result is valid JSON, its times are the claim's and the result's; the runner exits with
    the task's status; a second runner on the same folder does nothing and exits 0 (bash and
    a plain POSIX sh alike)."""
    import shutil

    from orchestrator.connectors.local import RUNNER_SCRIPT, read_result

    exe = shutil.which(shell)
    if exe is None:
        pytest.skip(f"{shell} is not installed")
    task = tmp_path / "task"
    task.mkdir()
    (task / "task.sh").write_text(
        'echo ran >> "$PWD/../marker"; echo "out $# $PWD"; echo err >&2; sleep 0.05; exit 3\n'
    )
    env = {**os.environ, "LC_ALL": "C"}
    before = time.time()
    codes = [subprocess.run([exe, RUNNER_SCRIPT, str(task)], env=env).returncode for _ in "12"]
    assert codes == [3, 0]  # the task's status; nothing done by the second runner
    assert (tmp_path / "marker").read_text() == "ran\n"  # once
    assert json.loads((task / "result.json").read_text()) == {"exit_code": 3}
    assert json.loads((task / "claim").read_text())["pid"] > 0
    info = read_result(task)
    assert info is not None
    assert info.exit_code == 3
    assert info.started_at is not None
    assert info.ended_at is not None
    assert before - 0.02 <= info.started_at <= info.ended_at <= time.time() + 0.02
    assert info.ended_at - info.started_at >= 0.04  # the task's sleep lies between them
    assert (task / "stdout").read_text() == f"out 0 {task}\n"
    assert (task / "stderr").read_text() == "err\n"


def test_a_result_being_written_reads_as_no_result_yet(tmp_path: Path) -> None:
    """runner.sh writes result.json in place (no rename): a reader that catches it empty or
    cut short sees no result yet; a runner that died then leaves a lost attempt."""
    from orchestrator.connectors.local import LocalConnector, read_result

    task = tmp_path / "task"
    task.mkdir()
    (task / "spec.json").write_text("{}")
    for partial in ("", '{"exit_co', '{"exit_code": '):
        (task / "result.json").write_text(partial)
        assert read_result(task) is None
    # claimed by a runner that is gone (pid 2**22 + 1 is above Linux's pid_max default)
    (task / "claim").write_text('{"pid": 4194305}')
    info = LocalConnector("s", tmp_path / "site").status(str(task))
    assert info.status is TaskStatus.LOST
    (task / "result.json").write_text('{"exit_code": 0}\n')
    assert LocalConnector("s", tmp_path / "site").status(str(task)).status is TaskStatus.SUCCEEDED


def test_a_local_site_wakes_the_executor_when_a_task_ends(tmp_path: Path) -> None:
    """wakeup_fds: a running task's descriptor is not readable; once its runner has ended it
    is (the executor's sleep ends at once), handed out once only (no busy loop on a task
    nobody asks about), and closed when status has reported the end."""
    import select

    from orchestrator.connectors.base import TaskSpec

    site = LocalConnector("a", tmp_path / "a", slots=1)
    gate = tmp_path / "gate"
    spec = TaskSpec("r", "s", 1, f'while [ ! -e "{gate}" ]; do sleep 0.01; done')
    # (status is not asked until the end: the executor might not ask about every task)
    handle = site.submit(spec)
    fds = site.wakeup_fds()
    assert len(fds) == 1

    def readable(fd: int, timeout_ms: int) -> bool:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(timeout_ms))

    assert not readable(fds[0], 0)  # the task runs
    gate.touch()
    assert readable(fds[0], 60_000)  # its runner ended: a sleeping executor wakes
    after = site.wakeup_fds()
    assert len(after) == 1  # handed out once, readable
    assert readable(after[0], 0)
    assert site.wakeup_fds() == []  # not again: no busy loop
    assert site.status(handle).status is TaskStatus.SUCCEEDED
    site.close()


def test_a_task_cancelled_at_once_never_runs(tmp_path: Path) -> None:
    """A task cancelled right after its submission, its runner started or not, reads
    cancelled and leaves no side effect (its runner is killed before the task's work)."""
    from orchestrator.connectors.base import TaskSpec

    site = LocalConnector("a", tmp_path / "a", slots=4)
    marks = tmp_path / "marks"
    marks.mkdir()
    handles = []
    for i in range(40):
        spec = TaskSpec("r", f"s{i}", 1, f'sleep 0.3; touch "{marks}/{i}"')
        handle = site.submit(spec)
        site.cancel(handle)
        handles.append(handle)
    time.sleep(1.0)  # what a runner started despite the cancel would have written by now
    assert sorted(p.name for p in marks.iterdir()) == []
    assert {site.status(h).status for h in handles} == {TaskStatus.CANCELLED}
    assert site.telemetry()["running"] == 0.0
    site.close()
