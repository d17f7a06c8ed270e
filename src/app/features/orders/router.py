"""`/api/v1/orders`: placing orders, reading them, and moving them along their status machine."""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Annotated, Any

from fastapi import Header, Query, Request, Response, status

from app.core.errors import (
    AppError,
    ForbiddenError,
    PayloadTooLargeError,
    UnauthorizedError,
    UnsupportedMediaTypeError,
    ValidationFailedError,
    error_responses,
    problem_response,
)
from app.core.routing import make_router
from app.features.auth.deps import AdminUser, CurrentUser
from app.features.orders.deps import OrderServiceDep
from app.features.orders.errors import (
    EmailNotVerifiedError,
    IdempotencyKeyInUseError,
    IdempotencyKeyReusedError,
    InvalidTransitionError,
    OrderNotFoundError,
)
from app.features.orders.models import OrderStatus
from app.features.orders.schemas import OrderCreate, OrderOut, OrderPage, OrderStatusUpdate
from app.features.orders.service import StoredResponse, is_admin
from app.features.products.errors import InsufficientStockError
from app.shared.pagination import PageParamsDep

router = make_router(prefix="/orders", tags=["orders"])

_JSON = "application/json"
_AUTH_ERRORS = (UnauthorizedError,)
_BODY_ERRORS = (PayloadTooLargeError, UnsupportedMediaTypeError)
REPLAYED_HEADER = "Idempotent-Replayed"

_CREATED_HEADERS: dict[str, Any] = {
    "Location": {"description": "URL of the created order.", "schema": {"type": "string"}},
    REPLAYED_HEADER: {
        "description": "`true` when this is the stored response of an earlier request with "
        "the same Idempotency-Key (nothing was created this time).",
        "schema": {"type": "string", "enum": ["true"]},
    },
}

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        pattern=r"^[\x20-\x7e]+$",
        description="Makes the request safe to retry: a repeat with the same key and body "
        "returns the first response (kept 24 h, per user) instead of ordering again.",
    ),
]


def _fingerprint(raw_body: bytes) -> str:
    """The body as canonical JSON (sorted keys, no spacing), hashed: equal JSON, equal hash."""
    canonical = json.dumps(
        json.loads(raw_body), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def _json(model: OrderOut | OrderPage) -> Response:
    # Serialised here rather than by FastAPI, which would validate the model against the
    # response model once more on the way out (the reads build it from database rows).
    return Response(model.model_dump_json().encode(), media_type=_JSON)


def _order_location(request: Request, order_id: uuid.UUID) -> str:
    return str(request.app.url_path_for("get_order", order_id=str(order_id)))


@router.post(
    "",
    response_model=OrderOut,
    status_code=status.HTTP_201_CREATED,
    responses={
        201: {"description": "Created (or replayed)", "headers": _CREATED_HEADERS},
        **error_responses(
            *_AUTH_ERRORS,
            EmailNotVerifiedError,
            InsufficientStockError,
            IdempotencyKeyInUseError,
            ValidationFailedError,
            IdempotencyKeyReusedError,
            *_BODY_ERRORS,
        ),
    },
)
async def create_order(
    user: CurrentUser,
    data: OrderCreate,
    service: OrderServiceDep,
    request: Request,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Place an order. Prices come from the catalog; the stock of every line is taken at once
    or not at all (409 `INSUFFICIENT_STOCK`). Send an `Idempotency-Key` to retry safely."""
    if idempotency_key is None:
        order = await service.create(user, data)
        return Response(
            order.model_dump_json().encode(),
            status_code=status.HTTP_201_CREATED,
            media_type=_JSON,
            headers={"Location": _order_location(request, order.id)},
        )

    def created(order: OrderOut) -> StoredResponse:
        return StoredResponse(
            status.HTTP_201_CREATED,
            order.model_dump_json().encode(),
            _JSON,
            _order_location(request, order.id),
        )

    def failed(exc: AppError) -> StoredResponse:
        rendered = problem_response(
            request.scope,
            status=exc.status_code,
            code=exc.code,
            detail=exc.detail,
            errors=exc.errors,
            extra=exc.extra,
        )
        return StoredResponse(exc.status_code, bytes(rendered.body), rendered.media_type or _JSON)

    outcome, replayed = await service.create_once(
        user,
        data,
        key=idempotency_key,
        fingerprint=_fingerprint(await request.body()),
        created=created,
        failed=failed,
    )
    headers = {"Location": outcome.location} if outcome.location else {}
    if replayed:
        headers[REPLAYED_HEADER] = "true"
    return Response(
        outcome.body,
        status_code=outcome.status_code,
        media_type=outcome.content_type,
        headers=headers,
    )


@router.get(
    "",
    response_model=OrderPage,
    responses=error_responses(*_AUTH_ERRORS, ForbiddenError),
)
async def list_orders(
    user: CurrentUser,
    service: OrderServiceDep,
    params: PageParamsDep,
    status_filter: Annotated[
        OrderStatus | None, Query(alias="status", description="Only orders in this status.")
    ] = None,
    user_id: Annotated[
        uuid.UUID | None, Query(description="Admins only: one user's orders (others get 403).")
    ] = None,
) -> Response:
    """Your orders, newest first; an admin sees everyone's, or one user's with `user_id`."""
    if user_id is not None and not is_admin(user):
        raise ForbiddenError("Only admins may list another user's orders")
    page = await service.list(params, viewer=user, status=status_filter, user_id=user_id)
    return _json(page)


@router.get(
    "/{order_id}",
    response_model=OrderOut,
    responses=error_responses(*_AUTH_ERRORS, OrderNotFoundError),
)
async def get_order(user: CurrentUser, order_id: uuid.UUID, service: OrderServiceDep) -> Response:
    """One of your orders (admins: any order). Someone else's order is 404."""
    return _json(await service.get(order_id, viewer=user))


@router.post(
    "/{order_id}/cancel",
    response_model=OrderOut,
    responses=error_responses(*_AUTH_ERRORS, OrderNotFoundError, InvalidTransitionError),
)
async def cancel_order(
    user: CurrentUser, order_id: uuid.UUID, service: OrderServiceDep
) -> OrderOut:
    """Cancel an order and give its stock back: yours while `pending`; an admin's also while
    `paid`. Otherwise 409 `INVALID_STATE_TRANSITION`."""
    return await service.cancel(order_id, actor=user)


@router.patch(
    "/{order_id}/status",
    response_model=OrderOut,
    responses=error_responses(
        *_AUTH_ERRORS, ForbiddenError, OrderNotFoundError, InvalidTransitionError, *_BODY_ERRORS
    ),
)
async def change_order_status(
    admin: AdminUser, order_id: uuid.UUID, data: OrderStatusUpdate, service: OrderServiceDep
) -> OrderOut:
    """Move an order along pending -> paid -> shipped -> delivered, or cancel it from pending or
    paid (admin). Each change is recorded; the owner is emailed on shipped and cancelled."""
    return await service.change_status(order_id, data.status, actor=admin)
