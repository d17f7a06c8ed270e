"""SQL of orders: reads that load lines in one query, row locks for status changes, and the
idempotency records."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import delete, select, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.core.database import driver_connection, uuid7
from app.features.orders.models import (
    IdempotencyRecord,
    Order,
    OrderLine,
    OrderStatus,
    OrderStatusChange,
)
from app.features.orders.schemas import OrderOut
from app.features.users.models import User

# The statements of order creation, built once: every order then skips building, hashing and
# compiling them, and PostgreSQL sees the same text whatever the number of lines.
_ORDER_AND_LINES = """
    WITH new_order AS (
        INSERT INTO orders (id, user_id, status, total_cents, currency, note, created_at,
                            updated_at)
        VALUES (CAST(:id AS uuid), :user_id, :status, :total_cents, :currency, :note,
                CAST(:created_at AS timestamptz), :updated_at)
    ), new_lines AS (
        INSERT INTO order_lines (order_id, position, product_id, sku, name, unit_price_cents,
                                 quantity, line_total_cents)
        SELECT CAST(:id AS uuid), line.position - 1, line.product_id, line.sku, line.name,
               line.unit_price_cents, line.quantity, line.line_total_cents
        FROM unnest(CAST(:product_ids AS uuid[]), CAST(:skus AS varchar[]),
                    CAST(:names AS varchar[]), CAST(:unit_prices AS integer[]),
                    CAST(:quantities AS integer[]), CAST(:line_totals AS bigint[]))
             WITH ORDINALITY AS line(product_id, sku, name, unit_price_cents, quantity,
                                     line_total_cents, position)
    )"""
_KEY = """, new_key AS (
        INSERT INTO idempotency_keys (user_id, key, request_hash, response_status, response_body,
                                      response_content_type, location, order_id, created_at,
                                      expires_at)
        VALUES (:key_user_id, :key_key, :key_request_hash, :key_response_status,
                :key_response_body, :key_response_content_type, :key_location, :key_order_id,
                :key_created_at, :key_expires_at)
    )"""
_FIRST_CHANGE = """
    INSERT INTO order_status_history (id, order_id, from_status, to_status, changed_by, changed_at)
    VALUES (:change_id, CAST(:id AS uuid), NULL, :status, :changed_by,
            CAST(:created_at AS timestamptz))
    """
_ADD_ORDER = text(_ORDER_AND_LINES + _FIRST_CHANGE)
_ADD_ORDER_WITH_KEY = text(_ORDER_AND_LINES + _KEY + _FIRST_CHANGE)
_TRY_LOCK_KEY = text("SELECT pg_try_advisory_xact_lock(hashtextextended(:lock_key, 0))")
_GET_KEY = text(
    "SELECT request_hash, response_status, response_body, response_content_type, location, "
    "order_id, expires_at FROM idempotency_keys WHERE user_id = :user_id AND key = :key"
)
_DELETE_KEY = text("DELETE FROM idempotency_keys WHERE user_id = :user_id AND key = :key")
_ADD_KEY = text(
    "INSERT INTO idempotency_keys (user_id, key, request_hash, response_status, response_body, "
    "response_content_type, location, order_id, created_at, expires_at) VALUES (:user_id, :key, "
    ":request_hash, :response_status, :response_body, :response_content_type, :location, "
    ":order_id, :created_at, :expires_at)"
)


class KeyRecord(NamedTuple):
    """A new idempotency record: the first outcome of a key."""

    user_id: uuid.UUID
    key: str
    request_hash: str
    response_status: int
    response_body: str
    response_content_type: str
    location: str | None
    order_id: uuid.UUID | None
    created_at: datetime
    expires_at: datetime


class StoredKey(NamedTuple):
    """An idempotency record as a repeat of its key needs it."""

    request_hash: str
    response_status: int
    response_body: str
    response_content_type: str
    location: str | None
    order_id: uuid.UUID | None
    expires_at: datetime


# A row as asyncpg returns it (a Record: read by column name).
Row = Mapping[str, Any]

_ORDER_COLUMNS = "id, user_id, status, total_cents, currency, note, created_at, updated_at"
_LINE_COLUMNS = "product_id, sku, name, unit_price_cents, quantity, line_total_cents"
_ORDER_WITH_LINES = (
    # Every column qualified: a column added to either table later cannot make one ambiguous.
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
        self, order: OrderOut, *, changed_by: uuid.UUID, key: KeyRecord | None = None
    ) -> None:
        """Insert a new order, its lines, its first status change and (with `key`) the
        idempotency record that stores its outcome, all in one statement: one round trip
        instead of a flush per table."""
        items = order.items
        params: dict[str, Any] = {
            "id": order.id,
            "user_id": order.user_id,
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
        if key is None:
            await self.session.execute(_ADD_ORDER, params)
            return
        params.update({f"key_{name}": value for name, value in key._asdict().items()})
        await self.session.execute(_ADD_ORDER_WITH_KEY, params)

    # Reads -------------------------------------------------------------------------------
    # With asyncpg directly, on the session's own connection: the ORM's statement and row
    # machinery cost several times the queries here, and these are the hottest reads of orders.
    # They return asyncpg rows, read by column name, not tracked objects.

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
        locked = await self.session.scalar(_TRY_LOCK_KEY, {"lock_key": f"order:{user_id}:{key}"})
        return bool(locked)

    async def get_key(self, user_id: uuid.UUID, key: str, *, now: datetime) -> StoredKey | None:
        """The stored outcome of the key; an expired one is deleted and counts as unused."""
        params = {"user_id": user_id, "key": key}
        row = (await self.session.execute(_GET_KEY, params)).first()
        if row is None:
            return None
        stored = StoredKey(*row)
        if stored.expires_at <= now:
            await self.session.execute(_DELETE_KEY, params)
            return None
        return stored

    async def add_key(self, record: KeyRecord) -> None:
        await self.session.execute(_ADD_KEY, record._asdict())

    async def purge_keys(self, *, now: datetime) -> int:
        result = await self.session.execute(
            delete(IdempotencyRecord).where(col(IdempotencyRecord.expires_at) <= now)
        )
        return int(getattr(result, "rowcount", 0) or 0)
