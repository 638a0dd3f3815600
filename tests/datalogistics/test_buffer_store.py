"""The buffer store in-process (real SQLite, real files): every state, quota, offset, tag,
seal, read and drain rule of ``BufferStore`` with the exact error it raises.

``test_buffer_service.py`` runs the same rules over HTTP; these pin each one alone and are
the tests ``make mutation`` runs against the store (docs/development.md).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from datalogistics.buffers import BufferStore, Quota
from tests.datalogistics.conftest import Clock


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def new_store(root: Path, clock: Clock | None = None, **kw: object) -> BufferStore:
    return BufferStore(root, "alpha", Quota(1000, 3), clock=clock or Clock(), **kw)  # type: ignore[arg-type]


def test_a_created_buffer_reports_what_was_asked(tmp_path: Path) -> None:
    clock = Clock()
    store = new_store(tmp_path, clock)
    info = store.create(100, ttl=60, consumers=["b", "a", "b"], item="x", buffer_id="buf-1")
    assert info.id == "buf-1"
    assert (info.site, info.item, info.state, info.max_size, info.size) == (
        "alpha", "x", "created", 100, 0
    )
    assert (info.created_at, info.expires_at) == (clock.now, clock.now + 60)
    assert (info.consumers, info.drained, info.sha256, info.reason) == (("a", "b"), (), None, None)
    assert store.path("buf-1").exists()
    store.close()
