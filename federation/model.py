"""The federation as data: sites, links, organisations and projects.

Everything here is pure, immutable data validated once when it is loaded
(pydantic v2, ``frozen=True``). Units are SI: bytes, bytes per second,
seconds, watts, euros. The YAML loader accepts quantities with units
(``396 GB``, ``137.9 MB/s``, ``12 ms``) and converts them.

A federation file looks like::

    name: demo
    sites:
      - id: fatnode
        kind: hpc
        cores: 120
        memory: 396 GB
        speed: 2.4               # per-core speed, in reference cores (1 GHz)
        power_idle_w: 2.0         # per core
        power_busy_w: 9.0         # per core
        pue: 1.4
        price_per_core_hour: 0.02 # EUR
        jurisdiction: FR
        buffer_capacity: 2 TB
        connector: {kind: slurm, partition: debug}   # default: local
    links:
      - {src: fatnode, dst: cloud, bandwidth: 137.9 MB/s, latency: 20 ms, symmetric: true}
    organisations:
      - id: lofar
        projects: [{id: ddf, sites: [fatnode]}]
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    model_validator,
)

from federation.documents import read_document
from federation.errors import InvalidFederation, Problem, Problems, validate_document
from federation.jurisdictions import check_jurisdiction
from federation.units import Bytes, BytesPerSecond, Seconds

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$"
"""Identifiers of sites, organisations and projects: no spaces, no slashes."""

Identifier = Annotated[str, Field(pattern=ID_PATTERN, min_length=1, max_length=128)]
Jurisdiction = Annotated[str, AfterValidator(check_jurisdiction)]


class _Frozen(BaseModel):
    model_config = ConfigDict(
        frozen=True, extra="forbid", str_strip_whitespace=True, allow_inf_nan=False
    )


class SiteKind(StrEnum):
    """What kind of infrastructure a site is."""

    HPC = "hpc"
    CLOUD = "cloud"
    EDGE = "edge"


class ConnectorKind(StrEnum):
    """How the orchestrator runs a site's steps (``orchestrator.connectors``)."""

    LOCAL = "local"
    DASK = "dask"
    AGENT = "agent"
    SIMULATED = "simulated"
    SLURM = "slurm"


SLURM_ONLY = ("partition", "account", "time_limit")


