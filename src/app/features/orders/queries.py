"""The read side of orders: orders with their lines as frozen views, through the read-only
connection, and their JSON.

One statement shape reads every order: the order's columns joined with its lines' (lines in
position), folded into `OrderView`s by `_fold`. A single order and a page of them differ only in
their WHERE (and the page's LIMIT, in a subquery). The columns come from the tables' metadata,
by the views' field names.

`OrderView` is also what the service's writes return (a placed order, a changed status): the
one shape of an order the routes serialise, with the JSON of `OrderOut` (`order_json`).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from pydantic import TypeAdapter
from sqlalchemy import DateTime, Table, Uuid, bindparam, func, select, true, tuple_
from sqlalchemy.sql import Select
from sqlalchemy.sql.elements import ColumnElement

from app.core.reads import ReadConnection, ReadQuery, Row, read_query
from app.features.orders.models import Order, OrderLine, OrderStatus
from app.features.organizations.access import OrgAccess
from app.shared.pagination import PageParams


@dataclass(frozen=True, slots=True)
class LineView:
    """One line of an order: the product's sku, name and price when it was ordered."""

    product_id: uuid.UUID
    sku: str
    name: str
    unit_price_cents: int
    quantity: int
    line_total_cents: int


@dataclass(frozen=True, slots=True)
class OrderView:
    """An order with its lines in position (the fields and order of `OrderOut`)."""

    id: uuid.UUID
    user_id: uuid.UUID
    organization_id: uuid.UUID | None  # null for a personal order
    status: OrderStatus
    items: tuple[LineView, ...]
    total_cents: int
    currency: str
    note: str | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class OrderPageView:
    """A page of orders (the fields and order of `OrderPage`)."""

    items: tuple[OrderView, ...]
    total: int
    page: int
    page_size: int
    has_next: bool


# Serialised by pydantic's core straight from the views: the same bytes as OrderOut's and
# OrderPage's `model_dump_json`, without building those models (the contract tests check it).
_ORDER_JSON = TypeAdapter(OrderView)
_PAGE_JSON = TypeAdapter(OrderPageView)


@dataclass(frozen=True, slots=True)
class OrderCursorPageView:
    """A cursor page of orders (the fields and order of `OrderCursorPage`)."""

    items: tuple[OrderView, ...]
    next_cursor: str | None


_CURSOR_PAGE_JSON = TypeAdapter(OrderCursorPageView)


def cursor_page_json(page: OrderCursorPageView) -> bytes:
    return _CURSOR_PAGE_JSON.dump_json(page)


def order_json(order: OrderView) -> bytes:
    return _ORDER_JSON.dump_json(order)


def page_json(page: OrderPageView) -> bytes:
    return _PAGE_JSON.dump_json(page)


_ORDERS: Table = Order.__table__  # type: ignore[attr-defined]
_LINES: Table = OrderLine.__table__  # type: ignore[attr-defined]
_ORDER_FIELDS = [field.name for field in fields(OrderView) if field.name != "items"]
_LINE_FIELDS = [field.name for field in fields(LineView)]
_ORDER_COLUMNS = [_ORDERS.c[name] for name in _ORDER_FIELDS]
_LINE_COLUMNS = [_LINES.c[name] for name in _LINE_FIELDS]


def _one_order(*, own: bool) -> ReadQuery:
    condition = _ORDERS.c.id == bindparam("order_id")
    if own:
        condition &= _ORDERS.c.user_id == bindparam("user_id")
    return read_query(
        select(*_ORDER_COLUMNS, *_LINE_COLUMNS)
        .join_from(_ORDERS, _LINES, _LINES.c.order_id == _ORDERS.c.id)
        .where(condition)
        .order_by(_LINES.c.position)
    )


