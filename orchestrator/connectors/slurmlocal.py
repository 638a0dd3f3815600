"""A real Slurm cluster on this machine: for the tests, the benchmark and trying the connector.

``LocalSlurm(root)`` writes a configuration under ``root`` (``slurm.conf``, a munge key,
state, spool and log folders, the job completion log ``jobcomp.txt``) and starts
``munged``, ``slurmctld`` and one ``slurmd`` per node (``slurmd -N NAME``: several nodes
on one host, each on a port of its own), each as a process of its own whose PID it keeps,
without systemd or cgroups (``proctrack/linuxproc``, ``task/none``). Every Slurm client
command needs ``SLURM_CONF`` pointing at the configuration (``env``). ``stop`` ends the
daemons by PID. Debian's packages (``apt-get install slurm-wlm munge``, or just
``slurmctld slurmd slurm-client munge``) are all it needs; ``slurm_missing()`` says what is not
there.

Ports are chosen free when the cluster starts, so several clusters (test sessions of
several checkouts) can run side by side. The daemons run as the current user (root in
CI: a non-root ``slurmd`` cannot start jobs of other users, which these tests never need).
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from twin.slurm_source import SlurmCommandError, slurm_command

SBIN = ("/usr/sbin", "/usr/local/sbin", "/sbin")
DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "sinfo", "scontrol", "scancel")


def find_program(name: str) -> str | None:
    """A program on the PATH or in the sbin folders (daemons live there)."""
    found = shutil.which(name)
    if found:
        return found
    for d in SBIN:
        candidate = Path(d) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def slurm_missing() -> str | None:
    """Why a local Slurm cluster cannot start here (a program missing), or None."""
    lacking = [p for p in (*DAEMONS, *CLIENTS) if find_program(p) is None]
    if lacking:
        return (
            f"Slurm is not installed ({', '.join(lacking)} missing): "
            "apt-get install slurm-wlm munge (make test does it as root)"
        )
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class LocalSlurm:
    """A single-host Slurm cluster under ``root`` (see the module docstring).

    ``partitions`` maps a partition name to its nodes (default: ``debug`` with every node);
    the first is the default partition. ``batch_sched_delay_zero`` sets
    ``SchedulerParameters=batch_sched_delay=0`` (a batch job is scheduled when it is
    submitted rather than in the next scheduling pass); False keeps the scheduler's default.
    """

    root: Path
    nodes: int = 2
    cpus: int = 2
    partitions: dict[str, tuple[str, ...]] = field(default_factory=dict)
    batch_sched_delay_zero: bool = True
    min_job_age_s: int = 300
    kill_wait_s: int = 2
    memory_mb: int = 4000
    pids: dict[str, int] = field(default_factory=dict)
    _procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.root = Path(self.root).resolve()
        if self.nodes < 1 or self.cpus < 1:
            raise ValueError("a cluster needs at least one node with one CPU")
        if not self.partitions:
            self.partitions = {"debug": self.node_names}

    # -- paths and names ---------------------------------------------------------------
    @property
    def node_names(self) -> tuple[str, ...]:
        return tuple(f"n{i}" for i in range(1, self.nodes + 1))

    @property
    def conf(self) -> Path:
        return self.root / "slurm.conf"

    @property
    def jobcomp(self) -> Path:
        """The job completion log (``JobCompType=jobcomp/filetxt``)."""
        return self.root / "jobcomp.txt"

    @property
    def env(self) -> dict[str, str]:
        """What a Slurm client command needs in its environment."""
        return {"SLURM_CONF": str(self.conf)}

    @property
    def default_partition(self) -> str:
        return next(iter(self.partitions))

    # -- life cycle ----------------------------------------------------------------------
    def start(self, timeout: float = 120.0) -> LocalSlurm:
        """Write the configuration, start the daemons, wait until every node is idle;
        ``RuntimeError`` (with the daemons' last log lines) when they do not come up."""
        reason = slurm_missing()
        if reason is not None:
            raise RuntimeError(reason)
        for d in ("munge", "state", "log", *(f"spool/{n}" for n in self.node_names)):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        (self.root / "munge").chmod(0o711)  # munged's socket folder must be o+x
        key = self.root / "munge" / "munge.key"
        if not key.exists():
            key.write_bytes(os.urandom(1024))
            key.chmod(0o400)
        self.conf.write_text(self.configuration(), encoding="utf-8")
        try:
            self._start_munge()
            self._spawn("slurmctld", [self._bin("slurmctld"), "-D", "-f", str(self.conf)])
            self._wait(lambda: self._answers(), timeout, "slurmctld to answer")
            for node in self.node_names:
                self._spawn(
                    f"slurmd-{node}", [self._bin("slurmd"), "-D", "-f", str(self.conf), "-N", node]
                )
            self._wait(lambda: self.idle_nodes() == set(self.node_names), timeout, "idle nodes")
        except Exception:
            self.stop()
            raise
        self.pid_file.write_text(json.dumps(self.pids), encoding="utf-8")
        return self

    @property
    def pid_file(self) -> Path:
        """The daemons' PIDs (``stop`` of another process reads them: ``attach``)."""
        return self.root / "pids.json"

    @classmethod
    def attach(cls, root: Path) -> LocalSlurm:
        """The cluster started under ``root`` by another process (to stop it)."""
        cluster = cls(root)
        try:
            pids = {k: int(v) for k, v in json.loads(cluster.pid_file.read_text()).items()}
        except (OSError, ValueError) as exc:
            raise RuntimeError(f"no cluster started under {root}: {exc}") from None
        # only the processes that are still those daemons (a PID may have been reused)
        cluster.pids = {k: p for k, p in pids.items() if k.split("-")[0] in _cmdline(p)}
        return cluster

    def stop(self, timeout: float = 15.0) -> None:
        """End the daemons by PID (SIGTERM, then SIGKILL after ``timeout``)."""
        order = [n for n in self.pids if n.startswith("slurmd")] + ["slurmctld", "munged"]
        for name in order:
            pid = self.pids.pop(name, None)
            proc = self._procs.pop(name, None)
            if pid is None:
                continue
            _signal(pid, signal.SIGTERM)
            if proc is not None:
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    _signal(pid, signal.SIGKILL)
                    proc.wait(5)
            else:
                _wait_gone(pid, timeout)
        self.pid_file.unlink(missing_ok=True)

    def restart_controller(self, clear_state: bool = False, timeout: float = 60.0) -> None:
        """Stop and start ``slurmctld`` (``clear_state``: ``-c``, forgetting every job, as a
        controller whose state was lost)."""
        pid = self.pids.pop("slurmctld", None)
        proc = self._procs.pop("slurmctld", None)
        if pid is not None:
            _signal(pid, signal.SIGTERM)
            if proc is not None:
                proc.wait(timeout)
        args = [self._bin("slurmctld"), "-D", "-f", str(self.conf)]
        self._spawn("slurmctld", [*args, "-c"] if clear_state else args)
        self._wait(lambda: self._answers(), timeout, "slurmctld to answer again")
        self._wait(lambda: self.idle_or_busy() == set(self.node_names), timeout, "nodes back")

    def __enter__(self) -> LocalSlurm:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- operations ----------------------------------------------------------------------
    def scontrol(self, *args: str) -> str:
        return slurm_command(["scontrol", *args], self.conf)

    def set_nodes(self, state: str, nodes: tuple[str, ...] | None = None, reason: str = "") -> None:
        """``scontrol update nodename=... state=STATE [reason=...]`` (down, drain, resume) of
        ``nodes`` (default: the nodes of the default partition)."""
        names = ",".join(nodes or self.partitions[self.default_partition])
        extra = [f"reason={reason or 'continuum test'}"] if state.lower() != "resume" else []
        self.scontrol("update", f"nodename={names}", f"state={state}", *extra)

    def restore(self, timeout: float = 60.0) -> None:
        """Resume the nodes out of service (down, drained) and wait until they take work."""
        states = self.node_states()
        out = tuple(n for n, s in states.items() if s not in ("idle", "mixed", "allocated"))
        if out:
            with contextlib.suppress(SlurmCommandError):  # e.g. a node still completing
                self.set_nodes("resume", out)
        self._wait(lambda: self.idle_or_busy() == set(self.node_names), timeout, "nodes back")

    def node_states(self) -> dict[str, str]:
        out = slurm_command(["sinfo", "--noheader", "--Node", "--format=%N %T"], self.conf)
        states = {}
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 2:
                states[parts[0]] = parts[1]
        return states

    def idle_nodes(self) -> set[str]:
        try:
            return {n for n, s in self.node_states().items() if s == "idle"}
        except SlurmCommandError:
            return set()

    def idle_or_busy(self) -> set[str]:
        """Nodes that answer and take work (idle, mixed or allocated)."""
        try:
            states = self.node_states()
        except SlurmCommandError:
            return set()
        return {n for n, s in states.items() if s in ("idle", "mixed", "allocated")}

    def cancel_all(self, partition: str | None = None) -> None:
        """Cancel every job of this user (of ``partition`` only, when given)."""
        where = [f"--partition={partition}"] if partition else []
        with contextlib.suppress(SlurmCommandError):
            slurm_command(["scancel", "--full", f"--user={getpass.getuser()}", *where], self.conf)

    def running(self) -> bool:
        return bool(self.pids) and all(_alive(pid) for pid in self.pids.values())

    # -- configuration -------------------------------------------------------------------
    def configuration(self) -> str:
        """The text of ``slurm.conf``."""
        d = self.root
        user = getpass.getuser()
        host = socket.gethostname().split(".")[0]
        sched = "SchedulerParameters=batch_sched_delay=0\n" if self.batch_sched_delay_zero else ""
        nodes = "".join(
            f"NodeName={n} NodeHostname={host} NodeAddr=127.0.0.1 Port={free_port()} "
            f"CPUs={self.cpus} RealMemory={self.memory_mb} State=UNKNOWN\n"
            for n in self.node_names
        )
        parts = "".join(
            f"PartitionName={name} Nodes={','.join(members)} "
            f"Default={'YES' if i == 0 else 'NO'} MaxTime=INFINITE State=UP\n"
            for i, (name, members) in enumerate(self.partitions.items())
        )
        return f"""# A single-host Slurm cluster (continuum: orchestrator.connectors.slurmlocal)
ClusterName=continuum
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={free_port()}
SlurmUser={user}
SlurmdUser={user}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={d}/munge/munge.sock
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool/%n
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd-%n.pid
SlurmctldLogFile={d}/log/slurmctld.log
SlurmdLogFile={d}/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc={self.jobcomp}
MpiDefault=none
MailProg=/bin/true
ReturnToService=1
MinJobAge={self.min_job_age_s}
KillWait={self.kill_wait_s}
{sched}{nodes}{parts}"""

    # -- internals -----------------------------------------------------------------------
    def _bin(self, name: str) -> str:
        found = find_program(name)
        if found is None:
            raise RuntimeError(f"{name} is not installed")
        return found

    def _start_munge(self) -> None:
        m = self.root / "munge"
        self._spawn(
            "munged",
            [
                self._bin("munged"),
                "-F",
                f"--key-file={m / 'munge.key'}",
                f"--socket={m / 'munge.sock'}",
                f"--pid-file={m / 'munged.pid'}",
                f"--log-file={m / 'munged.log'}",
                f"--seed-file={m / 'munged.seed'}",
                "--force",
            ],
        )
        self._wait(lambda: (m / "munge.sock").exists(), 30.0, "munged's socket")

    def _spawn(self, name: str, args: list[str]) -> None:
        log = open(self.root / "log" / f"{name}.out", "ab")  # noqa: SIM115 - the daemon's
        try:
            proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self.env},
                start_new_session=True,
            )
        finally:
            log.close()
        self._procs[name] = proc
        self.pids[name] = proc.pid

    def _answers(self) -> bool:
        try:
            self.scontrol("ping")
        except SlurmCommandError:
            return False
        return True

    def _wait(self, check: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        pause = 0.05
        while time.monotonic() < deadline:
            dead = [n for n, p in self._procs.items() if p.poll() is not None]
            if dead:
                raise RuntimeError(
                    f"{', '.join(dead)} exited while waiting for {what}: {self._tail()}"
                )
            if check():
                return
            time.sleep(pause)
            pause = min(pause * 1.5, 0.5)
        raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}: {self._tail()}")

    def _tail(self) -> str:
        lines: list[str] = []
        for f in sorted((self.root / "log").glob("*")):
            with contextlib.suppress(OSError):
                tail = f.read_text(errors="replace").strip().splitlines()[-3:]
                lines += [f"{f.name}: {t}" for t in tail]
        return " | ".join(lines)[-3000:]


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def _alive(pid: int) -> bool:
    """The process exists and is not a zombie (a daemon whose starter exited is reaped by
    whoever adopted it, which may take a while)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return True


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _wait_gone(pid: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _alive(pid):
        _signal(pid, signal.SIGKILL)


__all__ = ["LocalSlurm", "find_program", "slurm_missing"]
