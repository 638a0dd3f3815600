"""The federation twin: views, disclosure control, snapshots and resume, link forecasts."""

from __future__ import annotations

import json
import math
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from federation.model import Federation
from federation.store import Store
from twin import (
    AbstractSiteState,
    DisclosurePolicy,
    FederationTwin,
    SiteStatus,
    TelemetrySample,
    TwinConfig,
)
from twin.errors import ModelError

T0 = 1_767_571_200.0
H = 3600.0

SECRETS = ["node-r12c3n07", "jobid-8843121", "alice.dupont", "slurm-partition-gpu_p13"]


def _samples(fed: Federation, hours: int, seed: int = 0, start: int = 0) -> list[TelemetrySample]:
    rng = np.random.default_rng(seed)
    out = []
    for k in range(start, start + hours):
        hod = k % 24
        for site in fed.sites:
            links = {
                lk.dst: 0.4 * lk.bandwidth * (1 + 0.1 * rng.standard_normal())
                for lk in fed.links
                if lk.src == site.id
            }
            out.append(
                TelemetrySample(
                    site=site.id,
                    timestamp=T0 + k * H,
                    utilisation=float(
                        np.clip(
                            0.5 + 0.2 * math.sin(2 * math.pi * hod / 24) + rng.normal(0, 0.02), 0, 1
                        )
                    ),
                    backlog=float(
                        max(0.0, 0.05 * site.cores * H * (1 + 0.1 * rng.standard_normal()))
                    ),
                    power_price=(site.energy_price_eur_per_kwh or 0.0)
                    * (1 + 0.2 * math.cos(2 * math.pi * hod / 24)),
                    carbon_intensity=(site.carbon_intensity_g_per_kwh or 0.0)
                    * (1 + 0.1 * math.cos(2 * math.pi * hod / 24)),
                    links={d: max(v, 0.0) for d, v in links.items()},
                    private={
                        "node": SECRETS[0],
                        "job_id": SECRETS[1],
                        "user": SECRETS[2],
                        "partition": SECRETS[3],
                    },
                )
            )
    return out


def test_view_covers_every_site_with_forecasts(demo_federation: Federation) -> None:
    tw = FederationTwin(demo_federation)
    rep = tw.ingest(_samples(demo_federation, 48))
    assert rep.applied == 48 * len(demo_federation.sites)
    view = tw.view(now=T0 + 47 * H)
    assert set(view) == set(demo_federation.site_ids)
    for sid, st in view.items():
        site = demo_federation.site(sid)
        assert isinstance(st, AbstractSiteState)
        assert st.horizon == 48
        assert st.status is SiteStatus.OK
        assert all(0 <= m <= site.cores for m in st.available_cores.mean)
        # about half the cores are free in this telemetry
        assert 0.2 * site.cores < st.available_cores.mean[0] < 0.8 * site.cores
        assert st.power_price is not None
        assert st.expected_wait_s == pytest.approx(0.05 * H, rel=0.3)
    # a site that never reported is in the view from its static figures, stale
    only = FederationTwin(demo_federation)
    only.ingest([s for s in _samples(demo_federation, 3) if s.site == "edge-station"])
    v = only.view(now=T0 + 2 * H)
    assert v["edge-station"].status is SiteStatus.OK
    assert v["gpu-centre"].status is SiteStatus.STALE
    assert v["gpu-centre"].available_cores.mean[0] == demo_federation.site("gpu-centre").cores


def test_nothing_private_leaves_the_twin(demo_federation: Federation, tmp_path: Path) -> None:
    """Telemetry full of node names, job ids and user names: none of it is exposed."""
    db = tmp_path / "twin.db"
    tw = FederationTwin(demo_federation, store=Store.at(db))
    samples = _samples(demo_federation, 30)
    rep = tw.ingest(samples)
    assert all(SECRETS[0] == s.private["node"] for s in samples)  # they were there
    tw.snapshot()
    exposed = [
        json.dumps({k: v.model_dump(mode="json") for k, v in tw.view(now=T0 + 29 * H).items()}),
        json.dumps(rep.to_dict()),
        json.dumps(tw.counters()),
        repr(tw.forecast("ddf-fatnode")),
        repr(tw.link_forecast("ddf-fatnode", "national-hpc")),
        repr(tw.status(now=T0)),
        json.dumps([t.to_state() for t in tw.sites.values()]),
    ]
    with sqlite3.connect(db) as con:
        for (table,) in con.execute("select name from sqlite_master where type='table'"):
            exposed.append(repr(con.execute(f"select * from {table}").fetchall()))
    blob = "\n".join(exposed)
    for secret in SECRETS:
        assert secret not in blob
    for key in ("node", "job_id", "user", "partition"):
        assert f'"{key}"' not in blob


def test_policy_withholds_and_quantises(demo_federation: Federation) -> None:
    pol = DisclosurePolicy(
        withhold=frozenset({"power_price"}),
        quantum={"available_cores": 8.0, "carbon_intensity": 5.0},
    )
    tw = FederationTwin(demo_federation, policies={"ddf-fatnode": pol})
    tw.ingest(_samples(demo_federation, 30))
    view = tw.view(now=T0 + 29 * H)
    st = view["ddf-fatnode"]
    assert st.power_price is None
    assert all(m % 8 == 0 for m in st.available_cores.mean)
    assert st.carbon_intensity is not None
    assert all(abs(m / 5 - round(m / 5)) < 1e-9 for m in st.carbon_intensity.mean)
    assert view["national-hpc"].power_price is not None
    with pytest.raises(ValueError, match="cannot withhold available_cores"):
        DisclosurePolicy(withhold=frozenset({"available_cores"}))


