"""Scenarios: a what-if experiment as a YAML document.

A scenario names the federation, the workload (an SWF trace, a synthetic
stream, WfCommons or native workflows), the hourly price and carbon series
per electricity zone, random failures, timed events, the routing of batch
jobs, the planners to compare and the seeds::

    name: price-spike
    federation: demo                  # "demo", a federation file, or an inline mapping
    start: 2023-01-01T00:00:00Z       # wall-clock time of simulated time 0 (series lookups)
    horizon: 3 d
    step: 1 h                         # one Mesa step = one reporting interval
    queue: easy                       # fcfs | easy
    routing: least-wait               # home | least-wait | greenest | cheapest
    workload:
      synthetic: {jobs: 2000, arrival_rate_per_h: 40, max_cores: 64, mean_runtime: 1 h}
      workflows: [{path: ../workflows/montage-chameleon-2mass-005d-001.json, submit_at: 2 h}]
    series:
      FR: {carbon: {file: FR_2023.csv, column: "Carbon Intensity gCO₂eq/kWh (LCA)"}}
      default: {price: {daily: {mean: 0.15, amplitude: 0.05, peak_hour: 19}}}
    failures: {mtbf: 20 d, mttr: 6 h}
    task_failures: {probability: 0.02}  # workflow tasks that fail (retried by the executor)
    events:
      - {at: 1 d, kind: price_spike, site: gpu-centre, factor: 2, duration: 12 h}
      - {at: 1 d, kind: outage, site: national-hpc, duration: 1 d}
      - {at: 2 d, kind: add_site, new_site: {id: cloud-2, kind: cloud, ...}}
      - {at: 0, kind: carbon_cap, limit: 120}
      - {at: 12 h, kind: load, factor: 1.5, duration: 6 h}
    planners: [heft]
    seeds: [1, 2]
    twin: true                        # telemetry feeds the real twin; its view drives routing


Relative paths are resolved against the scenario file's folder (``base_dir``).
A scenario given ``roots`` (the service sets them) may only read files inside
those folders: every path goes through ``federation.documents.user_path``
(``~`` expanded, symlinks followed, then compared), when the scenario is
validated and again when a file is opened.
``Scenario.with_overrides({"workload.load": 2})`` changes any field by its
dotted path (list items by index: ``events.0.factor``) and validates again:
this is what a sweep does.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from federation.documents import read_document, user_path
from federation.errors import InvalidInput, Problem, Problems, validate_document
from federation.model import (
    ID_PATTERN,
    Federation,
    Site,
    load_demo_federation,
    load_federation,
)
from federation.units import Seconds
from simulations.batch import QueuePolicy
from simulations.errors import InvalidScenario
from simulations.series import HourlySeries, parse_time, read_hourly_csv


def _time_text(value: Any) -> Any:
    """YAML reads an unquoted timestamp as a datetime: keep it as ISO 8601 text (UTC if naive)."""
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()
    return value


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)


class DailyProfile(_Frozen):
    """A 24-hour cosine profile: ``mean + amplitude * cos(2 pi (h - peak_hour) / 24)``."""

    mean: float = Field(ge=0)
    amplitude: float = Field(default=0.0, ge=0)
    peak_hour: float = Field(default=19.0, ge=0, lt=24)


class SeriesSpec(_Frozen):
    """Where an hourly series comes from: exactly one of ``file``, ``constant``, ``daily``."""

    file: str | None = None
    column: str | None = None
    time_column: str | None = None
    scale: float = Field(default=1.0, gt=0)
    constant: float | None = Field(default=None, ge=0)
    daily: DailyProfile | None = None

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        given = [k for k in ("file", "constant", "daily") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                f"give exactly one of file, constant, daily (got {', '.join(given) or 'none'})"
            )
        if self.file is not None and not self.column:
            raise ValueError("a series file needs the name of its value column in 'column'")
        return self

    def load(self, resolve: Callable[[str], Path], unit: str, name: str) -> HourlySeries:
        """The series; ``resolve`` turns the file's name into the path to read."""
        if self.constant is not None:
            return HourlySeries.constant(self.constant, unit, name)
        if self.daily is not None:
            d = self.daily
            return HourlySeries.daily(d.mean, d.amplitude, d.peak_hour, unit, name)
        # file and column are both set here (checked by the validator)
        return read_hourly_csv(
            resolve(str(self.file)), str(self.column), self.time_column, self.scale, unit
        )


