"""Placement: which site runs each step of a workflow, when, and how its data moves.

The cost model (``costs``), list scheduling (``schedule``), the independent checker
(``checker``), time shifting (``timeshift``), explanations (``explain``), the local search
(``improve``), plans and objectives (``plan``), Gantt charts (``gantt``), the CDT problem
format (``cdt``), batches of workflows planned together (``batch``) and the planners
(``planners``: HEFT, greedy, market, CP-SAT, and the optimiser with its MILP).
"""

from orchestrator.placement.batch import merge_workflows, split_plan_sites
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
    CPSATSettings,
    GreedyPlanner,
    HEFTPlanner,
    ILPPlanner,
    ILPSettings,
    MarketPlanner,
    make_planner,
)
from orchestrator.placement.timeshift import timeshift

__all__ = [
    "PLANNERS",
    "Assignment",
    "CDTProblem",
    "CDTSchedule",
    "CPSATPlanner",
    "CPSATSettings",
    "CostModel",
    "GreedyPlanner",
    "HEFTPlanner",
    "ILPPlanner",
    "ILPSettings",
    "MarketPlanner",
    "Objective",
    "ObjectiveKind",
    "Plan",
    "PlanMetrics",
    "Planner",
    "PlanningConstraints",
    "Transfer",
    "check_plan",
    "load_cdt",
    "make_planner",
    "merge_workflows",
    "require_valid",
    "solve_cdt",
    "split_plan_sites",
    "timeshift",
]
