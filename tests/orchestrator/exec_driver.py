"""Drive one run to its end in a fresh process.

``python -m tests.orchestrator.exec_driver STORE_URL WORK RUN``:

The crash tests start it, kill it with SIGKILL once they observe progress in the store (a
step started, a step done, a transfer under way, a re-plan due), and start it again until the
run is done. Sites ``a`` and ``b`` are local process pools under WORK; data moves between them
with the sha256-checked copy stager; a step that exhausts its attempts is re-planned to ``b``.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path

from federation.store import Store, sqlite_url
from orchestrator.connectors import LocalConnector
from orchestrator.execution import CopyStager, Executor, ReplanRequest, RunStore


def to_b(request: ReplanRequest) -> Mapping[str, str]:
    """Every step to re-plan goes to site ``b``."""
    return dict.fromkeys(request.steps, "b")


def build(store: str | Path, work: Path) -> Executor:
    url = store if isinstance(store, str) and "://" in store else sqlite_url(store)
    runs = RunStore(Store(url))
    sites = {s: LocalConnector(s, work / s, slots=2) for s in ("a", "b")}
    return Executor(
        runs,
        sites,
        stager=CopyStager(work),
        replanner=to_b,
        inputs_dir=work / "inputs",
        poll_interval=0.01,
    )


def main(argv: list[str]) -> int:
    store, work, run_id = argv[0], Path(argv[1]), argv[2]
    state = build(store, work).run(run_id, timeout=300)
    print(state.value)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