def test_policy_from_site_labels(demo_federation: Federation) -> None:
    data = demo_federation.to_dict()
    data["sites"][0]["labels"] = {
        "disclose.withhold": "power_price,carbon_intensity",
        "disclose.quantum.available_cores": "10",
    }
    fed = Federation.from_dict(data)
    tw = FederationTwin(fed)
    tw.ingest(_samples(fed, 10))
    st = tw.view(now=T0 + 9 * H)[fed.sites[0].id]
    assert st.power_price is None
    assert st.carbon_intensity is None
    assert all(m % 10 == 0 for m in st.available_cores.mean)
    data["sites"][0]["labels"] = {"disclose.withhold": "health"}
    with pytest.raises(ModelError, match="cannot withhold health"):
        FederationTwin(Federation.from_dict(data))


def test_snapshot_resume_continues_from_the_last_estimate(
    demo_federation: Federation, tmp_path: Path
) -> None:
    db = tmp_path / "twin.db"
    first_half = _samples(demo_federation, 36)
    second_half = _samples(demo_federation, 12, seed=1, start=36)
    straight = FederationTwin(demo_federation)
    straight.ingest(first_half + second_half)

    a = FederationTwin(demo_federation, store=Store.at(db), name="prod")
    a.ingest(first_half)
    assert a.snapshot() == len(demo_federation.sites)
    a.store.close() if a.store else None

    b = FederationTwin(demo_federation, store=Store.at(db), name="prod")
    assert sorted(b.resumed) == sorted(demo_federation.site_ids)
    rep = b.ingest(first_half[-5:])  # already seen: duplicates or rejected, never re-applied
    assert rep.applied == 0
    b.ingest(second_half)
    for sid in demo_federation.site_ids:
        got, want = b.sites[sid], straight.sites[sid]
        assert got.x is not None
        assert got.P is not None
        assert want.x is not None
        assert want.P is not None
        np.testing.assert_allclose(got.x, want.x, rtol=1e-12)
        np.testing.assert_allclose(got.P, want.P, rtol=1e-12)
    # another twin name on the same store starts from scratch
    c = FederationTwin(demo_federation, store=Store.at(db), name="test")
    assert c.resumed == []
    assert all(t.x is None for t in c.sites.values())


def test_link_forecast_and_errors(demo_federation: Federation) -> None:
    tw = FederationTwin(demo_federation, TwinConfig(horizon=12))
    tw.ingest(_samples(demo_federation, 24))
    fc = tw.link_forecast("ddf-fatnode", "national-hpc")
    bw = demo_federation.link("ddf-fatnode", "national-hpc")
    assert bw is not None
    assert len(fc.mean) == 12
    assert fc.mean[0] == pytest.approx(0.4 * bw.bandwidth, rel=0.2)
    assert min(fc.mean) >= 0
    with pytest.raises(KeyError, match="no link"):
        tw.link_forecast("ddf-fatnode", "nowhere")
    with pytest.raises(KeyError, match="unknown site"):
        tw.forecast("nowhere")
    rep = tw.ingest([TelemetrySample(site="nowhere", timestamp=T0 + 100 * H)])
    assert rep.unknown_site == 1
    with pytest.raises(ModelError, match="no store"):
        tw.snapshot()


def test_degraded_site_is_flagged_in_the_ingest_report(demo_federation: Federation) -> None:
    tw = FederationTwin(demo_federation)
    tw.ingest(_samples(demo_federation, 72))
    bad = [
        TelemetrySample(
            site="gpu-centre", timestamp=T0 + (72 + k) * H, utilisation=0.0, backlog=5e8
        )
        for k in range(4)
    ]
    rep = tw.ingest(bad)
    assert rep.flagged.get("gpu-centre") in ("degraded", "down")
    assert tw.view(now=T0 + 75 * H)["gpu-centre"].status in (SiteStatus.DEGRADED, SiteStatus.DOWN)
    assert tw.view(now=T0 + 75 * H)["ddf-fatnode"].status is SiteStatus.STALE  # silent 4 h > 3 h


def test_autosave_lets_a_restarted_twin_resume(demo_federation: Federation, tmp_path: Path) -> None:
    db = tmp_path / "auto.db"
    a = FederationTwin(demo_federation, store=Store.at(db))
    a.ingest(_samples(demo_federation, 20))  # no explicit snapshot: autosave wrote it
    b = FederationTwin(demo_federation, store=Store.at(db))
    assert sorted(b.resumed) == sorted(demo_federation.site_ids)
    for sid in demo_federation.site_ids:
        assert b.sites[sid].t == a.sites[sid].t
        np.testing.assert_array_equal(np.asarray(b.sites[sid].x), np.asarray(a.sites[sid].x))
    off = FederationTwin(demo_federation, store=Store.at(tmp_path / "off.db"), autosave=False)
    off.ingest(_samples(demo_federation, 5))
    again = FederationTwin(demo_federation, store=Store.at(tmp_path / "off.db"))
    assert again.resumed == []
