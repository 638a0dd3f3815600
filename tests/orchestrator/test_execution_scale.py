"""The executor at scale: a pass costs what changed, not the size of the run.

Counters (``Executor.stats``), never timings: a pass with nothing new reads no
step, a pass reads back only the steps that changed, the connector is handed
only what it can start soon, changes made by another process (the CLI, the
API) are seen by a running executor, and priorities decide which waiting step
a full site starts next.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from federation.store import Store
from orchestrator import Workflow
from orchestrator.connectors import LocalConnector, SimulatedConnector
from orchestrator.connectors import local as local_module
from orchestrator.connectors.base import SiteConnector, TaskSpec, TaskStatus
from orchestrator.execution import (
    Executor,
    ReplanRequest,
    RunState,
    RunStore,
    StepState,
)
from orchestrator.execution.launch import Launch, LaunchKind


def tree(n: int, fanout: int = 10) -> Workflow:
    steps = [{"id": "s0", "work": 1, "command": "true"}]
    steps += [
        {"id": f"s{i}", "work": 1, "command": "true", "after": [f"s{(i - 1) // fanout}"]}
        for i in range(1, n)
    ]
    return Workflow.from_dict({"name": "tree", "steps": steps})


SIM = Launch(LaunchKind.SIMULATED, time_scale=10.0, speeds={"s": 1.0})
"""Every step (1 core-second of work, 1 core) lasts 10 s on the simulated site's clock."""


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def simulated(tmp_path: Path, cores: int = 10**6, **kw: object) -> tuple[Executor, Clock]:
    clock = Clock()
    ex = Executor(
        RunStore(Store.at(tmp_path / "sim.db")),
        {"s": SimulatedConnector("s", cores=cores, clock=clock)},
        clock=clock,
        **kw,  # type: ignore[arg-type]
    )
    return ex, clock


def run_to_the_end(ex: Executor, clock: Clock, rid: str, first_tick: int) -> RunState:
    """Passes 10 simulated seconds apart until the run leaves ``running`` (200 ticks at most)."""
    state = RunState.RUNNING
    for t in range(first_tick, 200):
        clock.now = 10.0 * t
        state = ex.step_once(rid)
        if state is not RunState.RUNNING:
            break
    return state


def test_a_pass_over_a_large_run_reads_only_what_changed(tmp_path: Path) -> None:
    n = 3000
    ex, clock = simulated(tmp_path)
    rid = ex.submit(tree(n), {f"s{i}": "s" for i in range(n)}, launch=SIM)
    assert ex.step_once(rid) is RunState.RUNNING  # first sight: one full load, s0 starts
    assert (ex.stats.full_loads, ex.stats.steps_read) == (1, n)
    # Nothing finished: the next passes read no step and poll none (the simulated site
    # says its one task is still running: ``SiteConnector.settled``).
    before = ex.stats.steps_read, ex.stats.polls
    for _ in range(5):
        ex.step_once(rid)
    assert ex.stats.steps_read == before[0]  # its own writes are not read back
    assert ex.stats.polls - before[1] == 0
    quiet = ex.stats.steps_read
    ex.step_once(rid)
    assert ex.stats.steps_read == quiet
    # s0 finishes: its 10 children start; what is read back is those steps, not the run.
    clock.now = 10.0
    ex.step_once(rid)
    ex.step_once(rid)
    assert ex.stats.full_loads == 1
    assert ex.stats.steps_read == quiet
    steps = ex.runs.steps(rid)
    assert steps["s0"].state is StepState.DONE
    assert sum(r.state is StepState.RUNNING for r in steps.values()) == 10
    # and the run completes, with a single full load all along
    for t in range(2, 8):
        clock.now = 10.0 * t
        state = ex.step_once(rid)
    assert state is RunState.DONE
    assert ex.stats.full_loads == 1
    assert ex.stats.steps_read < 4 * n


