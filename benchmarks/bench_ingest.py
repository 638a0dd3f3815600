"""Telemetry ingest applied to the twin, against a bare FastAPI endpoint taking the same records.

Both servers run at once, each a uvicorn process on loopback (one worker, the same
event loop and HTTP parser), fed by the same load generator, an async httpx client
in this process: 4 clients, each sending its next batch of 100 samples when the
previous one is answered (``CLIENTS``, ``BATCH``).

* **the limit**: a bare FastAPI app whose one route validates the body with the
  service's own ``Batch`` model (the same pydantic checks of every sample) and
  answers; no token, no store, no twin. Its figure: samples answered per second;
* **the service** (``continuum serve``'s app, Keycloak mode: an RS256 token verified
  on every request): each batch stored in the journal before the answer, then
  applied to the twin by the background applier. Its figure counts samples
  **applied to the twin**, read from the twin's own counter (``/metrics``,
  ``continuum_telemetry_samples_total{outcome="applied"}``): the clock runs from
  the first request until the twin has applied every sample sent. A 503 (the
  twin's queue full) is retried by the client after a short wait, as a site would.

Rounds interleave the two (``--rounds``, at least 3); the ratio is the median of the
per-round ratios, and the target is a ratio of at least 0.8 (issue 19); a miss
exits non-zero. Run: ``.venv/bin/python -m benchmarks ingest``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from benchmarks.bench_api import ServerProcess, _keys_and_token
from benchmarks.bench_transfer import cpu_seconds
from federation.api.routers.telemetry import Batch  # the service's model, for the bare route

REPO = Path(__file__).resolve().parents[1]
CLIENTS = 4
BATCH = 100
BATCHES = 400  # per round and per server: 40,000 samples
TARGET = 0.8
APPLIED = re.compile(r'^continuum_telemetry_samples_total\{outcome="applied"\} (\S+)$', re.M)


def _bare_ingest_app() -> Any:
    from fastapi import FastAPI

    app = FastAPI()

    @app.post("/bare/telemetry", status_code=202)
    def bare_ingest(batch: Batch) -> dict[str, int]:
        return {"accepted": len(batch.samples)}

    return app


def _serve_bare() -> None:
    import uvicorn

    from federation.api.server import bind_tcp, bound_port, freeze_startup_objects

    app = _bare_ingest_app()
    freeze_startup_objects()
    sock = bind_tcp("127.0.0.1", 0)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
    print(json.dumps({"port": bound_port(sock)}), flush=True)
    uvicorn.Server(config).run(sockets=[sock])


class BareServer(ServerProcess):
    def __init__(self) -> None:
        cmd = [sys.executable, "-m", "benchmarks.bench_ingest", "--serve-bare"]
        self.proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if not line:
            raise RuntimeError("the bare server did not start")
        self.url = f"http://127.0.0.1:{json.loads(line)['port']}"


class CpuMeter:
    """CPU seconds of a server process and of this process (the load generator)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.server = self.client = 0.0

    def __enter__(self) -> CpuMeter:
        self._s0, self._c0 = cpu_seconds([self.pid]), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server += cpu_seconds([self.pid]) - self._s0
        self.client += time.process_time() - self._c0


def twin_us_per_sample(fed: Any, bodies: list[list[dict[str, Any]]], sites: list[str]) -> float:
    """CPU us per sample of the twin's own update (``FederationTwin.ingest``, no HTTP, no
    journal) on the records a round sends, in this process: what any applier must spend."""
    from twin import FederationTwin
    from twin.telemetry import TelemetrySample

    samples = [
        TelemetrySample(site=site, **{k: v for k, v in smp.items() if k != "id"})
        for site, mine in zip(sites, bodies, strict=True)
        for body in mine
        for smp in body["samples"]
    ]
    best = float("inf")
    for _ in range(3):
        twin = FederationTwin(fed)
        c0 = time.process_time()
        twin.ingest(samples)
        best = min(best, time.process_time() - c0)
    return best / len(samples) * 1e6


