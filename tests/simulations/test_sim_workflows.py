"""Workflow runs placed by the real planners and executed through the simulated batch queues."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from orchestrator import load_workflow
from simulations import FederationModel

WORKFLOWS = Path(__file__).resolve().parents[2] / "examples" / "workflows"


def _scenario(planner: str, **changes: Any) -> dict[str, Any]:
    sc: dict[str, Any] = {
        "name": "wf",
        "federation": "demo",
        "horizon": "12 h",
        "workload": {
            "synthetic": {"jobs": 300, "arrival_rate_per_h": 30, "max_cores": 64},
            "workflows": [
                {
                    "path": str(WORKFLOWS / "montage-chameleon-2mass-005d-001.json"),
                    "submit_at": "1 h",
                    "every": "3 h",
                    "count": 3,
                    "deadline": "2 h",
                }
            ],
        },
        "planners": [planner],
        "twin": True,
    }
    sc.update(changes)
    return sc


@pytest.mark.parametrize("planner", ["heft", "greedy"])
def test_workflows_are_planned_and_run_in_dependency_order(planner: str) -> None:
    m = FederationModel(_scenario(planner), seed=5)
    m.run()
    runs = m.workflow_runs
    assert len(runs) == 3
    wf = load_workflow(WORKFLOWS / "montage-chameleon-2mass-005d-001.json")
    for run in runs:
        assert run.plan is not None, run.error
        assert run.plan.metrics.planner
        assert run.finished_at is not None
        assert set(run.ends) == {s.id for s in wf.steps}
        fed = m.federation
        for parent, child in wf.edges:
            src, dst = run.plan.site_of(parent), run.plan.site_of(child)
            moved = fed.transfer_time(src, dst, wf.edge_bytes(parent, child))
            # a child starts once its parent ended and the parent's outputs crossed the link
            assert run.starts[child] >= run.ends[parent] + moved - 1e-6
        for sid, a in run.plan.assignments.items():
            # never before the plan's own start (a planner may time-shift a step)
            assert run.starts[sid] >= run.submit_at + a.start - 1e-6
        # the plan's sites were the ones used
        assert run.sites_used == {run.plan.site_of(s.id) for s in wf.steps}
        res = run.result()
        assert res["makespan_s"] == pytest.approx(run.finished_at - run.submit_at)
        assert res["makespan_s"] > 0
    table = m.datacollector.get_table_dataframe("workflows")
    assert len(table) == 3
    assert (table["planner"] == planner).all()


def test_planning_failure_counts_as_a_deadline_miss() -> None:
    # every site is down when the workflow arrives: the planner finds no eligible site
    events = [
        {"at": 0, "kind": "outage", "site": s, "duration": "6 h"}
        for s in ("ddf-fatnode", "national-hpc", "gpu-centre", "cloud-burst", "edge-station")
    ]
    sc = _scenario("heft", events=events, horizon="4 h")
    sc["workload"]["workflows"][0]["count"] = 1
    m = FederationModel(sc, seed=1)
    m.run()
    run = m.workflow_runs[0]
    assert run.plan is None
    assert "InfeasiblePlan" in run.error
    assert m.summary()["deadline_misses"] == 1
