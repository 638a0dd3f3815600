"""An agent-based market across sites (the HEROES marketplace idea), by contract net.

Sites are agents. The orchestrator announces each step as soon as its parents
are placed (highest upward rank first); every eligible site agent answers with
a bid computed from its own twin forecast: the earliest finish it can offer
(its core pool, its queue wait, the inputs' transfer delay to it) and a price.
The price terms vary over time:

    price = (run cost at the forecast power price of the bid's slots
             + transfer EUR of the inputs to the site)
            * (1 + markup_s) * (1 + surge_s * busy_s(start))

where ``markup_s`` is the site's margin (by kind: 0 for HPC and edge centres run
at cost, 0.15 for a commercial cloud) and ``busy_s(t)`` the share of its pool
still busy at ``t`` (a congestion surcharge). The award goes to the bid with
the lowest score under the user's weights, each criterion normalised by the
best bid (finish time, price, energy, carbon). If the result misses the
deadline or the budget the time weight is raised (1, 4, 16) and the auction
re-run. The plan's cost is the sites' tariffs (what the checker recomputes);
the sum of the winning prices is recorded in the notes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from orchestrator.errors import InfeasiblePlan
from orchestrator.placement.costs import CostModel
from orchestrator.placement.plan import Objective, Plan, PlanningConstraints
from orchestrator.placement.planners.common import (
    ModelPlanner,
    escalating,
    heuristic_plan,
    limit_breach,
)
from orchestrator.placement.schedule import (
    CorePools,
    Option,
    list_schedule,
    upward_ranks,
)

if TYPE_CHECKING:
    from collections.abc import Mapping


MARKUP_BY_KIND = {"hpc": 0.0, "edge": 0.0, "cloud": 0.15}


@dataclass(frozen=True)
class Bid:
    """A site's answer to an announced step."""

    site: str
    start: float
    finish: float
    price_eur: float
    energy_kwh: float
    carbon_kg: float

    def terms(self) -> dict[str, float]:
        return {
            "time": self.finish,
            "cost": self.price_eur,
            "energy": self.energy_kwh,
            "carbon": self.carbon_kg,
        }


class SiteAgent:
    """One site bidding from its own forecast and its own booked cores."""

    def __init__(
        self, site: str, model: CostModel, pools: CorePools, markup: float, surge: float = 0.5
    ) -> None:
        self.site = site
        self.model = model
        self.pools = pools
        self.markup = markup
        self.surge = surge

    def bid(self, step: str, opt: Option, placed: Mapping[str, tuple[str, float]]) -> Bid:
        """Price and earliest finish for ``step`` (``opt`` is the slot the pool offers)."""
        m = self.model
        transfer = 0.0
        for p in m.workflow.parents(step):
            psite, _ = placed[p]
            for _, size in m.edge_items.get((p, step), ()):
                transfer += m.transfer_cost(psite, self.site, size)
        busy = self.pools.busy_fraction(self.site, opt.start)
        base = m.run_cost(step, self.site, opt.start) + transfer
        price = base * (1 + self.markup) * (1 + self.surge * busy)
        return Bid(
            self.site,
            opt.start,
            opt.end,
            price,
            m.energy_kwh(step, self.site),
            m.carbon_kg(step, self.site, opt.start),
        )


class MarketPlanner(ModelPlanner):
    """Contract-net auction of every step among the site agents."""

    name = "market"

    def __init__(
        self,
        surge: float = 0.5,
        markups: Mapping[str, float] | None = None,
        explain: bool = True,
    ) -> None:
        self.surge = surge
        self.markups = dict(markups or {})
        self.explain = explain

    def plan_model(self, model: CostModel, objective: Objective, t0: float) -> Plan:
        """The auction on an already built cost model (the optimiser's incumbents reuse it)."""
        constraints = model.constraints
        ranks = upward_ranks(model)
        last = ""
        tries = iter([objective])
        while (obj := next(tries, None)) is not None:
            plan = self._auction(model, ranks, obj, objective, constraints)
            last = limit_breach(plan, constraints)
            if not last:
                return plan.with_metrics(wall_s=time.perf_counter() - t0)
            if obj is objective:  # then weigh the limit it broke more, step by step
                tries = escalating(objective, last)
        limit = "cost" if last.startswith("cost") else "time"
        raise InfeasiblePlan(f"market: {last} even when bidders are judged on {limit}")

    def _auction(
        self,
        model: CostModel,
        ranks: Mapping[str, float],
        award_by: Objective,
        objective: Objective,
        constraints: PlanningConstraints,
    ) -> Plan:
        # the pools the agents book are the ones list_schedule books: one CorePools shared
        state: dict[str, CorePools] = {}
        awards: dict[str, str] = {}
        paid = [0.0]
        placed_ends: dict[str, tuple[str, float]] = {}

        def choose(step: str, opts: list[Option]) -> Option:
            pools = state["pools"]
            agents = {
                o.site: SiteAgent(
                    o.site,
                    model,
                    pools,
                    self.markups.get(
                        o.site, MARKUP_BY_KIND.get(model.site_by_id[o.site].kind.value, 0.0)
                    ),
                    self.surge,
                )
                for o in opts
            }
            bids = [agents[o.site].bid(step, o, placed_ends) for o in opts]
            ref = {t: min(b.terms()[t] for b in bids) for t in ("time", "cost", "energy", "carbon")}
            scored = sorted(bids, key=lambda b: (award_by.score(b.terms(), ref), b.finish))
            win = scored[0]
            paid[0] += win.price_eur
            if len(scored) > 1:
                ru = scored[1]
                awards[step] = (
                    f"contract net: {len(bids)} bids, won at {win.price_eur:.4g} EUR finishing "
                    f"{win.finish:.1f} s vs {ru.site} at {ru.price_eur:.4g} EUR, {ru.finish:.1f} s"
                )
            else:
                awards[step] = "contract net: the only bidder"
            placed_ends[step] = (win.site, win.finish)
            return next(o for o in opts if o.site == win.site)

        state["pools"] = CorePools(model)
        placed, booked, _ = list_schedule(model, ranks, choose, pools=state["pools"])
        paid_note = f"market: {paid[0]:.4g} EUR paid to the winning bids"
        return heuristic_plan(
            model, placed, booked, objective, self.name, awards, (paid_note,), self.explain
        )