def batches(start: float, first: int, n: int = BATCHES) -> list[list[dict[str, Any]]]:
    """``n`` batches of new samples (fresh ids, later timestamps), made in advance, dealt to
    the ``CLIENTS`` clients (each client's in time order: one site per client)."""
    out = []
    for k in range(first, first + n):
        out.append(
            {
                "samples": [
                    {
                        "id": f"b{k}-{i}",
                        "timestamp": start + k + i / BATCH,
                        "utilisation": 0.3 + 0.2 * ((k + i) % 7) / 7,
                        "backlog": 100.0,
                    }
                    for i in range(BATCH)
                ]
            }
        )
    return [out[i::CLIENTS] for i in range(CLIENTS)]


async def _send_all(
    client: httpx.AsyncClient, paths: list[str], bodies: list[list[dict[str, Any]]]
) -> tuple[int, int]:
    """Client ``i`` sends ``bodies[i]`` to ``paths[i]`` in order, each request after the answer
    to the last (closed loop); (accepted samples, 503 retries)."""
    accepted = busy = 0

    async def worker(path: str, mine: list[dict[str, Any]]) -> None:
        nonlocal accepted, busy
        for body in mine:
            while True:
                r = await client.post(path, json=body)
                if r.status_code == 503:
                    busy += 1
                    await asyncio.sleep(0.01)
                    continue
                if r.status_code != 202:
                    raise RuntimeError(f"{path}: HTTP {r.status_code} {r.text[:200]}")
                accepted += int(r.json()["accepted"])
                break

    await asyncio.gather(*(worker(p, b) for p, b in zip(paths, bodies, strict=True)))
    return accepted, busy


async def _applied(client: httpx.AsyncClient) -> float:
    r = await client.get("/metrics")
    r.raise_for_status()
    m = APPLIED.search(r.text)
    return float(m.group(1)) if m else 0.0


async def round_bare(url: str, bodies: list[list[dict[str, Any]]]) -> float:
    """Samples per second answered by the bare endpoint."""
    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
    paths = ["/bare/telemetry"] * CLIENTS
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:
        await _send_all(client, paths, [b[:5] for b in bodies])  # warm-up
        t0 = time.perf_counter()
        accepted, _ = await _send_all(client, paths, bodies)
        return accepted / (time.perf_counter() - t0)


async def round_service(
    url: str, token: str, bodies: list[list[dict[str, Any]]], sites: list[str], warm: bool = False
) -> tuple[float, int, int, float]:
    """Samples per second applied to the twin (counted by the twin); (rate, applied, 503s,
    samples per second acknowledged: until the last answer, the applier running beside)."""
    limits = httpx.Limits(max_connections=CLIENTS + 1, max_keepalive_connections=CLIENTS + 1)
    headers = {"Authorization": f"Bearer {token}"}
    paths = [f"/api/v1/sites/{site}/telemetry" for site in sites]
    async with httpx.AsyncClient(
        base_url=url, headers=headers, limits=limits, timeout=60
    ) as client:
        before = await _applied(client)
        t0 = time.perf_counter()
        accepted, busy = await _send_all(client, paths, bodies)
        acknowledged = accepted / (time.perf_counter() - t0)
        if warm:  # the first batches build the twin; they are not counted
            await asyncio.sleep(2.0)
            return 0.0, 0, busy, acknowledged
        deadline = time.monotonic() + 300
        while (applied := await _applied(client) - before) < accepted:
            if time.monotonic() > deadline:
                outcomes = [
                    ln
                    for ln in (await client.get("/metrics")).text.splitlines()
                    if ln.startswith("continuum_telemetry")
                ]
                raise RuntimeError(
                    f"the twin applied {applied} of {accepted} samples in 300 s: {outcomes}"
                )
            await asyncio.sleep(0.002)
        seconds = time.perf_counter() - t0
    return applied / seconds, int(applied), busy, acknowledged


def _ratios(values: list[float]) -> str:
    """The median ratio and each round's, as the summary lines print them."""
    return f"{median(values):.2f} (rounds: {', '.join(f'{r:.2f}' for r in values)})"


