"""Gantt charts (PNG, matplotlib's Agg backend) of plans, runs and CDT schedules.

A plan's chart and a run's planned-vs-actual chart share one layout
(``draw_site_gantt``): one band per site, its steps packed into lanes and
coloured by step category (with a legend), step names written on the bars that
have room, data transfers drawn as arrows from the source site's band to the
destination's over the time they take, and one time unit on the whole axis
(``time_unit``: seconds, minutes or hours, by the span).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from orchestrator.placement.cdt import CDTSchedule
    from orchestrator.placement.plan import Plan, Transfer
    from orchestrator.workflow import Workflow

MAX_LANES = 40
"""Lanes per site band; beyond, a step shares the lane that frees first."""
MAX_LABELLED_TRANSFERS = 12
"""Above this many transfers the arrows are drawn without their item names."""
MAX_CATEGORIES = 10
"""Colours in the legend; further categories are drawn grey, as ``other``."""
OTHER = (0.6, 0.6, 0.6, 1.0)


@dataclass(frozen=True)
class GanttBar:
    """One step on one site, in seconds from the chart's origin."""

    label: str
    site: str
    start: float
    end: float
    category: str = ""
    hatch: bool = False
    """Drawn hatched: a step that needed more than one attempt."""
    moved: bool = False
    """Drawn with a red edge: a step re-planned to another site."""


def time_unit(span_s: float) -> tuple[float, str]:
    """The one unit of a time axis spanning ``span_s`` seconds: (seconds per unit, name)."""
    if span_s >= 3 * 3600:
        return 3600.0, "h"
    if span_s >= 180:
        return 60.0, "min"
    return 1.0, "s"


def category_colours(categories: Iterable[str]) -> dict[str, Any]:
    """A tab10 colour per category (most frequent first), grey beyond ``MAX_CATEGORIES``."""
    import matplotlib.pyplot as plt

    counts: dict[str, int] = {}
    for c in categories:
        counts[c or "step"] = counts.get(c or "step", 0) + 1
    ranked = sorted(counts, key=lambda c: (-counts[c], c))
    cmap = plt.get_cmap("tab10")
    return {c: cmap(i) if i < MAX_CATEGORIES else OTHER for i, c in enumerate(ranked)}


def _lanes(bars: Sequence[GanttBar]) -> tuple[list[tuple[GanttBar, int]], int]:
    lanes: list[float] = []
    placed: list[tuple[GanttBar, int]] = []
    for b in sorted(bars, key=lambda b: (b.start, b.label)):
        k = next((i for i, free in enumerate(lanes) if free <= b.start + 1e-9), None)
        if k is None:
            if len(lanes) < MAX_LANES:
                lanes.append(0.0)
                k = len(lanes) - 1
            else:
                k = min(range(len(lanes)), key=lambda i: lanes[i])
        lanes[k] = max(lanes[k], b.end)
        placed.append((b, k))
    return placed, max(1, len(lanes))


