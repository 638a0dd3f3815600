"""``/api/v1/runs/{run_id}``: status, progress, per-step logs, pause, resume, kill, restart.

A run belongs to the project of its plan: its researchers (and auditors, read
only) see it; anyone else gets 404. A finished run (done, failed, cancelled)
cannot be paused, resumed or killed, and a run that is done has nothing to
restart (a failed or killed run restarts its steps in error): 409 says so.

``GET .../steps/{step}/logs`` answers the step's latest attempt's stdout and
stderr (bounded: past ``step_log_limit_bytes`` the middle is left out, with a
note); with ``?follow=true`` it streams one stream (``?stream=``) as plain text
while the step runs, and ends when the step has stopped and everything is sent.
"""

from __future__ import annotations

from pathlib import Path as FilePath
from typing import Any, Literal

from fastapi import APIRouter, Path, Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from federation.api.deps import Context, Member
from federation.api.engine import engine_of
from federation.api.errors import Conflict, Forbidden, NotFound
from orchestrator.execution import RunFinished, RunStore, StepState
from orchestrator.execution.logs import STREAMS, follow_log, read_log

router = APIRouter(prefix="/api/v1/runs", tags=["runs"])

RUN_ID = r"^[0-9a-f]{6,64}$"
ACTIVE_STEP = (StepState.STAGING, StepState.RUNNING)


def _run(ctx: Any, who: Any, run_id: str, write: bool = False) -> Any:
    runs = RunStore(ctx.store)
    try:
        rec = runs.run(run_id)
    except KeyError:
        raise NotFound(f"run {run_id!r} not found") from None
    if not who.can_read_project(rec.project):
        raise NotFound(f"run {run_id!r} not found")
    if write and not who.can_write_project(rec.project):
        raise Forbidden("the auditor role is read-only")
    return runs, rec


@router.get("/{run_id}", summary="A run's state and progress, step by step")
def status(who: Member, ctx: Context, run_id: str = Path(pattern=RUN_ID)) -> dict[str, Any]:
    runs, rec = _run(ctx, who, run_id)
    steps = runs.steps(run_id)
    counts: dict[str, int] = {}
    for r in steps.values():
        counts[r.state.value] = counts.get(r.state.value, 0) + 1
    return {
        "id": rec.id,
        "project": rec.project,
        "workflow": rec.name,
        "state": rec.state.value,
        "created_at": rec.created_at,
        "launch": rec.launch.to_json(),
        "progress": {"done": counts.get("done", 0), "total": len(steps), "by_state": counts},
        "steps": [
            {
                "step": r.step_id,
                "state": r.state.value,
                "site": r.site,
                "attempts": r.attempts,
                "exit_code": r.exit_code,
                "message": r.message,
                "started_at": r.started_at,
                "ended_at": r.ended_at,
            }
            for r in steps.values()
        ],
        "events": [
            {"at": at, "step": step, "kind": kind, "detail": detail}
            for at, step, kind, detail in runs.events(run_id)[-50:]
        ],
    }


class StepLogs(BaseModel):
    """The latest attempt of a step and what it wrote (bounded)."""

    step: str
    site: str
    attempt: int
    state: str
    exit_code: int | None
    message: str
    stdout: str
    stderr: str
    stdout_bytes: int
    stderr_bytes: int
    truncated: list[str]
    """The streams whose middle was left out (``step_log_limit_bytes``)."""


def _log_path(ctx: Any, site: str, handle: str, stream: str) -> FilePath | None:
    if not handle:
        return None
    conn = engine_of(ctx).executor().connectors.get(site)
    return conn.log_path(handle, stream) if conn is not None else None


@router.get(
    "/{run_id}/steps/{step_id}/logs",
    summary="The stdout and stderr of a step's latest attempt (or follow one as it runs)",
    response_model=StepLogs,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
def logs(
    who: Member,
    ctx: Context,
    run_id: str = Path(pattern=RUN_ID),
    step_id: str = Path(min_length=1, max_length=512),
    follow: bool = Query(default=False, description="stream one stream while the step runs"),
    stream: Literal["stdout", "stderr"] = Query(default="stdout", description="with follow"),
) -> Any:
    runs, _ = _run(ctx, who, run_id)
    found = runs.steps_named(run_id, [step_id])
    if step_id not in found:
        raise NotFound(f"run {run_id!r} has no step {step_id!r}")
    limit = ctx.settings.step_log_limit_bytes
    if follow:

        def current() -> Any:
            return runs.steps_named(run_id, [step_id])[step_id]

        def path() -> FilePath | None:
            rec = current()
            return _log_path(ctx, rec.site, rec.handle, stream)

        def running() -> bool:
            rec = current()
            return rec.state in ACTIVE_STEP or rec.state in (StepState.READY, StepState.PENDING)

        return StreamingResponse(
            follow_log(path, running, limit=limit), media_type="text/plain; charset=utf-8"
        )
    rec = found[step_id]
    texts = {s: read_log(_log_path(ctx, rec.site, rec.handle, s), limit) for s in STREAMS}
    return StepLogs(
        step=step_id,
        site=rec.site,
        attempt=rec.attempts,
        state=rec.state.value,
        exit_code=rec.exit_code,
        message=rec.message,
        stdout=texts["stdout"].text,
        stderr=texts["stderr"].text,
        stdout_bytes=texts["stdout"].size,
        stderr_bytes=texts["stderr"].size,
        truncated=[s for s in STREAMS if texts[s].truncated],
    )


def _control(ctx: Any, who: Any, run_id: str, action: str) -> dict[str, Any]:
    runs, _ = _run(ctx, who, run_id, write=True)
    engine = engine_of(ctx)
    try:
        with engine.lock:
            engine.executor().control(run_id, action)
    except RunFinished as exc:
        raise Conflict(str(exc)) from None
    return {"id": run_id, "state": runs.run(run_id).state.value}


@router.post("/{run_id}/pause", summary="Start no new step; running steps finish")
def pause(who: Member, ctx: Context, run_id: str = Path(pattern=RUN_ID)) -> dict[str, Any]:
    return _control(ctx, who, run_id, "pause")


@router.post("/{run_id}/resume", summary="Put paused steps back in the queue")
def resume(who: Member, ctx: Context, run_id: str = Path(pattern=RUN_ID)) -> dict[str, Any]:
    return _control(ctx, who, run_id, "resume")


@router.post("/{run_id}/kill", summary="Cancel the run's unfinished steps")
def kill(who: Member, ctx: Context, run_id: str = Path(pattern=RUN_ID)) -> dict[str, Any]:
    return _control(ctx, who, run_id, "kill")


@router.post("/{run_id}/restart", summary="Restart the steps in error")
def restart(who: Member, ctx: Context, run_id: str = Path(pattern=RUN_ID)) -> dict[str, Any]:
    return _control(ctx, who, run_id, "restart")
