"""Telemetry files (CSV, JSON, JSON Lines), series loading errors, the /proc probe."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from federation.model import Federation
from twin import FederationTwin
from twin.errors import InvalidTelemetry
from twin.series import load_series, parse_time
from twin.telemetry import LocalProbe, TelemetrySample, read_telemetry, replay, write_telemetry_csv


def test_csv_round_trip_keeps_gaps_and_links(tmp_path: Path) -> None:
    samples = [
        TelemetrySample(site="a", timestamp=100.0, utilisation=0.5, links={"b": 1e6}),
        TelemetrySample(site="a", timestamp=200.0, power_price=0.1, up=False),
    ]
    path = tmp_path / "t.csv"
    write_telemetry_csv(samples, path)
    back = read_telemetry(path)
    assert back[0].utilisation == 0.5
    assert back[0].backlog is None  # an empty cell is missing, not zero
    assert back[0].links == {"b": 1e6}
    assert back[1].links == {}
    assert back[1].up is False
    assert back[1].observed() == {"power_price": 0.1}


def test_json_and_json_lines_and_private_fields(tmp_path: Path) -> None:
    rows = [
        {"site": "a", "timestamp": "2026-01-05T00:00:00Z", "utilisation": 0.2, "node": "n1"},
        {"site": "a", "timestamp": 1767571200 + 3600, "links": {"b": 5.0}, "user": "bob"},
    ]
    (tmp_path / "t.json").write_text(json.dumps(rows))
    (tmp_path / "t.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    for name in ("t.json", "t.jsonl"):
        s = read_telemetry(tmp_path / name)
        assert s[0].timestamp == 1767571200.0
        assert s[0].private == {"node": "n1"}
        assert s[1].links == {"b": 5.0}
        assert "n1" not in json.dumps(s[0].observed())


def test_bad_telemetry_names_the_row_and_field(tmp_path: Path) -> None:
    p = tmp_path / "bad.csv"
    p.write_text(
        "timestamp,site,utilisation\n2026-01-01 00:00:00,a,0.5\n2026-01-01 01:00:00,a,1.7\n"
    )
    with pytest.raises(InvalidTelemetry, match=r"line 3\.utilisation"):
        read_telemetry(p)
    p.write_text("time,site\n1,a\n")
    with pytest.raises(InvalidTelemetry, match="needs 'timestamp' and 'site'"):
        read_telemetry(p)
    p.write_text("timestamp,site\nyesterday,a\n")
    with pytest.raises(InvalidTelemetry, match="cannot read the time 'yesterday'"):
        read_telemetry(p)
    (tmp_path / "x.json").write_text("[1, 2")
    with pytest.raises(InvalidTelemetry, match="not valid JSON"):
        read_telemetry(tmp_path / "x.json")


def test_series_loader_reports_columns_and_unparsable_rows(tmp_path: Path) -> None:
    p = tmp_path / "s.csv"
    p.write_text(
        "when,v\n01jan2022 00:00:00,1\n01jan2022 01:00:00,\n"
        "01jan2022 03:00:00,3\n01jan2022 03:00:00,5\n"
    )
    s = load_series(p, "when", "v")
    assert len(s) == 4  # hours 0..3 on a regular grid
    assert s.values[0] == 1.0
    assert s.values[1] != s.values[1]  # empty cell: a gap
    assert s.values[2] != s.values[2]  # absent hour: a gap
    assert s.values[3] == 4.0  # duplicated hour averaged
    assert s.duplicates == 1
    with pytest.raises(
        InvalidTelemetry, match=r"column 'value'.*no such column; the columns are: 'when', 'v'"
    ):
        load_series(p, "when", "value")
    p.write_text("when,v\n2022-01-01 00:00,1\n2022-01-01 01:00,abc\nnot a time,3\n")
    with pytest.raises(InvalidTelemetry) as exc:
        load_series(p, "when", "v")
    text = str(exc.value) + " ".join(str(x) for x in exc.value.problems)
    assert "line 3, column 'v'" in text
    assert "'abc' is not a number" in text
    assert "line 4, column 'when'" in text


def test_parse_time_formats() -> None:
    assert parse_time("01jan2022 00:00:00") == parse_time("2022-01-01 00:00:00")
    assert parse_time("2022-01-01T01:00:00+01:00") == parse_time("2022-01-01 00:00:00")
    assert parse_time("1640995200") == 1640995200.0


def test_replay_batches_in_time_order() -> None:
    s = [TelemetrySample(site="a", timestamp=t) for t in (7200.0, 0.0, 3599.0, 3600.0)]
    batches = list(replay(s, batch_seconds=3600))
    assert [[x.timestamp for x in b] for b in batches] == [[0.0, 3599.0], [3600.0], [7200.0]]


def test_shipped_demo_telemetry_replays(examples_dir: Path, demo_federation: Federation) -> None:
    samples = read_telemetry(examples_dir / "telemetry" / "synthetic-demo-telemetry.csv")
    assert {s.site for s in samples} == set(demo_federation.site_ids)
    tw = FederationTwin(demo_federation)
    rep = tw.ingest(samples)
    assert rep.applied == len(samples)
    assert rep.unknown_site == 0


def test_local_probe_reads_real_proc() -> None:
    probe = LocalProbe("local")
    if not probe.available():
        pytest.skip("no /proc on this system")
    first = probe.sample()
    assert first.utilisation is None  # needs two reads
    # /proc/stat counts in clock ticks (10 ms): burn real CPU until the counters move
    # (a fixed amount of work can fit inside one tick on a fast machine).
    second = probe.sample()
    deadline = time.monotonic() + 5.0
    while second.utilisation is None and time.monotonic() < deadline:
        burn = sum(i * i for i in range(200_000))
        assert burn > 0
        second = probe.sample()
    assert second.utilisation is not None
    assert 0.0 <= second.utilisation <= 1.0
    assert second.backlog is not None
    assert second.backlog >= 0.0
    assert second.site == "local"


def test_local_probe_on_a_fake_proc_tree(tmp_path: Path) -> None:
    (tmp_path / "stat").write_text("cpu  100 0 100 800 0 0 0 0 0 0\n")
    (tmp_path / "loadavg").write_text("0.5 0.4 0.3 1/100 999\n")
    probe = LocalProbe("x", proc=tmp_path)
    probe.sample(now=0.0)
    (tmp_path / "stat").write_text("cpu  150 0 150 900 0 0 0 0 0 0\n")  # 100 busy of 200
    s = probe.sample(now=10.0)
    assert s.utilisation == pytest.approx(0.5)


def test_a_local_site_twin_runs_on_probed_telemetry(demo_federation: Federation) -> None:
    """The probe's real samples (utilisation missing on the first) drive a site twin."""
    import os

    from twin.site import SiteTwin

    probe = LocalProbe("local")
    if not probe.available():
        pytest.skip("no /proc on this system")
    site = demo_federation.site("edge-station").model_copy(
        update={"id": "local", "cores": os.cpu_count() or 1}
    )
    tw = SiteTwin(site)
    for k in range(4):
        sum(i * i for i in range(50_000))
        assert tw.ingest(probe.sample(now=1_000.0 + 60.0 * k)) == "applied"
    fc = tw.forecast(horizon=3)
    assert all(0.0 <= u <= 1.0 for u in fc.blocks["utilisation"].mean)
    assert tw.counters.applied == 4


def test_replay_source_hands_out_each_sample_once(examples_dir: Path) -> None:
    from twin import ReplaySource

    src = ReplaySource(examples_dir / "telemetry" / "synthetic-demo-telemetry.csv")
    assert src.start is not None
    first = src.poll(src.start)
    assert len(first) == 5  # one per site at the first hour
    assert src.poll(src.start) == []  # nothing new until the clock moves
    rest = src.poll(src.start + 10 * 86400)
    assert len(rest) == 5 * 24 * 10
    assert not src.exhausted
    assert len(src.poll(float("inf"))) == 5 * 24 * 4 - 5
    assert src.exhausted
    probe = LocalProbe("local")
    if probe.available():
        assert [s.site for s in probe.poll(123.0)] == ["local"]
