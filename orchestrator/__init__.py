"""Orchestrator: workflows, placement across sites, execution and re-planning.

Public API::

    from orchestrator import load_workflow
    wf = load_workflow("examples/montage-chameleon-2mass-005d-001.json")
    wf.summary()                 # tasks, edges, levels, critical path, work, bytes
    wf.topological_order()[:3]
    length, path = wf.critical_path()
"""

from orchestrator.errors import InvalidWorkflow, OrchestratorError
from orchestrator.loaders import load_workflow, workflow_from_data
from orchestrator.wfformat import REFERENCE_MHZ, load_wfformat
from orchestrator.workflow import Step, StepConstraints, Workflow, find_cycle

__all__ = [
    "REFERENCE_MHZ",
    "InvalidWorkflow",
    "OrchestratorError",
    "Step",
    "StepConstraints",
    "Workflow",
    "find_cycle",
    "load_wfformat",
    "load_workflow",
    "workflow_from_data",
]
