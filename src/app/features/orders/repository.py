"""SQL of orders: reads that load lines in one query, row locks for status changes, and the
idempotency records."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.core.database import driver_connection
from app.features.orders.models import (
    IdempotencyRecord,
    Order,
    OrderLine,
    OrderStatus,
    OrderStatusChange,
)
from app.features.users.models import User

# A row as asyncpg returns it (a Record: read by column name).
Row = Mapping[str, Any]

_ORDER_COLUMNS = "id, user_id, status, total_cents, currency, note, created_at, updated_at"
_LINE_COLUMNS = "product_id, sku, name, unit_price_cents, quantity, line_total_cents"
_ORDER_WITH_LINES = (
    "SELECT o.id, o.user_id, o.status, o.total_cents, o.currency, o.note, o.created_at, "
    "o.updated_at, l.product_id, l.sku, l.name, l.unit_price_cents, l.quantity, "
    "l.line_total_cents FROM orders o JOIN order_lines l ON l.order_id = o.id "
    "WHERE o.id = $1 ORDER BY l.position"
)
_OWN_ORDER_WITH_LINES = _ORDER_WITH_LINES.replace(
    "WHERE o.id = $1", "WHERE o.id = $1 AND o.user_id = $2"
)
_LINES_OF = (
    f"SELECT order_id, {_LINE_COLUMNS} FROM order_lines "  # noqa: S608 - no input in the text
    "WHERE order_id = ANY($1::uuid[]) ORDER BY order_id, position"
)


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

    # Reads -------------------------------------------------------------------------------
    # With asyncpg directly, on the session's own connection: the ORM's statement and row
    # machinery cost several times the queries here, and these are the hottest reads of orders.
    # They return rows (`order_row`, `line_row` columns), not tracked objects.

    async def read_with_lines(self, order_id: uuid.UUID, *, user_id: uuid.UUID | None) -> list[Row]:
        """The order's row once per line (its columns and the line's), lines in position; `[]`
        when there is no such order, or (`user_id`) it is someone else's."""
        connection = await driver_connection(self.session)
        if user_id is None:
            return list(await connection.fetch(_ORDER_WITH_LINES, order_id))
        return list(await connection.fetch(_OWN_ORDER_WITH_LINES, order_id, user_id))

    async def read_page(
        self,
        *,
        offset: int,
        limit: int,
        user_id: uuid.UUID | None,
        status: OrderStatus | None,
    ) -> tuple[list[Row], int]:
        """A page of order rows newest first (id breaks ties) and the total.

        Two queries, not `count(*) OVER ()`: the page reads only its rows along the index and
        the count can be an index-only scan, where a window count reads every matching row.
        The count is skipped when the first page is not full. One SQL text per combination of
        filters, so that each prepared statement gets the plan of its own index.
        """
        conditions: list[str] = []
        arguments: list[Any] = []
        if user_id is not None:
            arguments.append(user_id)
            conditions.append(f"user_id = ${len(arguments)}")
        if status is not None:
            arguments.append(status.value)
            conditions.append(f"status = ${len(arguments)}")
        where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
        n = len(arguments)
        connection = await driver_connection(self.session)
        rows = list(
            await connection.fetch(
                f"SELECT {_ORDER_COLUMNS} FROM orders {where} "  # noqa: S608 - no input in the text
                f"ORDER BY created_at DESC, id DESC OFFSET ${n + 1} LIMIT ${n + 2}",
                *arguments,
                offset,
                limit,
            )
        )
        if offset == 0 and len(rows) < limit:
            return rows, len(rows)
        total = await connection.fetchval(
            f"SELECT count(*) FROM orders {where}",  # noqa: S608 - no input in the text
            *arguments,
        )
        return rows, int(total)

    async def read_lines(self, order_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, list[Row]]:
        """Every line of these orders in one query (no N+1), each order's lines in position."""
        lines: dict[uuid.UUID, list[Row]] = defaultdict(list)
        if not order_ids:
            return lines
        connection = await driver_connection(self.session)
        for row in await connection.fetch(_LINES_OF, list(order_ids)):
            lines[row["order_id"]].append(row)
        return lines

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
