"""Imports flow one way (ARCHITECTURE.md): nothing imports a package drawn above it.

    federation.{model,errors,units,jurisdictions,documents,store}   (0)
    twin                                                             (1)
    datalogistics                                                    (2)
    orchestrator                                                     (3)
    simulations                                                      (4)
    federation.{api,cli,...}: the rest of federation                 (5)

Two checks: a static one over every import statement of every module
(including imports inside functions and under ``TYPE_CHECKING``), and a
runtime one that imports each package alone in a fresh interpreter and
inspects ``sys.modules``.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("federation", "twin", "datalogistics", "orchestrator", "simulations")
BOTTOM = {"model", "errors", "units", "jurisdictions", "documents", "store", "lazy", "py"}
RANK = {"twin": 1, "datalogistics": 2, "orchestrator": 3, "simulations": 4}


def rank(module: str) -> int | None:
    """Layer of a project module, None for third-party modules."""
    parts = module.split(".")
    top = parts[0]
    if top == "federation":
        return 0 if len(parts) == 1 or parts[1] in BOTTOM else 5
    return RANK.get(top)


def module_name(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    mod = module_name(path)
    package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            found.append((node.lineno, target))
            # `from federation import cli` imports federation.cli
            for alias in node.names:
                found.append((node.lineno, f"{target}.{alias.name}"))
    return found


def project_files() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py"))


def test_rank_table() -> None:
    assert rank("federation.model") == 0
    assert rank("federation") == 0
    assert rank("federation.api.app") == 5
    assert rank("federation.cli") == 5
    assert rank("twin.kalman") == 1
    assert rank("numpy") is None


def test_no_module_imports_upwards() -> None:
    violations = []
    for path in project_files():
        own = rank(module_name(path))
        assert own is not None, path
        for line, target in imported_modules(path):
            other = rank(target)
            if other is None:
                continue
            # `from federation import X` where X is a bottom-layer name is fine: only
            # submodules that exist decide the layer.
            if target.startswith("federation.") and not _is_module(target):
                continue
            if other > own:
                violations.append(f"{path.relative_to(REPO)}:{line} imports {target}")
    assert not violations, "imports against the architecture:\n" + "\n".join(violations)


def _is_module(dotted: str) -> bool:
    base = REPO.joinpath(*dotted.split("."))
    return base.with_suffix(".py").exists() or (base / "__init__.py").exists()


@pytest.mark.parametrize(
    "package", ["federation", "twin", "datalogistics", "orchestrator", "simulations"]
)
def test_importing_a_package_alone_loads_nothing_above_it(package: str) -> None:
    code = (
        f"import json, sys; import {package}; "
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
        f"{list(PACKAGES)!r})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    loaded = json.loads(out.stdout)
    own = rank(package)
    assert own is not None
    above = [m for m in loaded if (rank(m) or 0) > own]
    assert not above, f"importing {package} loaded {above}"
