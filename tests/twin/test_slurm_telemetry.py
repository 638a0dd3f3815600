"""The twin fed by a real Slurm scheduler (``twin.slurm_source``), against the test
session's cluster: utilisation, pending work, nodes out of service, degraded and down."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from federation.model import Federation
from orchestrator.connectors.slurmlocal import LocalSlurm
from twin import FederationTwin, SiteStatus, TelemetrySample
from twin.slurm_source import (
    SlurmCommandError,
    SlurmTelemetry,
    SlurmUnreachable,
    node_in_service,
    parse_duration,
    read_partition,
    slurm_command,
)


def until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def test_slurm_durations_and_node_states() -> None:
    assert parse_duration("1:00") == 60.0  # minutes:seconds, as squeue prints it
    assert parse_duration("1:00:00") == 3600.0
    assert parse_duration("2-03:00:00") == 2 * 86400 + 3 * 3600
    assert parse_duration("2-3") == 2 * 86400 + 3 * 3600  # days-hours
    assert parse_duration("45") == 45 * 60  # minutes
    assert parse_duration("UNLIMITED") is None
    assert parse_duration("NOT_SET") is None
    for state in ("idle", "mixed", "allocated", "completing"):
        assert node_in_service(state), state
    for state in ("down", "down*", "drained", "draining", "drain", "idle*", "fail", "maint"):
        assert not node_in_service(state), state


def test_a_missing_or_silent_slurm_is_unreachable() -> None:
    with pytest.raises(SlurmUnreachable, match="not installed"):
        slurm_command(["continuum-no-such-squeue"])
    with pytest.raises(SlurmUnreachable, match="did not answer"):
        slurm_command(["sleep", "10"], timeout=0.2)
    with pytest.raises(SlurmCommandError, match="exited 3"):
        slurm_command(["sh", "-c", "echo invalid option >&2; exit 3"])


def site_federation() -> Federation:
    return Federation.from_dict(
        {
            "name": "t",
            "sites": [
                {
                    "id": "hpc",
                    "kind": "hpc",
                    "cores": 4,
                    "memory": "8 GB",
                    "power_idle_w": 1,
                    "power_busy_w": 5,
                    "price_per_core_hour": 0.01,
                    "jurisdiction": "FR",
                    "buffer_capacity": "1 GB",
                    "connector": {"kind": "slurm", "partition": "debug"},
                }
            ],
        }
    )


def test_the_twin_sees_the_partition_as_the_scheduler_does(
    slurm: LocalSlurm, tmp_path: Path
) -> None:
    source = SlurmTelemetry("hpc", "debug", min_interval_s=0.0)
    idle = source.poll(1000.0)
    assert len(idle) == 1
    assert (idle[0].utilisation, idle[0].backlog, idle[0].in_service, idle[0].up) == (
        0.0,
        0.0,
        1.0,
        True,
    )
    # two jobs of 2 CPUs take the partition's 4; a third waits with 1 CPU for 10 minutes
    for _ in range(2):
        slurm_command(
            ["sbatch", "-p", "debug", f"--chdir={tmp_path}", "-c", "2", "--wrap=sleep 300"]
        )
    slurm_command(["sbatch", "-p", "debug", f"--chdir={tmp_path}", "-t", "10", "--wrap=sleep 1"])
    until(lambda: read_partition("debug").cpus_allocated == 4, 60, "4 CPUs allocated")
    until(lambda: read_partition("debug").pending_jobs == 1, 60, "one job pending")
    busy = source.poll(1001.0)[0]
    assert busy.utilisation == 1.0
    assert busy.backlog == 600.0  # 1 CPU x 10 minutes
    assert busy.private == {"partition": "debug"}
    # a node drained: the partition is degraded; its name stays private
    slurm.set_nodes("drain", ("n1",))
    twin = FederationTwin(site_federation())
    twin.ingest([TelemetrySample(site="hpc", timestamp=1000.0, utilisation=0.0, in_service=1.0)])
    until(lambda: read_partition("debug").cpus_in_service == 2, 30, "n1 out of service")
    degraded = source.poll(1002.0)[0]
    assert degraded.in_service == 0.5
    assert degraded.up
    assert degraded.private["nodes_out_of_service"] == "n1"
    twin.ingest([degraded])
    assert twin.status(1002.0)["hpc"] is SiteStatus.DEGRADED
    view = twin.view(1002.0)["hpc"]
    assert view.status is SiteStatus.DEGRADED
    assert view.health == 0.5
    assert "n1" not in view.model_dump_json()  # node names never leave the twin
    # every node down: the site is down
    slurm.set_nodes("down", ("n1", "n2"))
    until(lambda: not read_partition("debug").up, 30, "no node in service")
    down = source.poll(1003.0)[0]
    assert not down.up
    assert down.in_service == 0.0
    twin.ingest([down])
    assert twin.status(1003.0)["hpc"] is SiteStatus.DOWN
    # back in service: ok again
    slurm.restore()
    slurm.cancel_all("debug")
    until(lambda: read_partition("debug").utilisation == 0.0, 60, "the partition idle again")
    back = source.poll(1004.0)[0]
    twin.ingest([back])
    assert twin.status(1004.0)["hpc"] is SiteStatus.OK


def test_the_source_reads_at_most_once_per_interval(slurm: LocalSlurm) -> None:
    source = SlurmTelemetry("hpc", "debug", min_interval_s=3600.0)
    assert len(source.poll(1.0)) == 1
    assert source.poll(2.0) == []  # within the interval: nothing new
    assert source.current() is source.last
