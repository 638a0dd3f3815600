"""Reader of the Parallel Workloads Archive's Standard Workload Format (SWF).

An SWF file is a header of ``;``-comments (``; Key: value`` lines such as
``MaxProcs``, ``UnixStartTime``, ``Acknowledge``) followed by one job per
line, 18 whitespace-separated fields, ``-1`` meaning "missing"
(Feitelson, Tsafrir, Krakov, "Experience with using the Parallel Workloads
Archive", JPDC 2014; https://www.cs.huji.ac.il/labs/parallel/workload/swf.html):

====  ===============================  ====================================
 #    field                            used here as
====  ===============================  ====================================
 1    job number                       ``job_id``
 2    submit time (s from log start)   ``submit``
 3    wait time (s)                    ``wait`` (the recorded wait)
 4    run time (s)                     ``run``
 5    allocated processors             ``procs``
 6    average CPU time used            -
 7    used memory (KB)                 -
 8    requested processors             ``req_procs``
 9    requested time (s)               ``req_time`` (the walltime estimate)
 10   requested memory                 -
 11   status (1 done, 0 failed, 5 cancelled)  ``status``
 12   user id                          ``user``
 13-14 group, executable                -
 15   queue number                     ``queue`` (-1: none)
 16   partition number                 ``partition`` (-1: none)
 17-18 preceding job, think time        -
====  ===============================  ====================================

A missing recorded wait (-1: some logs give start times as submit times, e.g.
NASA-iPSC) is NaN in ``wait``. The header's structure is read as well: the
machine's size (``MaxProcs``, else ``MaxNodes``), its queues and partitions
(``MaxQueues``, ``MaxPartitions`` and one ``Queue: <n> <description>`` or
``Partition: <n> <description>`` line each). A log compressed as the archive
distributes it (``.swf.gz``) is read as is.

Whoever publishes results from a log must credit its ``Acknowledge`` line
(``SwfTrace.acknowledge``).
"""

from __future__ import annotations

import gzip
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import numpy as np

from federation.errors import Problem
from simulations.errors import InvalidTrace

SWF_FIELDS = 18
"""Number of fields of a job line."""


@dataclass(frozen=True)
class SwfTrace:
    """The jobs of an SWF log as columns (numpy arrays of equal length), sorted by submit time.

    ``procs`` is the number of processors a job used: the allocated count, or
    the requested one when the allocated count is missing. ``req_time`` is the
    user's walltime estimate; where it is missing, the run time stands in for it.
    """

    source: str
    header: dict[str, str]
    job_id: np.ndarray
    submit: np.ndarray
    wait: np.ndarray
    run: np.ndarray
    procs: np.ndarray
    req_procs: np.ndarray
    req_time: np.ndarray
    status: np.ndarray
    user: np.ndarray
    queue: np.ndarray
    partition: np.ndarray
    notes: tuple[str, ...] = field(default=())
    queues: dict[int, str] = field(default_factory=dict)
    """Queue number -> its description, from the header's ``Queue:`` lines."""
    partitions: dict[int, str] = field(default_factory=dict)
    """Partition number -> its description, from the header's ``Partition:`` lines."""

    def __len__(self) -> int:
        return int(self.job_id.size)

    @property
    def acknowledge(self) -> str:
        """Whom the log's owners ask to credit (its ``Acknowledge`` header line)."""
        return self.header.get("Acknowledge", "")

    @property
    def max_procs(self) -> int:
        """Processors of the logged machine (``MaxProcs``, else the largest job)."""
        for key in ("MaxProcs", "MaxNodes"):
            if key in self.header:
                try:
                    return int(self.header[key].split()[0])
                except ValueError:
                    continue
        return int(self.procs.max()) if len(self) else 0

    @property
    def partition_ids(self) -> list[int]:
        """The partitions the jobs ran in (sorted; ``[-1]`` when the log has none): each a
        machine of its own (the SWF's partitions are machines of a cluster or of a grid)."""
        found = sorted({int(p) for p in np.unique(self.partition)})
        return found or [-1]

    @property
    def has_waits(self) -> bool:
        """Whether the log records waits (some give start times as submit times)."""
        return bool(np.any(~np.isnan(self.wait)))

    @property
    def unix_start(self) -> float:
        """Unix time of submit time 0 (``UnixStartTime``; 0 when absent)."""
        try:
            return float(self.header.get("UnixStartTime", "0").split()[0])
        except ValueError:
            return 0.0

    def credit(self) -> str:
        """One line crediting the log, as the Parallel Workloads Archive asks."""
        where = self.header.get("Installation", self.header.get("Computer", "unknown site"))
        ack = f"; thanks to {self.acknowledge}" if self.acknowledge else ""
        return f"{Path(self.source).name}: {where} log, Parallel Workloads Archive{ack}"

    def head(self, n: int) -> SwfTrace:
        """The first ``n`` jobs (by submit time)."""
        return self._take(slice(0, n))

    def _take(self, idx: slice | np.ndarray) -> SwfTrace:
        return SwfTrace(
            source=self.source,
            header=self.header,
            job_id=self.job_id[idx],
            submit=self.submit[idx],
            wait=self.wait[idx],
            run=self.run[idx],
            procs=self.procs[idx],
            req_procs=self.req_procs[idx],
            req_time=self.req_time[idx],
            status=self.status[idx],
            user=self.user[idx],
            queue=self.queue[idx],
            partition=self.partition[idx],
            notes=self.notes,
            queues=self.queues,
            partitions=self.partitions,
        )


