"""Orchestrator: workflows, placement across sites, execution and re-planning.

Public API::

    from orchestrator import load_workflow
    wf = load_workflow("examples/montage-chameleon-2mass-005d-001.json")
    wf.summary()                 # tasks, edges, levels, critical path, work, bytes
    wf.topological_order()[:3]
    length, path = wf.critical_path()

Placement::

    from orchestrator import ILPPlanner, Objective, PlanningConstraints, check_plan
    from twin import static_view
    view = static_view(federation)
    plan = ILPPlanner().plan(wf, federation, view, PlanningConstraints(deadline=3600),
                             Objective.parse("carbon"))
    plan.metrics, plan.flows(), check_plan(plan, wf, federation, view, PlanningConstraints())
"""

from typing import TYPE_CHECKING

from federation.lazy import lazy_exports

if TYPE_CHECKING:
    from orchestrator.errors import (
        InfeasiblePlan,
        InvalidCDT,
        InvalidWorkflow,
        OrchestratorError,
        PlanInvalid,
        PlanningError,
    )
    from orchestrator.loaders import load_workflow, workflow_from_data
    from orchestrator.placement.cdt import CDTProblem, CDTSchedule, load_cdt, solve_cdt
    from orchestrator.placement.checker import check_plan, require_valid
    from orchestrator.placement.costs import CostModel
    from orchestrator.placement.plan import (
        Assignment,
        Objective,
        ObjectiveKind,
        Plan,
        PlanMetrics,
        Planner,
        PlanningConstraints,
        Transfer,
    )
    from orchestrator.placement.planners import (
        PLANNERS,
        CPSATPlanner,
        GreedyPlanner,
        HEFTPlanner,
        ILPPlanner,
        ILPSettings,
        MarketPlanner,
        make_planner,
    )
    from orchestrator.placement.timeshift import timeshift
    from orchestrator.wfformat import REFERENCE_MHZ, load_wfformat
    from orchestrator.workflow import Step, StepConstraints, Workflow, find_cycle

if not TYPE_CHECKING:  # mypy reads the imports above; at run time they load on first use
    __getattr__, __dir__ = lazy_exports(__name__, __file__)

__all__ = [
    "PLANNERS",
    "REFERENCE_MHZ",
    "Assignment",
    "CDTProblem",
    "CDTSchedule",
    "CPSATPlanner",
    "CostModel",
    "GreedyPlanner",
    "HEFTPlanner",
    "ILPPlanner",
    "ILPSettings",
    "InfeasiblePlan",
    "InvalidCDT",
    "InvalidWorkflow",
    "MarketPlanner",
    "Objective",
    "ObjectiveKind",
    "OrchestratorError",
    "Plan",
    "PlanInvalid",
    "PlanMetrics",
    "Planner",
    "PlanningConstraints",
    "PlanningError",
    "Step",
    "StepConstraints",
    "Transfer",
    "Workflow",
    "check_plan",
    "find_cycle",
    "load_cdt",
    "load_wfformat",
    "load_workflow",
    "make_planner",
    "require_valid",
    "solve_cdt",
    "timeshift",
    "workflow_from_data",
]
