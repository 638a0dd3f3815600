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


def test_every_change_of_a_step_writes_an_event_a_reader_can_follow(store: Store) -> None:
    runs = RunStore(store)
    rid = runs.create_run(chain(), {"a": "x", "b": "x"})
    last, steps = runs.snapshot(rid)
    assert set(steps) == {"a", "b"}
    assert runs.changes_since(rid, last) == []
    runs.update_step(rid, "b", site="y")
    runs.transition(rid, "a", StepState.READY, "parents done")
    runs.set_run_state(rid, RunState.PAUSED, "paused by user")
    new = runs.changes_since(rid, last)
    assert [(s, k) for _, s, k in new] == [
        ("b", "update"),
        ("a", "pending->ready"),
        ("", "run:running->paused"),
    ]
    assert [i for i, _, _ in new] == sorted(i for i, _, _ in new)
    assert runs.changes_since(rid, new[-1][0]) == []
    assert [k for _, s, k, d in runs.events(rid) if s == "b"] == ["update"]
    assert runs.steps_named(rid, ["b", "nope"])["b"].site == "y"


def test_a_batch_of_changes_is_all_or_nothing(store: Store) -> None:
    runs = RunStore(store)
    rid = runs.create_run(chain(), {"a": "x", "b": "x"})
    with pytest.raises(IllegalTransition):
        runs.apply(
            rid,
            [
                ("a", [StepState.READY], "", {"priority": 7}),
                ("b", [StepState.DONE], "", {}),
            ],
        )
    steps = runs.steps(rid)
    assert (steps["a"].state, steps["a"].priority) == (StepState.PENDING, 2)
    with pytest.raises(AttributeError, match="no settable field 'state'"):
        runs.apply(rid, [("a", [], "", {"state": "done"})])
    done = runs.apply(
        rid,
        [
            ("a", [StepState.READY, StepState.STAGING], "go", {"attempts": 1}),
            ("b", [], "", {"failed_sites": "x,y"}),
        ],
    )
    assert (done[0].state, done[0].attempts) == (StepState.STAGING, 1)
    assert done[1].failed_sites == ("x", "y")
    assert runs.steps(rid)["b"].failed_sites == ("x", "y")


def test_a_store_made_before_the_event_index_gets_it(store: Store) -> None:
    from sqlalchemy import inspect, text

    RunStore(store)
    with store.engine.begin() as c:
        c.execute(text("DROP INDEX ix_exec_events_run_id_id"))
    assert "ix_exec_events_run_id_id" not in {
        i["name"] for i in inspect(store.engine).get_indexes("exec_events")
    }
    runs = RunStore(Store(store.url))
    assert "ix_exec_events_run_id_id" in {
        i["name"] for i in inspect(store.engine).get_indexes("exec_events")
    }
    rid = runs.create_run(chain(), {"a": "x", "b": "x"})
    assert runs.run(rid).state is RunState.RUNNING
