"""A run carries its own launch; a step that cannot run fails alone; inputs come from where
they live; logs are kept bounded; a finished run refuses controls."""

from __future__ import annotations

import hashlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from federation.store import Store
from orchestrator import Workflow
from orchestrator.connectors import LocalConnector
from orchestrator.errors import OrchestratorError
from orchestrator.execution import (
    CopyStager,
    Executor,
    Launch,
    LaunchKind,
    OnError,
    RunFinished,
    RunState,
    RunStore,
    StepState,
)
from orchestrator.execution.logs import read_log
from tests.orchestrator.test_execution import lines, shell_workflow


def executor(work: Path, **kw: object) -> Executor:
    runs = RunStore(Store.at(work / "state.db"))
    sites = {s: LocalConnector(s, work / s, slots=2) for s in ("a", "b")}
    return Executor(
        runs,
        sites,
        stager=CopyStager(work),
        inputs_dir=work / "inputs",
        poll_interval=0.01,
        **kw,  # type: ignore[arg-type]
    )


def drive(ex: Executor, run_ids: list[str], timeout: float = 60.0) -> dict[str, RunState]:
    import time

    end = time.monotonic() + timeout
    states = ex.step_all(run_ids)
    while any(s is RunState.RUNNING for s in states.values()) and time.monotonic() < end:
        time.sleep(0.02)
        states = ex.step_all(run_ids)
    return states


@pytest.fixture
def work(tmp_path: Path) -> Path:
    (tmp_path / "markers").mkdir()
    return tmp_path


SYNTHETIC = Launch(LaunchKind.SYNTHETIC, time_scale=1e-3, data_scale=1.0, speeds={"a": 1.0})


def test_each_run_keeps_its_own_launch_on_a_shared_executor_and_after_a_restart(
    work: Path,
) -> None:
    # The defect: a synthetic run set the command on the one executor, so every later run
    # (of any project) burnt CPU instead of running its own steps.
    synthetic = shell_workflow(work / "markers" / "ignored")
    native = shell_workflow(work / "markers")
    ex = executor(work)
    first = ex.submit(synthetic, dict.fromkeys("abcd", "a"), launch=SYNTHETIC, project="p1")
    second = ex.submit(native, dict.fromkeys("abcd", "b"), project="p2")
    assert drive(ex, [first, second]) == {first: RunState.DONE, second: RunState.DONE}
    assert lines(work / "markers" / "a") == ["b"]  # the native run ran its own commands
    assert not (work / "markers" / "ignored").exists()  # the synthetic one did not
    xa = ex.runs.steps(first)["a"]
    assert ex.connectors["a"].output_path(xa.handle, "xa").stat().st_size == 20  # size x 1.0
    # a new executor (a restarted service) reads each run's launch from the store
    fresh = executor(work)
    assert fresh.runs.run(first).launch == SYNTHETIC
    assert fresh.runs.run(second).launch == Launch.native()
    third = fresh.submit(native, dict.fromkeys("abcd", "a"))
    assert drive(fresh, [third])[third] is RunState.DONE
    assert lines(work / "markers" / "a") == ["b", "a"]


def test_a_native_run_of_steps_without_commands_is_refused_naming_them(work: Path) -> None:
    wf = Workflow.from_dict(
        {"name": "bare", "steps": [{"id": "x", "work": 1}, {"id": "y", "work": 1}]}
    )
    ex = executor(work)
    with pytest.raises(OrchestratorError, match=r"step\(s\) x, y have no command"):
        ex.submit(wf, {"x": "a", "y": "a"})
    assert ex.runs.runs() == []  # nothing stored
    rid = ex.submit(wf, {"x": "a", "y": "a"}, launch=SYNTHETIC)
    assert drive(ex, [rid])[rid] is RunState.DONE


