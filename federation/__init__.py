"""Federation: the sites registry (bottom layer) and the services on top.

``federation.model``, ``federation.units``, ``federation.jurisdictions``,
``federation.errors``, ``federation.documents`` and ``federation.store`` are
the bottom of the import graph and import nothing else of the project;
``federation.cli`` (and later ``federation.api``) sit at the very top. This
``__init__`` re-exports only the bottom layer, so importing ``federation``
never pulls in the layers above it.

Public API::

    from federation import load_demo_federation
    fed = load_demo_federation()
    fed.site("ddf-fatnode").cores            # 120
    fed.transfer_time("ddf-fatnode", "cloud-burst", 10e9)   # seconds
    read_document("plan.yaml")               # bounded YAML/JSON; InvalidInput names the file
    user_path("data/x.csv", base, [root])    # resolved; InvalidInput outside the roots
"""

from typing import TYPE_CHECKING

from federation.lazy import lazy_exports

if TYPE_CHECKING:
    from federation.documents import read_document, user_path
    from federation.errors import FederationError, InvalidFederation, InvalidInput, Problem
    from federation.jurisdictions import EU_MEMBERS, jurisdiction_allows
    from federation.model import (
        ConnectorKind,
        ConnectorSpec,
        Federation,
        Link,
        Organisation,
        Project,
        Site,
        SiteKind,
        demo_federation_path,
        load_demo_federation,
        load_federation,
    )

if not TYPE_CHECKING:  # mypy reads the imports above; at run time they load on first use
    __getattr__, __dir__ = lazy_exports(__name__, __file__)

__all__ = [
    "EU_MEMBERS",
    "ConnectorKind",
    "ConnectorSpec",
    "Federation",
    "FederationError",
    "InvalidFederation",
    "InvalidInput",
    "Link",
    "Organisation",
    "Problem",
    "Project",
    "Site",
    "SiteKind",
    "demo_federation_path",
    "jurisdiction_allows",
    "load_demo_federation",
    "load_federation",
    "read_document",
    "user_path",
]
