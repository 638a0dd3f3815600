"""Plans and what every planner shares: objectives, planning constraints, the protocol.

A ``Plan`` maps each step to a site and a start time, lists the data flows the
placement implies (one per item per destination site, see
``datalogistics.flows``) and carries its metrics: makespan (s), cost (EUR),
energy (kWh, PUE included), carbon (kgCO2e), bytes moved across sites, the
solver status, its bound and gap, and the planning wall time.

Times in a plan are seconds from ``t0`` (a unix time, the start of planning,
by default the earliest ``issued_at`` of the view's states).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

from datalogistics.flows import Flow

if TYPE_CHECKING:
    from federation.model import Federation
    from orchestrator.workflow import Workflow
    from twin.state import SiteView

TERMS = ("time", "cost", "energy", "carbon")
"""The four criteria every objective weighs: makespan, EUR, kWh, kgCO2e."""

TIE_BREAK = 1e-3
"""Weight of the makespan in single-criterion objectives other than time (a tie-break)."""


class ObjectiveKind(StrEnum):
    """What a planner minimises."""

    TIME = "time"
    COST = "cost"
    ENERGY = "energy"
    CARBON = "carbon"
    WEIGHTED = "weighted"


@dataclass(frozen=True)
class Objective:
    """A weighted sum of the four criteria, each normalised by a reference plan.

    ``score = sum_t w_t * value_t / ref_t`` over ``t`` in time, cost, energy,
    carbon, where ``ref`` is the plan of a baseline (HEFT) so that weights are
    dimensionless. Single-criterion kinds put weight 1 on their criterion and
    ``TIE_BREAK`` on the makespan. The epsilon-constraint mode of the issue is
    ``Objective(CARBON)`` with a deadline and a budget in ``PlanningConstraints``:
    minimise carbon subject to makespan <= deadline and cost <= budget.
    """

    kind: ObjectiveKind = ObjectiveKind.TIME
    time: float = 0.4
    cost: float = 0.2
    energy: float = 0.2
    carbon: float = 0.2

    def __post_init__(self) -> None:
        for term in TERMS:
            if getattr(self, term) < 0:
                raise ValueError(f"objective weight {term} must be >= 0")
        if self.kind is ObjectiveKind.WEIGHTED and not any(getattr(self, t) for t in TERMS):
            raise ValueError("a weighted objective needs at least one positive weight")

    @classmethod
    def parse(cls, kind: str | ObjectiveKind, **weights: float) -> Objective:
        """``Objective.parse("carbon")``; raises ``ValueError`` naming the known kinds."""
        try:
            k = ObjectiveKind(kind)
        except ValueError:
            known = ", ".join(o.value for o in ObjectiveKind)
            raise ValueError(f"unknown objective {kind!r}; use one of {known}") from None
        return cls(kind=k, **weights)

    def weights(self) -> dict[str, float]:
        """Weight of each criterion (before normalisation)."""
        if self.kind is ObjectiveKind.WEIGHTED:
            return {t: float(getattr(self, t)) for t in TERMS}
        w = dict.fromkeys(TERMS, 0.0)
        w["time"] = TIE_BREAK
        w[self.kind.value] = 1.0
        return w

    def score(self, values: Mapping[str, float], ref: Mapping[str, float]) -> float:
        """``sum_t w_t * values[t] / ref[t]`` (a reference of 0 counts as 1)."""
        total = 0.0
        for term, w in self.weights().items():
            if w:
                r = ref.get(term, 0.0)
                total += w * values[term] / (r if r > 0 else 1.0)
        return total


@dataclass(frozen=True)
class PlanningConstraints:
    """Constraints of one planning request, beyond those carried by the workflow.

    ``deadline`` (s from t0) bounds the makespan; ``budget`` (EUR) the total
    cost; ``eligible`` maps a step id to the jurisdictions or site ids it may
    use (what a data project plan's ``to_constraints()`` yields); ``z`` is the
    safety margin on capacity forecasts (``mean - z * std`` cores per slot);
    ``t0`` is the unix time of the plan's time 0 (default: the earliest
    ``issued_at`` of the view); ``max_slots`` caps how many horizon slots the
    ILP indexes.
    """

    deadline: float | None = None
    budget: float | None = None
    eligible: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    z: float = 1.0
    t0: float | None = None
    max_slots: int = 24

    def __post_init__(self) -> None:
        if self.deadline is not None and self.deadline <= 0:
            raise ValueError(f"deadline must be > 0 seconds, got {self.deadline}")
        if self.budget is not None and self.budget < 0:
            raise ValueError(f"budget must be >= 0 EUR, got {self.budget}")
        if self.z < 0:
            raise ValueError(f"z (safety margin in standard deviations) must be >= 0, got {self.z}")
        if self.max_slots < 1:
            raise ValueError("max_slots must be >= 1")


@dataclass(frozen=True)
class Assignment:
    """Where and when one step runs, and why there."""

    step: str
    site: str
    start: float
    end: float
    why: str = ""


@dataclass(frozen=True)
class Transfer:
    """One cross-site movement of a data item."""

    item: str
    src: str
    dst: str
    size: float
    start: float
    end: float


@dataclass(frozen=True)
class PlanMetrics:
    """What a plan achieves, and how sure the planner is about it.

    ``gap`` is ``(objective - bound) / objective`` where ``bound`` is the best
    proven lower bound on the objective (the solver's dual bound or the
    combinatorial bound of ``orchestrator.placement.costs.lower_bounds``, whichever is
    higher); None when no bound is known.
    """

    makespan_s: float
    cost_eur: float
    energy_kwh: float
    carbon_kg: float
    bytes_moved: float
    planner: str
    status: str
    gap: float | None = None
    bound: float | None = None
    objective_value: float | None = None
    wall_s: float = 0.0
    status_reason: str | None = None
    """Why the status is what it is when that is not the planner's normal outcome (a fallback)."""
    carbon_unknown: tuple[str, ...] = ()
    """Sites whose carbon intensity was unknown (neither forecast nor nominal): assumed to be
    the highest known in the federation (see ``orchestrator.placement.costs``)."""
    price_unknown: tuple[str, ...] = ()
    """Sites whose power price was unknown, assumed likewise."""

    @property
    def fallback(self) -> str | None:
        """The heuristic whose plan the optimiser fell back to, or ``None``."""
        if not self.status.startswith("fallback:"):
            return None
        return self.status.removeprefix("fallback:").strip()

    def values(self) -> dict[str, float]:
        """The four criteria by their objective names."""
        return {
            "time": self.makespan_s,
            "cost": self.cost_eur,
            "energy": self.energy_kwh,
            "carbon": self.carbon_kg,
        }

    def to_dict(self) -> dict[str, Any]:
        """Exactly the keys of the CLI's JSON ``metrics``."""
        return {
            "makespan_s": self.makespan_s,
            "cost_eur": self.cost_eur,
            "energy_kwh": self.energy_kwh,
            "carbon_kg": self.carbon_kg,
            "bytes_moved": self.bytes_moved,
            "planner": self.planner,
            "status": self.status,
            "status_reason": self.status_reason,
            "gap": self.gap,
            "wall_s": self.wall_s,
            "carbon_unknown_sites": list(self.carbon_unknown),
            "price_unknown_sites": list(self.price_unknown),
        }