class ZoneSeries(_Frozen):
    """The series of one electricity zone: power price (EUR/kWh), carbon (gCO2e/kWh)."""

    price: SeriesSpec | None = None
    carbon: SeriesSpec | None = None


class SwfSpec(_Frozen):
    """Jobs from a Parallel Workloads Archive log.

    ``jobs`` keeps the first N; ``copies`` replays that many independent
    copies, each shifted in time by a random offset (circularly, within the
    trace's span), to load a larger federation; ``speed`` is the per-core speed
    of the logged machine in reference cores (run times are scaled by
    ``speed / site.speed``).
    """

    path: str
    jobs: int | None = Field(default=None, gt=0)
    copies: int = Field(default=1, ge=1)
    speed: float = Field(default=1.0, gt=0)


class SyntheticSpec(_Frozen):
    """A self-contained job stream: Poisson arrivals, power-of-two sizes, log-normal run times.

    Sizes are ``2**k`` with ``k`` uniform on ``0..log2(max_cores)`` (parallel
    logs favour powers of two); run times are log-normal with mean
    ``mean_runtime`` and shape ``sigma``; each job's walltime request
    overestimates its run time by a factor uniform on ``[1, overestimate]``.
    """

    jobs: int = Field(gt=0)
    arrival_rate_per_h: float = Field(gt=0)
    max_cores: int = Field(default=64, ge=1)
    mean_runtime: Seconds = Field(default=3600.0, gt=0)
    sigma: float = Field(default=1.0, gt=0)
    overestimate: float = Field(default=3.0, ge=1.0)


class WorkflowSpec(_Frozen):
    """A workflow (WfFormat or native) submitted ``count`` times from ``submit_at``, ``every``.

    It runs as a user's run does on the service: ``project`` (a project of the federation)
    restricts its steps to the project's sites; ``max_attempts``, ``backoff`` (s before the
    first retry, doubling) and ``on_error`` (``cancel-job``, ``pause-task``, ``pause-job``,
    ``continue``) are the executor's retry and error policies of the run. ``assignment``
    (step id -> site) places the steps as given instead of asking the planner (a plan made
    beforehand); re-plans still use the planners.
    """

    path: str
    submit_at: Seconds = Field(default=0.0, ge=0)
    every: Seconds | None = Field(default=None, gt=0)
    count: int = Field(default=1, ge=1)
    deadline: Seconds | None = Field(default=None, gt=0, description="s after submission")
    objective: str = "time"
    project: str | None = None
    max_attempts: int = Field(default=3, ge=1)
    backoff: Seconds = Field(default=0.5, ge=0)
    on_error: Literal["cancel-job", "pause-task", "pause-job", "continue"] = "cancel-job"
    assignment: dict[str, str] | None = None


class WorkloadSpec(_Frozen):
    """What arrives: batch jobs (``swf`` or ``synthetic``) and workflows.

    ``load`` multiplies the job arrival rate: a synthetic stream gets ``load`` times as
    many jobs over the same span; an SWF trace's submit times are divided by it (the
    trace is compressed: within a horizon shorter than the trace, as many times more
    jobs arrive; a trace that fits in the horizon ends sooner).
    """

    swf: SwfSpec | None = None
    synthetic: SyntheticSpec | None = None
    workflows: tuple[WorkflowSpec, ...] = ()
    load: float = Field(default=1.0, gt=0)

    @model_validator(mode="after")
    def _something(self) -> Self:
        if self.swf is None and self.synthetic is None and not self.workflows:
            raise ValueError("a workload needs swf, synthetic or workflows")
        if self.swf is not None and self.synthetic is not None:
            raise ValueError("give either swf or synthetic jobs, not both")
        return self


class FailureSpec(_Frozen):
    """Random failures: exponential times between failures and to repair, per site."""

    mtbf: Seconds = Field(gt=0, description="mean time between failures")
    mttr: Seconds = Field(gt=0, description="mean time to repair")
    sites: tuple[str, ...] | None = None


class TaskFailureSpec(_Frozen):
    """Workflow tasks that fail: each ends with exit code 1 with this probability (at the
    end of its run), at ``sites`` (all sites when omitted)."""

    probability: float = Field(gt=0, le=1)
    sites: tuple[str, ...] | None = None


