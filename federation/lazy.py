"""Public names of a package that load on first use (PEP 562), so a command starts fast.

A package's ``__init__`` states its public API as ordinary imports under
``if TYPE_CHECKING:`` (read by mypy and by people) and hands its own file to
``lazy_exports``::

    from typing import TYPE_CHECKING

    if TYPE_CHECKING:
        from orchestrator.workflow import Step, Workflow

    if not TYPE_CHECKING:  # mypy reads the imports above; at run time they load on first use
        __getattr__, __dir__ = lazy_exports(__name__, __file__)

``import orchestrator`` then costs nothing; ``orchestrator.Workflow`` (or
``from orchestrator import Workflow``) imports ``orchestrator.workflow`` the
first time and keeps the name. The imports are read from the file itself
(``ast``), so the block stays the one list of what the package exports.

A public name may also be the name of one of the package's submodules
(``orchestrator.timeshift`` the function, in ``orchestrator/timeshift.py``).
Importing a submodule makes Python set the package's attribute of that name to
the module, which would hide the public object; the package's module then
ignores that one binding, so the name means the public object, as it did when
``__init__`` imported it eagerly.
"""

from __future__ import annotations

import ast
import importlib
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any


def type_checking_imports(init_file: str | Path, package: str) -> dict[str, tuple[str, str]]:
    """``{public name: (module, name in it)}`` of the ``if TYPE_CHECKING:`` imports of a file."""
    tree = ast.parse(Path(init_file).read_text(encoding="utf-8"), filename=str(init_file))
    found: dict[str, tuple[str, str]] = {}
    for node in tree.body:
        if not (isinstance(node, ast.If) and _is_type_checking(node.test)):
            continue
        for stmt in node.body:
            if not isinstance(stmt, ast.ImportFrom):
                continue
            module = stmt.module or ""
            if stmt.level:
                module = f"{package}.{module}" if module else package
            for alias in stmt.names:
                found[alias.asname or alias.name] = (module, alias.name)
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


class _PublicNamesFirst(types.ModuleType):
    """A package module whose public names win over its submodules of the same name."""

    _public_over_submodule: frozenset[str] = frozenset()

    def __setattr__(self, name: str, value: Any) -> None:
        if name in self._public_over_submodule and isinstance(value, types.ModuleType):
            return  # the import system binding the submodule: the public object keeps the name
        super().__setattr__(name, value)


def lazy_exports(
    package: str, init_file: str
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The module-level ``__getattr__`` and ``__dir__`` of ``package`` (see the module doc)."""
    origins = type_checking_imports(init_file, package)
    folder = Path(init_file).parent
    clashes = frozenset(
        n for n in origins if (folder / f"{n}.py").exists() or (folder / n / "__init__.py").exists()
    )
    if clashes:
        module = sys.modules[package]
        module.__class__ = _PublicNamesFirst
        object.__setattr__(module, "_public_over_submodule", clashes)
        for name in clashes:  # a submodule imported before this ran
            if isinstance(vars(module).get(name), types.ModuleType):
                delattr(module, name)

    def module_getattr(name: str) -> Any:
        origin = origins.get(name)
        if origin is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(origin[0]), origin[1])
        setattr(sys.modules[package], name, value)  # asked once; later reads are plain lookups
        return value

    def module_dir() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(origins))

    return module_getattr, module_dir


__all__ = ["lazy_exports", "type_checking_imports"]
