"""The end-to-end main job: a planned workflow executed for real on this machine's sites.

``execute_locally`` gives every site of a federation its declared connector (a
bounded process pool in a directory of its own by default, a Slurm cluster for a
``connector: {kind: slurm}`` site, a Dask cluster) and its own buffer service on
loopback, runs the plan's assignment through the durable executor, moves data
between sites through the buffer services, keeps the twin informed (heartbeat
telemetry and the load dispatched; a Slurm site's scheduler readings), optionally
takes one local site down half-way, lets the twin flag any site that goes down
(a Slurm partition whose nodes are all down or drained included), re-plans the
unfinished part on the healthy sites, and returns what happened: the run's events
in words, the timeline, the fault-to-replan latency, and the bytes moved.

``write_report`` writes ``report.md`` with a planned-vs-actual Gantt PNG.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from federation.model import ConnectorKind, Federation, Site
from federation.store import Store
from orchestrator.connectors.base import SiteConnector
from orchestrator.connectors.local import LocalConnector
from orchestrator.connectors.slurm import SlurmConnector
from orchestrator.errors import OrchestratorError
from orchestrator.execution.buffers import BufferStager, LocalBufferServices
from orchestrator.execution.executor import Executor
from orchestrator.execution.launch import Launch
from orchestrator.execution.replan import PlannerReplanner
from orchestrator.execution.states import RunState, StepState
from orchestrator.execution.store import RunStore
from orchestrator.placement.plan import Plan, Planner
from orchestrator.workflow import Workflow
from twin.state import SiteStatus

if TYPE_CHECKING:
    from twin.federation_twin import FederationTwin


NOTABLE = ("fault", "replan", "run:running->done", "run:running->failed", "on-error")
"""Event kinds that the run's story (the report and the demo's log) tells."""


@dataclass
class Fault:
    """Take ``site`` down once ``after`` (a fraction) of the steps are done: its running tasks
    are killed and its pool refuses work (``LocalSites.crash``), and the twin finds out from
    the site's heartbeat like from any other failure.

    ``site=None`` picks, at that moment, the site with the most unfinished steps.
    """

    after: float = 0.5
    site: str | None = None


@dataclass
class StepTimeline:
    step: str
    site: str
    start: float
    end: float
    attempts: int


@dataclass
class ExecutionResult:
    run_id: str
    state: RunState
    wall_s: float
    timeline: list[StepTimeline]
    events: list[str]
    started_at: float = 0.0
    failed_site: str | None = None
    fault_at: float | None = None
    flagged_at: float | None = None
    replanned_at: float | None = None
    replanned_steps: list[str] = field(default_factory=list)
    bytes_moved: int = 0
    transfers: int = 0

    @property
    def fault_to_replan_s(self) -> float | None:
        if self.fault_at is None or self.replanned_at is None:
            return None
        return self.replanned_at - self.fault_at

    def summary(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "state": self.state.value,
            "wall_s": round(self.wall_s, 3),
            "steps": len(self.timeline),
            "failed_site": self.failed_site,
            "replanned_steps": self.replanned_steps,
            "fault_to_replan_s": self.fault_to_replan_s,
            "bytes_moved": self.bytes_moved,
            "transfers": self.transfers,
        }


@dataclass
class TwinWatch:
    """Feeds site heartbeats and dispatched load to the twin; reports newly flagged sites.

    Each tick sends one ``TelemetrySample`` per site: a Slurm site's comes from its
    scheduler (``twin.slurm_source``: utilisation, pending work, share in service, up),
    at most once per reading; any other site's has ``up`` from its heartbeat (``alive``: by
    default the connector's ``healthy()``; ``LocalSites.alive`` also checks that the site's
    buffer service process lives), other metrics missing (a local site cannot see the load
    of other users). It returns the sites the twin now calls down.
    """

    twin: FederationTwin
    connectors: Mapping[str, SiteConnector]
    clock: Callable[[], float]
    flagged: set[str] = field(default_factory=set)
    alive: Callable[[str], bool] | None = None

    def tick(self) -> dict[str, SiteStatus]:
        from twin.telemetry import TelemetrySample

        now = self.clock()
        alive = self.alive or (lambda site: self.connectors[site].healthy())
        samples: list[TelemetrySample] = []
        for site, conn in self.connectors.items():
            if isinstance(conn, SlurmConnector):
                samples += conn.source.poll(now)
            else:
                samples.append(TelemetrySample(site=site, timestamp=now, up=alive(site)))
        self.twin.ingest(samples)
        new: dict[str, SiteStatus] = {}
        for site, status in self.twin.status(now).items():
            if site in self.connectors and status is SiteStatus.DOWN and site not in self.flagged:
                self.flagged.add(site)
                new[site] = status
        return new


FEDERATION_FILE = "federation.json"
"""The federation a working directory's sites were made from (``resume_locally`` reads it)."""


