"""Execution: durable runs of placed workflows through site connectors.

Public API::

    from federation.store import Store
    from orchestrator.connectors import LocalConnector
    from orchestrator.execution import CopyStager, Executor, Launch, RunStore

    runs = RunStore(Store.at("state.db"))
    sites = {s: LocalConnector(s, f"work/{s}", slots=2) for s in ("a", "b")}
    ex = Executor(runs, sites, stager=CopyStager(Path("work")))
    run_id = ex.submit(workflow, {step.id: "a" for step in workflow.steps})   # steps' commands
    ex.run(run_id)                 # -> RunState.DONE
    # or each step as the synthetic WfCommons step, durations and sizes x 1/1000:
    ex.submit(workflow, assignment, launch=Launch.synthetic(federation, 1e-3, 1e-3))
"""

from orchestrator.execution.executor import (
    CopyStager,
    Executor,
    ItemStager,
    Replanner,
    ReplanRequest,
    RunFinished,
)
from orchestrator.execution.launch import Launch, LaunchKind
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
    "ItemStager",
    "Launch",
    "LaunchKind",
    "OnError",
    "ReplanRequest",
    "Replanner",
    "RunFinished",
    "RunRecord",
    "RunState",
    "RunStore",
    "StepRecord",
    "StepState",
]
