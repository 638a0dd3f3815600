"""The planners: HEFT, greedy cheapest/greenest, the agent-based market, CP-SAT, and the
optimiser (``ilp``: the best heuristic plan improved by the MILP and CP-SAT).

Each satisfies ``orchestrator.placement.plan.Planner``; ``make_planner(name)`` builds one by name.
"""

from __future__ import annotations

from orchestrator.placement.planners.cpsat import CPSATPlanner, CPSATSettings
from orchestrator.placement.planners.greedy import GreedyPlanner
from orchestrator.placement.planners.heft import HEFTPlanner
from orchestrator.placement.planners.ilp import ILPPlanner, ILPSettings
from orchestrator.placement.planners.market import Bid, MarketPlanner, SiteAgent
from orchestrator.placement.planners.solvers import SolveInfo

PLANNERS = ("ilp", "heft", "greedy", "market", "cpsat")


def make_planner(
    name: str, settings: ILPSettings | None = None, progress: object = None
) -> HEFTPlanner | GreedyPlanner | ILPPlanner | MarketPlanner | CPSATPlanner:
    """A planner by name (one of ``PLANNERS``); ``ValueError`` otherwise.

    ``settings`` configure the optimiser (``ilp``); ``cpsat`` takes its time limit and
    workers from them.
    """
    report = progress if callable(progress) else None
    if name == "ilp":
        return ILPPlanner(settings, report)
    if name == "cpsat":
        s = settings or ILPSettings()
        return CPSATPlanner(CPSATSettings(time_limit=s.time_limit, workers=s.workers), report)
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
    "CPSATPlanner",
    "CPSATSettings",
    "GreedyPlanner",
    "HEFTPlanner",
    "ILPPlanner",
    "ILPSettings",
    "MarketPlanner",
    "SiteAgent",
    "SolveInfo",
    "make_planner",
]
