"""The Mesa 3 model of a federation under a scenario.

``FederationModel(scenario, seed=...)`` builds one ``SiteAgent`` per site
(each with its price and carbon series), a ``JobStream`` replaying the
scenario's batch jobs, a ``Broker`` routing them, ``WorkflowRun`` agents
placing workflows with the real planners and running them through the real
executor (``simulations.execution``), the scenario's timed events and
the failure processes, all on mesa's discrete-event simulator
(``mesa.experimental.devs.DEVSimulator``).

One ``model.step()`` advances simulated time by ``scenario.step`` seconds
(an hour by default) and collects ``self.datacollector``: model reporters
(cumulative energy, cost, carbon, jobs, waits...) every step, and per-site
series (utilisation, queue, power, status) as agent-type reporters when
``scenario.collect_sites``. ``batch_run`` and the sweeps drive it this way.
``model.run()`` runs to the horizon; ``summary()`` gives the run's figures.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np
from mesa import DataCollector, Model

from federation.model import Federation, Site
from simulations.agents import Broker, JobStream, SiteAgent
from simulations.batch import Job
from simulations.events import TupleDEVSimulator
from simulations.fleet import FleetTelemetry
from simulations.power import PowerMeter
from simulations.scenario import EventKind, EventSpec, Scenario, scenario_from_dict
from simulations.series import HourlySeries
from simulations.workload import JobTable, jobs_from_swf, synthetic_jobs
from twin import (
    AbstractSiteState,
    FederationTwin,
    SiteStatus,
    TelemetrySample,
    fit_sites,
)

if TYPE_CHECKING:
    from orchestrator.execution import RunStore
    from simulations.execution import WorkflowExecution


class FederationModel(Model):
    """A federation replaying a scenario (see the module docstring).

    ``scenario`` may be a ``Scenario`` or a mapping; ``overrides`` (dotted
    paths, as a sweep gives them: ``{"workload.load": 2}``) change it first;
    ``planner`` picks one of ``scenario.planners`` for the workflows;
    ``federation`` and ``jobs`` replace what the scenario names (the
    benchmarks build large federations in code); ``run_store`` is the store the
    executor of the workflows writes to (default: an in-memory SQLite store).
    """

    def __init__(
        self,
        scenario: Scenario | dict[str, Any],
        seed: int | None = None,
        planner: str | None = None,
        federation: Federation | None = None,
        jobs: JobTable | None = None,
        run_store: RunStore | None = None,
        **overrides: Any,
    ) -> None:
        sc = scenario if isinstance(scenario, Scenario) else scenario_from_dict(scenario)
        if overrides:
            sc = sc.with_overrides(overrides)
        super().__init__(seed=sc.seeds[0] if seed is None else seed)
        self.scenario = sc
        self.planner_name = planner or sc.planners[0]
        self.origin = sc.origin
        self.horizon = sc.horizon
        self.simulator = TupleDEVSimulator()
        self.simulator.setup(self)
        self.meter = PowerMeter()
        self.meter.origin = sc.origin
        self.federation = federation if federation is not None else sc.load_federation()
        self._series: dict[str, tuple[HourlySeries, HourlySeries]] = {}
        self.sites: list[SiteAgent] = []
        self._by_id: dict[str, SiteAgent] = {}
        for site in self.federation.sites:
            self._add_site(site)
        fleet = sc.twin and sc.twin_mode == "fleet"
        self.twin = self._make_twin() if sc.twin and not fleet else None
        self.fleet = FleetTelemetry(self.sites) if fleet else None
        self.last_view: dict[str, AbstractSiteState] = {}
        self.telemetry: list[TelemetrySample] = []
        self._view_at = -math.inf
        self._summary: dict[str, Any] | None = None
        self.jobs = jobs if jobs is not None else self._build_jobs()
        self.broker = Broker(self, sc.routing, sc.choices)
        self.stream = JobStream(self, self.jobs)
        self.workflow_runs: list[Any] = []
        self.execution: WorkflowExecution | None = None
        self.carbon_cap: float | None = None
        self._cap_armed = False
        self.waits_sum = 0.0
        self.jobs_done = 0
        # job starts and ends noted since the last ``sync_jobs`` (rows are unique between
        # two syncs: a site going down syncs before it marks its killed jobs)
        self._started_rows: list[int] = []
        self._started_at: list[float] = []
        self._started_site: list[int] = []
        self._ended_rows: list[int] = []
        self._ended_at: list[float] = []
        self._arm_failures()
        self._arm_events()
        self._arm_workflows(run_store)
        self.simulator.schedule_event_absolute(self.on_telemetry, 0.0)
        # collected after each step only: batch_run reads step k's data at index k - 1
        self.datacollector = self._collector()

    # -- construction ----------------------------------------------------------
    @property
    def now(self) -> float:
        """Simulated seconds since the start (simulated time 0 is ``scenario.start``)."""
        return float(self.simulator.time)

    @property
    def has_twin(self) -> bool:
        """Whether a twin (per-site or fleet) watches the sites."""
        return self.twin is not None or self.fleet is not None

    def _add_site(self, site: Site) -> SiteAgent:
        zone = site.zone
        if zone not in self._series:
            price, carbon = self.scenario.zone_series(zone)
            self._series[zone] = (
                price or _nominal(self.federation, site, "energy_price_eur_per_kwh", "EUR/kWh"),
                carbon
                or _nominal(self.federation, site, "carbon_intensity_g_per_kwh", "gCO2e/kWh"),
            )
        price, carbon = self._series[zone]
        agent = SiteAgent(self, site, len(self.sites), price, carbon, self.scenario.queue)
        self.sites.append(agent)
        self.meter.add(agent, self.now)
        self._by_id[site.id] = agent
        return agent

    def _make_twin(self) -> FederationTwin:
        """The real federation twin; calibrated on a warm-up replay when the scenario asks.

        With ``twin_calibration`` (seconds), the same scenario (without events or
        workflows, another seed) is first replayed for that long with the twin
        off; its telemetry, moved to just before time 0, is what an operator's
        history would be: ``twin.fit_sites`` fits every site's blocks on it by
        maximum likelihood, and the fitted twin ingests it to start warm. With
        the default parameters the twin's innovation test tends to flag busy
        batch sites as degraded or down (their utilisation moves faster than
        the default model allows).
        """
        calib = self.scenario.twin_calibration
        w = self.scenario.workload
        if calib is None or (w.swf is None and w.synthetic is None):
            return FederationTwin(self.federation, name="simulation")
        warm_sc = self.scenario.with_overrides(
            {
                "twin": False,
                "collect_sites": True,
                "horizon": calib,
                "events": [],
                "workload.workflows": [],
                "failures": None,
            }
        )
        warm = FederationModel(warm_sc, seed=self._seed + 7919, federation=self.federation)
        warm.run()
        history = [s.model_copy(update={"timestamp": s.timestamp - calib}) for s in warm.telemetry]
        fits = fit_sites(self.federation, history)
        twin = FederationTwin(
            self.federation,
            params={sid: f.blocks for sid, f in fits.items()},
            name="simulation",
        )
        twin.ingest(history)
        return twin

    def site_agent(self, site_id: str) -> SiteAgent:
        """The agent of site ``site_id``."""
        try:
            return self._by_id[site_id]
        except KeyError:
            raise KeyError(f"unknown site {site_id!r}; known: {', '.join(self._by_id)}") from None

    def _build_jobs(self) -> JobTable:
        w = self.scenario.workload
        if w.swf is not None:
            return jobs_from_swf(w.swf, self.scenario.path, w.load, self.rng)
        if w.synthetic is not None:
            return synthetic_jobs(w.synthetic, w.load, self.rng)
        empty = np.zeros(0)
        return JobTable(empty, empty, empty, empty.astype(np.int64))

    def _arm_failures(self) -> None:
        f = self.scenario.failures
        if f is None:
            return
        known = {s.site.id: s for s in self.sites}
        targets = self.sites if f.sites is None else [known[s] for s in f.sites if s in known]
        for s in targets:
            s.arm_failures(f.mtbf, f.mttr)

    def _arm_events(self) -> None:
        known = {s.site.id for s in self.sites}
        for i, ev in enumerate(self.scenario.events):
            if ev.site is not None and ev.kind is not EventKind.ADD_SITE and ev.site not in known:
                added = {e.new_site.id for e in self.scenario.events if e.new_site}
                if ev.site not in added:
                    raise ValueError(
                        f"events[{i}].site: unknown site {ev.site!r}; known: {', '.join(known)}"
                    )
            self.simulator.schedule_event_absolute(self.begin_event, ev.at, function_args=[i])
            if ev.duration is not None and ev.kind is not EventKind.ADD_SITE:
                self.simulator.schedule_event_absolute(
                    self.end_event, ev.at + ev.duration, function_args=[i]
                )

    def _arm_workflows(self, run_store: RunStore | None) -> None:
        if not self.scenario.workload.workflows:
            return
        from simulations.execution import WorkflowExecution
        from simulations.workflows import arm_workflows

        self.execution = WorkflowExecution(self, run_store)
        arm_workflows(self)

    def _collector(self) -> DataCollector:
        model_reporters = {
            "time_h": _time_h,
            "jobs_done": "jobs_done",
            "jobs_queued": _queued,
            "jobs_running": _running,
            "mean_wait_done_s": _mean_wait_done,
            "utilisation_now": _utilisation,
            "power_kw": _power_kw,
            "energy_kwh": _energy_kwh,
            "cost_eur": _cost_eur,
            "carbon_kg": _carbon_kg,
            "sites_up": _sites_up,
            "workflows_done": _workflows_done,
            "workflows_unfinished": _workflows_unfinished,
            "deadline_misses": _deadline_misses,
            **{key: partial(_final, key=key) for key in FINAL_REPORTERS},
        }
        site_reporters = {
            "site": _site_id,
            "utilisation": "utilisation",
            "queued": "queued",
            "running": "running",
            "power_kw": _site_power_kw,
            "status": "status",
        }
        return DataCollector(
            model_reporters=model_reporters,
            agenttype_reporters={SiteAgent: site_reporters} if self.scenario.collect_sites else {},
            tables={"workflows": list(WORKFLOW_COLUMNS)},
        )

    # -- events ----------------------------------------------------------------
    def _targets(self, ev: EventSpec) -> list[SiteAgent]:
        return [s for s in self.sites if ev.site is None or s.site.id == ev.site]

    def begin_event(self, i: int) -> None:
        """Scenario event ``i`` starts (scheduled as a bound method, never a lambda)."""
        ev = self.scenario.events[i]
        if ev.kind is EventKind.PRICE_SPIKE:
            for s in self._targets(ev):
                s.set_price_factor(s.price_factor * float(ev.factor or 1.0))
        elif ev.kind is EventKind.OUTAGE:
            for s in self._targets(ev):
                s.go_down("outage")
        elif ev.kind is EventKind.ADD_SITE and ev.new_site is not None:
            agent = self._add_site(ev.new_site)
            f = self.scenario.failures
            if f is not None and (f.sites is None or ev.new_site.id in f.sites):
                agent.arm_failures(f.mtbf, f.mttr)
            data = self.federation.to_dict()
            data["sites"].append(ev.new_site.model_dump(mode="json"))
            self.federation = Federation.from_dict(data, f"scenario {self.scenario.name}")
            self.broker.rebuild()
            if self.execution is not None:
                self.execution.attach(agent)
        elif ev.kind is EventKind.CARBON_CAP:
            self.carbon_cap = ev.limit
            if not self._cap_armed:
                self._cap_armed = True
                self.on_cap_tick()
        elif ev.kind is EventKind.LOAD:
            self.stream.load_factor *= float(ev.factor or 1.0)
        self.broker.refresh()

    def end_event(self, i: int) -> None:
        """Scenario event ``i`` ends (its ``duration`` is over)."""
        ev = self.scenario.events[i]
        if ev.kind is EventKind.PRICE_SPIKE:
            for s in self._targets(ev):
                s.set_price_factor(s.price_factor / float(ev.factor or 1.0))
        elif ev.kind is EventKind.OUTAGE:
            for s in self._targets(ev):
                s.go_up("outage")
        elif ev.kind is EventKind.CARBON_CAP:
            self.carbon_cap = None
            for s in self.sites:
                s.set_held(False)
        elif ev.kind is EventKind.LOAD:
            self.stream.load_factor /= float(ev.factor or 1.0)
        self.broker.refresh()

    def on_cap_tick(self) -> None:
        """Under a carbon cap: hold the sites above it, release the others; every hour."""
        if self.carbon_cap is None:
            self._cap_armed = False
            return
        cap = self.carbon_cap
        for s in self.sites:
            s.set_held(s.carbon_now() > cap)
        # the next full hour of the series clock
        t = self.origin + self.now
        nxt = (math.floor(t / 3600.0) + 1) * 3600.0 - self.origin
        self.simulator.schedule_event_absolute(self.on_cap_tick, nxt)

    def on_telemetry(self) -> None:
        """Every telemetry interval: the sites report to the twin; the broker reads its view.

        Each site sends a ``twin.TelemetrySample`` (utilisation, queue backlog in
        core-seconds, power price, carbon intensity, up/down); the broker's
        dispatches since the last samples go in as the twin's control input
        when ``scenario.twin_control`` (``FederationTwin.control``: core-seconds
        queued; off by default: on the site-outage example it raised the twin's
        down verdicts from 306 to 436 of 480 site-hours); the real
        ``FederationTwin`` ingests the batch and the broker takes the twin's
        abstracted view (expected wait, price and carbon forecasts, status).
        The view is taken every ``scenario.view_interval`` (a view costs about
        2.5 ms per site, an ingested sample 0.4 ms). With ``twin_mode: fleet``
        the samples go into one batched ``FleetTwin`` instead
        (``simulations.fleet``). Without a twin
        (``scenario.twin: false``, for the largest runs) the broker reads the
        sites' raw telemetry instead.
        """
        stamp = self.origin + self.now
        if self.fleet is not None:
            self.fleet.tick(stamp)
            if self.now - self._view_at >= self.scenario.view_interval:
                self.last_view = self.view()
                self._view_at = self.now
        if self.twin is not None or self.scenario.collect_sites:
            samples = [s.sample(stamp) for s in self.sites]
            if self.scenario.collect_sites:
                self.telemetry.extend(samples)
            if self.twin is not None:
                if self.scenario.twin_control:
                    # what the broker queued since the last samples: the twin's control input
                    queued = self.broker.queued_work
                    for s in self.sites:
                        if queued[s.index] > 0.0 and s.site.id in self.twin.sites:
                            self.twin.control(s.site.id, 0.0, queued[s.index])
                self.twin.ingest(samples)
                due = self.now - self._view_at >= self.scenario.view_interval
                if due and self.scenario.routing != "home":
                    self.last_view = self.view()
                    self._view_at = self.now
        ex = self.execution
        if ex is not None and (ex.live or ex.flagged or ex.executor.down_sites):
            ex.on_statuses(self.sites_called_down(stamp))
        self.broker.queued_work = [0.0] * len(self.sites)
        self.broker.refresh()
        nxt = self.now + self.scenario.telemetry_interval
        if nxt <= self.horizon:
            self.simulator.schedule_event_absolute(self.on_telemetry, nxt)

    def sites_called_down(self, stamp: float) -> set[str]:
        """The sites the twin calls down at unix time ``stamp`` (its flags for the executor)."""
        if self.fleet is not None:
            return self.fleet.down()
        if self.twin is None:
            return {s.site.id for s in self.sites if s.down}
        return {sid for sid, st in self.twin.status(stamp).items() if st is SiteStatus.DOWN}

    def view(self, sites: Collection[str] | None = None) -> dict[str, AbstractSiteState]:
        """The planners' view now: the twin's, or the sites' static figures without a twin.

        A site that joined during the run (unknown to the twin) is shown from
        its static figures. ``sites`` limits the view to those (a workflow restricted to
        a project's sites is planned on theirs: at 1,000 sites a whole view costs more
        than the plan).
        """
        stamp = self.origin + self.now
        view: dict[str, AbstractSiteState] = {}
        if self.fleet is not None:
            view = self.fleet.view(stamp, sites=sites)
        elif self.twin is not None:
            view = self.twin.view(now=stamp, sites=sites)
        for site in self.federation.sites:
            if site.id not in view and (sites is None or site.id in sites):
                view[site.id] = AbstractSiteState.static(site, issued_at=stamp)
        return view

    # -- job results ------------------------------------------------------------
    def job_started(self, job: Job, site: int) -> None:
        """Batch job ``job`` started at site ``site`` (noted; the job table gets it at
        ``sync_jobs``)."""
        self._started_rows.append(job.index)
        self._started_at.append(job.start)
        self._started_site.append(site)

    def job_finished(self, job: Job) -> None:
        """Batch job ``job`` ended (noted as ``job_started``)."""
        self._ended_rows.append(job.index)
        self._ended_at.append(job.end)
        self.jobs_done += 1
        self.waits_sum += job.start - job.submit

    def sync_jobs(self) -> None:
        """Write the starts and ends noted since the last call into the job table (in bulk:
        numpy item writes one by one cost more than the rest of a job's handling)."""
        jobs = self.jobs
        if self._started_rows:
            rows = np.asarray(self._started_rows, dtype=np.intp)
            jobs.start[rows] = self._started_at
            jobs.site[rows] = self._started_site
            self._started_rows.clear()
            self._started_at.clear()
            self._started_site.clear()
        if self._ended_rows:
            jobs.end[np.asarray(self._ended_rows, dtype=np.intp)] = self._ended_at
            self._ended_rows.clear()
            self._ended_at.clear()

    # -- running -----------------------------------------------------------------
    def step(self) -> None:
        """Advance one reporting interval of simulated time and collect the data."""
        end = min(self.now + self.scenario.step, self.horizon)
        self.simulator.run_until(end)
        self.meter.flush(self.now)
        self.sync_jobs()
        if self.now >= self.horizon:
            self.finish()
        self.datacollector.collect(self)

    def finish(self) -> None:
        """Close the accounts at the horizon and stop; runs still going are unfinished."""
        self.meter.flush(self.now)
        if self.execution is not None:
            self.execution.finish()
        for r in self.workflow_runs:
            if r.status == "pending":  # submitted at the very horizon: never planned
                r.status = "unfinished"
                r._record()
        self.running = False

    def run(self, progress: Any = None) -> FederationModel:
        """Step to the horizon; ``progress(fraction)`` is called after each step."""
        while self.running:
            self.step()
            if progress is not None:
                progress(min(self.now / self.horizon, 1.0))
        return self

    # -- results -----------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """The run's figures: waits, makespan, energy, cost, carbon, utilisation, misses.

        Waits are over every job that arrived (``jobs_arrived``): a job still waiting at
        the end (``jobs_waiting``) counts with its wait so far, so the figures are lower
        bounds of the waits of every arrived job, and the jobs stuck longest in a queue are
        never left out (leaving them out made waits fall as load grew);
        ``mean_wait_started_s`` is the mean over the jobs that started. ``utilisation`` is
        busy core-seconds over core-seconds up, for the whole run and every site together;
        ``max_site_utilisation`` is the busiest site's (a low average can hide a saturated
        site, whose queue makes the long waits).
        """
        if not self.running and self._summary is not None:
            return self._summary
        self.sync_jobs()
        cols = self.jobs.columns()
        done = ~np.isnan(cols["end"])
        now = self.now
        arrived = cols["submit"] <= now
        started = ~np.isnan(cols["start"])
        waits = np.where(started, cols["start"], now) - cols["submit"]
        wait = waits[arrived]
        started_wait = waits[arrived & started]
        run = cols["end"][done] - cols["start"][done]
        done_wait = cols["wait"][done]
        # bounded slowdown with the usual 10 s threshold
        bsld = np.maximum((done_wait + run) / np.maximum(run, 10.0), 1.0)
        meter = self.meter
        energy_kwh = float(meter.energy_j.sum()) / 3.6e6
        up = float(meter.up_core_s.sum())
        busy_s, up_s = meter.busy_core_s.tolist(), meter.up_core_s.tolist()
        wf = [r.result() for r in self.workflow_runs]
        makespans = [r["makespan_s"] for r in wf if r["makespan_s"] is not None]
        status = [r["status"] for r in wf]
        out: dict[str, Any] = {
            "scenario": self.scenario.name,
            "planner": self.planner_name,
            "seed": self._seed,
            "sites": len(self.sites),
            "simulated_s": self.now,
            "jobs": int(cols["submit"].size),
            "jobs_arrived": int(arrived.sum()),
            "jobs_done": int(done.sum()),
            "jobs_waiting": int((arrived & ~started).sum()),
            "jobs_rejected": self.stream.rejected,
            "jobs_killed": int(cols["kills"].sum()),
            "mean_wait_s": float(wait.mean()) if wait.size else 0.0,
            "median_wait_s": float(np.median(wait)) if wait.size else 0.0,
            "p95_wait_s": float(np.percentile(wait, 95)) if wait.size else 0.0,
            "mean_wait_started_s": float(started_wait.mean()) if started_wait.size else 0.0,
            "mean_bounded_slowdown": float(bsld.mean()) if bsld.size else 0.0,
            "jobs_makespan_s": float(cols["end"][done].max() - cols["submit"].min())
            if done.any()
            else 0.0,
            "energy_kwh": energy_kwh,
            "cost_eur": float(meter.cost_eur.sum()),
            "carbon_kg": float(meter.carbon_g.sum()) / 1000.0,
            "utilisation": float(meter.busy_core_s.sum()) / up if up else 0.0,
            "max_site_utilisation": max(
                (b / u for b, u in zip(busy_s, up_s, strict=True) if u), default=0.0
            ),
            "failures": sum(s.failures for s in self.sites),
            "workflows": len(wf),
            "workflows_done": status.count("done"),
            "workflows_failed": status.count("failed"),
            "workflows_unplanned": status.count("unplanned"),
            "workflows_unfinished": len(wf)
            - sum(status.count(k) for k in ("done", "failed", "unplanned")),
            "workflow_mean_makespan_s": float(np.mean(makespans)) if makespans else None,
            "deadline_misses": sum(1 for r in wf if r["deadline_missed"]),
            "workflow_attempts": sum(r["attempts"] for r in wf),
            "workflow_replans": sum(r["replans"] for r in wf),
            "workflow_transfers": sum(r["transfers"] for r in wf),
        }
        if not self.running:
            self._summary = out
        return out

    def site_table(self) -> list[dict[str, Any]]:
        """Per-site totals: utilisation, energy, cost, carbon, jobs, failures."""
        return [
            {
                "site": s.site.id,
                "cores": s.site.cores,
                "utilisation": s.busy_core_s / s.up_core_s if s.up_core_s else 0.0,
                "energy_kwh": s.energy_j / 3.6e6,
                "cost_eur": s.cost_eur,
                "carbon_kg": s.carbon_g / 1000.0,
                "jobs_done": s.jobs_done,
                "jobs_killed": s.kills,
                "failures": s.failures,
            }
            for s in self.sites
        ]


WORKFLOW_COLUMNS = (
    "workflow",
    "instance",
    "planner",
    "status",
    "submitted_s",
    "planned_makespan_s",
    "makespan_s",
    "deadline_s",
    "deadline_missed",
    "outcome",
    "error",
    "sites_used",
    "attempts",
    "replans",
    "steps_moved",
    "transfers",
    "bytes_moved",
)
"""One row per workflow run: ``status`` is done, failed, unplanned or unfinished
(``simulations.workflows``), ``outcome`` says the same in words (``WorkflowRun.outcome``);
``deadline_missed`` is known for done runs only."""


# Reporters are module-level functions (picklable for batch_run's process pool).
FINAL_REPORTERS = (
    "jobs_waiting",
    "mean_wait_s",
    "median_wait_s",
    "p95_wait_s",
    "mean_wait_started_s",
    "mean_bounded_slowdown",
    "jobs_makespan_s",
    "utilisation",
    "max_site_utilisation",
    "workflow_mean_makespan_s",
    "workflows_failed",
    "workflows_unplanned",
)
"""Summary figures reported once the run is over (NaN before): what ``batch_run`` keeps."""


def _final(m: FederationModel, key: str) -> Any:
    return math.nan if m.running else m.summary()[key]


def _time_h(m: FederationModel) -> float:
    return m.now / 3600.0


def _queued(m: FederationModel) -> int:
    return sum(len(s.queue) for s in m.sites)


def _running(m: FederationModel) -> int:
    return sum(len(s.queue.running) for s in m.sites)


def _mean_wait_done(m: FederationModel) -> float:
    """Mean wait of the jobs done so far (the summary's ``mean_wait_s`` counts every job
    that arrived, those still queued too: a different figure, hence a different name)."""
    return m.waits_sum / m.jobs_done if m.jobs_done else 0.0


def _utilisation(m: FederationModel) -> float:
    cap = sum(s.queue.capacity for s in m.sites if s.is_up)
    return sum(s.queue.busy for s in m.sites if s.is_up) / cap if cap else 0.0


def _power_kw(m: FederationModel) -> float:
    return sum(s.power_w for s in m.sites) / 1000.0


def _energy_kwh(m: FederationModel) -> float:
    return float(m.meter.energy_j.sum()) / 3.6e6


def _cost_eur(m: FederationModel) -> float:
    return float(m.meter.cost_eur.sum())


def _carbon_kg(m: FederationModel) -> float:
    return float(m.meter.carbon_g.sum()) / 1000.0


def _sites_up(m: FederationModel) -> int:
    return sum(1 for s in m.sites if s.is_up)


def _workflows_done(m: FederationModel) -> int:
    return sum(1 for r in m.workflow_runs if r.finished_at is not None)


def _deadline_misses(m: FederationModel) -> int:
    return sum(1 for r in m.workflow_runs if r.result()["deadline_missed"])


def _workflows_unfinished(m: FederationModel) -> int:
    """Runs submitted and not ended (so far; at the end: cut short by the horizon)."""
    return sum(1 for r in m.workflow_runs if r.status in ("running", "unfinished"))


def _site_id(a: SiteAgent) -> str:
    return a.site.id


def _site_power_kw(a: SiteAgent) -> float:
    return a.power_w / 1000.0


def _nominal(federation: Federation, site: Site, field: str, unit: str) -> HourlySeries:
    """The site's nominal figure as a constant series. An unknown one (None) is the highest
    known in the federation, else 0: the placement cost model's rule."""
    value = getattr(site, field)
    if value is None:
        known = [v for s in federation.sites if (v := getattr(s, field)) is not None]
        value = max(known, default=0.0)
    return HourlySeries.constant(value, unit)
