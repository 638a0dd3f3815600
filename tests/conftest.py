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
from typing import TYPE_CHECKING, NoReturn

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


def missing(reason: str) -> NoReturn:
    """A real component a test needs is absent (PostgreSQL, the OpenID provider, Slurm, a
    browser, the shared data): under ``CI=true`` that is a failure with the reason, never a
    silent skip; elsewhere the test skips, saying why."""
    if os.environ.get("CI", "").strip().lower() in ("1", "true", "yes"):
        pytest.fail(f"{reason} (CI=true: a missing component fails the run)", pytrace=False)
    pytest.skip(reason)


def shared_path(*parts: str) -> Path:
    """A path under ../shared/data; skips the test when it is missing."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        missing(f"shared data not available: {path} (set CONTINUUM_SHARED_DATA)")
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The ``shared/data`` folder beside the checkout (skips when absent)."""
    if not SHARED_DATA.is_dir():
        missing(f"shared data not available at {SHARED_DATA} (set CONTINUUM_SHARED_DATA)")
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


class PostgresCluster:
    """A throw-away PostgreSQL cluster on a free loopback port, started and stopped by PID.

    ``kill()`` ends the postmaster with SIGKILL (a crash: no checkpoint, nothing flushed
    beyond what PostgreSQL acknowledged, fsync on); ``start()`` starts it again on the same
    data and port (crash recovery replays the WAL).
    """

    def __init__(self) -> None:
        import pwd
        import shutil
        import socket
        import subprocess
        import tempfile

        initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
        if not initdb or not pg_ctl:
            missing(
                "PostgreSQL server binaries (initdb, pg_ctl) not installed "
                "(`make test` installs them as root)"
            )
        try:
            import psycopg  # noqa: F401
        except ImportError:
            missing("the psycopg driver is not installed")
        self.pg_ctl = pg_ctl
        # Not under pytest's temporary folder: that one is private to the user running
        # the tests, and the cluster may have to belong to the postgres user.
        self.data = Path(tempfile.mkdtemp(prefix="continuum-pg-"))
        self.prefix: list[str] = []
        if os.geteuid() == 0:
            try:
                pw = pwd.getpwnam("postgres")
            except KeyError:
                missing("running as root and there is no 'postgres' user to own the cluster")
            runuser = shutil.which("runuser")
            if runuser is None:
                missing("running as root without runuser")
            os.chown(self.data, pw.pw_uid, pw.pw_gid)
            self.prefix = [runuser, "-u", "postgres", "--"]
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        subprocess.run(
            [*self.prefix, initdb, "-D", str(self.data), "-U", "postgres", "-A", "trust"],
            check=True,
            capture_output=True,
        )
        self.pid = 0
        self.start()

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        import subprocess

        # fsync stays on (the default): the crash tests rely on what PostgreSQL acknowledged
        options = f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1"
        ctl = [*self.prefix, self.pg_ctl, "-D", str(self.data), "-l", str(self.data / "log")]
        subprocess.run(
            [*ctl, "-o", options, "-w", "-t", "120", "start"],
            check=True,
            capture_output=True,
        )
        self.pid = int((self.data / "postmaster.pid").read_text().split()[0])

    def kill(self) -> None:
        """SIGKILL the postmaster (a crash), then wait until its children are gone too."""
        import time

        children = [int(p.name) for p in Path("/proc").iterdir() if _parent(p) == self.pid]
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, 9)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and any(Path(f"/proc/{c}").exists() for c in children):
            time.sleep(0.05)

    def stop(self) -> None:
        import shutil
        import subprocess
        import time

        subprocess.run(
            [*self.prefix, self.pg_ctl, "-D", str(self.data), "-m", "fast", "-w", "stop"],
            capture_output=True,
        )
        with contextlib.suppress(ProcessLookupError):  # by PID if pg_ctl could not
            os.kill(self.pid, 9)
        time.sleep(0.1)
        shutil.rmtree(self.data, ignore_errors=True)


def _parent(proc: Path) -> int:
    """The parent PID of the process behind a ``/proc`` entry (0 when unreadable)."""
    if not proc.name.isdigit():
        return 0
    try:
        stat = (proc / "stat").read_text()
    except OSError:
        return 0
    return int(stat.rsplit(") ", 1)[1].split()[1])


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    """The session's PostgreSQL cluster (``make test`` installs the server from Debian's
    packages when it can; as root the cluster belongs to the ``postgres`` user, since initdb
    refuses root)."""
    cluster = PostgresCluster()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def postgres_url(postgres: PostgresCluster) -> str:
    """The SQLAlchemy URL of the session's PostgreSQL cluster."""
    return postgres.url


# -- Slurm, started and stopped by the test suite -----------------------------------------


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
        missing(reason)
    # A short path: munged's socket path must fit in a sockaddr_un.
    root = Path(tempfile.mkdtemp(prefix="continuum-slurm-"))
    cluster = LocalSlurm(root, nodes=3, partitions={"debug": ("n1", "n2"), "slow": ("n3",)})
    try:
        cluster.start()
    except RuntimeError as exc:
        cluster.stop()
        missing(f"the local Slurm cluster did not start: {exc}")
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
