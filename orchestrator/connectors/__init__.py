"""Site connectors: how the executor reaches a site (``SiteConnector``).

``LocalConnector`` (processes in a directory), ``DaskConnector`` (a Dask
scheduler; import ``orchestrator.connectors.dask``), ``PullConnector`` (a
queue that a site agent inside an HPC zone pulls from through the API;
``SiteAgent`` is that agent), ``SimulatedConnector`` (tasks that take time on
a clock, queued by a ``SimulatedSite`` model; ``SimulatedTransfers`` times the
transfers of simulated runs).
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

__all__ = [
    "ConnectorError",
    "LocalConnector",
    "PullConnector",
    "SimulatedConnector",
    "SimulatedSite",
    "SimulatedTask",
    "SimulatedTransfers",
    "SiteAgent",
    "SiteConnector",
    "TaskInfo",
    "TaskSpec",
    "TaskStatus",
]
