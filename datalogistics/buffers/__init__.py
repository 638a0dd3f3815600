"""Ephemeral buffers: the per-site service, its store, capability tokens and a client.

One buffer service runs per site (``continuum buffer serve --site ID --dir PATH
--port N``); the orchestrator issues capability tokens with the site's secret
(``issue_token``) and moves data with ``datalogistics.transfer``.
"""

from typing import TYPE_CHECKING, Any

from datalogistics.buffers.client import BufferClient, BufferRef, SiteClient
from datalogistics.buffers.store import BufferInfo, BufferState, BufferStore, Quota, TagInfo
from datalogistics.buffers.tokens import Capability, Right, issue_token, verify_token

if TYPE_CHECKING:
    from datalogistics.buffers.service import create_app, load_or_create_secret, serve

_SERVICE = ("create_app", "load_or_create_secret", "serve")


def __getattr__(name: str) -> Any:
    # The service (FastAPI) loads only when asked for: clients and the transfer engine
    # do not pull in a web framework.
    if name in _SERVICE:
        from datalogistics.buffers import service

        return getattr(service, name)
    raise AttributeError(f"module 'datalogistics.buffers' has no attribute {name!r}")


__all__ = [
    "BufferClient",
    "BufferInfo",
    "BufferRef",
    "BufferState",
    "BufferStore",
    "Capability",
    "Quota",
    "Right",
    "SiteClient",
    "TagInfo",
    "create_app",
    "issue_token",
    "load_or_create_secret",
    "serve",
    "verify_token",
]
