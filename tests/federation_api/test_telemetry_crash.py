"""Acknowledged telemetry survives a crash of the service and its applier (issue 19).

``continuum serve`` runs in a process of its own; batches are posted without waiting for
the twin, and the process is SIGKILLed as soon as the last one is acknowledged, while the
background applier is still behind. Restarted on the same data directory, the service
replays the journal: the twin it then snapshots holds every acknowledged sample, the same
estimate (to round-off) as a twin fed the same samples in one go.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from federation.api import registry
from federation.store import Store, sqlite_url
from tests.federation_api.test_end_to_end import Service, free_port
from tests.federation_api.test_orchestration_api import SITE
from twin.federation_twin import FederationTwin
from twin.telemetry import TelemetrySample

T0 = time.time() - 86_400.0


def _batch(k: int, n: int) -> list[dict[str, Any]]:
    return [
        {
            "id": f"b{k}-{i}",
            "timestamp": T0 + 60.0 * (k * n + i),
            "utilisation": 0.2 + 0.5 * ((k + i) % 9) / 9,
            "backlog": 500.0 + 10 * i,
        }
        for i in range(n)
    ]


def _service_twin(data_dir: Path) -> FederationTwin:
    """The twin as the service last snapshotted it (read from its store)."""
    store = Store(sqlite_url(data_dir / "continuum.db"))
    try:
        with store.session() as db:
            fed = registry.load(db)
        assert fed is not None
        return FederationTwin(fed, store=store, name="service", autosave=False)
    finally:
        store.close()


def test_samples_acknowledged_before_a_sigkill_are_applied_after_the_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One snapshot (at the first batch) until the kill: the rest lives only in the journal.
    monkeypatch.setenv("CONTINUUM_TWIN_SNAPSHOT_EVERY_S", "3600")
    service = Service(tmp_path, free_port())
    service.start()
    sent: list[dict[str, Any]] = []
    try:
        with service.client() as c:
            for sid in ("s1", "s2"):
                r = c.post("/api/v1/sites", json={"id": sid, **SITE})
                assert r.status_code == 201, r.text
            for k in range(30):
                batch = _batch(k, 50)
                r = c.post("/api/v1/sites/s1/telemetry", json={"samples": batch})
                assert r.status_code == 202, r.text
                assert r.json()["accepted"] == 50
                sent += batch
        service.kill()  # SIGKILL: no shutdown code, no snapshot at stop
        service.start()  # same data directory: the journal is replayed at start
        with service.client() as c:
            assert c.get("/api/v1/twin/states").status_code == 200  # the twin, journal replayed
            metrics = c.get("/metrics").text
        replayed = next(
            float(line.split()[-1])
            for line in metrics.splitlines()
            if line.startswith("continuum_telemetry_replayed_total")
        )
        service.stop()  # a clean stop snapshots the twin
    finally:
        if service.proc is not None and service.proc.poll() is None:
            service.kill()
    twin = _service_twin(tmp_path)
    site = twin.sites["s1"]
    assert site.t == sent[-1]["timestamp"]  # the last acknowledged sample was applied
    assert replayed > 0  # what the snapshot had not seen came back from the journal
    reference = FederationTwin(twin.federation, autosave=False)
    samples = [{k: v for k, v in s.items() if k != "id"} for s in sent]
    reference.ingest([TelemetrySample(site="s1", **s) for s in samples])
    assert reference.sites["s1"].t == site.t
    assert site.x is not None
    assert reference.sites["s1"].x is not None
    assert np.allclose(site.x, reference.sites["s1"].x, rtol=1e-9, atol=1e-9)
