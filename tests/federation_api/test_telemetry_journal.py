"""Telemetry ingest: the journal (stored before acknowledged, replayed after a stop),
idempotency under concurrent senders, back-pressure and pruning, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import delete, func, select

from federation.api import create_app, journal
from federation.api.engine import engine_of
from federation.api.tables import TelemetryRow
from federation.settings import Settings
from federation.store import Store
from tests.federation_api.test_orchestration_api import SITE

T0 = time.time() - 86_400.0


def _samples(start: int, n: int, step: float = 60.0) -> list[dict[str, Any]]:
    return [
        {
            "id": f"s{k}",
            "timestamp": T0 + step * k,
            "utilisation": 0.3 + 0.1 * (k % 5) / 5,
            "backlog": 1000.0 + k,
            "links": {"s2": 1e8} if k % 2 else {},
        }
        for k in range(start, start + n)
    ]


def _app(data_dir: Path, store: Store | None = None, **settings: Any) -> FastAPI:
    return create_app(Settings(data_dir=data_dir, **settings), store=store)


def _client(app: FastAPI) -> TestClient:
    return TestClient(app, headers={"Authorization": f"Bearer {app.state.local_token}"})


def _rows(app: FastAPI) -> int:
    store: Store = app.state.ctx.store
    with store.session() as db:
        return int(db.scalar(select(func.count()).select_from(TelemetryRow)) or 0)


def _register(c: TestClient) -> None:
    for sid in ("s1", "s2"):
        assert c.post("/api/v1/sites", json={"id": sid, **SITE}).status_code == 201


def test_a_restarted_service_replays_what_its_snapshot_had_not_seen(tmp_path: Path) -> None:
    first = _app(tmp_path)
    with _client(first) as c:
        _register(c)
        r = c.post(
            "/api/v1/sites/s1/telemetry", json={"samples": _samples(0, 10)}, params={"wait": 1}
        )
        assert r.json()["applied"] == 10  # the first ingest also snapshots the twin
        engine = engine_of(first.state.ctx)
        engine.snapshot_every_s = 1e9  # no snapshot after this point: a stop loses the twin
        engine.checkpoint = lambda: None  # type: ignore[method-assign]  # a crash: none at stop
        r = c.post("/api/v1/sites/s1/telemetry", json={"samples": _samples(10, 30)})
        assert (r.status_code, r.json()["accepted"]) == (202, 30)
        assert engine.drain()
        before = engine.twin().sites["s1"]
        x, t = before.x.copy() if before.x is not None else None, before.t
    first.state.ctx.store.close()

    second = _app(tmp_path)  # same data dir: resumes from the snapshot, then the journal
    with _client(second) as c:
        engine = engine_of(second.state.ctx)
        after = engine.twin().sites["s1"]
        assert engine.replayed == 30
        assert after.t == t
        assert x is not None
        assert after.x is not None
        assert np.allclose(after.x, x, rtol=1e-12, atol=1e-12)
        # the ids are remembered across the restart
        again = c.post("/api/v1/sites/s1/telemetry", json={"samples": _samples(0, 40)})
        assert (again.json()["accepted"], again.json()["duplicates"]) == (0, 40)
    second.state.ctx.store.close()


def test_refused_batches_store_nothing(tmp_path: Path) -> None:
    app = _app(tmp_path, telemetry_queue_max=5)
    with _client(app) as c:
        unknown = c.post("/api/v1/sites/s1/telemetry", json={"samples": _samples(0, 1)})
        assert unknown.status_code == 409  # nothing registered at all
        _register(c)
        ghost = c.post("/api/v1/sites/s9/telemetry", json={"samples": _samples(0, 1)})
        assert ghost.status_code == 404
        assert "s9" in ghost.json()["message"]
        busy = c.post("/api/v1/sites/s1/telemetry", json={"samples": _samples(0, 6)})
        assert busy.status_code == 503
        assert busy.headers["Retry-After"] == "1"
        assert _rows(app) == 0  # so the retry is not taken for a duplicate
        ok = c.post("/api/v1/sites/s1/telemetry", json={"samples": _samples(0, 5)})
        assert (ok.status_code, ok.json()["accepted"]) == (202, 5)
        assert _rows(app) == 5
    app.state.ctx.store.close()


def test_duplicate_ids_within_a_batch_and_across_concurrent_senders(tmp_path: Path) -> None:
    app = _app(tmp_path)
    with _client(app) as c:
        _register(c)
        doubled = _samples(0, 3) + _samples(0, 3)
        first = c.post("/api/v1/sites/s1/telemetry", json={"samples": doubled}).json()
        assert (first["accepted"], first["duplicates"]) == (3, 3)
        batch = {"samples": _samples(3, 200)}
        answers: list[dict[str, Any]] = []
        barrier = threading.Barrier(4)

        def send() -> None:
            barrier.wait()
            answers.append(c.post("/api/v1/sites/s1/telemetry", json=batch).json())

        threads = [threading.Thread(target=send) for _ in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert sum(a["accepted"] for a in answers) == 200  # each sample won exactly once
        assert sum(a["duplicates"] for a in answers) == 600
        engine = engine_of(app.state.ctx)
        assert engine.drain()
        assert engine.totals.applied == 203
        assert engine.totals.duplicates == 0  # the twin never saw a sample twice
    app.state.ctx.store.close()


def test_checkpoints_prune_samples_behind_the_retention(tmp_path: Path) -> None:
    app = _app(tmp_path, telemetry_retention_s=3600.0)
    with _client(app) as c:
        _register(c)
        hours = _samples(0, 10, step=1800.0)  # five hours, one sample every half hour
        c.post("/api/v1/sites/s1/telemetry", json={"samples": hours}, params={"wait": 1})
        engine = engine_of(app.state.ctx)
        engine.checkpoint()
        # kept: the samples at most an hour behind the estimate (the last three)
        assert _rows(app) == 3
        # a forgotten id is accepted again, and the twin rejects the stale sample
        old = c.post("/api/v1/sites/s1/telemetry", json={"samples": hours[:1]}, params={"wait": 1})
        assert (old.json()["accepted"], old.json()["rejected_out_of_order"]) == (1, 1)
    app.state.ctx.store.close()


def test_journal_on_postgresql(postgres_url: str, tmp_path: Path) -> None:
    store = Store(postgres_url)
    try:
        with store.session() as db:
            rows = {s["id"]: {c: s.get(c) for c in journal.COLUMNS} for s in _samples(0, 4)}
            for row in rows.values():
                row["up"] = True
            assert journal.record(db, "s1", rows) == set(rows)
        with store.session() as db:
            assert journal.record(db, "s1", rows) == set()
            assert journal.record(db, "s2", {"s0": rows["s0"]}) == {"s0"}  # ids are per site
        with store.session() as db:
            back = journal.newer_than(db, "s1", T0 + 60.0)
            assert [s.timestamp for s in back] == [T0 + 120.0, T0 + 180.0]
            assert back[1].links == {"s2": 1e8}
            assert journal.prune(db, "s1", T0 + 120.0) == 2
        app = _app(tmp_path, store=store)
        with _client(app) as c:
            _register(c)
            r = c.post("/api/v1/sites/s1/telemetry", json={"samples": _samples(0, 6)}).json()
            assert (r["accepted"], r["duplicates"]) == (4, 2)  # s2, s3 were kept
    finally:
        with store.session() as db:
            db.execute(delete(TelemetryRow))
        store.close()


@pytest.mark.parametrize("wait", [False, True])
def test_ingest_answers_count_what_was_new(tmp_path: Path, wait: bool) -> None:
    app = _app(tmp_path)
    with _client(app) as c:
        _register(c)
        r = c.post(
            "/api/v1/sites/s2/telemetry", json={"samples": _samples(0, 4)}, params={"wait": wait}
        ).json()
        assert r["accepted"] == 4
        assert ("applied" in r) is wait
        assert ("queued" in r) is not wait
    app.state.ctx.store.close()


def test_metrics_count_the_twin_s_outcomes(tmp_path: Path) -> None:
    app = _app(tmp_path)
    with _client(app) as c:
        _register(c)
        c.post("/api/v1/sites/s1/telemetry", json={"samples": _samples(5, 5)}, params={"wait": 1})
        c.post("/api/v1/sites/s1/telemetry", json={"samples": _samples(0, 2)}, params={"wait": 1})
        text = c.get("/metrics").text
        assert "# TYPE continuum_telemetry_samples_total counter" in text
        assert 'continuum_telemetry_samples_total{outcome="applied"} 5' in text
        assert 'continuum_telemetry_samples_total{outcome="out_of_order"} 2' in text
        assert "continuum_telemetry_queued 0" in text
        assert "continuum_telemetry_replayed_total 0" in text
    app.state.ctx.store.close()
