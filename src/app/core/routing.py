"""The route class every router uses: JSON-only bodies and Problem-typed error responses."""

from __future__ import annotations

import email.message
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.dependencies.models import Dependant
from fastapi.dependencies.utils import get_flat_params
from fastapi.exceptions import RequestValidationError
from fastapi.params import Form
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException

from app.core.errors import AppError, Problem, UnsupportedMediaTypeError
from app.core.idempotency import Replay, pending_key

_IDEMPOTENCY = "app.core.idempotency"

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def _is_json(content_type: str) -> bool:
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )


class AppRoute(APIRoute):
    """An APIRoute that answers 415 to a non-JSON body and documents its 422 as a Problem."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        has_params = bool(get_flat_params(self.dependant)) or self.body_field is not None
        if has_params and 422 not in self.responses and "422" not in self.responses:
            self.responses[422] = {"model": Problem, "description": "Validation Error"}
            self.response_fields.update(_problem_field(self))

    @property
    def expects_json(self) -> bool:
        body = self.body_field
        return body is not None and not isinstance(body.field_info, Form)

    @property
    def idempotent(self) -> bool:
        """Whether the route declares the `idempotent(...)` dependency."""
        return _declares(self.dependant, "idempotency")

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        if self.idempotent:
            handler = _keeping_outcomes(handler)
        if not self.expects_json:
            return handler

        async def json_only(request: Request) -> Response:
            content_type = request.headers.get("content-type")
            if request.method in _BODY_METHODS and content_type and not _is_json(content_type):
                raise UnsupportedMediaTypeError(
                    f"Content-Type {content_type.split(';')[0]!r} is not supported; "
                    "send application/json"
                )
            try:
                return await handler(request)
            except HTTPException as exc:
                # FastAPI answers a body that is not UTF-8 with a bare 400 ("error parsing the
                # body") while malformed JSON gets 422: both are one client error, the 422.
                if exc.status_code == 400 and isinstance(exc.__cause__, UnicodeDecodeError):
                    raise RequestValidationError(
                        [
                            {
                                "type": "json_invalid",
                                "loc": ("body",),
                                "msg": "JSON decode error: the body is not valid UTF-8",
                                "input": {},
                            }
                        ]
                    ) from exc
                raise

        return json_only


def _declares(dependant: Dependant, name: str) -> bool:
    return any(
        (getattr(sub.call, "__name__", None) == name and sub.call.__module__ == _IDEMPOTENCY)
        or _declares(sub, name)
        for sub in dependant.dependencies
    )


def _keeping_outcomes(
    handler: Callable[[Request], Coroutine[Any, Any, Response]],
) -> Callable[[Request], Coroutine[Any, Any, Response]]:
    """Around an idempotent route: answer replays, and store a new outcome (2xx, 4xx) in the
    request's transaction. This runs inside the route's dependencies' scope: the session has
    not committed yet when the outcome is stored."""

    async def keeping_outcomes(request: Request) -> Response:
        try:
            response = await handler(request)
        except Replay as replay:
            return replay.outcome.response()
        except AppError as exc:
            pending = pending_key(request)
            if pending is None or exc.status_code >= 500:
                raise
            return await pending.store_error(request, exc)
        pending = pending_key(request)
        if pending is not None and response.status_code < 500:
            await pending.store(response)
        return response

    return keeping_outcomes


def _problem_field(route: APIRoute) -> dict[int | str, Any]:
    # FastAPI builds response fields in __init__; rebuild them for the 422 added afterwards.
    from fastapi.utils import create_model_field

    field = create_model_field(
        name=f"Response_422_{route.unique_id}", type_=Problem, mode="serialization"
    )
    return {422: field}


def make_router(**kwargs: Any) -> APIRouter:
    """An APIRouter whose routes are `AppRoute`s."""
    return APIRouter(route_class=AppRoute, **kwargs)
