"""Load a workflow from any format the product accepts, detected by content."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from federation.documents import read_document
from orchestrator.errors import InvalidWorkflow
from orchestrator.wfformat import REFERENCE_MHZ, is_wfformat, load_wfformat
from orchestrator.workflow import Workflow


def is_native_workflow(data: Any) -> bool:
    return isinstance(data, Mapping) and "steps" in data


def workflow_from_data(
    data: Any, source: str = "<dict>", reference_mhz: float = REFERENCE_MHZ
) -> Workflow:
    """A ``Workflow`` from a parsed document: WfFormat (1.4 to 1.6) or the native format."""
    if is_wfformat(data):
        return load_wfformat(data, source, reference_mhz)
    if is_native_workflow(data):
        return Workflow.from_dict(data, source)
    raise InvalidWorkflow.single(
        source,
        "",
        "not a workflow: expected 'steps' (native format) or 'schemaVersion' and 'workflow' "
        "(WfCommons WfFormat)",
    )


def load_workflow(path: str | Path, reference_mhz: float = REFERENCE_MHZ) -> Workflow:
    """Load a workflow file (YAML or JSON; WfFormat or native), validated.

    Raises:
        InvalidInput: naming the file, the field path and the problem.
    """
    return workflow_from_data(read_document(path), str(path), reference_mhz)
