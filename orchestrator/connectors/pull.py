"""The ``pull-agent`` connector: for sites that accept no inbound connection (HPC zones).

The orchestrator never calls such a site. It queues tasks in the store; an
agent running inside the site (``continuum site-agent --site ID --server URL
--token T``) calls the federation API over HTTPS, leases the next task,
downloads its inputs, runs it, uploads its outputs (sha256-checked) and
reports the result, and sends heartbeats. The pattern is the pull-based
runner used for Exa-AToW's DDF experiments (and by CI runners).

This module holds the queue (a table on the shared store) and the operations
both sides use: ``PullConnector`` for the executor, and ``lease``,
``complete``, ``heartbeat``, ``input_file``, ``output_file``, ``append_log``
and the export requests for the API's ``/api/v1/agents`` router. A lease that
expires without a result means the agent (or its node) died: the task is
reported lost and the executor retries or re-plans it.

A lease is given to exactly one agent: on SQLite one ``UPDATE ... RETURNING``
statement picks and takes the oldest queued task (the write lock is taken
before the task is chosen); on PostgreSQL ``SELECT ... FOR UPDATE SKIP LOCKED``.

Files that live at a pull site (an external input located there) reach other
sites through *export requests*: the executor asks (``source_file``), the
site's agent reads the file and uploads it with its sha256, and the step that
needs it is staged from the uploaded copy (until then ``StagingPending``).
Each task's stdout and stderr are shipped by the agent as they grow
(``append_log``), bounded: see ``federation.api``'s settings.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from sqlalchemy import Float, Integer, String, Text, select, text
from sqlalchemy.orm import Mapped, Session, mapped_column

from federation.store import Base, Store
from orchestrator.connectors.base import (
    ConnectorError,
    SiteConnector,
    StagingPending,
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


class ExportRow(Base):
    """A file at a pull site that the orchestrator asked the site's agent to upload."""

    __tablename__ = "agent_exports"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    site: Mapped[str] = mapped_column(String(128), index=True)
    path: Mapped[str] = mapped_column(Text)
    item: Mapped[str] = mapped_column(String(1024))
    state: Mapped[str] = mapped_column(String(16), index=True)  # requested | done | failed
    sha256: Mapped[str] = mapped_column(String(64), default="")
    size: Mapped[int] = mapped_column(Integer, default=0)
    message: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[float] = mapped_column(Float)


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
            "memory": spec.memory,
            "work": spec.work,
            "inputs": [safe_name(i) for i in spec.inputs],
            "site_inputs": {safe_name(i): p for i, p in spec.site_inputs.items()},
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

    def log_path(self, handle: str, stream: str) -> Path | None:
        return task_dir(self.mirror, handle) / stream

    def source_file(self, path: str, run_id: str, item_id: str) -> Path:
        """The site's file ``path``, once its agent has uploaded it (see the module docstring):
        asks for it the first time, ``StagingPending`` until it is here, ``ConnectorError``
        with the agent's reason when the site could not read it."""
        key = export_id(self.site_id, path)
        with self.store.session() as s:  # committed before anything is raised
            row = s.get(ExportRow, key)
            if row is None:
                s.add(
                    ExportRow(
                        id=key,
                        site=self.site_id,
                        path=path,
                        item=item_id,
                        state="requested",
                        created_at=time.time(),
                    )
                )
                state, message = "requested", ""
            else:
                state, message = row.state, row.message
        if state == "failed":
            raise ConnectorError(
                f"input {item_id}: site {self.site_id} cannot export {path}: {message}"
            )
        if state != "done":
            raise StagingPending(f"site {self.site_id} is exporting {path}")
        file = export_file(self.mirror, key)
        if not file.is_file():  # lost on the orchestrator's side: ask again
            with self.store.session() as s:
                row = s.get(ExportRow, key)
                if row is not None:
                    row.state = "requested"
            raise StagingPending(f"site {self.site_id} is exporting {path} again")
        return file


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


# -- the agent's side, called by the API -------------------------------------------------


