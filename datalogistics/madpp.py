"""Machine-actionable data project plans (MADPP), compatible with the RDA maDMP 1.2.

This module validates a plan against the official RDA DMP Common Standard
JSON schema (``maDMP-schema-1.2.json``, public domain, shipped with the
package) and reports each error with its JSON path; models the plan with
pydantic (``DataProjectPlan``: ``dmp``, ``dataset``, ``distribution``,
``host``, ``security_and_privacy``...) so that a plan read and written back is
unchanged; reads the orchestration extension of each dataset
(``OrchestrationExtension``, under the dataset's ``continuum`` property);
turns the plan into placement constraints (``to_constraints``) and data items
(``data_items``); and records where the data lives after a run
(``with_locations``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from datalogistics.errors import DataLogisticsError
from datalogistics.items import DataItem, Sensitivity
from federation.documents import read_document
from federation.errors import InvalidInput, Problem, format_location, validate_document
from federation.jurisdictions import (
    EU_MEMBERS,
    ISO_3166_ALPHA2,
    check_jurisdiction,
    jurisdiction_allows,
)
from federation.units import Bytes, Seconds

if TYPE_CHECKING:
    from federation.model import Federation


class InvalidPlan(InvalidInput, DataLogisticsError):
    """A data project plan is invalid (names the source and the JSON path)."""


@cache
def madmp_schema() -> dict[str, Any]:
    """The RDA maDMP 1.2 JSON schema shipped with the package."""
    text = resources.files("datalogistics").joinpath("schemas/maDMP-schema-1.2.json").read_text()
    schema: dict[str, Any] = json.loads(text)
    return schema


def is_madmp(data: Any) -> bool:
    """True when ``data`` looks like an maDMP document (a top-level ``dmp`` object)."""
    return isinstance(data, Mapping) and "dmp" in data


def madmp_problems(data: Any) -> list[Problem]:
    """Every schema violation of ``data``, each with its JSON path (``dmp.dataset[0].title``)."""
    import jsonschema  # here, not at the top: `continuum --help` and `validate` start fast

    schema = madmp_schema()
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    validator = cls(schema, format_checker=cls.FORMAT_CHECKER)
    errors = sorted(validator.iter_errors(data), key=lambda e: [str(p) for p in e.absolute_path])
    return [Problem(format_location(e.absolute_path), e.message) for e in errors]


def validate_madmp(data: Any, source: str = "<dict>") -> Mapping[str, Any]:
    """Check ``data`` against the maDMP 1.2 schema; ``InvalidPlan`` with JSON paths if not."""
    if not isinstance(data, Mapping):
        raise InvalidPlan.single(source, "", f"a plan is a mapping, got {type(data).__name__}")
    problems = madmp_problems(data)
    if problems:
        raise InvalidPlan(source, problems)
    return data


# -- pydantic models of the maDMP 1.2 --------------------------------------------------------
#
# Every model keeps unknown properties (``extra="allow"``) and is dumped with
# ``exclude_unset``, so a plan read and written back is the same JSON: the five
# official examples round-trip key for key. Dates stay strings (as written) for
# the same reason; the JSON schema checks their format.


class _Madmp(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class Identifier(_Madmp):
    """``{identifier, type}``: the shape of every ``*_id`` of the maDMP."""

    identifier: str
    type: str


class Contact(_Madmp):
    name: str
    mbox: str
    contact_id: Identifier | list[Identifier]
    affiliation: list[dict[str, Any]] | None = None


class Contributor(_Madmp):
    name: str
    contributor_id: Identifier | list[Identifier]
    role: list[str]
    mbox: str | None = None


class Funding(_Madmp):
    funder_id: Identifier
    funding_status: str | None = None
    grant_id: Identifier | None = None


class Project(_Madmp):
    title: str
    description: str | None = None
    start: str | None = None
    end: str | None = None
    funding: list[Funding] | None = None


class Cost(_Madmp):
    title: str
    value: int | float | None = None
    currency_code: str | None = None
    description: str | None = None


class Host(_Madmp):
    """Where a distribution of a dataset is held (a repository, or a federation site)."""

    title: str
    url: str
    geo_location: str | None = None
    storage_type: str | None = None
    description: str | None = None


class License(_Madmp):
    license_ref: str
    start_date: str


class Distribution(_Madmp):
    """One copy or form of a dataset: its size, its host, until when it is available."""

    title: str
    data_access: str
    byte_size: int | None = None
    host: Host | None = None
    available_until: str | None = None
    access_url: str | None = None
    download_url: str | None = None
    format: list[str] | None = None
    license: list[License] | None = None
    description: str | None = None


class SecurityAndPrivacy(_Madmp):
    title: str
    description: str | None = None


class TechnicalResource(_Madmp):
    name: str
    description: str | None = None


class OrchestrationExtension(BaseModel):
    """The ``continuum`` property of a dataset: what the orchestrator needs to know.

    maDMP 1.2 declares no ``additionalProperties: false``, so an extra
    property on a dataset keeps the plan valid against the official schema;
    this model checks its content (errors name ``dmp.dataset[i].continuum...``)::

        "continuum": {
          "item_id": "visibilities",            # DataItem id (default: dataset_id.identifier)
          "allowed_jurisdictions": ["FR"],      # ISO 3166-1 alpha-2 or EU; absent = anywhere
          "sensitivity": "restricted",          # public | internal | confidential | restricted
          "retention": "30 d",                  # seconds, or a duration with a unit
          "expected_size": "1.2 TB",            # bytes, or a size with a unit
          "produced_by": ["calibrate"],         # workflow step ids writing it
          "consumed_by": ["image"]              # workflow step ids reading it
        }
    """

    model_config = ConfigDict(extra="forbid")

    item_id: str | None = None
    allowed_jurisdictions: list[Annotated[str, AfterValidator(check_jurisdiction)]] | None = None
    sensitivity: Sensitivity | None = None
    retention: Seconds | None = Field(default=None, gt=0)
    expected_size: Bytes | None = Field(default=None, ge=0)
    produced_by: list[str] = Field(default_factory=list)
    consumed_by: list[str] = Field(default_factory=list)


EXTENSION_KEY = "continuum"


class Dataset(_Madmp):
    """A dataset of the plan, with the orchestration extension under ``continuum``."""

    title: str
    dataset_id: Identifier
    personal_data: str
    sensitive_data: str
    type: str | None = None
    description: str | None = None
    distribution: list[Distribution] | None = None
    security_and_privacy: list[SecurityAndPrivacy] | None = None
    technical_resource: list[TechnicalResource] | None = None
    keyword: list[str] | None = None
    issued: str | None = None
    preservation_statement: str | None = None
    continuum: OrchestrationExtension | None = None

    @property
    def item_id(self) -> str:
        """The id of the ``DataItem`` this dataset becomes."""
        ext = self.continuum
        return ext.item_id if ext and ext.item_id else self.dataset_id.identifier

    @property
    def sensitivity(self) -> Sensitivity:
        """The extension's sensitivity; else from the standard fields.

        ``personal_data: yes`` -> restricted, ``sensitive_data: yes`` ->
        confidential, both ``no`` -> public, anything else (``unknown``) ->
        internal (the cautious middle).
        """
        if self.continuum and self.continuum.sensitivity:
            return self.continuum.sensitivity
        if self.personal_data == "yes":
            return Sensitivity.RESTRICTED
        if self.sensitive_data == "yes":
            return Sensitivity.CONFIDENTIAL
        if self.personal_data == "no" and self.sensitive_data == "no":
            return Sensitivity.PUBLIC
        return Sensitivity.INTERNAL

    @property
    def expected_size(self) -> float:
        """The extension's expected size; else the largest distribution ``byte_size``; else 0."""
        if self.continuum and self.continuum.expected_size is not None:
            return self.continuum.expected_size
        sizes = [d.byte_size for d in self.distribution or () if d.byte_size is not None]
        return float(max(sizes)) if sizes else 0.0

    def to_data_item(self) -> DataItem:
        ext = self.continuum
        allowed = ext.allowed_jurisdictions if ext else None
        return DataItem(
            id=self.item_id,
            size=self.expected_size,
            sensitivity=self.sensitivity,
            allowed_jurisdictions=tuple(allowed) if allowed is not None else None,
            retention=ext.retention if ext else None,
        )