def _page(*, own: bool, status: bool, org: bool = False) -> tuple[ReadQuery, ReadQuery]:
    """A page of orders newest first (id breaks ties) with their lines, and the count.

    The page is a subquery along the index of its filter, then joined with the lines: one
    round trip. The count is its own query (an index-only scan where a window count would
    read every matching row), run only when the page does not tell the total.
    """
    conditions: list[ColumnElement[bool]] = [true()]
    if own:
        conditions.append(_ORDERS.c.user_id == bindparam("user_id"))
    if org:
        conditions.append(_ORDERS.c.organization_id == bindparam("organization_id"))
    if status:
        conditions.append(_ORDERS.c.status == bindparam("status"))
    page = (
        select(*_ORDER_COLUMNS)
        .where(*conditions)
        .order_by(_ORDERS.c.created_at.desc(), _ORDERS.c.id.desc())
        .offset(bindparam("offset"))
        .limit(bindparam("limit"))
        .subquery("page")
    )
    with_lines = (
        select(*(page.c[name] for name in _ORDER_FIELDS), *_LINE_COLUMNS)
        .join_from(page, _LINES, _LINES.c.order_id == page.c.id)
        .order_by(page.c.created_at.desc(), page.c.id.desc(), _LINES.c.position)
    )
    count = select(func.count()).select_from(_ORDERS).where(*conditions)
    return read_query(with_lines), read_query(count)


def keyset_orders(*, own: bool, status: bool, after: bool, org: bool = False) -> Select[Any]:
    """The orders of a cursor page, newest first: those strictly before `(after_created_at,
    after_id)`, at most `limit`. The row comparison walks the filter's index
    (`ix_orders_created_at_id`, `ix_orders_user_id_created_at_id`, `ix_orders_status_...`,
    `ix_orders_organization_id_created_at_id`) backwards from the cursor on, so a deep page
    reads as few rows as the first."""
    conditions: list[ColumnElement[bool]] = [true()]
    if own:
        conditions.append(_ORDERS.c.user_id == bindparam("user_id"))
    if org:
        conditions.append(_ORDERS.c.organization_id == bindparam("organization_id"))
    if status:
        conditions.append(_ORDERS.c.status == bindparam("status"))
    if after:
        conditions.append(
            tuple_(_ORDERS.c.created_at, _ORDERS.c.id)
            < tuple_(
                bindparam("after_created_at", type_=DateTime(timezone=True)),
                bindparam("after_id", type_=Uuid()),
            )
        )
    return (
        select(*_ORDER_COLUMNS)
        .where(*conditions)
        .order_by(_ORDERS.c.created_at.desc(), _ORDERS.c.id.desc())
        .limit(bindparam("limit"))
    )


def _keyset_page(*, own: bool, status: bool, after: bool, org: bool = False) -> ReadQuery:
    page = keyset_orders(own=own, status=status, after=after, org=org).subquery("page")
    return read_query(
        select(*(page.c[name] for name in _ORDER_FIELDS), *_LINE_COLUMNS)
        .join_from(page, _LINES, _LINES.c.order_id == page.c.id)
        .order_by(page.c.created_at.desc(), page.c.id.desc(), _LINES.c.position)
    )


_KEYSET_PAGES = {
    (own, status, after): _keyset_page(own=own, status=status, after=after)
    for own in (False, True)
    for status in (False, True)
    for after in (False, True)
}
# The organization's list: (status, after).
_ORG_KEYSET_PAGES = {
    (status, after): _keyset_page(own=False, status=status, after=after, org=True)
    for status in (False, True)
    for after in (False, True)
}

_ORDER = _one_order(own=False)
_OWN_ORDER = _one_order(own=True)
# One compiled pair per combination of filters, so that each gets the plan of its own index.
_ORG_PAGES = {status: _page(own=False, status=status, org=True) for status in (False, True)}
_PAGES = {
    (own, status): _page(own=own, status=status)
    for own in (False, True)
    for status in (False, True)
}


