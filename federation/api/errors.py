"""Errors of the API layer, and the one table that maps every package's errors to HTTP.

Handlers raise plain exceptions (the packages' own, or these); ``install``
registers exception handlers that answer with a JSON body saying what was
wrong: ``{"error": <code>, "message": <one line>, "detail": [{"loc", "msg"}]}``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

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


def _quote(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', "'")


def error_body(code: str, message: str, detail: Sequence[dict[str, str]] = ()) -> dict[str, Any]:
    """The JSON body of every error answer."""
    body: dict[str, Any] = {"error": code, "message": message}
    if detail:
        body["detail"] = list(detail)
    return body


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


def install(app: FastAPI) -> None:
    """Register the error mapping on ``app``."""
    app.add_exception_handler(ApiError, _on_api_error)
    app.add_exception_handler(InvalidInput, _on_invalid_input)
    app.add_exception_handler(RequestValidationError, _on_request_validation)
    app.add_exception_handler(StarletteHTTPException, _on_http_exception)
