"""Data logistics: data items, ephemeral buffers, transfers and data project plans.

Instead of a global distributed file system, data moves between sites through
ephemeral buffers (bounded size and lifetime, append-only, write-once tags),
one buffer service per site (``datalogistics.buffers``), moved by a transfer
engine that verifies sha256 end to end and resumes where it stopped
(``datalogistics.transfer``). A machine-actionable data project plan (an RDA
maDMP 1.2 document, ``datalogistics.madpp``) says what data exists and where
it may go. Public API::

    from datalogistics import DataItem, DataProjectPlan, plan_transfers
    item = DataItem(id="ms-0001", size="12 GB", allowed_jurisdictions=["FR"])
    item.may_reside_in("DE")   # False
    plan = DataProjectPlan.load("dmp.json")
    plan.to_constraints().steps          # step id -> jurisdictions it may run in
    plan_transfers(flows, federation)    # buffers, TTLs and order for a placement's flows
"""

from typing import TYPE_CHECKING

from federation.lazy import lazy_exports

if TYPE_CHECKING:
    from datalogistics.errors import (
        BufferCapacityError,
        BufferServiceError,
        DataLogisticsError,
        TransferError,
    )
    from datalogistics.flows import Flow, buffer_holds, buffer_violations, peak_buffer_usage
    from datalogistics.items import DataItem, InputLocation, Sensitivity
    from datalogistics.madpp import (
        DataConstraints,
        DataLocation,
        DataProjectPlan,
        InvalidPlan,
        OrchestrationExtension,
        validate_madmp,
    )
    from datalogistics.transfer import (
        TokenBucket,
        TransferEngine,
        TransferJob,
        TransferRecord,
        link_limits,
    )
    from datalogistics.transfer_plan import (
        BufferAllocation,
        PlannedTransfer,
        TransferPlan,
        plan_transfers,
    )

if not TYPE_CHECKING:  # mypy reads the imports above; at run time they load on first use
    __getattr__, __dir__ = lazy_exports(__name__, __file__)

__all__ = [
    "BufferAllocation",
    "BufferCapacityError",
    "BufferServiceError",
    "DataConstraints",
    "DataItem",
    "DataLocation",
    "DataLogisticsError",
    "DataProjectPlan",
    "Flow",
    "InputLocation",
    "InvalidPlan",
    "OrchestrationExtension",
    "PlannedTransfer",
    "Sensitivity",
    "TokenBucket",
    "TransferEngine",
    "TransferError",
    "TransferJob",
    "TransferPlan",
    "TransferRecord",
    "buffer_holds",
    "buffer_violations",
    "link_limits",
    "peak_buffer_usage",
    "plan_transfers",
    "validate_madmp",
]
