"""The Mesa model: example scenarios, determinism, events, failures, energy accounting."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from simulations import FederationModel, InvalidScenario, load_scenario, scenario_from_dict

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples" / "scenarios").glob("*.yaml"))


def test_three_example_scenarios_exist() -> None:
    assert len(EXAMPLES) >= 3


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_runs_a_few_steps(path: Path) -> None:
    # as mesa's tests/test_examples.py: every example model runs a few steps with a fixed seed
    sc = load_scenario(path)
    model = FederationModel(sc, seed=42)
    for _ in range(6):
        model.step()
    frame = model.datacollector.get_model_vars_dataframe()
    assert len(frame) == 6
    assert frame["time_h"].iloc[-1] == pytest.approx(6 * sc.step / 3600)
    assert frame["jobs_done"].iloc[-1] > 0
    assert frame["energy_kwh"].is_monotonic_increasing


def _site(i: str, cores: int = 16, **extra: Any) -> dict[str, Any]:
    return {
        "id": i,
        "kind": "hpc",
        "cores": cores,
        "memory": "64 GB",
        "power_idle_w": 2.0,
        "power_busy_w": 10.0,
        "pue": 1.5,
        "price_per_core_hour": 0.01,
        "jurisdiction": "FR",
        "buffer_capacity": "1 TB",
        **extra,
    }


def _scenario(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "t",
        "federation": {"name": "f", "sites": [_site("a"), _site("b", grid_zone="DE")]},
        "horizon": "2 d",
        "routing": "least-wait",
        "workload": {
            "synthetic": {
                "jobs": 400,
                "arrival_rate_per_h": 12,
                "max_cores": 8,
                "mean_runtime": "1 h",
            }
        },
        "series": {
            "default": {"price": {"constant": 0.1}, "carbon": {"constant": 100}},
            "DE": {"carbon": {"constant": 400}},
        },
        "twin": False,
    }
    base.update(changes)
    return base


def _run(**changes: Any) -> FederationModel:
    return FederationModel(_scenario(**changes), seed=3).run()


def test_same_seed_same_run_and_other_seed_differs() -> None:
    a, b, c = _run().summary(), _run().summary(), FederationModel(_scenario(), seed=4).run()
    assert a == b
    assert c.summary()["mean_wait_s"] != a["mean_wait_s"]


def test_energy_cost_and_carbon_follow_the_power_model() -> None:
    m = _run()
    for s in m.sites:
        idle_j = s.site.power_idle_w * s.site.pue * s.site.cores * m.horizon
        busy_extra = (s.site.power_busy_w - s.site.power_idle_w) * s.site.pue * s.busy_core_s
        # P = (b busy + (n - b) idle) * PUE, integrated: idle everywhere + the busy surplus
        assert s.energy_j == pytest.approx(idle_j + busy_extra, rel=1e-9)
        kwh = s.energy_j / 3.6e6
        assert s.cost_eur == pytest.approx(kwh * 0.1, rel=1e-9)
        assert s.carbon_g == pytest.approx(kwh * (400 if s.site.id == "b" else 100), rel=1e-9)


def test_price_spike_scales_cost_only_inside_its_window() -> None:
    calm = _run(routing="home")
    spike = _run(
        routing="home",
        events=[
            {"at": "12 h", "kind": "price_spike", "site": "a", "factor": 3, "duration": "12 h"}
        ],
    )
    a0, a1 = calm.sites[0], spike.sites[0]
    assert a1.energy_j == pytest.approx(a0.energy_j)  # same jobs, same energy
    assert a1.cost_eur > a0.cost_eur * 1.3
    assert a1.cost_eur < a0.cost_eur * 3
    assert spike.sites[1].cost_eur == pytest.approx(calm.sites[1].cost_eur)
    assert a1.price_factor == 1.0  # restored after the window


def test_outage_kills_requeues_and_draws_no_power() -> None:
    m = FederationModel(
        _scenario(
            routing="home",
            horizon="5 d",
            events=[{"at": "6 h", "kind": "outage", "site": "a", "duration": "12 h"}],
        ),
        seed=3,
    )
    while m.now < 6 * 3600 + 1:
        m.step()
    a = m.sites[0]
    assert not a.is_up
    assert a.power_w == 0.0
    assert a.running == 0
    energy_at_down = a.energy_j
    while m.now < 17 * 3600:
        m.step()
    assert a.energy_j == energy_at_down
    m.run()
    assert a.is_up
    s = m.summary()
    assert s["jobs_done"] == s["jobs"]
    assert a.kills > 0
    assert s["jobs_killed"] == a.kills


def test_added_site_joins_and_gets_work() -> None:
    m = _run(
        events=[{"at": "1 d", "kind": "add_site", "new_site": _site("c", cores=64)}],
        workload={"synthetic": {"jobs": 900, "arrival_rate_per_h": 20, "max_cores": 8}},
    )
    assert [s.site.id for s in m.sites] == ["a", "b", "c"]
    assert "c" in m.federation.site_ids
    c = m.sites[2]
    assert c.jobs_done > 0
    starts = m.jobs.columns()["start"][m.jobs.columns()["site"] == 2]
    assert starts.min() >= 86400


def test_carbon_cap_holds_the_dirty_site() -> None:
    capped = _run(events=[{"at": 0, "kind": "carbon_cap", "limit": 200}])
    b = capped.sites[1]  # 400 gCO2e/kWh: above the cap for the whole run
    assert b.jobs_done == 0
    assert b.busy_core_s == 0
    free = _run()
    assert free.sites[1].jobs_done > 0
    assert capped.summary()["carbon_kg"] < free.summary()["carbon_kg"]


def test_load_event_multiplies_arrivals() -> None:
    m = _run(events=[{"at": "6 h", "kind": "load", "factor": 2.5, "duration": "12 h"}])
    base = _run()
    assert m.summary()["jobs"] > base.summary()["jobs"] + 100
    assert m.stream.load_factor == pytest.approx(1.0)


def test_random_failures_happen_and_are_repaired() -> None:
    m = _run(
        failures={"mtbf": "6 h", "mttr": "1 h"},
        events=[{"at": "12 h", "kind": "add_site", "new_site": _site("c")}],
    )
    assert sum(s.failures for s in m.sites) >= 4
    assert m.sites[2].failures >= 1  # a site that joins later fails too
    up = sum(s.up_core_s for s in m.sites)
    total = sum(s.site.cores for s in m.sites) * m.horizon
    assert 0.5 * total < up < total


def test_fcfs_waits_at_least_as_long_as_easy_on_average() -> None:
    heavy = {"synthetic": {"jobs": 600, "arrival_rate_per_h": 30, "max_cores": 16}}
    easy = _run(queue="easy", workload=heavy).summary()
    fcfs = _run(queue="fcfs", workload=heavy).summary()
    assert easy["mean_wait_s"] < fcfs["mean_wait_s"]


def test_twin_view_drives_the_broker() -> None:
    m = FederationModel(_scenario(twin=True, horizon="6 h", view_interval="30 min"), seed=1)
    m.run()
    assert m.twin is not None
    assert set(m.last_view) == {"a", "b"}
    assert all(st.power_price is None or st.power_price.mean[0] > 0 for st in m.last_view.values())
    assert len(m.telemetry) == 2 * (6 * 4 + 1)


def _routed_by_the_twin(
    monkeypatch: pytest.MonkeyPatch, alter: Callable[[dict[str, Any]], dict[str, Any]] | None
) -> list[int]:
    """Jobs routed to sites a and b by the greenest policy reading the twin's view, with the
    view changed by ``alter`` on its way out of the twin (the sites and their telemetry stay
    as they are: a at 100 gCO2e/kWh, b at 400)."""
    light = {"jobs": 60, "arrival_rate_per_h": 4, "max_cores": 4, "mean_runtime": "30 min"}
    sc = _scenario(
        twin=True,
        routing="greenest",
        choices=8,
        horizon="12 h",
        view_interval="30 min",
        workload={"synthetic": light},
    )
    m = FederationModel(sc, seed=1)
    assert m.twin is not None
    if alter is not None:
        twin_view = m.twin.view
        monkeypatch.setattr(
            m.twin, "view", lambda now, sites=None: alter(twin_view(now=now, sites=sites))
        )
    m.run()
    site = m.jobs.columns()["site"]
    return [int(np.sum(site == i)) for i in range(2)]


def test_routing_follows_the_twins_view(monkeypatch: pytest.MonkeyPatch) -> None:
    def swap_carbon(view: dict[str, Any]) -> dict[str, Any]:
        a, b = view["a"], view["b"]
        return {
            "a": a.model_copy(update={"carbon_intensity": b.carbon_intensity}),
            "b": b.model_copy(update={"carbon_intensity": a.carbon_intensity}),
        }

    def a_down(view: dict[str, Any]) -> dict[str, Any]:
        return {**view, "a": view["a"].model_copy(update={"status": "down"})}

    as_seen = _routed_by_the_twin(monkeypatch, None)
    assert as_seen[0] > 30
    assert as_seen[1] == 0  # every job to the greener site
    # the same sites and telemetry, the twin's view reversed: the jobs follow the view (a few
    # went out on the raw telemetry before the twin's first view)
    for alter in (swap_carbon, a_down):
        routed = _routed_by_the_twin(monkeypatch, alter)
        assert routed[1] > 30
        assert routed[0] <= 0.1 * sum(routed)


def test_scenario_errors_name_the_field(tmp_path: Path) -> None:
    bad = _scenario(events=[{"at": 0, "kind": "outage", "site": "a"}])
    with pytest.raises(InvalidScenario, match="needs duration"):
        scenario_from_dict(bad, "bad.yaml")
    with pytest.raises(InvalidScenario, match=r"events\.0\.faktor"):
        scenario_from_dict(_scenario(), "x").with_overrides({"events.0.faktor": 1})
    p = tmp_path / "s.yaml"
    p.write_text("name: x\nhorizon: 1 d\nworkload: {}\n")
    with pytest.raises(InvalidScenario, match=r"s\.yaml"):
        load_scenario(p)


def test_unknown_event_site_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown site 'zz'"):
        FederationModel(
            _scenario(events=[{"at": 0, "kind": "outage", "site": "zz", "duration": 10}])
        )


def test_job_table_is_consistent() -> None:
    m = _run()
    cols = m.jobs.columns()
    done = ~np.isnan(cols["end"])
    assert np.all(cols["start"][done] >= cols["submit"][done])
    assert np.all(cols["end"][done] >= cols["start"][done])
    assert set(np.unique(cols["site"][done])) <= {0, 1}


@pytest.mark.slow
def test_calibrated_twin_raises_fewer_false_alarms() -> None:
    # a healthy, busy federation: every verdict other than ok is a false alarm
    sc = _scenario(
        twin=True,
        horizon="1 d",
        federation={"name": "f", "sites": [_site("a", cores=64)]},
        workload={"synthetic": {"jobs": 800, "arrival_rate_per_h": 30, "max_cores": 32}},
    )

    def false_downs(**changes: Any) -> int:
        m = FederationModel({**sc, **changes}, seed=2)
        count = 0
        while m.running:
            m.step()
            assert m.twin is not None
            count += sum(v.value != "ok" for v in m.twin.status(m.origin + m.now).values())
        return count

    calibrated, default = false_downs(twin_calibration="1 d"), false_downs()
    assert calibrated < default


def test_scheduling_cycle_starts_jobs_only_on_ticks() -> None:
    m = _run(scheduling_interval="10 min")
    starts = m.jobs.columns()["start"]
    starts = starts[~np.isnan(starts)]
    assert starts.size > 100
    assert np.all(np.mod(starts, 600.0) == 0.0)
    assert m.summary()["mean_wait_s"] > _run().summary()["mean_wait_s"]


def test_twin_control_input_carries_the_dispatched_work() -> None:
    m = FederationModel(_scenario(twin=True, twin_control=True, horizon="2 h"), seed=1)
    seen: list[tuple[str, float]] = []
    assert m.twin is not None
    real = m.twin.control

    def spy(site_id: str, cores: float = 0.0, work: float = 0.0) -> None:
        seen.append((site_id, work))
        real(site_id, cores, work)

    m.twin.control = spy  # type: ignore[method-assign]
    m.run()
    sent = m.jobs.columns()
    routed = sent["submit"] <= m.now
    assert seen
    assert {s for s, _ in seen} <= {"a", "b"}
    # every core-second the broker queued reached the twin (bar the last interval's)
    assert sum(w for _, w in seen) <= float((sent["cores"] * sent["req"])[routed].sum()) + 1e-6
    assert sum(w for _, w in seen) > 0


def test_fleet_twin_mode_feeds_one_batched_twin() -> None:
    events = [{"at": "6 h", "kind": "outage", "site": "a", "duration": "6 h"}]
    m = FederationModel(
        _scenario(twin=True, twin_mode="fleet", horizon="1 d", view_interval="1 h", events=events),
        seed=1,
    )
    assert m.twin is None
    assert m.fleet is not None
    while m.now < 9 * 3600:
        m.step()
    assert m.fleet.fleet.t == pytest.approx(m.origin + m.now)
    view = m.last_view
    assert set(view) == {"a", "b"}
    assert view["a"].status == "down"  # its samples say so
    assert view["a"].health == 0.0
    # the carbon forecast follows the zone's series (100 and 400 gCO2e/kWh)
    assert view["a"].carbon_intensity is not None
    assert view["b"].carbon_intensity is not None
    assert view["b"].carbon_intensity.mean[0] > view["a"].carbon_intensity.mean[0]
    assert all(0 <= st.available_cores.mean[0] <= 16 for st in view.values())


def test_jobs_still_queued_at_the_horizon_count_with_their_wait_so_far() -> None:
    """A 16-core site busy for 10 h with one job; a second job queued behind it at 60 s
    is still waiting at the 2 h horizon: its wait so far (7,140 s) counts."""
    from simulations import JobTable

    sc = _scenario(horizon="2 h", federation={"name": "f", "sites": [_site("a")]}, routing="home")
    jobs = JobTable(
        np.array([0.0, 60.0]),
        np.array([36_000.0, 10.0]),
        np.array([36_000.0, 10.0]),
        np.array([16, 1]),
    )
    s = FederationModel(sc, seed=1, jobs=jobs).run().summary()
    assert (s["jobs_arrived"], s["jobs_done"], s["jobs_waiting"]) == (2, 0, 1)
    assert s["mean_wait_s"] == pytest.approx((0.0 + 7140.0) / 2)
    assert s["p95_wait_s"] > 6000
    assert s["mean_wait_started_s"] == 0.0
    assert s["max_site_utilisation"] == pytest.approx(1.0)
