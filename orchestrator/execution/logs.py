"""Step logs: each attempt's stdout and stderr, kept bounded, read whole or followed.

A task writes its streams into files of its task directory (a local site) or its agent ships
them to the orchestrator's mirror of the task (a pull site). What is kept of a stream is
bounded (``limit`` bytes): beyond it the head and the tail are kept, joined by a note that
says how many bytes were left out (``bound_log`` for a local task when it finishes; the agent
ships a pull task's streams that way). ``read_log`` reads a stream with the same bound, and
``follow_log`` yields what a running step writes as it writes it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

STREAMS = ("stdout", "stderr")
DEFAULT_LIMIT = 1024 * 1024


def truncation_note(dropped: int) -> bytes:
    return f"\n[... {dropped} bytes of this stream not kept ...]\n".encode()


@dataclass(frozen=True)
class LogText:
    """What is kept of one stream: its text, its size on disk, whether a part is left out."""

    text: str
    size: int
    truncated: bool


def read_log(path: Path | None, limit: int = DEFAULT_LIMIT) -> LogText:
    """The stream in ``path`` (empty when there is none), its middle left out past ``limit``."""
    if path is None or not path.is_file():
        return LogText("", 0, False)
    size = path.stat().st_size
    with open(path, "rb") as f:
        if size <= limit:
            data = f.read()
            cut = b" bytes of this stream not kept ...]" in data  # bounded when it finished
            return LogText(data.decode(errors="replace"), len(data), cut)
        half = limit // 2
        head = f.read(half)
        f.seek(size - half)
        tail = f.read()
    text = (head + truncation_note(size - 2 * half) + tail).decode(errors="replace")
    return LogText(text, size, True)


def bound_log(path: Path | None, limit: int = DEFAULT_LIMIT) -> bool:
    """Cut the file to its head and tail (``limit`` bytes in all) with a note between; True
    when it was cut. Written beside and renamed into place: a reader sees one or the other."""
    if path is None or not path.is_file():
        return False
    size = path.stat().st_size
    if size <= limit:
        return False
    half = limit // 2
    tmp = path.with_name(path.name + ".bound")
    with open(path, "rb") as src, open(tmp, "wb") as dst:
        dst.write(src.read(half))
        dst.write(truncation_note(size - 2 * half))
        src.seek(size - half)
        dst.write(src.read())
    os.replace(tmp, path)
    return True


def follow_log(
    path: Callable[[], Path | None],
    running: Callable[[], bool],
    *,
    poll_s: float = 0.25,
    limit: int = DEFAULT_LIMIT,
    timeout_s: float | None = None,
) -> Iterator[bytes]:
    """Yield the stream's bytes as they are written, until the step stops running and
    everything written is sent (or ``timeout_s``). ``path`` is asked again each time: an
    attempt that starts later gets its own file. At most ``limit`` bytes are sent."""
    sent = 0
    end = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        alive = running()
        p = path()
        if p is not None and p.is_file():
            with open(p, "rb") as f:
                f.seek(sent)
                chunk = f.read(max(0, limit - sent))
            if chunk:
                sent += len(chunk)
                yield chunk
                continue
        if not alive or sent >= limit or (end is not None and time.monotonic() > end):
            return
        time.sleep(poll_s)


__all__ = ["DEFAULT_LIMIT", "STREAMS", "LogText", "bound_log", "follow_log", "read_log"]
