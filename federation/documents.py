"""Reading user documents (YAML or JSON) with errors that name the file and line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from federation.errors import InvalidInput


def read_document(path: str | Path) -> Any:
    """Read a YAML or JSON file; ``InvalidInput`` (naming the file and line) if unreadable."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidInput.single(str(p), "", "no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput.single(str(p), "", f"cannot read the file: {exc}") from None
    try:
        if p.suffix.lower() == ".json":
            return json.loads(text)
        return yaml.safe_load(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput.single(
            str(p), f"line {exc.lineno}, column {exc.colno}", f"invalid JSON: {exc.msg}"
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise InvalidInput.single(str(p), where, f"invalid YAML: {problem}") from None
