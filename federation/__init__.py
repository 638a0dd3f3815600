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
"""

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
]
