"""The ``local`` connector: a site is a bounded pool of real processes in a directory of its own.

Each task gets ``<workdir>/tasks/<run>/<step>/<attempt>/`` with ``spec.json``;
its inputs are staged into ``in/`` and it writes its outputs into ``out/``
(file names are item ids made safe for a file system; the directories are in
the task's environment as ``CONTINUUM_IN`` and ``CONTINUUM_OUT``). The task
runs through ``runner.sh`` (the shell twin of ``runner.py``: exclusive claim, result
file), in a session of its own so that it survives the orchestrator.
The handle is the task directory: after a restart, ``status`` reads the
claim and result files and checks the recorded process.

A task costs two processes (``/bin/sh`` running ``runner.sh``, and the task's shell). The
connector watches its runners through process file descriptors (``wakeup_fds``, Linux's
``pidfd``), so an executor waiting for work wakes the moment a task ends instead of polling
on a timer.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import time
from collections import deque
from pathlib import Path
from typing import Any

from orchestrator.connectors.base import (
    ConnectorError,
    SiteConnector,
    TaskInfo,
    TaskSpec,
    TaskStatus,
    _safe,
)
from orchestrator.connectors.runner import CLAIM, RESULT, SPEC, write_atomic

RUNNER_SCRIPT = str(Path(__file__).with_name("runner.sh"))
"""The shell runner (same protocol as ``runner.py``: claim, run ``task.sh``, result file).
A task then costs two shell starts (the runner, the task) rather than a Python interpreter."""
RUNNER_SHELL = "/bin/sh"
"""What runs ``runner.sh``: the system's POSIX shell (dash on Debian starts in a fraction of
bash's time; any POSIX sh works)."""


def safe_name(item_id: str) -> str:
    """The file name under which an item lives in a task's ``in/`` or ``out/``."""
    return _safe(item_id)


class TaskFolderConnector(SiteConnector):
    """A site whose handles are task folders on a file system this host sees (this host's
    own, or a cluster's shared one): outputs, logs and located inputs are paths there."""

    def output_path(self, handle: str, item_id: str) -> Path:
        return Path(handle) / "out" / safe_name(item_id)

    def source_file(self, path: str, run_id: str, item_id: str) -> Path:
        """The site's files are this host's: the path itself, when it is a file."""
        p = Path(path).expanduser()
        if not p.is_file():
            raise ConnectorError(f"input {item_id}: no file {path} at site {self.site_id}")
        return p

    def log_path(self, handle: str, stream: str) -> Path | None:
        return Path(handle) / stream


