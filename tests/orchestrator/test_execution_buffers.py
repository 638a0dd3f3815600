"""Data through real buffer services on loopback; re-planning with the real planners."""

from __future__ import annotations

import time
from pathlib import Path

from federation.model import Federation
from federation.store import Store
from orchestrator import HEFTPlanner
from orchestrator.connectors import LocalConnector
from orchestrator.execution import (
    CopyStager,
    Executor,
    ReplanRequest,
    RunState,
    RunStore,
    StepState,
)
from orchestrator.execution.buffers import BufferStager, LocalBufferServices
from orchestrator.execution.replan import PlannerReplanner, sub_workflow
from tests.orchestrator.test_execution import lines, shell_workflow


def test_data_moves_through_buffer_services_with_checksums(tmp_path: Path) -> None:
    (tmp_path / "markers").mkdir()
    wf = shell_workflow(tmp_path / "markers")
    services = LocalBufferServices(tmp_path, ["a", "b"])
    with services as endpoints:
        stager = BufferStager(endpoints, tmp_path)
        runs = RunStore(Store.at(tmp_path / "state.db"))
        sites = {s: LocalConnector(s, tmp_path / s, slots=2) for s in ("a", "b")}
        ex = Executor(runs, sites, stager=stager, inputs_dir=tmp_path / "in", poll_interval=0.01)
        rid = ex.submit(wf, {"a": "a", "b": "b", "c": "a", "d": "b"})
        assert ex.run(rid, timeout=120) is RunState.DONE
        assert lines(tmp_path / "markers" / "d") == ["b"]
        moved = sorted((r.item, r.src_site, r.dst_site) for r in stager.records)
        assert moved == [("xa", "a", "b"), ("xc", "a", "b")]
        assert all(r.bytes == r.total_bytes > 0 for r in stager.records)
        assert all(r.telemetry()["link"] == "a->b" for r in stager.records)
        assert all(r.pushed for r in stager.records)  # the sites' services are peers
        staged = tmp_path / "b" / "staged" / rid / "xc"
        assert staged.read_text() == "c made this\n"
    # the services are stopped by PID when the block ends
    assert not services._procs


def two_site_federation() -> Federation:
    site = {
        "kind": "hpc",
        "cores": 8,
        "memory": "64 GB",
        "power_idle_w": 2,
        "power_busy_w": 8,
        "price_per_core_hour": 0.02,
        "jurisdiction": "FR",
        "buffer_capacity": "1 TB",
    }
    return Federation.from_dict(
        {
            "name": "two",
            "sites": [{"id": "a", **site}, {"id": "b", **site, "speed": 0.5}],
            "links": [{"src": "a", "dst": "b", "bandwidth": "1 Gbit/s", "symmetric": True}],
        }
    )


def test_the_planner_replans_the_unfinished_part_and_reuses_finished_data(tmp_path: Path) -> None:
    (tmp_path / "markers").mkdir()
    fed = two_site_federation()
    wf = shell_workflow(tmp_path / "markers", sleep=0.3)
    replanner = PlannerReplanner(fed, HEFTPlanner())
    runs = RunStore(Store.at(tmp_path / "state.db"))
    sites = {s: LocalConnector(s, tmp_path / s, slots=2) for s in ("a", "b")}
    ex = Executor(
        runs,
        sites,
        stager=CopyStager(tmp_path),
        replanner=replanner,
        inputs_dir=tmp_path / "in",
        poll_interval=0.01,
    )
    rid = ex.submit(wf, dict.fromkeys("abcd", "a"))
    while ex.runs.steps(rid)["a"].state is not StepState.DONE:
        ex.step_once(rid)
        time.sleep(0.01)
    sites["a"].fail()
    ex.site_down(rid, "a", "twin flagged site a down")
    assert ex.run(rid, timeout=120) is RunState.DONE
    final = ex.runs.steps(rid)
    assert final["a"].site == "a"  # finished before the fault: not re-run
    assert lines(tmp_path / "markers" / "a") == ["a"]
    assert {final[s].site for s in "bcd"} == {"b"}
    # b and c read xa, produced at a before the fault, staged from a's directory; an
    # attempt that was running at a when it went down is lost and runs again at b
    for step in "bc":
        assert lines(tmp_path / "markers" / step)[-1] == "b"
        assert len(lines(tmp_path / "markers" / step)) <= 2
    assert lines(tmp_path / "markers" / "d") == ["b"]


