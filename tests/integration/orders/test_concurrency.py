"""Orders under real concurrency: a uvicorn server on a loopback port, many clients at once.

Every request has its own HTTP connection and its own database connection from the server's
pool, so the database sees truly simultaneous transactions.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest

from app.main import create_app
from tests.conftest import SettingsFactory
from tests.in_loop import serving
from tests.integration.catalog import ORDERS, Login, ProductFactory

pytestmark = pytest.mark.slow

ROUNDS = 3


@pytest.fixture
async def live_url(make_settings: SettingsFactory) -> AsyncIterator[str]:
    """The app served by uvicorn on a free loopback port, for the duration of a test."""
    app = create_app(make_settings(db_pool_size=10, db_max_overflow=10))
    async with serving(app, lifespan="on") as port:
        yield f"http://127.0.0.1:{port}"


async def fire(
    clients: list[httpx.AsyncClient], bodies: list[tuple[int, dict[str, Any], dict[str, str]]]
) -> list[httpx.Response]:
    """Send every (client index, body, extra headers) at once."""
    return await asyncio.gather(
        *(clients[index].post(ORDERS, json=body, headers=extra) for index, body, extra in bodies)
    )


@pytest.fixture
async def clients(live_url: str, login: Login) -> AsyncIterator[list[httpx.AsyncClient]]:
    """Eight users, each with a client of their own."""
    opened = []
    for _ in range(8):
        _, headers = await login()
        opened.append(
            httpx.AsyncClient(
                base_url=live_url,
                headers=headers,
                timeout=30,
                limits=httpx.Limits(max_connections=50, max_keepalive_connections=0),
            )
        )
    yield opened
    for client in opened:
        await client.aclose()


async def test_forty_orders_for_ten_in_stock_sell_exactly_ten(
    clients: list[httpx.AsyncClient], make_product: ProductFactory, db_conn: asyncpg.Connection
) -> None:
    for _ in range(ROUNDS):
        product = await make_product(stock=10, price_cents=100)
        body = {"items": [{"product_id": str(product.id), "quantity": 1}]}
        responses = await fire(clients, [(i % len(clients), body, {}) for i in range(40)])
        statuses = Counter(response.status_code for response in responses)
        assert statuses == {201: 10, 409: 30}, statuses
        codes = {r.json()["code"] for r in responses if r.status_code == 409}
        assert codes == {"INSUFFICIENT_STOCK"}
        assert await db_conn.fetchval("SELECT stock FROM products WHERE id = $1", product.id) == 0
        sold = await db_conn.fetchval(
            "SELECT coalesce(sum(quantity), 0) FROM order_lines WHERE product_id = $1", product.id
        )
        assert sold == 10
        assert (
            await db_conn.fetchval(
                "SELECT count(DISTINCT order_id) FROM order_lines WHERE product_id = $1", product.id
            )
            == 10
        )


async def test_orders_of_the_same_products_in_any_line_order_never_deadlock(
    clients: list[httpx.AsyncClient], make_product: ProductFactory, db_conn: asyncpg.Connection
) -> None:
    first = await make_product(stock=1000)
    second = await make_product(stock=1000)
    forward = {
        "items": [
            {"product_id": str(first.id), "quantity": 1},
            {"product_id": str(second.id), "quantity": 2},
        ]
    }
    backward = {"items": list(reversed(forward["items"]))}
    requests = [(i % len(clients), forward if i % 2 else backward, {}) for i in range(40)]
    responses = await fire(clients, requests)
    assert Counter(response.status_code for response in responses) == {201: 40}
    assert await db_conn.fetchval("SELECT stock FROM products WHERE id = $1", first.id) == 960
    assert await db_conn.fetchval("SELECT stock FROM products WHERE id = $1", second.id) == 920


async def test_the_same_key_twice_at_once_makes_exactly_one_order(
    clients: list[httpx.AsyncClient], make_product: ProductFactory, db_conn: asyncpg.Connection
) -> None:
    product = await make_product(stock=1000)
    body = {"items": [{"product_id": str(product.id), "quantity": 1}]}
    for round_number in range(ROUNDS * 2):
        key = {"Idempotency-Key": f"twice-{round_number}-{uuid.uuid4()}"}
        before = await db_conn.fetchval("SELECT count(*) FROM orders")
        responses = await fire(clients, [(0, body, key), (0, body, key)])
        fresh = [
            r for r in responses if r.status_code == 201 and "idempotent-replayed" not in r.headers
        ]
        others = [r for r in responses if r not in fresh]
        assert len(fresh) == 1, [(r.status_code, r.text) for r in responses]
        for response in others:
            if response.status_code == 201:
                assert response.headers["idempotent-replayed"] == "true"
                assert response.json() == fresh[0].json()
            else:
                assert response.status_code == 409
                assert response.json()["code"] == "IDEMPOTENCY_KEY_IN_USE"
        assert await db_conn.fetchval("SELECT count(*) FROM orders") == before + 1
    assert await db_conn.fetchval("SELECT stock FROM products WHERE id = $1", product.id) == (
        1000 - ROUNDS * 2
    )
