"""Plots worth reading and tables that fit: what each figure states, checked on the figure.

Each plotting function saves its PNG and closes its figure; the tests keep the figure
(``plt.close`` recorded) and read its axes: the labels, the legend, the arrows, the unit,
the marks. The images themselves were looked at when they were made.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd  # type: ignore[import-untyped, unused-ignore]
import pytest
from rich.console import Console

from federation.model import load_demo_federation, load_federation
from orchestrator.loaders import load_workflow
from orchestrator.placement.gantt import GanttBar, draw_site_gantt, plan_gantt, time_unit
from orchestrator.placement.plan import Transfer
from orchestrator.planning import plan_workflow
from tests.conftest import REPO

WORKFLOWS = REPO / "examples" / "workflows"


@pytest.fixture
def figures(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The figures the code under test closed, in order."""
    closed: list[Any] = []
    real_close = plt.close

    def keep(fig: Any = None) -> None:
        if fig is not None and not isinstance(fig, str):
            closed.append(fig)
        real_close(fig)

    monkeypatch.setattr(plt, "close", keep)
    return closed


def _texts(ax: Any) -> list[str]:
    return [t.get_text().strip() for t in ax.texts]


def _legend(ax: Any) -> list[str]:
    legend = ax.get_legend()
    return [t.get_text() for t in legend.get_texts()] if legend else []


@pytest.mark.parametrize(
    ("span", "unit"),
    [(59.0, "s"), (179.0, "s"), (180.0, "min"), (10_799.0, "min"), (3 * 3600.0, "h")],
)
def test_one_time_unit_by_the_span(span: float, unit: str) -> None:
    assert time_unit(span)[1] == unit


def test_site_bands_label_steps_and_draw_each_transfer_as_an_arrow() -> None:
    fig, ax = plt.subplots(figsize=(11, 3))
    bars = [
        GanttBar("extract", "edge", 0, 400, "io"),
        GanttBar("fit", "hpc", 500, 2000, "compute"),
        GanttBar("tiny", "hpc", 2000, 2001, "compute"),
    ]
    transfers = [Transfer("raw", "edge", "hpc", 1e9, 400, 500)]
    centres = draw_site_gantt(
        ax, bars, ["edge", "hpc"], {"io": "red", "compute": "blue"}, (60.0, "min"), transfers
    )
    assert [t.get_text() for t in ax.get_yticklabels()] == ["edge", "hpc"]
    assert centres["edge"] < centres["hpc"]  # the first site on top (inverted axis)
    arrows: list[Any] = [c for c in ax.get_children() if type(c).__name__ == "Annotation"]
    assert len(arrows) == 1
    start, end = arrows[0].xyann, arrows[0].xy
    assert start == pytest.approx((400 / 60, centres["edge"]))
    assert end == pytest.approx((500 / 60, centres["hpc"]))
    assert "raw" in _texts(ax)  # the item it moves
    assert {"extract", "fit"} <= set(_texts(ax))  # labels on the bars with room
    assert "tiny" not in _texts(ax)  # none written over a bar too short for it
    assert ax.get_xlim()[1] == pytest.approx(2001 / 60 * 1.02)
    plt.close(fig)


def test_a_plan_gantt_has_categories_transfers_and_one_unit(
    figures: list[Any], tmp_path: Path
) -> None:
    fed = load_demo_federation()
    wf = load_workflow(WORKFLOWS / "montage-chameleon-2mass-005d-001.json")
    plan = plan_workflow(wf, fed, planner="market", objective="cost")
    assert plan.transfers, "this plan moves data between sites (the chart must show it)"
    png = plan_gantt(plan, tmp_path / "g.png", workflow=wf)
    assert png.stat().st_size > 10_000
    (fig,) = figures
    ax = fig.axes[0]
    labels = _legend(ax)
    assert {"mProject", "mDiffFit", "mBackground"} <= set(labels)
    assert any("transfer" in label for label in labels)
    arrows = [c for c in ax.get_children() if type(c).__name__ == "Annotation"]
    assert len(arrows) == len(plan.transfers)
    assert ax.get_xlabel() == "time from the plan's start (s)"
    assert f"{len(plan.transfers)} transfer(s)" in ax.get_title()
    used = {a.site for a in plan.assignments.values()}
    assert {t.get_text() for t in ax.get_yticklabels()} == used


