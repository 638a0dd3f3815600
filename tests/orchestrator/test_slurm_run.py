"""Workflows whose steps run as jobs of a real Slurm cluster (started by the test session):
a node going down mid-run, a job lost by the controller, a crash of the orchestrator.

Waits are on observed state with deadlines; nothing sleeps a fixed time.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from federation.model import Federation
from federation.store import Store
from orchestrator import HEFTPlanner, Workflow
from orchestrator.connectors.base import TaskStatus
from orchestrator.connectors.local import read_result
from orchestrator.connectors.slurm import JobCompletionLog, SlurmConnector
from orchestrator.connectors.slurmlocal import LocalSlurm
from orchestrator.execution import Executor, RunState, RunStore, StepState
from orchestrator.execution.mainjob import execute_locally
from tests.conftest import REPO
from tests.orchestrator.test_slurm_connector import finish, reach, spec, until
from twin import FederationTwin, SiteStatus
from twin.slurm_source import slurm_command


def federation(hpc_connector: dict[str, Any]) -> Federation:
    site = {
        "kind": "hpc",
        "cores": 4,
        "memory": "8 GB",
        "power_idle_w": 1,
        "power_busy_w": 5,
        "price_per_core_hour": 0.01,
        "jurisdiction": "FR",
        "buffer_capacity": "1 GB",
    }
    return Federation.from_dict(
        {
            "name": "slurm-test",
            "sites": [
                {**site, "id": "hpc", "connector": hpc_connector},
                {**site, "id": "lab", "kind": "cloud"},
            ],
            "links": [
                {"src": "hpc", "dst": "lab", "bandwidth": "1 GB/s", "symmetric": True},
            ],
        }
    )


def marking_workflow(markers: Path, n: int = 8) -> Workflow:
    """``n`` independent steps (the first sleeps 1 s, the others 4 s, then each appends its
    id to ``markers``) and a last step after all of them."""
    steps: list[dict[str, Any]] = [
        {"id": f"s{i}", "work": 1, "command": f"sleep {4 if i else 1}; echo s{i} >> {markers}"}
        for i in range(n)
    ]
    steps.append(
        {
            "id": "last",
            "work": 1,
            "after": [f"s{i}" for i in range(n)],
            "command": f"echo last >> {markers}",
        }
    )
    return Workflow.from_dict({"name": "marks", "steps": steps})


def ran(markers: Path) -> list[str]:
    return markers.read_text().split() if markers.exists() else []


def test_a_workflow_runs_as_slurm_jobs_survives_its_nodes_going_down_and_runs_each_step_once(
    slurm: LocalSlurm, tmp_path: Path
) -> None:
    """Done-when of the Slurm issue: the steps ran as Slurm jobs (in the job completion log
    with the run's ids); the partition's nodes go down while steps run; the twin, fed by the
    scheduler, flags the site down; the unfinished steps are re-planned on the local site;
    the run finishes with every step run once."""
    markers = tmp_path / "markers"
    fed = federation({"kind": "slurm", "partition": "debug"})
    wf = marking_workflow(markers)
    twin = FederationTwin(fed)
    went_down: list[float] = []

    def progress(done: int, total: int, _: str) -> None:
        # s0 is done, s1..s3 are seconds away from their end, s4..s7 wait for a CPU
        if done >= 1 and not went_down:
            slurm.set_nodes("down", reason="test: nodes lost mid-run")
            went_down.append(time.time())

    result = execute_locally(
        wf,
        fed,
        {s.id: "hpc" for s in wf.steps},
        tmp_path / "work",
        replanner_planner=HEFTPlanner(),
        twin=twin,
        progress=progress,
        slots=4,
        timeout=300,
    )
    assert result.state is RunState.DONE, result.events
    assert went_down, "the nodes were never taken down"
    # every step ran to its end exactly once (a step killed with its node wrote nothing)
    assert sorted(ran(markers)) == sorted(s.id for s in wf.steps)
    assert result.failed_site == "hpc"
    assert result.replanned_steps, result.events
    assert any("the twin flagged site down" in e for e in result.events), result.events
    assert twin.status()["hpc"] is SiteStatus.DOWN
    runs = RunStore(Store.at(tmp_path / "work" / "state.db"))
    steps = runs.steps(result.run_id)
    at_hpc = {sid for sid, r in steps.items() if r.site == "hpc"}
    at_lab = {sid for sid, r in steps.items() if r.site == "lab"}
    assert at_hpc
    assert at_lab
    assert "last" in at_lab
    assert all(r.state is StepState.DONE for r in steps.values())
    # the jobs of the run, in the cluster's job completion log, with the run's ids
    log = JobCompletionLog(slurm.jobcomp)
    until(
        lambda: len([r for r in log.records() if r.name.startswith("continuum:")]) >= len(at_hpc),
        60,
        "the completion records",
    )
    ours = [r for r in log.records() if r.name.startswith(f"continuum:{result.run_id}:")]
    by_step = {r.name.split(":")[2]: r for r in ours}
    for sid in at_hpc:  # each step done at hpc: one job, in its task directory, completed
        rec = by_step[sid]
        assert rec.workdir == steps[sid].handle
        if rec.state == "NODE_FAIL":
            # ... or its task had ended well when the node died under a job still
            # completing: the runner's result says so, and the step stays done at hpc
            info = read_result(Path(rec.workdir))
            assert info is not None, sid
            assert info.exit_code == 0, (sid, info)
        else:
            assert rec.state == "COMPLETED"
    killed = [r for r in ours if r.state == "NODE_FAIL" and r.name.split(":")[2] not in at_hpc]
    assert killed, [(r.name, r.state) for r in ours]  # steps were running when the nodes died
    assert all(r.name.split(":")[2] in at_lab for r in killed)  # ... and ran again elsewhere
    runs.store.close()


def test_a_job_lost_by_the_controller_is_retried_by_the_executor(
    slurm: LocalSlurm, tmp_path: Path
) -> None:
    """The controller restarts without its state while a step's job waits in the queue:
    the job is gone, the attempt is lost (after ``lost_after_s``), the retry runs."""
    markers = tmp_path / "markers"
    wf = Workflow.from_dict(
        {"name": "lost", "steps": [{"id": "a", "work": 1, "command": f"echo a >> {markers}"}]}
    )
    # a lookahead: the site takes a task although its partition has no CPU in service
    conn = SlurmConnector(
        "hpc", tmp_path / "hpc", partition="debug", refresh_s=0.2, lost_after_s=2, lookahead=1
    )
    runs = RunStore(Store.at(tmp_path / "state.db"))
    ex = Executor(runs, {"hpc": conn}, poll_interval=0.05)
    slurm.set_nodes("drain")  # the job waits
    rid = ex.submit(wf, {"a": "hpc"}, max_attempts=3, backoff_s=0.1)

    def queued() -> bool:
        ex.step_once(rid)
        handle = runs.steps(rid)["a"].handle
        return bool(handle) and conn.status(handle).status is TaskStatus.QUEUED

    until(queued, 60, "the job to wait in the queue")
    slurm.restart_controller(clear_state=True)  # the controller forgets every job
    slurm.restore()
    assert ex.run(rid, timeout=120) is RunState.DONE
    rec = runs.steps(rid)["a"]
    assert rec.attempts == 2
    events = [d for _, s, _, d in runs.events(rid) if s == "a"]
    assert any("lost" in d and "vanished from the Slurm controller" in d for d in events), events
    assert ran(markers) == ["a"]


def test_a_started_job_forgotten_by_the_controller_is_not_lost_while_its_task_may_run(
    slurm: LocalSlurm, tmp_path: Path
) -> None:
    """A controller that lost its state may not stop the jobs it forgot at once (slurmd
    keeps running them until a later node registration): a forgotten job whose task had
    started is not declared lost after ``lost_after_s`` (a retry could then run the step
    twice at once) but awaited, here up to its time limit."""
    markers = tmp_path / "markers"
    conn = SlurmConnector("hpc", tmp_path / "hpc", partition="debug", refresh_s=0.2, lost_after_s=1)
    handle = conn.submit(spec("orphan", f"sleep 8; echo a >> {markers}", work=1.0))
    reach(conn, handle, TaskStatus.RUNNING)
    until(lambda: (Path(handle) / "claim").exists(), 30, "the task to start")
    slurm.restart_controller(clear_state=True)
    fresh = SlurmConnector(
        "hpc", tmp_path / "hpc", partition="debug", refresh_s=0.2, lost_after_s=1
    )
    end = time.monotonic() + 3  # three times lost_after_s
    while time.monotonic() < end and not (Path(handle) / "result.json").exists():
        info = fresh.status(handle)
        assert info.status is TaskStatus.RUNNING, info
        time.sleep(0.2)
    assert not markers.exists() or ran(markers) == ["a"]


def test_a_job_cancelled_before_a_controller_restart_is_known_from_the_completion_log(
    slurm: LocalSlurm, tmp_path: Path
) -> None:
    """The controller restarts without its state: a running job vanishes (lost, after
    ``lost_after_s``); a job that had ended is still known from the job completion log."""
    conn = SlurmConnector("hpc", tmp_path / "hpc", partition="debug", refresh_s=0.2)
    ended = conn.submit(spec("ended", "sleep 300"))
    running = conn.submit(spec("running", "sleep 300"))
    reach(conn, ended, TaskStatus.RUNNING)
    reach(conn, running, TaskStatus.RUNNING)
    slurm_command(["scancel", conn.job_id(ended) or ""])  # an operator's cancel
    log = JobCompletionLog(slurm.jobcomp)
    until(lambda: log.find(ended) is not None, 30, "the cancelled job's record")
    slurm.restart_controller(clear_state=True)
    # the forgotten job's task may go on: a node that died with the controller's state is
    # simulated by killing it (its runner and its children), if it still runs
    runner = json.loads((Path(running) / "claim").read_text())["pid"]
    for pid in [*_children(runner), runner]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    fresh = SlurmConnector(
        "hpc", tmp_path / "hpc", partition="debug", refresh_s=0.2, lost_after_s=1, orphan_wait_s=3
    )
    info = finish(fresh, ended, 30)
    assert info.status is TaskStatus.CANCELLED  # from the completion log: squeue forgot it
    info = finish(fresh, running, 60)
    assert info.status is TaskStatus.LOST  # awaited orphan_wait_s (it had no time limit)
    assert "vanished from the Slurm controller" in info.message


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        text = ""
        with contextlib.suppress(OSError):
            text = (task / "children").read_text()
        for child in map(int, text.split()):
            found += [*_children(child), child]
    return found


def test_a_killed_orchestrator_resumes_and_finds_its_slurm_jobs(
    slurm: LocalSlurm, tmp_path: Path
) -> None:
    """``continuum run`` is SIGKILLed while its steps run as Slurm jobs; ``continuum runs
    resume`` finds the jobs (no step submitted twice) and finishes the run."""
    markers = tmp_path / "markers"
    fed_file = tmp_path / "fed.yaml"
    fed_file.write_text(
        yaml.safe_dump(federation({"kind": "slurm", "partition": "debug"}).to_dict())
    )
    wf_file = tmp_path / "wf.yaml"
    steps: list[dict[str, Any]] = [
        {
            "id": f"s{i}",
            "work": 1,
            "command": f"sleep 3; echo s{i} >> {markers}",
            "constraints": {"sites": ["hpc"]},
        }
        for i in range(3)
    ]
    steps.append(
        {
            "id": "last",
            "work": 1,
            "after": ["s0", "s1", "s2"],
            "command": f"echo last >> {markers}",
            "constraints": {"sites": ["hpc"]},
        }
    )
    wf_file.write_text(yaml.safe_dump({"name": "crash", "steps": steps}))
    work = tmp_path / "work"
    env = {**os.environ, "COLUMNS": "200"}
    cli = [sys.executable, "-m", "federation.cli"]
    proc = subprocess.Popen(
        [
            *cli,
            "run",
            str(wf_file),
            "-f",
            str(fed_file),
            "--workdir",
            str(work),
            "--planner",
            "heft",
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        until(lambda: len(_jobs_of(work)) >= 3 or proc.poll() is not None, 120, "three jobs")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        _, err = proc.communicate(timeout=30)
    assert len(_jobs_of(work)) == 3, err
    assert ran(markers) == []  # killed while the jobs still ran
    runs = RunStore(Store.at(work / "state.db"))
    (rid,) = runs.runs()
    runs.store.close()
    out = subprocess.run(
        [*cli, "runs", "resume", rid, "--state", str(work / "state.db")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert sorted(ran(markers)) == ["last", "s0", "s1", "s2"]
    jobs = _jobs_of(work)
    names = [name for name, _ in jobs.values()]
    assert sorted(names) == sorted(f"continuum:{rid}:{s}:1" for s in ("s0", "s1", "s2", "last"))


def _jobs_of(work: Path) -> dict[str, tuple[str, str]]:
    """Job id -> (name, working directory) of the jobs whose task lives under ``work``."""
    out = slurm_command(["squeue", "--noheader", "--states=all", "--format=%i|%j|%Z"])
    jobs = {}
    for line in out.splitlines():
        job, name, wd = line.strip().split("|", 2)
        if wd.startswith(str(work.resolve())):
            jobs[job] = (name, wd)
    return jobs


def test_continuum_run_refuses_a_site_it_cannot_run(tmp_path: Path) -> None:
    from orchestrator.errors import OrchestratorError

    fed = federation({"kind": "agent"})
    wf = marking_workflow(tmp_path / "m", 1)
    with pytest.raises(OrchestratorError, match="site hpc declares connector agent"):
        execute_locally(
            wf,
            fed,
            {s.id: "lab" for s in wf.steps},
            tmp_path / "w",
            replanner_planner=HEFTPlanner(),
        )
    assert json.loads((tmp_path / "w" / "federation.json").read_text())["name"] == "slurm-test"


def test_the_slurm_local_example_runs_the_hpc_steps_as_jobs(
    slurm: LocalSlurm, tmp_path: Path
) -> None:
    """examples/federations/slurm-local.yaml: the quick-start workflow with its HPC centre on
    Slurm (the README's command); the input at the local edge site is staged to the jobs."""
    work = tmp_path / "work"
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "federation.cli",
            "run",
            "examples/quickstart/workflow.yaml",
            "-f",
            "examples/federations/slurm-local.yaml",
            "--project",
            "survey",
            "--objective",
            "carbon",
            "--workdir",
            str(work),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert out.returncode == 0, out.stdout + out.stderr
    runs = RunStore(Store.at(work / "state.db"))
    (rid,) = runs.runs()
    steps = runs.steps(rid)
    runs.store.close()
    at_hpc = {s for s, r in steps.items() if r.site == "fr-hpc"}
    assert at_hpc, {s: r.site for s, r in steps.items()}
    log = JobCompletionLog(slurm.jobcomp)
    names = {f"continuum:{rid}:{s}:1" for s in at_hpc}
    until(lambda: names <= {r.name for r in log.records()}, 60, "the example's jobs")
    report = steps["report"]
    assert (Path(report.handle) / "out" / "report").read_text().startswith("bright sources: ")


def test_slurm_local_starts_and_stops_a_cluster_by_pid(slurm: LocalSlurm, tmp_path: Path) -> None:
    """``continuum slurm-local start`` leaves a cluster running (its own ports, its own
    SLURM_CONF); ``stop`` ends exactly its daemons."""
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="continuum-cli-slurm-"))
    cli = [sys.executable, "-m", "federation.cli", "slurm-local"]
    started = subprocess.run(
        [*cli, "start", "--dir", str(root), "--cpus", "1"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert started.returncode == 0, started.stdout + started.stderr
    assert f"export SLURM_CONF={root / 'slurm.conf'}" in started.stdout
    pids = json.loads((root / "pids.json").read_text())
    assert set(pids) == {"munged", "slurmctld", "slurmd-n1"}
    try:
        nodes = slurm_command(["sinfo", "--noheader", "--format=%P %D %T"], root / "slurm.conf")
        assert nodes.split() == ["debug*", "1", "idle"]
    finally:
        stopped = subprocess.run(
            [*cli, "stop", "--dir", str(root)], cwd=REPO, capture_output=True, text=True
        )
    assert stopped.returncode == 0, stopped.stderr
    until(lambda: not any(_running_pid(p) for p in pids.values()), 30, "the daemons gone")
    assert slurm.running()  # the session's cluster is untouched
    import shutil

    shutil.rmtree(root, ignore_errors=True)


def _running_pid(pid: int) -> bool:
    """The process exists and is not a zombie waiting to be reaped by whoever adopted it."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


def test_each_site_gets_the_connector_it_declares(tmp_path: Path) -> None:
    from orchestrator.connectors.dask import DaskConnector
    from orchestrator.connectors.local import LocalConnector
    from orchestrator.errors import OrchestratorError
    from orchestrator.execution.mainjob import site_connector

    def site(connector: dict[str, Any]) -> Any:
        return federation(connector).site("hpc")

    local = site_connector(site({"kind": "local"}), tmp_path / "l", slots=3)
    assert isinstance(local, LocalConnector)
    assert local.slots == 3
    slurm_site = site({"kind": "slurm", "partition": "p", "account": "a", "time_limit": "2 h"})
    conn = site_connector(slurm_site, tmp_path / "s")
    assert isinstance(conn, SlurmConnector)
    assert (conn.partition, conn.account, conn.time_limit_s) == ("p", "a", 7200.0)
    dask = site_connector(site({"kind": "dask"}), tmp_path / "d", slots=1)
    try:
        assert isinstance(dask, DaskConnector)
    finally:
        dask.close()
    for kind in ("agent", "simulated"):
        with pytest.raises(OrchestratorError, match=f"declares connector {kind}"):
            site_connector(site({"kind": kind}), tmp_path / kind)


def test_continuum_run_refuses_sites_it_cannot_run_and_drills_on_slurm_sites(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.conftest import call_main

    wf_file = tmp_path / "wf.yaml"
    wf_file.write_text(
        yaml.safe_dump({"name": "w", "steps": [{"id": "a", "work": 1, "command": "true"}]})
    )
    agent_fed = tmp_path / "agent.yaml"
    agent_fed.write_text(yaml.safe_dump(federation({"kind": "agent"}).to_dict()))
    code, _, err = call_main(
        capsys, "run", str(wf_file), "-f", str(agent_fed), "--workdir", str(tmp_path / "w")
    )
    assert code == 2
    assert "hpc (agent) cannot run steps here" in " ".join(err.split())
    slurm_fed = tmp_path / "slurm.yaml"
    slurm_fed.write_text(yaml.safe_dump(federation({"kind": "slurm"}).to_dict()))
    code, _, err = call_main(
        capsys,
        "run",
        str(wf_file),
        "-f",
        str(slurm_fed),
        "--fail-site",
        "hpc",
        "--workdir",
        str(tmp_path / "w"),
    )
    assert code == 2
    assert "take a Slurm site's nodes down with scontrol" in " ".join(err.split())
