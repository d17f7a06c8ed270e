"""What placing an order waits for: the statements before its response, and nothing after it.

Issue 19: an order, its lines, its status history, its event, its confirmation email and its
idempotent outcome reach PostgreSQL in one statement; the hand-off of the email to the queue runs
after the response, not before it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import asyncpg
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import event

from tests.integration.catalog import ORDERS, Login, ProductFactory


@contextmanager
def statements_of_this_task(app: FastAPI) -> Iterator[list[str]]:
    """The SQL the app's engine runs on behalf of the calling task (the in-process request),
    not its background tasks (the relay, the event reader, post-response hand-offs)."""
    caller = asyncio.current_task()
    seen: list[str] = []

    def record(*args: Any) -> None:
        statement: str = args[2]
        if asyncio.current_task() is caller:
            seen.append(" ".join(statement.split()))

    engine = app.state.engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


async def test_an_order_and_all_it_writes_go_to_the_database_in_one_statement(
    app: FastAPI,
    client: AsyncClient,
    login: Login,
    make_product: ProductFactory,
    db_conn: asyncpg.Connection,
) -> None:
    user, headers = await login()
    first = await make_product(stock=5, price_cents=250)
    second = await make_product(stock=5, price_cents=100)
    body = {
        "items": [
            {"product_id": str(first.id), "quantity": 2},
            {"product_id": str(second.id), "quantity": 1},
        ]
    }

    with statements_of_this_task(app) as statements:
        response = await client.post(
            ORDERS, json=body, headers={**headers, "Idempotency-Key": "one-trip"}
        )

    assert response.status_code == 201, response.text
    order_id = uuid.UUID(response.json()["id"])
    # The caller, the key's lock, the stock (checked and taken at once), then every write.
    assert len(statements) == 4, statements
    assert statements[0].startswith("SELECT users.")
    assert "pg_try_advisory_xact_lock" in statements[1]
    assert statements[2].startswith("WITH wanted AS")
    assert "UPDATE products" in statements[2]
    batch = statements[3]
    for table in (
        "orders",
        "order_lines",
        "order_status_history",
        "event_outbox",
        "outbox",
        "idempotency_keys",
    ):
        assert f"INSERT INTO {table} " in batch, (table, batch)
    # All of it committed together.
    assert await db_conn.fetchval("SELECT count(*) FROM order_lines WHERE order_id = $1", order_id)
    assert await db_conn.fetchval(
        "SELECT count(*) FROM order_status_history WHERE order_id = $1", order_id
    )
    assert await db_conn.fetchval(
        "SELECT count(*) FROM event_outbox WHERE data->>'id' = $1", str(order_id)
    )
    assert await db_conn.fetchval(
        "SELECT count(*) FROM outbox WHERE payload->'context'->'order'->>'id' = $1", str(order_id)
    )
    stored = await db_conn.fetchrow(
        "SELECT response_status, location FROM idempotency_keys WHERE user_id = $1 AND key = $2",
        user.id,
        "one-trip",
    )
    assert stored is not None
    assert stored["response_status"] == 201
    assert stored["location"] == f"{ORDERS}/{order_id}"
    assert await db_conn.fetchval("SELECT stock FROM products WHERE id = $1", first.id) == 3


async def test_a_refused_order_writes_nothing_and_takes_no_stock(
    app: FastAPI,
    client: AsyncClient,
    login: Login,
    make_product: ProductFactory,
    db_conn: asyncpg.Connection,
) -> None:
    _, headers = await login()
    plenty = await make_product(stock=50)
    scarce = await make_product(stock=1)
    body = {
        "items": [
            {"product_id": str(plenty.id), "quantity": 3},
            {"product_id": str(scarce.id), "quantity": 2},
        ]
    }
    counts = "SELECT (SELECT count(*) FROM orders), (SELECT count(*) FROM event_outbox), " + (
        "(SELECT count(*) FROM outbox)"
    )
    before = await db_conn.fetchrow(counts)

    with statements_of_this_task(app) as statements:
        response = await client.post(ORDERS, json=body, headers=headers)

    assert response.status_code == 409
    assert response.json()["code"] == "INSUFFICIENT_STOCK"
    assert not any("INSERT INTO" in statement for statement in statements), statements
    assert await db_conn.fetchrow(counts) == before
    assert await db_conn.fetchval("SELECT stock FROM products WHERE id = $1", plenty.id) == 50
    assert await db_conn.fetchval("SELECT stock FROM products WHERE id = $1", scarce.id) == 1
