"""Simulated sites under the executor: transfers timed on the links, retries woken on time,
a site that fails and comes back."""

from __future__ import annotations

from pathlib import Path

import pytest

from federation.store import Store
from orchestrator import Workflow
from orchestrator.connectors import SimulatedConnector, SimulatedTransfers
from orchestrator.connectors.base import ConnectorError, TaskSpec, TaskStatus
from orchestrator.execution import (
    Executor,
    ItemStager,
    ReplanRequest,
    RunState,
    RunStore,
    StepState,
)
from orchestrator.execution.launch import Launch, LaunchKind


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def delay(src: str, dst: str, nbytes: float) -> float:
    """A link of 1 MB/s and 1 s of latency between any two sites."""
    return 0.0 if src == dst else 1.0 + nbytes / 1e6


def two_steps() -> Workflow:
    return Workflow.from_dict(
        {
            "name": "pair",
            "steps": [
                {"id": "p", "work": 10, "outputs": ["x"]},
                {"id": "c", "work": 10, "inputs": ["x"], "after": ["p"]},
            ],
            "data": [{"id": "x", "size": 4e6}],
        }
    )


SIM = Launch(LaunchKind.SIMULATED, speeds={"a": 1.0, "b": 1.0})


def sites(clock: Clock, transfers: SimulatedTransfers | None) -> dict[str, SimulatedConnector]:
    return {s: SimulatedConnector(s, 4, clock, transfers=transfers) for s in ("a", "b")}


def test_an_input_made_elsewhere_is_staged_and_the_step_waits_for_it(tmp_path: Path) -> None:
    clock = Clock()
    transfers = SimulatedTransfers(delay, clock)
    assert isinstance(transfers, ItemStager)
    ex = Executor(
        RunStore(Store.at(tmp_path / "s.db")),
        sites(clock, transfers),
        stager=transfers,
        clock=clock,
    )
    rid = ex.submit(two_steps(), {"p": "a", "c": "b"}, launch=SIM)
    ex.step_once(rid)
    clock.now = 10.0  # p ends; c is staged (x: 1 s + 4 MB at 1 MB/s = 5 s) and handed to b
    ex.step_once(rid)
    steps = ex.runs.steps(rid)
    assert steps["c"].state is StepState.RUNNING
    kinds = [(k, d) for _, s, k, d in ex.runs.events(rid) if s == "c"]
    assert ("ready->staging", "staging at b") in kinds
    assert transfers.moves == [(rid, "x", "a", "b", 4e6, 10.0, 15.0)]
    task = ex.connectors["b"].status(steps["c"].handle)
    assert task.status is TaskStatus.QUEUED  # its input is on the way
    clock.now = 15.0
    ex.step_once(rid)
    assert ex.connectors["b"].status(steps["c"].handle).started_at == 15.0
    clock.now = 25.0
    assert ex.step_once(rid) is RunState.DONE
    assert transfers.by_run[rid] == (1, 4e6)


def test_without_an_item_stager_a_simulated_step_starts_at_once(tmp_path: Path) -> None:
    clock = Clock()
    ex = Executor(RunStore(Store.at(tmp_path / "s.db")), sites(clock, None), clock=clock)
    rid = ex.submit(two_steps(), {"p": "a", "c": "b"}, launch=SIM)
    ex.step_once(rid)
    clock.now = 10.0
    ex.step_once(rid)
    c = ex.runs.steps(rid)["c"]
    assert ex.connectors["b"].status(c.handle).started_at == 10.0
    assert not any(d.startswith("staging") for *_, d in ex.runs.events(rid))


def test_staging_an_item_twice_to_one_site_moves_it_once() -> None:
    clock = Clock()
    transfers = SimulatedTransfers(delay, clock)
    transfers.stage_item("r", "c1", "x", 1e6, "a", "b")
    clock.now = 5.0
    transfers.stage_item("r", "c2", "x", 1e6, "a", "b")  # already there since t = 2 s
    assert transfers.bytes_moved == 1e6
    assert transfers.ready_at("r", "c2", "b") == 2.0
    assert transfers.ready_at("r", "c3", "b") == float("-inf")


def test_next_due_says_when_a_retry_may_start(tmp_path: Path) -> None:
    clock = Clock()
    conn = SimulatedConnector("a", 1, clock)
    ex = Executor(RunStore(Store.at(tmp_path / "s.db")), {"a": conn}, clock=clock)
    wf = Workflow.from_dict({"name": "one", "steps": [{"id": "s", "work": 5}]})
    rid = ex.submit(wf, {"s": "a"}, launch=Launch(LaunchKind.SIMULATED), backoff_s=30.0)
    ex.step_once(rid)
    assert ex.next_due([rid]) is None
    conn.fail()  # the attempt is lost: a retry in 30 s
    conn.repair()
    clock.now = 1.0
    ex.step_once(rid)
    assert ex.runs.steps(rid)["s"].state is StepState.READY
    assert ex.next_due([rid]) == 31.0
    clock.now = 31.0
    ex.step_once(rid)
    assert ex.runs.steps(rid)["s"].attempts == 2
    assert ex.next_due([rid]) is None


def test_a_site_back_up_is_handed_work_again(tmp_path: Path) -> None:
    clock = Clock()
    conns = sites(clock, None)
    asked: list[ReplanRequest] = []

    def nowhere(req: ReplanRequest) -> dict[str, str]:
        asked.append(req)
        return {}

    ex = Executor(RunStore(Store.at(tmp_path / "s.db")), conns, replanner=nowhere, clock=clock)
    rid = ex.submit(two_steps(), {"p": "a", "c": "a"}, launch=SIM)
    conns["a"].fail()
    ex.step_once(rid)  # a refuses p: down, nothing else to go to
    assert "a" in ex.down_sites
    assert asked[-1].excluded == frozenset({"a"})
    conns["a"].repair()
    clock.now = 1.0
    ex.step_once(rid)
    assert ex.runs.steps(rid)["p"].state is StepState.READY  # not handed to a down site
    ex.site_up("a")
    ex.step_once(rid)
    assert ex.runs.steps(rid)["p"].state is StepState.RUNNING
    clock.now = 20.0
    ex.step_once(rid)
    clock.now = 30.0
    assert ex.step_once(rid) is RunState.DONE


def test_a_failed_site_loses_its_tasks_and_refuses_new_ones() -> None:
    clock = Clock()
    conn = SimulatedConnector("a", 2, clock)
    run = conn.submit(TaskSpec("r", "x", 1, "true", cores=2, duration_hint=10))
    wait = conn.submit(TaskSpec("r", "y", 1, "true", cores=1, duration_hint=10))
    assert [t.status for t in conn.active()] == [TaskStatus.RUNNING, TaskStatus.QUEUED]
    lost = conn.fail()
    assert [t.step_id for t in lost] == ["x", "y"]
    assert conn.status(run).status is TaskStatus.LOST
    assert conn.status(wait).status is TaskStatus.LOST
    assert not conn.healthy()
    with pytest.raises(ConnectorError, match="site a is down"):
        conn.submit(TaskSpec("r", "z", 1, "true"))
    conn.repair()
    z = conn.submit(TaskSpec("r", "z", 1, "true", duration_hint=1))
    clock.now = 1.0
    assert conn.status(z).status is TaskStatus.SUCCEEDED
