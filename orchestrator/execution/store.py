"""Durable runs: the tables of runs, steps and events, and the one place that changes them.

Every state change goes through ``RunStore.transition`` which checks it
against the state machine, writes the new state with an event row in one
transaction, and only then lets the executor act. The same code runs on
SQLite (default, WAL) and PostgreSQL (by URL).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Float, ForeignKey, Integer, String, Text, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from federation.store import Base, Store
from orchestrator.errors import OrchestratorError
from orchestrator.execution.states import (
    OnError,
    RunState,
    StepState,
    check_transition,
)
from orchestrator.workflow import Workflow


class RunRow(Base):
    __tablename__ = "exec_runs"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(256))
    workflow: Mapped[str] = mapped_column(Text)  # native-format JSON
    state: Mapped[str] = mapped_column(String(16))
    on_error: Mapped[str] = mapped_column(String(16))
    max_attempts: Mapped[int] = mapped_column(Integer)
    backoff_s: Mapped[float] = mapped_column(Float)
    project: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)


class StepRow(Base):
    __tablename__ = "exec_steps"

    run_id: Mapped[str] = mapped_column(ForeignKey("exec_runs.id"), primary_key=True)
    step_id: Mapped[str] = mapped_column(String(512), primary_key=True)
    state: Mapped[str] = mapped_column(String(16))
    site: Mapped[str] = mapped_column(String(128))
    priority: Mapped[int] = mapped_column(Integer, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # Attempts are numbered for the whole run (each has its own task directory);
    # a restart or a re-plan starts a fresh series of max_attempts at attempt_base.
    attempt_base: Mapped[int] = mapped_column(Integer, default=0)
    not_before: Mapped[float] = mapped_column(Float, default=0.0)
    handle: Mapped[str] = mapped_column(Text, default="")
    started_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    ended_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    message: Mapped[str] = mapped_column(Text, default="")
    failed_sites: Mapped[str] = mapped_column(Text, default="")  # comma-separated


class EventRow(Base):
    __tablename__ = "exec_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("exec_runs.id"), index=True)
    step_id: Mapped[str] = mapped_column(String(512), default="")
    at: Mapped[float] = mapped_column(Float)
    kind: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str] = mapped_column(Text, default="")


class UnknownRun(OrchestratorError, KeyError):
    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown run"


@dataclass(frozen=True)
class StepRecord:
    """A read-only snapshot of one step of a run."""

    step_id: str
    state: StepState
    site: str
    priority: int
    attempts: int
    attempt_base: int
    not_before: float
    handle: str
    started_at: float | None
    ended_at: float | None
    exit_code: int | None
    message: str
    failed_sites: tuple[str, ...]

    @property
    def attempts_in_series(self) -> int:
        """Attempts made since the last restart or re-plan."""
        return self.attempts - self.attempt_base

    @classmethod
    def of(cls, row: StepRow) -> StepRecord:
        return cls(
            step_id=row.step_id,
            state=StepState(row.state),
            site=row.site,
            priority=row.priority,
            attempts=row.attempts,
            attempt_base=row.attempt_base,
            not_before=row.not_before,
            handle=row.handle,
            started_at=row.started_at,
            ended_at=row.ended_at,
            exit_code=row.exit_code,
            message=row.message,
            failed_sites=tuple(s for s in row.failed_sites.split(",") if s),
        )


@dataclass(frozen=True)
class RunRecord:
    id: str
    name: str
    state: RunState
    on_error: OnError
    max_attempts: int
    backoff_s: float
    project: str
    created_at: float
    updated_at: float


class RunStore:
    """Runs, steps and events in a ``federation.store.Store``."""

    def __init__(self, store: Store) -> None:
        self.store = store
        store.create_tables()

    # -- creating ----------------------------------------------------------------
    def create_run(
        self,
        workflow: Workflow,
        assignment: Mapping[str, str],
        *,
        on_error: OnError = OnError.CANCEL_JOB,
        max_attempts: int = 3,
        backoff_s: float = 1.0,
        project: str = "",
        run_id: str | None = None,
    ) -> str:
        """Record a new run of ``workflow`` with each step assigned to a site."""
        missing = [s.id for s in workflow.steps if s.id not in assignment]
        if missing:
            raise OrchestratorError(f"no site assigned to step(s): {', '.join(missing[:5])}")
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
        rid = run_id or uuid.uuid4().hex[:12]
        now = time.time()
        with self.store.session() as s:
            s.add(
                RunRow(
                    id=rid,
                    name=workflow.name,
                    workflow=json.dumps(workflow.to_dict()),
                    state=RunState.RUNNING.value,
                    on_error=OnError(on_error).value,
                    max_attempts=max_attempts,
                    backoff_s=backoff_s,
                    project=project,
                    created_at=now,
                    updated_at=now,
                )
            )
            s.flush()
            for step in workflow.steps:
                s.add(
                    StepRow(
                        run_id=rid,
                        step_id=step.id,
                        state=StepState.PENDING.value,
                        site=assignment[step.id],
                        priority=step.priority,
                        attempts=0,
                        attempt_base=0,
                    )
                )
            s.add(EventRow(run_id=rid, at=now, kind="created", detail=workflow.name))
        return rid

    # -- reading -----------------------------------------------------------------
    def run(self, run_id: str) -> RunRecord:
        with self.store.session() as s:
            row = s.get(RunRow, run_id)
            if row is None:
                raise UnknownRun(f"unknown run {run_id!r}")
            return RunRecord(
                id=row.id,
                name=row.name,
                state=RunState(row.state),
                on_error=OnError(row.on_error),
                max_attempts=row.max_attempts,
                backoff_s=row.backoff_s,
                project=row.project,
                created_at=row.created_at,
                updated_at=row.updated_at,
            )

    def workflow(self, run_id: str) -> Workflow:
        with self.store.session() as s:
            row = s.get(RunRow, run_id)
            if row is None:
                raise UnknownRun(f"unknown run {run_id!r}")
            return Workflow.from_dict(json.loads(row.workflow), f"run {run_id}")

    def steps(self, run_id: str) -> dict[str, StepRecord]:
        with self.store.session() as s:
            rows = s.scalars(select(StepRow).where(StepRow.run_id == run_id)).all()
            return {r.step_id: StepRecord.of(r) for r in rows}

    def events(self, run_id: str, kind: str | None = None) -> list[tuple[float, str, str, str]]:
        """``(at, step_id, kind, detail)`` in order."""
        with self.store.session() as s:
            q = select(EventRow).where(EventRow.run_id == run_id)
            if kind is not None:
                q = q.where(EventRow.kind == kind)
            rows = s.scalars(q.order_by(EventRow.id)).all()
            return [(e.at, e.step_id, e.kind, e.detail) for e in rows]

    def runs(self, states: Iterable[RunState] | None = None) -> list[str]:
        with self.store.session() as s:
            q = select(RunRow.id)
            if states is not None:
                q = q.where(RunRow.state.in_([st.value for st in states]))
            return list(s.scalars(q.order_by(RunRow.created_at)).all())

    # -- changing ----------------------------------------------------------------
    def transition(
        self,
        run_id: str,
        step_id: str,
        wanted: StepState | Sequence[StepState],
        detail: str = "",
        **fields: Any,
    ) -> StepRecord:
        """Move one step to ``wanted`` (checked), updating ``fields``, with an event row.

        ``wanted`` may be a chain of states (``[STAGING, RUNNING]``): each hop is
        checked and recorded, all in one transaction.
        """
        chain = [wanted] if isinstance(wanted, StepState) else list(wanted)
        with self.store.session() as s:
            row = self._step(s, run_id, step_id)
            self._apply(s, run_id, row, chain, detail, fields)
            self._touch(s, run_id)
            return StepRecord.of(row)

    def transition_many(
        self, run_id: str, step_ids: Sequence[str], wanted: StepState, detail: str = ""
    ) -> list[StepRecord]:
        """Move several steps to ``wanted`` in one transaction (all checked first)."""
        if not step_ids:
            return []
        with self.store.session() as s:
            rows = s.scalars(
                select(StepRow).where(StepRow.run_id == run_id, StepRow.step_id.in_(step_ids))
            ).all()
            if len(rows) != len(set(step_ids)):
                found = {r.step_id for r in rows}
                missing = [x for x in step_ids if x not in found]
                raise UnknownRun(f"unknown step(s) {', '.join(missing[:5])} in run {run_id!r}")
            for row in rows:
                check_transition(row.step_id, StepState(row.state), wanted)
            for row in rows:
                self._apply(s, run_id, row, [wanted], detail, {})
            self._touch(s, run_id)
            return [StepRecord.of(r) for r in rows]

    @staticmethod
    def _apply(
        s: Session,
        run_id: str,
        row: StepRow,
        chain: Sequence[StepState],
        detail: str,
        fields: Mapping[str, Any],
    ) -> None:
        now = time.time()
        for wanted in chain:
            check_transition(row.step_id, StepState(row.state), wanted)
            s.add(
                EventRow(
                    run_id=run_id,
                    step_id=row.step_id,
                    at=now,
                    kind=f"{row.state}->{wanted.value}",
                    detail=detail,
                )
            )
            row.state = wanted.value
        for k, v in fields.items():
            if not hasattr(row, k) or k == "state":
                raise AttributeError(f"a step has no settable field {k!r}")
            setattr(row, k, v)

    def update_step(self, run_id: str, step_id: str, **fields: Any) -> StepRecord:
        """Change fields of a step without changing its state (site, handle, not_before...)."""
        with self.store.session() as s:
            row = self._step(s, run_id, step_id)
            for k, v in fields.items():
                if k == "state" or not hasattr(row, k):
                    raise AttributeError(f"cannot set {k!r} on a step here")
                setattr(row, k, v)
            return StepRecord.of(row)

    def set_run_state(self, run_id: str, state: RunState, detail: str = "") -> None:
        with self.store.session() as s:
            row = s.get(RunRow, run_id)
            if row is None:
                raise UnknownRun(f"unknown run {run_id!r}")
            if row.state != state.value:
                s.add(
                    EventRow(
                        run_id=run_id,
                        at=time.time(),
                        kind=f"run:{row.state}->{state.value}",
                        detail=detail,
                    )
                )
                row.state = state.value
            row.updated_at = time.time()

    def log(self, run_id: str, kind: str, detail: str, step_id: str = "") -> None:
        """Record a free-form event (re-planning decisions, site flags...)."""
        with self.store.session() as s:
            s.add(
                EventRow(run_id=run_id, step_id=step_id, at=time.time(), kind=kind, detail=detail)
            )

    @staticmethod
    def _step(s: Session, run_id: str, step_id: str) -> StepRow:
        row = s.get(StepRow, (run_id, step_id))
        if row is None:
            raise UnknownRun(f"unknown step {step_id!r} in run {run_id!r}")
        return row

    @staticmethod
    def _touch(s: Session, run_id: str) -> None:
        run = s.get(RunRow, run_id)
        if run is not None:
            run.updated_at = time.time()
