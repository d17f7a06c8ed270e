"""One error hierarchy and one envelope: RFC 9457 Problem Details with a stable `code`.

Services raise `AppError` subclasses (defined in each feature's `errors.py`); the handlers here
render them, FastAPI's request validation errors, Starlette's HTTP errors (unknown route, wrong
method) and anything unexpected as `application/problem+json`. A 5xx never says more than
`Internal server error`; its traceback is logged once, with the request id.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any, ClassVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import Scope

from app.core.logging import get_logger
from app.core.outages import RETRY_AFTER_SECONDS

log = get_logger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"


class FieldError(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class Problem(BaseModel):
    """RFC 9457 Problem Details, as every error of this API is rendered."""

    # `type` and `errors` are always sent (API.md): required in the document, so that generated
    # clients need no optional checks, though the model fills them in by default.
    model_config = ConfigDict(
        extra="allow",
        json_schema_serialization_defaults_required=True,
        json_schema_extra={
            "examples": [
                {
                    "type": "about:blank",
                    "title": "Conflict",
                    "status": 409,
                    "detail": "Not enough stock of MUG-001: 2 requested, 1 available",
                    "instance": "/api/v1/orders",
                    "code": "INSUFFICIENT_STOCK",
                    "request_id": "5d0c1a7e-2b1f-4c6e-9a0d-8f3e2b1c0a9d",
                    "errors": [],
                    "product_id": "0190f1ba-4e5f-7a6b-9c7d-8e9f0a1b2c3d",
                    "requested": 2,
                    "available": 1,
                }
            ]
        },
    )

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    instance: str
    code: str = Field(description="Stable machine-readable error code (UPPER_SNAKE).")
    request_id: str
    errors: list[FieldError] = Field(default_factory=list)


class AppError(Exception):
    """Base of every error the API reports on purpose."""

    status_code: ClassVar[int] = 500
    code: ClassVar[str] = "INTERNAL_ERROR"
    default_detail: ClassVar[str] = "Internal server error"

    def __init__(
        self,
        detail: str | None = None,
        *,
        extra: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        errors: list[dict[str, Any]] | None = None,
    ) -> None:
        self.detail = detail or self.default_detail
        self.extra = extra or {}
        self.headers = headers or {}
        self.errors = errors or []
        super().__init__(self.detail)


class BadRequestError(AppError):
    status_code = 400
    code = "BAD_REQUEST"
    default_detail = "Bad request"


class UnauthorizedError(AppError):
    status_code = 401
    code = "UNAUTHORIZED"
    default_detail = "Not authenticated"

    def __init__(self, detail: str | None = None, **kwargs: Any) -> None:
        super().__init__(detail, **kwargs)
        self.headers.setdefault("WWW-Authenticate", "Bearer")


class ForbiddenError(AppError):
    status_code = 403
    code = "FORBIDDEN"
    default_detail = "You are not allowed to do this"


class InsufficientScopeError(ForbiddenError):
    """An API key on a route it may not use, or without the scope the route needs (API.md)."""

    code = "INSUFFICIENT_SCOPE"
    default_detail = "This API key may not use this route"


class NotFoundError(AppError):
    status_code = 404
    code = "NOT_FOUND"
    default_detail = "Not found"


class ConflictError(AppError):
    status_code = 409
    code = "CONFLICT"
    default_detail = "Conflict"


class PayloadTooLargeError(AppError):
    status_code = 413
    code = "PAYLOAD_TOO_LARGE"
    default_detail = "Request body too large"


class UnsupportedMediaTypeError(AppError):
    status_code = 415
    code = "UNSUPPORTED_MEDIA_TYPE"
    default_detail = "Content-Type must be application/json"


class ValidationFailedError(AppError):
    """A 422 raised by a service, with field errors in the same shape as request validation."""

    status_code = 422
    code = "VALIDATION_ERROR"
    default_detail = "Request validation failed"


class RateLimitedError(AppError):
    status_code = 429
    code = "RATE_LIMITED"
    default_detail = "Too many requests"

    def __init__(self, retry_after: int, detail: str | None = None) -> None:
        retry_after = max(1, int(retry_after))
        super().__init__(
            detail or f"Too many requests; retry in {retry_after} s",
            extra={"retry_after": retry_after},
            headers={"Retry-After": str(retry_after)},
        )


class ServiceUnavailableError(AppError):
    status_code = 503
    code = "SERVICE_UNAVAILABLE"
    default_detail = "A service this request needs is unavailable"

    def __init__(self, detail: str | None = None, **kwargs: Any) -> None:
        super().__init__(detail, **kwargs)
        self.headers.setdefault("Retry-After", str(RETRY_AFTER_SECONDS))


class BodyTooLarge(StarletteHTTPException):
    """Raised from the body-limit middleware's `receive`: FastAPI lets HTTP exceptions through."""

    def __init__(self) -> None:
        super().__init__(status_code=413, detail=PayloadTooLargeError.default_detail)