def test_a_site_that_knows_nothing_ended_is_not_polled(tmp_path: Path) -> None:
    """A connector's ``settled`` names the tasks that may have ended: only those are asked
    for their status; by default every handed task is asked at every pass."""
    ex, clock = simulated(tmp_path, cores=4)
    rid = ex.submit(tree(50), {f"s{i}": "s" for i in range(50)}, launch=SIM)
    ex.step_once(rid)
    clock.now = 10.0
    ex.step_once(rid)  # s0 done; 10 children handed, 4 run
    polls = ex.stats.polls
    ex.step_once(rid)
    assert ex.stats.polls == polls  # none of them ended
    clock.now = 20.0
    ex.step_once(rid)
    assert ex.stats.polls - polls == 4  # the four that ran for 10 s
    # the default asks them all
    conn = ex.connectors["s"]
    assert list(SiteConnector.settled(conn, ["a", "b"])) == ["a", "b"]


def test_the_safety_net_reloads_everything_when_due(tmp_path: Path) -> None:
    ex, _ = simulated(tmp_path, resync_s=0.0)
    rid = ex.submit(tree(50), {f"s{i}": "s" for i in range(50)}, launch=SIM)
    for _ in range(3):
        ex.step_once(rid)
    assert ex.stats.full_loads == 3


def test_an_external_pause_and_resume_are_seen_by_a_running_executor(tmp_path: Path) -> None:
    n = 200
    ex, clock = simulated(tmp_path, cores=4)
    rid = ex.submit(tree(n, fanout=50), {f"s{i}": "s" for i in range(n)}, launch=SIM)
    ex.step_once(rid)
    clock.now = 10.0
    ex.step_once(rid)  # s0 done, its 50 children handed to the site (4 run at a time)
    loads = ex.stats.full_loads
    # Another process (the CLI) pauses the run through the same store.
    Executor(RunStore(Store.at(tmp_path / "sim.db")), ex.connectors).pause(rid)
    assert ex.step_once(rid) is RunState.PAUSED
    assert ex.stats.full_loads == loads  # seen through the events, not a full reload
    steps = ex.runs.steps(rid)
    handed = {s for s, r in steps.items() if r.state in (StepState.RUNNING, StepState.DONE)}
    assert len(handed) == 51
    assert sum(r.state is StepState.PAUSED for r in steps.values()) == n - 51
    for t in (20.0, 30.0, 40.0):
        clock.now = t
        ex.step_once(rid)  # handed steps finish while paused; nothing new starts
    steps = ex.runs.steps(rid)
    assert {s for s, r in steps.items() if r.state is StepState.DONE} >= {"s0", "s1", "s2"}
    assert {s for s, r in steps.items() if r.state is not StepState.PAUSED} == handed
    Executor(RunStore(Store.at(tmp_path / "sim.db")), ex.connectors).resume(rid)
    assert ex.step_once(rid) is RunState.RUNNING
    assert any(
        r.state is StepState.RUNNING and s not in handed for s, r in ex.runs.steps(rid).items()
    )
    assert run_to_the_end(ex, clock, rid, first_tick=5) is RunState.DONE
    assert ex.stats.full_loads == loads


def test_an_external_change_of_a_step_and_a_kill_are_seen(tmp_path: Path) -> None:
    ex, clock = simulated(tmp_path, cores=1)
    steps = [{"id": "x0", "work": 1}]
    steps += [{"id": f"y{i}", "work": 1, "after": ["x0"]} for i in range(1, 6)]
    wf = Workflow.from_dict({"name": "fork", "steps": steps})
    rid = ex.submit(wf, {s.id: "s" for s in wf.steps}, launch=SIM)
    ex.step_once(rid)
    read = ex.stats.steps_read
    # Another process raises the priority of a waiting step: an ``update`` event.
    RunStore(Store.at(tmp_path / "sim.db")).update_step(rid, "y5", priority=9)
    ex.step_once(rid)
    assert ex.stats.steps_read - read == 1  # y5; x0's start, written here, is not read back
    clock.now = 10.0
    ex.step_once(rid)  # x0 done; the y's are handed in priority order, y5 first
    clock.now = 20.0
    ex.step_once(rid)
    done = ex.runs.steps(rid)
    assert done["y5"].state is StepState.DONE
    assert done["y5"].ended_at == 20.0
    assert done["y1"].state is StepState.RUNNING
    Executor(RunStore(Store.at(tmp_path / "sim.db")), ex.connectors).kill(rid)
    assert ex.step_once(rid) is RunState.CANCELLED
    assert {r.state for r in ex.runs.steps(rid).values()} <= {
        StepState.DONE,
        StepState.CANCELLED,
    }


