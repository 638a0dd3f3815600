"""The site agent: runs inside a site that accepts no inbound connection and pulls its work.

``continuum site-agent --site ID --server URL --token T`` loops: heartbeat,
lease the next task from the federation API, download its inputs (sha256
checked against the server's header), run it through the same shell runner
as the local connector (claim, ``task.sh``, atomic ``result.json``) while
renewing the lease, upload every output with its sha256, report the result.
Only outbound HTTPS from the site is needed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from orchestrator.connectors.base import ConnectorError, _safe
from orchestrator.connectors.local import RUNNER_SCRIPT, RUNNER_SHELL
from orchestrator.connectors.runner import RESULT, SPEC, write_atomic


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
    done: int = 0
    heartbeat_telemetry: bool = True  # False when the site's own twin publishes its state

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
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
            if self.run_one():
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
        self._check(self._http.post(f"{self._base}/heartbeat", json=body))

    def run_one(self) -> bool:
        """Lease and run one task; False when the queue is empty."""
        r = self._http.post(
            f"{self._base}/lease", params={"agent": self.agent_id, "lease_s": self.lease_s}
        )
        if r.status_code == 204:
            return False
        self._check(r)
        task: dict[str, Any] = r.json()
        handle = task["handle"]
        folder = self.workdir / "tasks" / _safe(handle.replace("/", "__").replace(":", "_"))
        (folder / "in").mkdir(parents=True, exist_ok=True)
        (folder / "out").mkdir(exist_ok=True)
        for item in task["inputs"]:
            self._download(handle, item, folder / "in" / item)
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
        next_renew = time.monotonic() + self.lease_s / 3
        while proc.poll() is None:
            if time.monotonic() >= next_renew:
                self._check(
                    self._http.post(
                        f"{self._base}/renew", params={"handle": handle, "lease_s": self.lease_s}
                    )
                )
                next_renew = time.monotonic() + self.lease_s / 3
            time.sleep(0.05)
        result = json.loads((folder / RESULT).read_text(encoding="utf-8"))
        for path in sorted((folder / "out").iterdir()):
            if path.is_file():
                self._upload(handle, path)
        stderr = (folder / "stderr").read_text(errors="replace")[-2000:]
        body = {
            "handle": handle,
            "exit_code": result["exit_code"],
            "started_at": result.get("started_at"),
            "ended_at": result.get("ended_at"),
            "message": stderr if result["exit_code"] != 0 else "",
        }
        self._check(self._http.post(f"{self._base}/result", json=body))
        self.done += 1
        return True

    # -- data ----------------------------------------------------------------------------
    def _download(self, handle: str, item: str, dst: Path) -> None:
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

    def _upload(self, handle: str, path: Path) -> None:
        data = path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        r = self._http.put(
            f"{self._base}/output",
            params={"handle": handle, "item": path.name},
            content=data,
            headers={"X-Content-SHA256": digest},
        )
        self._check(r)

    @staticmethod
    def _check(r: httpx.Response) -> None:
        if not r.is_success:
            raise ConnectorError(
                f"{r.request.method} {r.request.url.path}: {r.status_code} {r.text[:300]}"
            )
