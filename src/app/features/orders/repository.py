"""SQL of orders: reads that load lines in one query, row locks for status changes, and the
idempotency records."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.features.orders.models import (
    IdempotencyRecord,
    Order,
    OrderLine,
    OrderStatus,
    OrderStatusChange,
)
from app.features.users.models import User


class OrderRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(
        self, order: Order, lines: Sequence[OrderLine], change: OrderStatusChange
    ) -> None:
        self.session.add(order)
        self.session.add_all(lines)
        self.session.add(change)
        await self.session.flush()

    async def get_with_lines(
        self, order_id: uuid.UUID, *, user_id: uuid.UUID | None
    ) -> tuple[Order, list[OrderLine]] | None:
        """The order and its lines in one query; `user_id` limits it to that owner's order."""
        statement = (
            select(Order, OrderLine)
            .join(OrderLine, col(OrderLine.order_id) == col(Order.id))
            .where(col(Order.id) == order_id)
            .order_by(col(OrderLine.position))
        )
        if user_id is not None:
            statement = statement.where(col(Order.user_id) == user_id)
        rows = (await self.session.execute(statement)).all()
        if not rows:
            return None
        return rows[0][0], [row[1] for row in rows]

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

    async def list(
        self,
        *,
        offset: int,
        limit: int,
        user_id: uuid.UUID | None,
        status: OrderStatus | None,
    ) -> tuple[list[Order], int]:
        """A page newest first (id breaks ties) and the total.

        Two queries, not `count(*) OVER ()`: the page reads only its rows along the index and
        the count can be an index-only scan, where a window count reads every matching row.
        """
        conditions: list[Any] = []
        if user_id is not None:
            conditions.append(col(Order.user_id) == user_id)
        if status is not None:
            conditions.append(col(Order.status) == status)
        statement = (
            select(Order)
            .where(*conditions)
            .order_by(col(Order.created_at).desc(), col(Order.id).desc())
            .offset(offset)
            .limit(limit)
        )
        orders = list((await self.session.execute(statement)).scalars())
        if offset == 0 and len(orders) < limit:
            return orders, len(orders)
        count = select(func.count()).select_from(Order).where(*conditions)
        return orders, int((await self.session.execute(count)).scalar_one())

    async def record_change(self, change: OrderStatusChange) -> None:
        self.session.add(change)
        await self.session.flush()

    async def owner_email(self, order: Order) -> str | None:
        statement = select(col(User.email)).where(col(User.id) == order.user_id)
        email: str | None = (await self.session.execute(statement)).scalar_one_or_none()
        return email

    # Idempotency ---------------------------------------------------------------------------

    async def try_lock_key(self, user_id: uuid.UUID, key: str) -> bool:
        """A transaction-scoped advisory lock on (user, key): held until the commit, so a
        concurrent request with the same key sees it taken instead of waiting."""
        statement = text("SELECT pg_try_advisory_xact_lock(hashtextextended(:lock_key, 0))")
        locked = await self.session.scalar(statement, {"lock_key": f"order:{user_id}:{key}"})
        return bool(locked)

    async def get_key(
        self, user_id: uuid.UUID, key: str, *, now: datetime
    ) -> IdempotencyRecord | None:
        """The stored outcome of the key; an expired one is deleted and counts as unused."""
        record = await self.session.get(IdempotencyRecord, (user_id, key), populate_existing=True)
        if record is not None and record.expires_at <= now:
            await self.session.execute(
                delete(IdempotencyRecord).where(
                    col(IdempotencyRecord.user_id) == user_id,
                    col(IdempotencyRecord.key) == key,
                )
            )
            self.session.expunge(record)
            return None
        return record

    async def add_key(self, record: IdempotencyRecord) -> None:
        self.session.add(record)
        await self.session.flush()

    async def purge_keys(self, *, now: datetime) -> int:
        result = await self.session.execute(
            delete(IdempotencyRecord).where(col(IdempotencyRecord.expires_at) <= now)
        )
        return int(getattr(result, "rowcount", 0) or 0)
