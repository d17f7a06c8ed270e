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
from app.core.reads import ReadConnection, ReadConnectionDep
from app.core.routing import make_router
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
    OrderQueries,
    OrderView,
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
from app.features.organizations.access import OrgAccess
from app.features.organizations.deps import Caller, OrderReader, OrgServiceDep, ReaderAccess
from app.features.organizations.errors import (
    InsufficientScopeError,
    OrganizationNotFoundError,
    OrgRoleForbiddenError,
)
from app.features.organizations.queries import OrgQueries
from app.features.products.errors import InsufficientStockError, ProductUnavailableError
from app.features.users.deps import AdminUser, CurrentUser, Viewer, is_admin
from app.shared.cursor import CursorParams, Cursors, CursorScope, ListParamsDep

router = make_router(prefix="/orders", tags=["orders"])

_JSON = "application/json"
_AUTH_ERRORS = (UnauthorizedError, InsufficientScopeError)
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
            InsufficientScopeError,
            OrganizationNotFoundError,
            EmailNotVerifiedError,
            InsufficientStockError,
            *IDEMPOTENCY_ERRORS,
            ValidationFailedError,
            *_BODY_ERRORS,
        ),
    },
)
async def create_order(
    customer: Customer,
    data: OrderCreate,
    service: OrderServiceDep,
    orgs: OrgServiceDep,
    request: Request,
) -> Response:
    """Place an order. Prices come from the catalog; the stock of every line is taken at once
    or not at all (409 `INSUFFICIENT_STOCK`). Send an `Idempotency-Key` to retry safely.

    With `organization_id` the order is the organization's (you must be a member, else 404).
    An API key with `orders:write` orders for its own organization."""
    organization_id = data.organization_id
    if customer.api_key is not None:
        if organization_id not in (None, customer.api_key.organization_id):
            raise OrganizationNotFoundError(organization_id)
        organization_id = customer.api_key.organization_id
    elif organization_id is not None:
        # 404 for a non-member (platform admins too): the access is the proof of membership.
        organization_id = (await orgs.access_for_member(customer.id, organization_id)).org_id
    try:
        order = await service.create(
            customer.user,
            data,
            organization_id=organization_id,
            by_api_key=customer.api_key is not None,
        )
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
    scope = order_scope(
        viewer.id, status=status_filter.value if status_filter else None, user_id=user_id
    )
    return await _cursor_page(
        request, queries, params, scope, owner=owner, status=status_filter, organization=None
    )


async def _cursor_page(
    request: Request,
    queries: OrderQueries,
    params: CursorParams,
    scope: CursorScope,
    *,
    owner: uuid.UUID | None,
    status: OrderStatus | None,
    organization: OrgAccess | None,
) -> Response:
    """A cursor page of an order list; the cursor is bound to `scope` (list, filters, caller)."""
    cursors: Cursors = request.app.state.cursors
    after = None
    if params.cursor is not None:
        after = parse_order_key(cursors.decode(scope, params.cursor))
    orders, more = await queries.keyset_page(
        limit=params.limit, after=after, owner=owner, status=status, organization=organization
    )
    next_cursor = None
    if more:
        next_cursor = cursors.encode(scope, order_key(orders[-1].created_at, orders[-1].id))
    return _json(cursor_page_json(OrderCursorPageView(tuple(orders), next_cursor)))


@router.get(
    "/{order_id}",
    response_model=OrderOut,
    responses=error_responses(*_AUTH_ERRORS, InsufficientScopeError, OrderNotFoundError),
)
async def get_order(
    caller: OrderReader,
    order_id: uuid.UUID,
    queries: OrderQueriesDep,
    connection: ReadConnectionDep,
) -> Response:
    """One of your orders, or of an organization you are a member of (admins: any order); an
    API key with `orders:read`: its organization's. Any other order is 404."""
    order = await queries.get(order_id, owner=None)
    if order is None or not await _may_read(caller, order, connection):
        raise OrderNotFoundError(order_id)
    return _json(order_json(order))


async def _may_read(caller: Caller, order: OrderView, connection: ReadConnection) -> bool:
    if caller.key is not None:
        return order.organization_id == caller.key.organization_id
    assert caller.user is not None
    if is_admin(caller.user) or order.user_id == caller.user.id:
        return True
    if order.organization_id is None:
        return False
    # One indexed lookup, and only for someone else's order of an organization.
    return await OrgQueries(connection).access(order.organization_id, caller.user.id) is not None


@router.post(
    "/{order_id}/cancel",
    response_model=OrderOut,
    responses=error_responses(
        *_AUTH_ERRORS, OrgRoleForbiddenError, OrderNotFoundError, InvalidTransitionError
    ),
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


# The organization's orders: a route of the organizations tag, served by the orders read side.
org_router = make_router(tags=["organizations"])


@org_router.get(
    "/organizations/{org_id}/orders",
    operation_id="organizations-orders-list",
    response_model=OrderPage | OrderCursorPage,
    responses=error_responses(
        *_AUTH_ERRORS, InsufficientScopeError, OrganizationNotFoundError, ValidationFailedError
    ),
)
async def list_organization_orders(
    request: Request,
    access: ReaderAccess,
    queries: OrderQueriesDep,
    params: ListParamsDep,
    status_filter: Annotated[
        OrderStatus | None, Query(alias="status", description="Only orders in this status.")
    ] = None,
) -> Response:
    """The organization's orders, newest first (members; an API key with `orders:read`).

    Two forms, as `GET /orders`: `page`/`page_size` answers a page with its total; `limit` (and
    then `cursor`) a cursor page. The cursor is bound to the organization, the filter and the
    caller (the member, or the API key): anyone else's is 422."""
    if not isinstance(params, CursorParams):
        page = await queries.page(params, owner=None, status=status_filter, organization=access)
        return _json(page_json(page))
    caller = access.user_id if access.user_id is not None else f"key:{access.api_key_id}"
    scope = order_scope(
        caller,
        status=status_filter.value if status_filter else None,
        user_id=None,
        list_name=f"organizations/{access.org_id}/orders",
    )
    return await _cursor_page(
        request, queries, params, scope, owner=None, status=status_filter, organization=access
    )
