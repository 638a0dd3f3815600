"""The agents of the federation model: sites, the job stream, the broker, workflow runs.

Time is event-driven (mesa's DEVS simulator): agents schedule their own bound
methods at the instants something happens (an arrival, a job end, a failure,
a repair), so idle stretches cost nothing. Mesa keeps only weak references to
scheduled callables: every event here is a bound method of a live agent,
never a lambda.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from typing import TYPE_CHECKING

import numpy as np
from mesa import Agent

from federation.model import Site
from simulations.batch import BatchQueue, Job, QueuePolicy
from simulations.series import HourlySeries
from twin import TelemetrySample

_EASY = QueuePolicy.EASY

if TYPE_CHECKING:
    from orchestrator.connectors import SimulatedConnector
    from simulations.model import FederationModel
    from simulations.workload import JobTable


class SiteAgent(Agent):
    """A compute site: a batch queue on its cores, a power model, failures and repairs.

    Power drawn from the grid, with ``b`` busy cores out of ``n`` (0 while down)::

        P = (b * power_busy_w + (n - b) * power_idle_w) * pue        [W]

    Between two changes of ``b`` the power is constant, so energy, its cost
    and its carbon over ``[t0, t1]`` are exact::

        E = P * (t1 - t0)                                           [J]
        cost   = P / 1000 * f * integral(price, t0, t1) / 3600      [EUR]   (f: price factor)
        carbon = P / 1000 * integral(carbon, t0, t1) / 3600         [gCO2e]
    """

    model: FederationModel

    def __init__(
        self,
        model: FederationModel,
        site: Site,
        index: int,
        price: HourlySeries,
        carbon: HourlySeries,
        policy: QueuePolicy,
    ) -> None:
        super().__init__(model)
        self.site = site
        self.index = index
        self.queue = BatchQueue(site.cores, policy)
        self.price = price
        self.carbon = carbon
        self.price_factor = 1.0
        self.down: set[str] = set()
        self.held = False
        self.jobs_done = 0
        self.kills = 0
        self.failures = 0
        self._p_busy = site.power_busy_w * site.pue
        self._p_idle = site.power_idle_w * site.pue
        self._speed = site.speed
        self._origin = model.origin
        self._cycle = model.scenario.scheduling_interval
        self._cycle_pending = False
        self.connector: SimulatedConnector | None = None
        """The executor's connector to this site (when the scenario runs workflows)."""

    # -- state -----------------------------------------------------------------
    @property
    def is_up(self) -> bool:
        return not self.down

    @property
    def status(self) -> str:
        return "down" if self.down else ("held" if self.held else "ok")

    @property
    def utilisation(self) -> float:
        return self.queue.busy / self.queue.capacity

    @property
    def power_w(self) -> float:
        if self.down:
            return 0.0
        b = self.queue.busy
        return b * self._p_busy + (self.queue.capacity - b) * self._p_idle

    @property
    def queued(self) -> int:
        return len(self.queue)

    @property
    def running(self) -> int:
        return len(self.queue.running)

    def price_now(self) -> float:
        return self.price.at(self._origin + self.model.now) * self.price_factor

    def carbon_now(self) -> float:
        return self.carbon.at(self._origin + self.model.now)

    def observations(self) -> dict[str, float | None]:
        """This site's observed metrics now, by the twin's block names (None: not observed)."""
        up = not self.down
        return {
            "utilisation": self.queue.busy / self.queue.capacity if up else None,
            "backlog": max(self.queue.backlog, 0.0),
            "power_price": self.price_now(),
            "carbon_intensity": self.carbon_now(),
        }

    def sample(self, stamp: float) -> TelemetrySample:
        """What this site reports to its twin at unix time ``stamp``."""
        up = not self.down
        return TelemetrySample(
            site=self.site.id,
            timestamp=stamp,
            utilisation=self.queue.busy / self.queue.capacity if up else None,
            backlog=max(self.queue.backlog, 0.0),
            power_price=self.price_now(),
            carbon_intensity=self.carbon_now(),
            up=up,
        )

    def account(self) -> None:
        """Integrate power, cost, carbon and busy core-seconds up to now (see the class doc).

        Every site's accounts are brought to now at once (``simulations.power``).
        """
        self.model.meter.flush(self.model.now)

    def _note(self) -> None:
        """The busy cores changed now: a new stretch of constant power starts."""
        meter = self.model.meter
        meter.note_site.append(self.index)
        meter.note_t.append(self.model.simulator.time)
        meter.note_busy.append(self.queue.capacity - self.queue.free)

    @property
    def energy_j(self) -> float:
        """Joules drawn so far (up to the model's last accounting: a step's end at least)."""
        return float(self.model.meter.energy_j[self.index])

    @property
    def cost_eur(self) -> float:
        return float(self.model.meter.cost_eur[self.index])

    @property
    def carbon_g(self) -> float:
        return float(self.model.meter.carbon_g[self.index])

    @property
    def busy_core_s(self) -> float:
        return float(self.model.meter.busy_core_s[self.index])

    @property
    def up_core_s(self) -> float:
        return float(self.model.meter.up_core_s[self.index])

    # -- jobs ------------------------------------------------------------------
    def duration(self, reference_seconds: float) -> float:
        """Seconds here for ``reference_seconds`` of a reference core's time."""
        return reference_seconds / self._speed

    def submit(self, job: Job) -> None:
        """Queue ``job`` (its ``run``/``req`` already in seconds at this site) and dispatch."""
        job.site = self.index
        q = self.queue
        if job.cores > q.capacity:  # q.submit, inlined
            raise ValueError(f"job needs {job.cores} cores, the site has {q.capacity}")
        q.queue.append(job)
        q.backlog += job.cores * job.req
        if self.down or self.held:
            return
        if self._cycle > 0.0:
            self.dispatch()
        elif q.queue[0].cores <= q.free or (q.policy is _EASY and q.free > 0 and len(q) > 1):
            self._start_jobs()  # (else the head waits and nothing could pass it)

    def dispatch(self) -> None:
        """Start what the queue policy allows now; schedule each started job's end.

        With a scheduling interval ``c`` (``scenario.scheduling_interval``), the
        scheduler runs only at multiples of ``c`` (as batch schedulers run in
        cycles): a dispatch between two cycles waits for the next one.
        """
        if self.down or self.held or not self.queue.queue:
            return
        cycle = self._cycle
        if cycle > 0.0:
            now = self.model.now
            tick = math.ceil(now / cycle) * cycle
            if tick > now:
                if not self._cycle_pending:
                    self._cycle_pending = True
                    self.model.simulator.schedule_event_absolute(self.on_cycle, tick)
                return
        self._start_jobs()

    def on_cycle(self) -> None:
        """A scheduling cycle: start what the policy allows."""
        self._cycle_pending = False
        if not self.down and not self.held and self.queue.queue:
            self._start_jobs()

    def _start_jobs(self) -> bool:
        """Start what the policy allows now; False if nothing started."""
        model = self.model
        now = model.simulator.time
        q = self.queue
        started = q.schedule(now)
        if not started:
            return False
        meter = model.meter  # _note, inlined
        meter.note_site.append(self.index)
        meter.note_t.append(now)
        meter.note_busy.append(q.capacity - q.free)
        call_at = model.simulator.call_at
        on_end = self.on_job_end
        index = self.index
        rows, at, where = model._started_rows, model._started_at, model._started_site
        for job in started:
            call_at(job.end, on_end, job, job.epoch)
            if job.owner is None:  # model.job_started, inlined
                rows.append(job.index)
                at.append(job.start)
                where.append(index)
            else:
                job.owner.job_started(job)
        return True

    def on_job_end(self, job: Job, epoch: int) -> None:
        """A job ends (ignored when the job was killed since this event was scheduled)."""
        if epoch != job.epoch:
            return
        q = self.queue
        q.changes += 1  # q.finish, inlined
        q.running.remove(job)
        q.free += job.cores
        self.jobs_done += 1
        if job.owner is None:  # model.job_finished, inlined
            model = self.model
            model._ended_rows.append(job.index)
            model._ended_at.append(job.end)
            model.jobs_done += 1
            model.waits_sum += job.start - job.submit
        else:
            job.owner.job_ended(job)
        if q.queue and not (self.down or self.held) and self._cycle <= 0.0:
            if (q.queue[0].cores <= q.free or q.policy is _EASY) and self._start_jobs():
                return  # noted there, after the cores this job freed
        elif q.queue:
            self.dispatch()
        self._note()

    def withdraw(self, job: Job) -> None:
        """Take a workflow step's job off this site (its task was cancelled or lost)."""
        if self.queue.withdraw(job):
            self._note()
            if not self.down:
                self.dispatch()

    # -- failures, outages, holds ------------------------------------------------
    def go_down(self, reason: str) -> None:
        """Stop the site (``reason``: failure or outage); running jobs are killed and requeued."""
        self.account()
        was_up = not self.down
        self.down.add(reason)
        if was_up:
            self.model.sync_jobs()  # the killed jobs' noted starts first
            killed = self.queue.kill_all()
            self._note()
            self.kills += len(killed)
            for job in killed:
                if job.owner is None:
                    self.model.jobs.kills[job.index] += 1
                    self.model.jobs.start[job.index] = math.nan
            if self.model.execution is not None:
                # workflow steps here are lost (the executor retries or re-plans them)
                self.model.execution.site_went_down(self)

    def go_up(self, reason: str) -> None:
        self.account()
        was_down = bool(self.down)
        self.down.discard(reason)
        if was_down and not self.down and self.model.execution is not None:
            self.model.execution.site_came_up(self)
        self.dispatch()

    def set_held(self, held: bool) -> None:
        """Hold (start no job, e.g. under a carbon cap) or release the site."""
        if held == self.held:
            return
        self.held = held
        if not held:
            self.dispatch()

    def set_price_factor(self, factor: float) -> None:
        self.account()
        self.price_factor = factor

    def arm_failures(self, mtbf: float, mttr: float) -> None:
        """Start the failure process: exponential times to failure and to repair."""
        self._mtbf, self._mttr = mtbf, mttr
        delay = self.model.random.expovariate(1.0 / mtbf)
        self.model.simulator.schedule_event_relative(self.fail, delay)

    def fail(self) -> None:
        self.failures += 1
        self.go_down("failure")
        self.model.simulator.schedule_event_relative(
            self.repair, self.model.random.expovariate(1.0 / self._mttr)
        )

    def repair(self) -> None:
        self.go_up("failure")
        self.model.simulator.schedule_event_relative(
            self.fail, self.model.random.expovariate(1.0 / self._mtbf)
        )