def draw_site_gantt(
    ax: Any,
    bars: Sequence[GanttBar],
    sites: Sequence[str],
    colours: Mapping[str, Any],
    unit: tuple[float, str],
    transfers: Sequence[Transfer] = (),
    span_s: float | None = None,
) -> dict[str, float]:
    """Draw ``bars`` in one band per site (top to bottom in ``sites`` order) and ``transfers``
    as arrows between the bands, on an axis of ``span_s`` seconds (default: to the last
    bar); return the y centre of each site's band."""
    div, _ = unit
    y = 0.0
    centres: dict[str, float] = {}
    if span_s is None:
        span_s = max([b.end for b in bars] + [t.end for t in transfers] + [1e-9])
    span = span_s / div
    char_width = span / 150  # about 150 characters of 7 pt across an 11-inch axis
    for site in sites:
        placed, lanes = _lanes([b for b in bars if b.site == site])
        ax.axhspan(y - 0.5, y + lanes - 0.5, color="0.95" if len(centres) % 2 else "0.9", zorder=0)
        for b, k in placed:
            width = max((b.end - b.start) / div, span * 1e-3)
            ax.barh(
                y + k,
                width,
                left=b.start / div,
                height=0.8,
                color=colours.get(b.category or "step", "0.6"),
                edgecolor="red" if b.moved else "white",
                linewidth=1.2 if b.moved else 0.4,
                hatch="///" if b.hatch else None,
                zorder=2,
            )
            if width >= char_width * (len(b.label) + 1):
                ax.text(
                    (b.start / div) + char_width * 0.4, y + k, b.label,
                    va="center", ha="left", fontsize=6.5, color="white", zorder=3, clip_on=True,
                )  # fmt: skip
        centres[site] = y + (lanes - 1) / 2
        y += lanes + 0.4
    labelled = len(transfers) <= MAX_LABELLED_TRANSFERS
    for t in transfers:
        if t.src not in centres or t.dst not in centres:
            continue
        ax.annotate(
            "",
            xy=(t.end / div, centres[t.dst]),
            xytext=(t.start / div, centres[t.src]),
            arrowprops={"arrowstyle": "-|>", "color": "0.15", "lw": 0.9, "alpha": 0.8},
            zorder=4,
        )
        if labelled:
            ax.text(
                (t.start + t.end) / 2 / div, (centres[t.src] + centres[t.dst]) / 2, f" {t.item}",
                fontsize=6, color="0.15", va="center", zorder=4,
            )  # fmt: skip
    ax.set_yticks([centres[s] for s in sites], sites, fontsize=8)
    ax.set_ylim(y - 0.8, -0.6)  # the first site on top
    ax.set_xlim(0, span * 1.02)
    ax.grid(axis="x", color="0.85", lw=0.5, zorder=1)
    return centres


def gantt_legend(
    ax: Any, colours: Mapping[str, Any], extra: Sequence[tuple[Any, str]] = ()
) -> None:
    """Category swatches (the grey ones as one ``other``), then ``extra`` (handle, label)."""
    import matplotlib.pyplot as plt

    handles: list[Any] = []
    labels: list[str] = []
    for name, colour in colours.items():
        if colour == OTHER:
            continue
        handles.append(plt.Rectangle((0, 0), 1, 1, color=colour))
        labels.append(name)
    if OTHER in colours.values():
        handles.append(plt.Rectangle((0, 0), 1, 1, color=OTHER))
        labels.append("other categories")
    for handle, label in extra:
        handles.append(handle)
        labels.append(label)
    ax.legend(
        handles, labels, fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.005, 1.0),
        title="step categories", title_fontsize=7, alignment="left",
    )  # fmt: skip


def transfer_handle() -> Any:
    """A legend entry for the transfer arrows."""
    from matplotlib.lines import Line2D

    return Line2D([0], [0], color="0.15", lw=0.9, marker=">", markersize=4)


def plan_gantt(
    plan: Plan, path: str | Path, title: str | None = None, workflow: Workflow | None = None
) -> Path:
    """The plan's steps by site, coloured by category (from ``workflow``), transfers as arrows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    category = {s.id: s.category for s in workflow.steps} if workflow is not None else {}
    bars = [
        GanttBar(a.step, a.site, a.start, a.end, category.get(a.step, ""))
        for a in plan.assignments.values()
    ]
    transfers = plan.transfers
    sites = sorted({b.site for b in bars} | {t.src for t in transfers} | {t.dst for t in transfers})
    colours = category_colours(b.category for b in bars)
    unit = time_unit(max([b.end for b in bars] + [1.0]))
    rows = sum(_lanes([b for b in bars if b.site == s])[1] for s in sites)
    fig, ax = plt.subplots(figsize=(11, max(3.2, 0.28 * rows + 2.2)))
    draw_site_gantt(ax, bars, sites, colours, unit, transfers)
    ax.set_xlabel(f"time from the plan's start ({unit[1]})")
    m = plan.metrics
    ax.set_title(
        title
        or (
            f"{plan.workflow}: {m.planner}, makespan {m.makespan_s / unit[0]:.3g} {unit[1]}, "
            f"{m.cost_eur:.4g} EUR, {m.energy_kwh:.3g} kWh, {m.carbon_kg:.3g} kgCO2e, "
            f"{len(transfers)} transfer(s)"
        ),
        fontsize=9,
    )
    gantt_legend(ax, colours, [(transfer_handle(), "transfer (source site -> destination)")])
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
    fig.savefig(out, dpi=110, bbox_inches="tight")  # the legend sits outside the axes
    plt.close(fig)
    return out
