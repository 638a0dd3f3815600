"""Errors of the ``federation`` package, and the input-error type every package shares.

``InvalidInput`` is raised by every loader and validator of the project when a
user-supplied document (a federation YAML, a workflow, a data project plan...)
is wrong. It names the source (usually a file), the location inside it (a
field path such as ``sites[2].cores``) and the problem, so that a CLI can print
one readable line and an API can answer 4xx with a body.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


class FederationError(Exception):
    """Root of the errors raised by the ``federation`` package."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an input document."""

    location: str
    message: str

    def __str__(self) -> str:
        return f"{self.location}: {self.message}" if self.location else self.message


class InvalidInput(ValueError):
    """A user-supplied document is invalid.

    Attributes:
        source: where the document came from (a file path, ``<api>``, ``<dict>``).
        problems: every problem found, each with its field path.
    """

    def __init__(self, source: str, problems: Sequence[Problem]) -> None:
        if not problems:
            raise ValueError("InvalidInput needs at least one problem")
        self.source = source
        self.problems: tuple[Problem, ...] = tuple(problems)
        super().__init__(self._render())

    @classmethod
    def single(cls, source: str, location: str, message: str) -> InvalidInput:
        return cls(source, [Problem(location, message)])

    def _render(self) -> str:
        first = f"{self.source}: {self.problems[0]}"
        more = len(self.problems) - 1
        return first if more == 0 else f"{first} (and {more} more problem{'s' * (more > 1)})"

    def details(self) -> list[dict[str, str]]:
        """The problems as JSON-ready dicts (``loc``, ``msg``), for API error bodies."""
        return [{"loc": p.location, "msg": p.message} for p in self.problems]


class InvalidFederation(InvalidInput, FederationError):
    """A federation description is invalid."""


def format_location(loc: Iterable[Any]) -> str:
    """Render a pydantic-style location tuple as ``a.b[2].c``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("", None):
            continue
        else:
            out += f".{part}" if out else str(part)
    return out


def problems_from_pydantic(
    errors: Iterable[Mapping[str, Any]], prefix: Sequence[str | int] = ()
) -> list[Problem]:
    """Turn ``pydantic.ValidationError.errors()`` into problems with readable paths.

    Pydantic inserts the name of the validator (for example ``function-after``
    or a tagged-union tag) into locations; only real field names and indices
    are kept.
    """
    problems = []
    for err in errors:
        loc = [p for p in err.get("loc", ()) if not (isinstance(p, str) and "[" in p)]
        msg = str(err.get("msg", "invalid"))
        msg = msg.removeprefix("Value error, ")
        problems.append(Problem(format_location([*prefix, *loc]), msg))
    return problems


class Problems(ValueError):
    """Carries cross-reference problems (with their own paths) out of a pydantic validator.

    Raise it from a ``model_validator``; ``validate_document`` turns it into the
    caller's ``InvalidInput`` subclass with the paths intact.
    """

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(str(p) for p in self.problems))


def validate_document(
    model: type[M],
    data: Any,
    source: str,
    error: type[InvalidInput] = InvalidInput,
    what: str = "document",
) -> M:
    """Validate ``data`` as ``model``; raise ``error`` naming ``source`` and each field path."""
    from federation.documents import document_problems  # documents imports this module

    if not isinstance(data, Mapping):
        raise error(source, [Problem("", f"a {what} is a mapping, got {type(data).__name__}")])
    problems = document_problems(data)
    if problems:  # an infinite or NaN number, or nesting too deep, named by its field path
        raise error(source, problems)
    try:
        return model.model_validate(dict(data))
    except Problems as exc:
        raise error(source, exc.problems) from None
    except ValidationError as exc:
        errors = exc.errors()
        for e in errors:
            carried = e.get("ctx", {}).get("error")
            if isinstance(carried, Problems):
                raise error(source, carried.problems) from None
        raise error(source, problems_from_pydantic(errors)) from None