class ConnectorSpec(_Frozen):
    """A site's connector: ``{kind: slurm, partition: debug}`` (``kind`` alone may be given
    as a string: ``connector: slurm``). ``partition``, ``account`` and ``time_limit`` are
    Slurm's (the batch queue, the account charged, the longest time a step is given);
    ``address`` is a Dask scheduler's (default: a local cluster)."""

    kind: ConnectorKind = ConnectorKind.LOCAL
    partition: Identifier | None = None
    account: Identifier | None = None
    time_limit: Seconds | None = Field(
        default=None, gt=0, description="longest time limit of a step's job, seconds"
    )
    address: str | None = Field(default=None, min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _kind_alone(cls, data: Any) -> Any:
        return {"kind": data} if isinstance(data, str) else data

    @model_validator(mode="after")
    def _options_of_the_kind(self) -> Self:
        if self.kind is not ConnectorKind.SLURM:
            for name in SLURM_ONLY:
                if getattr(self, name) is not None:
                    raise ValueError(f"{name} is an option of the slurm connector, not {self.kind}")
        if self.kind is not ConnectorKind.DASK and self.address is not None:
            raise ValueError(f"address is an option of the dask connector, not {self.kind}")
        return self


class Site(_Frozen):
    """One compute site of the federation (an HPC centre, a cloud region, an edge node).

    Power figures are per core, at the wall of the node (the facility overhead
    comes through ``pue``). ``speed`` is the per-core speed relative to the
    reference core (1 GHz): a step of ``work`` core-seconds on ``cores`` cores
    lasts ``work / (cores * speed)`` seconds. ``carbon_intensity_g_per_kwh`` and
    ``energy_price_eur_per_kwh`` are the nominal figures used when no forecast exists;
    ``None`` (the default) means unknown, never a silent default: the placement cost model
    then assumes the highest figure known in the federation and says so in the plan.
    """

    id: Identifier
    kind: SiteKind
    name: str = ""
    cores: int = Field(gt=0, description="cores the federation may use at this site")
    gpus: int = Field(default=0, ge=0)
    memory: Bytes = Field(gt=0, description="memory in bytes")
    speed: float = Field(default=1.0, gt=0, description="per-core speed in reference cores")
    power_idle_w: float = Field(ge=0, description="watts per idle core")
    power_busy_w: float = Field(gt=0, description="watts per busy core")
    pue: float = Field(default=1.0, ge=1.0, le=5.0, description="power usage effectiveness")
    price_per_core_hour: float = Field(ge=0, description="EUR charged per core-hour")
    price_per_gpu_hour: float = Field(default=0.0, ge=0, description="EUR per GPU-hour")
    jurisdiction: Jurisdiction
    buffer_capacity: Bytes = Field(gt=0, description="bytes of ephemeral buffer space")
    carbon_intensity_g_per_kwh: float | None = Field(
        default=None,
        ge=0,
        description="nominal grid carbon intensity when no forecast exists (None: unknown)",
    )
    energy_price_eur_per_kwh: float | None = Field(
        default=None,
        ge=0,
        description="nominal power price when no forecast exists (None: unknown)",
    )
    grid_zone: str | None = Field(
        default=None,
        description="electricity zone of the price/carbon series (defaults to jurisdiction)",
    )
    labels: dict[str, str] = Field(default_factory=dict)
    connector: ConnectorSpec = Field(
        default_factory=ConnectorSpec, description="how steps run there (default: local)"
    )

    @model_validator(mode="after")
    def _check_power(self) -> Self:
        if self.power_busy_w < self.power_idle_w:
            raise ValueError(
                f"power_busy_w ({self.power_busy_w}) must be >= power_idle_w ({self.power_idle_w})"
            )
        return self

    @property
    def zone(self) -> str:
        """The electricity zone of this site's price and carbon series."""
        return self.grid_zone or self.jurisdiction

    def duration(self, work: float, cores: int) -> float:
        """Seconds that ``work`` core-seconds (reference speed) take on ``cores`` cores here."""
        return work / (cores * self.speed)

    def energy_j(self, busy_core_seconds: float) -> float:
        """Joules drawn from the grid for ``busy_core_seconds`` (with PUE, busy power)."""
        return busy_core_seconds * self.power_busy_w * self.pue


class Link(_Frozen):
    """A directed network path between two sites."""

    src: Identifier
    dst: Identifier
    bandwidth: BytesPerSecond = Field(gt=0, description="bytes per second")
    latency: Seconds = Field(default=0.0, ge=0, description="seconds")
    cost_per_gb: float = Field(default=0.0, ge=0, description="EUR per GB (1e9 bytes) moved")

    @model_validator(mode="after")
    def _check_ends(self) -> Self:
        if self.src == self.dst:
            raise ValueError(f"a link must join two different sites, got {self.src} -> {self.dst}")
        return self

    def transfer_time(self, nbytes: float) -> float:
        """Seconds to move ``nbytes`` over this link: ``latency + bytes / bandwidth``."""
        return self.latency + nbytes / self.bandwidth

    def transfer_cost(self, nbytes: float) -> float:
        """EUR to move ``nbytes`` over this link."""
        return self.cost_per_gb * nbytes / 1e9


class Project(_Frozen):
    """A project of an organisation; ``sites`` lists the sites it may use (None: all)."""

    id: Identifier
    name: str = ""
    sites: tuple[Identifier, ...] | None = None


class Organisation(_Frozen):
    """A member organisation of the federation (a virtual organisation, a lab)."""

    id: Identifier
    name: str = ""
    projects: tuple[Project, ...] = ()


def _expand_symmetric(data: Any) -> Any:
    """Turn ``symmetric: true`` links into two directed links (before validation)."""
    if not isinstance(data, Mapping) or not isinstance(data.get("links"), list):
        return data
    links: list[Any] = []
    for link in data["links"]:
        if isinstance(link, Mapping) and "symmetric" in link:
            fwd = {k: v for k, v in link.items() if k != "symmetric"}
            links.append(fwd)
            if link["symmetric"] is True:
                links.append({**fwd, "src": fwd.get("dst"), "dst": fwd.get("src")})
        else:
            links.append(link)
    return {**data, "links": links}


class Federation(_Frozen):
    """Sites, the links between them, and who may use what."""

    name: Identifier
    description: str = ""
    sites: tuple[Site, ...] = Field(min_length=1)
    links: tuple[Link, ...] = ()
    organisations: tuple[Organisation, ...] = ()

    _links: dict[tuple[str, str], Link] = PrivateAttr(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _before(cls, data: Any) -> Any:
        return _expand_symmetric(data)

    @model_validator(mode="after")
    def _check_references(self) -> Self:
        problems = _reference_problems(self)
        if problems:
            raise Problems(problems)
        return self

    def model_post_init(self, context: Any, /) -> None:
        self._links = {(lk.src, lk.dst): lk for lk in self.links}

    # -- queries ---------------------------------------------------------------
    @property
    def site_ids(self) -> tuple[str, ...]:
        return tuple(s.id for s in self.sites)

    def site(self, site_id: str) -> Site:
        """The site called ``site_id``; ``KeyError`` naming the known ids otherwise."""
        for s in self.sites:
            if s.id == site_id:
                return s
        raise KeyError(f"unknown site {site_id!r}; known sites: {', '.join(self.site_ids)}")

    def link(self, src: str, dst: str) -> Link | None:
        """The direct link from ``src`` to ``dst``, if any."""
        return self._links.get((src, dst))

    def transfer_time(self, src: str, dst: str, nbytes: float) -> float:
        """Seconds to move ``nbytes`` from ``src`` to ``dst`` (0 on one site, inf if unlinked)."""
        if src == dst:
            return 0.0
        link = self.link(src, dst)
        return math.inf if link is None else link.transfer_time(nbytes)

    def transfer_cost(self, src: str, dst: str, nbytes: float) -> float:
        """EUR to move ``nbytes`` from ``src`` to ``dst`` (0 on the same site, inf if unlinked)."""
        if src == dst:
            return 0.0
        link = self.link(src, dst)
        return math.inf if link is None else link.transfer_cost(nbytes)

    def project(self, project_id: str) -> Project:
        for org in self.organisations:
            for p in org.projects:
                if p.id == project_id:
                    return p
        raise KeyError(f"unknown project {project_id!r}")

    def sites_for_project(self, project_id: str) -> tuple[Site, ...]:
        """Sites that ``project_id`` may use."""
        allowed = self.project(project_id).sites
        return self.sites if allowed is None else tuple(s for s in self.sites if s.id in allowed)

    def total_cores(self) -> int:
        return sum(s.cores for s in self.sites)

    def __iter__(self) -> Iterator[Site]:  # type: ignore[override]
        return iter(self.sites)

    # -- loading ---------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Any, source: str = "<dict>") -> Federation:
        """Validate ``data``; raise ``InvalidFederation`` naming ``source`` and field paths."""
        return validate_document(cls, data, source, InvalidFederation, "federation")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict that ``from_dict`` reads back to an equal federation."""
        return self.model_dump(mode="json")


def _reference_problems(fed: Federation) -> list[Problem]:
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    for i, s in enumerate(fed.sites):
        if s.id in seen:
            problems.append(
                Problem(f"sites[{i}].id", f"duplicate site id {s.id!r} (also sites[{seen[s.id]}])")
            )
        seen.setdefault(s.id, i)
    pairs: dict[tuple[str, str], int] = {}
    for i, lk in enumerate(fed.links):
        for end in ("src", "dst"):
            ref = getattr(lk, end)
            if ref not in seen:
                problems.append(
                    Problem(f"links[{i}].{end}", f"unknown site {ref!r}; known: {', '.join(seen)}")
                )
        if (lk.src, lk.dst) in pairs:
            problems.append(
                Problem(
                    f"links[{i}]",
                    f"duplicate link {lk.src} -> {lk.dst} (also links[{pairs[(lk.src, lk.dst)]}])",
                )
            )
        pairs.setdefault((lk.src, lk.dst), i)
    org_ids: set[str] = set()
    project_ids: set[str] = set()
    for i, org in enumerate(fed.organisations):
        if org.id in org_ids:
            problems.append(Problem(f"organisations[{i}].id", f"duplicate organisation {org.id!r}"))
        org_ids.add(org.id)
        for j, p in enumerate(org.projects):
            where = f"organisations[{i}].projects[{j}]"
            if p.id in project_ids:
                problems.append(Problem(f"{where}.id", f"duplicate project id {p.id!r}"))
            project_ids.add(p.id)
            for k, sid in enumerate(p.sites or ()):
                if sid not in seen:
                    problems.append(Problem(f"{where}.sites[{k}]", f"unknown site {sid!r}"))
    return problems


def load_federation(path: str | Path) -> Federation:
    """Load and validate a federation from a YAML or JSON file.

    Raises:
        InvalidFederation: naming the file, the field path and the problem.
    """
    return Federation.from_dict(read_document(path), source=str(path))


def demo_federation_path() -> Path:
    """Path of the embedded demo federation (``federation/examples/demo.yaml``)."""
    return Path(__file__).with_name("examples") / "demo.yaml"


def load_demo_federation() -> Federation:
    """The embedded demo federation, modelled on public figures of real facilities."""
    return load_federation(demo_federation_path())