def test_sub_workflow_pins_finished_anchors_without_work() -> None:
    wf = shell_workflow(Path("/tmp"))
    request = ReplanRequest(
        run_id="r",
        workflow=wf,
        steps=("b", "d"),
        excluded=frozenset({"a"}),
        assignment=dict.fromkeys("abcd", "a"),
        done=frozenset({"a"}),
        reason="test",
    )
    sub = sub_workflow(request, two_site_federation())
    assert {s.id for s in sub.steps} == {"a", "b", "c", "d"}
    assert sub.step("a").work == 0
    assert sub.step("a").constraints.sites == ("a",)
    assert sub.step("c").work == wf.step("c").work  # still running: keeps its work
    assert sub.step("b").constraints.sites == ("b",)
    assert sub.step("a").inputs == ()


def test_sub_workflow_keeps_to_the_sites_the_executor_reaches() -> None:
    fed = Federation.from_dict(
        {
            **{k: v for k, v in two_site_federation().to_dict().items() if k != "links"},
            "sites": [
                *two_site_federation().to_dict()["sites"],
                {**two_site_federation().to_dict()["sites"][0], "id": "c"},
            ],
        }
    )
    request = ReplanRequest(
        run_id="r",
        workflow=shell_workflow(Path("/tmp")),
        steps=("b",),
        excluded=frozenset({"a"}),
        assignment=dict.fromkeys("abcd", "a"),
        done=frozenset({"a"}),
        reason="test",
        sites=frozenset({"a", "b"}),
    )
    assert sub_workflow(request, fed).step("b").constraints.sites == ("b",)
    unrestricted = ReplanRequest(**{**request.__dict__, "sites": frozenset()})
    assert sub_workflow(unrestricted, fed).step("b").constraints.sites == ("b", "c")


def test_a_site_whose_process_is_killed_is_flagged_by_the_twin_and_replanned(
    tmp_path: Path,
) -> None:
    """The fault is a process of the site killed from outside the run (its buffer service,
    SIGKILL), not a flag set by the driver: the site's heartbeat turns false, the twin flags
    the site down, and only then are its unfinished steps re-planned; the run completes."""
    import threading

    from orchestrator import Workflow
    from orchestrator.execution.mainjob import LocalSites, drive
    from twin.federation_twin import FederationTwin

    markers = tmp_path / "markers"
    markers.mkdir()
    fed = two_site_federation()
    twin = FederationTwin(fed)
    cmd = 'echo "$CONTINUUM_SITE" >> {m}/{s} && sleep 1'
    wf = Workflow.from_dict(
        {
            "name": "independent",
            "steps": [{"id": s, "work": 1, "command": cmd.format(m=markers, s=s)} for s in "wxyz"],
        }
    )
    killed: list[float] = []
    with LocalSites(fed, tmp_path / "work", slots=2) as sites:
        runs = RunStore(Store.at(tmp_path / "state.db"))
        ex = sites.executor(runs, PlannerReplanner(fed, HEFTPlanner()))
        rid = ex.submit(wf, dict.fromkeys("wxyz", "a"))

        def kill_when_two_run() -> None:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                running = [r for r in runs.steps(rid).values() if r.state is StepState.RUNNING]
                if len(running) >= 2:
                    assert sites.services is not None
                    sites.services.kill("a")
                    killed.append(time.time())
                    return
                time.sleep(0.02)

        killer = threading.Thread(target=kill_when_two_run)
        killer.start()
        result = drive(ex, rid, sites, twin=twin, timeout=180)
        killer.join()
    assert killed, "the site's process was never killed"
    assert result.state is RunState.DONE
    assert result.failed_site == "a"
    assert result.replanned_at is not None
    assert result.replanned_at >= killed[0]
    assert set(result.replanned_steps) == set("wxyz")
    events = runs.events(rid)
    assert any(k == "replan" and "the twin flagged site down" in d for _, _, k, d in events)
    assert {r.site for r in runs.steps(rid).values()} == {"b"}
    for s in "wxyz":  # at most the attempt cut short at a, then once at b
        assert lines(markers / s)[-1:] == ["b"]
        assert lines(markers / s).count("b") == 1