def site_connector(site: Site, workdir: Path, slots: int = 2) -> SiteConnector:
    """The connector ``site`` declares (``Site.connector``), its files under ``workdir``.

    ``local``: a pool of ``slots`` processes; ``slurm``: batch jobs on the Slurm cluster of
    ``SLURM_CONF`` (its partition, account and time limit; time limits at the site's speed);
    ``dask``: a scheduler at ``address`` (default: a local cluster of ``slots`` workers).
    ``agent`` and ``simulated`` sites cannot run here (``OrchestratorError`` says where they
    run)."""
    spec = site.connector
    if spec.kind is ConnectorKind.LOCAL:
        return LocalConnector(site.id, workdir, slots=slots)
    if spec.kind is ConnectorKind.SLURM:
        return SlurmConnector(
            site.id,
            workdir,
            partition=spec.partition,
            account=spec.account,
            time_limit_s=spec.time_limit,
            speed=site.speed,
        )
    if spec.kind is ConnectorKind.DASK:
        from orchestrator.connectors.dask import DaskConnector

        return DaskConnector(site.id, workdir, address=spec.address, n_workers=slots)
    where = (
        "its steps are pulled by `continuum site-agent` through `continuum serve`"
        if spec.kind is ConnectorKind.AGENT
        else "simulated sites run in `continuum simulate`"
    )
    raise OrchestratorError(
        f"site {site.id} declares connector {spec.kind.value}: it cannot run steps here ({where})"
    )


@dataclass
class LocalSites:
    """Every site of ``federation`` under ``workdir``, through the connector it declares
    (``site_connector``: a bounded process pool by default), with a buffer service on
    loopback each, and the stager between them.

    A context manager: the buffer services (a process group each, see
    ``LocalBufferServices``) are stopped when the block ends, however it ends (Ctrl-C too).
    """

    federation: Federation
    workdir: Path
    slots: int = 2
    startup_timeout: float = 120.0
    connectors: dict[str, SiteConnector] = field(default_factory=dict)
    services: LocalBufferServices | None = None
    stager: BufferStager | None = None

    def __enter__(self) -> LocalSites:
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / FEDERATION_FILE).write_text(
            json.dumps(self.federation.to_dict(), indent=1), encoding="utf-8"
        )
        self.connectors = {}
        try:
            for s in self.federation.sites:
                self.connectors[s.id] = site_connector(s, self.workdir / s.id, self.slots)
        except Exception:
            self.__exit__()
            raise
        self.services = LocalBufferServices(
            self.workdir, list(self.connectors), startup_timeout=self.startup_timeout
        )
        endpoints = self.services.start()
        self.stager = BufferStager(endpoints, self.workdir)
        return self

    def __exit__(self, *exc: object) -> None:
        for conn in self.connectors.values():
            conn.close()
        if self.services is not None:
            self.services.stop()

    def alive(self, site: str) -> bool:
        """The site's heartbeat: its process pool takes work and its buffer service's process
        runs (a killed service is seen at once: its exit is reaped, no time-out waited)."""
        services = self.services
        return self.connectors[site].healthy() and (services is None or services.alive(site))

    def crash(self, site: str) -> None:
        """A drill's fault: SIGKILL the site's running tasks (its pool then refuses new work);
        the twin learns it from the heartbeat (``alive``). The site's buffer service stays
        up, so the outputs of steps finished there can still be staged to where the re-plan
        sends their consumers (re-running producers whose data died with their site is not
        done here). Killing the service itself (``services.kill``) is a fault the heartbeat
        sees too."""
        conn = self.connectors[site]
        if isinstance(conn, LocalConnector):
            conn.fail()

    def executor(self, runs: RunStore, replanner: PlannerReplanner) -> Executor:
        return Executor(
            runs,
            self.connectors,
            stager=self.stager,
            replanner=replanner,
            inputs_dir=self.workdir / "inputs",
            poll_interval=0.02,
        )


