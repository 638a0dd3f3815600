"""Workflow runs placed by the real planners and executed through the simulated batch queues."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from orchestrator import load_workflow
from simulations import FederationModel, JobTable

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
    assert m.execution is not None
    for run in runs:
        assert run.plan is not None, run.error
        assert run.plan.metrics.planner
        assert run.status == "done"
        assert run.finished_at is not None
        assert set(run.ends) == {s.id for s in wf.steps}
        fed = m.federation
        steps = m.execution.runs.steps(run.run_id)
        for parent, child in wf.edges:
            src, dst = steps[parent].site, steps[child].site
            moved = fed.transfer_time(src, dst, wf.edge_bytes(parent, child))
            # a child starts once its parent ended and the parent's outputs crossed the link
            assert run.starts[child] >= run.ends[parent] + moved - 1e-6
        # nothing failed, so the executor ran the plan's placement
        assert {sid: r.site for sid, r in steps.items()} == {
            sid: a.site for sid, a in run.plan.assignments.items()
        }
        assert run.sites_used == {run.plan.site_of(s.id) for s in wf.steps}
        res = run.result()
        assert res["makespan_s"] == pytest.approx(run.finished_at - run.submit_at)
        assert res["makespan_s"] > 0
    table = m.datacollector.get_table_dataframe("workflows")
    assert len(table) == 3
    assert (table["planner"] == planner).all()
    assert (table["status"] == "done").all()


def test_inputs_cross_the_links_through_the_executors_staging() -> None:
    """Steps placed on two sites by turns (a given assignment): each input made at the
    other site is staged by the executor and reaches the step's site before it starts."""
    wf = load_workflow(WORKFLOWS / "montage-chameleon-2mass-005d-001.json")
    order = wf.topological_order()
    pair = ("national-hpc", "gpu-centre")
    assignment = {sid: pair[i % 2] for i, sid in enumerate(order)}
    sc = _scenario("heft", horizon="6 h")
    sc["workload"]["workflows"][0].update({"count": 1, "assignment": assignment})
    m = FederationModel(sc, seed=5)
    m.run()
    run = m.workflow_runs[0]
    assert run.status == "done", run.error
    assert m.execution is not None
    fed = m.federation
    crossing = set()
    for parent, child in wf.edges:
        if assignment[parent] == assignment[child]:
            assert run.starts[child] >= run.ends[parent] - 1e-6
            continue
        moved = fed.transfer_time(assignment[parent], assignment[child], 0.0)
        for item in wf.step(child).inputs:
            if wf.producer(item) == parent:
                crossing.add((item, assignment[child]))
                moved = max(
                    moved,
                    fed.transfer_time(assignment[parent], assignment[child], wf.item(item).size),
                )
        assert run.starts[child] >= run.ends[parent] + moved - 1e-6
    res = run.result()
    assert res["transfers"] == len(crossing) > 0  # once per item and destination
    assert res["bytes_moved"] == pytest.approx(sum(wf.item(i).size for i, _ in crossing))
    staged = {s for _, s, _, d in m.execution.runs.events(run.run_id) if d.startswith("staging")}
    assert staged == {c for p, c in wf.edges if assignment[p] != assignment[c]}


def test_an_unplanned_workflow_is_reported_as_such_not_as_a_deadline_miss() -> None:
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
    summary = m.summary()
    assert (summary["workflows_unplanned"], summary["deadline_misses"]) == (1, 0)
    table = m.datacollector.get_table_dataframe("workflows")
    assert table["status"].tolist() == ["unplanned"]


def test_workflows_cut_short_by_the_horizon_are_unfinished_not_missed() -> None:
    # the third submission (at 7 h) cannot finish (in about 9 s) by the horizon, 4 s later
    sc = _scenario("heft", horizon=7 * 3600 + 4)
    m = FederationModel(sc, seed=5)
    m.run()
    statuses = [r.status for r in m.workflow_runs]
    assert statuses == ["done", "done", "unfinished"]
    summary = m.summary()
    assert summary["workflows_unfinished"] == 1
    assert summary["deadline_misses"] == sum(
        1 for r in m.workflow_runs if r.status == "done" and r.result()["deadline_missed"]
    )
    table = m.datacollector.get_table_dataframe("workflows")
    assert table["status"].tolist() == statuses  # every run has its row, the cut one too
    assert table["deadline_missed"].tolist()[-1] is None
    assert m.datacollector.get_model_vars_dataframe()["workflows_unfinished"].iloc[-1] == 1


def test_steps_queue_behind_the_sites_batch_jobs() -> None:
    """A workflow's steps are jobs of the site's own batch queue: with the only site full
    of a 2 h batch job, every step waits for it (the static view the plan used could not
    know)."""
    site = {
        "id": "only",
        "kind": "hpc",
        "cores": 8,
        "memory": "64 GB",
        "power_idle_w": 2,
        "power_busy_w": 8,
        "price_per_core_hour": 0.01,
        "jurisdiction": "EU",
        "buffer_capacity": "1 TB",
    }
    sc = _scenario("heft", horizon="10 h", twin=False, federation={"name": "one", "sites": [site]})
    sc["workload"]["workflows"][0].update({"count": 1, "submit_at": 60, "deadline": None})
    one = np.ones(1)
    filler = JobTable(np.zeros(1), 7200.0 * one, 7200.0 * one, (8 * one).astype(np.int64))
    m = FederationModel(sc, seed=5, jobs=filler)
    m.run()
    run = m.workflow_runs[0]
    assert run.status == "done"
    assert min(run.starts.values()) == pytest.approx(7200.0)
    assert run.result()["makespan_s"] > 7200.0 - 60


def test_the_twin_flags_a_site_down_and_its_steps_are_replanned() -> None:
    """An outage during a run (HEFT put every step on cloud-burst): the site's connector
    loses the running steps and refuses their retries (each is re-planned at once); at the
    next telemetry tick the twin calls the site down and the executor re-plans every step
    still waiting for it; once the site is back, the executor may use it again."""
    sc = _scenario(
        "heft",
        horizon="3 h",
        telemetry_interval=60,
        events=[{"at": 3603, "kind": "outage", "site": "cloud-burst", "duration": "1 h"}],
    )
    sc["workload"]["workflows"][0]["count"] = 1
    m = FederationModel(sc, seed=5)
    m.run()
    run = m.workflow_runs[0]
    assert m.execution is not None
    events = m.execution.runs.events(run.run_id)
    lost = [s for _, s, k, d in events if k == "running->failed" and "went down" in d]
    refused = [d for _, _, k, d in events if k == "replan" and "refused work" in d]
    flagged = [d for _, _, k, d in events if k == "replan" and "twin flagged" in d]
    assert lost
    assert len(refused) == len(lost)
    assert len(flagged) == 1
    assert "re-planned 46 step(s)" in flagged[0]  # the 58 steps, less 12 lost and moved
    assert run.status == "done"
    final = m.execution.runs.steps(run.run_id)
    assert {r.site for r in final.values()} == {"gpu-centre"}
    assert run.result()["makespan_s"] > run.result()["planned_makespan_s"]
    # an hour later the site is back: the twin no longer calls it down
    assert "cloud-burst" not in m.execution.executor.down_sites
    assert not m.execution.flagged
