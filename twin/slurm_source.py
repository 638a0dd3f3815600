"""Telemetry read from a Slurm scheduler: ``SlurmTelemetry``, a ``TelemetrySource``.

A Slurm site's twin is fed by the scheduler itself (``sinfo`` and ``squeue``,
with ``SLURM_CONF`` when the cluster's configuration is not the default one),
one partition at a time:

* ``utilisation``: the share of the partition's CPUs that cannot take new work,
  ``(allocated + other) / total`` (``sinfo %C``; *other* are the CPUs of nodes
  down, drained or failing), so that the twin's available-core forecast is what
  the scheduler could start now;
* ``backlog``: pending work in core-seconds, each pending job's CPUs times its
  time limit (a job without one counts ``unlimited_job_s``);
* ``in_service``: the share of the partition's CPUs on nodes in service (not
  down, drained, draining, failing or not responding): below 1 the twin calls
  the site degraded;
* ``up``: false when the partition is not up or no node of it is in service:
  the twin calls the site down.

The names of the nodes out of service go to the sample's ``private`` part
(the twin never reads it, nothing derived from it leaves the twin).

``slurm_command`` runs a Slurm client command; ``SlurmUnreachable`` says the
controller did not answer (the command is missing, timed out, or could not
contact it), ``SlurmCommandError`` that it refused the request.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from twin.errors import TwinError
from twin.telemetry import TelemetrySample, TelemetrySource

OUT_OF_SERVICE = ("down", "drain", "fail", "maint", "reboot", "power", "unknown", "future", "inval")
"""Node states (prefixes of ``sinfo %T``) in which a node takes no new work."""
NOT_RESPONDING = "*"
"""``sinfo`` appends it to the state of a node that does not answer the controller."""


class SlurmCommandError(TwinError):
    """A Slurm command refused what was asked (its message says why)."""


class SlurmUnreachable(SlurmCommandError):
    """The Slurm controller could not be reached (or its client commands are missing)."""


UNREACHABLE_HINTS = (
    "unable to contact slurm controller",
    "slurm_load_",
    "connection refused",
    "socket timed out",
    "zero bytes were transmitted",
    "communication connection failure",
    "unable to establish",
    "slurm backup controller in standby",
)


def slurm_env(conf: str | Path | None) -> dict[str, str]:
    """The environment of a Slurm client command (``SLURM_CONF`` set when ``conf`` is)."""
    env = dict(os.environ)
    if conf is not None:
        env["SLURM_CONF"] = str(conf)
    return env


def slurm_command(
    args: Sequence[str],
    conf: str | Path | None = None,
    timeout: float = 60.0,
    stdin: str | None = None,
) -> str:
    """Run a Slurm client command (``args[0]`` is ``sbatch``, ``squeue``...); its stdout.

    Raises ``SlurmUnreachable`` when the command is missing, times out or cannot contact
    the controller, ``SlurmCommandError`` (with Slurm's message) when it fails otherwise.
    """
    try:
        proc = subprocess.run(
            list(args),
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=slurm_env(conf),
            check=False,
        )
    except FileNotFoundError:
        raise SlurmUnreachable(f"{args[0]} is not installed (no Slurm client here)") from None
    except subprocess.TimeoutExpired:
        raise SlurmUnreachable(f"{args[0]} did not answer within {timeout:.0f} s") from None
    if proc.returncode != 0:
        message = (proc.stderr or proc.stdout).strip().replace("\n", "; ")[:500]
        low = message.lower()
        if any(h in low for h in UNREACHABLE_HINTS):
            raise SlurmUnreachable(f"{args[0]}: {message}")
        raise SlurmCommandError(f"{args[0]} exited {proc.returncode}: {message}")
    return proc.stdout


def parse_duration(text: str) -> float | None:
    """Seconds of a Slurm duration (``[days-]hours:minutes:seconds``, ``minutes:seconds``,
    ``minutes``); None for ``UNLIMITED``, ``NOT_SET``, ``INVALID`` or empty."""
    text = text.strip()
    if not text or not (text[0].isdigit()):
        return None
    try:
        if "-" in text:  # days-hours[:minutes[:seconds]]
            d, rest = text.split("-", 1)
            parts = [float(p) for p in rest.split(":")] + [0.0, 0.0]
            return int(d) * 86400 + parts[0] * 3600 + parts[1] * 60 + parts[2]
        parts = [float(p) for p in text.split(":")]
    except ValueError:
        return None
    if len(parts) == 1:  # minutes
        return parts[0] * 60
    if len(parts) == 2:  # minutes:seconds
        return parts[0] * 60 + parts[1]
    return parts[-3] * 3600 + parts[-2] * 60 + parts[-1]  # hours:minutes:seconds


@dataclass(frozen=True)
class PartitionState:
    """What the scheduler says of one partition at one time (CPU counts are summed over
    its nodes; ``down_nodes`` are the nodes out of service, for the private part)."""

    partition: str
    available: bool
    cpus_allocated: int
    cpus_idle: int
    cpus_other: int
    cpus_total: int
    cpus_in_service: int
    nodes: int
    down_nodes: tuple[str, ...]
    pending_jobs: int
    pending_core_s: float
    at: float = field(default_factory=time.time)

    @property
    def utilisation(self) -> float:
        """The share of CPUs that cannot take new work (allocated, or on nodes out of service)."""
        if self.cpus_total <= 0:
            return 1.0
        return min(1.0, (self.cpus_allocated + self.cpus_other) / self.cpus_total)

    @property
    def in_service(self) -> float:
        """The share of CPUs on nodes in service."""
        return self.cpus_in_service / self.cpus_total if self.cpus_total > 0 else 0.0

    @property
    def up(self) -> bool:
        """The partition takes work: it is up and a node of it is in service."""
        return self.available and self.cpus_in_service > 0


def node_in_service(state: str) -> bool:
    """Whether a node in ``sinfo %T`` state ``state`` takes new work."""
    s = state.strip().lower()
    if s.endswith(NOT_RESPONDING) or "*" in s:
        return False
    return not s.startswith(OUT_OF_SERVICE)


def read_partition(
    partition: str | None,
    conf: str | Path | None = None,
    unlimited_job_s: float = 3600.0,
    timeout: float = 30.0,
) -> PartitionState:
    """The state of ``partition`` (None: every node of the cluster) from ``sinfo`` and
    ``squeue``; ``SlurmUnreachable`` when the controller does not answer."""
    where = ["-p", partition] if partition else []
    rows = slurm_command(
        ["sinfo", "--noheader", "--Node", *where, "--format=%N|%T|%C|%a|%R"], conf, timeout
    )
    seen: set[str] = set()
    alloc = idle = other = total = in_service = 0
    available = False
    down: list[str] = []
    name = partition or ""
    for line in rows.splitlines():
        parts = line.strip().split("|")
        if len(parts) < 5 or parts[0] in seen:
            continue  # a node listed once per partition when no partition is given
        node, state, cpus, avail, part = parts[:5]
        seen.add(node)
        a, i, o, t = (int(x) for x in cpus.split("/"))
        alloc, idle, other, total = alloc + a, idle + i, other + o, total + t
        available = available or avail.strip().lower() == "up"
        name = name or part.rstrip("*")
        if node_in_service(state):
            in_service += t
        else:
            down.append(node)
    jobs = slurm_command(
        ["squeue", "--noheader", "--states=PENDING", *where, "--format=%C|%l"], conf, timeout
    )
    pending = 0
    core_s = 0.0
    for line in jobs.splitlines():
        parts = line.strip().split("|")
        if len(parts) < 2 or not parts[0].isdigit():
            continue
        limit = parse_duration(parts[1])
        pending += 1
        core_s += int(parts[0]) * (limit if limit is not None else unlimited_job_s)
    return PartitionState(
        partition=name,
        available=available,
        cpus_allocated=alloc,
        cpus_idle=idle,
        cpus_other=other,
        cpus_total=total,
        cpus_in_service=in_service,
        nodes=len(seen),
        down_nodes=tuple(sorted(down)),
        pending_jobs=pending,
        pending_core_s=core_s,
    )


class SlurmTelemetry(TelemetrySource):
    """Samples of ``site`` read from its Slurm partition (see the module docstring).

    The scheduler is read at most once every ``min_interval_s`` seconds (``current``
    returns the last reading in between, and ``poll`` one sample per reading). A
    controller that does not answer gives a sample with ``up`` false once it has been
    silent for ``unreachable_down_s`` seconds (nothing before: a restarting controller is
    not a site down).
    """

    def __init__(
        self,
        site: str,
        partition: str | None = None,
        conf: str | Path | None = None,
        min_interval_s: float = 1.0,
        unreachable_down_s: float = 30.0,
        unlimited_job_s: float = 3600.0,
    ) -> None:
        self.site = site
        self.partition = partition
        self.conf = conf
        self.min_interval_s = min_interval_s
        self.unreachable_down_s = unreachable_down_s
        self.unlimited_job_s = unlimited_job_s
        self.last: PartitionState | None = None
        self.error: str = ""
        self._read_at = -float("inf")
        self._fresh = False
        self._unreachable_since: float | None = None

    def read(self) -> PartitionState | None:
        """A fresh reading of the partition, or None while the controller does not answer
        (``error`` says why)."""
        self._read_at = time.monotonic()
        self._fresh = True
        try:
            state = read_partition(self.partition, self.conf, self.unlimited_job_s)
        except SlurmUnreachable as exc:
            self.error = str(exc)
            if self._unreachable_since is None:
                self._unreachable_since = time.monotonic()
            return None
        self.error = ""
        self._unreachable_since = None
        self.last = state
        return state

    def current(self) -> PartitionState | None:
        """The partition as read at most ``min_interval_s`` ago (None while the controller
        does not answer)."""
        if time.monotonic() - self._read_at >= self.min_interval_s:
            return self.read()
        return None if self.error else self.last

    @property
    def unreachable_for(self) -> float:
        """Seconds since the controller stopped answering (0 while it answers)."""
        if self._unreachable_since is None:
            return 0.0
        return time.monotonic() - self._unreachable_since

    def poll(self, until: float) -> list[TelemetrySample]:
        """One sample, stamped ``until``, per reading of the scheduler not returned yet."""
        state = self.current()
        if not self._fresh:
            return []
        self._fresh = False
        if state is None:
            if self.unreachable_for < self.unreachable_down_s:
                return []
            return [
                TelemetrySample(
                    site=self.site, timestamp=until, up=False, private={"error": self.error}
                )
            ]
        return [self.sample(state, until)]

    def sample(self, state: PartitionState, at: float) -> TelemetrySample:
        """The sample a partition reading gives (see the module docstring)."""
        private: Mapping[str, str] = {"partition": state.partition}
        if state.down_nodes:
            private = {**private, "nodes_out_of_service": ",".join(state.down_nodes)}
        return TelemetrySample(
            site=self.site,
            timestamp=at,
            utilisation=state.utilisation,
            backlog=state.pending_core_s,
            in_service=state.in_service,
            up=state.up,
            private=dict(private),
        )


__all__ = [
    "PartitionState",
    "SlurmCommandError",
    "SlurmTelemetry",
    "SlurmUnreachable",
    "node_in_service",
    "parse_duration",
    "read_partition",
    "slurm_command",
    "slurm_env",
]
