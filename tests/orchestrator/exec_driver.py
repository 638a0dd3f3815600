"""Drive one run to its end in a fresh process.

``python -m tests.orchestrator.exec_driver DB WORK RUN``:

The crash-restart test starts it, kills it with SIGKILL at random moments,
and starts it again until the run is done.
"""

from __future__ import annotations

import sys
from pathlib import Path

from federation.store import Store
from orchestrator.connectors import LocalConnector
from orchestrator.execution import CopyStager, Executor, RunStore


def build(db: Path, work: Path) -> Executor:
    runs = RunStore(Store.at(db))
    sites = {s: LocalConnector(s, work / s, slots=2) for s in ("a", "b")}
    return Executor(
        runs, sites, stager=CopyStager(work), inputs_dir=work / "inputs", poll_interval=0.01
    )


def main(argv: list[str]) -> int:
    db, work, run_id = Path(argv[0]), Path(argv[1]), argv[2]
    state = build(db, work).run(run_id, timeout=120)
    print(state.value)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
