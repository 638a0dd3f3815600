"""The site agent: runs inside a site that accepts no inbound connection and pulls its work.

``continuum site-agent --site ID --server URL --token T`` loops: heartbeat, upload the files
of the site the orchestrator asked for (``--export-root`` says which folders may leave the
site), lease the next task from the federation API, download its inputs (sha256 checked
against the server's header; inputs that already live at the site are linked, not moved),
hand its task folder to the site's ``TaskLauncher`` while renewing the lease and shipping its
stdout and stderr as they grow, upload every output with its sha256, report the result.
Only outbound HTTPS from the site is needed.

Two launchers, one seam: ``ProcessLauncher`` runs the folder through the same shell runner
as the local connector (claim, ``task.sh``, ``result.json``) on this host, one task
at a time by default; ``SlurmLauncher`` (``continuum site-agent --slurm [--partition P]``)
submits it as a batch job to the site's Slurm through ``SlurmConnector`` (cores, memory and
time limit from the step, the run, step and attempt ids in the job's name and comment),
keeping up to ``parallel`` tasks in flight, and reports the partition's telemetry in its
heartbeats.

The agent outlives the service: while the service is unreachable (restarting, a network
cut) every call is retried with a growing pause, a running task keeps running, and its
result is reported once the service answers again (``server_wait_s`` bounds the wait).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shlex
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx

from orchestrator.connectors.base import (
    ConnectorError,
    TaskInfo,
    TaskStatus,
    _safe,
    sha256_file,
)
from orchestrator.connectors.local import (
    RUNNER_SCRIPT,
    RUNNER_SHELL,
    link_site_input,
    read_result,
)
from orchestrator.connectors.runner import SPEC, write_atomic
from orchestrator.connectors.slurm import SlurmConnector, job_request
from orchestrator.execution.logs import STREAMS, truncation_note

log = logging.getLogger(__name__)

RETRY_STATUS = frozenset({502, 503, 504})


class ServerGone(ConnectorError):
    """The federation API did not answer for longer than the agent waits."""


class TaskLauncher(Protocol):
    """How a site agent runs a prepared task folder (``task.sh``, ``spec.json``, ``in/``,
    ``out/``): the runner's files (``stdout``, ``stderr``, ``out/``) appear in the folder."""

    default_parallel: int
    """Tasks kept in flight when the agent is not told otherwise."""

    def start(self, folder: Path, task: Mapping[str, Any]) -> None:
        """Start the task (``ConnectorError``: it could not be started)."""

    def poll(self, folder: Path) -> TaskInfo | None:
        """None while the task runs; its outcome once it is over."""

    def telemetry(self) -> dict[str, float]:
        """What the agent's heartbeat reports of the site."""


