"""State machines of runs and steps, and the error policies (ProActive-style).

Every change of state is validated against ``STEP_TRANSITIONS`` and written
to the store *before* the executor acts on it, so a restart after a crash
resumes from what was recorded.

::

    pending -> ready -> staging -> running -> done
       |         |         |          |-> failed -> ready (retry / restart)
       |         |         |          '-> ready (re-planned, or attempt lost)
       |         '-> failed (sent back to be re-planned after its last attempt, and no
       |                     site could take it)
       '---------'---------'------------> paused, cancelled
"""

from __future__ import annotations

from enum import StrEnum

from orchestrator.errors import OrchestratorError


class StepState(StrEnum):
    PENDING = "pending"
    READY = "ready"
    STAGING = "staging"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"
    PAUSED = "paused"


class RunState(StrEnum):
    RUNNING = "running"
    PAUSED = "paused"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


class OnError(StrEnum):
    """What a run does when a step has exhausted its attempts."""

    CANCEL_JOB = "cancel-job"
    PAUSE_TASK = "pause-task"
    PAUSE_JOB = "pause-job"
    CONTINUE = "continue"


S = StepState
STEP_TRANSITIONS: dict[StepState, frozenset[StepState]] = {
    S.PENDING: frozenset({S.READY, S.PAUSED, S.CANCELLED}),
    S.READY: frozenset({S.STAGING, S.RUNNING, S.PENDING, S.PAUSED, S.CANCELLED, S.FAILED}),
    S.STAGING: frozenset({S.RUNNING, S.READY, S.FAILED, S.PAUSED, S.CANCELLED}),
    S.RUNNING: frozenset({S.DONE, S.FAILED, S.READY, S.CANCELLED}),
    S.FAILED: frozenset({S.READY, S.PAUSED, S.CANCELLED}),
    S.PAUSED: frozenset({S.PENDING, S.READY, S.CANCELLED}),
    S.CANCELLED: frozenset({S.PENDING}),
    S.DONE: frozenset(),
}
"""Allowed moves of a step. ``cancelled -> pending`` is the restart of a killed step."""

ACTIVE = frozenset({S.STAGING, S.RUNNING})
TERMINAL = frozenset({S.DONE, S.CANCELLED})


class IllegalTransition(OrchestratorError):
    """A state change that the step state machine does not allow."""

    def __init__(self, step_id: str, current: StepState, wanted: StepState) -> None:
        allowed = ", ".join(sorted(s.value for s in STEP_TRANSITIONS[current])) or "nothing"
        super().__init__(
            f"step {step_id!r} cannot go from {current.value} to {wanted.value} "
            f"(from {current.value} it may go to: {allowed})"
        )


def check_transition(step_id: str, current: StepState, wanted: StepState) -> None:
    """Raise ``IllegalTransition`` unless ``current -> wanted`` is allowed."""
    if wanted not in STEP_TRANSITIONS[current]:
        raise IllegalTransition(step_id, current, wanted)