def _fold(rows: Sequence[Row]) -> list[OrderView]:
    """Rows of (order columns, line columns), an order's rows together and its lines in
    position, as views. What the database holds was validated on the way in: not again."""
    orders: list[OrderView] = []
    current: Row | None = None
    lines: list[LineView] = []
    for row in rows:
        if current is not None and row["id"] != current["id"]:
            orders.append(_order(current, lines))
            lines = []
        current = row
        lines.append(
            LineView(
                row["product_id"],
                row["sku"],
                row["name"],
                row["unit_price_cents"],
                row["quantity"],
                row["line_total_cents"],
            )
        )
    if current is not None:
        orders.append(_order(current, lines))
    return orders


def _order(row: Row, lines: list[LineView]) -> OrderView:
    return OrderView(
        row["id"],
        row["user_id"],
        row["organization_id"],
        OrderStatus(row["status"]),
        tuple(lines),
        row["total_cents"],
        row["currency"],
        row["note"],
        row["created_at"],
        row["updated_at"],
    )


class OrderQueries:
    """Orders as their owner or an admin may read them (`owner` None: anyone's)."""

    def __init__(self, connection: ReadConnection) -> None:
        self.connection = connection

    async def get(self, order_id: uuid.UUID, *, owner: uuid.UUID | None) -> OrderView | None:
        """The order; None when there is none, or (`owner`) it is someone else's."""
        if owner is None:
            rows = await self.connection.fetch(_ORDER, order_id=order_id)
        else:
            rows = await self.connection.fetch(_OWN_ORDER, order_id=order_id, user_id=owner)
        orders = _fold(rows)
        return orders[0] if orders else None

    async def keyset_page(
        self,
        *,
        limit: int,
        after: tuple[datetime, uuid.UUID] | None,
        owner: uuid.UUID | None,
        status: OrderStatus | None,
        organization: OrgAccess | None = None,
    ) -> tuple[list[OrderView], bool]:
        """Up to `limit` orders newest first, strictly before `after` (`(created_at, id)` of
        the previous page's last order), and whether more follow: `owner`'s, or everyone's, or
        (`organization`, an access resolved for the caller) the organization's."""
        values: dict[str, object] = {"limit": limit + 1}
        if organization is not None:
            query = _ORG_KEYSET_PAGES[(status is not None, after is not None)]
            values["organization_id"] = organization.org_id
        else:
            query = _KEYSET_PAGES[(owner is not None, status is not None, after is not None)]
        if owner is not None:
            values["user_id"] = owner
        if status is not None:
            values["status"] = status.value
        if after is not None:
            values["after_created_at"], values["after_id"] = after
        orders = _fold(await self.connection.fetch(query, **values))
        return orders[:limit], len(orders) > limit

    async def page(
        self,
        params: PageParams,
        *,
        owner: uuid.UUID | None,
        status: OrderStatus | None,
        organization: OrgAccess | None = None,
    ) -> OrderPageView:
        """A page of orders newest first: `owner`'s, or everyone's, or (`organization`, an
        access resolved for the caller) the organization's; optionally of one status."""
        if organization is not None:
            page_query, count_query = _ORG_PAGES[status is not None]
        else:
            page_query, count_query = _PAGES[(owner is not None, status is not None)]
        filters: dict[str, object] = {}
        if organization is not None:
            filters["organization_id"] = organization.org_id
        if owner is not None:
            filters["user_id"] = owner
        if status is not None:
            filters["status"] = status.value
        rows = await self.connection.fetch(
            page_query, offset=params.offset, limit=params.limit, **filters
        )
        orders = _fold(rows)
        if params.offset == 0 and len(orders) < params.limit:
            total = len(orders)
        else:
            total = int(await self.connection.fetchval(count_query, **filters))
        return OrderPageView(
            items=tuple(orders),
            total=total,
            page=params.page,
            page_size=params.page_size,
            has_next=params.offset + len(orders) < total,
        )