class JobStream(Agent):
    """Submits the batch jobs of a ``JobTable`` at their submit times, through the broker.

    One arrival event is pending at a time (the next distinct submit time), so
    the event list stays small however long the trace. ``load_factor`` (a load
    event) duplicates arrivals: each arrival becomes ``floor(f)`` jobs plus one
    more with probability ``f - floor(f)`` (``f < 1`` thins the stream).
    """

    model: FederationModel

    def __init__(self, model: FederationModel, jobs: JobTable) -> None:
        super().__init__(model)
        self.jobs = jobs
        self.next = 0
        self.load_factor = 1.0
        self.rejected = 0
        self._submit = jobs.submit[: jobs.arrivals].tolist()
        if self._submit:
            model.simulator.call_next(self._submit[0], self.on_arrival, None, None)

    def on_arrival(self, _a: object = None, _b: object = None) -> None:
        """The jobs submitted now arrive (scheduled with ``call_next``: two unused arguments),
        then the next ones, inline, as long as nothing else happens before them."""
        sim = self.model.simulator
        subs = self._submit
        n = len(subs)
        i = self.next
        route = self.model.broker.route
        rnd = self.model.random.random
        while True:
            now = sim.time
            f = self.load_factor
            while i < n and subs[i] <= now:
                if f == 1.0:
                    route(i)
                else:
                    copies = int(f) + (1 if rnd() < f - int(f) else 0)
                    for c in range(copies):
                        route(i if c == 0 else self.jobs.append_copy(i, now))
                i += 1
            self.next = i
            if i >= n:
                return
            if not sim.advance_inline(subs[i]):
                sim.call_next(subs[i], self.on_arrival, None, None)
                return


