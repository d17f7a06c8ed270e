"""The route class every router uses: JSON-only bodies and Problem-typed error responses.

Each route documents the error statuses its shape makes real, so that no router has to remember
them: 422 when it takes parameters or a body, 413 when it takes a body (the body-size guard),
415 when that body is JSON, and 503 when it needs PostgreSQL or Redis (a dependency on the
request's session or the Redis client, or one marked with `needs_services`). Routers declare the
rest (401, 403, 404, 409, 429...) from the errors their services raise. Every operation also gets
a readable `operationId` (`operation_id`).
"""

from __future__ import annotations

import email.message
import os
import re
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.dependencies.models import Dependant
from fastapi.dependencies.utils import get_flat_params
from fastapi.exceptions import RequestValidationError
from fastapi.params import Form
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.routing import Match
from starlette.types import Scope

from app.core.database import get_session
from app.core.errors import (
    AppError,
    PayloadTooLargeError,
    Problem,
    ServiceUnavailableError,
    UnsupportedMediaTypeError,
    error_responses,
)
from app.core.idempotency import Replay, pending_key
from app.core.reads import get_read_connection
from app.core.redis import get_redis

_IDEMPOTENCY = "app.core.idempotency"

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})

# Dependencies that reach PostgreSQL or Redis: a route that (transitively) depends on one of
# them can answer 503 when that service is down.
_SERVICE_DEPENDENCIES: set[Callable[..., Any]] = {get_session, get_read_connection, get_redis}

F = TypeVar("F", bound=Callable[..., Any])


def needs_services(dependency: F) -> F:
    """Mark a dependency that talks to PostgreSQL or Redis itself (not through `SessionDep` or
    `RedisDep`): the routes that use it then document 503."""
    _SERVICE_DEPENDENCIES.add(dependency)
    return dependency


def _words(text: str) -> list[str]:
    return [word for word in re.split(r"[^a-z0-9]+", text.lower()) if word]


def operation_id(route: APIRoute) -> str:
    """`<tag>-<action>`: the tag, then the endpoint's name without the tag's noun.

    `list_products` under `products` is `products-list`, `change_order_status` under `orders`
    is `orders-change-status`: generated clients call them `productsList`,
    `ordersChangeStatus`. A route may set `operation_id=` itself; the ids are pinned by the
    route tables of docs/api.md (tests/contract/test_document.py).
    """
    tag = "-".join(_words(str(route.tags[0]))) if route.tags else ""
    nouns = {tag, tag.removesuffix("s")} if tag else set()
    action = [word for word in _words(route.name) if word not in nouns] or _words(route.name)
    return "-".join([tag, *action] if tag else action)


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
        kwargs.setdefault("generate_unique_id_function", operation_id)
        super().__init__(path, endpoint, **kwargs)
        has_params = bool(get_flat_params(self.dependant)) or self.body_field is not None
        implied: list[type[AppError] | int] = []
        if has_params:
            implied.append(422)
        if self.body_field is not None:
            implied.append(PayloadTooLargeError)
        if self.expects_json:
            implied.append(UnsupportedMediaTypeError)
        if self.needs_services:
            implied.append(ServiceUnavailableError)
        for status, response in error_responses(*implied).items():
            if status in self.responses or str(status) in self.responses:
                continue
            if status == 422:
                response["description"] = "Validation Error"
            self.responses[status] = response
            self.response_fields.update(_problem_field(self, int(status)))

    @property
    def needs_services(self) -> bool:
        """Whether a dependency of this route reaches PostgreSQL or Redis."""
        pending = [self.dependant]
        while pending:
            dependant = pending.pop()
            if dependant.call in _SERVICE_DEPENDENCIES:
                return True
            pending.extend(dependant.dependencies)
        return False

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
            return await pending.store(response, request)
        return response

    return keeping_outcomes


def _problem_field(route: APIRoute, status: int) -> dict[int | str, Any]:
    # FastAPI builds response fields in __init__; build them for the responses added afterwards.
    from fastapi.utils import create_model_field

    field = create_model_field(
        name=f"Response_{status}_{route.unique_id}", type_=Problem, mode="serialization"
    )
    return {status: field}


class AppRouter(APIRouter):
    """An APIRouter that refuses a path outside its prefix before trying any of its routes.

    FastAPI (0.16x) tries every route of every included router in turn, and an included
    router's routes twice (to match, then to handle): a request for `/api/v1/users/me` went
    through the catalog's, the orders' and the organizations' routes first, about a tenth of
    the CPU of a short read (`bench.inproc --profile`). `include()` tells the router where it
    is mounted; a path elsewhere is refused at once. Only refusals are short-cut: a path under
    the prefix is matched by FastAPI as before.
    """

    mounted_at: tuple[str, ...] = ()

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if self.mounted_at and not _route_path(scope).startswith(self.mounted_at):
            return Match.NONE, {}
        return super().matches(scope)


def _route_path(scope: Scope) -> str:
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


def include(app: FastAPI, router: APIRouter, *, prefix: str = "") -> None:
    """`app.include_router(router, prefix=prefix)`, and an `AppRouter` learns where it is: the
    literal start its routes' paths share (`/api/v1/orders`, `/api/v1/organizations/`)."""
    app.include_router(router, prefix=prefix)
    if not isinstance(router, AppRouter):
        return
    shared = os.path.commonprefix(  # noqa: RUF071 - the literal start, by character
        [getattr(route, "path", "").split("{", 1)[0] for route in router.routes]
    )
    mounted = prefix + shared
    if shared not in ("", "/") and mounted not in router.mounted_at:
        router.mounted_at = (*router.mounted_at, mounted)


def make_router(**kwargs: Any) -> AppRouter:
    """An APIRouter whose routes are `AppRoute`s, with readable operation ids."""
    kwargs.setdefault("generate_unique_id_function", operation_id)
    return AppRouter(route_class=AppRoute, **kwargs)
