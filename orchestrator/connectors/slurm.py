"""The ``slurm`` connector: a site is a Slurm cluster; each attempt of a step is a batch job.

A task gets the local connector's task directory (``<workdir>/tasks/<run>/<step>/<attempt>/``
with ``spec.json``, ``task.sh``, ``in/`` and ``out/``; ``CONTINUUM_IN``, ``CONTINUUM_OUT``
and ``CONTINUUM_SITE`` in its environment), on a file system the cluster's nodes share
with the orchestrator (or with the site agent, see ``SlurmTaskRunner``), and is submitted
with ``sbatch`` running the same claim runner (``runner.sh``: exclusive claim, ``task.sh``
with ``stdout``/``stderr`` in the directory, atomic ``result.json``, exit with the task's
status). The job asks for

* ``--cpus-per-task`` the step's cores (one task), ``--mem`` its memory when it declares
  some;
* ``--time``: ``time_factor`` times the step's expected duration at the site's ``speed``
  (at least ``min_time_s``, at most ``time_limit_s``); a step with no work estimate gets
  ``time_limit_s`` (none: the partition's default);
* ``--job-name continuum:<run>:<step>:<attempt>`` and ``--comment`` with the run, step and
  attempt ids, ``--chdir`` the task directory, ``--no-requeue`` (a node failure ends the
  attempt, which the executor's retry policy sees: a requeued job would find the claim
  taken and could not run the task again anyway), and the site's partition and account.

The handle is the task directory. The job id is written next to the task (``slurm-job``)
after ``sbatch`` answers, and a ``slurm-submitting`` marker before it asks: a restarted
orchestrator finds the job of a task submitted just before a crash by its directory
(``squeue``, then the job completion log) instead of submitting it again, and the claim
runner makes a second job of the same attempt a no-op in any case (the claim names the job
that holds it, which the connector then follows).

State comes, cheapest first, from the task's ``result.json``; from one ``squeue`` of the
user's jobs shared by every task (at most every ``refresh_s`` seconds); for jobs that left
``squeue`` (after ``MinJobAge`` when the cluster keeps no accounting), from the job
completion log (``JobCompType=jobcomp/filetxt``: its ``JobCompLoc`` read incrementally).
Slurm's verdict on a job that ended without the runner's result is written into
``result.json``: ``TIMEOUT`` and ``OUT_OF_MEMORY`` fail the attempt, ``CANCELLED`` cancels
it, ``NODE_FAIL``, ``PREEMPTED`` and ``BOOT_FAIL`` lose it after ``result_grace_s`` (a job
called lost with its node may still write its result in that time; the executor retries or
re-plans). A job that vanished from the controller (a controller that lost its state) is
lost ``lost_after_s`` seconds later if its task had not started; if it had, the task may
still run on its node (Slurm does not stop the jobs it forgot), so its result is awaited
until the job's time limit has passed (``orphan_wait_s`` without one): the step is never
run twice at once, and never waited on for ever. A job held pending for a reason that
cannot resolve (a time limit above the partition's, an invalid account...) is cancelled and
fails with that reason.

``capacity`` hands Slurm at most the partition's CPUs in service plus ``lookahead`` tasks in
flight (Slurm queues them; the rest stay with the executor, open to a re-plan);
``telemetry`` and ``healthy`` come from ``twin.slurm_source`` (the same reading the site's
twin is fed with).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from orchestrator.connectors.base import (
    ConnectorError,
    TaskInfo,
    TaskSpec,
    TaskStatus,
    _safe,
)
from orchestrator.connectors.local import (
    RUNNER_SCRIPT,
    TaskFolderConnector,
    prepare_task,
    read_result,
)
from orchestrator.connectors.runner import CLAIM, RESULT, SPEC, write_atomic
from twin.slurm_source import (
    PartitionState,
    SlurmCommandError,
    SlurmTelemetry,
    SlurmUnreachable,
    slurm_command,
)

log = logging.getLogger(__name__)

JOB_FILE = "slurm-job"
"""The task's job id, written once ``sbatch`` answered."""
SUBMITTING = "slurm-submitting"
"""Written before ``sbatch`` is asked: a crash in between leaves it, and the job is looked up."""
SLURM_OUT = "slurm.out"
"""What Slurm itself writes about the job (the task's own streams are ``stdout``/``stderr``)."""