class Dmp(_Madmp):
    """The ``dmp`` object: the plan's header and its datasets."""

    title: str
    created: str
    modified: str
    language: str
    ethical_issues_exist: str
    dmp_id: Identifier
    contact: Contact
    dataset: list[Dataset]
    description: str | None = None
    contributor: list[Contributor] | None = None
    project: list[Project] | None = None
    cost: list[Cost] | None = None


@dataclass(frozen=True)
class DataLocation:
    """Where a data item lives after a run: site, URL of its buffer or store, until when."""

    site: str
    url: str
    byte_size: int
    available_until: date
    jurisdiction: str | None = None


@dataclass(frozen=True)
class DataConstraints:
    """What a data project plan imposes on placement.

    ``items``: per data item id, the jurisdictions it may reside in (``None``:
    anywhere). ``steps``: per workflow step id, the jurisdictions it may run
    in: the intersection over every dataset it produces or consumes (``EU``
    stands for all its member states). A step absent from ``steps`` is free.
    """

    items: dict[str, tuple[str, ...] | None]
    steps: dict[str, tuple[str, ...]]

    def step_allows(self, step_id: str, jurisdiction: str) -> bool:
        """True when ``step_id`` may run at a site in ``jurisdiction``."""
        allowed = self.steps.get(step_id)
        return allowed is None or jurisdiction_allows(allowed, jurisdiction)

    def eligible_sites(self, federation: Federation) -> dict[str, tuple[str, ...]]:
        """Per constrained step, the sites of ``federation`` it may run on."""
        return {
            step: tuple(s.id for s in federation.sites if self.step_allows(step, s.jurisdiction))
            for step in self.steps
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "items": {k: (list(v) if v is not None else None) for k, v in self.items.items()},
            "steps": {k: list(v) for k, v in self.steps.items()},
        }


