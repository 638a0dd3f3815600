"""Errors of the API layer, and the one table that maps every package's errors to HTTP.

Handlers raise plain exceptions (the packages' own, or these); ``install``
registers exception handlers that answer with a JSON body saying what was
wrong: ``{"error": <code>, "message": <one line>, "detail": [{"loc", "msg"}]}``
(``ErrorBody``). ``declare_error_responses`` makes the published OpenAPI
document say so for every operation, present and future: which error answers
it may give (413 for any, 400 with a body, 422 with parameters or a body,
401/403/404/409/503 behind a token), all with that body. ``refuse_non_finite``
refuses a JSON body holding ``NaN``, ``Infinity`` or a
number that overflows (``1e400``) before any handler sees it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any, cast

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from federation.documents import INT64_MAX, document_problems
from federation.errors import FederationError, InvalidInput, format_location


class ApiError(FederationError):
    """Root of the API layer's errors; ``status`` and ``code`` give the HTTP answer."""

    status = 500
    code = "internal_error"

    def __init__(self, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}


class Unauthenticated(ApiError):
    """No token, or a token that fails verification (401)."""

    status = 401
    code = "invalid_token"

    def __init__(self, message: str) -> None:
        challenge = f'Bearer error="invalid_token", error_description="{_quote(message)}"'
        super().__init__(message, {"WWW-Authenticate": challenge})


class Forbidden(ApiError):
    """A valid token without the role the route needs (403)."""

    status = 403
    code = "forbidden"


class NotFound(ApiError):
    """Missing, or belonging to a project the caller cannot see (404, never 403)."""

    status = 404
    code = "not_found"


class Conflict(ApiError):
    """The resource already exists (409)."""

    status = 409
    code = "conflict"


class PayloadTooLarge(ApiError):
    """The request body is larger than ``max_body_bytes`` (413)."""

    status = 413
    code = "payload_too_large"


class ServiceUnavailable(ApiError):
    """The service cannot answer yet (starting, or a dependency is down): retry (503)."""

    status = 503
    code = "unavailable"

    def __init__(self, message: str) -> None:
        super().__init__(message, {"Retry-After": "1"})


class IdentityProviderUnavailable(ApiError):
    """The realm's keys cannot be fetched: the token may be fine, retry later (503)."""

    status = 503
    code = "identity_provider_unavailable"

    def __init__(self, message: str) -> None:
        super().__init__(message, {"Retry-After": "5"})


def _quote(text: str, limit: int = 200) -> str:
    """``text`` as a quoted-string of an HTTP header: printable ASCII only, no quote, bounded.

    The message may carry what a client sent (a token's ``kid``): anything
    outside printable ASCII (``\u20ac``, CR, LF) becomes ``?``, so the header
    always encodes and can never be split.
    """
    safe = "".join(c if " " <= c <= "~" and c not in '"\\' else "?" for c in text[:limit])
    return safe + ("..." if len(text) > limit else "")


class ErrorDetail(BaseModel):
    """One problem of an invalid request: where (``body.steps[2].cores``) and what."""

    loc: str = Field(description="field path, e.g. body.workflow.steps[1].cores or query.limit")
    msg: str


class ErrorBody(BaseModel):
    """The body of every error answer of the API."""

    error: str = Field(
        description="a stable code: invalid_input, invalid_token, forbidden, not_found, "
        "conflict, payload_too_large, identity_provider_unavailable, busy, http_error..."
    )
    message: str = Field(description="one line saying what was wrong and what to change")
    detail: list[ErrorDetail] = Field(
        default_factory=list, description="every problem with its field path (422 only)"
    )


def error_body(code: str, message: str, detail: Sequence[dict[str, str]] = ()) -> dict[str, Any]:
    """The JSON body of every error answer (an ``ErrorBody``)."""
    body: dict[str, Any] = {"error": code, "message": message}
    if detail:
        body["detail"] = list(detail)
    return body


_STRING = {"schema": {"type": "string"}}

ERROR_RESPONSES: dict[int, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "The body could not be read as JSON."},
    401: {
        "model": ErrorBody,
        "description": "No token, or a token that fails verification.",
        "headers": {"WWW-Authenticate": {**_STRING, "description": "Bearer challenge"}},
    },
    403: {"model": ErrorBody, "description": "The token lacks the role this needs."},
    404: {"model": ErrorBody, "description": "Missing, or in a project the caller cannot see."},
    409: {"model": ErrorBody, "description": "Conflicts with the resource's state."},
    413: {"model": ErrorBody, "description": "The body is over CONTINUUM_MAX_BODY_BYTES."},
    422: {"model": ErrorBody, "description": "Invalid input: every problem with its path."},
    503: {
        "model": ErrorBody,
        "description": "The identity provider or the service cannot answer now: retry later.",
        "headers": {"Retry-After": {**_STRING, "description": "seconds"}},
    },
}
"""Every error answer of the API (``responses=`` of a route that declares its own)."""

_BODY_ERRORS = (400, 422)
_PARAMETER_ERRORS = (422,)
_TOKEN_ERRORS = (401, 403, 404, 409, 503)
_FASTAPI_422 = "#/components/schemas/HTTPValidationError"
_ERROR_BODY = "#/components/schemas/ErrorBody"


def operation_error_codes(operation: dict[str, Any]) -> list[int]:
    """The error statuses an operation of the OpenAPI document may answer.

    Read from the operation itself: a request body (400, 422), parameters
    (422), a bearer-token requirement (401, 403, 404, 409, 503); any request
    may carry a body over the limit (413, refused before any route is chosen).
    """
    codes: set[int] = {413}
    if "requestBody" in operation:
        codes.update(_BODY_ERRORS)
    if operation.get("parameters"):
        codes.update(_PARAMETER_ERRORS)
    if operation.get("security"):
        codes.update(_TOKEN_ERRORS)
    return sorted(codes)


