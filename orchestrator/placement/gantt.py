"""Gantt charts (PNG, matplotlib's Agg backend) of plans and CDT schedules."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from orchestrator.placement.cdt import CDTSchedule
    from orchestrator.placement.plan import Plan

MAX_ROWS = 60
"""Above this many steps a plan's chart packs steps into lanes per site."""


def plan_gantt(plan: Plan, path: str | Path, title: str | None = None) -> Path:
    """One row per step (per lane of a site when there are many), coloured by site."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sites = sorted({a.site for a in plan.assignments.values()})
    colours = {s: plt.get_cmap("tab10")(i % 10) for i, s in enumerate(sites)}
    rows: list[tuple[str, list[tuple[float, float, str]]]] = []
    asg = sorted(plan.assignments.values(), key=lambda a: (a.site, a.start, a.step))
    if len(asg) <= MAX_ROWS:
        rows = [(a.step, [(a.start, a.end, a.site)]) for a in asg]
    else:
        for site in sites:
            lanes: list[float] = []
            lane_bars: dict[int, list[tuple[float, float, str]]] = defaultdict(list)
            for a in (x for x in asg if x.site == site):
                k = next((i for i, free in enumerate(lanes) if free <= a.start + 1e-9), None)
                if k is None:
                    if len(lanes) >= MAX_ROWS // max(1, len(sites)):
                        k = min(range(len(lanes)), key=lambda i: lanes[i])
                    else:
                        lanes.append(0.0)
                        k = len(lanes) - 1
                lanes[k] = max(lanes[k], a.end)
                lane_bars[k].append((a.start, a.end, site))
            rows += [(f"{site} #{k}", bars) for k, bars in sorted(lane_bars.items())]
    height = max(3.0, 0.22 * len(rows) + 1.5)
    fig, ax = plt.subplots(figsize=(11, height))
    for y, (_, bars) in enumerate(rows):
        for start, end, site in bars:
            ax.barh(y, max(end - start, 1e-9), left=start, color=colours[site], edgecolor="none")
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([r[0] for r in rows], fontsize=6)
    ax.invert_yaxis()
    ax.set_xlabel("seconds from plan start")
    m = plan.metrics
    ax.set_title(
        title
        or (
            f"{plan.workflow}: {m.planner}, makespan {m.makespan_s:.1f} s, "
            f"{m.cost_eur:.4g} EUR, {m.carbon_kg:.3g} kgCO2e"
        ),
        fontsize=9,
    )
    handles = [plt.Rectangle((0, 0), 1, 1, color=colours[s]) for s in sites]
    ax.legend(handles, sites, fontsize=7, loc="lower right")
    return _save(fig, path)


def cdt_gantt(schedule: CDTSchedule, path: str | Path) -> Path:
    """One row per job, bars labelled with the chosen mode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted(schedule.schedule, key=lambda s: (s.start, s.job_id))
    fig, ax = plt.subplots(figsize=(9, max(2.5, 0.35 * len(rows) + 1.2)))
    cmap = plt.get_cmap("tab20")
    for y, s in enumerate(rows):
        ax.barh(y, max(s.finish - s.start, 0.05), left=s.start, color=cmap(y % 20))
        ax.text(s.start + 0.1, y, s.mode_id, va="center", fontsize=7)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([s.job_id for s in rows])
    ax.invert_yaxis()
    ax.set_xlabel("period")
    ax.set_title(
        f"{schedule.problem_name or 'CDT'}: {schedule.objective} = {schedule.objective_value:g}",
        fontsize=9,
    )
    return _save(fig, path)


def _save(fig: Any, path: str | Path) -> Path:
    """Write ``fig`` as a PNG at ``path`` (its folder created) and free it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
