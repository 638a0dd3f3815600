"""Run one task in its directory, at most once: ``python -m orchestrator.connectors.runner DIR``.

The task directory holds ``spec.json`` (command, environment). The runner

1. claims the task by creating ``DIR/claim`` exclusively (``O_CREAT | O_EXCL``);
   if the claim exists another runner has (or had) the task, and this one exits
   without running anything: this is what makes re-submission after a crash
   of the orchestrator safe (exactly-once, together with step 3);
2. runs the command with stdout and stderr in ``DIR/stdout`` and ``DIR/stderr``;
3. writes ``DIR/result.json`` (exit code, start and end times) atomically
   (temporary file, fsync, rename, fsync of the directory).

It runs in a session of its own, so killing the orchestrator does not kill
the task; the orchestrator finds the result when it comes back.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

CLAIM = "claim"
RESULT = "result.json"
SPEC = "spec.json"


def write_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write JSON to ``path`` so that readers see either nothing or all of it."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def claim(task_dir: Path) -> bool:
    """Create the claim file exclusively; False when someone already claimed the task."""
    try:
        fd = os.open(task_dir / CLAIM, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    try:
        os.write(fd, json.dumps({"pid": os.getpid(), "at": time.time()}).encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    return True


def run_task(task_dir: Path) -> int | None:
    """Claim and run the task in ``task_dir``; None when it was already claimed."""
    if not claim(task_dir):
        return None
    spec = json.loads((task_dir / SPEC).read_text(encoding="utf-8"))
    command = spec["command"]
    env = {**os.environ, **spec.get("env", {}), "CONTINUUM_TASK_DIR": str(task_dir)}
    started = time.time()
    with (
        open(task_dir / "stdout", "wb") as out,
        open(task_dir / "stderr", "wb") as err,
    ):
        try:
            proc = subprocess.run(
                command,
                shell=isinstance(command, str),
                cwd=task_dir,
                env=env,
                stdout=out,
                stderr=err,
                check=False,
            )
            code = proc.returncode
        except OSError as exc:
            err.write(f"cannot start the command: {exc}\n".encode())
            code = 127
    write_atomic(
        task_dir / RESULT, {"exit_code": code, "started_at": started, "ended_at": time.time()}
    )
    return code


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m orchestrator.connectors.runner TASK_DIR", file=sys.stderr)
        return 2
    run_task(Path(argv[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
