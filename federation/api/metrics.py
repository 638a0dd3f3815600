"""Prometheus metrics in the text exposition format (0.0.4), without a client library.

Counters and a latency histogram per route template (``/api/v1/sites/{site_id}``,
never the raw path, so cardinality stays bounded), plus gauges computed when
scraped. The histogram follows Prometheus' convention: cumulative buckets
``le``, ``_sum`` and ``_count``.

``render(detailed=False)`` is what an anonymous scraper or a researcher sees:
samples labelled with a project are summed over projects (no project is
named) and the count of refused tokens is left out.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

GaugeReader = Callable[[], Iterable[tuple[dict[str, str], float]]]
"""Returns the samples of a gauge (labels, value) when scraped."""

LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
TELEMETRY_DUPLICATES = "telemetry_duplicates"
"""The tally (``Metrics.count``) of resent samples the ingest route answered as duplicates."""
PRIVATE_LABELS = frozenset({"project"})
"""Labels only a detailed rendering shows."""


def _hide_private(
    samples: Iterable[tuple[dict[str, str], float]],
) -> list[tuple[dict[str, str], float]]:
    """``samples`` summed over their private labels (one sample per remaining label set)."""
    sums: dict[tuple[tuple[str, str], ...], float] = {}
    for labels, value in samples:
        key = tuple(sorted((k, v) for k, v in labels.items() if k not in PRIVATE_LABELS))
        sums[key] = sums.get(key, 0.0) + value
    return [(dict(key), value) for key, value in sums.items()]


def _labels(labels: Mapping[str, str]) -> str:
    if not labels:
        return ""
    inner = ",".join(
        f'{k}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
        for k, v in sorted(labels.items())
    )
    return "{" + inner.replace("\n", "\\n") + "}"


@dataclass
class _Histogram:
    counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS_S) + 1))
    total: float = 0.0
    n: int = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(LATENCY_BUCKETS_S, value)] += 1
        self.total += value
        self.n += 1


class Metrics:
    """Thread-safe request counters and latency histograms, rendered for Prometheus."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: dict[tuple[str, str, str], int] = {}
        self._latency: dict[tuple[str, str], _Histogram] = {}
        self._auth_failures = 0
        self._counts: dict[str, int] = {}
        self._gauges: list[
            tuple[str, str, Callable[[], Iterable[tuple[dict[str, str], float]]], str]
        ] = []

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        with self._lock:
            key = (method, route, str(status))
            self._requests[key] = self._requests.get(key, 0) + 1
            self._latency.setdefault((method, route), _Histogram()).observe(seconds)

    def auth_failure(self) -> None:
        with self._lock:
            self._auth_failures += 1

    def count(self, event: str, n: int = 1) -> None:
        """Add ``n`` to the tally of ``event`` (read back with ``counted``)."""
        with self._lock:
            self._counts[event] = self._counts.get(event, 0) + n

    def counted(self, event: str) -> int:
        """How many ``event`` were counted so far."""
        with self._lock:
            return self._counts.get(event, 0)

    def gauge(self, name: str, help_text: str, read: GaugeReader) -> None:
        """Register a gauge whose samples ``read()`` returns when scraped."""
        self._gauges.append((name, help_text, read, "gauge"))

    def counter(self, name: str, help_text: str, read: GaugeReader) -> None:
        """Register a count that only grows (name ending in ``_total``), read when scraped."""
        self._gauges.append((name, help_text, read, "counter"))

    def render(self, detailed: bool = True) -> str:
        """The exposition text of every metric (``detailed=False``: nothing per project)."""
        lines: list[str] = []
        with self._lock:
            requests = dict(self._requests)
            latency = {k: (list(h.counts), h.total, h.n) for k, h in self._latency.items()}
            failures = self._auth_failures
        lines += [
            "# HELP continuum_http_requests_total HTTP requests answered, by route and status.",
            "# TYPE continuum_http_requests_total counter",
        ]
        for (method, route, status), n in sorted(requests.items()):
            labels = _labels({"method": method, "route": route, "status": status})
            lines.append(f"continuum_http_requests_total{labels} {n}")
        lines += [
            "# HELP continuum_http_request_duration_seconds Time to answer a request.",
            "# TYPE continuum_http_request_duration_seconds histogram",
        ]
        for (method, route), (counts, total, n) in sorted(latency.items()):
            cumulative = 0
            for bound, c in zip((*LATENCY_BUCKETS_S, float("inf")), counts, strict=True):
                cumulative += c
                le = "+Inf" if bound == float("inf") else f"{bound:g}"
                labels = _labels({"method": method, "route": route, "le": le})
                lines.append(f"continuum_http_request_duration_seconds_bucket{labels} {cumulative}")
            base = _labels({"method": method, "route": route})
            lines.append(f"continuum_http_request_duration_seconds_sum{base} {total:.6f}")
            lines.append(f"continuum_http_request_duration_seconds_count{base} {n}")
        if detailed:
            lines += [
                "# HELP continuum_auth_failures_total Requests refused for a missing or bad token.",
                "# TYPE continuum_auth_failures_total counter",
                f"continuum_auth_failures_total {failures}",
            ]
        for name, help_text, read, kind in self._gauges:
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
            samples = list(read()) if detailed else _hide_private(read())
            for labels_dict, value in samples:
                lines.append(f"{name}{_labels(labels_dict)} {value:g}")
        return "\n".join(lines) + "\n"


__all__ = ["LATENCY_BUCKETS_S", "PRIVATE_LABELS", "TELEMETRY_DUPLICATES", "Metrics"]
