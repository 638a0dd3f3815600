"""`continuum run` and `continuum runs ...`: plan, execute on local sites, follow and control."""

from __future__ import annotations

import re
from pathlib import Path

from tests.conftest import run_cli as cli


def test_run_then_follow_it(tmp_path: Path, examples_dir: Path) -> None:
    wf = examples_dir / "workflows" / "helloworld-forkjoin-10-chameleon.json"
    work = tmp_path / "work"
    proc = cli(
        "run",
        str(wf),
        "--synthetic",
        "--workdir",
        str(work),
        "--fail-site",
        "cloud-burst",
        "--fail-after",
        "0.3",
        "--report",
        str(tmp_path / "report"),
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    found = re.search(r"run ([0-9a-f]{12}): done", proc.stdout)
    assert found, proc.stdout
    run_id = found.group(1)
    assert "fault: site cloud-burst went down" in proc.stdout
    assert (tmp_path / "report" / "report.md").exists()
    state = str(work / "state.db")
    listed = cli("runs", "list", "--state", state, cwd=tmp_path)
    assert run_id in listed.stdout
    assert "10/10" in listed.stdout
    status = cli("runs", "status", run_id, "--state", state, cwd=tmp_path)
    assert status.returncode == 0
    assert status.stdout.count(" done ") >= 10
    step = "cpuhog_forkjoin_00000001"
    logs = cli("runs", "logs", run_id, step, "--state", state, cwd=tmp_path)
    assert logs.returncode == 0, logs.stderr
    missing = cli("runs", "logs", run_id, "nope", "--state", state, cwd=tmp_path)
    assert missing.returncode == 2
    assert "has no step 'nope'" in missing.stderr
    # a finished run stays done: every control is refused with exit 2, saying why
    for control in ("pause", "resume", "kill", "restart"):
        refused = cli("runs", control, run_id, "--state", state, cwd=tmp_path)
        assert refused.returncode == 2, (control, refused.stdout, refused.stderr)
        assert f"run {run_id} is done" in refused.stderr
    assert "10/10" in cli("runs", "list", "--state", state, cwd=tmp_path).stdout
    assert " done " in cli("runs", "list", "--state", state, cwd=tmp_path).stdout


def test_run_refuses_an_unknown_site_and_a_missing_store(
    tmp_path: Path, examples_dir: Path
) -> None:
    wf = examples_dir / "workflows" / "helloworld-forkjoin-10-chameleon.json"
    bad = cli("run", str(wf), "--fail-site", "atlantis", cwd=tmp_path)
    assert bad.returncode == 2
    assert "unknown site 'atlantis'" in bad.stderr
    none = cli("runs", "list", "--state", str(tmp_path / "nothing.db"), cwd=tmp_path)
    assert none.returncode == 2
    assert "no run store" in none.stderr
    assert not (tmp_path / "nothing.db").exists()
    assert not (tmp_path / "continuum-run").exists()  # the refused run started nothing
