"""The ``pull-agent`` connector: for sites that accept no inbound connection (HPC zones).

The orchestrator never calls such a site. It queues tasks in the store; an
agent running inside the site (``continuum site-agent --site ID --server URL
--token T``) calls the federation API over HTTPS, leases the next task,
downloads its inputs, runs it, uploads its outputs (sha256-checked) and
reports the result, and sends heartbeats. The pattern is the pull-based
runner used for Exa-AToW's DDF experiments (and by CI runners).

This module holds the queue (a table on the shared store) and the operations
both sides use: ``PullConnector`` for the executor, and ``lease``,
``complete``, ``heartbeat``, ``input_file``, ``output_file`` for the API's
``/api/v1/agents`` router. A lease that expires without a result means the
agent (or its node) died: the task is reported lost and the executor retries
or re-plans it.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from sqlalchemy import Float, Integer, String, Text, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from federation.store import Base, Store
from orchestrator.connectors.base import (
    ConnectorError,
    SiteConnector,
    TaskInfo,
    TaskSpec,
    TaskStatus,
    _safe,
)
from orchestrator.connectors.local import safe_name

QUEUED, LEASED, DONE, CANCELLED = "queued", "leased", "done", "cancelled"


class AgentTaskRow(Base):
    __tablename__ = "agent_tasks"

    handle: Mapped[str] = mapped_column(String(700), primary_key=True)
    site: Mapped[str] = mapped_column(String(128), index=True)
    spec: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16), index=True)
    created_at: Mapped[float] = mapped_column(Float)
    agent: Mapped[str] = mapped_column(String(256), default="")
    lease_until: Mapped[float] = mapped_column(Float, default=0.0)
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    started_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    ended_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    message: Mapped[str] = mapped_column(Text, default="")


class AgentRow(Base):
    __tablename__ = "agent_heartbeats"

    site: Mapped[str] = mapped_column(String(128), primary_key=True)
    agent: Mapped[str] = mapped_column(String(256), default="")
    seen_at: Mapped[float] = mapped_column(Float)
    telemetry: Mapped[str] = mapped_column(Text, default="{}")


def task_dir(mirror: Path, handle: str) -> Path:
    """The orchestrator-side folder of a task: ``in/`` to download, ``out/`` uploaded."""
    return mirror / _safe(handle.split(":", 2)[-1].replace("/", "__"))


class PullConnector(SiteConnector):
    """Queues tasks for a pull agent (see the module docstring)."""

    def __init__(
        self,
        site_id: str,
        store: Store,
        mirror: str | Path,
        heartbeat_timeout: float = 30.0,
    ) -> None:
        self.site_id = site_id
        self.store = store
        self.mirror = Path(mirror).resolve()
        self.mirror.mkdir(parents=True, exist_ok=True)
        self.heartbeat_timeout = heartbeat_timeout
        store.create_tables()

    def handle_for(self, spec: TaskSpec) -> str:
        return f"pull:{self.site_id}:{spec.key()}"

    def submit(self, spec: TaskSpec) -> str:
        handle = self.handle_for(spec)
        folder = task_dir(self.mirror, handle)
        (folder / "in").mkdir(parents=True, exist_ok=True)
        (folder / "out").mkdir(exist_ok=True)
        for item, src in spec.inputs.items():
            dst = folder / "in" / safe_name(item)
            if not dst.exists():
                shutil.copyfile(src, dst)
        command = spec.command if isinstance(spec.command, str) else list(spec.command)
        body = {
            "handle": handle,
            "command": command,
            "env": spec.env,
            "cores": spec.cores,
            "inputs": [safe_name(i) for i in spec.inputs],
            "outputs": [safe_name(o) for o in spec.outputs],
        }
        with self.store.session() as s:
            if s.get(AgentTaskRow, handle) is None:
                s.add(
                    AgentTaskRow(
                        handle=handle,
                        site=self.site_id,
                        spec=json.dumps(body),
                        state=QUEUED,
                        created_at=time.time(),
                    )
                )
        return handle

    def status(self, handle: str) -> TaskInfo:
        with self.store.session() as s:
            row = s.get(AgentTaskRow, handle)
            if row is None:
                return TaskInfo(TaskStatus.NOT_STARTED)
            folder = task_dir(self.mirror, handle)
            if row.state == QUEUED:
                return TaskInfo(TaskStatus.QUEUED, workdir=folder)
            if row.state == CANCELLED:
                return TaskInfo(TaskStatus.CANCELLED, workdir=folder)
            if row.state == DONE:
                st = TaskStatus.SUCCEEDED if row.exit_code == 0 else TaskStatus.FAILED
                return TaskInfo(
                    st, row.exit_code, row.started_at, row.ended_at, folder, row.message
                )
            if row.lease_until < time.time():
                return TaskInfo(
                    TaskStatus.LOST,
                    started_at=row.started_at,
                    workdir=folder,
                    message=f"agent {row.agent or '?'} let its lease expire",
                )
            return TaskInfo(TaskStatus.RUNNING, started_at=row.started_at, workdir=folder)

    def cancel(self, handle: str) -> None:
        with self.store.session() as s:
            row = s.get(AgentTaskRow, handle)
            if row is not None and row.state in (QUEUED, LEASED):
                row.state = CANCELLED

    def telemetry(self) -> dict[str, float]:
        with self.store.session() as s:
            hb = s.get(AgentRow, self.site_id)
            queued = len(
                s.scalars(
                    select(AgentTaskRow.handle).where(
                        AgentTaskRow.site == self.site_id, AgentTaskRow.state == QUEUED
                    )
                ).all()
            )
            data: dict[str, float] = {"queued": float(queued)}
            if hb is not None:
                data["seconds_since_heartbeat"] = time.time() - hb.seen_at
                data.update(
                    {k: float(v) for k, v in json.loads(hb.telemetry).items() if _number(v)}
                )
            return data

    def healthy(self) -> bool:
        with self.store.session() as s:
            hb = s.get(AgentRow, self.site_id)
            return hb is not None and time.time() - hb.seen_at <= self.heartbeat_timeout

    def output_path(self, handle: str, item_id: str) -> Path:
        return task_dir(self.mirror, handle) / "out" / safe_name(item_id)


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


# -- the agent's side, called by the API -------------------------------------------------


def lease(store: Store, site: str, agent: str, lease_s: float = 60.0) -> dict[str, Any] | None:
    """Give the oldest queued task of ``site`` to ``agent`` for ``lease_s`` seconds."""
    now = time.time()
    with store.session() as s:
        query = (
            select(AgentTaskRow)
            .where(AgentTaskRow.site == site, AgentTaskRow.state == QUEUED)
            .order_by(AgentTaskRow.created_at)
            .limit(1)
        )
        if store.engine.dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        row = s.scalars(query).first()
        if row is None:
            return None
        row.state, row.agent, row.lease_until, row.started_at = LEASED, agent, now + lease_s, now
        body: dict[str, Any] = json.loads(row.spec)
        body["lease_until"] = row.lease_until
        return body


def renew(store: Store, site: str, handle: str, lease_s: float = 60.0) -> bool:
    """Extend a running task's lease (the agent calls it while the task runs)."""
    with store.session() as s:
        row = s.get(AgentTaskRow, handle)
        if row is None or row.site != site or row.state != LEASED:
            return False
        row.lease_until = time.time() + lease_s
        return True


