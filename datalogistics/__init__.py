"""Data logistics: data items, ephemeral buffers, transfers and data project plans.

Instead of a global distributed file system, data moves between sites through
ephemeral buffers (bounded size and lifetime, append-only, write-once tags).
Public API::

    from datalogistics import DataItem, Sensitivity
    item = DataItem(id="ms-0001", size="12 GB", allowed_jurisdictions=["FR"])
    item.may_reside_in("DE")   # False
"""

from datalogistics.errors import DataLogisticsError
from datalogistics.items import DataItem, Sensitivity

__all__ = ["DataItem", "DataLogisticsError", "Sensitivity"]