def execute_locally(
    workflow: Workflow,
    federation: Federation,
    plan: Plan | Mapping[str, str],
    workdir: Path,
    *,
    replanner_planner: Planner,
    launch: Launch | None = None,
    twin: FederationTwin | None = None,
    twin_epoch: float | None = None,
    fault: Fault | None = None,
    slots: int = 2,
    timeout: float = 600.0,
    startup_timeout: float = 120.0,
    project: str = "",
    progress: Callable[[int, int, str], None] | None = None,
) -> ExecutionResult:
    """Run a plan (or a step -> site assignment) for real on local sites (module docstring).

    ``launch`` says how the steps run (default: their own commands); it is stored with the run,
    so ``resume_locally`` resumes it the same way.
    """
    assignment = (
        {sid: a.site for sid, a in plan.assignments.items()}
        if isinstance(plan, Plan)
        else dict(plan)
    )
    with LocalSites(federation, workdir, slots, startup_timeout) as sites:
        runs = RunStore(Store.at(workdir / "state.db"))
        try:
            ex = sites.executor(runs, _replanner(federation, replanner_planner, twin, None))
            rid = ex.submit(
                workflow,
                assignment,
                max_attempts=3,
                backoff_s=0.2,
                launch=launch,
                project=project,
            )
            return drive(
                ex,
                rid,
                sites,
                twin=twin,
                twin_epoch=twin_epoch,
                fault=fault,
                timeout=timeout,
                progress=progress,
            )
        finally:
            runs.store.close()


def resume_locally(
    run_id: str,
    workdir: Path,
    *,
    replanner_planner: Planner,
    slots: int = 2,
    timeout: float = 600.0,
    startup_timeout: float = 120.0,
    progress: Callable[[int, int, str], None] | None = None,
) -> ExecutionResult:
    """Drive a run of ``workdir`` to its end after a crash or a pause: its sites come back
    (the same directories, new buffer services), a paused run is resumed, and the run goes on
    with the launch stored with it; tasks that finished meanwhile are picked up, none runs
    twice."""
    path = workdir / FEDERATION_FILE
    if not path.is_file():
        raise OrchestratorError(f"{workdir} holds no run's sites ({FEDERATION_FILE} is missing)")
    federation = Federation.from_dict(json.loads(path.read_text(encoding="utf-8")), str(path))
    with LocalSites(federation, workdir, slots, startup_timeout) as sites:
        runs = RunStore(Store.at(workdir / "state.db"))
        try:
            ex = sites.executor(runs, _replanner(federation, replanner_planner, None, None))
            if runs.run(run_id).state is RunState.PAUSED:
                ex.resume(run_id)
            return drive(ex, run_id, sites, timeout=timeout, progress=progress)
        finally:
            runs.store.close()


def _replanner(
    federation: Federation,
    planner: Planner,
    twin: FederationTwin | None,
    clock: Callable[[], float] | None,
) -> PlannerReplanner:
    if twin is None:
        return PlannerReplanner(federation, planner)
    now = clock or time.time
    return PlannerReplanner(federation, planner, view=lambda: twin.view(now()))