class EventKind(StrEnum):
    """What a timed scenario event does."""

    PRICE_SPIKE = "price_spike"
    OUTAGE = "outage"
    ADD_SITE = "add_site"
    CARBON_CAP = "carbon_cap"
    LOAD = "load"


_NEEDS: dict[EventKind, tuple[str, ...]] = {
    EventKind.PRICE_SPIKE: ("factor",),
    EventKind.OUTAGE: ("site", "duration"),
    EventKind.ADD_SITE: ("new_site",),
    EventKind.CARBON_CAP: ("limit",),
    EventKind.LOAD: ("factor",),
}


class EventSpec(_Frozen):
    """A timed change.

    ``price_spike``: multiply the power price of ``site`` (all sites when
    omitted) by ``factor`` for ``duration`` (to the end when omitted).
    ``outage``: ``site`` is down for ``duration``; running jobs are killed
    and requeued. ``add_site``: ``new_site`` (a site mapping) joins the
    federation. ``carbon_cap``: a site whose grid intensity exceeds ``limit``
    (gCO2e/kWh) starts no job, for ``duration`` (to the end when omitted).
    ``load``: multiply the job arrival rate by ``factor`` for ``duration``.
    """

    at: Seconds = Field(ge=0)
    kind: EventKind
    site: str | None = None
    factor: float | None = Field(default=None, gt=0)
    duration: Seconds | None = Field(default=None, gt=0)
    limit: float | None = Field(default=None, ge=0)
    new_site: Site | None = None

    @model_validator(mode="after")
    def _fields(self) -> Self:
        missing = [f for f in _NEEDS[self.kind] if getattr(self, f) is None]
        if missing:
            raise ValueError(f"the {self.kind.value} event needs {', '.join(missing)}")
        return self

    @property
    def end(self) -> float:
        return float("inf") if self.duration is None else self.at + self.duration


Routing = Literal["home", "least-wait", "greenest", "cheapest"]