def _expand(allowed: list[str] | tuple[str, ...]) -> set[str]:
    out = set(allowed)
    if "EU" in out:
        out |= EU_MEMBERS
    return out


def _compress(codes: set[str]) -> tuple[str, ...]:
    if EU_MEMBERS | {"EU"} <= codes:
        codes = (codes - EU_MEMBERS) | {"EU"}
    return tuple(sorted(codes))


class DataProjectPlan(_Madmp):
    """A machine-actionable data project plan: an RDA maDMP 1.2 document.

    ``from_json`` validates against the official JSON schema first (errors
    name the JSON path), then builds the models; ``to_json`` gives back the
    document (unchanged fields as they were read).
    """

    schema_: str | None = Field(default=None, alias="$schema")
    dmp: Dmp

    @classmethod
    def from_json(cls, data: Any, source: str = "<dict>") -> DataProjectPlan:
        """Validate ``data`` (schema, then the orchestration extension) and build the plan."""
        validate_madmp(data, source)
        return validate_document(cls, data, source, error=InvalidPlan, what="data project plan")

    @classmethod
    def load(cls, path: str | Path) -> DataProjectPlan:
        """Read and validate a plan from a JSON (or YAML) file."""
        return cls.from_json(read_document(Path(path)), str(path))

    def to_json(self) -> dict[str, Any]:
        """The plan as a JSON-ready dict (only the properties that were set)."""
        out: dict[str, Any] = self.model_dump(mode="json", by_alias=True, exclude_unset=True)
        return out

    @property
    def datasets(self) -> list[Dataset]:
        return self.dmp.dataset

    def data_items(self) -> list[DataItem]:
        """Every dataset as a ``DataItem`` (id, expected size, sensitivity, jurisdictions)."""
        return [d.to_data_item() for d in self.datasets]

    def to_constraints(self) -> DataConstraints:
        """The placement eligibility this plan implies (see ``DataConstraints``).

        ``InvalidPlan`` when a step touches datasets whose allowed
        jurisdictions have nothing in common (no site could run it).
        """
        items: dict[str, tuple[str, ...] | None] = {}
        per_step: dict[str, set[str]] = {}
        why: dict[str, list[str]] = {}
        for d in self.datasets:
            ext = d.continuum
            allowed = ext.allowed_jurisdictions if ext else None
            items[d.item_id] = tuple(allowed) if allowed is not None else None
            if ext is None or allowed is None:
                continue
            for step in (*ext.produced_by, *ext.consumed_by):
                codes = _expand(allowed)
                per_step[step] = per_step[step] & codes if step in per_step else codes
                why.setdefault(step, []).append(f"{d.item_id} ({', '.join(allowed)})")
        problems = [
            Problem(
                f"step {step}",
                f"no jurisdiction allows every dataset it touches: {'; '.join(why[step])}",
            )
            for step, codes in per_step.items()
            if not codes
        ]
        if problems:
            raise InvalidPlan("<plan>", problems)
        return DataConstraints(items, {s: _compress(c) for s, c in per_step.items()})

    def with_locations(
        self, locations: Mapping[str, DataLocation], now: datetime | None = None
    ) -> DataProjectPlan:
        """The plan updated after a run: where each item now lives.

        For each item id in ``locations`` the dataset gets a distribution
        hosted at the site (``host.title`` = site id, ``host.url`` = the URL,
        ``geo_location`` = its jurisdiction when it is a country) with the
        measured ``byte_size`` and ``available_until``; an earlier
        distribution with the same host URL is replaced. ``dmp.modified`` is
        set to ``now``. The result is validated against the schema again.
        """
        data = self.to_json()
        by_item = {d.item_id: i for i, d in enumerate(self.datasets)}
        unknown = sorted(set(locations) - set(by_item))
        if unknown:
            raise KeyError(f"no dataset for item(s) {', '.join(unknown)} in this plan")
        for item, loc in locations.items():
            ds = data["dmp"]["dataset"][by_item[item]]
            access = {"public": "open", "internal": "shared"}.get(
                self.datasets[by_item[item]].sensitivity.value, "closed"
            )
            host: dict[str, Any] = {"title": loc.site, "url": loc.url, "storage_type": "buffer"}
            if loc.jurisdiction and loc.jurisdiction in ISO_3166_ALPHA2:
                host["geo_location"] = loc.jurisdiction
            dist = {
                "title": f"{item} at {loc.site}",
                "data_access": access,
                "byte_size": int(loc.byte_size),
                "host": host,
                "available_until": loc.available_until.isoformat(),
            }
            kept = [
                x for x in ds.get("distribution", []) if x.get("host", {}).get("url") != loc.url
            ]
            ds["distribution"] = [*kept, dist]
        stamp = now or datetime.now(UTC)
        data["dmp"]["modified"] = stamp.isoformat(timespec="seconds").replace("+00:00", "Z")
        return DataProjectPlan.from_json(data, "<updated plan>")