def test_a_full_site_starts_the_highest_priority_waiting_step_next(tmp_path: Path) -> None:
    order = tmp_path / "order"

    def step(sid: str, priority: int, after: list[str] | None = None) -> dict[str, object]:
        return {
            "id": sid,
            "work": 1,
            "priority": priority,
            "after": after or [],
            "command": f"sleep 0.2; echo {sid} >> {order}",
        }

    # g runs first (priority 5); the low ones wait; hi becomes ready only when g is
    # done, and still starts before them: the site was handed nothing it could not start.
    wf = Workflow.from_dict(
        {
            "name": "prio",
            "steps": [
                step("lo1", 1),
                step("lo2", 1),
                step("lo3", 1),
                step("g", 5),
                step("hi", 9, ["g"]),
            ],
        }
    )
    site = LocalConnector("a", tmp_path / "a", slots=1, lookahead=0)
    ex = Executor(RunStore(Store.at(tmp_path / "db.sqlite")), {"a": site}, poll_interval=0.01)
    rid = ex.submit(wf, dict.fromkeys(["lo1", "lo2", "lo3", "g", "hi"], "a"))
    assert ex.run(rid, timeout=60) is RunState.DONE
    assert order.read_text().split() == ["g", "hi", "lo1", "lo2", "lo3"]


def test_the_local_site_is_handed_only_what_it_can_start_soon(tmp_path: Path) -> None:
    n = 40
    wf = Workflow.from_dict(
        {"name": "flat", "steps": [{"id": f"x{i}", "work": 1, "command": "true"} for i in range(n)]}
    )
    site = LocalConnector("a", tmp_path / "a", slots=2, lookahead=1)
    ex = Executor(RunStore(Store.at(tmp_path / "db.sqlite")), {"a": site}, poll_interval=0.0)
    rid = ex.submit(wf, {f"x{i}": "a" for i in range(n)})
    state = RunState.RUNNING
    most = 0
    for _ in range(100_000):
        state = ex.step_once(rid)
        held = site.telemetry()
        assert held["running"] + held["queued"] <= 3  # 2 slots + 1 ahead
        # recorded running: what the site held when the pass collected results (recorded
        # until the next pass, also when it ends right after), plus as many new steps as the
        # site had room for when the pass dispatched (all 3, if those 3 ended in between)
        handed = sum(r.state is StepState.RUNNING for r in ex.runs.steps(rid).values())
        most = max(most, handed)
        if state is not RunState.RUNNING:
            break
    assert state is RunState.DONE
    assert most <= 2 * 3
    assert ex.stats.submits == n


def move_to_b(req: ReplanRequest) -> dict[str, str]:
    return dict.fromkeys(req.steps, "b")


def test_steps_waiting_for_a_site_that_refuses_work_are_replanned(tmp_path: Path) -> None:
    wf = Workflow.from_dict(
        {"name": "flat", "steps": [{"id": f"x{i}", "work": 1, "command": "true"} for i in range(8)]}
    )
    sites = {s: LocalConnector(s, tmp_path / s, slots=1, lookahead=0) for s in "ab"}
    ex = Executor(
        RunStore(Store.at(tmp_path / "db.sqlite")),
        sites,
        replanner=move_to_b,
        poll_interval=0.01,
    )
    rid = ex.submit(wf, {f"x{i}": "a" for i in range(8)})
    ex.step_once(rid)
    sites["a"].fail()  # x0 is lost; the others never reached the site
    assert ex.run(rid, timeout=60) is RunState.DONE
    steps = ex.runs.steps(rid)
    assert {steps[f"x{i}"].site for i in range(1, 8)} == {"b"}
    assert any(k == "replan" and "refused work" in d for _, _, k, d in ex.runs.events(rid))


