"""Durable runs: the tables of runs, steps and events, and the one place that changes them.

Every state change goes through ``RunStore.transition`` (or ``apply``, several
changes in one transaction) which checks it against the state machine, writes
the new state with an event row in one transaction, and only then lets the
executor act. Every change of a step or of a run writes an event row (its id
only grows), so a reader can follow a run incrementally: ``changes_since``
names what changed after the last event it saw, and ``steps_named`` re-reads
just those steps. The same code runs on SQLite (default, WAL) and PostgreSQL
(by URL). Hot paths use Core statements, not ORM objects.
"""

from __future__ import annotations

import contextlib
import functools
import json
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import (
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    bindparam,
    func,
    insert,
    inspect,
    select,
    update,
)
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.sql.dml import Update

from federation.store import Base, Store
from orchestrator.errors import OrchestratorError
from orchestrator.execution.launch import Launch
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
    # How the run's steps are launched (``Launch`` as JSON): a value of the run, kept for its
    # whole life (a restarted orchestrator resumes it with the same launch).
    launch: Mapped[str] = mapped_column(Text, default="{}")


_ADDED_RUN_COLUMNS = {"launch": "TEXT DEFAULT '{}'"}
"""Columns added to ``exec_runs`` after stores were first made (added in place at open)."""


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
    # Reading a run's events after a given id (``changes_since``) is a range scan.
    __table_args__ = (Index("ix_exec_events_run_id_id", "run_id", "id"),)

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
    def _of(cls, m: Mapping[Any, Any]) -> StepRecord:
        """From a mapping of column names (a Core row's ``_mapping``) to values."""
        return cls(
            step_id=m["step_id"],
            state=StepState(m["state"]),
            site=m["site"],
            priority=m["priority"],
            attempts=m["attempts"],
            attempt_base=m["attempt_base"],
            not_before=m["not_before"],
            handle=m["handle"],
            started_at=m["started_at"],
            ended_at=m["ended_at"],
            exit_code=m["exit_code"],
            message=m["message"],
            failed_sites=tuple(s for s in (m["failed_sites"] or "").split(",") if s),
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
    launch: Launch = field(default_factory=Launch)

    @property
    def finished(self) -> bool:
        return self.state in (RunState.DONE, RunState.FAILED, RunState.CANCELLED)


Change = tuple[str, Sequence[StepState], str, Mapping[str, Any]]
"""One change of ``RunStore.apply``: ``(step_id, states to go through (empty: fields
only), detail of the event, fields to set)``."""

_RUNS = cast(Table, RunRow.__table__)
_STEPS = cast(Table, StepRow.__table__)
_EVENTS = cast(Table, EventRow.__table__)
_RUN_COLUMNS = [c for c in _RUNS.c if c.name != "workflow"]
STEP_FIELDS = frozenset(c.name for c in _STEPS.c) - {"run_id", "step_id", "state"}
"""The fields of a step that a change may set (its state changes by transitions only)."""
_CHUNK = 500  # bound parameters per IN (...), well under every backend's limit

# The statements of the hot paths, built once (bound parameters by name).
_Q_CHANGES = (
    select(_EVENTS.c.id, _EVENTS.c.step_id, _EVENTS.c.kind)
    .where(_EVENTS.c.run_id == bindparam("run"), _EVENTS.c.id > bindparam("after"))
    .order_by(_EVENTS.c.id)
)
_Q_STEPS = select(_STEPS).where(_STEPS.c.run_id == bindparam("run"))
_Q_STEPS_NAMED = _Q_STEPS.where(_STEPS.c.step_id.in_(bindparam("ids", expanding=True)))
_Q_RUN = select(*_RUN_COLUMNS).where(_RUNS.c.id == bindparam("run"))
_INSERT_EVENTS = insert(_EVENTS).returning(_EVENTS.c.id)
_TOUCH_RUN = update(_RUNS).where(_RUNS.c.id == bindparam("run")).values(updated_at=bindparam("at"))


def _chunks(items: Sequence[str], size: int = _CHUNK) -> Iterator[Sequence[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


@functools.cache
def _update_steps(keys: tuple[str, ...]) -> Update:
    """``UPDATE exec_steps SET <keys>`` of one step, by bound parameters (built once)."""
    return (
        update(_STEPS)
        .where(_STEPS.c.run_id == bindparam("b_run"), _STEPS.c.step_id == bindparam("b_step"))
        .values({k: bindparam(f"v_{k}") for k in keys})
    )


class RunStore:
    """Runs, steps and events in a ``federation.store.Store``."""

    def __init__(self, store: Store) -> None:
        self.store = store
        store.create_tables()
        # ``create_all`` adds missing tables, not indexes or columns missing from an existing
        # table: a store made before they were declared gets them here.
        for index in _EVENTS.indexes:
            with contextlib.suppress(DBAPIError):  # created meanwhile by another process
                index.create(store.engine, checkfirst=True)
        have = {c["name"] for c in inspect(store.engine).get_columns(_RUNS.name)}
        for name, ddl in _ADDED_RUN_COLUMNS.items():
            if name not in have:
                with contextlib.suppress(DBAPIError), store.engine.begin() as c:
                    c.exec_driver_sql(f"ALTER TABLE {_RUNS.name} ADD COLUMN {name} {ddl}")

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
        launch: Launch | None = None,
    ) -> str:
        """Record a new run of ``workflow`` with each step assigned to a site and how its
        steps are launched."""
        missing = [s.id for s in workflow.steps if s.id not in assignment]
        if missing:
            raise OrchestratorError(f"no site assigned to step(s): {', '.join(missing[:5])}")
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
        rid = run_id or uuid.uuid4().hex[:12]
        now = time.time()
        with self.store.engine.begin() as c:
            c.execute(
                insert(_RUNS).values(
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
                    launch=json.dumps((launch or Launch()).to_json()),
                )
            )
            c.execute(
                insert(_STEPS),
                [
                    {
                        "run_id": rid,
                        "step_id": step.id,
                        "state": StepState.PENDING.value,
                        "site": assignment[step.id],
                        "priority": step.priority,
                        "attempts": 0,
                        "attempt_base": 0,
                        "not_before": 0.0,
                        "handle": "",
                        "message": "",
                        "failed_sites": "",
                    }
                    for step in workflow.steps
                ],
            )
            c.execute(
                insert(_EVENTS).values(
                    run_id=rid, step_id="", at=now, kind="created", detail=workflow.name
                )
            )
        return rid

    # -- reading -----------------------------------------------------------------
    def run(self, run_id: str) -> RunRecord:
        with self.store.engine.connect() as c:
            row = c.execute(_Q_RUN, {"run": run_id}).first()
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
            launch=Launch.from_json(json.loads(row.launch or "{}")),
        )

    def workflow(self, run_id: str) -> Workflow:
        with self.store.engine.connect() as c:
            text = c.execute(select(_RUNS.c.workflow).where(_RUNS.c.id == run_id)).scalar()
        if text is None:
            raise UnknownRun(f"unknown run {run_id!r}")
        return Workflow.from_dict(json.loads(text), f"run {run_id}")

    def steps(self, run_id: str) -> dict[str, StepRecord]:
        with self.store.engine.connect() as c:
            return {r.step_id: r for r in self._read(c, run_id, None)}

    def steps_named(self, run_id: str, step_ids: Iterable[str]) -> dict[str, StepRecord]:
        """The named steps of a run (unknown ids are left out)."""
        ids = list(dict.fromkeys(step_ids))
        out: dict[str, StepRecord] = {}
        if not ids:
            return out
        with self.store.engine.connect() as c:
            for chunk in _chunks(ids):
                out.update((r.step_id, r) for r in self._read(c, run_id, chunk))
        return out

    def snapshot(self, run_id: str) -> tuple[int, dict[str, StepRecord]]:
        """The id of the run's latest event, then every step of the run.

        The steps are read after the id: a change made in between is read
        here and named again by ``changes_since(run_id, id)``; none is missed.
        """
        with self.store.engine.connect() as c:
            last = c.execute(
                select(func.max(_EVENTS.c.id)).where(_EVENTS.c.run_id == run_id)
            ).scalar()
            return int(last or 0), {r.step_id: r for r in self._read(c, run_id, None)}

    def changes_since(self, run_id: str, after: int) -> list[tuple[int, str, str]]:
        """``(id, step_id, kind)`` of the run's events with an id above ``after``, in order.

        Every change of a step (``transition``, ``update_step``, ``apply``) names
        the step; a change of the run's state has kind ``run:<old>-><new>``.
        """
        with self.store.engine.connect() as c:
            rows = c.execute(_Q_CHANGES, {"run": run_id, "after": after})
            return [(int(i), s, k) for i, s, k in rows]

    def events(self, run_id: str, kind: str | None = None) -> list[tuple[float, str, str, str]]:
        """``(at, step_id, kind, detail)`` in order."""
        q = select(_EVENTS.c.at, _EVENTS.c.step_id, _EVENTS.c.kind, _EVENTS.c.detail).where(
            _EVENTS.c.run_id == run_id
        )
        if kind is not None:
            q = q.where(_EVENTS.c.kind == kind)
        with self.store.engine.connect() as c:
            return [(at, s, k, d) for at, s, k, d in c.execute(q.order_by(_EVENTS.c.id))]

    def runs(self, states: Iterable[RunState] | None = None) -> list[str]:
        q = select(_RUNS.c.id)
        if states is not None:
            q = q.where(_RUNS.c.state.in_([st.value for st in states]))
        with self.store.engine.connect() as c:
            return list(c.execute(q.order_by(_RUNS.c.created_at)).scalars())

    @staticmethod
    def _read(c: Connection, run_id: str, step_ids: Sequence[str] | None) -> list[StepRecord]:
        if step_ids is None:
            rows = c.execute(_Q_STEPS, {"run": run_id})
        else:
            rows = c.execute(_Q_STEPS_NAMED, {"run": run_id, "ids": list(step_ids)})
        return [StepRecord._of(row._mapping) for row in rows]

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
        return self.apply(run_id, [(step_id, chain, detail, fields)])[0]

    def transition_many(
        self, run_id: str, step_ids: Sequence[str], wanted: StepState, detail: str = ""
    ) -> list[StepRecord]:
        """Move several steps to ``wanted`` in one transaction (all checked first)."""
        return self.apply(run_id, [(sid, [wanted], detail, {}) for sid in dict.fromkeys(step_ids)])

    def apply(self, run_id: str, changes: Sequence[Change]) -> list[StepRecord]:
        """Several changes of a run's steps in one transaction (``apply_noted``)."""
        return self.apply_noted(run_id, changes)[0]

    def apply_noted(
        self, run_id: str, changes: Sequence[Change]
    ) -> tuple[list[StepRecord], list[int]]:
        """Several changes of a run's steps in one transaction, each with its event row(s).

        A change with states moves the step through them (each hop checked,
        one ``old->new`` event per hop) and sets its fields; a change without
        states only sets fields (one ``update`` event). Everything is checked
        before anything is written: an illegal transition, an unknown step or
        field raises and changes nothing. Returns the step after each change
        and the ids of the event rows written (a reader following the run's
        events knows these changes already).
        """
        if not changes:
            return [], []
        ids = list(dict.fromkeys(c[0] for c in changes))
        now = time.time()
        with self.store.engine.begin() as c:
            rows: dict[str, dict[str, Any]] = {}
            for chunk in _chunks(ids):
                found = c.execute(_Q_STEPS_NAMED, {"run": run_id, "ids": list(chunk)})
                rows.update((r.step_id, dict(r._mapping)) for r in found)
            missing = [s for s in ids if s not in rows]
            if len(missing) == 1:
                raise UnknownRun(f"unknown step {missing[0]!r} in run {run_id!r}")
            if missing:
                raise UnknownRun(f"unknown step(s) {', '.join(missing[:5])} in run {run_id!r}")
            events: list[dict[str, Any]] = []
            written: dict[str, dict[str, Any]] = {}
            out: list[StepRecord] = []
            for step_id, chain, detail, fields in changes:
                row = rows[step_id]
                for k in fields:
                    if k not in STEP_FIELDS:
                        raise AttributeError(f"a step has no settable field {k!r}")
                for wanted in chain:
                    check_transition(step_id, StepState(row["state"]), wanted)
                    events.append(
                        {
                            "run_id": run_id,
                            "step_id": step_id,
                            "at": now,
                            "kind": f"{row['state']}->{wanted.value}",
                            "detail": detail,
                        }
                    )
                    row["state"] = wanted.value
                if not chain:
                    said = detail or ", ".join(f"{k}={v}" for k, v in fields.items())
                    events.append(
                        {
                            "run_id": run_id,
                            "step_id": step_id,
                            "at": now,
                            "kind": "update",
                            "detail": said[:2000],
                        }
                    )
                row.update(fields)
                changed = written.setdefault(step_id, {})
                changed.update(fields)
                if chain:
                    changed["state"] = row["state"]
                out.append(StepRecord._of(row))
            groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
            for step_id, changed in written.items():
                if changed:
                    keys = tuple(sorted(changed))
                    values = {f"v_{k}": changed[k] for k in keys}
                    groups.setdefault(keys, []).append({"b_step": step_id, **values})
            for keys, params in groups.items():
                c.execute(_update_steps(keys), [{"b_run": run_id, **p} for p in params])
            noted = [int(i) for i in c.execute(_INSERT_EVENTS, events).scalars()]
            c.execute(_TOUCH_RUN, {"run": run_id, "at": now})
        return out, noted

    def update_step(self, run_id: str, step_id: str, **fields: Any) -> StepRecord:
        """Change fields of a step without changing its state (site, handle, not_before...).

        Writes an ``update`` event naming the step, like every other change."""
        for k in fields:
            if k not in STEP_FIELDS:
                raise AttributeError(f"cannot set {k!r} on a step here")
        return self.apply(run_id, [(step_id, [], "", fields)])[0]

    def set_run_state(self, run_id: str, state: RunState, detail: str = "") -> None:
        now = time.time()
        with self.store.engine.begin() as c:
            current = c.execute(select(_RUNS.c.state).where(_RUNS.c.id == run_id)).scalar()
            if current is None:
                raise UnknownRun(f"unknown run {run_id!r}")
            values: dict[str, Any] = {"updated_at": now}
            if current != state.value:
                c.execute(
                    insert(_EVENTS).values(
                        run_id=run_id,
                        step_id="",
                        at=now,
                        kind=f"run:{current}->{state.value}",
                        detail=detail,
                    )
                )
                values["state"] = state.value
            c.execute(update(_RUNS).where(_RUNS.c.id == run_id).values(values))

    def log(self, run_id: str, kind: str, detail: str, step_id: str = "") -> None:
        """Record a free-form event (re-planning decisions, site flags...)."""
        with self.store.engine.begin() as c:
            c.execute(
                insert(_EVENTS).values(
                    run_id=run_id, step_id=step_id, at=time.time(), kind=kind, detail=detail
                )
            )
