"""The ``dask`` connector: a site is a Dask distributed scheduler.

Tasks run on the cluster's workers through the same runner as local tasks
(exclusive claim, atomic result file), so the task directory, which must be
on a file system the workers share with the orchestrator (always true for a
``LocalCluster``), is the source of truth: a restarted orchestrator that
lost its futures still reads results from it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from orchestrator.connectors.base import (
    ConnectorError,
    SiteConnector,
    TaskInfo,
    TaskSpec,
    TaskStatus,
)
from orchestrator.connectors.local import prepare_task, read_result, safe_name
from orchestrator.connectors.runner import CLAIM, RESULT, run_task, write_atomic


def _run_on_worker(task_dir: str) -> int | None:
    return run_task(Path(task_dir))


class DaskConnector(SiteConnector):
    """Runs tasks on a Dask cluster: ``address`` of a scheduler, or a ``LocalCluster``."""

    def __init__(
        self,
        site_id: str,
        workdir: str | Path,
        address: str | None = None,
        n_workers: int = 2,
        threads_per_worker: int = 1,
    ) -> None:
        from distributed import Client, LocalCluster

        self.site_id = site_id
        self.workdir = Path(workdir).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._cluster: Any = None
        if address is None:
            self._cluster = LocalCluster(
                n_workers=n_workers,
                threads_per_worker=threads_per_worker,
                processes=True,
                dashboard_address=":0",
                host="127.0.0.1",
            )
            self.client: Any = Client(self._cluster)
        else:
            self.client = Client(address)
        self._futures: dict[str, Any] = {}

    def handle_for(self, spec: TaskSpec) -> str:
        return str(self.workdir / "tasks" / spec.key())

    def submit(self, spec: TaskSpec) -> str:
        handle = str(prepare_task(self.workdir, self.site_id, spec))
        if handle not in self._futures:
            try:
                self._futures[handle] = self.client.submit(
                    _run_on_worker, handle, key=f"continuum-{spec.key()}", pure=False
                )
            except Exception as exc:  # the scheduler is gone
                raise ConnectorError(f"site {self.site_id}: cannot submit to Dask: {exc}") from exc
        return handle

    def status(self, handle: str) -> TaskInfo:
        task_dir = Path(handle)
        done = read_result(task_dir)
        if done is not None:
            return done
        fut = self._futures.get(handle)
        if fut is not None and fut.status == "error":
            return TaskInfo(TaskStatus.LOST, workdir=task_dir, message=str(fut.exception()))
        if (task_dir / CLAIM).exists():
            return TaskInfo(TaskStatus.RUNNING, workdir=task_dir)
        if fut is not None:
            return TaskInfo(TaskStatus.QUEUED, workdir=task_dir)
        return TaskInfo(TaskStatus.NOT_STARTED, workdir=task_dir)

    def cancel(self, handle: str) -> None:
        fut = self._futures.pop(handle, None)
        if fut is not None:
            fut.cancel()
        task_dir = Path(handle)
        if task_dir.exists() and not (task_dir / RESULT).exists():
            write_atomic(
                task_dir / RESULT, {"exit_code": None, "cancelled": True, "ended_at": time.time()}
            )

    def telemetry(self) -> dict[str, float]:
        info = self.client.scheduler_info()
        workers = info.get("workers", {})
        threads = sum(w.get("nthreads", 1) for w in workers.values()) or 1
        running = sum(1 for f in self._futures.values() if f.status == "pending")
        return {
            "utilisation": min(running / threads, 1.0),
            "workers": float(len(workers)),
            "queued": float(max(running - threads, 0)),
        }

    def output_path(self, handle: str, item_id: str) -> Path:
        return Path(handle) / "out" / safe_name(item_id)

    def close(self) -> None:
        self.client.close()
        if self._cluster is not None:
            self._cluster.close()
