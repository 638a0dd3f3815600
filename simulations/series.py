"""Hourly series of power price (EUR/kWh) and grid carbon intensity (gCO2e/kWh).

A series is a value per hour from ``start`` (unix seconds): piecewise
constant, so the value at time ``t`` is ``values[floor((t - start) / 3600)]``.
A simulation longer than the series wraps around it (a year-long series
serves any horizon). ``integral(t0, t1)`` is exact for the piecewise-constant
series, which is what energy accounting needs: the cost of a constant power
``P`` (kW) over ``[t0, t1]`` is ``P * integral(t0, t1) / 3600`` EUR.

Series are read from CSV files named in a scenario (the product ships no
series of its own: Electricity Maps and ENTSO-E data stay where their terms
allow), or built from a constant or a daily profile for self-contained
examples.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from federation.errors import Problem
from simulations.errors import InvalidTrace
from twin.series import parse_time  # one timestamp reader for twin and simulations

HOUR = 3600.0


@dataclass(frozen=True)
class HourlySeries:
    """Values per hour from ``start`` (unix s); wraps around past its end."""

    start: float
    values: np.ndarray
    unit: str = ""
    name: str = ""

    def __post_init__(self) -> None:
        if self.values.ndim != 1 or self.values.size == 0:
            raise ValueError("a series needs at least one value")
        if not np.all(np.isfinite(self.values)):
            raise ValueError(f"series {self.name!r} has missing or infinite values")
        # cumulative integral at hour boundaries: C[k] = sum_{i<k} v_i * 3600
        object.__setattr__(
            self, "_cum", np.concatenate(([0.0], np.cumsum(self.values) * HOUR)).tolist()
        )
        object.__setattr__(self, "_vals", self.values.tolist())
        object.__setattr__(self, "_cum_arr", np.asarray(self._cum))  # type: ignore[attr-defined]

    def __len__(self) -> int:
        return int(self.values.size)

    @classmethod
    def constant(cls, value: float, unit: str = "", name: str = "") -> HourlySeries:
        return cls(0.0, np.array([float(value)]), unit, name)

    @classmethod
    def daily(
        cls, mean: float, amplitude: float, peak_hour: float = 19.0, unit: str = "", name: str = ""
    ) -> HourlySeries:
        """A 24-hour cosine profile ``mean + amplitude * cos(2 pi (h - peak_hour) / 24)``."""
        h = np.arange(24) + 0.5
        vals = mean + amplitude * np.cos(2 * math.pi * (h - peak_hour) / 24.0)
        return cls(0.0, np.maximum(vals, 0.0), unit, name)

    def _index(self, t: float) -> tuple[int, float]:
        """Hour index (wrapped) of ``t`` and the seconds into that hour."""
        rel = t - self.start
        k = math.floor(rel / HOUR)
        return k % len(self._vals), rel - k * HOUR  # type: ignore[attr-defined]

    def at(self, t: float) -> float:
        """Value at unix time ``t``."""
        rel = t - self.start
        vals: list[float] = self._vals  # type: ignore[attr-defined]
        return vals[math.floor(rel / HOUR) % len(vals)]

    def _cumulative(self, t: float) -> float:
        """``integral_{start}^{t} v dt`` over the infinitely repeated series."""
        cum: list[float] = self._cum  # type: ignore[attr-defined]
        n = len(cum) - 1
        rel = t - self.start
        k = math.floor(rel / HOUR)
        cycles, i = divmod(k, n)
        vals: list[float] = self._vals  # type: ignore[attr-defined]
        return cycles * cum[n] + cum[i] + vals[i] * (rel - k * HOUR)

    def cumulative(self, t: np.ndarray) -> np.ndarray:
        """``_cumulative`` at every time of ``t`` (vectorised, the same arithmetic)."""
        cum: np.ndarray = self._cum_arr  # type: ignore[attr-defined]
        n = cum.size - 1
        rel = t - self.start
        k = np.floor(rel / HOUR)
        cycles, i = np.divmod(k, n)
        idx = i.astype(np.intp)
        out: np.ndarray = cycles * cum[n] + cum[idx] + self.values[idx] * (rel - k * HOUR)
        return out

    def integral(self, t0: float, t1: float) -> float:
        """``integral_{t0}^{t1} v(t) dt`` (value-seconds), exact for the step function."""
        return self._cumulative(t1) - self._cumulative(t0)

    def mean_between(self, t0: float, t1: float) -> float:
        """Average value over ``[t0, t1]`` (the value at ``t0`` when the span is empty)."""
        return self.at(t0) if t1 <= t0 else self.integral(t0, t1) / (t1 - t0)

    def window(self, t0: float, hours: int) -> tuple[float, ...]:
        """``hours`` hourly values from ``t0`` (a forecast-shaped slice)."""
        return tuple(self.at(t0 + k * HOUR) for k in range(hours))


def read_hourly_csv(
    path: str | Path,
    column: str,
    time_column: str | None = None,
    scale: float = 1.0,
    unit: str = "",
) -> HourlySeries:
    """Read one column of an hourly CSV file as a series.

    ``time_column`` defaults to the first column; its first row gives the
    series start and the rows are taken as consecutive hours: an empty value
    carries the previous hour's forward, a repeated timestamp (a daylight-saving
    change) is skipped, and a gap of more than three hours is an error.
    ``scale`` multiplies every value (e.g. 0.001 for EUR/MWh -> EUR/kWh).
    Raises ``InvalidTrace`` naming the file, the row and the column.
    """
    p = Path(path)
    if not p.is_file():
        raise InvalidTrace.single(str(p), "", "no such series file; give the path of a CSV file")
    with p.open(encoding="utf-8", errors="replace", newline="") as fh:
        reader = csv.reader(fh)
        try:
            names = next(reader)
        except StopIteration:
            raise InvalidTrace.single(str(p), "", "the file is empty") from None
        if column not in names:
            raise InvalidTrace.single(
                str(p), "column", f"no column {column!r} in the header line ({len(names)} columns)"
            )
        tcol = names.index(time_column) if time_column else 0
        if time_column and time_column not in names:
            raise InvalidTrace.single(str(p), "time_column", f"no column {time_column!r}")
        vcol = names.index(column)
        times: list[float] = []
        values: list[float] = []
        filled = 0
        for row_no, row in enumerate(reader, 2):
            if not row:
                continue
            try:
                t = parse_time(row[tcol])
                cell = row[vcol].strip()
                if not cell and values:  # a missing hour: carry the previous value forward
                    value, filled = values[-1], filled + 1
                else:
                    value = float(cell) * scale
                if not math.isfinite(value):
                    raise ValueError("not finite")
            except (ValueError, IndexError):
                # the message names the row, never its content (the file may not be the user's)
                raise InvalidTrace(
                    str(p),
                    [Problem(f"row {row_no}", "expected a timestamp and a finite number")],
                ) from None
            if times and t <= times[-1]:
                continue  # a repeated hour (a daylight-saving change in local-time files)
            times.append(t)
            values.append(value)
    if not values:
        raise InvalidTrace.single(str(p), "", "no data rows")
    steps = np.diff(np.asarray(times))
    if steps.size and np.any(steps > 3 * HOUR):
        bad = int(np.argmax(steps > 3 * HOUR)) + 3
        raise InvalidTrace.single(
            str(p), f"row {bad}", "timestamps must increase by about one hour per row"
        )
    return HourlySeries(times[0], np.asarray(values, dtype=float), unit, f"{p.name}:{column}")
