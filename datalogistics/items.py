"""Data items: the unit the data logistics moves, stages and accounts for."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

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


class DataItem(BaseModel):
    """A named piece of data produced or consumed by workflow steps.

    ``allowed_jurisdictions`` of ``None`` means the item may go anywhere;
    otherwise only to sites whose jurisdiction is listed (``EU`` admits every
    EU member state). ``retention`` is how long the item may live, in seconds
    (``None``: as long as the run).
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

    def may_reside_in(self, jurisdiction: str) -> bool:
        """True when a site in ``jurisdiction`` may hold this item."""
        return jurisdiction_allows(self.allowed_jurisdictions, jurisdiction)
