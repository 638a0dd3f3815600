"""Site connectors: how the executor reaches a site (``SiteConnector``).

``LocalConnector`` (processes in a directory), ``DaskConnector`` (a Dask
scheduler; import ``orchestrator.connectors.dask``), ``PullConnector`` (a
queue that a site agent inside an HPC zone pulls from through the API;
``SiteAgent`` is that agent, running tasks itself or through the site's Slurm),
``SimulatedConnector`` (tasks that take time on a clock, queued by a ``SimulatedSite``
model; ``SimulatedTransfers`` times the transfers of simulated runs), ``SlurmConnector`` (each
attempt of a step a batch job of a Slurm cluster; ``LocalSlurm`` starts a real one on this
machine).
"""

from orchestrator.connectors.agent import SiteAgent
from orchestrator.connectors.base import (
    ConnectorError,
    SiteConnector,
    TaskInfo,
    TaskSpec,
    TaskStatus,
)
from orchestrator.connectors.local import LocalConnector
from orchestrator.connectors.pull import PullConnector
from orchestrator.connectors.simulated import (
    SimulatedConnector,
    SimulatedSite,
    SimulatedTask,
    SimulatedTransfers,
)
from orchestrator.connectors.slurm import SlurmConnector
from orchestrator.connectors.slurmlocal import LocalSlurm

__all__ = [
    "ConnectorError",
    "LocalConnector",
    "LocalSlurm",
    "PullConnector",
    "SimulatedConnector",
    "SimulatedSite",
    "SimulatedTask",
    "SimulatedTransfers",
    "SiteAgent",
    "SiteConnector",
    "SlurmConnector",
    "TaskInfo",
    "TaskSpec",
    "TaskStatus",
]
