"""Validation against the KTH-SP2 log, sweeps (batch_run and Dask), and the CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from federation.cli import app
from simulations import (
    InvalidScenario,
    jobs_from_trace,
    parse_sweep,
    read_swf,
    scenario_from_dict,
    sweep,
    validate_trace,
)
from tests.conftest import call_main, shared_path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "scenarios"


def test_kth_replay_with_easy_tracks_the_recorded_waits() -> None:
    trace = read_swf(shared_path("swf", "KTH-SP2-1996-2.1-cln.swf")).head(6000)
    easy = validate_trace(trace, cores=100, policy="easy")
    fcfs = validate_trace(trace, cores=100, policy="fcfs")
    assert easy.jobs == fcfs.jobs == 6000
    # the log used EASY: EASY's waits correlate with the recorded ones, FCFS's far less
    assert easy.pearson > 0.2
    assert easy.pearson > fcfs.pearson
    assert easy.simulated_mean_wait_s < fcfs.simulated_mean_wait_s
    # work conservation: utilisation = processor-seconds / (cores x simulated span)
    table = jobs_from_trace(trace)
    assert 0 < easy.utilisation < 1
    assert easy.utilisation == pytest.approx(fcfs.utilisation)
    assert (table.run * table.cores).sum() > 0


def test_copies_and_load_reshape_the_stream() -> None:
    trace = read_swf(shared_path("swf", "KTH-SP2-1996-2.1-cln.swf")).head(1000)
    one = jobs_from_trace(trace)
    three = jobs_from_trace(trace, copies=3, load=2.0, rng=np.random.default_rng(1))
    assert len(three) == 3 * len(one)
    assert three.submit.max() <= one.submit.max() / 2 + 1
    assert np.isnan(three.recorded_wait).sum() == 2 * len(one)


def _small(**changes: Any) -> dict[str, Any]:
    sc: dict[str, Any] = {
        "name": "sw",
        "horizon": "12 h",
        "workload": {"synthetic": {"jobs": 1000, "arrival_rate_per_h": 40, "max_cores": 64}},
        "twin": False,
        "collect_sites": False,
        "seeds": [1],
    }
    sc.update(changes)
    return sc


def test_parse_sweep_reads_yaml_scalars() -> None:
    assert parse_sweep(["workload.load=1,1.5", "queue=fcfs,easy"]) == {
        "workload.load": [1, 1.5],
        "queue": ["fcfs", "easy"],
    }
    with pytest.raises(InvalidScenario, match="PARAM=v1,v2"):
        parse_sweep(["workload.load"])


def test_local_and_dask_sweeps_give_the_same_table() -> None:
    sc = scenario_from_dict(_small())
    grid = {"workload.load": [1, 2]}
    local = sweep(sc, grid)
    assert list(local["workload.load"]) == [1, 2]
    assert local["jobs_done"].iloc[1] > local["jobs_done"].iloc[0]
    assert local["energy_kwh"].iloc[1] > local["energy_kwh"].iloc[0]
    dask = sweep(sc, grid, backend="dask", workers=2)
    for col in ("jobs_done", "energy_kwh", "mean_wait_s", "utilisation"):
        assert list(dask[col]) == pytest.approx(list(local[col])), col


def test_cli_simulate_writes_tables_and_plots(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    out = tmp_path / "out"
    res = CliRunner().invoke(
        app, ["simulate", str(EXAMPLES / "carbon-cap.yaml"), "--seed", "3", "-o", str(out)]
    )
    assert res.exit_code == 0, res.output
    assert "carbon-cap" in res.output
    for name in ("comparison.csv", "waits.png", "energy.png", "utilisation.png", "makespans.png"):
        assert (out / name).stat().st_size > 0
    summary = json.loads((out / "heft-seed3" / "summary.json").read_text())
    assert summary["scenario"] == "carbon-cap"
    assert summary["seed"] == 3
    assert (out / "heft-seed3" / "model.csv").read_text().startswith("step,time_h")


def test_cli_sweep_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from typer.testing import CliRunner

    sc = tmp_path / "s.yaml"
    import yaml

    sc.write_text(yaml.safe_dump(_small()))
    runner = CliRunner()
    res = runner.invoke(
        app, ["simulate", str(sc), "--sweep", "queue=fcfs,easy", "-o", str(tmp_path / "o")]
    )
    assert res.exit_code == 0, res.output
    lines = (tmp_path / "o" / "sweep.csv").read_text().splitlines()
    assert lines[0].startswith("queue,planner,seed")
    assert len(lines) == 3
    # invalid input: exit 2, one line naming what is wrong, nothing written
    bad = str(tmp_path / "bad")
    code, _, err = call_main(capsys, "simulate", str(sc), "--sweep", "nothing", "-o", bad)
    assert code == 2
    assert "--sweep: nothing: write PARAM=v1,v2" in err
    code, _, err = call_main(capsys, "simulate", str(sc), "--sweep", "nosuch=1,2", "-o", bad)
    assert code == 2
    assert "nosuch: Extra inputs are not permitted" in err
    assert not (tmp_path / "bad" / "sweep.csv").exists()


def test_demo_section_runs_the_what_if(tmp_path: Path) -> None:
    from federation.cli.common import DemoContext
    from federation.cli.sim_cmd import demo_section
    from federation.model import load_demo_federation
    from orchestrator import load_workflow

    wf = load_workflow(EXAMPLES.parent / "workflows" / "helloworld-forkjoin-10-chameleon.json")
    ctx = DemoContext(federation=load_demo_federation(), workflow=wf, output=tmp_path)
    demo_section(ctx)
    base, spike = ctx.results["simulation"]
    assert base["scenario"] == "demo-what-if"
    assert spike["energy_kwh"] == pytest.approx(base["energy_kwh"], rel=0.05)
    assert spike["cost_eur"] > base["cost_eur"]
    assert (tmp_path / "simulation" / "price-spike" / "waits.png").is_file()


@pytest.mark.slow
def test_dask_sweep_on_a_scheduler_address() -> None:
    from distributed import LocalCluster

    sc = scenario_from_dict(_small())
    with LocalCluster(
        n_workers=1, threads_per_worker=1, dashboard_address=":0", host="127.0.0.1"
    ) as cluster:
        table = sweep(sc, {"queue": ["fcfs", "easy"]}, address=cluster.scheduler_address)
    assert list(table["queue"]) == ["easy", "fcfs"]  # sorted by the swept parameter
    assert table["mean_wait_s"].iloc[0] <= table["mean_wait_s"].iloc[1]


def test_tables_are_saved_as_csv_and_parquet(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    import pandas as pd  # type: ignore[import-untyped, unused-ignore]

    from simulations import run_scenario, save_results

    sc = scenario_from_dict(_small(horizon="3 h"))
    results = run_scenario(sc)
    save_results(results, tmp_path, plots=False)
    run = tmp_path / results[0].label
    for name in ("model", "jobs", "site_totals"):
        csv = pd.read_csv(run / f"{name}.csv")
        parquet = pd.read_parquet(run / f"{name}.parquet")
        assert list(csv.columns) == list(parquet.columns)
        assert len(csv) == len(parquet) > 0
    assert len(pd.read_parquet(run / "jobs.parquet")) == results[0].summary["jobs"]
