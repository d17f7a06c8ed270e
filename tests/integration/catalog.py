"""Helpers (not fixtures) of the catalog and orders tests: URLs, the stock as stored, placing an
order. The fixtures (`make_product`, `login`) are in `tests/integration/conftest.py`."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
from httpx import AsyncClient

from app.features.products.models import Product
from app.features.users.models import User

ProductFactory = Callable[..., Awaitable[Product]]
Login = Callable[..., Awaitable[tuple[User, dict[str, str]]]]


def product_url(product_id: uuid.UUID | str) -> str:
    return f"/api/v1/products/{product_id}"


ORDERS = "/api/v1/orders"


def order_url(order_id: uuid.UUID | str) -> str:
    return f"{ORDERS}/{order_id}"


async def stock_of(db_conn: asyncpg.Connection, product_id: uuid.UUID) -> int:
    """The product's stock as the database holds it (outside the app and its cache)."""
    value: int = await db_conn.fetchval("SELECT stock FROM products WHERE id = $1", product_id)
    return value


async def place_order(
    client: AsyncClient,
    headers: dict[str, str],
    product_id: uuid.UUID | None = None,
    quantity: int = 1,
    *,
    body: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Place an order through the API (one line of `product_id`, or the whole `body`); it must
    succeed. The order as answered."""
    if body is None:
        assert product_id is not None
        body = {"items": [{"product_id": str(product_id), "quantity": quantity}]}
    response = await client.post(ORDERS, json=body, headers=headers)
    assert response.status_code == 201, response.text
    order: dict[str, Any] = response.json()
    return order