def read_swf(path: str | Path, keep_zero_runtime: bool = False) -> SwfTrace:
    """Read an SWF log; jobs without a usable size or run time are dropped.

    A job is dropped when its processor count is missing (both allocated and
    requested are -1) or its run time is missing (-1); with
    ``keep_zero_runtime=False`` jobs that ran 0 s are dropped too (they occupy
    no processor time). Raises ``InvalidTrace`` naming the line of a
    malformed record.
    """
    p = Path(path)
    if not p.is_file():
        raise InvalidTrace.single(str(p), "", "no such SWF file; give the path of a .swf log")
    header: dict[str, str] = {}
    notes: list[str] = []
    numbered: dict[str, dict[int, str]] = {"Queue": {}, "Partition": {}}
    rows: list[list[float]] = []
    last_key = ""
    with _open_text(p) as fh:
        for lineno, line in enumerate(fh, 1):
            text = line.strip()
            if not text:
                continue
            if text.startswith(";"):
                body = text[1:].strip()
                key, sep, value = body.partition(":")
                if sep and key and " " not in key.strip():
                    last_key = key.strip()
                    header[last_key] = value.strip()
                    if last_key == "Note":
                        notes.append(value.strip())
                    if last_key in numbered:  # "Queue:  1  batch": one line per queue
                        num, _, what = value.strip().partition(" ")
                        if num.lstrip("-").isdigit():
                            numbered[last_key][int(num)] = what.strip()
                elif body and last_key:
                    header[last_key] = f"{header[last_key]} {body}".strip()
                continue
            parts = text.split()
            if len(parts) < SWF_FIELDS:
                raise InvalidTrace(
                    str(p),
                    [Problem(f"line {lineno}", f"{len(parts)} fields, an SWF job has 18")],
                )
            try:
                row = [float(x) for x in parts[:16]]
                if not all(map(math.isfinite, row)):
                    raise ValueError("not finite")
            except ValueError:
                raise InvalidTrace(
                    str(p), [Problem(f"line {lineno}", "a field is not a finite number")]
                ) from None
            rows.append(row)
    data = np.asarray(rows, dtype=float).reshape(-1, 16)
    alloc, req = data[:, 4], data[:, 7]
    procs = np.where(alloc > 0, alloc, req)
    run = data[:, 3]
    keep = (procs > 0) & (run >= 0)
    if not keep_zero_runtime:
        keep &= run > 0
    data, procs = data[keep], procs[keep]
    req_time = np.where(data[:, 8] > 0, data[:, 8], data[:, 3])
    wait = np.where(data[:, 2] >= 0, data[:, 2], np.nan)
    order = np.argsort(data[:, 1], kind="stable")
    return SwfTrace(
        source=str(p),
        header=header,
        job_id=data[order, 0].astype(np.int64),
        submit=data[order, 1],
        wait=wait[order],
        run=data[order, 3],
        procs=procs[order].astype(np.int64),
        req_procs=data[order, 7].astype(np.int64),
        req_time=req_time[order],
        status=data[order, 10].astype(np.int64),
        user=data[order, 11].astype(np.int64),
        queue=data[order, 14].astype(np.int64),
        partition=data[order, 15].astype(np.int64),
        notes=tuple(notes),
        queues=numbered["Queue"],
        partitions=numbered["Partition"],
    )


def _open_text(p: Path) -> TextIO:
    """The log as text: gzip-compressed (as the archive distributes logs) or plain."""
    with p.open("rb") as fh:
        magic = fh.read(2)
    if magic == b"\x1f\x8b":
        return io.TextIOWrapper(gzip.open(p, "rb"), encoding="utf-8", errors="replace")
    return p.open(encoding="utf-8", errors="replace")