def drive(
    ex: Executor,
    rid: str,
    sites: LocalSites,
    *,
    twin: FederationTwin | None = None,
    twin_epoch: float | None = None,
    fault: Fault | None = None,
    timeout: float = 600.0,
    progress: Callable[[int, int, str], None] | None = None,
) -> ExecutionResult:
    """Reconcile run ``rid`` until it ends (or ``timeout``), feeding the twin and injecting
    ``fault``; what happened, as an ``ExecutionResult``."""
    runs = ex.runs
    workflow = runs.workflow(rid)
    start_wall = time.time()
    epoch = twin_epoch if twin_epoch is not None else start_wall

    def twin_clock() -> float:
        return epoch + (time.time() - start_wall)

    if twin is not None:
        assert sites.stager is not None
        sites.stager.on_record = _link_telemetry(twin, twin_clock)
        if isinstance(ex.replanner, PlannerReplanner):
            ex.replanner.view = lambda: twin.view(twin_clock())
    watch = TwinWatch(twin, sites.connectors, twin_clock, alive=sites.alive) if twin else None
    result = ExecutionResult(rid, RunState.RUNNING, 0.0, [], [], started_at=start_wall)
    deadline = time.monotonic() + timeout
    total = len(workflow.steps)
    dispatched: set[tuple[str, int]] = set()
    handled: set[str] = set()  # sites flagged down and dealt with
    state = RunState.RUNNING
    while state in (RunState.RUNNING, RunState.PAUSED) and time.monotonic() < deadline:
        state = ex.step_once(rid)
        steps = runs.steps(rid)
        done = sum(1 for r in steps.values() if r.state is StepState.DONE)
        if progress is not None:
            progress(done, total, f"{done}/{total} steps done")
        if state is RunState.PAUSED and not any(
            r.state in (StepState.STAGING, StepState.RUNNING) for r in steps.values()
        ):
            break  # nothing moves until someone resumes it
        if twin is not None:
            for sid, rec in steps.items():
                if rec.state is StepState.RUNNING and (sid, rec.attempts) not in dispatched:
                    dispatched.add((sid, rec.attempts))
                    step = workflow.step(sid)
                    twin.control(rec.site, cores=step.cores, work=step.work)
        if fault is not None and result.fault_at is None and done >= fault.after * total:
            victim = fault.site or _busiest(steps, sites.federation, _failable(sites.connectors))
            conn = sites.connectors.get(victim) if victim is not None else None
            if victim is not None and isinstance(conn, LocalConnector):
                sites.crash(victim)  # its tasks are killed; the twin sees the heartbeat
                result.failed_site, result.fault_at = victim, time.time()
                runs.log(rid, "fault", f"site {victim} went down after {done} of {total} steps")
        # Sites that went down, injected or not (a Slurm partition whose nodes are all down
        # or drained): the twin flags them from their telemetry, or, without a twin, their
        # connector says so; their unfinished steps are re-planned.
        if watch is not None:
            flagged = set(watch.tick())
        else:
            flagged = {s for s in sites.connectors if not sites.alive(s)}
        for site in sorted(flagged - handled):
            handled.add(site)
            now = time.time()
            if result.failed_site is None:  # nobody injected it: the site itself went down
                result.failed_site, result.fault_at = site, now
                runs.log(rid, "fault", f"site {site} went down after {done} of {total} steps")
            by = "the twin" if watch is not None else "the executor"
            moved = ex.site_down(rid, site, f"{by} flagged site down")
            if site == result.failed_site:
                result.flagged_at, result.replanned_at = now, time.time()
                result.replanned_steps = moved
        ex.wait(ex.poll_interval)  # wakes early when a task ends
    result.state = state
    result.wall_s = time.time() - start_wall
    steps = runs.steps(rid)
    result.timeline = [
        StepTimeline(
            sid,
            r.site,
            (r.started_at or start_wall) - start_wall,
            (r.ended_at or time.time()) - start_wall,
            r.attempts,
        )
        for sid, r in steps.items()
    ]
    result.events = [
        f"{at - start_wall:7.2f} s  {step + ': ' if step else ''}{kind}: {detail}"
        for at, step, kind, detail in runs.events(rid)
        if kind in NOTABLE or "failed" in kind or kind == "error"
    ]
    if sites.stager is not None:
        result.bytes_moved = sites.stager.bytes_moved
        result.transfers = len(sites.stager.records)
    return result