class ProcessLauncher:
    """Runs task folders on this host through the claim runner (``runner.sh``)."""

    default_parallel = 1

    def __init__(self) -> None:
        self._procs: dict[Path, subprocess.Popen[bytes]] = {}

    def start(self, folder: Path, task: Mapping[str, Any]) -> None:
        self._procs[folder] = subprocess.Popen(
            [RUNNER_SHELL, RUNNER_SCRIPT, str(folder)],
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    def poll(self, folder: Path) -> TaskInfo | None:
        proc = self._procs.get(folder)
        if proc is not None and proc.poll() is None:
            return None
        self._procs.pop(folder, None)
        info = read_result(folder)
        if info is None:
            return TaskInfo(TaskStatus.LOST, workdir=folder, message="the runner left no result")
        return info

    def telemetry(self) -> dict[str, float]:
        load1 = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
        cpus = os.cpu_count() or 1
        return {"utilisation": min(load1 / cpus, 1.0)}


class SlurmLauncher:
    """Submits task folders to the site's Slurm as batch jobs (``SlurmConnector``)."""

    default_parallel = 32

    def __init__(self, connector: SlurmConnector) -> None:
        self.connector = connector

    def start(self, folder: Path, task: Mapping[str, Any]) -> None:
        run_id, step_id, attempt = _task_ids(str(task["handle"]))
        cores = int(task.get("cores", 1))
        request = job_request(
            run_id,
            step_id,
            attempt,
            self.connector.site_id,
            cores,
            float(task.get("memory", 0.0)),
            self.connector.time_limit_for(cores, float(task.get("work", 0.0))),
        )
        self.connector.submit_dir(folder, request)

    def poll(self, folder: Path) -> TaskInfo | None:
        info = self.connector.status(str(folder))
        return info if info.finished else None

    def telemetry(self) -> dict[str, float]:
        return self.connector.telemetry()


def _task_ids(handle: str) -> tuple[str, str, int]:
    """Run, step and attempt of a pull task (``pull:<site>:<run>/<step>/<attempt>``)."""
    key = handle.split(":", 2)[-1]
    run_id, _, rest = key.partition("/")
    step_id, _, attempt = rest.rpartition("/")
    return run_id, step_id or rest, int(attempt) if attempt.isdigit() else 1


@dataclass
class _InFlight:
    """A task handed to the launcher: its lease renewals and log shipping are due then."""

    handle: str
    folder: Path
    logs: _LogShipper
    next_renew: float
    next_ship: float


@dataclass
class SiteAgent:
    """One agent of ``site`` talking to the federation API at ``server``."""

    server: str
    site: str
    token: str
    workdir: Path
    agent_id: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    lease_s: float = 60.0
    poll_s: float = 1.0
    transport: httpx.BaseTransport | None = None
    export_roots: Sequence[Path] = ()
    """Folders whose files may leave the site when the orchestrator asks (none by default)."""
    server_wait_s: float | None = 3600.0
    """How long the agent keeps retrying an unreachable service (None: for ever)."""
    log_every_s: float = 1.0
    launcher: TaskLauncher = field(default_factory=ProcessLauncher)
    """How tasks run at the site: the claim runner on this host, or Slurm."""
    parallel: int | None = None
    """Tasks in flight at once (None: the launcher's default: 1 here, 32 on Slurm)."""
    done: int = 0
    heartbeat_telemetry: bool = True  # False when the site's own twin publishes its state

    def __post_init__(self) -> None:
        self._parallel: int = self.parallel or self.launcher.default_parallel
        if self._parallel < 1:
            raise ValueError(f"parallel must be >= 1, got {self.parallel}")
        self._running: dict[str, _InFlight] = {}
        self.workdir = Path(self.workdir).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.export_roots = [Path(r).expanduser().resolve() for r in self.export_roots]
        self._http = httpx.Client(
            base_url=self.server.rstrip("/"),
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=60.0,
            transport=self.transport,
        )
        self._base = f"/api/v1/agents/{self.site}"

    def close(self) -> None:
        self._http.close()

    # -- the loop ------------------------------------------------------------------------
    def run(self, max_tasks: int | None = None, idle_exit_s: float | None = None) -> int:
        """Work until ``max_tasks`` are done or nothing came for ``idle_exit_s``; tasks done.

        Up to ``parallel`` tasks are in flight; while some are, heartbeats and export
        requests are looked at every ``poll_s`` seconds and the tasks every 50 ms."""
        idle_since = time.monotonic()
        next_beat = -float("inf")
        while max_tasks is None or self.done < max_tasks:
            busy = False
            if time.monotonic() >= next_beat:
                self.heartbeat()
                busy = self.export_requested() > 0
                next_beat = time.monotonic() + self.poll_s
            room = self._parallel - len(self._running)
            if max_tasks is not None:
                room = min(room, max_tasks - self.done - len(self._running))
            while room > 0 and self._start_next():
                room -= 1
                busy = True
            if self._running:
                self._tend()
                idle_since = time.monotonic()
                if self._running:
                    time.sleep(0.05)
                continue
            if busy:
                idle_since = time.monotonic()
                continue
            if idle_exit_s is not None and time.monotonic() - idle_since > idle_exit_s:
                break
            time.sleep(self.poll_s)
            next_beat = -float("inf")
        return self.done

    def heartbeat(self) -> None:
        raw = self.launcher.telemetry() if self.heartbeat_telemetry else {}
        body = {"agent": self.agent_id, "telemetry": raw}
        self._call("POST", "/heartbeat", json=body)

    def run_one(self) -> bool:
        """Lease one task and see it through; False when the queue is empty."""
        if not self._start_next():
            return False
        while self._running:
            self._tend()
            if self._running:
                time.sleep(0.05)
        return True

    def _start_next(self) -> bool:
        """Lease a task and hand it to the launcher; False when the queue is empty."""
        r = self._call(
            "POST", "/lease", params={"agent": self.agent_id, "lease_s": self.lease_s}, ok=(204,)
        )
        if r.status_code == 204:
            return False
        task: dict[str, Any] = r.json()
        handle = task["handle"]
        folder = self.workdir / "tasks" / _safe(handle.replace("/", "__").replace(":", "_"))
        (folder / "in").mkdir(parents=True, exist_ok=True)
        (folder / "out").mkdir(exist_ok=True)
        try:
            for item in task["inputs"]:
                self._download(handle, item, folder / "in" / item)
            for item, at in task.get("site_inputs", {}).items():
                self._check_exportable(Path(at), item)
                link_site_input(Path(at), folder / "in" / item, item)
        except ConnectorError as exc:  # the task cannot start: that is its result
            self._report(handle, 1, None, time.time(), f"could not stage inputs: {exc}")
            return True
        env = {
            **task.get("env", {}),
            "CONTINUUM_IN": str(folder / "in"),
            "CONTINUUM_OUT": str(folder / "out"),
            "CONTINUUM_SITE": self.site,
        }
        command = task["command"]
        script = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items())
        script += command if isinstance(command, str) else shlex.join(command)
        (folder / "task.sh").write_text(script + "\n", encoding="utf-8")
        write_atomic(folder / SPEC, {"command": command, "env": env, "cores": task.get("cores", 1)})
        try:
            self.launcher.start(folder, task)
        except ConnectorError as exc:
            self._report(handle, 1, None, time.time(), f"could not start: {exc}")
            return True
        now = time.monotonic()
        self._running[handle] = _InFlight(
            handle,
            folder,
            _LogShipper(self, handle, folder, int(task.get("log_limit", 1024 * 1024))),
            now + self.lease_s / 3,
            now + self.log_every_s,
        )
        return True

    def _tend(self) -> None:
        """Renew leases and ship logs when due; finish the tasks that are over."""
        for handle, job in list(self._running.items()):
            now = time.monotonic()
            if now >= job.next_renew:
                try:
                    self._call("POST", "/renew", params={"handle": handle, "lease_s": self.lease_s})
                except ConnectorError as exc:  # the lease went elsewhere: say so, go on
                    log.warning("task %s: lease not renewed: %s", handle, exc)
                job.next_renew = time.monotonic() + self.lease_s / 3
            if now >= job.next_ship:
                job.logs.ship(final=False)
                job.next_ship = time.monotonic() + self.log_every_s
            info = self.launcher.poll(job.folder)
            if info is not None:
                del self._running[handle]
                self._finish(job, info)

    def _finish(self, job: _InFlight, info: TaskInfo) -> None:
        """Ship the logs and the outputs of a task that is over, report its result."""
        job.logs.ship(final=True)
        for path in sorted((job.folder / "out").iterdir()):
            if path.is_file():
                self._upload(job.handle, path)
        code = info.exit_code
        message = info.message
        if code != 0:
            stderr = job.folder / "stderr"
            tail = stderr.read_text(errors="replace")[-2000:] if stderr.exists() else ""
            message = "\n".join(m for m in (message, tail) if m)[-2000:]
        self._report(
            job.handle,
            code if code is not None else -1,
            info.started_at,
            info.ended_at,
            message if code != 0 else "",
        )

    def _report(
        self,
        handle: str,
        exit_code: int,
        started_at: float | None,
        ended_at: float | None,
        message: str,
    ) -> None:
        body = {
            "handle": handle,
            "exit_code": exit_code,
            "started_at": started_at,
            "ended_at": ended_at,
            "message": message,
        }
        try:
            self._call("POST", "/result", json=body)
        except ServerGone:
            raise
        except ConnectorError as exc:  # e.g. the lease expired while the service was away
            log.warning("task %s: result not taken: %s", handle, exc)
        self.done += 1

    # -- exports: files of the site that must leave it -----------------------------------
    def export_requested(self) -> int:
        """Upload every file the orchestrator asked for; how many requests were handled."""
        asked = self._call("GET", "/exports").json()
        for req in asked:
            path = Path(req["path"])
            try:
                self._check_exportable(path, req.get("item", ""))
                if not path.expanduser().is_file():
                    raise ConnectorError(f"no file {path} at site {self.site}")
            except ConnectorError as exc:
                self._call("POST", f"/exports/{req['id']}/failed", json={"error": str(exc)})
                continue
            digest = sha256_file(path.expanduser())
            self._call_stream(
                "PUT",
                f"/exports/{req['id']}",
                path.expanduser(),
                headers={"X-Content-SHA256": digest},
            )
        return len(asked)

    def _check_exportable(self, path: Path, item: str) -> None:
        """Only files under ``export_roots`` (resolved, symbolic links followed) are used."""
        real = path.expanduser().resolve()
        for root in self.export_roots:
            if real == root or root in real.parents:
                return
        roots = ", ".join(str(r) for r in self.export_roots) or "none"
        raise ConnectorError(
            f"input {item}: {path} is outside the folders this site's agent may use "
            f"(--export-root: {roots})"
        )

    # -- data ----------------------------------------------------------------------------
    def _download(self, handle: str, item: str, dst: Path) -> None:
        def once() -> None:
            h = hashlib.sha256()
            with self._http.stream(
                "GET", f"{self._base}/input", params={"handle": handle, "item": item}
            ) as r:
                if not r.is_success:
                    r.read()
                    self._check(r)
                want = r.headers.get("x-content-sha256", "")
                with open(dst, "wb") as f:
                    for chunk in r.iter_bytes():
                        h.update(chunk)
                        f.write(chunk)
            if want and h.hexdigest() != want:
                dst.unlink()
                raise ConnectorError(f"input {item} of {handle}: checksum mismatch after download")

        self._retrying(once)

    def _upload(self, handle: str, path: Path) -> None:
        digest = sha256_file(path)
        self._call_stream(
            "PUT",
            "/output",
            path,
            params={"handle": handle, "item": path.name},
            headers={"X-Content-SHA256": digest},
        )

    # -- HTTP, retried while the service is away ------------------------------------------
    def _call(
        self, method: str, path: str, ok: tuple[int, ...] = (), **kwargs: Any
    ) -> httpx.Response:
        def once() -> httpx.Response:
            r = self._http.request(method, f"{self._base}{path}", **kwargs)
            if r.status_code not in ok:
                self._check(r)
            return r

        answer: httpx.Response = self._retrying(once)
        return answer

    def _call_stream(self, method: str, path: str, file: Path, **kwargs: Any) -> None:
        def once() -> None:
            with open(file, "rb") as f:
                self._check(self._http.request(method, f"{self._base}{path}", content=f, **kwargs))

        self._retrying(once)

    def _retrying(self, once: Any) -> Any:
        start = time.monotonic()
        pause = 0.2
        while True:
            try:
                return once()
            except (httpx.TransportError, _Retry) as exc:
                waited = time.monotonic() - start
                if self.server_wait_s is not None and waited > self.server_wait_s:
                    raise ServerGone(
                        f"the federation API at {self.server} did not answer for {waited:.0f} s: "
                        f"{exc}"
                    ) from None
                log.info("federation API unreachable (%s); retrying in %.1f s", exc, pause)
                time.sleep(pause)
                pause = min(pause * 2, 5.0)

    @staticmethod
    def _check(r: httpx.Response) -> None:
        if r.status_code in RETRY_STATUS:
            raise _Retry(f"{r.status_code} {r.text[:200]}")
        if not r.is_success:
            raise ConnectorError(
                f"{r.request.method} {r.request.url.path}: {r.status_code} {r.text[:300]}"
            )


