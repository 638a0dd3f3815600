"""The model against bare reference loops: the same job starts and ends, the same event
order as mesa's own DEVSimulator, and the bulk power accounts against a stretch-by-stretch
integration."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mesa import Model
from mesa.experimental.devs import DEVSimulator
from mesa.experimental.devs.eventlist import Priority

from benchmarks.bench_simulations import bare_easy, bare_fcfs, federation_of, scale_scenario
from simulations import FederationModel, JobTable, scenario_from_dict
from simulations.events import TupleDEVSimulator

SITES, CORES = 3, 8

jobs_strategy = st.lists(
    st.tuples(
        st.integers(0, 2_000),  # submit
        st.integers(1, CORES),  # cores
        st.integers(1, 400),  # run
        st.integers(-50, 300),  # request - run (an underestimate overruns)
        st.integers(0, SITES - 1),  # site
    ),
    min_size=1,
    max_size=60,
)


def _table(jobs: list[tuple[int, int, int, int, int]]) -> JobTable:
    a = np.array(jobs, dtype=float)
    return JobTable(
        a[:, 0], a[:, 2], np.maximum(a[:, 2] + a[:, 3], 1.0), a[:, 1].astype(np.int64), pin=a[:, 4]
    )


def _model_starts(table: JobTable, queue: str) -> tuple[list[float], list[float]]:
    horizon = float(table.submit.max() + table.run.sum() + 10.0)
    sc = scenario_from_dict({**scale_scenario(horizon), "queue": queue, "step": 500.0}, "test")
    m = FederationModel(sc, seed=1, federation=federation_of(SITES, CORES), jobs=table).run()
    cols = m.jobs.columns()
    assert (cols["site"] == table.pin).all()
    return cols["start"].tolist(), cols["end"].tolist()


def _reference(table: JobTable, queue: str) -> list[float]:
    sub, run, req = table.submit.tolist(), table.run.tolist(), table.req.tolist()
    cores, site = table.cores.tolist(), table.pin.tolist()
    if queue == "fcfs":
        return bare_fcfs(SITES, sub, run, cores, CORES, site)
    return bare_easy(SITES, sub, run, req, cores, CORES, site)


@pytest.mark.parametrize("queue", ["fcfs", "easy"])
@settings(max_examples=40, deadline=None)
@given(jobs=jobs_strategy)
def test_model_starts_and_ends_jobs_as_the_bare_loop(
    queue: str, jobs: list[tuple[int, int, int, int, int]]
) -> None:
    table = _table(jobs)
    starts, ends = _model_starts(table, queue)
    assert starts == _reference(table, queue)
    assert ends == [s + r for s, r in zip(starts, table.run.tolist(), strict=True)]


def test_bare_loops_differ_where_backfilling_does() -> None:
    # 8 cores: job 0 holds 6 until 100, job 1 (8 cores) waits, job 2 (2 cores, 50 s) fits
    # before job 1's reservation: EASY starts it at 2, FCFS only after job 1
    table = _table([(0, 6, 100, 0, 0), (1, 8, 50, 0, 0), (2, 2, 50, 0, 0)])
    assert _reference(table, "easy") == [0.0, 100.0, 2.0]
    assert _reference(table, "fcfs") == [0.0, 100.0, 150.0]
    assert _model_starts(table, "easy")[0] == [0.0, 100.0, 2.0]


class _Recorder:
    def __init__(self) -> None:
        self.seen: list[int] = []

    def hit(self, k: int, _: object = None) -> None:
        self.seen.append(k)


def _order(sim_cls: type[DEVSimulator], plan: list[tuple[int, int, bool]]) -> list[int]:
    model = Model(seed=1)
    sim = sim_cls()
    sim.setup(model)
    rec = _Recorder()
    events = []
    for k, (t, prio, cancel) in enumerate(plan):
        priority = (Priority.HIGH, Priority.DEFAULT, Priority.LOW)[prio]
        events.append(sim.schedule_event_absolute(rec.hit, float(t), priority, [k]))
        if cancel:
            events[-1].cancel()
    sim.run_until(10.0)
    return rec.seen


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 12), st.integers(0, 2), st.booleans())))
def test_tuple_simulator_runs_events_in_mesas_order(plan: list[tuple[int, int, bool]]) -> None:
    assert _order(TupleDEVSimulator, plan) == _order(DEVSimulator, plan)


def test_call_at_keeps_the_order_of_scheduling_among_equal_times() -> None:
    model = Model(seed=1)
    sim = TupleDEVSimulator()
    sim.setup(model)
    rec = _Recorder()
    sim.call_at(5.0, rec.hit, 0, None)
    sim.schedule_event_absolute(rec.hit, 5.0, function_args=[1])
    sim.call_at(5.0, rec.hit, 2, None)
    sim.schedule_event_absolute(rec.hit, 5.0, Priority.HIGH, [3])
    sim.call_at(4.0, rec.hit, 4, None)
    sim.run_until(4.5)
    assert rec.seen == [4]
    assert sim.time == 4.5
    sim.run_until(6.0)
    assert rec.seen == [4, 3, 0, 1, 2]
    with pytest.raises(ValueError, match="past"):
        sim.schedule_event_absolute(rec.hit, 1.0)


def test_bulk_accounts_match_a_stretch_by_stretch_integration() -> None:
    """Energy, cost and carbon of every site, recomputed from the job table alone with the
    series' scalar integral, stretch by stretch (hourly prices and carbon, a price spike)."""
    rng = np.random.default_rng(5)
    n = 400
    table = JobTable(
        np.sort(rng.uniform(0, 3 * 86_400, n)),
        rng.uniform(60, 20_000, n),
        rng.uniform(60, 30_000, n),
        rng.integers(1, CORES + 1, n),
    )
    horizon = 6 * 86_400.0
    sc = scenario_from_dict(
        {
            **scale_scenario(horizon),
            "series": {
                "default": {
                    "price": {"daily": {"mean": 0.2, "amplitude": 0.15}},
                    "carbon": {"daily": {"mean": 300, "amplitude": 200, "peak_hour": 3}},
                }
            },
            "events": [{"at": "1 d", "kind": "price_spike", "factor": 3, "duration": "7 h"}],
        },
        "test",
    )
    m = FederationModel(sc, seed=2, federation=federation_of(SITES, CORES), jobs=table)
    price, carbon = m.sites[0].price, m.sites[0].carbon
    assert price.values.std() > 0
    assert carbon.values.std() > 0
    m.run()
    cols = m.jobs.columns()
    origin = m.origin
    spike = (86_400.0, 86_400.0 + 7 * 3600.0)
    for s in m.sites:
        mine = (cols["site"] == s.index) & ~np.isnan(cols["start"])
        ends = np.nan_to_num(cols["end"][mine], nan=horizon)  # still running at the horizon
        times = np.concatenate([cols["start"][mine], ends])
        delta = np.concatenate([cols["cores"][mine], -cols["cores"][mine]])
        cuts = sorted({0.0, horizon, *spike, *times.tolist()})
        energy = cost = co2 = 0.0
        for t0, t1 in itertools.pairwise(cuts):
            busy = int(delta[times <= t0].sum())
            p_w = (busy * 9.0 + (CORES - busy) * 2.0) * 1.3
            factor = 3.0 if spike[0] <= t0 < spike[1] else 1.0
            energy += p_w * (t1 - t0)
            cost += p_w / 3.6e6 * factor * price.integral(origin + t0, origin + t1)
            co2 += p_w / 3.6e6 * carbon.integral(origin + t0, origin + t1)
        assert s.energy_j == pytest.approx(energy, rel=1e-9)
        assert s.cost_eur == pytest.approx(cost, rel=1e-9)
        assert s.carbon_g == pytest.approx(co2, rel=1e-9)
        assert s.busy_core_s > 0
