"""The site agent: runs inside a site that accepts no inbound connection and pulls its work.

``continuum site-agent --site ID --server URL --token T`` loops: heartbeat, upload the files
of the site the orchestrator asked for (``--export-root`` says which folders may leave the
site), lease the next task from the federation API, download its inputs (sha256 checked
against the server's header; inputs that already live at the site are linked, not moved),
run it through the same shell runner as the local connector (claim, ``task.sh``, atomic
``result.json``) while renewing the lease and shipping its stdout and stderr as they grow,
upload every output with its sha256, report the result. Only outbound HTTPS from the site
is needed.

The agent outlives the service: while the service is unreachable (restarting, a network
cut) every call is retried with a growing pause, a running task keeps running, and its
result is reported once the service answers again (``server_wait_s`` bounds the wait).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shlex
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from orchestrator.connectors.base import ConnectorError, _safe, sha256_file
from orchestrator.connectors.local import RUNNER_SCRIPT, RUNNER_SHELL, link_site_input
from orchestrator.connectors.runner import RESULT, SPEC, write_atomic
from orchestrator.execution.logs import STREAMS, truncation_note

log = logging.getLogger(__name__)

RETRY_STATUS = frozenset({502, 503, 504})


class ServerGone(ConnectorError):
    """The federation API did not answer for longer than the agent waits."""


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
    done: int = 0
    heartbeat_telemetry: bool = True  # False when the site's own twin publishes its state

    def __post_init__(self) -> None:
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
        """Work until ``max_tasks`` are done or nothing came for ``idle_exit_s``; tasks done."""
        idle_since = time.monotonic()
        while max_tasks is None or self.done < max_tasks:
            self.heartbeat()
            busy = self.export_requested() > 0
            if self.run_one():
                busy = True
            if busy:
                idle_since = time.monotonic()
                continue
            if idle_exit_s is not None and time.monotonic() - idle_since > idle_exit_s:
                break
            time.sleep(self.poll_s)
        return self.done

    def heartbeat(self) -> None:
        load1 = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
        cpus = os.cpu_count() or 1
        raw = {"utilisation": min(load1 / cpus, 1.0)} if self.heartbeat_telemetry else {}
        body = {"agent": self.agent_id, "telemetry": raw}
        self._call("POST", "/heartbeat", json=body)

    def run_one(self) -> bool:
        """Lease and run one task; False when the queue is empty."""
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
        proc = subprocess.Popen(
            [RUNNER_SHELL, RUNNER_SCRIPT, str(folder)],
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        logs = _LogShipper(self, handle, folder, int(task.get("log_limit", 1024 * 1024)))
        next_renew = time.monotonic() + self.lease_s / 3
        next_ship = time.monotonic() + self.log_every_s
        while proc.poll() is None:
            now = time.monotonic()
            if now >= next_renew:
                try:
                    self._call("POST", "/renew", params={"handle": handle, "lease_s": self.lease_s})
                except ConnectorError as exc:  # the lease went elsewhere: say so, go on
                    log.warning("task %s: lease not renewed: %s", handle, exc)
                next_renew = time.monotonic() + self.lease_s / 3
            if now >= next_ship:
                logs.ship(final=False)
                next_ship = time.monotonic() + self.log_every_s
            time.sleep(0.05)
        result = json.loads((folder / RESULT).read_text(encoding="utf-8"))
        logs.ship(final=True)
        for path in sorted((folder / "out").iterdir()):
            if path.is_file():
                self._upload(handle, path)
        stderr = (folder / "stderr").read_text(errors="replace")[-2000:]
        code = result["exit_code"]
        self._report(
            handle,
            code if code is not None else -1,
            result.get("started_at"),
            result.get("ended_at"),
            stderr if code != 0 else "",
        )
        return True

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
