"""One execution path: the same workflow and fault on real local sites and in the simulator.

Real: ``orchestrator.execution.mainjob.execute_locally`` (a process pool and a buffer
service per site, native commands, data staged through the buffers, the durable
executor). Simulated: ``FederationModel`` with the same federation, workflow,
placement and fault (the executor behind ``simulations.execution``). Both runs must go
through the same sequence of step states and take the same re-planning decisions.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from federation.model import Federation
from federation.store import Store
from orchestrator import HEFTPlanner, Workflow
from orchestrator.execution import Launch, RunState, RunStore
from orchestrator.execution.mainjob import Fault, execute_locally
from simulations import FederationModel

SITES = ("a", "b", "c")
FEDERATION: dict[str, Any] = {
    "name": "three",
    "sites": [
        {
            "id": s,
            "kind": "hpc",
            "cores": 4,
            "memory": "16 GB",
            "power_idle_w": 2,
            "power_busy_w": 8,
            "price_per_core_hour": 0.01,
            "jurisdiction": "EU",
            "buffer_capacity": "1 TB",
        }
        for s in SITES
    ],
    "links": [
        {"src": x, "dst": y, "bandwidth": "1 GB/s", "latency": "10 ms", "symmetric": True}
        for x, y in (("a", "b"), ("a", "c"), ("b", "c"))
    ],
}
SECONDS = 0.4
"""Each step's work (1 core at speed 1): its duration on both sides."""


def chain(n: int, broken: str | None = None) -> Workflow:
    """s1 -> s2 -> ... -> sn, each passing a 1 MB item on; at site ``broken`` every step fails."""
    steps = []
    for i in range(1, n + 1):
        fail = f'test "$CONTINUUM_SITE" != {broken} || exit 1; ' if broken else ""
        read = f'test -s "$CONTINUUM_IN/d{i - 1}" && ' if i > 1 else ""
        steps.append(
            {
                "id": f"s{i}",
                "work": SECONDS,
                "command": f"{fail}{read}sleep {SECONDS} && "
                f'head -c 1000 /dev/zero > "$CONTINUUM_OUT/d{i}"',
                "inputs": [f"d{i - 1}"] if i > 1 else [],
                "outputs": [f"d{i}"],
                "after": [f"s{i - 1}"] if i > 1 else [],
            }
        )
    data = [{"id": f"d{i}", "size": 1e6} for i in range(1, n + 1)]
    return Workflow.from_dict({"name": "chain", "steps": steps, "data": data})


def story(runs: RunStore, rid: str) -> tuple[dict[str, list[str]], list[str]]:
    """Per step, its changes in order (state moves, with re-plans as ``moved to X``); and
    the re-planning decisions (``step -> site``, in order)."""
    per_step: dict[str, list[str]] = {}
    decisions: list[str] = []
    for _, step, kind, detail in runs.events(rid):
        if kind == "replan":
            moves = re.search(r"in \d+ ms: (.*)$", detail)
            decisions.append(f"{detail.split(':', 1)[0]}: {moves.group(1) if moves else ''}")
        elif step and "->" in kind:
            # a failure's exit code counts, not what the task printed (the simulator's tasks
            # say they are simulated)
            said = re.sub(r"\(exit (\d+)\).*", r"(exit \1)", detail)
            per_step.setdefault(step, []).append(f"{kind} ({said})")
        elif step and kind == "update" and detail.startswith("re-planned to"):
            per_step.setdefault(step, []).append(f"moved to {detail.rsplit(' ', 1)[1]}")
    return per_step, decisions


def real_run(
    tmp: Path, wf: Workflow, assignment: dict[str, str], fault: Fault | None
) -> tuple[RunState, RunStore, str]:
    fed = Federation.from_dict(FEDERATION)
    result = execute_locally(
        wf,
        fed,
        assignment,
        tmp / "real",
        replanner_planner=HEFTPlanner(),
        launch=Launch.native(),
        fault=fault,
        timeout=120,
    )
    return result.state, RunStore(Store.at(tmp / "real" / "state.db")), result.run_id


def simulated_run(
    tmp: Path,
    wf: Workflow,
    assignment: dict[str, str],
    outage: tuple[str, float] | None = None,
    broken: str | None = None,
) -> tuple[FederationModel, str]:
    path = tmp / "workflow.json"
    path.write_text(json.dumps(wf.to_dict()), encoding="utf-8")
    sc: dict[str, Any] = {
        "name": "same-run",
        "federation": FEDERATION,
        "horizon": 3600,
        "queue": "fcfs",
        "twin": False,
        "workload": {
            "workflows": [
                {"path": str(path), "assignment": assignment, "backoff": 0.2, "max_attempts": 3}
            ]
        },
    }
    if outage is not None:
        site, at = outage
        sc["events"] = [{"at": at, "kind": "outage", "site": site, "duration": 600}]
    if broken is not None:
        sc["task_failures"] = {"probability": 1.0, "sites": [broken]}
    model = FederationModel(sc, seed=1)
    model.run()
    run = model.workflow_runs[0]
    assert run.run_id is not None, run.error
    return model, run.run_id