def lease(store: Store, site: str, agent: str, lease_s: float = 60.0) -> dict[str, Any] | None:
    """Give the oldest queued task of ``site`` to ``agent`` for ``lease_s`` seconds, to it
    alone however many agents ask at once (see the module docstring)."""
    now = time.time()
    if store.engine.dialect.name == "sqlite":
        # One statement: SQLite takes the write lock before the subquery picks the task.
        with store.engine.begin() as c:
            row = c.execute(
                text(
                    "UPDATE agent_tasks SET state = :leased, agent = :agent, "
                    "lease_until = :until, started_at = :now "
                    "WHERE handle = (SELECT handle FROM agent_tasks "
                    "WHERE site = :site AND state = :queued ORDER BY created_at LIMIT 1) "
                    "AND state = :queued RETURNING spec, lease_until"
                ),
                {
                    "leased": LEASED,
                    "queued": QUEUED,
                    "agent": agent,
                    "until": now + lease_s,
                    "now": now,
                    "site": site,
                },
            ).first()
        if row is None:
            return None
        body: dict[str, Any] = json.loads(row.spec)
        body["lease_until"] = row.lease_until
        return body
    with store.session() as s:
        query = (
            select(AgentTaskRow)
            .where(AgentTaskRow.site == site, AgentTaskRow.state == QUEUED)
            .order_by(AgentTaskRow.created_at)
            .limit(1)
            .with_for_update(skip_locked=True)
        )
        task = s.scalars(query).first()
        if task is None:
            return None
        task.state, task.agent, task.lease_until, task.started_at = (
            LEASED,
            agent,
            now + lease_s,
            now,
        )
        body = json.loads(task.spec)
        body["lease_until"] = task.lease_until
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


# -- logs and exports ---------------------------------------------------------------------


def append_log(mirror: Path, handle: str, stream: str, offset: int, data: bytes, limit: int) -> int:
    """Append a chunk of a task's ``stream`` shipped by its agent; the size kept afterwards.

    ``offset`` is where the chunk starts in the agent's file: a chunk sent twice (a retry)
    is kept once, a gap is refused (``ConnectorError``). At most ``limit`` bytes are kept
    per stream (the agent sends a note and the tail itself when its file is larger).
    """
    if stream not in ("stdout", "stderr"):
        raise ConnectorError(f"unknown stream {stream!r}: stdout or stderr")
    path = task_dir(mirror, handle) / stream
    path.parent.mkdir(parents=True, exist_ok=True)
    size = path.stat().st_size if path.exists() else 0
    if offset > size:
        raise ConnectorError(f"{stream} of {handle}: chunk at {offset}, {size} bytes kept so far")
    data = data[size - offset :]
    if size + len(data) > limit:
        raise ConnectorError(
            f"{stream} of {handle}: over the {limit}-byte limit; send a note and the tail"
        )
    if data:
        with open(path, "ab") as f:
            f.write(data)
    return size + len(data)


def export_id(site: str, path: str) -> str:
    """The id of the export request of ``path`` at ``site``."""
    import hashlib

    return hashlib.sha256(f"{site}\0{path}".encode()).hexdigest()[:32]


def export_file(mirror: Path, key: str) -> Path:
    """Where the uploaded copy of an exported file lives on the orchestrator's side."""
    return mirror / "exports" / key


def pending_exports(store: Store, site: str) -> list[dict[str, str]]:
    """The files the orchestrator waits for from ``site``'s agent."""
    with store.session() as s:
        rows = s.scalars(
            select(ExportRow)
            .where(ExportRow.site == site, ExportRow.state == "requested")
            .order_by(ExportRow.created_at)
        )
        return [{"id": r.id, "path": r.path, "item": r.item} for r in rows]


def export_row(store: Store, site: str, key: str) -> ExportRow:
    with store.session() as s:
        row = s.get(ExportRow, key)
        if row is None or row.site != site:
            raise ConnectorError(f"site {site} has no export request {key!r}")
        s.expunge(row)
        return row


def finish_export(
    store: Store, site: str, key: str, sha256: str = "", size: int = 0, error: str = ""
) -> None:
    """Record an export as uploaded (``sha256``, ``size``) or failed (``error``)."""
    with store.session() as s:
        row = s.get(ExportRow, key)
        if row is None or row.site != site:
            raise ConnectorError(f"site {site} has no export request {key!r}")
        if error:
            row.state, row.message = "failed", error[:2000]
        else:
            row.state, row.sha256, row.size, row.message = "done", sha256, size, ""