def test_local_status_of_a_queued_task_reads_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = LocalConnector("a", tmp_path / "a", slots=1)
    first = site.submit(TaskSpec("r", "one", 1, "sleep 2"))
    queued = site.submit(TaskSpec("r", "two", 1, "true"))

    def no_files(_: Path) -> None:
        raise AssertionError("status read a file for a task it holds")

    monkeypatch.setattr(local_module, "read_result", no_files)
    assert site.status(queued).status is TaskStatus.QUEUED
    assert site.status(first).status is TaskStatus.RUNNING
    monkeypatch.undo()
    site.cancel(first)
    site.cancel(queued)
    assert site.status(queued).status is TaskStatus.CANCELLED


def test_a_task_cancelled_by_another_process_while_queued_never_starts(tmp_path: Path) -> None:
    site = LocalConnector("a", tmp_path / "a", slots=1)
    first = site.submit(TaskSpec("r", "one", 1, "sleep 0.3"))
    marker = tmp_path / "ran"
    queued = site.submit(TaskSpec("r", "two", 1, f"touch {marker}"))
    # the CLI's own connector over the same directory cancels the queued task
    LocalConnector("a", tmp_path / "a", slots=1).cancel(queued)
    site.cancel(first)
    for _ in range(50):
        site.status(queued)
    site.close()
    assert site.status(queued).status is TaskStatus.CANCELLED
    assert not marker.exists()


def test_on_postgresql_a_run_is_followed_through_its_events_too(postgres_url: str) -> None:
    from federation.store import Base

    store = Store(postgres_url)
    try:
        clock = Clock()
        ex = Executor(
            RunStore(store),
            {"s": SimulatedConnector("s", cores=4, clock=clock)},
            clock=clock,
        )
        n = 120
        rid = ex.submit(tree(n), {f"s{i}": "s" for i in range(n)}, launch=SIM)
        ex.step_once(rid)
        quiet = ex.stats.steps_read
        for _ in range(3):
            ex.step_once(rid)  # the look-back over recent ids re-reads no step
        assert ex.stats.steps_read - quiet <= 1
        RunStore(Store(postgres_url)).set_run_state(rid, RunState.PAUSED, "paused elsewhere")
        assert ex.step_once(rid) is RunState.PAUSED
        RunStore(Store(postgres_url)).set_run_state(rid, RunState.RUNNING, "resumed")
        assert run_to_the_end(ex, clock, rid, first_tick=1) is RunState.DONE
        assert ex.stats.full_loads == 1
    finally:
        Base.metadata.drop_all(store.engine)
        store.close()


def test_runs_sharing_a_full_site_start_the_most_urgent_step_of_any(tmp_path: Path) -> None:
    """One pass over two runs: the later run's higher-priority steps go first; on equal
    priority the run listed first does."""
    order = tmp_path / "order"

    def flat(name: str, priority: int) -> Workflow:
        return Workflow.from_dict(
            {
                "name": name,
                "steps": [
                    {
                        "id": f"{name}{i}",
                        "work": 1,
                        "priority": priority,
                        "command": f"sleep 0.1; echo {name}{i} >> {order}",
                    }
                    for i in range(2)
                ],
            }
        )

    site = LocalConnector("a", tmp_path / "a", slots=1, lookahead=0)
    ex = Executor(RunStore(Store.at(tmp_path / "db.sqlite")), {"a": site}, poll_interval=0.01)
    low = ex.submit(flat("low", 1), {"low0": "a", "low1": "a"})
    high = ex.submit(flat("high", 5), {"high0": "a", "high1": "a"})
    same = ex.submit(flat("same", 1), {"same0": "a", "same1": "a"})
    states: dict[str, RunState] = {}
    for _ in range(2_000):
        states = ex.step_all([low, high, same])
        if all(st is not RunState.RUNNING for st in states.values()):
            break
        time.sleep(0.01)
    assert set(states.values()) == {RunState.DONE}
    assert order.read_text().split() == ["high0", "high1", "low0", "low1", "same0", "same1"]
