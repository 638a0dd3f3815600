"""Reading user documents (YAML or JSON) and user-supplied paths, safely.

Every file a user names goes through two functions:

* ``user_path`` decides where a path leads and whether it may be read: it
  expands ``~``, joins a relative path to its base folder, resolves it
  (following every symlink) and only then compares it with the allowed roots.
  A path that leaves them is refused before anything is opened.
* ``read_document`` reads a YAML or JSON file within bounds: a regular file
  only (a device, FIFO or directory is refused without reading), at most
  ``MAX_DOCUMENT_BYTES``, nested at most ``MAX_DEPTH`` levels, at most
  ``MAX_NODES`` values once YAML aliases are expanded, and every number finite
  and within 64 bits. A refusal is an ``InvalidInput`` naming the file and,
  where there is one, the field path; it never quotes the file's content.

``document_problems`` is the same check of a parsed document (depth, finite
numbers) for data that arrives another way (an API body).
"""

from __future__ import annotations

import json
import math
import os
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from federation.errors import InvalidInput, Problem, format_location

MAX_DOCUMENT_BYTES = 64 * 2**20
"""Largest YAML or JSON document read (the biggest WfCommons instances are a few MB)."""
MAX_DEPTH = 64
"""Deepest nesting of mappings and lists (real documents stay under 10)."""
MAX_NODES = 2_000_000
"""Most values in a document once YAML aliases are expanded (an alias bomb stops here)."""
INT64_MAX = 2**63 - 1
MAX_PROBLEMS = 20


def user_path(
    value: str | os.PathLike[str],
    base: str | os.PathLike[str] | None = None,
    roots: Sequence[str | os.PathLike[str]] | None = None,
    *,
    source: str = "",
    location: str = "",
    roots_name: str = "the allowed folders",
) -> Path:
    """The resolved path ``value`` names; ``InvalidInput`` when it leaves every root.

    ``~`` is expanded, a relative path starts at ``base`` (default: the
    working directory), symlinks are followed, and only then is the result
    compared with each of ``roots`` (resolved the same way). ``roots=None``
    allows any path (the user's own files, on the command line). The message
    names ``value`` as given and ``roots_name``, never the server's folders.
    """
    where = source or str(value)
    try:
        p = Path(value).expanduser()
        if not p.is_absolute():
            p = Path(base if base is not None else Path.cwd()).expanduser() / p
        resolved = p.resolve()
        if roots is None:
            return resolved
        for root in roots:
            if resolved.is_relative_to(Path(root).expanduser().resolve()):
                return resolved
    except (OSError, RuntimeError, ValueError) as exc:
        # a '~user' that does not exist, a NUL byte, a symlink loop
        raise InvalidInput.single(where, location, f"unusable path {str(value)!r}: {exc}") from None
    raise InvalidInput.single(where, location, f"{str(value)!r} is outside {roots_name}")