def _failable(connectors: Mapping[str, SiteConnector]) -> set[str]:
    """The sites a drill can take down (local ones: ``LocalConnector.fail``)."""
    return {s for s, c in connectors.items() if isinstance(c, LocalConnector)}


def _busiest(
    steps: Mapping[str, Any], federation: Federation, among: set[str] | None = None
) -> str | None:
    """The site with the most unfinished steps (of ``among``; ties: the federation's order)."""
    counts: dict[str, int] = {}
    for rec in steps.values():
        if rec.state is not StepState.DONE and (among is None or rec.site in among):
            counts[rec.site] = counts.get(rec.site, 0) + 1
    if not counts:
        return None
    order = {s: i for i, s in enumerate(federation.site_ids)}
    return max(counts, key=lambda s: (counts[s], -order.get(s, 0)))


def _link_telemetry(twin: FederationTwin, clock: Callable[[], float]) -> Callable[[Any], None]:
    from twin.telemetry import TelemetrySample

    def record(rec: Any) -> None:
        # Throughput measured by a finished transfer: an observation of the link.
        twin.ingest(
            [
                TelemetrySample(
                    site=rec.src_site, timestamp=clock(), links={rec.dst_site: rec.throughput}
                )
            ]
        )

    return record


def write_report(
    path: Path,
    workflow: Workflow,
    plan: Plan,
    result: ExecutionResult,
    extra_images: Mapping[str, str] | None = None,
    time_scale: float = 1.0,
) -> Path:
    """``report.md`` and ``gantt-planned-vs-actual.png`` in ``path`` (a folder).

    ``time_scale``: the launch's factor on step runtimes (``Launch.time_scale`` of a synthetic
    run), so the chart draws the actual run in the plan's time."""
    path.mkdir(parents=True, exist_ok=True)
    png = gantt_planned_vs_actual(
        path / "gantt-planned-vs-actual.png", plan, result, workflow, time_scale
    )
    m = plan.metrics
    lines = [
        f"# Run report: {workflow.name}",
        "",
        f"Run `{result.run_id}`: **{result.state.value}** in {result.wall_s:.1f} s of wall time "
        f"({len(result.timeline)} steps, {result.transfers} transfers through buffers, "
        f"{result.bytes_moved} bytes moved).",
        "",
        "## Plan",
        "",
        "| planner | makespan (s) | cost (EUR) | energy (kWh) | carbon (kgCO2e) | status | gap |",
        "|---|---|---|---|---|---|---|",
        f"| {m.planner} | {m.makespan_s:.1f} | {m.cost_eur:.4g} | {m.energy_kwh:.4g} "
        f"| {m.carbon_kg:.4g} | {m.status} | {'' if m.gap is None else f'{m.gap:.2%}'} |",
        "",
    ]
    if result.failed_site is not None:
        lines += [
            "## Fault and re-planning",
            "",
            f"Site `{result.failed_site}` went down during the run; the twin flagged it "
            f"and {len(result.replanned_steps)} unfinished step(s) were re-planned on healthy "
            f"sites: {', '.join(result.replanned_steps) or 'none'}.",
        ]
        if result.fault_to_replan_s is not None:
            lines.append(f"Fault to new plan dispatched: {result.fault_to_replan_s * 1000:.0f} ms.")
        lines.append("")
    lines += [
        "## Planned and actual",
        "",
        f"![planned vs actual]({png.name})",
        "",
    ]
    for title, image in (extra_images or {}).items():
        lines += [f"## {title}", "", f"![{title}]({image})", ""]
    lines += ["## Events", "", *(f"- {e}" for e in result.events), ""]
    out = path / "report.md"
    out.write_text("\n".join(lines), encoding="utf-8")
    return out