def test_a_site_going_down_half_way_is_handled_alike(tmp_path: Path) -> None:
    wf = chain(4)
    assignment = {"s1": "a", "s2": "a", "s3": "b", "s4": "b"}
    state, real_runs, real_id = real_run(tmp_path, wf, assignment, Fault(after=0.5, site="b"))
    assert state is RunState.DONE
    # In the simulator b goes down just after s2 ended (2 of 4 steps done): the instant
    # the real run's fault fires (s3 was just handed to b, its input on the way).
    model, sim_id = simulated_run(tmp_path, wf, assignment, outage=("b", 2 * SECONDS + 1e-3))
    assert model.execution is not None
    sim_runs = model.execution.runs
    assert sim_runs.run(sim_id).state is RunState.DONE
    real_story, real_decisions = story(real_runs, real_id)
    sim_story, sim_decisions = story(sim_runs, sim_id)
    assert sim_story == real_story
    assert sim_decisions == real_decisions
    # the fault mattered: b's unfinished steps were moved, s3 lost its first attempt there
    assert real_decisions == ["the executor flagged site down: s3 -> a, s4 -> a"]
    assert "running->ready (the executor flagged site down)" in real_story["s3"]
    assert "ready->staging (staging at b)" in real_story["s3"]  # its input crossed a -> b
    res = model.workflow_runs[0].result()
    assert (res["status"], res["replans"], res["steps_moved"]) == ("done", 1, 2)
    assert res["makespan_s"] == pytest.approx(4 * SECONDS + 1e-3)


def test_a_broken_site_exhausts_the_attempts_then_the_step_moves_alike(tmp_path: Path) -> None:
    wf = chain(3, broken="c")
    assignment = {"s1": "a", "s2": "c", "s3": "a"}
    state, real_runs, real_id = real_run(tmp_path, wf, assignment, None)
    assert state is RunState.DONE
    model, sim_id = simulated_run(tmp_path, wf, assignment, broken="c")
    assert model.execution is not None
    sim_runs = model.execution.runs
    assert sim_runs.run(sim_id).state is RunState.DONE
    real_story, real_decisions = story(real_runs, real_id)
    sim_story, sim_decisions = story(sim_runs, sim_id)
    assert sim_story == real_story
    assert sim_decisions == real_decisions
    # three failed attempts at c, then a re-plan away from it
    assert sum(k.startswith("running->failed") for k in real_story["s2"]) == 3
    assert len(real_decisions) == 1
    assert "s2 -> c" not in real_decisions[0]
    res = model.workflow_runs[0].result()
    assert (res["status"], res["attempts"], res["replans"]) == ("done", 6, 1)


@pytest.mark.parametrize("policy", ["cancel-job", "pause-job"])
def test_on_error_applies_in_the_simulator(tmp_path: Path, policy: str) -> None:
    """Every site broken: nowhere to re-plan; the run's ``on_error`` decides what remains."""
    wf = chain(2)
    path = tmp_path / "workflow.json"
    path.write_text(json.dumps(wf.to_dict()), encoding="utf-8")
    sc: dict[str, Any] = {
        "name": "broken",
        "federation": FEDERATION,
        "horizon": 3600,
        "twin": False,
        "task_failures": {"probability": 1.0},
        "workload": {"workflows": [{"path": str(path), "on_error": policy, "deadline": 60}]},
    }
    model = FederationModel(sc, seed=1)
    model.run()
    res = model.workflow_runs[0].result()
    summary = model.summary()
    if policy == "cancel-job":
        assert (res["status"], res["outcome"]) == ("failed", "failed")
        assert summary["workflows_failed"] == 1
    else:
        # paused, waiting for someone to resume it: unfinished, not a deadline miss
        assert (res["status"], res["outcome"]) == ("unfinished", "unfinished")
        assert summary["workflows_unfinished"] == 1
    assert res["deadline_missed"] is None
    assert summary["deadline_misses"] == 0
    # 3 attempts on each of the three sites (two re-plans), then the policy
    assert res["attempts"] == 9
    assert res["replans"] == 2
