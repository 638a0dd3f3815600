"""The research notebooks run top to bottom (nbclient, a real IPython kernel) and are
committed without outputs.

Each notebook asserts what it claims in its own cells (a fitted likelihood that does not get
worse, a plan that keeps to the data plan's jurisdictions, a run that ends done after its
fault...): a cell that raises fails the test with that cell's traceback.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.conftest import REPO

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks_for_each_area() -> None:
    names = [p.stem for p in NOTEBOOKS]
    assert names == [
        "01-federation-and-twin",
        "02-placement",
        "03-run-with-a-fault",
        "04-what-if-sweep",
        "05-data-project-plans",
    ]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_without_outputs(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"cell {i} has outputs: clear them before committing"
            assert cell.execution_count is None, f"cell {i} was executed"
    assert "widgets" not in nb.metadata


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_top_to_bottom(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},  # run from notebooks/
    )
    client.execute()
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count for c in code)
    errors = [o for c in code for o in c.outputs if o.output_type == "error"]
    assert not errors
    # every notebook shows at least one figure
    assert any(
        "image/png" in o.get("data", {})
        for c in code
        for o in c.outputs
        if o.output_type in ("display_data", "execute_result")
    ), "no figure"