def median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks ingest")
    parser.add_argument("--rounds", type=int, default=3)
    args, _ = parser.parse_known_args(argv or [])
    rounds = max(3, args.rounds)
    from federation.model import load_demo_federation

    load_start = os.getloadavg()[0]
    fed = load_demo_federation()
    sites = [s.id for s in fed.sites][:CLIENTS]  # one site per client: each in time order
    bare_rates: list[float] = []
    service_rates: list[float] = []
    ack_rates: list[float] = []
    busy_total = 0
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp_name:
        tmp = Path(tmp_name)
        jwks_path, token = _keys_and_token(tmp)
        with BareServer() as bare, ServerProcess("api", tmp / "api", jwks_path) as api:
            with httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {token}"}) as c:
                for s in fed.sites:
                    c.post("/api/v1/sites", json=s.model_dump(mode="json")).raise_for_status()
            start = time.time() - 10 * 86400.0
            counter = itertools.count(start=BATCHES, step=BATCHES)  # after the warm-up ids
            warm = batches(start - 86400.0, 0, 4 * CLIENTS)
            asyncio.run(round_service(api.url, token, warm, sites, warm=True))
            bare_cpu, api_cpu = CpuMeter(bare.proc.pid), CpuMeter(api.proc.pid)
            for _ in range(rounds):
                bodies = batches(start, next(counter))
                with bare_cpu:
                    bare_rates.append(asyncio.run(round_bare(bare.url, bodies)))
                with api_cpu:
                    rate, applied, busy, ack = asyncio.run(
                        round_service(api.url, token, bodies, sites)
                    )
                if applied != BATCHES * BATCH:
                    raise RuntimeError(f"the twin applied {applied} of {BATCHES * BATCH} samples")
                service_rates.append(rate)
                ack_rates.append(ack)
                busy_total += busy
    twin_us = twin_us_per_sample(fed, batches(start, 0), sites)
    ratios = [s / b for s, b in zip(service_rates, bare_rates, strict=True)]
    ratio = median(ratios)
    print(
        f"telemetry ingest, {CLIENTS} closed-loop clients, batches of {BATCH}, "
        f"{BATCHES * BATCH} samples per round, {rounds} interleaved rounds (median)"
    )
    print(f"{'server':<66} {'samples/s':>10} {'rounds':>24}")
    rows = [
        ("limit: bare FastAPI endpoint validating the same Batch (answered)", bare_rates),
        ("service: journal + twin, counted from the twin (applied)", service_rates),
        ("  the same rounds, acknowledged (journal; the twin applying beside)", ack_rates),
    ]
    for name, rates in rows:
        each = " ".join(f"{r:.0f}" for r in rates)
        print(f"{name:<66} {median(rates):>10.0f} {each:>24}")
    print(f"503 answers retried (the twin's queue full): {busy_total}")
    print(
        f"machine load average (1 min): {load_start:.1f} at start, "
        f"{os.getloadavg()[0]:.1f} at end, on {os.cpu_count()} cores"
    )
    n = rounds * BATCHES * BATCH
    print(
        "CPU us per sample, server / load generator: "
        f"bare {bare_cpu.server / n * 1e6:.1f} / {bare_cpu.client / n * 1e6:.1f}, "
        f"service {api_cpu.server / n * 1e6:.1f} / {api_cpu.client / n * 1e6:.1f}; "
        f"the twin's update alone (FederationTwin.ingest, same records, in process) {twin_us:.1f}"
    )
    cores = os.cpu_count() or 1
    need = TARGET * median(bare_rates) * (bare_cpu.server / n + twin_us * 1e-6)
    print(
        f"CPU the target needs: {TARGET:.1f} x {median(bare_rates):.0f} samples/s x (the bare "
        f"server's work + the twin's update) = {need:.2f} cores, with no journal, no token and "
        f"no load generator; this machine has {cores}"
    )
    acks = [a / b for a, b in zip(ack_rates, bare_rates, strict=True)]
    print(
        f"acknowledged / bare = {_ratios(acks)}; "
        "no target: the journal's acknowledgement with the twin's applier beside it"
    )
    met = ratio >= TARGET
    print(
        f"applied / bare = {_ratios(ratios)}; target >= {TARGET:.2f}: {'met' if met else 'NOT met'}"
    )
    return 0 if met else 1


if __name__ == "__main__":
    if "--serve-bare" in sys.argv:
        _serve_bare()
    else:
        sys.exit(main(sys.argv[1:]))