def broken_and_healthy(markers: Path) -> tuple[Workflow, Workflow]:
    broken = Workflow.from_dict(
        {
            "name": "broken",
            "data": [{"id": "x", "size": 1}],
            "steps": [
                {"id": "p", "work": 1, "outputs": ["x"], "command": f"echo p >> {markers}/p"},
                {"id": "q", "work": 1, "inputs": ["x"], "command": f"echo q >> {markers}/q"},
            ],
        }
    )
    return broken, shell_workflow(markers)


def test_a_step_that_exits_0_without_its_output_fails_alone_and_other_runs_finish(
    work: Path,
) -> None:
    markers = work / "markers"
    broken, healthy = broken_and_healthy(markers)
    ex = executor(work)
    bad = ex.submit(
        broken, {"p": "a", "q": "b"}, max_attempts=2, backoff_s=0.01, project="one", run_id="bad1"
    )
    good = ex.submit(healthy, dict.fromkeys("abcd", "b"), project="two", run_id="good1")
    states = drive(ex, [bad, good])
    assert states == {bad: RunState.FAILED, good: RunState.DONE}
    p = ex.runs.steps(bad)["p"]
    assert p.state is StepState.CANCELLED or p.state is StepState.FAILED
    assert "without writing its declared output(s): x" in p.message
    assert lines(markers / "p") == ["p", "p"]  # both attempts ran, then cancel-job
    assert not (markers / "q").exists()  # its consumer never started
    kinds = [k for _, _, k, _ in ex.runs.events(bad)]
    assert "error" not in kinds  # a step's failure, not a failed pass
    assert lines(markers / "d") == ["b"]


def test_a_step_whose_input_cannot_be_staged_fails_with_the_reason(work: Path) -> None:
    wf = Workflow.from_dict(
        {
            "name": "located",
            "data": [{"id": "raw", "size": 5, "location": {"site": "a", "path": "/nonexistent"}}],
            "steps": [{"id": "s", "work": 1, "inputs": ["raw"], "command": "true"}],
        }
    )
    ex = executor(work)
    rid = ex.submit(wf, {"s": "b"}, max_attempts=1, on_error=OnError.CONTINUE)
    assert drive(ex, [rid])[rid] is RunState.FAILED
    rec = ex.runs.steps(rid)["s"]
    assert rec.state is StepState.FAILED
    assert "no file /nonexistent at site a" in rec.message


def test_located_inputs_move_from_their_site_or_are_linked_where_they_live(work: Path) -> None:
    raw = work / "archive" / "obs.ms"
    raw.parent.mkdir()
    raw.write_bytes(b"visibilities" * 100)
    cat = 'cat "$CONTINUUM_IN/raw" > "$CONTINUUM_OUT/copy"'
    wf = Workflow.from_dict(
        {
            "name": "located",
            "data": [
                {"id": "raw", "size": 1200, "location": {"site": "a", "path": str(raw)}},
                {"id": "copy", "size": 1200},
            ],
            "steps": [
                {"id": "s", "work": 1, "inputs": ["raw"], "outputs": ["copy"], "command": cat}
            ],
        }
    )
    ex = executor(work)
    far = ex.submit(wf, {"s": "b"})  # raw lives at a: staged a -> b, sha256-checked
    near = ex.submit(wf, {"s": "a"})  # raw lives where the step runs: linked, not moved
    assert drive(ex, [far, near]) == {far: RunState.DONE, near: RunState.DONE}
    stager = ex.stager
    assert isinstance(stager, CopyStager)
    assert [(m[0], m[1], m[2]) for m in stager.moves] == [("raw", "a", "b")]
    for rid, site in ((far, "b"), (near, "a")):
        rec = ex.runs.steps(rid)["s"]
        out = ex.connectors[site].output_path(rec.handle, "copy")
        assert out.read_bytes() == raw.read_bytes()
    linked = Path(ex.runs.steps(near)["s"].handle) / "in" / "raw"
    assert linked.is_symlink()
    assert linked.resolve() == raw.resolve()