QUEUED_STATES = frozenset(
    {"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD"}
)
RUNNING_STATES = frozenset(
    {"RUNNING", "COMPLETING", "SIGNALING", "STAGE_OUT", "SUSPENDED", "STOPPED", "RESIZING"}
)
FAILED_STATES = {"TIMEOUT": "time limit reached", "OUT_OF_MEMORY": "out of memory"}
LOST_STATES = frozenset(
    {"NODE_FAIL", "PREEMPTED", "BOOT_FAIL", "DEADLINE", "REVOKED", "SPECIAL_EXIT"}
)
HOPELESS_REASONS = frozenset(
    {
        "PartitionTimeLimit",
        "PartitionNodeLimit",
        "PartitionConfig",
        "BadConstraints",
        "InvalidAccount",
        "InvalidQOS",
        "AccountNotAllowed",
        "QOSNotAllowed",
        "PartitionDown",
        "PartitionInactive",
    }
)
"""Reasons a job may stay pending for that no waiting will resolve: it is failed instead.
``PartitionDown``/``PartitionInactive`` are here too: a site whose partition is down is
flagged by its twin, and its steps are re-planned elsewhere."""


@dataclass(frozen=True)
class SlurmJob:
    """One job as ``squeue`` or the job completion log shows it."""

    job_id: str
    state: str
    reason: str = ""
    name: str = ""
    workdir: str = ""
    exit_code: str = ""  # "code:signal" (the completion log)


@dataclass(frozen=True)
class JobRequest:
    """What ``sbatch`` is asked for one task (see the module docstring)."""

    name: str
    comment: str
    cores: int = 1
    memory: float = 0.0
    time_limit_s: float | None = None


def job_name(run_id: str, step_id: str, attempt: int) -> str:
    """``continuum:<run>:<step>:<attempt>`` (the step id made safe: no comma, no space)."""
    return f"continuum:{_safe(run_id)[:64]}:{_safe(step_id)[:120]}:{attempt}"


def job_request(
    run_id: str,
    step_id: str,
    attempt: int,
    site: str,
    cores: int,
    memory: float,
    time_limit_s: float | None,
) -> JobRequest:
    comment = f"continuum run={run_id} step={step_id} attempt={attempt} site={site}"
    return JobRequest(
        job_name(run_id, step_id, attempt),
        comment.replace("\n", " ")[:1000],
        max(1, cores),
        memory,
        time_limit_s,
    )


def slurm_time(seconds: float) -> str:
    """A ``--time`` value: whole minutes, rounded up (Slurm's granularity), at least 1."""
    return str(max(1, math.ceil(seconds / 60.0)))


def signal_note(code: int | None) -> str:
    """``killed by signal N (SIGX)`` for a shell's exit status above 128, else empty."""
    import signal

    if code is None or code <= 128 or code > 128 + 64:
        return ""
    num = code - 128
    try:
        name = signal.Signals(num).name
    except ValueError:
        name = f"signal {num}"
    return f"killed by signal {num} ({name})"


