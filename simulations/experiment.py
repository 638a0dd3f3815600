"""Running a scenario: every planner x seed, the results as tables, CSV files and PNG plots.

``run_scenario(scenario)`` runs one ``FederationModel`` per (planner, seed)
and returns a ``RunResult`` for each; ``compare(results)`` is the tidy table
of their summaries (one row per run); ``save_results(results, folder)``
writes the tables (CSV, and Parquet when pyarrow is installed) and the plots.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd  # type: ignore[import-untyped, unused-ignore]

from simulations.model import WORKFLOW_COLUMNS, FederationModel
from simulations.scenario import Scenario

Progress = Callable[[str, float], None]
"""``progress(label, fraction)``: called as each run advances."""


@dataclass
class RunResult:
    """What one run produced (everything needed to save or compare it)."""

    planner: str
    seed: int
    summary: dict[str, Any]
    model_vars: pd.DataFrame
    site_vars: pd.DataFrame
    workflows: pd.DataFrame
    jobs: pd.DataFrame
    site_totals: pd.DataFrame
    telemetry: pd.DataFrame = field(default_factory=pd.DataFrame)
    credit: str = ""
    events: list[dict[str, Any]] = field(default_factory=list)
    """The scenario's timed events (``at``, ``kind``, ``site``, ``duration``... in seconds)."""

    @property
    def label(self) -> str:
        return f"{self.planner}-seed{self.seed}"


def result_of(model: FederationModel) -> RunResult:
    """Collect a finished model's tables into a ``RunResult``."""
    from simulations.agents import SiteAgent

    dc = model.datacollector
    site_vars = (
        dc.get_agenttype_vars_dataframe(SiteAgent).reset_index()
        if model.scenario.collect_sites
        else pd.DataFrame()
    )
    jobs = pd.DataFrame(model.jobs.columns())
    if len(jobs):
        names = [s.site.id for s in model.sites]
        jobs.insert(0, "site_id", [names[i] if i >= 0 else "" for i in jobs["site"]])
    tele = pd.DataFrame(
        [
            {k: v for k, v in s.model_dump().items() if k not in ("links", "private")}
            for s in model.telemetry
        ]
    )
    return RunResult(
        planner=model.planner_name,
        seed=int(model._seed),
        summary=model.summary(),
        model_vars=dc.get_model_vars_dataframe().reset_index(names="step"),
        site_vars=site_vars,
        # every workflow of the scenario, finished or not, with its outcome (the collector's
        # table holds only those that ended)
        workflows=pd.DataFrame(
            [r.result() for r in model.workflow_runs], columns=list(WORKFLOW_COLUMNS)
        ),
        jobs=jobs,
        site_totals=pd.DataFrame(model.site_table()),
        telemetry=tele,
        credit=model.jobs.credit,
        events=[
            {**e.model_dump(mode="json", exclude_none=True), "index": i}
            for i, e in enumerate(model.scenario.events)
        ],
    )


def run_scenario(scenario: Scenario, progress: Progress | None = None) -> list[RunResult]:
    """Run ``scenario`` once per planner and seed."""
    results = []
    for planner in scenario.planners:
        for seed in scenario.seeds:
            label = f"{planner} seed {seed}"
            model = FederationModel(scenario, seed=seed, planner=planner)
            model.run(None if progress is None else partial(progress, label))
            results.append(result_of(model))
    return results


def compare(results: list[RunResult]) -> pd.DataFrame:
    """One row per run: planner, seed and every summary figure."""
    return pd.DataFrame([r.summary for r in results])


def _write_table(df: pd.DataFrame, path: Path) -> list[Path]:
    """Write ``df`` as CSV, and as Parquet too when a Parquet engine is installed."""
    df.to_csv(path.with_suffix(".csv"), index=False)
    out = [path.with_suffix(".csv")]
    try:
        df.to_parquet(path.with_suffix(".parquet"), index=False)
        out.append(path.with_suffix(".parquet"))
    except ImportError:
        pass
    return out


