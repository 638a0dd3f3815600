"""Why each step went where it went: the binding constraint, or the terms against the runner-up."""

from __future__ import annotations

from collections.abc import Mapping

from orchestrator.placement.costs import CostModel
from orchestrator.placement.plan import Objective


def explain_all(
    model: CostModel,
    placed: Mapping[str, tuple[str, float, float]],
    objective: Objective,
    prefix: Mapping[str, str] | None = None,
    transfers: Mapping[tuple[str, str], tuple[float, float]] | None = None,
) -> dict[str, str]:
    """One sentence per step (``prefix`` adds a planner-specific clause, e.g. a market award;
    ``transfers``, the placement's bookings on links, tell a wait for a busy link)."""
    ends = {s: (site, end) for s, (site, _, end) in placed.items()}
    return {
        s: explain_step(
            model, s, placed[s], ends, objective, (prefix or {}).get(s, ""), transfers or {}
        )
        for s in placed
    }


def explain_step(
    model: CostModel,
    step: str,
    chosen: tuple[str, float, float],
    ends: Mapping[str, tuple[str, float]],
    objective: Objective,
    prefix: str = "",
    transfers: Mapping[tuple[str, str], tuple[float, float]] | None = None,
) -> str:
    """Compare the chosen site with the best other eligible site on this step alone.

    Each site's criteria are those of the step started as soon as its inputs can
    be there (the pool wait is the chosen site's only): finish time, cost (EUR),
    energy (kWh), carbon (kg). The runner-up is the site with the lowest score
    under ``objective`` using the chosen site's values as the reference.
    """
    site, start, _ = chosen
    parts = [prefix] if prefix else []
    ready = model.ready_time(step, site, ends)
    inputs = ready
    for item in model.step_by_id[step].inputs:
        arrival = (transfers or {}).get((item, site))
        if arrival is not None:
            inputs = max(inputs, arrival[1])
    if inputs > ready + 1e-9:
        parts.append(f"its inputs waited {inputs - ready:.1f} s for busy links into {site}")
    if start > inputs + 1e-9:
        parts.append(f"waited {start - inputs:.1f} s for free cores on {site} (capacity binding)")
    eligible = model.eligible[step]
    if len(eligible) == 1:
        excluded = "; ".join(f"{s}: {r}" for s, r in model.why_not[step].items())
        parts.append(f"only eligible site ({excluded})" if excluded else "only site")
        return "; ".join(parts)
    mine = model.terms(step, site, start)
    best_alt: tuple[float, str, dict[str, float]] | None = None
    unreachable = []
    for alt in eligible:
        if alt == site:
            continue
        t = model.ready_time(step, alt, ends)
        if t == float("inf"):
            unreachable.append(alt)
            continue
        terms = model.terms(step, alt, t)
        score = objective.score(terms, mine)
        if best_alt is None or score < best_alt[0]:
            best_alt = (score, alt, terms)
    if best_alt is None:
        parts.append(f"no other site can receive its inputs ({', '.join(unreachable)} unlinked)")
        return "; ".join(parts)
    _, alt, other = best_alt
    parts.append(
        f"vs runner-up {alt}: finish {mine['time']:.1f} s vs {other['time']:.1f} s, "
        f"cost {mine['cost']:.4g} vs {other['cost']:.4g} EUR, "
        f"energy {mine['energy']:.3g} vs {other['energy']:.3g} kWh, "
        f"carbon {mine['carbon']:.3g} vs {other['carbon']:.3g} kg"
    )
    if model.why_not[step]:
        parts.append("excluded: " + "; ".join(f"{s} ({r})" for s, r in model.why_not[step].items()))
    return "; ".join(parts)
