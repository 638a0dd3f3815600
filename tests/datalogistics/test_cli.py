"""The data logistics CLI (``continuum madpp|buffer|transfer``) and its demo section."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from datalogistics.buffers import BufferClient, BufferRef, SiteClient
from datalogistics.flows import Flow
from federation.cli import app
from federation.cli.common import DemoContext
from federation.cli.data_cmd import demo_section
from federation.model import Federation, demo_federation_path
from orchestrator.loaders import load_workflow
from tests.conftest import shared_path
from tests.datalogistics.conftest import SECRET, Sites
from tests.datalogistics.test_madpp import ddf_plan

runner = CliRunner()


def test_madpp_validate_ok_and_broken(tmp_path: Path) -> None:
    good = shared_path("madmp", "ex9-dmp-long.json")
    res = runner.invoke(app, ["madpp", "validate", str(good)])
    assert res.exit_code == 0, res.output
    assert "3 dataset(s)" in res.output
    data = json.loads(good.read_text())
    data["dmp"]["dataset"][2]["distribution"][0]["byte_size"] = -1.5
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    res = runner.invoke(app, ["madpp", "validate", str(bad)])
    assert res.exit_code == 2
    assert "dmp.dataset[2].distribution[0].byte_size" in res.output


def test_madpp_constraints_lists_eligible_sites(
    tmp_path: Path, demo_federation: Federation
) -> None:
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps(ddf_plan()))
    fed = str(demo_federation_path())
    res = runner.invoke(app, ["madpp", "constraints", str(plan), "--federation", fed, "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    french = sorted(s.id for s in demo_federation.sites if s.jurisdiction == "FR")
    assert sorted(out["eligible_sites"]["calibrate"]) == french
    assert out["items"]["vis"] == ["FR"]
    res = runner.invoke(app, ["madpp", "constraints", str(plan)])
    assert res.exit_code == 0
    assert "calibrate" in res.output


def test_token_and_transfer_commands(two_sites: Sites, monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = two_sites
    monkeypatch.setenv("CONTINUUM_BUFFER_SECRET", SECRET)
    data = os.urandom(300_000)
    with httpx.Client() as http:
        src = SiteClient(a.url, a.admin, http).create(len(data), ttl=600)
        dst = SiteClient(b.url, b.admin, http).create(len(data), ttl=600)
        w = BufferClient(BufferRef(a.url, src.id, a.token(src.id, "write")), http)
        w.append(data)
        w.seal()
        res = runner.invoke(
            app, ["buffer", "token", "--site", "alpha", "--right", "read", "--buffer", src.id]
        )
        assert res.exit_code == 0, res.output
        read_token = res.output.strip()
        args = [
            "transfer",
            f"{a.url}/buffers/{src.id}",
            f"{b.url}/buffers/{dst.id}",
            "--src-token",
            read_token,
            "--dst-token",
            b.token(dst.id, "write"),
            "--chunk-size",
            "64 KiB",
            "--json",
        ]
        res = runner.invoke(app, args)
        assert res.exit_code == 0, res.output
        record = json.loads(res.output)
        assert record["sha256"] == hashlib.sha256(data).hexdigest()
        assert (record["link"], record["bytes"]) == ("alpha->beta", len(data))
        got = BufferClient(BufferRef(b.url, dst.id, b.token(dst.id, "read")), http).read()[0]
        assert got == data


def test_demo_section_shows_the_transfer_plan(tmp_path: Path, demo_federation: Federation) -> None:
    class Placement:
        def flows(self) -> list[Flow]:
            return [
                Flow("vis", 4e9, "edge-station", "ddf-fatnode", 0, 10, 50, 500),
                Flow("cal", 1e9, "ddf-fatnode", "ddf-fatnode", 0, 0, 0, 100),
            ]

    wf = load_workflow(shared_path("wfinstances", "helloworld-chain-5-chameleon.json"))
    ctx = DemoContext(federation=demo_federation, workflow=wf, output=tmp_path)
    demo_section(ctx)  # without a plan: one line, nothing written
    assert not (tmp_path / "transfer-plan.json").exists()
    ctx.results["plan"] = Placement()
    demo_section(ctx)
    written = json.loads((tmp_path / "transfer-plan.json").read_text())
    assert written["bytes_crossing"] == 4e9
    assert written["local_flows"] == 1
    assert set(written["per_site"]) == {"edge-station", "ddf-fatnode"}
    assert ctx.results["summary"]["data_logistics"]["transfers"] == 1