def test_planned_vs_actual_shares_its_axis_and_marks_the_fault(
    figures: list[Any], tmp_path: Path
) -> None:
    from orchestrator.execution.mainjob import ExecutionResult, StepTimeline, write_report
    from orchestrator.execution.states import RunState

    fed = load_federation(REPO / "examples" / "quickstart" / "federation.yaml")
    wf = load_workflow(REPO / "examples" / "quickstart" / "workflow.yaml")
    plan = plan_workflow(wf, fed, planner="heft")
    first = min(plan.assignments.values(), key=lambda a: a.start)
    other = next(s.id for s in fed.sites if s.id != first.site)
    timeline = [
        StepTimeline(a.step, a.site if a.step == first.step else other, a.start, a.end, 1)
        for a in plan.assignments.values()
    ]
    timeline[-1] = StepTimeline(timeline[-1].step, other, 3.0, 4.0, 2)
    result = ExecutionResult(
        run_id="r1",
        state=RunState.DONE,
        wall_s=5.0,
        timeline=timeline,
        events=["fault: site fr-hpc went down"],
        started_at=100.0,
        failed_site=first.site,
        fault_at=101.5,
        replanned_steps=[t.step for t in timeline[1:]],
    )
    report = write_report(tmp_path, wf, plan, result, time_scale=1e-3)
    assert "gantt-planned-vs-actual.png" in report.read_text()
    (fig,) = figures
    top, bottom = fig.axes[:2]
    assert top.get_xlim() == bottom.get_xlim()  # one axis, one unit
    assert "(s)" in bottom.get_xlabel()
    assert "planned by heft" in top.get_title()
    assert "0.001 of their planned runtime" in bottom.get_title()
    assert [t.get_text() for t in top.get_yticklabels()] == [
        t.get_text() for t in bottom.get_yticklabels()
    ]
    fault = [ln for ln in bottom.get_lines() if ln.get_color() == "red"]
    assert fault
    assert fault[0].get_xdata()[0] == pytest.approx(1.5)
    assert any(f"fault: {first.site} down" in t for t in _texts(bottom))
    legend = _legend(top)
    assert "retried step" in legend
    assert "re-planned step" in legend
    assert "fault (site taken down)" in legend


# -- simulations -------------------------------------------------------------------------


def _scenario(**changes: Any) -> dict[str, Any]:
    sc: dict[str, Any] = {
        "name": "plots",
        "federation": "demo",
        "horizon": "8 h",
        "workload": {
            "synthetic": {"jobs": 300, "arrival_rate_per_h": 40, "max_cores": 64},
            "workflows": [
                {
                    "path": str(WORKFLOWS / "montage-chameleon-2mass-005d-001.json"),
                    "submit_at": "1 h",
                    "every": "2 h",
                    "count": 4,
                    "deadline": "2 h",
                }
            ],
        },
        "events": [
            {"at": "2 h", "kind": "outage", "site": "national-hpc", "duration": "2 h"},
            {"at": "3 h", "kind": "price_spike", "factor": 2, "duration": "1 h"},
        ],
        "planners": ["heft"],
        "seeds": [1],
    }
    sc.update(changes)
    return sc


def test_simulation_plots_mark_events_and_say_why_deadlines_were_missed(
    figures: list[Any], tmp_path: Path
) -> None:
    from simulations import run_scenario, save_results, scenario_from_dict

    sc = _scenario()
    # every site down when the third workflow arrives: no planner can place it
    sc["events"] += [
        {"at": "3.5 h", "kind": "outage", "site": s, "duration": "2 h"}
        for s in ("ddf-fatnode", "gpu-centre", "cloud-burst", "edge-station")
    ]
    sc["events"][0] = {"at": "2 h", "kind": "outage", "site": "national-hpc", "duration": "3.5 h"}
    results = run_scenario(scenario_from_dict(sc, "test"))
    wf = results[0].workflows
    assert len(wf) == 4  # every workflow, finished or not
    assert set(wf["outcome"]) <= {"finished", "late", "unfinished", "not planned"}
    assert "not planned" in set(wf["outcome"])
    assert wf.loc[wf["outcome"] == "not planned", "error"].str.contains("no eligible site").all()
    assert int(wf["deadline_missed"].sum()) == results[0].summary["deadline_misses"]
    written = save_results(results, tmp_path)
    names = {p.name for p in written}
    assert {"utilisation.png", "waits.png", "energy.png", "makespans.png"} <= names
    by_name = {
        p.name: f for p, f in zip([p for p in written if p.suffix == ".png"], figures, strict=True)
    }
    util = by_name["utilisation.png"]
    rows = {ax.get_ylabel(): ax for ax in util.axes}
    assert "national-hpc outage" in _texts(rows["national-hpc"])
    assert "national-hpc outage" not in _texts(rows["gpu-centre"])
    for ax in util.axes:  # an event of every site, once on each site's panel
        assert sum("price x2" in t for t in _texts(ax)) == 1, ax.get_ylabel()
    energy = by_name["energy.png"]
    assert any("outage" in t for t in _texts(energy.axes[0]))
    spans = by_name["makespans.png"].axes[0]
    notes = " ".join(_texts(spans))
    misses = int(wf["deadline_missed"].sum())
    assert f"{misses} miss(es)" in notes
    assert "not planned" in notes
    assert "deadline" in " ".join(_legend(spans))


