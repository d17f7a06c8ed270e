"""SQL of orders: the insert of a new order (held for the batch), row locks and lines for status
changes. Reads of orders for the routes are the read side's (`queries.py`)."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.core.database import DeferredInsert, defer, uuid7
from app.features.orders.models import Order, OrderLine, OrderStatusChange
from app.features.orders.queries import OrderView

# Order creation: the order, its lines and its first status change, held until the transaction's
# next batch (`defer`), which also carries its event, its email and its idempotent outcome: one
# round trip for all of them. Text built once, the same whatever the number of lines.
_ADD_ORDER = DeferredInsert(
    "orders",
    (
        "INSERT INTO orders (id, user_id, organization_id, status, total_cents, currency, note, "
        "created_at, updated_at) VALUES (CAST(:id AS uuid), :user_id, "
        "CAST(:organization_id AS uuid), :status, :total_cents, :currency, :note, "
        "CAST(:created_at AS timestamptz), :updated_at)",
        "INSERT INTO order_lines (order_id, position, product_id, sku, name, unit_price_cents, "
        "quantity, line_total_cents) SELECT CAST(:id AS uuid), line.position - 1, "
        "line.product_id, line.sku, line.name, line.unit_price_cents, line.quantity, "
        "line.line_total_cents FROM unnest(CAST(:product_ids AS uuid[]), "
        "CAST(:skus AS varchar[]), CAST(:names AS varchar[]), CAST(:unit_prices AS integer[]), "
        "CAST(:quantities AS integer[]), CAST(:line_totals AS bigint[])) WITH ORDINALITY "
        "AS line(product_id, sku, name, unit_price_cents, quantity, line_total_cents, position)",
        "INSERT INTO order_status_history (id, order_id, from_status, to_status, changed_by, "
        "changed_at) VALUES (:change_id, CAST(:id AS uuid), NULL, :status, :changed_by, "
        "CAST(:created_at AS timestamptz))",
    ),
)


class OrderRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    def add(self, order: OrderView, *, changed_by: uuid.UUID) -> None:
        """Insert a new order, its lines and its first status change with the transaction's
        next batch (at the latest, its commit): no round trip of their own."""
        items = order.items
        params: dict[str, Any] = {
            "id": order.id,
            "user_id": order.user_id,
            "organization_id": order.organization_id,
            "status": order.status.value,
            "total_cents": order.total_cents,
            "currency": order.currency,
            "note": order.note,
            "created_at": order.created_at,
            "updated_at": order.updated_at,
            "product_ids": [line.product_id for line in items],
            "skus": [line.sku for line in items],
            "names": [line.name for line in items],
            "unit_prices": [line.unit_price_cents for line in items],
            "quantities": [line.quantity for line in items],
            "line_totals": [line.line_total_cents for line in items],
            "change_id": uuid7(),
            "changed_by": changed_by,
        }
        defer(self.session, _ADD_ORDER, params)

    async def get_for_update(
        self, order_id: uuid.UUID, *, user_id: uuid.UUID | None
    ) -> Order | None:
        """The order, row-locked so that two status changes of it run one after the other."""
        statement = (
            select(Order)
            .where(col(Order.id) == order_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        if user_id is not None:
            statement = statement.where(col(Order.user_id) == user_id)
        return (await self.session.execute(statement)).scalar_one_or_none()

    async def lines_of(self, order_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, list[OrderLine]]:
        """Every line of these orders in one query (no N+1), each order's lines in position."""
        lines: dict[uuid.UUID, list[OrderLine]] = defaultdict(list)
        if not order_ids:
            return lines
        statement = (
            select(OrderLine)
            .where(col(OrderLine.order_id).in_(order_ids))
            .order_by(col(OrderLine.order_id), col(OrderLine.position))
        )
        for line in (await self.session.execute(statement)).scalars():
            lines[line.order_id].append(line)
        return lines

    async def record_change(self, change: OrderStatusChange) -> None:
        self.session.add(change)
        await self.session.flush()