class Broker(Agent):
    """The orchestrator's job router: sends each batch job to a site.

    It sees the sites only through telemetry (refreshed every telemetry
    interval: queue backlog, price, carbon, status) plus what it has itself
    sent since. Policies: ``home`` (a random site, weighted by cores),
    ``least-wait`` (of ``choices`` random candidates that fit and are up, the
    one with the least estimated wait: the power of d choices, which avoids
    herding between telemetry refreshes), ``greenest`` and ``cheapest`` (the
    candidate with the lowest ``metric * (1 + wait / 1 h)``).
    """

    model: FederationModel

    def __init__(self, model: FederationModel, routing: str, choices: int) -> None:
        super().__init__(model)
        self.routing = routing
        self.choices = choices
        self.rebuild()

    def rebuild(self) -> None:
        """Index the sites again (after one joins)."""
        sites = self.model.sites
        self.order = sorted(range(len(sites)), key=lambda i: -sites[i].site.cores)
        self._neg_cores = [-sites[i].site.cores for i in self.order]
        self.wait = [0.0] * len(sites)
        self.metric = [0.0] * len(sites)
        self.up = [True] * len(sites)
        self.queued_work = [0.0] * len(sites)
        """Core-seconds sent to each site since the last telemetry (the twin's control input)."""
        self._cum = np.cumsum([s.site.cores for s in sites]).tolist()
        self._cols = self._columns()
        self._sites = sites
        self._sim = self.model.simulator
        self._random = self.model.random.random
        self._mode = {"home": 0, "least-wait": 1}.get(self.routing, 2)
        self.refresh()

    def refresh(self) -> None:
        """Take in the twin's latest view, or the raw telemetry without a twin.

        From the view: expected wait, status (down sites get no job), and the
        first slot of the price or carbon forecast (the site's nominal figure
        when its policy withholds it).
        """
        view = self.model.last_view
        sites = self.model.sites
        if not view:  # raw telemetry (no twin, or before its first view): the quick path
            self.wait = [s.queue.backlog / s.queue.capacity for s in sites]
            self.up = [not (s.down or s.held) for s in sites]
            if self.routing == "greenest":
                self.metric = [s.carbon_now() for s in sites]
            elif self.routing == "cheapest":
                self.metric = [s.price_now() for s in sites]
            return
        for s in sites:
            i = s.index
            st = view.get(s.site.id)
            if st is None:
                self.wait[i] = s.queue.backlog / s.queue.capacity
                self.up[i] = s.is_up and not s.held
                price, carbon = s.price_now(), s.carbon_now()
            else:
                self.wait[i] = st.expected_wait_s
                self.up[i] = st.status != "down" and not s.held
                # withheld and unknown: never preferred (the cost model's pessimistic rule)
                nominal = s.site.energy_price_eur_per_kwh
                price = st.power_price.mean[0] if st.power_price else _or_inf(nominal)
                carbon = (
                    st.carbon_intensity.mean[0]
                    if st.carbon_intensity
                    else _or_inf(s.site.carbon_intensity_g_per_kwh)
                )
            if self.routing == "greenest":
                self.metric[i] = carbon
            elif self.routing == "cheapest":
                self.metric[i] = price

    def _columns(self) -> tuple[list[int], list[int], list[float], list[float]]:
        """The job table's input columns as lists (read per job: faster than numpy items)."""
        jobs = self.model.jobs
        n = jobs.n
        return (
            jobs.cores[:n].tolist(),
            jobs.pin[:n].tolist(),
            jobs.run[:n].tolist(),
            jobs.req[:n].tolist(),
        )

    def route(self, row: int) -> None:
        """Send job ``row`` of the job table to a site."""
        cols = self._cols
        if row >= len(cols[0]):  # rows added since (a load event's copies)
            cols = self._cols = self._columns()
        cores = cols[0][row]
        n_fit = bisect_right(self._neg_cores, -cores)
        sites = self._sites
        pin = cols[1][row]
        if n_fit == 0 or (pin >= 0 and sites[pin].site.cores < cores):
            self.model.stream.rejected += 1
            return
        if pin >= 0:  # the job's own machine (a partition of a replayed log)
            pick = pin
        elif self._mode == 0:  # home
            pick = self._home(self._random(), cores)
        else:
            pick = -1
            best = math.inf
            order, up, wait = self.order, self.up, self.wait
            random = self._random
            for _ in range(self.choices):
                i = order[int(random() * n_fit)]
                if not up[i]:
                    continue
                score = wait[i]
                if self._mode == 2:  # greenest or cheapest
                    score = self.metric[i] * (1.0 + score / 3600.0)
                if score < best:
                    best, pick = score, i
            if pick < 0:
                pick = order[int(random() * n_fit)]
        site = sites[pick]
        speed = site._speed
        req = cols[3][row] / speed
        work = cores * req
        self.wait[pick] += work / site.queue.capacity
        self.queued_work[pick] += work
        site.submit(Job(row, cores, cols[2][row] / speed, req, self._sim.time))

    def _home(self, u: float, cores: int) -> int:
        cum = self._cum
        i = bisect_right(cum, u * cum[-1])
        i = min(i, len(cum) - 1)
        return i if self.model.sites[i].site.cores >= cores else self.order[0]


def _or_inf(value: float | None) -> float:
    return math.inf if value is None else value