@dataclass(frozen=True)
class Plan:
    """A placement of every step of a workflow, its data flows and its metrics."""

    workflow: str
    assignments: Mapping[str, Assignment]
    flow_list: tuple[Flow, ...]
    metrics: PlanMetrics
    objective: Objective
    t0: float = 0.0
    notes: tuple[str, ...] = ()

    def site_of(self, step: str) -> str:
        return self.assignments[step].site

    def flows(self) -> list[Flow]:
        """One ``Flow`` per item per destination site (local ones included, ``src == dst``)."""
        return list(self.flow_list)

    @property
    def transfers(self) -> list[Transfer]:
        """The cross-site flows as transfers (item, source, destination, start, end)."""
        return [
            Transfer(f.item, f.src, f.dst, f.size, f.start, f.end)
            for f in self.flow_list
            if f.crosses_sites
        ]

    def with_metrics(self, **changes: Any) -> Plan:
        """A copy with some metrics replaced (planner name, status, gap, wall time)."""
        from dataclasses import replace

        return replace(self, metrics=replace(self.metrics, **changes))

    def to_dict(self) -> dict[str, Any]:
        """The JSON document of ``continuum plan --json``."""
        return {
            "workflow": self.workflow,
            "t0": self.t0,
            "objective": self.objective.kind.value,
            "assignments": [
                {"step": a.step, "site": a.site, "start_s": a.start, "end_s": a.end}
                for a in sorted(self.assignments.values(), key=lambda a: (a.start, a.step))
            ],
            "transfers": [
                {
                    "item": t.item,
                    "src": t.src,
                    "dst": t.dst,
                    "bytes": t.size,
                    "start_s": t.start,
                    "end_s": t.end,
                }
                for t in sorted(self.transfers, key=lambda t: (t.start, t.item, t.dst))
            ],
            "metrics": self.metrics.to_dict(),
            "explanations": {a.step: a.why for a in self.assignments.values() if a.why},
            "notes": list(self.notes),
        }


class Planner(Protocol):
    """Anything that places a workflow on a federation, given the twin's view."""

    name: str

    def plan(
        self,
        workflow: Workflow,
        federation: Federation,
        view: SiteView,
        constraints: PlanningConstraints,
        objective: Objective,
    ) -> Plan:
        """A plan for ``workflow``; raises ``InfeasiblePlan`` when none exists."""
        ...