def read_user_bytes(path: str | os.PathLike[str], max_bytes: int = MAX_DOCUMENT_BYTES) -> bytes:
    """The bytes of the regular file ``path``, at most ``max_bytes``; ``InvalidInput`` otherwise.

    ``~`` is expanded (``user_path``). Opened without blocking (a FIFO does
    not hang the caller) and checked to be a regular file before anything is
    read (``/dev/zero`` is refused). Errors name ``path`` as given.
    """
    p = str(path)
    target = user_path(path, source=p)  # '~' expanded, symlinks followed (no root: any file)
    try:
        fd = os.open(target, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise InvalidInput.single(p, "", "no such file") from None
    except OSError as exc:
        raise InvalidInput.single(p, "", f"cannot open the file: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = "a directory" if stat.S_ISDIR(info.st_mode) else "not a regular file"
            raise InvalidInput.single(p, "", f"{kind}: give the path of a document file")
        if info.st_size > max_bytes:
            raise InvalidInput.single(
                p, "", f"the file has {info.st_size} bytes, more than the {max_bytes} accepted"
            )
        chunks = []
        total = 0
        while total <= max_bytes:
            block = os.read(fd, min(1 << 20, max_bytes + 1 - total))
            if not block:
                break
            chunks.append(block)
            total += len(block)
        if total > max_bytes:
            raise InvalidInput.single(p, "", f"the file grew past the {max_bytes} bytes accepted")
        return b"".join(chunks)
    except OSError as exc:
        raise InvalidInput.single(p, "", f"cannot read the file: {exc.strerror}") from None
    finally:
        os.close(fd)


class _TooBig(yaml.YAMLError):
    """A YAML document past the depth or expanded-size bound (raised while composing)."""

    def __init__(self, message: str, mark: Any) -> None:
        super().__init__(message)
        self.problem = message
        self.problem_mark = mark


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader that counts nesting and expanded values as it composes.

    An alias is the node it names: its expanded size counts again wherever it
    is used, so ``[*a, *a, ...]`` nine levels deep (a billion values) is
    refused after a few thousand nodes are composed, not after a billion are built.
    """

    def __init__(self, stream: str, max_depth: int, max_nodes: int) -> None:
        super().__init__(stream)
        self._max_depth = max_depth
        self._max_nodes = max_nodes
        self._depth = 0
        self._sizes: dict[int, int] = {}

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        try:
            if self._depth > self._max_depth:
                mark = self.peek_event().start_mark
                raise _TooBig(f"nested deeper than {self._max_depth} levels", mark)
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        if node is None:
            return node
        size = self._sizes.get(id(node))
        if size is None:
            size = 1
            if isinstance(node, yaml.SequenceNode):
                size += sum(self._sizes.get(id(child), 1) for child in node.value)
            elif isinstance(node, yaml.MappingNode):
                size += sum(
                    self._sizes.get(id(k), 1) + self._sizes.get(id(v), 1) for k, v in node.value
                )
            self._sizes[id(node)] = size
        if size > self._max_nodes:
            raise _TooBig(
                f"more than {self._max_nodes} values once aliases are expanded", node.start_mark
            )
        return node


def document_problems(data: Any, max_depth: int = MAX_DEPTH, prefix: str = "") -> list[Problem]:
    """Non-finite or overflowing numbers, and nesting past ``max_depth``, with their paths.

    Iterative (a deep document cannot exhaust the stack); at most
    ``MAX_PROBLEMS`` problems, in document order.
    """
    problems: list[Problem] = []
    head: tuple[Any, ...] = (prefix,) if prefix else ()
    stack: list[tuple[Any, tuple[Any, ...], int]] = [(data, head, 0)]
    while stack and len(problems) < MAX_PROBLEMS:
        node, loc, depth = stack.pop()
        if isinstance(node, bool) or node is None or isinstance(node, str):
            continue
        if isinstance(node, float):
            if not math.isfinite(node):
                problems.append(
                    Problem(format_location(loc), f"must be a finite number, got {node!r}")
                )
        elif isinstance(node, int):
            if abs(node) > INT64_MAX:
                problems.append(
                    Problem(format_location(loc), "number too large (beyond a 64-bit integer)")
                )
        elif isinstance(node, dict | list | tuple):
            if depth >= max_depth:
                problems.append(
                    Problem(format_location(loc), f"nested deeper than {max_depth} levels")
                )
                break
            items = node.items() if isinstance(node, dict) else enumerate(node)
            stack.extend((v, (*loc, k), depth + 1) for k, v in reversed(list(items)))
    return problems


def _parse(text: str, source: str, is_json: bool) -> Any:
    try:
        if is_json:
            return json.loads(text)
        loader = _BoundedLoader(text, MAX_DEPTH, MAX_NODES)
        try:
            return loader.get_single_data()
        finally:
            loader.dispose()
    except json.JSONDecodeError as exc:
        raise InvalidInput.single(
            source, f"line {exc.lineno}, column {exc.colno}", f"invalid JSON: {exc.msg}"
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise InvalidInput.single(source, where, f"invalid YAML: {problem}") from None
    except RecursionError:
        raise InvalidInput.single(source, "", f"nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:  # an integer of more than 4,300 digits
        raise InvalidInput.single(source, "", f"invalid number: {exc}") from None


def read_document(path: str | os.PathLike[str], max_bytes: int = MAX_DOCUMENT_BYTES) -> Any:
    """Read a YAML or JSON file within the module's bounds.

    Raises:
        InvalidInput: naming the file, and the line or field path, of the first
            problems (unreadable, not a regular file, too large, too deep, an
            alias bomb, a non-finite or overflowing number, invalid syntax).
    """
    p = Path(path)
    source = str(p)
    raw = read_user_bytes(p, max_bytes)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput.single(
            source, f"byte {exc.start}", "cannot read the file: not UTF-8 text"
        ) from None
    data = _parse(text.removeprefix("\ufeff"), source, p.suffix.lower() == ".json")
    problems = document_problems(data)
    if problems:
        raise InvalidInput(source, problems)
    return data


__all__ = [
    "INT64_MAX",
    "MAX_DEPTH",
    "MAX_DOCUMENT_BYTES",
    "MAX_NODES",
    "document_problems",
    "read_document",
    "read_user_bytes",
    "user_path",
]
