"""The planners: HEFT, greedy cheapest/greenest, the ILP and the agent-based market.

Each satisfies ``orchestrator.placement.plan.Planner``; ``make_planner(name)`` builds one by name.
"""

from __future__ import annotations

from orchestrator.placement.planners.greedy import GreedyPlanner
from orchestrator.placement.planners.heft import HEFTPlanner
from orchestrator.placement.planners.ilp import ILPPlanner, ILPSettings
from orchestrator.placement.planners.market import Bid, MarketPlanner, SiteAgent
from orchestrator.placement.planners.solvers import SolveInfo

PLANNERS = ("ilp", "heft", "greedy", "market")


def make_planner(
    name: str, settings: ILPSettings | None = None, progress: object = None
) -> HEFTPlanner | GreedyPlanner | ILPPlanner | MarketPlanner:
    """A planner by name (``ilp``, ``heft``, ``greedy``, ``market``); ``ValueError`` otherwise."""
    if name == "ilp":
        return ILPPlanner(settings, progress if callable(progress) else None)
    if name == "heft":
        return HEFTPlanner()
    if name == "greedy":
        return GreedyPlanner()
    if name == "market":
        return MarketPlanner()
    raise ValueError(f"unknown planner {name!r}; use one of {', '.join(PLANNERS)}")


__all__ = [
    "PLANNERS",
    "Bid",
    "GreedyPlanner",
    "HEFTPlanner",
    "ILPPlanner",
    "ILPSettings",
    "MarketPlanner",
    "SiteAgent",
    "SolveInfo",
    "make_planner",
]
