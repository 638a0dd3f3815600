"""``continuum serve``: local mode prints one token and serves loopback only."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx


def _continuum(*args: str, tmp: Path) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONTINUUM_")}
    return subprocess.Popen(
        [sys.executable, "-m", "federation.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp,
    )


def test_serve_in_local_mode_prints_one_admin_token(tmp_path: Path) -> None:
    demo = Path(__file__).resolve().parents[2] / "federation" / "examples" / "demo.yaml"
    proc = _continuum(
        "serve",
        "--port",
        "0",
        "--data-dir",
        str(tmp_path / "data"),
        "--federation",
        str(demo),
        tmp=tmp_path,
    )
    try:
        assert proc.stdout is not None
        lines: list[str] = []
        while not any(line.startswith("    Authorization: Bearer") for line in lines):
            line = proc.stdout.readline()
            assert line, f"serve exited: {''.join(lines)}"
            lines.append(line)
        text = "".join(lines)
        url = next(w for w in text.split() if w.startswith("http://127.0.0.1:"))
        token = text.split("    Authorization: Bearer ")[-1].split()[0]
        assert f"registered the federation of {demo}" in text
        assert f"{url}/#token={token}" in text  # the dashboard's address, at start only
        with httpx.Client(base_url=url, timeout=30) as c:
            assert c.get("/health").json()["mode"] == "local"
            assert c.get("/api/v1/sites").status_code == 401
            r = c.get("/api/v1/sites", headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 200
            assert len(r.json()) == 5
            whole = c.get("/api/v1/federation", headers={"Authorization": f"Bearer {token}"})
            assert whole.json()["links"]  # links and projects too, not only the sites
            assert whole.json()["organisations"]
        assert (tmp_path / "data" / "continuum.db").exists()
        assert (tmp_path / "data" / "buffers").is_dir()
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    rest = proc.stdout.read() if proc.stdout else ""
    assert token not in rest  # printed once


def test_serve_refuses_a_public_interface_without_keycloak(tmp_path: Path) -> None:
    proc = _continuum("serve", "--host", "0.0.0.0", "--data-dir", str(tmp_path), tmp=tmp_path)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert "refusing to bind to '0.0.0.0' without Keycloak" in err
    assert not (tmp_path / "continuum.db").exists()
