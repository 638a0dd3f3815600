"""Errors of the ``datalogistics`` package.

Everything the package raises derives from ``DataLogisticsError``. The buffer
errors carry no HTTP status: the service (``datalogistics.buffers.service``)
maps each class to one status in a single table, and the client maps the
status back, so a caller of the transfer engine sees the same class whichever
side of the wire raised it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class DataLogisticsError(Exception):
    """Root of the errors raised by the ``datalogistics`` package."""


class BufferServiceError(DataLogisticsError):
    """A buffer operation was refused (the message says why and what to change)."""


class BufferNotFound(BufferServiceError):
    """No buffer with that id exists at this site."""


class BufferGone(BufferServiceError):
    """The buffer existed but was destroyed (drained by all consumers, or TTL expired)."""


class BufferStateError(BufferServiceError):
    """The buffer's state forbids the operation (writing a full buffer, reading a disabled one)."""


class TagExists(BufferServiceError):
    """A tag is write-once: it was already written."""


class OffsetMismatch(BufferServiceError):
    """An append did not start at the buffer's current end (writes are append-only)."""


class BufferTooLarge(BufferServiceError):
    """An append would exceed the buffer's maximum size."""


class QuotaExceeded(BufferServiceError):
    """Creating the buffer would exceed the site-wide quota on size or count."""


class ChecksumMismatch(BufferServiceError):
    """Bytes received do not match their declared sha256."""


class Unauthorized(BufferServiceError):
    """The capability token is missing, malformed, forged or expired."""


class Forbidden(BufferServiceError):
    """The capability token is valid but not for this site, buffer or right."""


class PushRefused(Forbidden):
    """The source buffer service does not push to that destination (not one of its peers)."""


class TransferError(DataLogisticsError):
    """A transfer failed after its retries (the message names the item and the last error).

    ``records`` holds the transfers of the same batch that succeeded.
    """

    def __init__(self, message: str, records: Sequence[Any] = ()) -> None:
        super().__init__(message)
        self.records = list(records)


class BufferCapacityError(DataLogisticsError):
    """A transfer plan needs more buffer space at a site than the site has."""
