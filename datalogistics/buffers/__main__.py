"""``python -m datalogistics.buffers --site ID --dir PATH --port N``: run one buffer service.

The same as ``continuum buffer serve`` without the rest of the CLI (used by
tests and benchmarks that start services as separate processes).
"""

from __future__ import annotations

import argparse
import os

from datalogistics.buffers.service import serve


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m datalogistics.buffers")
    p.add_argument("--site", required=True)
    p.add_argument("--dir", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--quota-bytes", type=int, default=10**12)
    p.add_argument("--quota-count", type=int, default=10_000)
    p.add_argument("--no-fsync", action="store_true")
    p.add_argument("--max-ttl", type=float, default=7 * 86_400.0, help="seconds")
    p.add_argument(
        "--peer",
        action="append",
        default=[],
        help="base URL of a buffer service this one pushes buffers to (repeatable)",
    )
    p.add_argument(
        "--data-port",
        type=int,
        default=0,
        help="TCP port where peer services push appends (0: a free port; -1: none)",
    )
    a = p.parse_args(argv)
    if not -1 <= a.data_port <= 65535:
        p.error(f"--data-port must be -1 (none), 0 (a free port) or a port, got {a.data_port}")
    serve(
        a.site,
        a.dir,
        a.port,
        host=a.host,
        secret=os.environ.get("CONTINUUM_BUFFER_SECRET"),
        quota_bytes=a.quota_bytes,
        quota_count=a.quota_count,
        fsync=not a.no_fsync,
        max_ttl=a.max_ttl,
        peers=a.peer,
        data_port=None if a.data_port < 0 else a.data_port,
    )


if __name__ == "__main__":
    main()
