"""``continuum twin fit | view | backtest | probe`` and the twin's demo section."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from federation.cli.common import DemoContext
from federation.cli.twin_cmd import demo_section
from federation.model import Federation
from orchestrator.loaders import load_workflow
from tests.conftest import call_main as call
from tests.conftest import shared_path
from twin import AbstractSiteState, read_telemetry
from twin.telemetry import write_telemetry_csv


def _hourly_csv(path: Path, days: int = 40) -> None:
    rng = np.random.default_rng(0)
    level = 50.0
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["Datetime (UTC)", "value"])
        for k in range(days * 24):
            level += rng.normal(0, 1)
            v = level + 10 * math.cos(2 * math.pi * k / 24) + rng.normal(0, 2)
            w.writerow(
                [
                    f"2023-01-{1 + k // 24:02d} {k % 24:02d}:00:00"
                    if k < 31 * 24
                    else k * 3600 + 1672531200,
                    f"{v:.3f}",
                ]
            )


def test_backtest_prints_the_table_and_writes_mae(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    src = tmp_path / "s.csv"
    _hourly_csv(src, days=16)
    out_json = tmp_path / "bt.json"
    code, out, err = call(
        capsys, "twin", "backtest", str(src), "--time-column", "Datetime (UTC)",
        "--value-column", "value", "--horizon", "12", "--json", str(out_json),
    )  # fmt: skip
    assert code == 0, err
    for word in ("twin", "persistence", "seasonal_naive", "lead 12"):
        assert word in out
    data = json.loads(out_json.read_text())
    assert set(data["mae"]) == {"twin", "persistence", "seasonal_naive", "linear"}
    assert set(data["mae_by_horizon"]) == set(data["mae"])
    for key in ("coverage_80", "coverage_95", "width_80", "width_95"):
        assert len(data[key]) == 12
    assert all(
        0 <= c80 <= c95 <= 1
        for c80, c95 in zip(data["coverage_80"], data["coverage_95"], strict=True)
    )
    assert all(0 < w80 < w95 for w80, w95 in zip(data["width_80"], data["width_95"], strict=True))
    assert "coverage 80 %" in out
    assert data["horizon"] == 12
    assert all(v > 0 for v in data["mae"].values())


def test_backtest_bad_column_and_rows_exit_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    src = tmp_path / "s.csv"
    _hourly_csv(src, days=5)
    code, _, err = call(
        capsys, "twin", "backtest", str(src), "--time-column", "time", "--value-column", "value"
    )
    assert code == 2
    assert "column 'time'" in err
    assert "'Datetime (UTC)'" in err  # lists the real columns
    src.write_text("t,v\n2023-01-01 00:00,1\n2023-01-01 01:00,n/a\n")
    code, _, err = call(
        capsys, "twin", "backtest", str(src), "--time-column", "t", "--value-column", "v"
    )
    assert code == 2
    assert "line 3" in err
    assert "'n/a' is not a number" in err


@pytest.mark.slow
def test_backtest_on_real_belgian_prices(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = shared_path("energy", "entsoe_BE_dayahead_prices_2022_2024_hourly.csv")
    out_json = tmp_path / "be.json"
    code, _out, err = call(
        capsys, "twin", "backtest", str(path), "--time-column", "time",
        "--value-column", "DAM_price", "--json", str(out_json),
    )  # fmt: skip
    assert code == 0, err
    mae = json.loads(out_json.read_text())["mae"]
    assert mae["twin"] < min(mae["persistence"], mae["seasonal_naive"])


def test_fit_and_view_with_fitted_parameters(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, examples_dir: Path
) -> None:
    samples = read_telemetry(examples_dir / "telemetry" / "synthetic-demo-telemetry.csv")
    small = [s for s in samples if s.site == "edge-station"][:36]
    tel = tmp_path / "edge.csv"
    write_telemetry_csv(small, tel)
    params = tmp_path / "params.json"
    code, out, err = call(capsys, "twin", "fit", str(tel), "--json", str(params))
    assert code == 0, err
    assert "edge-station" in out
    assert "utilisation" in out
    fitted = json.loads(params.read_text())["sites"]["edge-station"]
    assert {b["name"] for b in fitted["blocks"]} >= {"utilisation", "backlog", "power_price"}
    db = tmp_path / "twin.db"
    view_json = tmp_path / "view.json"
    args = [
        "twin",
        "view",
        str(tel),
        "--params",
        str(params),
        "--store",
        str(db),
        "--json",
        str(view_json),
    ]
    code, out, err = call(capsys, *args)
    assert code == 0, err
    view = json.loads(view_json.read_text())
    st = AbstractSiteState.model_validate(view["edge-station"])
    assert st.status.value == "ok"
    assert view["gpu-centre"]["status"] == "stale"  # no telemetry for it in this file
    code, out, _ = call(capsys, *args)  # a second run resumes from the store
    assert code == 0
    assert "resumed" in out
    assert "duplicates" in out


def test_fit_rejects_unknown_sites(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    tel = tmp_path / "t.csv"
    tel.write_text("timestamp,site,utilisation\n0,mars-base,0.5\n")
    code, _, err = call(capsys, "twin", "fit", str(tel))
    assert code == 1
    assert "mars-base" in err


def test_probe_prints_real_samples(capsys: pytest.CaptureFixture[str]) -> None:
    if not Path("/proc/stat").exists():
        pytest.skip("no /proc")
    code, out, _ = call(capsys, "twin", "probe", "--samples", "1", "--interval", "0.2")
    assert code == 0
    assert "utilisation=" in out


def test_demo_section_fills_the_context(
    demo_federation: Federation, examples_dir: Path, tmp_path: Path
) -> None:
    wf = load_workflow(examples_dir / "workflows" / "montage-chameleon-2mass-005d-001.json")
    ctx = DemoContext(federation=demo_federation, workflow=wf, output=tmp_path)
    demo_section(ctx)
    view = ctx.results["view"]
    assert set(view) == set(demo_federation.site_ids)
    assert all(isinstance(v, AbstractSiteState) for v in view.values())
    png = tmp_path / "twin-forecast.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = ctx.results["summary"]["twin"]
    assert summary["samples"] > 1000
    assert set(summary["status"]) == set(demo_federation.site_ids)
    json.dumps(summary)
