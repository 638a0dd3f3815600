"""Ephemeral buffers: the per-site service, its store, capability tokens and a client.

One buffer service runs per site (``continuum buffer serve --site ID --dir PATH
--port N``); the orchestrator issues capability tokens with the site's secret
(``issue_token``) and moves data with ``datalogistics.transfer``.
"""

from typing import TYPE_CHECKING

from federation.lazy import lazy_exports

if TYPE_CHECKING:
    from datalogistics.buffers.client import BufferClient, BufferRef, SiteClient
    from datalogistics.buffers.service import create_app, load_or_create_secret, serve
    from datalogistics.buffers.store import BufferInfo, BufferState, BufferStore, Quota, TagInfo
    from datalogistics.buffers.tokens import Capability, Right, issue_token, verify_token

if not TYPE_CHECKING:  # mypy reads the imports above; at run time they load on first use (the
    # service's FastAPI only when asked for: clients and the transfer engine do not need it)
    __getattr__, __dir__ = lazy_exports(__name__, __file__)

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