class Scenario(_Frozen):
    """A what-if experiment (see the module docstring)."""

    name: str = Field(pattern=ID_PATTERN)
    description: str = ""
    federation: str | dict[str, Any] = "demo"
    start: Annotated[str, BeforeValidator(_time_text)] = "2023-01-01T00:00:00Z"
    horizon: Seconds = Field(gt=0)
    step: Seconds = Field(default=3600.0, gt=0)
    telemetry_interval: Seconds = Field(default=900.0, gt=0)
    view_interval: Seconds = Field(
        default=3600.0, gt=0, description="how often the broker asks the twin for its view"
    )
    queue: QueuePolicy = QueuePolicy.EASY
    scheduling_interval: Seconds = Field(
        default=0.0, ge=0, description="the batch scheduler runs every this many s (0: at once)"
    )
    routing: Routing = "least-wait"
    choices: int = Field(default=2, ge=1, description="candidate sites per routed job")
    workload: WorkloadSpec
    series: dict[str, ZoneSeries] = Field(default_factory=dict)
    failures: FailureSpec | None = None
    task_failures: TaskFailureSpec | None = None
    events: tuple[EventSpec, ...] = ()
    planners: tuple[str, ...] = ("heft",)
    seeds: tuple[int, ...] = (1,)
    twin: bool = True
    twin_mode: Literal["federation", "fleet"] = Field(
        default="federation",
        description="one SiteTwin per site, or one batched FleetTwin for many alike sites",
    )
    twin_control: bool = Field(
        default=False, description="tell the twin what the broker dispatched (its control input)"
    )
    twin_calibration: Seconds | None = Field(
        default=None,
        gt=0,
        description="fit the twins on a warm-up replay this long before the run (None: defaults)",
    )
    collect_sites: bool = True
    base_dir: str = Field(default=".", description="folder that relative paths start from")
    roots: tuple[str, ...] | None = Field(
        default=None,
        description="folders the scenario's files must lie in (None: anywhere); set by the service",
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        try:
            parse_time(self.start)
        except ValueError as exc:
            raise ValueError(f"start: {exc}") from None
        if not self.seeds:
            raise ValueError("seeds: give at least one seed")
        if not self.planners:
            raise ValueError("planners: name at least one planner")
        if self.roots is not None:
            problems = []
            for location, name in self.files():
                try:
                    self.path(name)
                except InvalidInput as exc:
                    problems += [Problem(location, p.message) for p in exc.problems]
            if problems:
                raise Problems(problems)
        return self

    def files(self) -> list[tuple[str, str]]:
        """Every file the scenario names: (field path, the name as written)."""
        out: list[tuple[str, str]] = []
        if isinstance(self.federation, str) and self.federation != "demo":
            out.append(("federation", self.federation))
        w = self.workload
        if w.swf is not None:
            out.append(("workload.swf.path", w.swf.path))
        out += [(f"workload.workflows[{i}].path", s.path) for i, s in enumerate(w.workflows)]
        for zone, zs in self.series.items():
            for what in ("price", "carbon"):
                spec = getattr(zs, what)
                if spec is not None and spec.file is not None:
                    out.append((f"series.{zone}.{what}.file", spec.file))
        return out

    # -- resolution ------------------------------------------------------------
    @property
    def base(self) -> Path:
        return Path(self.base_dir)

    @property
    def origin(self) -> float:
        """Unix time of simulated time 0."""
        return parse_time(self.start)

    def load_federation(self) -> Federation:
        """The scenario's federation ("demo", a file relative to the scenario, or inline)."""
        if isinstance(self.federation, dict):
            return Federation.from_dict(self.federation, source=f"scenario {self.name}")
        if self.federation == "demo":
            return load_demo_federation()
        return load_federation(self.path(self.federation))

    def zone_series(self, zone: str) -> tuple[HourlySeries | None, HourlySeries | None]:
        """(price, carbon) series for ``zone``: the zone's own, else ``default``, else None."""
        own = self.series.get(zone)
        default = self.series.get("default")
        out: list[HourlySeries | None] = []
        for what, unit in (("price", "EUR/kWh"), ("carbon", "gCO2e/kWh")):
            spec = getattr(own, what, None) if own else None
            if spec is None and default is not None:
                spec = getattr(default, what)
            out.append(spec.load(self.path, unit, f"{zone}:{what}") if spec else None)
        return out[0], out[1]

    def path(self, name: str) -> Path:
        """The file ``name`` (relative to ``base_dir``); ``InvalidScenario`` outside ``roots``."""
        return user_path(
            name,
            self.base,
            self.roots,
            source=f"scenario {self.name}",
            roots_name="the folders this scenario may read",
        )

    def with_overrides(self, overrides: Mapping[str, Any]) -> Scenario:
        """A copy with fields replaced by dotted path (``workload.load``, ``events.0.factor``).

        ``base_dir`` and ``roots`` say where files may be read: they cannot be overridden.
        """
        fixed = [k for k in overrides if k.split(".", 1)[0] in ("base_dir", "roots")]
        if fixed:
            raise InvalidScenario.single(
                "--sweep", fixed[0], "where a scenario reads its files cannot be overridden"
            )
        data = self.model_dump(mode="json", exclude_none=True)
        for key, value in overrides.items():
            set_path(data, key, value)
        return scenario_from_dict(data, f"scenario {self.name} with {dict(overrides)}")


def set_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``data[a][b][0]...`` from ``"a.b.0"``; ``InvalidScenario`` when the path is wrong."""
    parts = dotted.split(".")
    node: Any = data
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        where = ".".join(parts[: i + 1])
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise InvalidScenario.single(
                    "--sweep", dotted, f"{where}: no item {part} (the list has {len(node)})"
                )
            if last:
                node[int(part)] = value
            else:
                node = node[int(part)]
        elif isinstance(node, dict):
            if last:
                node[part] = value
            else:
                if part not in node or node[part] is None:
                    node[part] = {}
                node = node[part]
        else:
            raise InvalidScenario.single("--sweep", dotted, f"{where} is not a mapping or list")


def scenario_from_dict(
    data: Any,
    source: str = "<dict>",
    base_dir: str | None = None,
    roots: tuple[str, ...] | None = None,
) -> Scenario:
    """Validate a scenario mapping; ``InvalidScenario`` names the source and field paths.

    ``base_dir`` and ``roots`` replace whatever the mapping says: a service
    passes its own folder as both, so a scenario cannot name another.
    """
    if isinstance(data, Mapping) and base_dir is not None:
        data = {**data, "base_dir": base_dir}
    if isinstance(data, Mapping) and roots is not None:
        data = {**data, "roots": list(roots)}
    return validate_document(Scenario, copy.deepcopy(data), source, InvalidScenario, "scenario")


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario YAML file (relative paths start at its folder)."""
    p = Path(path)
    return scenario_from_dict(read_document(p), str(p), base_dir=str(p.parent.resolve()))
