"""Shared fixtures: the real data in ../shared/data, and the demo federation.

Tests that need ``../shared/data`` skip with a message when it is absent (a
checkout without the shared folder beside it); ``CONTINUUM_SHARED_DATA``
points elsewhere.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from federation.cli import main
from federation.model import Federation, load_demo_federation

if TYPE_CHECKING:
    from orchestrator.connectors.slurm import SlurmConnector
    from orchestrator.connectors.slurmlocal import LocalSlurm

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("CONTINUUM_SHARED_DATA", REPO.parent / "shared" / "data"))


def run_cli(
    *args: str, cwd: Path | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """The real console script in a fresh interpreter (as a user runs it)."""
    return subprocess.run(
        [sys.executable, "-m", "federation.cli", *args],
        cwd=cwd or REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
        timeout=timeout,
    )


def call_main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """The CLI's ``main()`` in-process: exit status, stdout, stderr."""
    with pytest.raises(SystemExit) as info:
        main(list(args))
    out, err = capsys.readouterr()
    code = info.value.code
    return (code if isinstance(code, int) else 1), out, err


def shared_path(*parts: str) -> Path:
    """A path under ../shared/data; skips the test when it is missing."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared data not available: {path} (set CONTINUUM_SHARED_DATA)")
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The ``shared/data`` folder beside the checkout (skips when absent)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not available at {SHARED_DATA} (set CONTINUUM_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def demo_federation() -> Federation:
    return load_demo_federation()


@pytest.fixture(scope="session")
def examples_dir() -> Path:
    return REPO / "examples"


# -- PostgreSQL, started and stopped by the test suite ------------------------------------


def _pg_bin(name: str) -> str | None:
    import glob
    import shutil

    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A throw-away PostgreSQL cluster on a free loopback port; its SQLAlchemy URL.

    ``make test`` installs the server from Debian's packages when it can; without
    ``initdb`` and ``pg_ctl`` (or the psycopg driver) the tests that need it skip.
    initdb refuses to run as root, so as root the cluster belongs to the
    ``postgres`` user (created by the Debian package).
    """
    import pwd
    import shutil
    import socket
    import subprocess
    import time

    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not initdb or not pg_ctl:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not installed")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("the psycopg driver is not installed")
    import tempfile

    # Not under pytest's temporary folder: that one is private to the user running
    # the tests, and the cluster may have to belong to the postgres user.
    data = Path(tempfile.mkdtemp(prefix="continuum-pg-"))
    prefix: list[str] = []
    if os.geteuid() == 0:
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to own the cluster")
        runuser = shutil.which("runuser")
        if runuser is None:
            pytest.skip("running as root without runuser")
        os.chown(data, pw.pw_uid, pw.pw_gid)
        prefix = [runuser, "-u", "postgres", "--"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    subprocess.run(
        [*prefix, initdb, "-D", str(data), "-U", "postgres", "-A", "trust", "--no-sync"],
        check=True,
        capture_output=True,
    )
    options = f"-p {port} -k {data} -c listen_addresses=127.0.0.1 -c fsync=off"
    subprocess.run(
        [*prefix, pg_ctl, "-D", str(data), "-o", options, "-l", str(data / "log"), "-w", "start"],
        check=True,
        capture_output=True,
    )
    pid = int((data / "postmaster.pid").read_text().split()[0])
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [*prefix, pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop"], capture_output=True
        )
        with contextlib.suppress(ProcessLookupError):  # by PID if pg_ctl could not
            os.kill(pid, 9)
        time.sleep(0.1)
        shutil.rmtree(data, ignore_errors=True)


# -- Slurm, started and stopped by the test suite -----------------------------------------


def require_component(reason: str) -> None:
    """A real component a test needs is missing: under ``CI=true`` that is a failure with
    its reason (never a silent skip); elsewhere the test skips, saying why."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI needs this component: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def slurm_session() -> Iterator[LocalSlurm]:
    """A real single-host Slurm cluster for the session: munged, slurmctld and three slurmd
    (2 CPUs each; partition ``debug`` of nodes n1 and n2, partition ``slow`` of n3 for a
    job that outlives a test) started by PID with a configuration under a temporary folder,
    ``SLURM_CONF`` pointing at it for the session, stopped at its end.

    ``make test`` installs Slurm from Debian's packages when it can (root with apt-get).
    """
    import shutil
    import tempfile

    from orchestrator.connectors.slurmlocal import LocalSlurm, slurm_missing

    reason = slurm_missing()
    if reason is not None:
        require_component(reason)
    # A short path: munged's socket path must fit in a sockaddr_un.
    root = Path(tempfile.mkdtemp(prefix="continuum-slurm-"))
    cluster = LocalSlurm(root, nodes=3, partitions={"debug": ("n1", "n2"), "slow": ("n3",)})
    try:
        cluster.start()
    except RuntimeError as exc:
        cluster.stop()
        require_component(f"the local Slurm cluster did not start: {exc}")
    before = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(cluster.conf)
    try:
        yield cluster
    finally:
        cluster.cancel_all()
        cluster.stop()
        if before is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = before
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def slurm_time_limited(
    slurm_session: LocalSlurm, tmp_path_factory: pytest.TempPathFactory
) -> tuple[SlurmConnector, str]:
    """A task that only its time limit ends, submitted with the session's first Slurm test:
    Slurm enforces limits in whole minutes and checks them about every 30 s, so the wait
    overlaps the other tests (the connector's time-limit test checks the outcome). It runs
    on partition ``slow``, which no other test touches; the tests that restart the
    controller come after that check (tests/orchestrator/test_slurm_run.py)."""
    from orchestrator.connectors.base import TaskSpec
    from orchestrator.connectors.slurm import SlurmConnector

    conn = SlurmConnector("hpc", tmp_path_factory.mktemp("limit"), partition="slow")
    # work 1 core-second: the limit is min_time_s (60 s, one Slurm minute)
    task = TaskSpec(run_id="r1", step_id="endless", attempt=1, command="sleep 600", work=1.0)
    return conn, conn.submit(task)


@pytest.fixture
def slurm(
    slurm_session: LocalSlurm, slurm_time_limited: tuple[SlurmConnector, str]
) -> Iterator[LocalSlurm]:
    """The session's Slurm cluster for one test: afterwards the jobs of partition ``debug``
    are cancelled and its nodes are back in service."""
    yield slurm_session
    slurm_session.cancel_all("debug")
    slurm_session.restore()