class LocalConnector(TaskFolderConnector):
    """Runs tasks as local processes, at most ``slots`` cores' worth at a time."""

    def __init__(
        self,
        site_id: str,
        workdir: str | Path,
        slots: int | None = None,
        lookahead: int | None = None,
    ) -> None:
        self.site_id = site_id
        self.workdir = Path(workdir).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.slots = slots or os.cpu_count() or 1
        if self.slots < 1:
            raise ValueError(f"slots must be >= 1, got {slots}")
        # Tasks taken beyond the free slots (``capacity``): queued here, they start the
        # moment a slot frees up, without waiting for the executor's next pass.
        self.lookahead = self.slots if lookahead is None else lookahead
        if self.lookahead < 0:
            raise ValueError(f"lookahead must be >= 0, got {lookahead}")
        self._queue: deque[tuple[str, int]] = deque()
        self._queued: set[str] = set()  # the handles in _queue: O(1) membership
        # handle -> (runner, cores, its pidfd or -1 where the system has none)
        self._running: dict[str, tuple[subprocess.Popen[bytes], int, int]] = {}
        # handle -> pidfd of a runner that ended, kept open (readable) until ``status`` has
        # reported the task's end or ``wakeup_fds`` has handed it out once: an executor
        # about to sleep then wakes at once
        self._ended: dict[str, int] = {}
        self._handed: list[int] = []  # ended pidfds handed out, closed at the next call
        self._busy = 0  # cores of the running tasks
        self._down = False

    # -- the contract ----------------------------------------------------------------
    def handle_for(self, spec: TaskSpec) -> str:
        return str(self.workdir / "tasks" / spec.key())

    def submit(self, spec: TaskSpec) -> str:
        if self._down:
            raise ConnectorError(f"site {self.site_id} is down")
        handle = str(prepare_task(self.workdir, self.site_id, spec))
        if handle not in self._running and handle not in self._queued:
            self._queue.append((handle, min(max(spec.cores, 1), self.slots)))
            self._queued.add(handle)
        self._dispatch()
        return handle

    def status(self, handle: str) -> TaskInfo:
        self._reap()
        self._dispatch()
        task_dir = Path(handle)
        # Tasks of this process first, from memory: no file to read.
        if handle in self._queued:
            return TaskInfo(TaskStatus.QUEUED, workdir=task_dir)
        if handle in self._running:
            # Its runner is alive: the task runs (or is writing its result: the next
            # call reads it, once the runner has exited).
            return TaskInfo(TaskStatus.RUNNING, workdir=task_dir)
        fd = self._ended.pop(handle, -1)
        if fd >= 0:
            os.close(fd)
        done = read_result(task_dir)
        if done is not None:
            return done
        claim = task_dir / CLAIM
        if claim.exists():
            pid, at = _read_claim(claim)
            just_claimed = pid is None and time.time() - at < 10.0
            if just_claimed or (pid is not None and _alive(pid)):
                return TaskInfo(TaskStatus.RUNNING, started_at=at, workdir=task_dir)
            # Re-check: the runner may have finished between the two reads.
            done = read_result(task_dir)
            if done is not None:
                return done
            return TaskInfo(
                TaskStatus.LOST, started_at=at, workdir=task_dir, message="process vanished"
            )
        if (task_dir / SPEC).exists():
            return TaskInfo(TaskStatus.NOT_STARTED, workdir=task_dir)
        return TaskInfo(TaskStatus.NOT_STARTED, message="unknown task")

    def cancel(self, handle: str) -> None:
        if handle in self._queued:
            self._queue = deque((h, c) for h, c in self._queue if h != handle)
            self._queued.discard(handle)
        task_dir = Path(handle)
        if (task_dir / RESULT).exists():
            return
        self._kill(handle)
        if task_dir.exists():
            write_atomic(
                task_dir / RESULT, {"exit_code": None, "cancelled": True, "ended_at": time.time()}
            )

    def capacity(self) -> int | None:
        """Free slots plus ``lookahead``, less what is queued here already; a site that
        is down takes anything (and refuses it: the executor then re-plans)."""
        if self._down:
            return None
        self._reap()
        self._dispatch()
        return max(0, self.slots - self._busy + self.lookahead - len(self._queue))

    def telemetry(self) -> dict[str, float]:
        self._reap()
        busy = self._busy
        return {
            "utilisation": busy / self.slots,
            "running": float(len(self._running)),
            "queued": float(len(self._queue)),
            "queue_backlog": float(sum(c for _, c in self._queue)),
        }

    def wakeup_fds(self) -> list[int]:
        """File descriptors that become readable when a running task of this site ends
        (its runner's pidfd): ``Executor.wait`` sleeps on them. A task that ended but whose
        end ``status`` has not reported yet keeps its (readable) descriptor here, so the
        executor does not sleep past it (once: the next call closes it)."""
        self._reap()
        for fd in self._handed:
            os.close(fd)
        self._handed = list(self._ended.values())
        self._ended.clear()
        return [fd for _, _, fd in self._running.values() if fd >= 0] + self._handed

    def close(self) -> None:
        self._reap()
        for fd in [*self._ended.values(), *self._handed]:
            os.close(fd)
        self._ended.clear()
        self._handed = []

    # -- failure injection (a site going down) -----------------------------------------
    def fail(self) -> None:
        """Take the site down: kill its running tasks (recorded as lost), refuse new ones."""
        self._down = True
        for handle, _ in list(self._queue):
            write_atomic(
                Path(handle) / RESULT, {"exit_code": None, "lost": True, "message": "site down"}
            )
        self._queue.clear()
        self._queued.clear()
        for handle in list(self._running):
            self._kill(handle)
            write_atomic(
                Path(handle) / RESULT,
                {"exit_code": None, "lost": True, "ended_at": time.time(), "message": "site down"},
            )

    @property
    def down(self) -> bool:
        return self._down

    def healthy(self) -> bool:
        return not self._down

    # -- internals ---------------------------------------------------------------------
    def _dispatch(self) -> None:
        while self._queue and self._busy + self._queue[0][1] <= self.slots:
            handle, cores = self._queue.popleft()
            self._queued.discard(handle)
            if (Path(handle) / RESULT).exists():
                continue  # cancelled while it waited here (by another process, too)
            proc = subprocess.Popen(
                [RUNNER_SHELL, RUNNER_SCRIPT, handle],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            self._running[handle] = (proc, cores, _pidfd(proc.pid))
            self._busy += cores

    def _reap(self) -> None:
        for handle, (proc, cores, fd) in list(self._running.items()):
            if proc.poll() is not None:
                del self._running[handle]
                self._busy -= cores
                if fd >= 0:
                    self._ended[handle] = fd  # closed once status() reports the end

    def _kill(self, handle: str) -> None:
        entry = self._running.pop(handle, None)
        if entry is not None:
            self._busy -= entry[1]
            if entry[2] >= 0:
                os.close(entry[2])
        pid = entry[0].pid if entry else _read_claim(Path(handle) / CLAIM)[0]
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        if entry:
            entry[0].wait()


def _pidfd(pid: int) -> int:
    """A file descriptor readable once process ``pid`` has ended (-1 where the system has no
    pidfd: the executor then waits on its timer)."""
    opener = getattr(os, "pidfd_open", None)
    if opener is None:
        return -1
    try:
        fd: int = opener(pid)
    except OSError:  # an old kernel, or the process is gone already
        return -1
    return fd


def prepare_task(workdir: Path, site_id: str, spec: TaskSpec) -> Path:
    """Create the task directory (``spec.json``, ``in/`` with the inputs, ``out/``)."""
    task_dir = workdir / "tasks" / spec.key()
    (task_dir / "in").mkdir(parents=True, exist_ok=True)
    (task_dir / "out").mkdir(exist_ok=True)
    for item, src in spec.inputs.items():
        dst = task_dir / "in" / safe_name(item)
        if not dst.exists():
            if _same_device(src, task_dir):
                os.link(src, dst)
            else:
                shutil.copyfile(src, dst)
    for item, at in spec.site_inputs.items():
        link_site_input(Path(at), task_dir / "in" / safe_name(item), item)
    env = {
        **spec.env,
        "CONTINUUM_IN": str(task_dir / "in"),
        "CONTINUUM_OUT": str(task_dir / "out"),
        "CONTINUUM_SITE": site_id,
    }
    command = spec.command if isinstance(spec.command, str) else list(spec.command)
    if not (task_dir / SPEC).exists():
        script = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items())
        script += command if isinstance(command, str) else shlex.join(command)
        (task_dir / "task.sh").write_text(script + "\n", encoding="utf-8")
        # spec.json last: its presence says the task directory is complete. Renamed into
        # place (readers see all or nothing) but not synced: like task.sh, it is made
        # again from the run store if lost (the step is then "not started" and resubmitted).
        tmp = task_dir / (SPEC + ".tmp")
        tmp.write_text(
            json.dumps({"command": command, "env": env, "cores": spec.cores}), encoding="utf-8"
        )
        os.replace(tmp, task_dir / SPEC)
    return task_dir


