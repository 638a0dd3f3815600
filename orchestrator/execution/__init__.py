"""Execution: durable runs of placed workflows through site connectors.

Public API::

    from federation.store import Store
    from orchestrator.connectors import LocalConnector
    from orchestrator.execution import CopyStager, Executor, RunStore, synthetic_command

    runs = RunStore(Store.at("state.db"))
    sites = {s: LocalConnector(s, f"work/{s}", slots=2) for s in ("a", "b")}
    ex = Executor(runs, sites, stager=CopyStager(Path("work")), command=synthetic_command())
    run_id = ex.submit(workflow, {step.id: "a" for step in workflow.steps})
    ex.run(run_id)                 # -> RunState.DONE
"""

from orchestrator.execution.executor import (
    CopyStager,
    Executor,
    Replanner,
    ReplanRequest,
    synthetic_command,
)
from orchestrator.execution.states import (
    IllegalTransition,
    OnError,
    RunState,
    StepState,
)
from orchestrator.execution.store import RunRecord, RunStore, StepRecord

__all__ = [
    "CopyStager",
    "Executor",
    "IllegalTransition",
    "OnError",
    "ReplanRequest",
    "Replanner",
    "RunRecord",
    "RunState",
    "RunStore",
    "StepRecord",
    "StepState",
    "synthetic_command",
]
