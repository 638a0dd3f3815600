"""``/api/v1/runs/{run_id}``: status, progress, per-step logs, pause, resume, kill, restart.

A run belongs to the project of its plan: its researchers (and auditors, read
only) see it; anyone else gets 404.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Path

from federation.api.deps import Context, Member
from federation.api.engine import engine_of
from federation.api.errors import Forbidden, NotFound

router = APIRouter(prefix="/api/v1/runs", tags=["runs"])

RUN_ID = r"^[0-9a-f]{6,64}$"


def _run(ctx: Any, who: Any, run_id: str, write: bool = False) -> Any:
    ex = engine_of(ctx).executor()
    try:
        rec = ex.runs.run(run_id)
    except KeyError:
        raise NotFound(f"run {run_id!r} not found") from None
    if not who.can_read_project(rec.project):
        raise NotFound(f"run {run_id!r} not found")
    if write and not who.can_write_project(rec.project):
        raise Forbidden("the auditor role is read-only")
    return ex, rec


@router.get("/{run_id}", summary="A run's state and progress, step by step")
def status(who: Member, ctx: Context, run_id: str = Path(pattern=RUN_ID)) -> dict[str, Any]:
    ex, rec = _run(ctx, who, run_id)
    steps = ex.runs.steps(run_id)
    counts: dict[str, int] = {}
    for r in steps.values():
        counts[r.state.value] = counts.get(r.state.value, 0) + 1
    return {
        "id": rec.id,
        "project": rec.project,
        "workflow": rec.name,
        "state": rec.state.value,
        "progress": {"done": counts.get("done", 0), "total": len(steps), "by_state": counts},
        "steps": [
            {
                "step": r.step_id,
                "state": r.state.value,
                "site": r.site,
                "attempts": r.attempts,
                "exit_code": r.exit_code,
            }
            for r in steps.values()
        ],
        "events": [
            {"at": at, "step": step, "kind": kind, "detail": detail}
            for at, step, kind, detail in ex.runs.events(run_id)[-50:]
        ],
    }


@router.get("/{run_id}/steps/{step_id}/logs", summary="What the step's latest attempt reported")
def logs(
    who: Member,
    ctx: Context,
    run_id: str = Path(pattern=RUN_ID),
    step_id: str = Path(min_length=1, max_length=512),
) -> dict[str, Any]:
    ex, _ = _run(ctx, who, run_id)
    steps = ex.runs.steps(run_id)
    if step_id not in steps:
        raise NotFound(f"run {run_id!r} has no step {step_id!r}")
    rec = steps[step_id]
    info = ex.connectors[rec.site].status(rec.handle) if rec.handle else None
    out: dict[str, Any] = {"step": step_id, "site": rec.site, "attempt": rec.attempts}
    if info is not None:
        out.update(status=info.status.value, exit_code=info.exit_code, message=info.message)
        for stream in ("stdout", "stderr"):
            path = info.workdir / stream if info.workdir is not None else None
            if path is not None and path.is_file():
                out[stream] = path.read_text(errors="replace")[-20_000:]
    return out


def _control(ctx: Any, who: Any, run_id: str, action: str) -> dict[str, Any]:
    ex, _ = _run(ctx, who, run_id, write=True)
    engine = engine_of(ctx)
    with engine.lock:
        if action == "pause":
            ex.pause(run_id)
        elif action == "resume":
            ex.resume(run_id)
        elif action == "kill":
            ex.kill(run_id)
        else:
            ex.restart_failed(run_id)
    if action in ("resume", "restart"):
        engine._start()
    return {"id": run_id, "state": ex.runs.run(run_id).state.value}


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
