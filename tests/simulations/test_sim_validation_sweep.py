"""Validation against the KTH-SP2 log, sweeps (batch_run and Dask), and the CLI."""

from __future__ import annotations

import json
import math
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
from simulations.validation import partition_sizes, recorded_downtime
from tests.conftest import call_main, shared_path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "scenarios"


def test_kth_replay_with_easy_tracks_the_recorded_waits() -> None:
    trace = read_swf(shared_path("swf", "KTH-SP2-1996-2.1-cln.swf")).head(6000)
    easy = validate_trace(trace, policy="easy")
    fcfs = validate_trace(trace, policy="fcfs")
    assert easy.cores == 100  # the header's MaxProcs
    assert (easy.partitions, easy.queues) == (1, 0)
    assert easy.jobs == fcfs.jobs == 6000
    # the log used EASY: EASY's waits correlate with the recorded ones, FCFS's far less
    assert easy.pearson > 0.2
    assert easy.pearson > fcfs.pearson
    assert easy.simulated_mean_wait_s < fcfs.simulated_mean_wait_s
    assert easy.mean_absolute_error_s < fcfs.mean_absolute_error_s
    # work conservation: utilisation = processor-seconds / (cores x the replay's span)
    table = jobs_from_trace(trace)
    work = float((table.run * table.cores).sum())
    assert 0 < fcfs.utilisation < easy.utilisation < 1  # the same work, FCFS's span longer
    assert work / (100 * easy.utilisation) < work / (100 * fcfs.utilisation)


def test_the_logs_downtime_is_replayed_and_narrows_the_gap() -> None:
    """Windows where the recorded schedule ran nothing while jobs waited are outages: with
    them the replay's mean wait comes closer to the recorded one."""
    trace = read_swf(shared_path("swf", "KTH-SP2-1996-2.1-cln.swf")).head(8000)
    windows = recorded_downtime(trace, -1)
    assert windows
    assert all(b - a >= 3600 for a, b in windows)
    start = trace.submit + trace.wait
    end = start + trace.run
    for a, b in windows:
        assert not np.any((start < b) & (end > a))  # nothing ran in the window
        assert np.any((trace.submit <= a) & (start >= b))  # and some job waited through it
    on = validate_trace(trace, policy="easy", downtime=True)
    off = validate_trace(trace, policy="easy", downtime=False)
    assert on.downtime_h == pytest.approx(sum(b - a for a, b in windows) / 3600)
    assert off.downtime_h == 0
    assert abs(on.mean_wait_error) < abs(off.mean_wait_error)
    assert on.simulated_mean_wait_s > off.simulated_mean_wait_s


def test_partitions_are_machines_of_their_own(tmp_path: Path) -> None:
    """Each partition is a site as large as its recorded peak; a job runs in its own."""
    rows = [
        # job submit wait run procs ... queue partition
        (1, 0, 0, 100, 4, 0, 1),
        (2, 0, 0, 100, 4, 0, 1),  # partition 1 peaks at 8 processors
        (3, 0, 0, 100, 2, 1, 2),
        (4, 0, 0, 100, 2, 1, 2),  # partition 2 peaks at 4
        (5, 20, 80, 50, 4, 1, 2),  # waits in 2 (full) though 1 has room at t = 100
    ]
    lines = ["; MaxProcs: 12", "; Queue: 0 short", "; Queue: 1 long"] + [
        f"{j} {s} {w} {r} {p} -1 -1 {p} {r} -1 1 1 1 -1 {q} {part} -1 -1"
        for j, s, w, r, p, q, part in rows
    ]
    path = tmp_path / "two.swf"
    path.write_text("\n".join(lines) + "\n")
    trace = read_swf(path)
    assert partition_sizes(trace) == {1: 8, 2: 4}
    report = validate_trace(trace, policy="fcfs", downtime=False)
    assert (report.partitions, report.cores, report.queues) == (2, 12, 2)
    # job 5 waits for partition 2's cores (until t = 100, 80 s), never moves to partition 1
    assert report.per_queue["1 long"]["simulated_mean_wait_s"] == pytest.approx(80 / 3)
    assert report.per_queue["0 short"]["simulated_mean_wait_s"] == 0
    assert report.mean_absolute_error_s == pytest.approx(0.0)
    with pytest.raises(ValueError, match="2 partitions"):
        validate_trace(trace, cores=16)


def test_a_log_without_recorded_waits_is_replayed_without_the_comparison(
    examples_dir: Path,
) -> None:
    report = validate_trace(
        examples_dir / "traces" / "NASA-iPSC-1993-3.1-cln.swf.gz", policy="easy", jobs=3000
    )
    assert not report.has_recorded_waits
    assert math.isnan(report.recorded_mean_wait_s)
    assert math.isnan(report.pearson)
    assert report.jobs == 3000
    assert report.cores == 128
    assert report.queues == 2
    # its submit times are start times: on the logged machine hardly any job waits
    assert report.simulated_median_wait_s == 0


def test_cli_validates_any_archive_log(tmp_path: Path, examples_dir: Path) -> None:
    from typer.testing import CliRunner

    runner = CliRunner()
    nasa = examples_dir / "traces" / "NASA-iPSC-1993-3.1-cln.swf.gz"
    res = runner.invoke(app, ["simulate", "--validate", str(nasa), "-o", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "records no waits" in res.output
    assert "1 partition(s), 128 processors, 2 queue(s)" in res.output
    rows = json.loads((tmp_path / "validation.json").read_text())
    assert [r["policy"] for r in rows] == ["easy", "fcfs"]
    bad = tmp_path / "bad.swf"
    bad.write_text("1 0 5\n")
    res = runner.invoke(app, ["simulate", "--validate", str(bad)])
    assert res.exit_code == 2
    said = " ".join(res.output.replace("│", " ").split())  # the error box wraps lines
    assert "line 1: 3 fields, an SWF job has 18" in said


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


def test_more_load_never_shows_shorter_waits() -> None:
    """A stream longer than the horizon: more load means more jobs arriving in it, the
    waits of jobs still queued at the end count (so far), and the statistics grow."""
    sc = scenario_from_dict(
        _small(
            horizon="8 h",
            workload={"synthetic": {"jobs": 600, "arrival_rate_per_h": 60, "max_cores": 256}},
            federation={
                "name": "one",
                "sites": [
                    {
                        "id": "small",
                        "kind": "hpc",
                        "cores": 256,
                        "memory": "1 TB",
                        "power_idle_w": 1,
                        "power_busy_w": 5,
                        "price_per_core_hour": 0.01,
                        "jurisdiction": "EU",
                        "buffer_capacity": "1 TB",
                    }
                ],
            },
        )
    )
    table = sweep(sc, {"workload.load": [1, 1.5, 2]})
    for col in ("mean_wait_s", "p95_wait_s", "jobs_waiting", "utilisation"):
        values = list(table[col])
        assert values == sorted(values), (col, values)
    assert table["jobs_waiting"].iloc[-1] > 0
    assert table["jobs_done"].iloc[-1] > table["jobs_done"].iloc[0]


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
