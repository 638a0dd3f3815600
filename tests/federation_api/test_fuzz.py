"""Schemathesis against the app's own OpenAPI, over real HTTP, on every operation.

Each response must conform to the published schema: no 5xx
(``not_a_server_error``), a body that matches the schema declared for its
status (``response_schema_conformance``), a declared status, content type and
headers. Requests carry the local admin token, so they reach the handlers
rather than stopping at authentication; one more pass sends none, a foreign
token and a malformed one, so the 401 answers are checked as well.

Bounded: a fixed number of positive (schema-valid) and negative
(schema-violating) examples per operation, derandomised so a run is
reproducible (about two minutes for the whole file on 2 shared cores). Every operation
runs even when an earlier one fails; the failure lists them all.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

schemathesis = pytest.importorskip(
    "schemathesis", reason="schemathesis (a dev dependency) is needed for the fuzz test"
)

from fastapi import FastAPI  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis import Case, GenerationMode  # noqa: E402
from schemathesis.checks import (  # noqa: E402
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.result import Err  # noqa: E402

from federation.api import create_app  # noqa: E402
from federation.settings import Settings  # noqa: E402
from tests.federation_api.conftest import LiveServer  # noqa: E402

EXAMPLES = {GenerationMode.POSITIVE: 30, GenerationMode.NEGATIVE: 20}
CHECKS = [
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
]


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FastAPI, LiveServer]]:
    data_dir: Path = tmp_path_factory.mktemp("fuzz")
    app = create_app(Settings(data_dir=data_dir, max_body_bytes=64 * 1024))
    with LiveServer(app) as server:
        yield app, server
    app.state.ctx.store.close()


def _operations(app: FastAPI) -> list[object]:
    schema = schemathesis.openapi.from_dict(app.openapi())
    operations = []
    for result in schema.get_all_operations():
        if isinstance(result, Err):
            raise AssertionError(f"the app's OpenAPI is invalid: {result.err()}")
        operations.append(result.ok())
    assert len(operations) >= 10
    return operations


def _fuzz(
    server: LiveServer,
    operations: list[object],
    mode: GenerationMode,
    headers: dict[str, str],
    examples: int,
) -> tuple[dict[str, set[int]], list[str]]:
    """Run every operation; the statuses seen per operation, and every failure found."""
    seen: dict[str, set[int]] = {}
    failures: list[str] = []
    for operation in operations:
        strategy = operation.as_strategy(generation_mode=mode)  # type: ignore[attr-defined]

        @settings(
            max_examples=examples,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=strategy)
        def call(case: Case) -> None:
            response = case.call(base_url=server.url, headers=headers, timeout=30)
            seen.setdefault(case.operation.label, set()).add(response.status_code)
            case.validate_response(response, checks=CHECKS, headers=headers)

        try:
            call()
        except Unsatisfiable:
            # nothing to violate (an operation without parameters nor body)
            assert mode is GenerationMode.NEGATIVE, operation.label  # type: ignore[attr-defined]
        except Exception as exc:
            failures.append(f"{operation.label}: {exc}")  # type: ignore[attr-defined]
    return seen, failures


@pytest.mark.parametrize("mode", list(EXAMPLES), ids=lambda m: m.value)
def test_every_operation_conforms_to_the_published_schema(
    fuzzed: tuple[FastAPI, LiveServer], mode: GenerationMode
) -> None:
    app, server = fuzzed
    operations = _operations(app)
    auth = {"Authorization": f"Bearer {app.state.local_token}"}
    seen, failures = _fuzz(server, operations, mode, auth, EXAMPLES[mode])
    assert not failures, "\n\n".join(failures)
    if mode is GenerationMode.POSITIVE:
        assert set(seen) == {op.label for op in operations}  # type: ignore[attr-defined]
    else:
        assert len(seen) >= 8  # every operation with a parameter or a body


@pytest.mark.parametrize(
    "authorization", ["", "Bearer not-the-token", "Bearer €".encode().decode("latin-1")]
)
def test_refusals_conform_to_the_published_schema(
    fuzzed: tuple[FastAPI, LiveServer], authorization: str
) -> None:
    app, server = fuzzed
    headers = {"Authorization": authorization} if authorization else {}
    seen, failures = _fuzz(server, _operations(app), GenerationMode.POSITIVE, headers, 2)
    assert not failures, "\n\n".join(failures)
    statuses = set().union(*seen.values())
    assert 401 in statuses
    let_through = {op: st - {200, 401, 503} for op, st in seen.items() if st - {200, 401, 503}}
    assert not let_through  # /health answers anyone; nothing else got through