def _response_object(code: int) -> dict[str, Any]:
    declared = ERROR_RESPONSES[code]
    out: dict[str, Any] = {
        "description": declared["description"],
        "content": {"application/json": {"schema": {"$ref": _ERROR_BODY}}},
    }
    if "headers" in declared:
        out["headers"] = declared["headers"]
    return out


def declare_error_responses(app: FastAPI) -> None:
    """Make ``app.openapi()`` declare every operation's error answers with ``ErrorBody``.

    Applied to the finished document, so routes added later get the same
    declarations; FastAPI's own 422 schema (``HTTPValidationError``, which this
    API never sends) is replaced. What a route declares itself is kept.
    """
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        schema = generate()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        body = ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(body.pop("$defs", {}))
        components["ErrorBody"] = body
        for item in schema.get("paths", {}).values():
            for operation in item.values():
                if not isinstance(operation, dict) or "responses" not in operation:
                    continue
                responses = operation["responses"]
                for code in operation_error_codes(operation):
                    own = responses.get(str(code))
                    if own is None or _FASTAPI_422 in json.dumps(own):
                        responses[str(code)] = _response_object(code)
                for code, own in responses.items():
                    # a route declaring ERROR_RESPONSES itself: always JSON, whatever its
                    # success answer is (FastAPI would give them the route's media type)
                    if _ERROR_BODY in json.dumps(own) and int(code) in ERROR_RESPONSES:
                        responses[code] = _response_object(int(code))
        if _FASTAPI_422 not in json.dumps(schema["paths"]):
            components.pop("HTTPValidationError", None)
            components.pop("ValidationError", None)
        _bound_integers(schema)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _bound_integers(node: Any) -> None:
    """Every integer of the document gets the 64-bit bounds ``refuse_non_finite`` enforces
    (where it declares none tighter): the schema says what the API really accepts."""
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            kind = item.get("type")
            if kind == "integer" or (isinstance(kind, list) and "integer" in kind):
                item.setdefault("maximum", INT64_MAX)
                item.setdefault("minimum", -INT64_MAX)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


_SUSPECT = re.compile(rb"NaN|Infinity|[eE]\+?0*[1-9][0-9]{2}|[0-9]{19}")
"""What a non-finite or overflowing JSON number looks like; a match is only checked further."""


async def refuse_non_finite(request: Request) -> None:
    """A dependency of every route: 422 for a JSON body with a non-finite or huge number.

    Python's JSON parser (which FastAPI uses) reads ``NaN``, ``Infinity`` and
    ``1e400`` (as inf) although JSON has no such values; a model or a stored
    document would then hold a number no computation can use. The body is
    only looked at again when its text could hold one (the parsed body is
    cached by the request, so nothing is parsed twice).
    """
    kind = request.headers.get("content-type", "")
    if "json" not in kind.lower():
        return
    raw = await request.body()
    if not raw or _SUSPECT.search(raw) is None:
        return
    try:
        data = await request.json()
    except ValueError:
        return  # not JSON: FastAPI's own answer (422) names the position
    problems = document_problems(data, max_depth=10**6, prefix="body")
    if problems:
        raise InvalidInput("<api>", problems)


def _request_validation_detail(exc: RequestValidationError) -> list[dict[str, str]]:
    out = []
    for err in exc.errors():
        loc = [p for p in err.get("loc", ()) if not (isinstance(p, str) and "[" in p)]
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        out.append({"loc": format_location(loc), "msg": msg})
    return out


# Starlette types every handler as (Request, Exception); each is registered for one
# class only, hence the casts.


async def _on_api_error(_request: Request, exc: Exception) -> JSONResponse:
    err = cast(ApiError, exc)
    return JSONResponse(error_body(err.code, err.message), err.status, headers=err.headers)


async def _on_invalid_input(_request: Request, exc: Exception) -> JSONResponse:
    err = cast(InvalidInput, exc)
    return JSONResponse(error_body("invalid_input", str(err), err.details()), 422)


async def _on_request_validation(_request: Request, exc: Exception) -> JSONResponse:
    detail = _request_validation_detail(cast(RequestValidationError, exc))
    first = detail[0] if detail else {"loc": "", "msg": "invalid request"}
    message = f"{first['loc']}: {first['msg']}" if first["loc"] else first["msg"]
    return JSONResponse(error_body("invalid_input", message, detail), 422)


async def _on_http_exception(_request: Request, exc: Exception) -> JSONResponse:
    err = cast(StarletteHTTPException, exc)
    code = {404: "not_found", 405: "method_not_allowed"}.get(err.status_code, "http_error")
    return JSONResponse(
        error_body(code, str(err.detail)), err.status_code, headers=dict(err.headers or {})
    )


async def _on_store_unreachable(_request: Request, exc: Exception) -> JSONResponse:
    # The database cannot be reached (a PostgreSQL restart, a full disk): nothing was
    # stored by this request, and the same request may succeed in a moment.
    return JSONResponse(
        error_body("unavailable", "the store cannot be reached: nothing was stored, retry"),
        503,
        headers={"Retry-After": "1"},
    )


def install(app: FastAPI) -> None:
    """Register the error mapping on ``app``."""
    from sqlalchemy.exc import InterfaceError, OperationalError

    app.add_exception_handler(OperationalError, _on_store_unreachable)
    app.add_exception_handler(InterfaceError, _on_store_unreachable)
    app.add_exception_handler(ApiError, _on_api_error)
    app.add_exception_handler(InvalidInput, _on_invalid_input)
    app.add_exception_handler(RequestValidationError, _on_request_validation)
    app.add_exception_handler(StarletteHTTPException, _on_http_exception)
