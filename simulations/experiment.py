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

from simulations.model import FederationModel
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
        workflows=dc.get_table_dataframe("workflows"),
        jobs=jobs,
        site_totals=pd.DataFrame(model.site_table()),
        telemetry=tele,
        credit=model.jobs.credit,
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


def plot_results(results: list[RunResult], folder: Path) -> list[Path]:
    """PNG plots: utilisation per site (first run), wait-time CDFs, energy and carbon,
    workflow makespans against the deadline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out: list[Path] = []
    first = results[0]
    if len(first.site_vars):
        fig, ax = plt.subplots(figsize=(9, 4))
        sv = first.site_vars
        steps = first.model_vars.set_index("step")["time_h"]
        for site, grp in sv.groupby("site"):
            # agent-type rows carry the step count after the step; model rows start at 0
            ax.plot(steps.reindex(grp["Step"] - 1).to_numpy(), grp["utilisation"], label=str(site))
        ax.set(xlabel="simulated time (h)", ylabel="busy cores / cores", ylim=(0, 1.05))
        ax.set_title(f"Utilisation per site ({first.label})")
        ax.legend(fontsize=7, ncols=2)
        out.append(_save(fig, folder / "utilisation.png"))
    fig, ax = plt.subplots(figsize=(7, 4))
    for r in results:
        w = r.jobs["wait"].dropna().to_numpy() if len(r.jobs) else np.zeros(0)
        if w.size:
            xs = np.sort(np.maximum(w, 1.0))
            ax.plot(xs, np.arange(1, xs.size + 1) / xs.size, label=r.label)
    ax.set(xscale="log", xlabel="wait (s, 1 s floor)", ylabel="fraction of jobs")
    ax.set_title("Wait-time distribution")
    ax.legend(fontsize=7)
    out.append(_save(fig, folder / "waits.png"))
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    for r in results:
        mv = r.model_vars
        a1.plot(mv["time_h"], mv["energy_kwh"], label=r.label)
        a2.plot(mv["time_h"], mv["carbon_kg"], label=r.label)
    a1.set(xlabel="simulated time (h)", ylabel="energy (kWh, cumulative)")
    a2.set(xlabel="simulated time (h)", ylabel="carbon (kgCO2e, cumulative)")
    a1.legend(fontsize=7)
    out.append(_save(fig, folder / "energy.png"))
    runs = [r for r in results if len(r.workflows)]
    if runs:
        fig, ax = plt.subplots(figsize=(7, 4))
        data = [r.workflows["makespan_s"].dropna().to_numpy(dtype=float) for r in runs]
        ax.boxplot([d if d.size else np.zeros(1) for d in data], showfliers=True)
        ax.set_xticks(range(1, len(runs) + 1), [r.label for r in runs], rotation=20, fontsize=7)
        deadlines = runs[0].workflows["deadline_s"].dropna()
        if len(deadlines):
            ax.axhline(float(deadlines.min()), color="red", ls="--", lw=1, label="deadline")
            ax.legend(fontsize=7)
        misses = [int(r.workflows["deadline_missed"].sum()) for r in runs]
        ax.set(ylabel="workflow makespan (s)")
        ax.set_title(f"Workflow makespans (deadline misses: {misses})")
        out.append(_save(fig, folder / "makespans.png"))
    return out


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def steps_for(scenario: Scenario) -> int:
    """Mesa steps that reach the scenario's horizon."""
    return math.ceil(scenario.horizon / scenario.step)
