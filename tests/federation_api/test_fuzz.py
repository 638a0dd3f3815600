"""Schemathesis against the app's own OpenAPI, over real HTTP: no request gets a 5xx.

Bounded: a fixed number of positive (schema-valid) and negative (schema-
violating) examples per operation, derandomised so a run is reproducible.
Requests carry the local admin token, so they reach the handlers rather than
stopping at authentication.
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
from schemathesis.core.result import Err  # noqa: E402

from federation.api import create_app  # noqa: E402
from federation.settings import Settings  # noqa: E402
from tests.federation_api.conftest import LiveServer  # noqa: E402

EXAMPLES = {GenerationMode.POSITIVE: 12, GenerationMode.NEGATIVE: 8}


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FastAPI, LiveServer]]:
    data_dir: Path = tmp_path_factory.mktemp("fuzz")
    app = create_app(Settings(data_dir=data_dir, max_body_bytes=64 * 1024))
    with LiveServer(app) as server:
        yield app, server
    app.state.ctx.store.close()


@pytest.mark.parametrize("mode", list(EXAMPLES), ids=lambda m: m.value)
def test_no_operation_answers_5xx(fuzzed: tuple[FastAPI, LiveServer], mode: GenerationMode) -> None:
    app, server = fuzzed
    schema = schemathesis.openapi.from_dict(app.openapi())
    operations = []
    for result in schema.get_all_operations():
        if isinstance(result, Err):
            raise AssertionError(f"the app's OpenAPI is invalid: {result.err()}")
        operations.append(result.ok())
    assert len(operations) >= 10
    auth = {"Authorization": f"Bearer {app.state.local_token}"}
    seen: dict[str, set[int]] = {}

    for operation in operations:
        strategy = operation.as_strategy(generation_mode=mode)

        @settings(
            max_examples=EXAMPLES[mode],
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=strategy)
        def call(case: Case) -> None:
            response = case.call(base_url=server.url, headers=auth, timeout=30)
            seen.setdefault(case.operation.label, set()).add(response.status_code)
            assert response.status_code < 500, (case.as_curl_command(), response.text)

        try:
            call()
        except Unsatisfiable:
            # nothing to violate (an operation without parameters nor body)
            assert mode is GenerationMode.NEGATIVE, operation.label
    if mode is GenerationMode.POSITIVE:
        assert set(seen) == {op.label for op in operations}
    else:
        assert len(seen) >= 8  # every operation with a parameter or a body
