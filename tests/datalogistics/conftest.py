"""Buffer services on loopback ports, started and stopped by the tests.

``ServiceThread`` runs a real uvicorn server in a thread of the test process
(so a test can drive the service's clock for TTL expiry); ``ServiceProcess``
runs ``python -m datalogistics.buffers`` as a separate process that a test
can kill and restart.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from datalogistics.buffers import BufferStore, Quota, create_app, issue_token
from orchestrator.execution.buffers import free_port

SECRET = "test-secret-0123456789abcdef"


class Clock:
    """A clock the test moves by hand (the service reads it for TTLs and token expiry)."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class ServiceThread:
    """A buffer service of ``site`` on a free loopback port, in a thread."""

    def __init__(
        self,
        root: Path,
        site: str,
        quota: Quota,
        clock: Clock,
        reap_interval: float = 3600,
        peers: tuple[str, ...] = (),
        data_port: int | None = None,
    ) -> None:
        self.site = site
        self.root = root
        self.clock = clock
        self.store = BufferStore(root, site, quota, clock=clock)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            create_app(
                self.store, SECRET, reap_interval=reap_interval, peers=peers, data_port=data_port
            ),
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            access_log=False,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> ServiceThread:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError(f"buffer service {self.site} did not start")
            time.sleep(0.01)
        return self

    @property
    def data_port(self) -> int | None:
        """The port of the service's data port (None: it has none)."""
        port: int | None = httpx.get(f"{self.url}/health", timeout=5).json()["data_port"]
        return port

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.store.close()

    def token(self, buffer: str, right: str, consumer: str | None = None) -> str:
        return issue_token(
            SECRET, site=self.site, buffer=buffer, right=right, now=self.clock(), consumer=consumer
        )

    @property
    def admin(self) -> str:
        return self.token("*", "admin")


class ServiceProcess:
    """``python -m datalogistics.buffers`` in its own process (killable, restartable)."""

    def __init__(self, root: Path, site: str, port: int | None = None) -> None:
        self.root = root
        self.site = site
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ServiceProcess:
        env = {**os.environ, "CONTINUUM_BUFFER_SECRET": SECRET}
        cmd = [
            sys.executable,
            "-m",
            "datalogistics.buffers",
            "--site",
            self.site,
            "--dir",
            str(self.root),
            "--port",
            str(self.port),
        ]
        self.proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise RuntimeError(f"buffer service {self.site} did not start: {err}")
            time.sleep(0.05)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def token(self, buffer: str, right: str, consumer: str | None = None) -> str:
        return issue_token(SECRET, site=self.site, buffer=buffer, right=right, consumer=consumer)

    @property
    def admin(self) -> str:
        return self.token("*", "admin")


Sites = tuple[ServiceThread, ServiceThread]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def two_sites(tmp_path: Path, clock: Clock) -> Iterator[Sites]:
    """Buffer services of sites ``alpha`` and ``beta`` on two loopback ports."""
    quota = Quota(max_bytes=64 * 2**20, max_count=8)
    a = ServiceThread(tmp_path / "alpha", "alpha", quota, clock).start()
    b = ServiceThread(tmp_path / "beta", "beta", quota, clock).start()
    yield a, b
    a.stop()
    b.stop()
