"""Reading an hourly series from any CSV (for fitting and backtests).

Timestamps may be ISO 8601 (``2023-01-01 00:00:00``, with or without a zone:
UTC when absent), Stata-like ``01jan2022 00:00:00`` (the ENTSO-E export), or
unix seconds. Values that are empty are *missing* (kept as gaps); values that
are not numbers, and timestamps that cannot be read, are errors naming the
rows. The series is put on a regular grid of ``step`` seconds: duplicated
timestamps (a daylight-saving repeated hour) are averaged, absent ones become
gaps.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from federation.errors import Problem
from twin.errors import InvalidTelemetry
from twin.kalman import Array

_FORMATS = (
    "%d%b%Y %H:%M:%S",
    "%d%b%Y %H:%M",
    "%Y-%m-%dT%H:%M:%S",
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%d %H:%M",
    "%d/%m/%Y %H:%M",
)


def parse_time(text: str) -> float:
    """Unix seconds from an ISO 8601, ``01jan2022 00:00:00`` or numeric timestamp.

    Raises ValueError saying which formats are accepted.
    """
    s = text.strip()
    try:
        return float(s)
    except ValueError:
        pass
    try:
        d = datetime.fromisoformat(s.replace("Z", "+00:00"))
    except ValueError:
        d = None
        for fmt in _FORMATS:
            try:
                d = datetime.strptime(s, fmt)
                break
            except ValueError:
                continue
    if d is None:
        raise ValueError(
            f"cannot read the time {text!r}: use ISO 8601 (2023-01-01 00:00:00), "
            "'01jan2022 00:00:00' or unix seconds"
        )
    if d.tzinfo is None:
        d = d.replace(tzinfo=UTC)
    return d.timestamp()


@dataclass
class Series:
    """A regular series: ``times`` (unix s) every ``step`` seconds, ``values`` (nan = gap)."""

    times: Array
    values: Array
    step: float
    rows: int
    missing: int
    duplicates: int
    source: str

    def __len__(self) -> int:
        return len(self.values)


def read_columns(
    path: Path, columns: list[str], parsers: list[Callable[[str], float]]
) -> list[list[float]]:
    """Read ``columns`` of a CSV with one parser each; empty cells give nan.

    Raises InvalidTelemetry naming a missing column (with the available ones),
    or up to five unparsable rows with their line numbers.
    """
    source = str(path)
    try:
        fh = path.open(newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise InvalidTelemetry.single(source, "", f"cannot open: {exc.strerror}") from None
    with fh:
        reader = csv.reader(fh)
        try:
            header = next(reader)
        except StopIteration:
            raise InvalidTelemetry.single(source, "", "the file is empty") from None
        idx = []
        for c in columns:
            if c not in header:
                raise InvalidTelemetry.single(
                    source,
                    f"column {c!r}",
                    f"no such column; the columns are: {', '.join(repr(h) for h in header)}",
                )
            idx.append(header.index(c))
        out: list[list[float]] = [[] for _ in columns]
        problems: list[Problem] = []
        bad = 0
        for line, row in enumerate(reader, start=2):
            if not any(cell.strip() for cell in row):
                continue
            vals = []
            for j, (i, parse) in enumerate(zip(idx, parsers, strict=True)):
                cell = row[i].strip() if i < len(row) else ""
                if cell == "":
                    vals.append(math.nan)
                    continue
                try:
                    vals.append(parse(cell))
                except ValueError as exc:
                    bad += 1
                    if len(problems) < 5:
                        problems.append(Problem(f"line {line}, column {columns[j]!r}", str(exc)))
                    vals.append(math.nan)
            for j, v in enumerate(vals):
                out[j].append(v)
        if problems:
            if bad > len(problems):
                problems.append(Problem("", f"{bad} unparsable cells in all"))
            raise InvalidTelemetry(source, problems)
    return out


def _number(cell: str) -> float:
    try:
        v = float(cell)
    except ValueError:
        raise ValueError(f"{cell!r} is not a number") from None
    if not math.isfinite(v):
        raise ValueError(f"{cell!r} is not a finite number")
    return v


def load_series(
    path: str | Path, time_column: str, value_column: str, step: float = 3600.0
) -> Series:
    """Read ``value_column`` against ``time_column`` and regularise it to ``step`` seconds."""
    p = Path(path)
    times_l, values_l = read_columns(p, [time_column, value_column], [parse_time, _number])
    t = np.array(times_l)
    v = np.array(values_l)
    if np.isnan(t).any():
        line = int(np.flatnonzero(np.isnan(t))[0]) + 2
        raise InvalidTelemetry.single(
            str(p), f"line {line}, column {time_column!r}", "the time is empty"
        )
    if len(t) < 2:
        raise InvalidTelemetry.single(str(p), "", f"need at least 2 rows, got {len(t)}")
    slot = np.round((t - t.min()) / step).astype(np.int64)
    T = int(slot.max()) + 1
    sums = np.zeros(T)
    counts = np.zeros(T)
    ok = np.isfinite(v)
    np.add.at(sums, slot[ok], v[ok])
    np.add.at(counts, slot[ok], 1)
    values = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    dup = int(len(slot) - len(np.unique(slot)))
    seen = np.flatnonzero(np.isfinite(values))
    if len(seen) < 2:
        raise InvalidTelemetry.single(
            str(p), f"column {value_column!r}", f"fewer than 2 numeric values in {len(t)} rows"
        )
    # A series runs from its first to its last observed value: leading and
    # trailing gaps (an export padded to the end of a year) are cut off.
    first, last = int(seen[0]), int(seen[-1]) + 1
    times = t.min() + step * np.arange(T)
    times, values = times[first:last], values[first:last]
    return Series(
        times=times,
        values=values,
        step=step,
        rows=len(t),
        missing=int(np.isnan(values).sum()),
        duplicates=dup,
        source=str(p),
    )


__all__ = ["Series", "load_series", "parse_time", "read_columns"]