class _Retry(Exception):
    """An answer that says: try again later (the service is starting or overloaded)."""


class _LogShipper:
    """Ships a task's stdout and stderr to the service as they grow, bounded: the first half
    of the limit live, and at the end, when the stream is longer, a note and its last half."""

    def __init__(self, agent: SiteAgent, handle: str, folder: Path, limit: int) -> None:
        self.agent = agent
        self.handle = handle
        self.folder = folder
        self.half = limit // 2
        self.limit = 2 * self.half
        self.sent = dict.fromkeys(STREAMS, 0)  # what the service keeps of each stream
        self.read = dict.fromkeys(STREAMS, 0)  # how far into the file that goes

    def ship(self, final: bool) -> None:
        for stream in STREAMS:
            path = self.folder / stream
            size = path.stat().st_size if path.exists() else 0
            whole = final and size <= self.limit
            upto = size if whole else min(size, self.half)
            if upto > self.read[stream]:
                self._send(stream, self._bytes(path, self.read[stream], upto))
                self.read[stream] = upto
            if final and size > self.limit:
                tail = self._bytes(path, size - self.half, size)
                self._send(stream, truncation_note(size - 2 * self.half) + tail)
                self.read[stream] = size

    @staticmethod
    def _bytes(path: Path, start: int, end: int) -> bytes:
        with open(path, "rb") as f:
            f.seek(start)
            return f.read(end - start)

    def _send(self, stream: str, data: bytes) -> None:
        if not data:
            return
        params = {"handle": self.handle, "stream": stream, "offset": self.sent[stream]}
        self.agent._call("POST", "/log", params=params, content=data)
        self.sent[stream] += len(data)
