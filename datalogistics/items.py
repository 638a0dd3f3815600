"""Data items: the unit the data logistics moves, stages and accounts for."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Self
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from federation.jurisdictions import check_jurisdiction, jurisdiction_allows
from federation.units import Bytes, Seconds

_CHECKSUM_RE = re.compile(r"^(sha256|sha512|md5|blake2b):[0-9a-f]+$")


def _check_checksum(value: str | None) -> str | None:
    if value is not None and not _CHECKSUM_RE.match(value):
        raise ValueError(f"checksum must look like 'sha256:<hex digest>', got {value!r}")
    return value


class Sensitivity(StrEnum):
    """How sensitive a data item is (drives where it may go and how it is handled)."""

    PUBLIC = "public"
    INTERNAL = "internal"
    CONFIDENTIAL = "confidential"
    RESTRICTED = "restricted"


class InputLocation(BaseModel):
    """Where an external input of a workflow lives before the run starts.

    Either a path at a federation site (``{site: fr-hpc, path: /archive/obs-42.ms}``: the
    planners count its transfer from that site to the first consumer's site, the executor
    stages it from there into that consumer's buffer), or a URL (``{url: https://...}``:
    fetched by the consumer's site; counted in the plan's transfers and bytes, with no site
    of origin).
    """

    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)

    site: str | None = Field(default=None, min_length=1, max_length=256)
    path: str | None = Field(default=None, min_length=1, max_length=4096)
    url: str | None = Field(default=None, min_length=1, max_length=4096)

    @model_validator(mode="after")
    def _one_place(self) -> Self:
        if self.url is not None:
            if self.site is not None or self.path is not None:
                raise ValueError("give either a url, or a site and a path, not both")
            scheme = urlsplit(self.url).scheme
            if scheme not in ("http", "https"):
                raise ValueError(f"url must be http:// or https://, got {self.url!r}")
        elif self.site is None or self.path is None:
            raise ValueError("give a site and a path (or a url)")
        return self


class DataItem(BaseModel):
    """A named piece of data produced or consumed by workflow steps.

    ``allowed_jurisdictions`` of ``None`` means the item may go anywhere;
    otherwise only to sites whose jurisdiction is listed (``EU`` admits every
    EU member state). ``retention`` is how long the item may live, in seconds
    (``None``: as long as the run). ``location`` says where an external input (an item no
    step produces) lives before the run; an item some step produces has none.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)

    id: str = Field(min_length=1, max_length=1024)
    size: Bytes = Field(ge=0, description="bytes")
    checksum: Annotated[str | None, AfterValidator(_check_checksum)] = None
    sensitivity: Sensitivity = Sensitivity.PUBLIC
    allowed_jurisdictions: tuple[Annotated[str, AfterValidator(check_jurisdiction)], ...] | None = (
        None
    )
    retention: Seconds | None = Field(default=None, gt=0)
    location: InputLocation | None = Field(
        default=None, description="where an external input lives before the run (site or URL)"
    )

    def may_reside_in(self, jurisdiction: str) -> bool:
        """True when a site in ``jurisdiction`` may hold this item."""
        return jurisdiction_allows(self.allowed_jurisdictions, jurisdiction)
