"""Site connectors: how the executor reaches a site (``SiteConnector``).

``LocalConnector`` (processes in a directory), ``DaskConnector`` (a Dask
scheduler; import ``orchestrator.connectors.dask``), ``SimulatedConnector``
(tasks that take time on a clock).
"""

from orchestrator.connectors.base import (
    ConnectorError,
    SiteConnector,
    TaskInfo,
    TaskSpec,
    TaskStatus,
)
from orchestrator.connectors.local import LocalConnector
from orchestrator.connectors.simulated import SimulatedConnector

__all__ = [
    "ConnectorError",
    "LocalConnector",
    "SimulatedConnector",
    "SiteConnector",
    "TaskInfo",
    "TaskSpec",
    "TaskStatus",
]