def complete(
    store: Store,
    site: str,
    handle: str,
    exit_code: int,
    started_at: float | None,
    ended_at: float | None,
    message: str = "",
) -> None:
    """Record a task's result; ``ConnectorError`` when it is not this site's leased task."""
    with store.session() as s:
        row = _leased_row(s, site, handle)
        row.state, row.exit_code = DONE, exit_code
        row.started_at = started_at or row.started_at
        row.ended_at = ended_at or time.time()
        row.message = message[:2000]


def heartbeat(store: Store, site: str, agent: str, telemetry: dict[str, Any]) -> None:
    with store.session() as s:
        row = s.get(AgentRow, site)
        if row is None:
            s.add(
                AgentRow(
                    site=site, agent=agent, seen_at=time.time(), telemetry=json.dumps(telemetry)
                )
            )
        else:
            row.agent, row.seen_at, row.telemetry = agent, time.time(), json.dumps(telemetry)


def _leased_row(s: Session, site: str, handle: str) -> AgentTaskRow:
    row = s.get(AgentTaskRow, handle)
    if row is None or row.site != site:
        raise ConnectorError(f"site {site} has no task {handle!r}")
    if row.state != LEASED:
        raise ConnectorError(f"task {handle!r} is {row.state}, not leased")
    return row


def leased_task(store: Store, site: str, handle: str) -> AgentTaskRow:
    """The task ``handle`` if ``site`` holds its lease; ``ConnectorError`` otherwise."""
    with store.session() as s:
        row = _leased_row(s, site, handle)
        s.expunge(row)
        return row


def input_file(mirror: Path, handle: str, item: str) -> Path:
    path = task_dir(mirror, handle) / "in" / safe_name(item)
    if not path.is_file():
        raise ConnectorError(f"task {handle!r} has no input {item!r}")
    return path


def output_file(mirror: Path, handle: str, item: str) -> Path:
    folder = task_dir(mirror, handle) / "out"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / safe_name(item)