def gantt_planned_vs_actual(
    path: Path,
    plan: Plan,
    result: ExecutionResult,
    workflow: Workflow | None = None,
    time_scale: float = 1.0,
) -> Path:
    """Two panels on one time axis, in one unit: the plan, and what ran where.

    The planned panel is in the plan's seconds, the actual one in seconds of wall time from
    the run's start. ``time_scale`` (a synthetic launch's factor on runtimes) is stated in
    the actual panel's title: such steps run for a fraction of their planned time, and the
    rest of their bars is the real cost of starting them and moving their data. Steps are
    coloured by category (from ``workflow``) and labelled when they have room; a step that
    needed more than one attempt is hatched, one re-planned to another site has a red
    edge, and the fault (a site taken down) is a red line across the actual panel.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    from orchestrator.placement.gantt import (
        GanttBar,
        category_colours,
        draw_site_gantt,
        gantt_legend,
        time_unit,
        transfer_handle,
    )

    category = {s.id: s.category for s in workflow.steps} if workflow is not None else {}
    planned = [
        GanttBar(a.step, a.site, a.start, a.end, category.get(a.step, ""))
        for a in plan.assignments.values()
    ]
    moved = set(result.replanned_steps)
    actual = [
        GanttBar(
            t.step,
            t.site,
            t.start,
            t.end,
            category.get(t.step, ""),
            hatch=t.attempts > 1,
            moved=t.step in moved
            and plan.assignments.get(t.step) is not None
            and plan.assignments[t.step].site != t.site,
        )
        for t in result.timeline
    ]
    fault_t = result.fault_at - result.started_at if result.fault_at is not None else None
    transfers = plan.transfers
    sites = sorted(
        {b.site for b in planned + actual} | {t.src for t in transfers} | {t.dst for t in transfers}
    )
    colours = category_colours(b.category for b in planned)
    span = max([b.end for b in planned + actual] + [fault_t or 0.0, 1.0])
    unit = time_unit(span)
    rows = max(len(planned), len(actual))
    height = min(14.0, max(5.0, 0.2 * rows + 4.0))
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, height), sharex=True)
    draw_site_gantt(top, planned, sites, colours, unit, transfers, span)
    centres = draw_site_gantt(bottom, actual, sites, colours, unit, span_s=span)
    m = plan.metrics
    top.set_title(
        f"planned by {m.planner}: makespan {m.makespan_s / unit[0]:.3g} {unit[1]}, "
        f"{len(transfers)} transfer(s) between sites",
        fontsize=9,
    )
    scaled = (
        f"; steps ran for {time_scale:g} of their planned runtime, the rest of each bar is "
        "starting it and staging its data"
        if time_scale != 1.0
        else ""
    )
    bottom.set_title(
        f"actual: {result.state.value} in {result.wall_s:.1f} s of wall time{scaled}", fontsize=9
    )
    extra: list[tuple[Any, str]] = [(transfer_handle(), "transfer (source -> destination)")]
    if fault_t is not None:
        bottom.axvline(fault_t / unit[0], color="red", linewidth=1.5, zorder=5)
        where = centres.get(result.failed_site or "", 0.0)
        bottom.annotate(
            f" fault: {result.failed_site} down",
            (fault_t / unit[0], where),
            color="red",
            fontsize=8,
            fontweight="bold",
            va="center",
            zorder=6,
        )
        extra.append((Line2D([0], [0], color="red", lw=1.5), "fault (site taken down)"))
    if any(b.hatch for b in actual):
        extra.append((plt.Rectangle((0, 0), 1, 1, fc="0.8", hatch="///"), "retried step"))
    if any(b.moved for b in actual):
        extra.append((plt.Rectangle((0, 0), 1, 1, fc="0.8", ec="red"), "re-planned step"))
    bottom.set_xlabel(f"time from the start ({unit[1]}): plan time above, wall time below")
    gantt_legend(top, colours, extra)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