class SlurmConnector(TaskFolderConnector):
    """Runs tasks as Slurm batch jobs (see the module docstring)."""

    def __init__(
        self,
        site_id: str,
        workdir: str | Path,
        *,
        partition: str | None = None,
        account: str | None = None,
        time_limit_s: float | None = None,
        min_time_s: float = 60.0,
        time_factor: float = 3.0,
        speed: float = 1.0,
        slurm_conf: str | Path | None = None,
        refresh_s: float = 1.0,
        lookahead: int | None = None,
        lost_after_s: float = 10.0,
        orphan_wait_s: float = 3600.0,
        result_grace_s: float = 5.0,
        extra_args: Sequence[str] = (),
        command_timeout_s: float = 60.0,
    ) -> None:
        for name, value in (("min_time_s", min_time_s), ("time_factor", time_factor)):
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {value}")
        if time_limit_s is not None and not (math.isfinite(time_limit_s) and time_limit_s > 0):
            raise ValueError(f"time_limit_s must be > 0, got {time_limit_s}")
        if not (math.isfinite(speed) and speed > 0):
            raise ValueError(f"speed must be > 0, got {speed}")
        if lookahead is not None and lookahead < 0:
            raise ValueError(f"lookahead must be >= 0, got {lookahead}")
        self.site_id = site_id
        self.workdir = Path(workdir).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.partition = partition
        self.account = account
        self.time_limit_s = time_limit_s
        self.min_time_s = min_time_s
        self.time_factor = time_factor
        self.speed = speed
        self.conf = str(slurm_conf) if slurm_conf is not None else os.environ.get("SLURM_CONF")
        self.refresh_s = refresh_s
        self.lookahead = lookahead
        self.lost_after_s = lost_after_s
        self.orphan_wait_s = orphan_wait_s
        self.result_grace_s = result_grace_s
        self.extra_args = tuple(extra_args)
        self.command_timeout_s = command_timeout_s
        self.source = SlurmTelemetry(site_id, partition, self.conf, min_interval_s=refresh_s)
        self.submitted = 0
        """``sbatch`` calls that created a job (for tests and benchmarks)."""
        self._jobs: dict[str, str] = {}  # handle -> job id
        self._submitted_at: dict[str, float] = {}  # handle -> monotonic time of sbatch
        self._active: dict[str, int] = {}  # handle -> cores, tasks not seen finished
        self._queue: dict[str, SlurmJob] = {}  # job id -> job, the last squeue
        self._queue_at = -math.inf  # monotonic time of the last squeue
        self._missing_since: dict[str, float] = {}  # handle -> when its job was first missed
        self._ended_since: dict[str, float] = {}  # handle -> when its job was seen ended
        self._jobcomp: JobCompletionLog | None = None
        self._jobcomp_checked = False

    # -- the contract ----------------------------------------------------------------
    def handle_for(self, spec: TaskSpec) -> str:
        return str(self.workdir / "tasks" / spec.key())

    def submit(self, spec: TaskSpec) -> str:
        task_dir = prepare_task(self.workdir, self.site_id, spec)
        request = job_request(
            spec.run_id,
            spec.step_id,
            spec.attempt,
            self.site_id,
            spec.cores,
            spec.memory,
            self.time_limit_for(spec.cores, spec.work),
        )
        self.submit_dir(task_dir, request)
        return str(task_dir)

    def status(self, handle: str) -> TaskInfo:
        task_dir = Path(handle)
        done = self._result(task_dir)
        if done is not None:
            self._active.pop(handle, None)
            return done
        job = self._job_of(handle)
        if job is None:
            if (task_dir / SUBMITTING).exists():
                job = self._find(task_dir)
            if job is None:
                self._active.pop(handle, None)
                known = (task_dir / SPEC).exists()
                return TaskInfo(
                    TaskStatus.NOT_STARTED,
                    workdir=task_dir if known else None,
                    message="" if known else "unknown task",
                )
        info = self._job_status(handle, task_dir, job)
        if info.finished:
            self._active.pop(handle, None)
        else:
            self._active.setdefault(handle, 1)
        return info

    def cancel(self, handle: str) -> None:
        task_dir = Path(handle)
        if (task_dir / RESULT).exists():
            return
        # A claim taken here first: a job that has not started yet can no longer run it.
        with contextlib.suppress(OSError):
            fd = os.open(task_dir / CLAIM, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            os.write(fd, json.dumps({"cancelled": True, "at": time.time()}).encode())
            os.close(fd)
        job = self._job_of(handle) or (
            self._find(task_dir) if (task_dir / SUBMITTING).exists() else None
        )
        if job is not None:
            try:
                self._run(["scancel", job])
            except SlurmCommandError as exc:
                log.warning("site %s: scancel %s failed: %s", self.site_id, job, exc)
        self._active.pop(handle, None)
        if task_dir.exists() and not (task_dir / RESULT).exists():
            write_atomic(
                task_dir / RESULT,
                {"exit_code": None, "cancelled": True, "ended_at": time.time(), "job": job},
            )

    def capacity(self) -> int | None:
        """The partition's CPUs in service plus ``lookahead`` (default: as many again),
        less the tasks of this connector in flight; ``None`` while the controller does not
        answer (a submission then fails, and the executor re-plans)."""
        state = self.partition_state()
        if state is None:
            return None
        ahead = state.cpus_in_service if self.lookahead is None else self.lookahead
        return max(0, state.cpus_in_service + ahead - len(self._active))

    def telemetry(self) -> dict[str, float]:
        state = self.partition_state()
        queued = sum(1 for h in self._active if h in self._jobs)
        if state is None:
            return {"up": 0.0, "in_flight": float(queued)}
        return {
            "utilisation": state.utilisation,
            "queue_backlog": state.pending_core_s,
            "in_service": state.in_service,
            "pending_jobs": float(state.pending_jobs),
            "in_flight": float(queued),
            "up": 1.0 if state.up else 0.0,
        }

    def healthy(self) -> bool:
        """The controller answers (or stopped answering less than the source's
        ``unreachable_down_s`` ago) and the partition has a node in service."""
        state = self.partition_state()
        if state is None:
            return self.source.unreachable_for < self.source.unreachable_down_s
        return state.up

    # -- jobs --------------------------------------------------------------------------
    def time_limit_for(self, cores: int, work: float) -> float | None:
        """Seconds of time limit for a task of ``work`` core-seconds on ``cores`` cores here
        (see the module docstring); None: the partition's default."""
        if work <= 0:
            return self.time_limit_s
        expected = work / (max(cores, 1) * self.speed)
        limit = max(self.min_time_s, self.time_factor * expected)
        return limit if self.time_limit_s is None else min(limit, self.time_limit_s)

    def submit_dir(self, task_dir: Path, request: JobRequest) -> str | None:
        """Submit the prepared task in ``task_dir`` as a batch job, once: a task with a job
        (or a result) already is left alone. The job id, or None when the task was over
        before it was submitted (a refusal by Slurm is recorded as its failed result).

        ``ConnectorError`` when the controller does not answer (the site refuses work)."""
        handle = str(task_dir)
        if (task_dir / RESULT).exists():
            return None
        known = self._job_of(handle)
        if known is None and (task_dir / SUBMITTING).exists():
            known = self._find(task_dir)
        if known is not None:
            return known
        (task_dir / SUBMITTING).write_text(f"{time.time()}\n", encoding="utf-8")
        args = [
            "sbatch",
            "--parsable",
            f"--job-name={request.name}",
            f"--comment={request.comment}",
            f"--chdir={task_dir}",
            f"--output={task_dir / SLURM_OUT}",
            "--no-requeue",
            "--ntasks=1",
            f"--cpus-per-task={request.cores}",
        ]
        if request.memory > 0:
            args.append(f"--mem={max(1, math.ceil(request.memory / 2**20))}M")
        if request.time_limit_s is not None:
            args.append(f"--time={slurm_time(request.time_limit_s)}")
        if self.partition:
            args.append(f"--partition={self.partition}")
        if self.account:
            args.append(f"--account={self.account}")
        args += [*self.extra_args, RUNNER_SCRIPT, str(task_dir)]
        try:
            out = self._run(args)
        except SlurmUnreachable as exc:
            # sbatch may have been answered after all (a timeout): look before refusing.
            with contextlib.suppress(SlurmCommandError):
                found = self._find(task_dir)
                if found is not None:
                    return found
            raise ConnectorError(f"site {self.site_id}: {exc}") from None
        except SlurmCommandError as exc:
            # This job is refused (too many cores, a bad partition...): the attempt fails,
            # with Slurm's reason; the site itself is fine.
            write_atomic(
                task_dir / RESULT,
                {"exit_code": None, "ended_at": time.time(), "message": f"sbatch refused: {exc}"},
            )
            return None
        job = out.strip().split(";")[0]
        if not job.isdigit():
            raise ConnectorError(f"site {self.site_id}: sbatch answered {out.strip()[:200]!r}")
        enforced = (
            None if request.time_limit_s is None else 60.0 * int(slurm_time(request.time_limit_s))
        )
        self._remember(handle, job, enforced)
        self._submitted_at[handle] = time.monotonic()
        self._active[handle] = request.cores
        self.submitted += 1
        return job

    def job_id(self, handle: str) -> str | None:
        """The Slurm job of a task (None before it is submitted)."""
        return self._job_of(handle)

    def partition_state(self) -> PartitionState | None:
        """The partition as the scheduler saw it at most ``refresh_s`` ago (None while the
        controller does not answer): the reading the site's twin is fed with."""
        return self.source.current()

    # -- internals ---------------------------------------------------------------------
    def _run(self, args: list[str]) -> str:
        return slurm_command(args, self.conf, self.command_timeout_s)

    def _remember(self, handle: str, job: str, time_limit_s: float | None = None) -> None:
        """Note the task's job (its id, and the time limit it was given when known)."""
        self._jobs[handle] = job
        limit = "" if time_limit_s is None else f"{time_limit_s:.0f}"
        write_atomic_text(Path(handle) / JOB_FILE, f"{job}\n{limit}\n")

    def _job_of(self, handle: str) -> str | None:
        job = self._jobs.get(handle)
        if job is None:
            try:
                lines = (Path(handle) / JOB_FILE).read_text(encoding="utf-8").split("\n")
            except OSError:
                return None
            job = lines[0].strip() or None
            if job is not None:
                self._jobs[handle] = job
        return job

    def _time_limit_of(self, handle: str) -> float | None:
        """The time limit the task's job was given (from its job file), if known."""
        try:
            lines = (Path(handle) / JOB_FILE).read_text(encoding="utf-8").split("\n")
        except OSError:
            return None
        text = lines[1].strip() if len(lines) > 1 else ""
        return float(text) if text else None

    def _result(self, task_dir: Path) -> TaskInfo | None:
        info = read_result(task_dir)
        if info is None:
            return None
        if not info.message and info.status is TaskStatus.FAILED:
            note = signal_note(info.exit_code)
            if note:
                return TaskInfo(
                    info.status, info.exit_code, info.started_at, info.ended_at, task_dir, note
                )
        return info

    def _squeue(self, force: bool = False) -> dict[str, SlurmJob] | None:
        """This user's jobs (every state still known to the controller), at most
        ``refresh_s`` old unless ``force``; None when the controller does not answer."""
        now = time.monotonic()
        if force or now - self._queue_at >= self.refresh_s:
            try:
                out = self._run(
                    ["squeue", "--me", "--noheader", "--states=all", "--format=%i|%T|%r|%j|%Z"]
                )
            except SlurmUnreachable:
                return None
            jobs = {}
            for line in out.splitlines():
                parts = line.strip().split("|", 4)
                if len(parts) == 5:
                    jobs[parts[0]] = SlurmJob(parts[0], parts[1], parts[2], parts[3], parts[4])
            self._queue, self._queue_at = jobs, now
        return self._queue

    def _completion_log(self) -> JobCompletionLog | None:
        if not self._jobcomp_checked:
            self._jobcomp_checked = True
            try:
                self._jobcomp = JobCompletionLog.of_cluster(self.conf, self.command_timeout_s)
            except SlurmCommandError as exc:
                self._jobcomp_checked = False  # ask again once the controller answers
                log.info("site %s: no job completion log yet: %s", self.site_id, exc)
        return self._jobcomp

    def _find(self, task_dir: Path) -> str | None:
        """The job of a task whose submission was interrupted: in ``squeue`` or in the job
        completion log, by its working directory; remembered when found."""
        where = str(task_dir)
        jobs = self._squeue(force=True) or {}
        found = [j.job_id for j in jobs.values() if j.workdir == where]
        if not found:
            comp = self._completion_log()
            record = comp.find(where) if comp is not None else None
            if record is not None:
                found = [record.job_id]
        if not found:
            return None
        job = max(found, key=int)
        self._remember(where, job)
        return job

    def _job_status(self, handle: str, task_dir: Path, job: str) -> TaskInfo:
        jobs = self._squeue()
        if jobs is None:  # the controller is away: the task is where it was, as far as we know
            return TaskInfo(TaskStatus.RUNNING, workdir=task_dir, message="controller unreachable")
        entry = jobs.get(job)
        if entry is not None and entry.workdir and entry.workdir != str(task_dir):
            entry = None  # the id was reused (a controller that lost its state): not ours
        if entry is None:
            comp = self._completion_log()
            record = comp.find(str(task_dir)) if comp is not None else None
            if record is not None and record.job_id == job:
                entry = record
        if entry is None:
            return self._missing(handle, task_dir, job)
        self._missing_since.pop(handle, None)
        state = entry.state.split()[0].upper() if entry.state else "UNKNOWN"
        if state in QUEUED_STATES:
            if entry.reason in HOPELESS_REASONS:
                return self._give_up(task_dir, job, f"job {job} cannot start: {entry.reason}")
            return TaskInfo(TaskStatus.QUEUED, workdir=task_dir)
        if state in RUNNING_STATES:
            return TaskInfo(TaskStatus.RUNNING, workdir=task_dir)
        return self._ended(handle, task_dir, job, state, entry)

    def _missing(self, handle: str, task_dir: Path, job: str) -> TaskInfo:
        """A job the controller does not know (yet, or any more).

        Unstarted (no claim), it is lost after ``lost_after_s``. Started, its runner may
        still be running on a node (a controller that lost its state does not stop the jobs
        it forgot): its result is awaited until the job's time limit has passed since the
        claim (``orphan_wait_s`` when the limit is not known), then it is lost; a step is
        thus never run twice at once, and never waited on for ever."""
        submitted = self._submitted_at.get(handle)
        if submitted is not None and self._queue_at <= submitted:
            return TaskInfo(TaskStatus.QUEUED, workdir=task_dir)  # the last squeue predates it
        first = self._missing_since.setdefault(handle, time.monotonic())
        again = self._result(task_dir)
        if again is not None:
            return again
        claimed_at = _claim_time(task_dir)
        if claimed_at is None:
            waited = time.monotonic() - first < self.lost_after_s
        else:
            limit = self._time_limit_of(handle)
            wait = self.orphan_wait_s if limit is None else limit + self.lost_after_s
            waited = time.time() - claimed_at < wait or time.monotonic() - first < self.lost_after_s
        if waited:
            return TaskInfo(TaskStatus.RUNNING, workdir=task_dir)
        return self._record(
            task_dir,
            job,
            {"lost": True, "message": f"job {job} vanished from the Slurm controller"},
        )

    def _ended(
        self, handle: str, task_dir: Path, job: str, state: str, entry: SlurmJob
    ) -> TaskInfo:
        """A job Slurm reports ended: the runner's result, or Slurm's verdict."""
        again = self._result(task_dir)
        if again is not None:
            return again
        claim = _claim_job(task_dir)
        if claim and claim != job:
            # Another job of this attempt holds the claim (a submission repeated after a
            # crash): follow that one.
            self._remember(handle, claim)
            return self._job_status(handle, task_dir, claim)
        exit_note = f" (exit {entry.exit_code})" if entry.exit_code else ""
        if state == "CANCELLED":
            return self._record(
                task_dir, job, {"cancelled": True, "message": f"job {job} cancelled in Slurm"}
            )
        if state in FAILED_STATES:
            return self._record(
                task_dir, job, {"message": f"{FAILED_STATES[state]} (Slurm {state}){exit_note}"}
            )
        # Without the runner's result, after a grace period: the file may not have reached
        # this host yet (a shared file system), and a job the controller calls lost with its
        # node (NODE_FAIL) may still be finishing there: its processes outlive the verdict by
        # the kill's latency, and a step that ended in that moment has done its work and
        # writes its result. Recording it lost at once would run it a second time.
        first = self._ended_since.setdefault(handle, time.monotonic())
        if time.monotonic() - first < self.result_grace_s:
            return TaskInfo(TaskStatus.RUNNING, workdir=task_dir)
        if state in LOST_STATES:
            return self._record(task_dir, job, {"lost": True, "message": f"Slurm {state}"})
        return self._record(
            task_dir,
            job,
            {"lost": True, "message": f"job {job} ended ({state}{exit_note}) without a result"},
        )

    def _give_up(self, task_dir: Path, job: str, why: str) -> TaskInfo:
        with contextlib.suppress(SlurmCommandError):
            self._run(["scancel", job])
        return self._record(task_dir, job, {"message": why})

    def _record(self, task_dir: Path, job: str, fields: dict[str, object]) -> TaskInfo:
        """Slurm's verdict on a job that ended without the runner's result, kept as the
        task's ``result.json`` (it then stands after Slurm has forgotten the job)."""
        if not (task_dir / RESULT).exists():
            write_atomic(
                task_dir / RESULT,
                {"exit_code": None, "ended_at": time.time(), "job": job, **fields},
            )
        info = self._result(task_dir)
        if info is None:  # never: just written
            raise ConnectorError(f"task {task_dir}: result not readable")
        return info


@dataclass
class JobCompletionLog:
    """The job completion log of a cluster (``JobCompType=jobcomp/filetxt``), read
    incrementally: the last record of each working directory."""

    path: Path
    offset: int = 0

    def __post_init__(self) -> None:
        self._by_dir: dict[str, SlurmJob] = {}

    @classmethod
    def of_cluster(cls, conf: str | None, timeout: float = 60.0) -> JobCompletionLog | None:
        """The cluster's log when it keeps one as a file (``scontrol show config``)."""
        out = slurm_command(["scontrol", "show", "config"], conf, timeout)
        settings = {}
        for line in out.splitlines():
            key, sep, value = line.partition("=")
            if sep:
                settings[key.strip()] = value.strip()
        if settings.get("JobCompType") != "jobcomp/filetxt":
            return None
        loc = settings.get("JobCompLoc", "")
        return cls(Path(loc)) if loc else None

    def find(self, workdir: str) -> SlurmJob | None:
        self._read()
        return self._by_dir.get(workdir)

    def records(self) -> list[SlurmJob]:
        """Every record read so far (the last per working directory)."""
        self._read()
        return list(self._by_dir.values())

    def _read(self) -> None:
        try:
            size = self.path.stat().st_size
        except OSError:
            return
        if size < self.offset:  # rotated or truncated: read it again
            self.offset = 0
            self._by_dir.clear()
        if size == self.offset:
            return
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read()
        end = data.rfind(b"\n") + 1  # whole lines only
        self.offset += end
        for raw in data[:end].decode("utf-8", errors="replace").splitlines():
            rec = parse_jobcomp_line(raw)
            if rec is not None and rec.workdir:
                self._by_dir[rec.workdir] = rec


_FIELD = re.compile(r"(?:^|\s)([A-Za-z]+)=")


def parse_jobcomp_line(line: str) -> SlurmJob | None:
    """A ``jobcomp/filetxt`` record (``JobId=5 ... JobState=NODE_FAIL ... WorkDir=/x ...``)."""
    marks = list(_FIELD.finditer(line))
    fields = {}
    for i, m in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(line)
        fields[m.group(1)] = line[m.end() : end].strip()
    job = fields.get("JobId", "")
    if not job.isdigit():
        return None
    return SlurmJob(
        job,
        fields.get("JobState", ""),
        "",
        fields.get("Name", ""),
        fields.get("WorkDir", ""),
        fields.get("ExitCode", ""),
    )


def _claim_time(task_dir: Path) -> float | None:
    """When the task's runner claimed it (None: not claimed, or claimed by a cancel): the
    claim's ``at`` when it records one, else its modification time (``runner.sh`` reads no
    clock: the claim file is made just before the task starts)."""
    path = task_dir / CLAIM
    try:
        made = path.stat().st_mtime
        data = json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, json.JSONDecodeError):
        return None
    if not isinstance(data, dict) or data.get("cancelled"):
        return None
    at = data.get("at")
    return float(at) if isinstance(at, int | float) else made


def _claim_job(task_dir: Path) -> str:
    try:
        data = json.loads((task_dir / CLAIM).read_text(encoding="utf-8") or "{}")
    except (OSError, json.JSONDecodeError):
        return ""
    job = data.get("job", "")
    return str(job) if job else ""


def write_atomic_text(path: Path, text: str) -> None:
    """Write a small text file so that readers see nothing or all of it."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


__all__ = [
    "JobCompletionLog",
    "JobRequest",
    "SlurmConnector",
    "SlurmJob",
    "job_name",
    "job_request",
    "parse_jobcomp_line",
]
