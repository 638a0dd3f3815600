"""The Slurm connector against a real slurmctld/slurmd started by the test session.

Every wait is on observed state with a deadline (the machine may be loaded), never a fixed
sleep.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from orchestrator.connectors.base import TaskInfo, TaskSpec, TaskStatus
from orchestrator.connectors.slurm import (
    JOB_FILE,
    JobCompletionLog,
    SlurmConnector,
    job_name,
    parse_jobcomp_line,
)
from orchestrator.connectors.slurmlocal import LocalSlurm
from twin.slurm_source import slurm_command


def until(check: Callable[[], bool], timeout: float, what: str, pause: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(pause)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def finish(conn: SlurmConnector, handle: str, timeout: float = 120.0) -> TaskInfo:
    """Poll ``status`` until the task is over (deadline ``timeout``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = conn.status(handle)
        if info.finished:
            return info
        time.sleep(0.1)
    raise AssertionError(f"task {handle} not finished after {timeout:.0f} s: {conn.status(handle)}")


def reach(conn: SlurmConnector, handle: str, status: TaskStatus, timeout: float = 60.0) -> None:
    until(lambda: conn.status(handle).status is status, timeout, f"{handle} {status.value}")


def spec(step: str, command: str, **kw: object) -> TaskSpec:
    return TaskSpec(run_id="r1", step_id=step, attempt=1, command=command, **kw)  # type: ignore[arg-type]


def squeue_field(job: str, fmt: str) -> str:
    return slurm_command(["squeue", "--noheader", "--states=all", "-j", job, f"--format={fmt}"])


def jobs_named(name: str) -> list[str]:
    out = slurm_command(["squeue", "--noheader", "--states=all", f"--name={name}", "--format=%i"])
    return out.split()


@pytest.fixture
def conn(slurm: LocalSlurm, tmp_path: Path) -> SlurmConnector:
    return SlurmConnector("hpc", tmp_path / "hpc", partition="debug", refresh_s=0.2)


def test_a_step_runs_as_a_batch_job_with_its_resources_ids_and_logs(
    conn: SlurmConnector, slurm: LocalSlurm
) -> None:
    task = spec(
        "make data",
        'echo "on $SLURMD_NODENAME"; echo warn >&2; printf x > "$CONTINUUM_OUT/data"',
        cores=2,
        memory=300 * 2**20,
        work=30.0,
        outputs=("data",),
        env={"GREETING": "hello"},
    )
    handle = conn.submit(task)
    assert handle == conn.handle_for(task)
    job = conn.job_id(handle)
    assert job is not None
    assert (Path(handle) / JOB_FILE).read_text().split() == [job, "60"]  # id, enforced limit
    # what sbatch was asked: one task with the step's cores, its memory, a time limit of
    # time_factor x its duration (at least min_time_s), the ids in the name and the comment
    cpus, mem, limit, name, comment, workdir = (
        squeue_field(job, "%C|%m|%l|%j|%k|%Z").strip().split("|")
    )
    assert (cpus, mem, limit) == ("2", "300M", "1:00")  # max(60 s, 3 x 30 / 2 cores)
    assert name == job_name("r1", "make data", 1) == "continuum:r1:make_data:1"
    assert "run=r1" in comment
    assert "step=make data" in comment
    assert "attempt=1" in comment
    assert workdir == handle
    info = finish(conn, handle)
    assert info.status is TaskStatus.SUCCEEDED, info
    assert info.exit_code == 0
    assert (Path(handle) / "stdout").read_text().strip() in {f"on {n}" for n in slurm.node_names}
    assert conn.log_path(handle, "stderr").read_text() == "warn\n"  # type: ignore[union-attr]
    assert conn.output_path(handle, "data").read_text() == "x"
    # the job's own record, in the job completion log, carries the ids too
    log = JobCompletionLog(slurm.jobcomp)
    until(lambda: log.find(handle) is not None, 30, "the job's completion record")
    record = log.find(handle)
    assert record is not None
    assert record.job_id == job
    assert record.state == "COMPLETED"
    assert record.name == "continuum:r1:make_data:1"
    assert conn.submitted == 1
    assert conn.submit(task) == handle
    assert conn.submitted == 1


def test_time_limit_policy() -> None:
    conn = SlurmConnector("x", "/tmp/continuum-unused", time_limit_s=3600.0, speed=2.0)
    assert conn.time_limit_for(1, 0.0) == 3600.0  # no estimate: the site's limit
    assert conn.time_limit_for(1, 10.0) == 60.0  # at least min_time_s
    assert conn.time_limit_for(2, 4000.0) == 3000.0  # 3 x 4000 / (2 cores x speed 2)
    assert conn.time_limit_for(1, 10**6) == 3600.0  # at most the site's limit
    assert SlurmConnector("y", "/tmp/continuum-unused").time_limit_for(1, 0.0) is None
    with pytest.raises(ValueError, match="time_factor"):
        SlurmConnector("z", "/tmp/continuum-unused", time_factor=0.0)


def test_exit_codes_and_signals_map_to_the_outcome(conn: SlurmConnector) -> None:
    failed = conn.submit(spec("fails", "echo broken >&2; exit 3"))
    killed = conn.submit(spec("killed", "kill -9 $$"))
    info = finish(conn, failed)
    assert info.status is TaskStatus.FAILED
    assert info.exit_code == 3
    # the batch job carries the task's status too (the runner exits with it); the result
    # file may be read while Slurm still says COMPLETING
    job = conn.job_id(failed) or ""
    until(
        lambda: squeue_field(job, "%T").strip() != "COMPLETING", 30, "the job to leave COMPLETING"
    )
    assert squeue_field(job, "%T").strip() == "FAILED"
    info = finish(conn, killed)
    assert info.status is TaskStatus.FAILED
    assert info.exit_code == 137
    assert info.message == "killed by signal 9 (SIGKILL)"


def test_a_request_slurm_refuses_fails_that_attempt_with_slurms_reason(
    conn: SlurmConnector, tmp_path: Path
) -> None:
    # more cores than a node has: accepted, but pending for ever (PartitionConfig): the
    # job is cancelled and the attempt fails, naming the reason
    handle = conn.submit(spec("huge", "true", cores=64))
    info = finish(conn, handle, 30)
    assert info.status is TaskStatus.FAILED
    assert info.message == f"job {conn.job_id(handle)} cannot start: PartitionConfig"
    until(
        lambda: squeue_field(conn.job_id(handle) or "", "%T").strip() == "CANCELLED",
        30,
        "the hopeless job to be cancelled",
    )
    # a partition the cluster does not have: sbatch refuses, the attempt fails with its words
    other = SlurmConnector("hpc", tmp_path / "other", partition="nope")
    handle = other.submit(spec("anywhere", "true"))
    info = other.status(handle)
    assert info.status is TaskStatus.FAILED
    assert info.message.startswith("sbatch refused:")
    assert "partition" in info.message.lower()
    assert conn.healthy()  # the site itself is fine


def test_cancel_stops_the_job(conn: SlurmConnector, tmp_path: Path) -> None:
    marker = tmp_path / "pid"
    handle = conn.submit(spec("long", f"echo $$ > {marker}; sleep 300"))
    reach(conn, handle, TaskStatus.RUNNING)
    until(marker.exists, 30, "the task to start")
    pid = int(marker.read_text())
    job = conn.job_id(handle) or ""
    conn.cancel(handle)
    assert conn.status(handle).status is TaskStatus.CANCELLED
    until(lambda: squeue_field(job, "%T").strip() == "CANCELLED", 30, "Slurm to cancel it")
    until(lambda: not Path(f"/proc/{pid}").exists(), 30, "the task's process to end")
    conn.cancel(handle)  # a no-op now


def test_a_queued_job_cancelled_by_an_operator_is_cancelled(
    conn: SlurmConnector, slurm: LocalSlurm
) -> None:
    slurm.set_nodes("drain")  # nothing starts: the job waits in the queue
    handle = conn.submit(spec("waits", "true"))
    reach(conn, handle, TaskStatus.QUEUED)
    slurm_command(["scancel", conn.job_id(handle) or ""])
    info = finish(conn, handle, 60)
    assert info.status is TaskStatus.CANCELLED
    assert "cancelled in Slurm" in info.message


def test_a_restarted_orchestrator_finds_a_job_whose_id_it_never_recorded(
    conn: SlurmConnector, tmp_path: Path, slurm: LocalSlurm
) -> None:
    """A crash between sbatch's answer and the job id being written: the new connector
    finds the job by its task directory, and never submits the attempt again."""
    marker = tmp_path / "ran"
    task = spec("once", f"sleep 1; echo ran >> {marker}")
    handle = conn.submit(task)
    job = conn.job_id(handle)
    (Path(handle) / JOB_FILE).unlink()  # as if the process died right after sbatch
    again = SlurmConnector("hpc", tmp_path / "hpc", partition="debug", refresh_s=0.2)
    assert again.status(handle).status in (TaskStatus.QUEUED, TaskStatus.RUNNING)
    assert again.job_id(handle) == job
    assert again.submit(task) == handle
    assert again.submitted == 0
    assert finish(again, handle).status is TaskStatus.SUCCEEDED
    assert jobs_named(job_name("r1", "once", 1)) == [job]
    assert marker.read_text() == "ran\n"


def test_a_second_job_of_the_same_attempt_runs_nothing_and_the_connector_follows_the_claim(
    conn: SlurmConnector, tmp_path: Path
) -> None:
    """Two jobs for one attempt (a submission repeated after a crash, sbatch answering
    late): the claim runner runs the task once; the connector follows the job holding it."""
    marker = tmp_path / "ran"
    handle = conn.submit(spec("twice", f"echo ran >> {marker}; sleep 3"))
    first = conn.job_id(handle) or ""
    reach(conn, handle, TaskStatus.RUNNING)
    until(lambda: (Path(handle) / "claim").exists(), 30, "the claim")
    # a second sbatch of the same task directory, recorded as the task's job
    from orchestrator.connectors.local import RUNNER_SCRIPT

    second = slurm_command(["sbatch", "--parsable", f"--chdir={handle}", RUNNER_SCRIPT, handle])
    (Path(handle) / JOB_FILE).write_text(second.strip())
    follower = SlurmConnector("hpc", conn.workdir, partition="debug", refresh_s=0.2)
    info = finish(follower, handle)
    assert info.status is TaskStatus.SUCCEEDED, info
    assert follower.job_id(handle) == first
    assert json.loads((Path(handle) / "claim").read_text())["job"] == first
    assert marker.read_text() == "ran\n"


def test_a_task_that_ends_as_its_node_goes_down_is_done_not_lost(
    conn: SlurmConnector, tmp_path: Path, slurm: LocalSlurm
) -> None:
    """Exactly once when a node goes down between a step's side effect and its result.

    The task does its work (the marker), then the node is set down: Slurm calls the job
    NODE_FAIL and signals its processes (SIGTERM, SIGKILL ``KillWait`` later). The task
    finishes in that moment, as a program flushing its output on SIGTERM would (it exits
    0 about 0.8 s after the signal). The runner, signalled while it waits for the task, must
    still write the task's result, and the connector, told NODE_FAIL before that result
    exists, must wait for it: the attempt is done, so the executor never runs the step a
    second time. Without either, the attempt reads lost and the step's work is repeated."""
    marker = tmp_path / "marker"
    command = (
        "trap 'touch got-term' TERM\n"
        f"echo done >> {marker}\n"
        "while [ ! -f got-term ]; do sleep 0.05; done\n"
        "sleep 0.8\n"
    )
    handle = conn.submit(spec("ends-as-node-dies", command))
    until(marker.exists, 60, "the task's side effect")  # observed progress, then the fault
    job = conn.job_id(handle) or ""
    slurm.set_nodes("down", reason="test: node lost as the task ends")
    until(lambda: squeue_field(job, "%T").strip() == "NODE_FAIL", 30, "Slurm's NODE_FAIL")
    info = finish(conn, handle, 60)
    assert (Path(handle) / "got-term").exists(), "the task was never signalled"
    assert info.status is TaskStatus.SUCCEEDED, info
    assert info.exit_code == 0
    assert marker.read_text().split() == ["done"]


def test_capacity_telemetry_and_health_follow_the_partition(
    conn: SlurmConnector, slurm: LocalSlurm
) -> None:
    assert conn.capacity() == 8  # 4 CPUs in service + a lookahead of as many
    assert conn.healthy()
    handles = [conn.submit(spec(f"s{i}", "sleep 300")) for i in range(3)]
    assert conn.capacity() == 5
    for h in handles:
        reach(conn, h, TaskStatus.RUNNING)
    until(lambda: conn.telemetry().get("utilisation") == 0.75, 30, "three CPUs busy of four")
    slurm.set_nodes("drain")
    until(lambda: not conn.healthy(), 30, "the drained partition to be unhealthy")
    assert conn.capacity() == 0
    assert conn.telemetry()["in_service"] == 0.0


def test_jobcomp_lines_parse() -> None:
    line = (
        "JobId=5 UserId=root(0) GroupId=root(0) Name=continuum:r:s:1 JobState=NODE_FAIL "
        "Partition=debug TimeLimit=1 StartTime=2026-11-30T12:44:37 NodeList=cx1 "
        "WorkDir=/tmp/a b/c Tres=cpu=1,mem=100M,node=1 ExitCode=0:9 "
    )
    rec = parse_jobcomp_line(line)
    assert rec is not None
    assert (rec.job_id, rec.state, rec.name, rec.workdir, rec.exit_code) == (
        "5",
        "NODE_FAIL",
        "continuum:r:s:1",
        "/tmp/a b/c",
        "0:9",
    )
    assert parse_jobcomp_line("garbage") is None


def test_sbatch_is_asked_exactly_what_the_module_says(tmp_path: Path) -> None:
    """A fake sbatch on the PATH records its arguments: the contract of the job request
    (no cluster needed)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(f'#!/bin/sh\necho "$@" > {tmp_path}/args\necho 42\n')
    (bin_dir / "sbatch").chmod(0o755)
    import os

    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    code = (
        "from orchestrator.connectors.slurm import SlurmConnector;"
        "from orchestrator.connectors.base import TaskSpec;"
        f"c = SlurmConnector('s', {str(tmp_path / 'w')!r}, partition='p', account='acct',"
        " time_limit_s=7200, extra_args=['--qos=low']);"
        "print(c.submit(TaskSpec('run', 'st', 2, 'true', cores=3, memory=2**30, work=600)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout
    args = (tmp_path / "args").read_text().split()
    task_dir = out.strip()
    assert args == [
        "--parsable",
        "--job-name=continuum:run:st:2",
        "--comment=continuum",
        "run=run",
        "step=st",
        "attempt=2",
        "site=s",
        f"--chdir={task_dir}",
        f"--output={task_dir}/slurm.out",
        "--no-requeue",
        "--ntasks=1",
        "--cpus-per-task=3",
        "--mem=1024M",
        "--time=10",  # 3 x 600 s / 3 cores = 600 s = 10 min
        "--partition=p",
        "--account=acct",
        "--qos=low",
        args[-2],
        task_dir,
    ]
    assert args[-2].endswith("runner.sh")


@pytest.mark.timeout(300)
def test_the_time_limit_ends_the_attempt_as_failed(
    slurm_time_limited: tuple[SlurmConnector, str],
) -> None:
    """The task submitted with the session's first Slurm test (``slurm_time_limited``)."""
    conn, handle = slurm_time_limited
    assert (Path(handle) / JOB_FILE).read_text().split()[1] == "60"  # one Slurm minute
    info = finish(conn, handle, 240)
    assert info.status is TaskStatus.FAILED
    assert info.message.startswith("time limit reached (Slurm TIMEOUT)"), info
    assert info.exit_code is None
