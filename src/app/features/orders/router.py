"""`/api/v1/orders`: placing orders, reading them, and moving them along their status machine."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import Query, Request, Response, status

from app.core.errors import (
    ForbiddenError,
    PayloadTooLargeError,
    UnauthorizedError,
    UnsupportedMediaTypeError,
    ValidationFailedError,
    error_responses,
)
from app.core.idempotency import IDEMPOTENCY_ERRORS, REPLAYED_HEADERS, idempotent
from app.core.routing import make_router
from app.features.auth.deps import AdminUser, CurrentUser, Viewer, is_admin
from app.features.orders.cursor import order_key, order_scope, parse_order_key
from app.features.orders.deps import Customer, OrderQueriesDep, OrderServiceDep, get_customer
from app.features.orders.errors import (
    EmailNotVerifiedError,
    InvalidTransitionError,
    OrderNotFoundError,
)
from app.features.orders.models import OrderStatus
from app.features.orders.queries import (
    OrderCursorPageView,
    cursor_page_json,
    order_json,
    page_json,
)
from app.features.orders.schemas import (
    OrderCreate,
    OrderCursorPage,
    OrderOut,
    OrderPage,
    OrderStatusUpdate,
)
from app.features.products.errors import InsufficientStockError, ProductUnavailableError
from app.shared.cursor import CursorParams, Cursors, ListParamsDep

router = make_router(prefix="/orders", tags=["orders"])

_JSON = "application/json"
_AUTH_ERRORS = (UnauthorizedError,)
_BODY_ERRORS = (PayloadTooLargeError, UnsupportedMediaTypeError)

_CREATED_HEADERS: dict[str, Any] = {
    "Location": {"description": "URL of the created order.", "schema": {"type": "string"}},
    **REPLAYED_HEADERS,
}


def _json(body: bytes, status_code: int = status.HTTP_200_OK, **headers: str) -> Response:
    # Serialised by the read side from the views, not by FastAPI, which would validate the
    # response model once more on the way out.
    return Response(body, status_code=status_code, media_type=_JSON, headers=headers or None)


def _unavailable_lines(exc: ProductUnavailableError) -> ValidationFailedError:
    """The catalog names the lines by index; on the wire they are `items[i].product_id`."""
    return ValidationFailedError(
        exc.detail,
        errors=[
            {
                "loc": ["body", "items", index, "product_id"],
                "msg": "Unknown or inactive product",
                "type": "product_unavailable",
            }
            for index in exc.line_indexes
        ],
    )


@router.post(
    "",
    response_model=OrderOut,
    status_code=status.HTTP_201_CREATED,
    dependencies=[idempotent(get_customer)],
    responses={
        201: {"description": "Created (or replayed)", "headers": _CREATED_HEADERS},
        **error_responses(
            *_AUTH_ERRORS,
            EmailNotVerifiedError,
            InsufficientStockError,
            *IDEMPOTENCY_ERRORS,
            ValidationFailedError,
            *_BODY_ERRORS,
        ),
    },
)
async def create_order(
    customer: Customer, data: OrderCreate, service: OrderServiceDep, request: Request
) -> Response:
    """Place an order. Prices come from the catalog; the stock of every line is taken at once
    or not at all (409 `INSUFFICIENT_STOCK`). Send an `Idempotency-Key` to retry safely."""
    try:
        order = await service.create(customer, data)
    except ProductUnavailableError as exc:
        raise _unavailable_lines(exc) from None
    location = request.app.url_path_for("get_order", order_id=str(order.id))
    return _json(order_json(order), status.HTTP_201_CREATED, Location=str(location))


@router.get(
    "",
    response_model=OrderPage | OrderCursorPage,
    responses=error_responses(*_AUTH_ERRORS, ForbiddenError, ValidationFailedError),
)
async def list_orders(
    request: Request,
    viewer: Viewer,
    queries: OrderQueriesDep,
    params: ListParamsDep,
    status_filter: Annotated[
        OrderStatus | None, Query(alias="status", description="Only orders in this status.")
    ] = None,
    user_id: Annotated[
        uuid.UUID | None, Query(description="Admins only: one user's orders (others get 403).")
    ] = None,
) -> Response:
    """Your orders, newest first; an admin sees everyone's, or one user's with `user_id`.

    Two forms: `page`/`page_size` (the default) answers a page with its total; `limit` (and then
    `cursor`) answers a cursor page, whose deep pages cost what the first does. Mixing them, or a
    cursor of another list, filter or caller, is 422."""
    if is_admin(viewer):
        owner = user_id
    elif user_id is not None:
        raise ForbiddenError("Only admins may list another user's orders")
    else:
        owner = viewer.id
    if not isinstance(params, CursorParams):
        return _json(page_json(await queries.page(params, owner=owner, status=status_filter)))
    cursors: Cursors = request.app.state.cursors
    scope = order_scope(
        viewer.id, status=status_filter.value if status_filter else None, user_id=user_id
    )
    after = None
    if params.cursor is not None:
        after = parse_order_key(cursors.decode(scope, params.cursor))
    orders, more = await queries.keyset_page(
        limit=params.limit, after=after, owner=owner, status=status_filter
    )
    next_cursor = None
    if more:
        next_cursor = cursors.encode(scope, order_key(orders[-1].created_at, orders[-1].id))
    return _json(cursor_page_json(OrderCursorPageView(tuple(orders), next_cursor)))


@router.get(
    "/{order_id}",
    response_model=OrderOut,
    responses=error_responses(*_AUTH_ERRORS, OrderNotFoundError),
)
async def get_order(viewer: Viewer, order_id: uuid.UUID, queries: OrderQueriesDep) -> Response:
    """One of your orders (admins: any order). Someone else's order is 404."""
    order = await queries.get(order_id, owner=None if is_admin(viewer) else viewer.id)
    if order is None:
        raise OrderNotFoundError(order_id)
    return _json(order_json(order))


@router.post(
    "/{order_id}/cancel",
    response_model=OrderOut,
    responses=error_responses(*_AUTH_ERRORS, OrderNotFoundError, InvalidTransitionError),
)
async def cancel_order(
    user: CurrentUser, order_id: uuid.UUID, service: OrderServiceDep
) -> Response:
    """Cancel an order and give its stock back: yours while `pending`; an admin's also while
    `paid`. Otherwise 409 `INVALID_STATE_TRANSITION`."""
    return _json(order_json(await service.cancel(order_id, actor=user)))


@router.patch(
    "/{order_id}/status",
    response_model=OrderOut,
    responses=error_responses(
        *_AUTH_ERRORS, ForbiddenError, OrderNotFoundError, InvalidTransitionError, *_BODY_ERRORS
    ),
)
async def change_order_status(
    admin: AdminUser, order_id: uuid.UUID, data: OrderStatusUpdate, service: OrderServiceDep
) -> Response:
    """Move an order along pending -> paid -> shipped -> delivered, or cancel it from pending or
    paid (admin). Each change is recorded; the owner is emailed on shipped and cancelled."""
    order = await service.change_status(order_id, data.status, actor=admin)
    return _json(order_json(order))