_STATUS_CODES: dict[int, str] = {
    400: "BAD_REQUEST",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    409: "CONFLICT",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    422: "VALIDATION_ERROR",
    429: "RATE_LIMITED",
    503: "SERVICE_UNAVAILABLE",
}


def _title(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def request_id_of(scope: Scope) -> str:
    state = scope.get("state") or {}
    return str(state.get("request_id", ""))


def problem_response(
    scope: Scope,
    *,
    status: int,
    code: str,
    detail: str,
    errors: list[dict[str, Any]] | None = None,
    extra: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": _title(status),
        "status": status,
        "detail": detail,
        "instance": scope.get("path", ""),
        "code": code,
        "request_id": request_id_of(scope),
        "errors": errors or [],
    }
    for key, value in (extra or {}).items():
        body.setdefault(key, value)
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_MEDIA_TYPE)


def internal_error_response(scope: Scope) -> JSONResponse:
    return problem_response(
        scope, status=500, code="INTERNAL_ERROR", detail="Internal server error"
    )


def service_unavailable_response(scope: Scope) -> JSONResponse:
    """The 503 of an outage met by a request (PostgreSQL or Redis away)."""
    return problem_response(
        scope,
        status=503,
        code="SERVICE_UNAVAILABLE",
        detail=ServiceUnavailableError.default_detail + "; try again shortly",
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


def _clean_errors(raw: list[Any]) -> list[dict[str, Any]]:
    """Field errors as `{loc, msg, type}`: the submitted `input` (maybe a password) is dropped."""
    cleaned = []
    for item in raw:
        cleaned.append(
            {
                "loc": [part if isinstance(part, int) else str(part) for part in item["loc"]],
                "msg": str(item["msg"]),
                "type": str(item["type"]),
            }
        )
    return cleaned


async def _app_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AppError)
    if exc.status_code == 503:
        log.warning("request.service_unavailable", code=exc.code, detail=exc.detail)
    elif exc.status_code >= 500:
        log.error("request.failed", code=exc.code, detail=exc.detail)
    return app_error_response(request.scope, exc)


def app_error_response(scope: Scope, exc: AppError) -> JSONResponse:
    """The Problem Details response of an `AppError`."""
    return problem_response(
        scope,
        status=exc.status_code,
        code=exc.code,
        detail=exc.detail,
        errors=_clean_errors(exc.errors),
        extra=exc.extra,
        headers=exc.headers,
    )


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = _clean_errors(list(exc.errors()))
    return problem_response(
        request.scope,
        status=422,
        code="VALIDATION_ERROR",
        detail="Request validation failed",
        errors=errors,
    )


_HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route of the app answers on this path.

    Starlette's 405 names only the methods of the first route whose path matched, but each
    method of a resource is its own route (`GET /users/me`, `PATCH /users/me`, ...).
    """
    allowed = []
    for method in _HTTP_METHODS:
        probe = {**request.scope, "method": method}
        if any(route.matches(probe)[0] == Match.FULL for route in request.app.router.routes):
            allowed.append(method)
    return allowed


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    headers = dict(exc.headers or {})
    if status == 404:
        detail = f"No route or resource at {request.url.path}"
    elif status == 405:
        detail = f"Method {request.method} not allowed on {request.url.path}"
        allowed = _allowed_methods(request)
        if allowed:
            headers["Allow"] = ", ".join(allowed)
    else:
        detail = exc.detail
    return problem_response(
        request.scope,
        status=status,
        code=_STATUS_CODES.get(status, "HTTP_ERROR" if status < 500 else "INTERNAL_ERROR"),
        detail=detail,
        headers=headers,
    )


def register_error_handlers(app: FastAPI) -> None:
    """Install the handlers; unexpected exceptions are caught by `GuardMiddleware`."""
    app.add_exception_handler(AppError, _app_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)


def error_responses(*errors: type[AppError] | int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for a route: each status documented with the Problem schema."""
    responses: dict[int | str, dict[str, Any]] = {}
    for error in errors:
        status = error if isinstance(error, int) else error.status_code
        codes = [] if isinstance(error, int) else [error.code]
        entry = responses.setdefault(status, {"model": Problem, "description": _title(status)})
        if codes:
            known = entry.setdefault("codes", [])
            known.extend(code for code in codes if code not in known)
            entry["description"] = f"{_title(status)} ({', '.join(known)})"
    for entry in responses.values():
        entry.pop("codes", None)
    return responses