def test_a_sweep_plots_one_figure_per_swept_parameter(figures: list[Any], tmp_path: Path) -> None:
    from simulations.sweep import SWEEP_METRICS, plot_sweep

    rows = []
    for load in (0.5, 1.0, 2.0):
        for routing in ("cheapest", "least-wait"):
            for planner in ("heft", "greedy"):
                for seed in (1, 2):
                    rows.append(
                        {
                            "workload.load": load,
                            "routing": routing,
                            "planner": planner,
                            "seed": seed,
                            **{k: load * 10 + seed + (planner == "heft") for k, _ in SWEEP_METRICS},
                        }
                    )
    table = pd.DataFrame(rows)
    paths = plot_sweep(table, ["workload.load", "routing"], tmp_path)
    assert [p.name for p in paths] == ["sweep-workload.load.png", "sweep-routing.png"]
    assert all(p.stat().st_size > 10_000 for p in paths)
    load_fig, routing_fig = figures
    panels = [ax for ax in load_fig.axes if ax.get_visible()]
    assert len(panels) == len(SWEEP_METRICS)
    wait = panels[0]
    assert wait.get_title() == "mean wait (s)"
    heft = next(ln for ln in wait.get_lines() if ln.get_label() == "heft")
    # mean over seeds and routings: load * 10 + 1.5 + 1
    assert list(heft.get_ydata()) == pytest.approx([7.5, 12.5, 22.5])
    assert list(heft.get_xdata()) == [0.5, 1.0, 2.0]
    assert "workload.load" in load_fig.texts[0].get_text()
    assert panels[-1].get_xlabel() == "workload.load"
    routing_panels = [ax for ax in routing_fig.axes if ax.get_visible()]
    assert [t.get_text() for t in routing_panels[0].get_xticklabels()] == ["cheapest", "least-wait"]


# -- tables ------------------------------------------------------------------------------


@pytest.mark.parametrize("width", [60, 80, 100, 200])
def test_tables_fit_the_page_whole(width: int, monkeypatch: pytest.MonkeyPatch) -> None:
    import federation.cli.common as common
    from federation.cli.core import federation_table
    from federation.cli.sim_cmd import SUMMARY_COLUMNS, _table
    from federation.cli.twin_cmd import view_table
    from twin import static_view

    page = Console(width=width, record=True)
    monkeypatch.setattr(common, "console", page)
    fed = load_demo_federation()
    row = {
        "planner": "heft", "seed": 1, "jobs_done": 7541, "mean_wait_s": 2951.2,
        "median_wait_s": 0.0, "p95_wait_s": 12399.0, "utilisation": 0.439, "energy_kwh": 4104.0,
        "cost_eur": 617.0, "carbon_kg": 288.0, "workflows_done": 11,
        "workflow_mean_makespan_s": 9.24, "deadline_misses": 1,
    }  # fmt: skip
    for table in (
        federation_table(fed),
        view_table(static_view(fed), "view"),
        _table("sim", [row], SUMMARY_COLUMNS, more="every column: comparison.csv"),
    ):
        page.print(table)
    text = page.export_text()
    assert "…" not in text
    assert max(len(line) for line in text.splitlines()) <= width
    for site in fed.site_ids:
        assert site in text  # identities are never left out
    if width <= 100:
        assert "left out to fit" in text
        assert "comparison.csv" in text
    else:
        assert "left out" not in text