@pytest.fixture
def web(tmp_path: Path) -> Iterator[str]:
    root = tmp_path / "web"
    root.mkdir()
    (root / "cal.h5").write_bytes(b"calibration tables")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a: object, **kw: object) -> None:
            super().__init__(*a, directory=str(root), **kw)  # type: ignore[arg-type]

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_an_input_at_a_url_is_fetched_and_checked_against_its_checksum(
    work: Path, web: str
) -> None:
    good = "sha256:" + hashlib.sha256(b"calibration tables").hexdigest()
    bad = "sha256:" + "0" * 64

    def wf(checksum: str) -> Workflow:
        return Workflow.from_dict(
            {
                "name": f"url-{checksum[-4:]}",
                "data": [
                    {
                        "id": "cal",
                        "size": 18,
                        "checksum": checksum,
                        "location": {"url": f"{web}/cal.h5"},
                    }
                ],
                "steps": [
                    {
                        "id": "s",
                        "work": 1,
                        "inputs": ["cal"],
                        "command": 'grep -q calibration "$CONTINUUM_IN/cal"',
                    }
                ],
            }
        )

    ex = executor(work)
    ok = ex.submit(wf(good), {"s": "a"})
    wrong = ex.submit(wf(bad), {"s": "a"}, max_attempts=1, on_error=OnError.CONTINUE)
    assert drive(ex, [ok, wrong]) == {ok: RunState.DONE, wrong: RunState.FAILED}
    assert "does not match its declared checksum" in ex.runs.steps(wrong)["s"].message


def test_step_logs_are_kept_bounded_with_a_note(work: Path) -> None:
    wf = Workflow.from_dict(
        {
            "name": "loud",
            "steps": [
                {
                    "id": "s",
                    "work": 1,
                    "command": "head -c 300000 /dev/zero | tr '\\0' x; echo; echo end-of-output",
                }
            ],
        }
    )
    ex = executor(work, log_limit=64 * 1024)
    rid = ex.submit(wf, {"s": "a"})
    assert drive(ex, [rid])[rid] is RunState.DONE
    path = ex.connectors["a"].log_path(ex.runs.steps(rid)["s"].handle, "stdout")
    assert path is not None
    assert path.stat().st_size < 64 * 1024 + 200  # kept: head, note, tail
    kept = read_log(path, 1024 * 1024)
    assert kept.truncated
    assert "bytes of this stream not kept" in kept.text
    assert kept.text.rstrip().endswith("end-of-output")  # the tail is there


def test_a_finished_run_refuses_pause_resume_kill_and_a_done_one_restart(work: Path) -> None:
    ex = executor(work)
    rid = ex.submit(shell_workflow(work / "markers"), dict.fromkeys("abcd", "a"))
    assert drive(ex, [rid])[rid] is RunState.DONE
    for control in (ex.pause, ex.resume, ex.kill, ex.restart_failed):
        with pytest.raises(RunFinished, match="is done"):
            control(rid)
    assert ex.runs.run(rid).state is RunState.DONE


def test_a_re_plan_cut_short_by_a_crash_is_finished_not_retried_where_it_failed(
    work: Path,
) -> None:
    # The store as a crash left it between "attempts exhausted" and the re-plan's record:
    # step c queued again at site a, where it failed its last attempt.
    markers = work / "markers"
    wf = shell_workflow(markers)
    runs = RunStore(Store.at(work / "state.db"))
    rid = runs.create_run(wf, dict.fromkeys("abcd", "a"), max_attempts=1)
    runs.transition(rid, "c", [StepState.READY, StepState.STAGING, StepState.RUNNING], attempts=1)
    runs.transition(rid, "c", StepState.FAILED)
    runs.update_step(rid, "c", failed_sites="a")
    runs.transition(rid, "c", StepState.READY, "attempts exhausted", attempt_base=1)
    ex = executor(work, replanner=lambda req: dict.fromkeys(req.steps, "b"))
    assert drive(ex, [rid])[rid] is RunState.DONE
    assert lines(markers / "c") == ["b"]  # not once more at a
    replans = [d for _, _, k, d in ex.runs.events(rid) if k == "replan"]
    assert any("resuming the re-plan" in d for d in replans)