def link_site_input(src: Path, dst: Path, item: str) -> None:
    """Put an input that lives at the site into a task's ``in/`` (a symbolic link: the data
    does not move); ``ConnectorError`` when there is no such file at the site."""
    src = src.expanduser()
    if not src.is_file():
        raise ConnectorError(f"input {item}: no file {src} at this site")
    if not dst.is_symlink() and not dst.exists():
        dst.symlink_to(src.resolve())


def read_result(task_dir: Path) -> TaskInfo | None:
    """The finished state of a task from its result file, or None while there is none (or
    while it is being written: ``runner.sh`` writes it in one short write, not renamed in).

    The start and end times are the result's own when it records them (``runner.py``),
    else the modification times of the claim (made just before the task starts) and of
    the result (written just after it ends).
    """
    path = task_dir / RESULT
    try:
        with open(path, "rb") as f:
            raw = f.read()
            ended = os.fstat(f.fileno()).st_mtime
    except FileNotFoundError:
        return None
    try:
        data: dict[str, Any] = json.loads(raw)
    except ValueError:
        return None  # not complete yet
    if not isinstance(data, dict) or ("exit_code" not in data and not data.get("cancelled")):
        return None
    if "started_at" not in data:
        with contextlib.suppress(OSError):
            data["started_at"] = (task_dir / CLAIM).stat().st_mtime
    data.setdefault("ended_at", ended)
    code = data.get("exit_code")
    if data.get("cancelled"):
        st = TaskStatus.CANCELLED
    elif data.get("lost"):
        st = TaskStatus.LOST
    else:
        st = TaskStatus.SUCCEEDED if code == 0 else TaskStatus.FAILED
    return TaskInfo(
        st, code, data.get("started_at"), data.get("ended_at"), task_dir, data.get("message", "")
    )


def _read_claim(path: Path) -> tuple[int | None, float]:
    """The runner's pid (None while the claim is being written) and when the claim was made
    (its modification time; ``runner.py`` also records it as ``at``)."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
            made = os.fstat(f.fileno()).st_mtime
    except OSError:
        return None, time.time()
    try:
        data = json.loads(raw or b"{}")
    except ValueError:
        return None, made
    if not isinstance(data, dict):
        return None, made
    pid = data.get("pid")
    return (pid if isinstance(pid, int) else None), float(data.get("at") or made)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is not alive: look at /proc where it exists.
    stat = Path(f"/proc/{pid}/stat")
    if stat.exists():
        try:
            return stat.read_text().split(") ", 1)[1][0] != "Z"
        except (OSError, IndexError):
            return True
    return True


def _same_device(a: Path, b: Path) -> bool:
    try:
        return os.stat(a).st_dev == os.stat(b).st_dev
    except OSError:
        return False
