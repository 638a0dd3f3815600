"""The durable run store on SQLite and on PostgreSQL (same code, by URL)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import inspect, text

from federation.store import Store, sqlite_url
from orchestrator import Workflow
from orchestrator.errors import InvalidWorkflow, OrchestratorError
from orchestrator.execution import IllegalTransition, OnError, RunState, RunStore, StepState
from orchestrator.execution.launch import Launch, LaunchKind
from orchestrator.execution.store import UnknownRun


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


# -- every field, default and message of the store (the survivors of `make mutation`) ---------


def wide(n: int) -> Workflow:
    """``n`` independent steps (more than two chunks of bound parameters past 1000)."""
    return Workflow.from_dict(
        {"name": "wide", "steps": [{"id": f"s{i:04d}", "work": 1} for i in range(n)]}
    )


def test_a_new_run_records_its_defaults_and_a_created_event(store: Store) -> None:
    runs = RunStore(store)
    before = time.time()
    rid = runs.create_run(chain(), {"a": "x", "b": "y"})
    after = time.time()
    assert len(rid) == 12
    assert int(rid, 16) >= 0
    rec = runs.run(rid)
    assert (rec.id, rec.name, rec.state, rec.on_error) == (
        rid,
        "chain",
        RunState.RUNNING,
        OnError.CANCEL_JOB,
    )
    assert (rec.max_attempts, rec.backoff_s, rec.project, rec.launch) == (3, 1.0, "", Launch())
    assert before <= rec.created_at == rec.updated_at <= after
    assert not rec.finished
    a = runs.steps(rid)["a"]
    assert (a.step_id, a.state, a.site, a.priority) == ("a", StepState.PENDING, "x", 2)
    assert (a.attempts, a.attempt_base, a.attempts_in_series, a.not_before) == (0, 0, 0, 0.0)
    assert (a.handle, a.message, a.failed_sites) == ("", "", ())
    assert (a.started_at, a.ended_at, a.exit_code) == (None, None, None)
    assert runs.events(rid) == [(rec.created_at, "", "created", "chain")]
    assert runs.snapshot(rid)[0] == runs.changes_since(rid, 0)[0][0]
    assert runs.changes_since(rid, 0)[0][1:] == ("", "created")


def test_a_run_keeps_what_it_was_given(store: Store) -> None:
    runs = RunStore(store)
    launch = Launch(LaunchKind.SYNTHETIC, 0.5, 0.25, {"x": 2.0})
    rid = runs.create_run(
        chain(),
        {"a": "x", "b": "y"},
        on_error=OnError.PAUSE_JOB,
        max_attempts=1,
        backoff_s=2.5,
        project="p1",
        run_id="run-7",
        launch=launch,
    )
    assert rid == "run-7"
    rec = RunStore(Store(store.url)).run(rid)
    assert (rec.on_error, rec.max_attempts, rec.backoff_s, rec.project) == (
        OnError.PAUSE_JOB,
        1,
        2.5,
        "p1",
    )
    assert rec.launch == launch
    with pytest.raises(ValueError, match=r"^max_attempts must be >= 1, got 0$"):
        runs.create_run(chain(), {"a": "x", "b": "y"}, max_attempts=0)
    many = wide(7)
    unplaced = r"^no site assigned to step\(s\): s0001, s0002, s0003, s0004, s0005$"
    with pytest.raises(OrchestratorError, match=unplaced):
        runs.create_run(many, {"s0000": "x"})
    assert runs.runs() == ["run-7"]


def test_a_run_without_a_recorded_launch_is_launched_natively(store: Store) -> None:
    runs = RunStore(store)
    rid = runs.create_run(chain(), {"a": "x", "b": "y"}, launch=Launch(time_scale=2.0))
    with store.engine.begin() as c:
        c.execute(text("UPDATE exec_runs SET launch = ''"))
    assert runs.run(rid).launch == Launch()


def test_a_store_made_before_the_launch_column_gets_it(store: Store) -> None:
    RunStore(store).create_run(chain(), {"a": "x", "b": "y"}, run_id="old")
    with store.engine.begin() as c:
        c.execute(text("ALTER TABLE exec_runs DROP COLUMN launch"))
    runs = RunStore(Store(store.url))
    assert "launch" in {c["name"] for c in inspect(store.engine).get_columns("exec_runs")}
    assert runs.run("old").launch == Launch()
    rid = runs.create_run(chain(), {"a": "x", "b": "y"}, launch=Launch(time_scale=3.0))
    assert runs.run(rid).launch == Launch(time_scale=3.0)
    RunStore(Store(store.url))  # opening it again adds nothing and fails on nothing
    assert runs.run(rid).launch.time_scale == 3.0


def test_runs_are_listed_in_creation_order_and_by_state(store: Store) -> None:
    runs = RunStore(store)
    ids = [runs.create_run(chain(), {"a": "x", "b": "y"}, run_id=f"r{i}") for i in (3, 1, 2)]
    runs.set_run_state("r1", RunState.PAUSED, "paused by user")
    assert runs.runs() == ids
    assert runs.runs([RunState.PAUSED]) == ["r1"]
    assert runs.runs([RunState.RUNNING, RunState.DONE]) == ["r3", "r2"]
    assert runs.runs([]) == []
    # the change reached r1 only
    assert [runs.run(r).state for r in ids] == [RunState.RUNNING, RunState.PAUSED, RunState.RUNNING]
    assert runs.events("r1")[-1][1:] == ("", "run:running->paused", "paused by user")
    assert runs.events("r3", kind="run:running->paused") == []


def test_a_run_state_set_again_writes_no_event(store: Store) -> None:
    runs = RunStore(store)
    rid = runs.create_run(chain(), {"a": "x", "b": "y"})
    first = runs.run(rid).updated_at
    runs.set_run_state(rid, RunState.RUNNING, "again")
    assert [k for _, _, k, _ in runs.events(rid)] == ["created"]
    assert runs.run(rid).updated_at >= first
    runs.set_run_state(rid, RunState.DONE)
    assert runs.run(rid).finished
    assert runs.events(rid)[-1][1:] == ("", "run:running->done", "")
    with pytest.raises(UnknownRun) as info:
        runs.set_run_state("nope", RunState.DONE)
    assert str(info.value) == "unknown run 'nope'"


def test_logged_events_are_kept_with_their_step_kind_and_detail(store: Store) -> None:
    runs = RunStore(store)
    rid = runs.create_run(chain(), {"a": "x", "b": "y"})
    before = time.time()
    runs.log(rid, "replan", "b moved to x", step_id="b")
    runs.log(rid, "site-flag", "y is down")
    after = time.time()
    events = runs.events(rid)
    assert [e[1:] for e in events] == [
        ("", "created", "chain"),
        ("b", "replan", "b moved to x"),
        ("", "site-flag", "y is down"),
    ]
    assert before <= events[1][0] <= events[2][0] <= after
    assert [e[1:] for e in runs.events(rid, kind="replan")] == [("b", "replan", "b moved to x")]
    assert runs.events(rid, kind="nothing") == []
    assert [(s, k) for _, s, k in runs.changes_since(rid, 0)][1:] == [
        ("b", "replan"),
        ("", "site-flag"),
    ]


def test_changes_keep_their_detail_and_name_what_was_set(store: Store) -> None:
    runs = RunStore(store)
    rid = runs.create_run(chain(), {"a": "x", "b": "y"})
    runs.transition(rid, "a", [StepState.READY, StepState.STAGING], "parents done")
    runs.transition(rid, "a", StepState.RUNNING)
    runs.update_step(rid, "b", site="x", priority=5)
    runs.apply(rid, [("b", [], "moved by the planner", {"site": "y"})])
    runs.apply(rid, [("b", [], "", {"message": "m" * 3000})])
    events = [e[1:] for e in runs.events(rid)][1:]
    assert events[:5] == [
        ("a", "pending->ready", "parents done"),
        ("a", "ready->staging", "parents done"),
        ("a", "staging->running", ""),
        ("b", "update", "site=x, priority=5"),
        ("b", "update", "moved by the planner"),
    ]
    assert events[5][:2] == ("b", "update")
    assert events[5][2] == ("message=" + "m" * 3000)[:2000]
    with pytest.raises(AttributeError, match=r"^cannot set 'state' on a step here$"):
        runs.update_step(rid, "b", state="done")
    with pytest.raises(IllegalTransition, match=r"^step 'b' cannot go from pending to done"):
        runs.transition(rid, "b", [StepState.DONE])


def test_every_field_of_a_step_reads_back(store: Store) -> None:
    runs = RunStore(store)
    rid = runs.create_run(chain(), {"a": "x", "b": "y"})
    fields: dict[str, Any] = {
        "attempts": 4,
        "attempt_base": 3,
        "not_before": 12.5,
        "handle": "/tmp/h",
        "started_at": 100.0,
        "ended_at": 101.5,
        "exit_code": 7,
        "message": "failed once",
        "failed_sites": "y",
        "site": "z",
        "priority": 9,
    }
    got = runs.transition(rid, "a", StepState.READY, **fields)
    for rec in (got, runs.steps(rid)["a"], runs.steps_named(rid, ["a"])["a"]):
        assert (rec.attempts, rec.attempt_base, rec.attempts_in_series) == (4, 3, 1)
        assert (rec.not_before, rec.handle, rec.started_at, rec.ended_at) == (
            12.5,
            "/tmp/h",
            100.0,
            101.5,
        )
        assert (rec.exit_code, rec.message, rec.failed_sites) == (7, "failed once", ("y",))
        assert (rec.site, rec.priority, rec.state) == ("z", 9, StepState.READY)


def test_many_steps_move_together_and_are_read_in_chunks(store: Store) -> None:
    runs = RunStore(store)
    n = 1100
    rid = runs.create_run(wide(n), {f"s{i:04d}": "x" for i in range(n)})
    ids = [f"s{i:04d}" for i in range(n)]
    moved = runs.transition_many(rid, [*ids, ids[0]], StepState.READY)
    assert [r.step_id for r in moved] == ids
    assert all(r.state is StepState.READY for r in moved)
    named = runs.steps_named(rid, ids[::-1])
    assert len(named) == n
    assert all(r.state is StepState.READY for r in named.values())
    assert set(runs.steps_named(rid, ["s0001", "s0003"])) == {"s0001", "s0003"}
    assert runs.steps_named(rid, []) == {}
    ready = runs.events(rid, kind="pending->ready")
    assert len(ready) == n
    assert {d for _, _, _, d in ready} == {""}
    runs.transition_many(rid, ids[:2], StepState.STAGING, "go")
    assert [e[1:] for e in runs.events(rid, kind="ready->staging")] == [
        ("s0000", "ready->staging", "go"),
        ("s0001", "ready->staging", "go"),
    ]


def test_unknown_runs_and_steps_are_named(store: Store) -> None:
    runs = RunStore(store)
    rid = runs.create_run(chain(), {"a": "x", "b": "y"}, run_id="r")
    assert str(UnknownRun()) == "unknown run"
    for call in (lambda: runs.run("nope"), lambda: runs.workflow("nope")):
        with pytest.raises(UnknownRun) as info:
            call()
        assert str(info.value) == "unknown run 'nope'"
    with pytest.raises(UnknownRun) as info:
        runs.transition(rid, "zz", StepState.READY)
    assert str(info.value) == "unknown step 'zz' in run 'r'"
    with pytest.raises(UnknownRun) as info:
        runs.transition_many(rid, ["a", *"uvwxyz"], StepState.READY)
    assert str(info.value) == "unknown step(s) u, v, w, x, y in run 'r'"
    assert runs.steps(rid)["a"].state is StepState.PENDING
    assert runs.snapshot("nope") == (0, {})
    assert runs.apply_noted(rid, []) == ([], [])


def test_a_damaged_stored_workflow_names_the_run(store: Store) -> None:
    runs = RunStore(store)
    rid = runs.create_run(chain(), {"a": "x", "b": "y"}, run_id="r9")
    with store.engine.begin() as c:
        c.execute(text('UPDATE exec_runs SET workflow = \'{"name": "chain"}\''))
    with pytest.raises(InvalidWorkflow, match="run r9"):
        runs.workflow(rid)
