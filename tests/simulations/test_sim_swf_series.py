"""SWF reader and hourly series: real files from ../shared/data and small hand-made ones."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from simulations import HourlySeries, InvalidTrace, read_hourly_csv, read_swf
from tests.conftest import shared_path

KTH = ("swf", "KTH-SP2-1996-2.1-cln.swf")


def test_kth_header_and_columns() -> None:
    trace = read_swf(shared_path(*KTH))
    assert trace.acknowledge == "Lars Malinowsky"
    assert "Lars Malinowsky" in trace.credit()
    assert trace.max_procs == 100
    assert trace.unix_start == 843480031
    assert len(trace) > 28_000
    assert np.all(np.diff(trace.submit) >= 0)
    assert trace.procs.min() >= 1
    assert trace.procs.max() <= 100
    assert np.all(trace.run > 0)
    assert np.all(trace.req_time > 0)
    assert np.all(trace.wait >= 0)


def test_missing_fields_and_dropped_jobs(tmp_path: Path) -> None:
    lines = [
        "; Acknowledge: someone",
        "; MaxProcs: 8",
        # allocated procs missing: the requested count stands in
        "1 0 5 100 -1 -1 -1 4 200 -1 1 1 1 -1 -1 -1 -1 -1",
        # no size at all: dropped
        "2 10 0 50 -1 -1 -1 -1 60 -1 1 1 1 -1 -1 -1 -1 -1",
        # zero run time: dropped by default
        "3 20 0 0 2 -1 -1 2 60 -1 1 1 1 -1 -1 -1 -1 -1",
        # requested time missing: the run time stands in
        "4 5 0 30 2 -1 -1 2 -1 -1 1 1 1 -1 -1 -1 -1 -1",
    ]
    p = tmp_path / "t.swf"
    p.write_text("\n".join(lines) + "\n")
    trace = read_swf(p)
    assert list(trace.job_id) == [1, 4]  # sorted by submit time: 0, 5
    assert list(trace.procs) == [4, 2]
    assert list(trace.req_time) == [200, 30]
    assert len(read_swf(p, keep_zero_runtime=True)) == 3


def test_malformed_line_is_named(tmp_path: Path) -> None:
    p = tmp_path / "bad.swf"
    p.write_text("1 0 5 100 4\n")
    with pytest.raises(InvalidTrace, match="line 1"):
        read_swf(p)


def test_series_integral_is_exact_for_steps() -> None:
    s = HourlySeries(1000.0, np.array([1.0, 3.0, 2.0]))
    # brute force: integrate second by second across a wrap-around
    t0, t1 = 1000.0 + 1800.0, 1000.0 + 3 * 3600.0 + 5400.0
    grid = np.arange(t0, t1) + 0.5
    brute = sum(s.at(t) for t in grid)
    assert s.integral(t0, t1) == pytest.approx(brute, rel=1e-9)
    assert s.at(1000.0 + 3 * 3600.0 + 1.0) == 1.0  # wraps around
    assert s.mean_between(1000.0, 1000.0 + 3 * 3600.0) == pytest.approx(2.0)


def test_daily_profile_peaks_at_peak_hour() -> None:
    s = HourlySeries.daily(100.0, 40.0, peak_hour=18.5)
    assert int(np.argmax(s.values)) == 18
    assert s.values.mean() == pytest.approx(100.0, abs=1e-9)


def test_real_carbon_and_price_series() -> None:
    fr = read_hourly_csv(
        shared_path("energy", "electricitymaps_FR_2023_hourly.csv"),
        "Carbon Intensity gCO₂eq/kWh (LCA)",
    )
    assert len(fr) == 8760
    assert 10 < fr.values.mean() < 200
    # the BE price file has empty cells: carried forward, never NaN
    be = read_hourly_csv(
        shared_path("energy", "entsoe_BE_dayahead_prices_2022_2024_hourly.csv"), "DAM_price"
    )
    assert np.all(np.isfinite(be.values))
    assert be.values.max() > 0.3  # the 2022 price crisis is in there


def test_series_errors_name_the_column(tmp_path: Path) -> None:
    p = tmp_path / "s.csv"
    p.write_text("time,value\n2023-01-01 00:00:00,1\n2023-01-01 01:00:00,x\n")
    with pytest.raises(InvalidTrace, match="no column 'price'"):
        read_hourly_csv(p, "price")
    with pytest.raises(InvalidTrace, match="row 3"):
        read_hourly_csv(p, "value")


def test_a_compressed_log_with_queues_partitions_and_no_waits(tmp_path: Path) -> None:
    import gzip

    lines = [
        "; Installation: somewhere",
        "; MaxProcs: 48",
        "; MaxQueues: 2",
        "; Queue:  0  interactive",
        "; Queue:  1  batch",
        "; MaxPartitions: 2",
        "; Partition: 1 left.example.org",
        "; Partition: 2 right.example.org",
        "1 0 -1 100 4 -1 -1 4 200 -1 1 1 1 -1 0 1 -1 -1",
        "2 10 30 50 8 -1 -1 8 60 -1 1 1 1 -1 1 2 -1 -1",
    ]
    p = tmp_path / "t.swf.gz"
    with gzip.open(p, "wt") as fh:
        fh.write("\n".join(lines) + "\n")
    trace = read_swf(p)
    assert trace.queues == {0: "interactive", 1: "batch"}
    assert trace.partitions == {1: "left.example.org", 2: "right.example.org"}
    assert list(trace.queue) == [0, 1]
    assert list(trace.partition) == [1, 2]
    assert trace.partition_ids == [1, 2]
    assert np.isnan(trace.wait[0])  # -1: not recorded
    assert trace.wait[1] == 30
    assert trace.has_waits
    assert trace.max_procs == 48


def test_the_nasa_log_ships_compressed_and_records_no_waits(examples_dir: Path) -> None:
    trace = read_swf(examples_dir / "traces" / "NASA-iPSC-1993-3.1-cln.swf.gz")
    assert trace.max_procs == 128
    assert trace.queues == {0: "interactive", 1: "batch"}
    assert trace.acknowledge == "Bill Nitzberg"
    assert len(trace) > 18_000
    assert not trace.has_waits  # its submit times are start times