def save_results(
    results: list[RunResult], folder: str | Path, plots: bool = True, max_job_rows: int = 2_000_000
) -> list[Path]:
    """Write every run's tables under ``folder/<planner>-seed<seed>/``, the comparison and plots.

    Per run: ``model`` (the model reporters per step), ``sites`` (per-site
    series), ``workflows``, ``jobs`` (when at most ``max_job_rows`` rows),
    ``site_totals``, ``telemetry`` and ``summary.json``. At the top:
    ``comparison`` (one row per run) and, with ``plots``, ``utilisation.png``,
    ``waits.png``, ``energy.png`` and ``makespans.png``.
    """
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for r in results:
        d = root / r.label
        d.mkdir(exist_ok=True)
        written += _write_table(r.model_vars, d / "model")
        if len(r.site_vars):
            written += _write_table(r.site_vars, d / "sites")
        written += _write_table(r.workflows, d / "workflows")
        written += _write_table(r.site_totals, d / "site_totals")
        if len(r.telemetry):
            written += _write_table(r.telemetry, d / "telemetry")
        if 0 < len(r.jobs) <= max_job_rows:
            written += _write_table(r.jobs, d / "jobs")
        summary = {**r.summary, "credit": r.credit} if r.credit else r.summary
        (d / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
        written.append(d / "summary.json")
    written += _write_table(compare(results), root / "comparison")
    if plots and results:
        written += plot_results(results, root)
    return written


EVENT_COLOURS = {
    "outage": "tab:red",
    "price_spike": "tab:orange",
    "carbon_cap": "tab:green",
    "load": "tab:purple",
    "add_site": "tab:blue",
}


def _event_label(ev: dict[str, Any]) -> str:
    kind = ev["kind"]
    if kind == "price_spike":
        return f"price x{ev.get('factor', '?')}" + (f" at {ev['site']}" if ev.get("site") else "")
    if kind == "outage":
        return f"{ev.get('site', '')} outage"
    if kind == "add_site":
        return f"{(ev.get('new_site') or {}).get('id', 'a site')} joins"
    if kind == "carbon_cap":
        return f"carbon cap {ev.get('limit', '?')} g/kWh"
    if kind == "load":
        return f"load x{ev.get('factor', '?')}"
    return str(kind)


def _mark_events(ax: Any, events: list[dict[str, Any]], end_h: float, site: str | None) -> None:
    """Shade each event's span (a line for an instant one), on ``site``'s axis or all."""
    for ev in events:
        if site is not None and ev.get("site") not in (None, site) and ev["kind"] != "add_site":
            continue
        if ev["kind"] == "add_site" and site is not None:
            joined = (ev.get("new_site") or {}).get("id")
            if joined != site:
                continue
        start = ev["at"] / 3600
        colour = EVENT_COLOURS.get(ev["kind"], "0.5")
        if ev["kind"] == "add_site" or ev.get("duration") == 0:
            ax.axvline(start, color=colour, lw=1.2, ls="--")
        else:
            stop = start + ev["duration"] / 3600 if ev.get("duration") else end_h
            ax.axvspan(start, stop, color=colour, alpha=0.15, lw=0)
        ax.text(start, 1.0, f" {_event_label(ev)}", transform=ax.get_xaxis_transform(),
                fontsize=7, color=colour, va="top", ha="left")  # fmt: skip


def plot_results(results: list[RunResult], folder: Path) -> list[Path]:
    """PNG plots: utilisation per site with the scenario's events and each site's down
    periods (first run), wait-time CDFs, energy and carbon with the events, and workflow
    makespans against the deadline with the reason for every miss."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out: list[Path] = []
    first = results[0]
    end_h = float(first.model_vars["time_h"].max()) if len(first.model_vars) else 0.0
    if len(first.site_vars):
        sv = first.site_vars
        steps = first.model_vars.set_index("step")["time_h"]
        sites = list(dict.fromkeys(sv["site"]))
        fig, axes = plt.subplots(
            len(sites), 1, figsize=(10, 0.95 * len(sites) + 1.3), sharex=True, squeeze=False
        )
        for ax, site in zip(axes[:, 0], sites, strict=True):
            grp = sv[sv["site"] == site]
            # agent-type rows carry the step count after the step; model rows start at 0
            hours = steps.reindex(grp["Step"] - 1).to_numpy()
            ax.plot(hours, grp["utilisation"], color="0.2", lw=1)
            down = (grp["status"] != "ok").to_numpy() if "status" in grp else np.zeros(len(grp))
            ax.fill_between(hours, 0, 1.05, where=down, step="pre", color="tab:red", alpha=0.35,
                            lw=0)  # fmt: skip
            _mark_events(ax, first.events, end_h, site)
            ax.set_ylim(0, 1.05)
            ax.set_ylabel(site, rotation=0, ha="right", va="center", fontsize=8)
            ax.tick_params(labelsize=7)
        axes[-1, 0].set_xlabel("simulated time (h)")
        axes[0, 0].set_title(
            f"Utilisation per site (busy cores / cores), {first.label}: shaded red while the "
            "site is down (outages and random failures); coloured spans and lines: the "
            "scenario's events",
            fontsize=8,
        )
        out.append(_save(fig, folder / "utilisation.png"))
    fig, ax = plt.subplots(figsize=(7, 4))
    for r in results:
        w = r.jobs["wait"].dropna().to_numpy() if len(r.jobs) else np.zeros(0)
        if w.size:
            xs = np.sort(np.maximum(w, 1.0))
            ax.plot(xs, np.arange(1, xs.size + 1) / xs.size, label=r.label)
    ax.set(xscale="log", xlabel="wait (s, 1 s floor)", ylabel="fraction of jobs")
    ax.set_title("Wait-time distribution (jobs that started)")
    ax.legend(fontsize=7)
    out.append(_save(fig, folder / "waits.png"))
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    for r in results:
        mv = r.model_vars
        a1.plot(mv["time_h"], mv["energy_kwh"], label=r.label)
        a2.plot(mv["time_h"], mv["carbon_kg"], label=r.label)
    for ax in (a1, a2):
        _mark_events(ax, first.events, end_h, None)
    a1.set(xlabel="simulated time (h)", ylabel="energy (kWh, cumulative)")
    a2.set(xlabel="simulated time (h)", ylabel="carbon (kgCO2e, cumulative)")
    a1.legend(fontsize=7)
    fig.suptitle("Energy and carbon, with the scenario's events", fontsize=9)
    out.append(_save(fig, folder / "energy.png"))
    runs = [r for r in results if len(r.workflows)]
    if runs:
        out.append(_plot_makespans(runs, folder / "makespans.png"))
    return out


OUTCOMES = ("finished", "late", "failed", "unfinished", "not planned", "not submitted")
"""A workflow's outcome in a simulation (``simulations.workflows.WorkflowRun.outcome``)."""


def _plot_makespans(runs: list[RunResult], path: Path) -> Path:
    """Finished workflows' makespans per run against the deadline, and every miss's reason."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(7.0, 1.6 * len(runs) + 3), 5.2))
    rng = np.random.default_rng(0)
    top = 0.0
    for i, r in enumerate(runs, start=1):
        wf = r.workflows
        done = wf[wf["outcome"].isin(["finished", "late"])]
        values = done["makespan_s"].to_numpy(dtype=float)
        if values.size:
            ax.boxplot([values], positions=[i], widths=0.5, showfliers=False)
            colour = np.where(done["outcome"] == "late", "tab:red", "tab:blue")
            jitter = i + rng.uniform(-0.12, 0.12, values.size)
            ax.scatter(jitter, values, s=10, c=colour, zorder=3)
            top = max(top, float(values.max()))
        counts = wf["outcome"].value_counts()
        lines = [f"{counts.get(o, 0)} {o}" for o in OUTCOMES if counts.get(o, 0)]
        misses = int((wf["deadline_missed"] == True).sum())  # noqa: E712 (None: not known)
        note = f"{misses} miss(es)\n" + "\n".join(lines)
        ax.text(i, -0.13, note, transform=ax.get_xaxis_transform(), ha="center", va="top",
                fontsize=7)  # fmt: skip
    deadlines = runs[0].workflows["deadline_s"].dropna()
    if len(deadlines):
        d = float(deadlines.min())
        ax.axhline(d, color="red", ls="--", lw=1, label=f"deadline ({d:g} s)")
        top = max(top, d)
    ax.scatter([], [], s=10, c="tab:blue", label="finished in time")
    ax.scatter([], [], s=10, c="tab:red", label="finished late")
    ax.set_xticks(range(1, len(runs) + 1), [r.label for r in runs], fontsize=8)
    ax.set_xlim(0.4, len(runs) + 0.6)
    finished = [v for r in runs for v in r.workflows["makespan_s"].dropna().to_numpy(dtype=float)]
    low = min(finished, default=0.0)
    if low > 0 and top / low > 20:  # makespans far under the deadline: both stay readable
        ax.set_yscale("log")
        ax.set_ylim(low / 2, top * 2)
    else:
        ax.set_ylim(0, top * 1.1 or 1.0)
    ax.set_ylabel("makespan of the finished workflows (s)")
    ax.set_title(
        "Workflow makespans and deadline misses\n(a miss: finished late; failed, unfinished at "
        "the end\nand not planned are counted as such, not as misses)",
        fontsize=9,
    )
    ax.legend(fontsize=7, loc="upper right")
    fig.subplots_adjust(bottom=0.3)
    return _save(fig, path)


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def steps_for(scenario: Scenario) -> int:
    """Mesa steps that reach the scenario's horizon."""
    return math.ceil(scenario.horizon / scenario.step)
