"""Telemetry: what a site reports, replayed from CSV/JSON files or probed from this machine.

A ``TelemetrySample`` carries the observed metrics of one site at one time;
any of them may be missing (None), which the filter treats as an unobserved
component, never as a zero. ``private`` holds whatever else the site's
collector attached (node names, job ids, user names...): the twin never reads
it and nothing derived from it leaves the twin.

File formats (one sample per row or object):

* CSV: columns ``timestamp`` (ISO 8601 or unix seconds) and ``site``, then any of
  ``utilisation`` (fraction of cores busy, 0..1), ``backlog`` (core-seconds
  queued), ``power_price`` (EUR/kWh), ``carbon_intensity`` (gCO2e/kWh),
  ``link:<dst>`` (bytes/s to site ``dst``), ``up`` (0/1) and ``in_service`` (share
  of the cores in service, 0..1: a scheduler's nodes down or drained). Empty cells are
  missing; unknown columns go to ``private``.
* JSON: a list of objects (or JSON Lines) with the same keys; ``links`` may be
  an object ``{dst: bytes_per_s}``.
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from federation.documents import read_user_bytes
from federation.errors import Problem, problems_from_pydantic
from twin.errors import InvalidTelemetry
from twin.series import parse_time

METRICS = ("utilisation", "backlog", "power_price", "carbon_intensity")
"""Site-level metrics a sample may carry (links come on top, one per destination)."""


class TelemetrySample(BaseModel):
    """One site's observations at one time (unix seconds); missing metrics are None."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    site: str = Field(min_length=1)
    timestamp: float
    utilisation: float | None = Field(default=None, ge=0.0, le=1.0)
    backlog: float | None = Field(default=None, ge=0.0, description="core-seconds queued")
    power_price: float | None = Field(default=None, description="EUR/kWh (may be negative)")
    carbon_intensity: float | None = Field(default=None, ge=0.0, description="gCO2e/kWh")
    links: dict[str, float] = Field(default_factory=dict, description="dst -> bytes/s")
    up: bool = True
    in_service: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="share of the site's cores in service (a scheduler's nodes not down or "
        "drained); below 1 the site is degraded",
    )
    private: dict[str, str] = Field(
        default_factory=dict, description="collector data the twin never reads or exposes"
    )

    @field_validator("timestamp")
    @classmethod
    def _finite(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError("timestamp must be a finite number of unix seconds")
        return v

    @field_validator("links")
    @classmethod
    def _links(cls, v: dict[str, float]) -> dict[str, float]:
        for dst, bps in v.items():
            if not (math.isfinite(bps) and bps >= 0):
                raise ValueError(f"throughput to {dst!r} must be a finite number >= 0, got {bps}")
        return v

    def observed(self) -> dict[str, float]:
        """The observed values by block name (``link:<dst>`` for links)."""
        out = {m: float(v) for m in METRICS if (v := getattr(self, m)) is not None}
        out.update({f"link:{dst}": float(v) for dst, v in self.links.items()})
        return out


def sample_from_mapping(row: Mapping[str, Any], source: str, where: str) -> TelemetrySample:
    """A sample from a parsed CSV row or JSON object; errors name ``where`` and the field."""
    data: dict[str, Any] = {"links": {}, "private": {}}
    for key, raw in row.items():
        if key is None:
            continue
        value = raw.strip() if isinstance(raw, str) else raw
        if key == "timestamp":
            try:
                data["timestamp"] = parse_time(value) if isinstance(value, str) else float(value)
            except (ValueError, TypeError) as exc:
                raise InvalidTelemetry.single(source, f"{where}.timestamp", str(exc)) from None
        elif key == "site":
            data["site"] = value
        elif key in METRICS:
            if value not in ("", None):
                data[key] = value
        elif key == "up":
            if value not in ("", None):
                data["up"] = str(value).lower() not in ("0", "false", "no", "down")
        elif key == "in_service":
            if value not in ("", None):
                data["in_service"] = value
        elif key == "links" and isinstance(value, Mapping):
            data["links"].update(value)
        elif isinstance(key, str) and key.startswith("link:"):
            if value not in ("", None):
                data["links"][key.removeprefix("link:")] = value
        else:
            data["private"][str(key)] = "" if value is None else str(value)
    try:
        return TelemetrySample.model_validate(data)
    except ValidationError as exc:
        raise InvalidTelemetry(source, problems_from_pydantic(exc.errors(), [where])) from None


def read_telemetry(path: str | Path) -> list[TelemetrySample]:
    """Read a CSV, JSON or JSON Lines telemetry file (see the module docstring)."""
    p = Path(path)
    source = str(p)
    if not p.is_file():
        raise InvalidTelemetry.single(source, "", "no such file")
    # bounded, a regular file only (federation.documents); the JSON within the same bounds
    text = read_user_bytes(p).decode("utf-8-sig", errors="replace")
    if p.suffix.lower() in (".json", ".jsonl", ".ndjson"):
        try:
            if p.suffix.lower() == ".json":
                items = json.loads(text)
            else:
                items = [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError as exc:
            raise InvalidTelemetry.single(
                source, f"line {exc.lineno}", f"not valid JSON: {exc.msg}"
            ) from None
        except (RecursionError, ValueError):
            raise InvalidTelemetry.single(source, "", "nested too deep or not readable") from None
        if isinstance(items, Mapping):
            items = items.get("samples", [])
        if not isinstance(items, list):
            raise InvalidTelemetry.single(source, "", "expected a list of samples")
        return [
            sample_from_mapping(it, source, f"[{i}]")
            if isinstance(it, Mapping)
            else _not_object(source, i)
            for i, it in enumerate(items)
        ]
    reader = csv.DictReader(text.splitlines())
    fields = reader.fieldnames or []
    missing = [c for c in ("timestamp", "site") if c not in fields]
    if missing:
        raise InvalidTelemetry.single(
            source,
            f"column {missing[0]!r}",
            f"a telemetry CSV needs 'timestamp' and 'site' columns; found: {', '.join(fields)}",
        )
    return [sample_from_mapping(row, source, f"line {i}") for i, row in enumerate(reader, 2)]


def _not_object(source: str, i: int) -> TelemetrySample:
    raise InvalidTelemetry(source, [Problem(f"[{i}]", "a sample must be an object")])


def write_telemetry_csv(samples: Iterable[TelemetrySample], path: str | Path) -> None:
    """Write samples as a telemetry CSV (the replay format); ``private`` is not written."""
    rows = list(samples)
    links = sorted({d for s in rows for d in s.links})
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with p.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["timestamp", "site", *METRICS, *(f"link:{d}" for d in links), "up"])
        for s in rows:
            w.writerow(
                [
                    f"{s.timestamp:.0f}",
                    s.site,
                    *("" if (v := getattr(s, m)) is None else f"{v:.6g}" for m in METRICS),
                    *("" if d not in s.links else f"{s.links[d]:.6g}" for d in links),
                    int(s.up),
                ]
            )


def replay(
    samples: Iterable[TelemetrySample], batch_seconds: float = 3600.0
) -> Iterator[list[TelemetrySample]]:
    """Group samples, in time order, into batches spanning ``batch_seconds`` each."""
    ordered = sorted(samples, key=lambda s: s.timestamp)
    batch: list[TelemetrySample] = []
    start: float | None = None
    for s in ordered:
        if start is None:
            start = s.timestamp
        if s.timestamp - start >= batch_seconds and batch:
            yield batch
            batch, start = [], s.timestamp
        batch.append(s)
    if batch:
        yield batch


class TelemetrySource(ABC):
    """Where samples come from: a narrow plug-in point (a file replay, a probe, a connector).

    ``poll(until)`` returns the samples available up to time ``until`` (unix s)
    that were not returned before, in time order; ``exhausted`` tells a finite
    source has nothing left.
    """

    @abstractmethod
    def poll(self, until: float) -> list[TelemetrySample]:
        """Samples with ``timestamp <= until`` not yet returned, oldest first."""

    @property
    def exhausted(self) -> bool:
        return False


class ReplaySource(TelemetrySource):
    """Replays a telemetry file (or samples) as if it were arriving live.

    ``poll(until)`` hands out the samples up to ``until``: a caller advancing a
    simulated clock hour by hour receives each hour's samples once.
    """

    def __init__(self, samples: Iterable[TelemetrySample] | str | Path) -> None:
        rows = read_telemetry(samples) if isinstance(samples, (str, Path)) else list(samples)
        self._rows = sorted(rows, key=lambda s: s.timestamp)
        self._next = 0

    @property
    def start(self) -> float | None:
        """Time of the first sample (None when empty)."""
        return self._rows[0].timestamp if self._rows else None

    @property
    def exhausted(self) -> bool:
        return self._next >= len(self._rows)

    def poll(self, until: float) -> list[TelemetrySample]:
        out = []
        while self._next < len(self._rows) and self._rows[self._next].timestamp <= until:
            out.append(self._rows[self._next])
            self._next += 1
        return out


class LocalProbe(TelemetrySource):
    """Real telemetry of this machine, read from ``/proc`` (Linux; no psutil needed).

    * utilisation: busy share of CPU time between two reads of ``/proc/stat``
      (``1 - (idle + iowait) / total`` over the interval);
    * backlog: runnable tasks beyond the core count, from ``/proc/loadavg``,
      times the interval, as an estimate of the core-seconds waiting.
    """

    def __init__(self, site: str, proc: str | Path = "/proc") -> None:
        self.site = site
        self.proc = Path(proc)
        self.cores = os.cpu_count() or 1
        self._last: tuple[float, float, float] | None = None  # (time, busy, total)

    def available(self) -> bool:
        return (self.proc / "stat").is_file() and (self.proc / "loadavg").is_file()

    def _cpu(self) -> tuple[float, float]:
        with (self.proc / "stat").open() as fh:
            parts = fh.readline().split()
        if not parts or parts[0] != "cpu":
            raise InvalidTelemetry.single(str(self.proc / "stat"), "line 1", "no 'cpu' line")
        v = [float(x) for x in parts[1:]]
        idle = v[3] + (v[4] if len(v) > 4 else 0.0)
        total = sum(v[:8])
        return total - idle, total

    def poll(self, until: float) -> list[TelemetrySample]:
        """One fresh sample of this machine, stamped ``until``."""
        return [self.sample(until)]

    def sample(self, now: float | None = None) -> TelemetrySample:
        """One sample; utilisation is missing on the first call (it needs two reads)."""
        t = time.time() if now is None else now
        busy, total = self._cpu()
        util: float | None = None
        interval = 1.0
        if self._last is not None:
            t0, b0, tot0 = self._last
            interval = max(t - t0, 1e-3)
            if total > tot0:
                util = min(max((busy - b0) / (total - tot0), 0.0), 1.0)
        self._last = (t, busy, total)
        fields = (self.proc / "loadavg").read_text().split()
        runnable = int(fields[3].split("/")[0]) if len(fields) > 3 else 0
        waiting = max(runnable - self.cores, 0)
        return TelemetrySample(
            site=self.site, timestamp=t, utilisation=util, backlog=waiting * interval
        )


__all__ = [
    "METRICS",
    "LocalProbe",
    "ReplaySource",
    "TelemetrySample",
    "TelemetrySource",
    "read_telemetry",
    "replay",
    "sample_from_mapping",
    "write_telemetry_csv",
]
