"""The durable run store on SQLite and on PostgreSQL (same code, by URL)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from federation.store import Store, sqlite_url
from orchestrator import Workflow
from orchestrator.execution import IllegalTransition, OnError, RunState, RunStore, StepState


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        url = sqlite_url(tmp_path / "runs.db")
    else:
        url = request.getfixturevalue("postgres_url")
    st = Store(url)
    try:
        yield st
    finally:
        from federation.store import Base

        Base.metadata.drop_all(st.engine)
        st.close()


def chain() -> Workflow:
    return Workflow.from_dict(
        {
            "name": "chain",
            "steps": [
                {"id": "a", "work": 1, "command": "true", "priority": 2},
                {"id": "b", "work": 1, "command": "true", "after": ["a"]},
            ],
        }
    )


def test_a_run_survives_reopening_the_store(store: Store) -> None:
    runs = RunStore(store)
    rid = runs.create_run(chain(), {"a": "x", "b": "y"}, on_error=OnError.PAUSE_JOB, max_attempts=4)
    runs.transition(rid, "a", StepState.READY, "parents done")
    runs.transition(rid, "a", StepState.STAGING)
    runs.transition(rid, "a", StepState.RUNNING, attempts=1, handle="/tmp/h")
    again = RunStore(Store(store.url))
    rec = again.run(rid)
    assert (rec.state, rec.on_error, rec.max_attempts) == (RunState.RUNNING, OnError.PAUSE_JOB, 4)
    steps = again.steps(rid)
    assert steps["a"].state is StepState.RUNNING
    assert steps["a"].handle == "/tmp/h"
    assert steps["a"].priority == 2
    assert steps["b"].site == "y"
    assert again.workflow(rid) == chain()
    kinds = [k for _, s, k, _ in again.events(rid) if s == "a"]
    assert kinds == ["pending->ready", "ready->staging", "staging->running"]


def test_illegal_transitions_change_nothing(store: Store) -> None:
    runs = RunStore(store)
    rid = runs.create_run(chain(), {"a": "x", "b": "x"})
    with pytest.raises(IllegalTransition, match="cannot go from pending to done"):
        runs.transition(rid, "a", StepState.DONE)
    assert runs.steps(rid)["a"].state is StepState.PENDING
    assert [k for _, s, k, _ in runs.events(rid) if s] == []


def test_unknown_run_and_missing_site(store: Store) -> None:
    runs = RunStore(store)
    with pytest.raises(KeyError, match="unknown run 'nope'"):
        runs.run("nope")
    with pytest.raises(Exception, match="no site assigned to step"):
        runs.create_run(chain(), {"a": "x"})
    assert runs.runs() == []
