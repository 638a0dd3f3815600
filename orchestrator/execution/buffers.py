"""Moving step data between sites through their ephemeral-buffer services.

``BufferStager`` is the executor's stager for real federations: an item
produced at site A and read at site B is written once into a buffer of A's
buffer service (append-only, sealed with its sha256), moved by the transfer
engine into a buffer of B's service (chunked, checksummed end to end,
resumable), and read out into B's staging directory, where its sha256 is
checked again. Buffers are sized to the item, live for ``ttl`` seconds, and
name their consumers so a service can drop them once drained. Items consumed
at several sites leave the producer's buffer once per destination.

``LocalBufferServices`` starts one buffer service per site on loopback (a
process each, ``python -m datalogistics.buffers``, in a process group of its
own) and stops them by PID; on Linux each also gets the kernel's parent-death
signal, so a ``continuum run`` killed with SIGKILL leaves no service behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from datalogistics.buffers.client import BufferClient, BufferRef, SiteClient
from datalogistics.buffers.tokens import Right, issue_token
from datalogistics.errors import DataLogisticsError
from datalogistics.transfer import TransferEngine, TransferRecord
from orchestrator.errors import OrchestratorError
from orchestrator.execution.executor import sha256_file, staging_target

CHUNK = 4 * 2**20


@dataclass(frozen=True)
class BufferEndpoint:
    """A site's buffer service: its base URL and the secret its tokens are signed with."""

    site: str
    base_url: str
    secret: str

    def token(
        self, buffer: str, right: Right, ttl: float = 3600.0, consumer: str | None = None
    ) -> str:
        return issue_token(
            self.secret, site=self.site, buffer=buffer, right=right, ttl=ttl, consumer=consumer
        )


@dataclass
class BufferStager:
    """Stages items between sites through their buffer services (see the module docstring)."""

    endpoints: dict[str, BufferEndpoint]
    root: Path
    engine: TransferEngine = field(default_factory=TransferEngine)
    ttl: float = 3600.0
    on_record: Callable[[TransferRecord], None] | None = None
    records: list[TransferRecord] = field(default_factory=list)
    _sources: dict[tuple[str, str, str], str] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def stage(
        self, run_id: str, item_id: str, src_site: str, src_path: Path, dst_site: str
    ) -> Path:
        """Move ``item_id`` from ``src_site`` to ``dst_site`` (see the class docstring);
        ``OrchestratorError`` naming both sites when a service cannot be reached or refuses:
        the step's attempt fails with the reason, the run goes on."""
        if src_site == dst_site:
            return src_path
        try:
            return self._stage(run_id, item_id, src_site, src_path, dst_site)
        except (httpx.HTTPError, DataLogisticsError) as exc:
            raise OrchestratorError(
                f"{item_id}: staging {src_site} -> {dst_site} through the buffer services "
                f"failed: {type(exc).__name__}: {exc}"
            ) from exc

    def _stage(
        self, run_id: str, item_id: str, src_site: str, src_path: Path, dst_site: str
    ) -> Path:
        dst_path, want, present = staging_target(self.root, run_id, item_id, src_path, dst_site)
        if present:
            return dst_path
        src_ep, dst_ep = self._endpoint(src_site), self._endpoint(dst_site)
        size = src_path.stat().st_size
        with httpx.Client(timeout=60.0) as http:
            src_buf = self._source_buffer(
                http, run_id, item_id, src_ep, src_path, size, want, dst_site
            )
            dst_admin = SiteClient(dst_ep.base_url, dst_ep.token("*", Right.ADMIN), http)
            dst_info = dst_admin.create(
                max_size=max(size, 1), ttl=self.ttl, consumers=[run_id], item=item_id
            )
            record = self.engine.transfer(
                BufferRef(src_ep.base_url, src_buf, src_ep.token(src_buf, Right.READ)),
                BufferRef(dst_ep.base_url, dst_info.id, dst_ep.token(dst_info.id, Right.WRITE)),
                item=item_id,
            )
            # the reader is the run: its token may say that the run has drained the buffer
            read_token = dst_ep.token(dst_info.id, Right.READ, consumer=run_id)
            reader = BufferClient(BufferRef(dst_ep.base_url, dst_info.id, read_token), http)
            tmp = dst_path.with_name(dst_path.name + ".part")
            with open(tmp, "wb") as f:
                offset = 0
                while offset < size:
                    data, _ = reader.read(offset, min(CHUNK, size - offset))
                    if not data:
                        break
                    f.write(data)
                    offset += len(data)
                f.flush()
                os.fsync(f.fileno())
            if sha256_file(tmp) != want:
                tmp.unlink()
                raise OrchestratorError(
                    f"{item_id}: checksum differs after {src_site} -> {dst_site} through buffers"
                )
            os.replace(tmp, dst_path)
            reader.drained(run_id)
        with self._lock:
            self.records.append(record)
        if self.on_record is not None:
            self.on_record(record)
        return dst_path

    @property
    def bytes_moved(self) -> int:
        return sum(int(r.bytes) for r in self.records)

    def _endpoint(self, site: str) -> BufferEndpoint:
        try:
            return self.endpoints[site]
        except KeyError:
            raise OrchestratorError(f"site {site!r} has no buffer service") from None

    def _source_buffer(
        self,
        http: httpx.Client,
        run_id: str,
        item_id: str,
        ep: BufferEndpoint,
        path: Path,
        size: int,
        sha256: str,
        dst_site: str,
    ) -> str:
        """A sealed buffer at the producer's site holding the item (one per destination)."""
        key = (run_id, item_id, dst_site)
        with self._lock:
            known = self._sources.get(key)
        if known is not None:
            return known
        admin = SiteClient(ep.base_url, ep.token("*", Right.ADMIN), http)
        info = admin.create(max_size=max(size, 1), ttl=self.ttl, consumers=[run_id], item=item_id)
        writer = BufferClient(BufferRef(ep.base_url, info.id, ep.token(info.id, Right.WRITE)), http)
        with open(path, "rb") as f:
            offset = 0
            while True:
                data = f.read(CHUNK)
                if not data:
                    break
                writer.append(data, offset=offset, sha256=hashlib.sha256(data).hexdigest())
                offset += len(data)
        writer.seal(sha256)
        with self._lock:
            self._sources[key] = info.id
        return info.id


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the process that started it dies (Linux)."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None).prctl(pr_set_pdeathsig, signal.SIGTERM)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class LocalBufferServices:
    """One buffer service per site on loopback, each a process of its own; ``stop()`` ends them."""

    root: Path
    sites: Iterable[str]
    quota_bytes: int = 10**11
    startup_timeout: float = 120.0
    """Seconds the services have to answer (``Settings.buffer_startup_timeout_s``)."""
    endpoints: dict[str, BufferEndpoint] = field(default_factory=dict)
    _procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self) -> dict[str, BufferEndpoint]:
        ports: dict[str, int] = {}
        for site in self.sites:
            ports[site] = next(p for p in iter(free_port, None) if p not in ports.values())
        urls = {site: f"http://127.0.0.1:{port}" for site, port in ports.items()}
        for site, port in ports.items():
            # every other site's service is a peer: a sealed buffer is pushed straight to it
            peers = [arg for other, url in urls.items() if other != site for arg in ("--peer", url)]
            secret = secrets.token_hex(16)
            folder = self.root / site / "buffers"
            folder.mkdir(parents=True, exist_ok=True)
            log = open(folder / "service.log", "ab")  # noqa: SIM115 - owned by the process
            self._procs[site] = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "datalogistics.buffers",
                    "--site",
                    site,
                    "--dir",
                    str(folder),
                    "--port",
                    str(port),
                    "--quota-bytes",
                    str(self.quota_bytes),
                    *peers,
                ],
                env={**os.environ, "CONTINUUM_BUFFER_SECRET": secret},
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # a Ctrl-C at the terminal is ours to handle
                preexec_fn=_die_with_parent,  # only a prctl call
            )
            self.endpoints[site] = BufferEndpoint(site, urls[site], secret)
        self._wait_ready()
        return self.endpoints

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        pending = dict(self.endpoints)
        with httpx.Client(timeout=1.0) as http:
            while pending and time.monotonic() < deadline:
                for site, ep in list(pending.items()):
                    proc = self._procs[site]
                    if proc.poll() is not None:
                        self.stop()
                        raise OrchestratorError(
                            f"buffer service of {site} exited ({proc.returncode}); "
                            f"see {self.root / site / 'buffers' / 'service.log'}"
                        )
                    try:
                        if http.get(f"{ep.base_url}/health").is_success:
                            del pending[site]
                    except httpx.TransportError:
                        pass
                if pending:
                    time.sleep(0.1)
        if pending:
            self.stop()
            raise OrchestratorError(
                f"buffer services did not answer within {self.startup_timeout:.0f} s: "
                f"{', '.join(pending)} (CONTINUUM_BUFFER_STARTUP_TIMEOUT_S sets the limit)"
            )

    def alive(self, site: str) -> bool:
        """Whether the site's service process still runs (its exit is reaped here)."""
        proc = self._procs.get(site)
        return proc is not None and proc.poll() is None

    def kill(self, site: str) -> None:
        """SIGKILL the site's service (its process group): a fault, not a stop."""
        proc = self._procs.get(site)
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def stop(self, site: str | None = None) -> None:
        """Stop one site's service (or all of them) by PID."""
        for name, proc in list(self._procs.items()):
            if site is not None and name != site:
                continue
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            del self._procs[name]

    def __enter__(self) -> dict[str, BufferEndpoint]:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
