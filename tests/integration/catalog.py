"""Factories and helpers shared by the catalog and orders tests (imported by their conftests)."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import pytest
from httpx import AsyncClient, Response
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.features.products.models import Product
from app.features.users.models import Role, User

PROBLEM = "application/problem+json"

ProductFactory = Callable[..., Awaitable[Product]]


@pytest.fixture
def make_product(db_engine: AsyncEngine) -> ProductFactory:
    """Write a product straight to the database: `await make_product(stock=3, price_cents=500)`."""

    async def make(
        *,
        sku: str | None = None,
        name: str | None = None,
        description: str | None = None,
        price_cents: int = 1000,
        stock: int = 10,
        is_active: bool = True,
    ) -> Product:
        product = Product(
            sku=sku or f"SKU-{secrets.token_hex(4).upper()}",
            name=name or f"Product {secrets.token_hex(3)}",
            description=description,
            price_cents=price_cents,
            stock=stock,
            is_active=is_active,
        )
        async with AsyncSession(db_engine, expire_on_commit=False) as session:
            session.add(product)
            await session.commit()
        return product

    return make


Login = Callable[..., Awaitable[tuple[User, dict[str, str]]]]


@pytest.fixture
def login(make_user: Callable[..., Awaitable[User]], auth_headers: Any) -> Login:
    """A new user and their Authorization header: `user, headers = await login(role=...)`."""

    async def make(*, role: Role = Role.user, **kwargs: Any) -> tuple[User, dict[str, str]]:
        user = await make_user(role=role, **kwargs)
        headers: dict[str, str] = await auth_headers(user)
        return user, headers

    return make


def assert_problem(response: Response, status: int, code: str) -> dict[str, Any]:
    """The response is the Problem Details envelope of API.md with this status and code."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["code"] == code
    assert body["type"] == "about:blank"
    assert body["title"]
    assert body["instance"] == response.request.url.path
    assert body["request_id"] == response.headers["x-request-id"]
    assert isinstance(body["errors"], list)
    return body


def locs(body: dict[str, Any]) -> list[list[str | int]]:
    return [error["loc"] for error in body["errors"]]


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
    client: AsyncClient, headers: dict[str, str], product_id: uuid.UUID, quantity: int = 1
) -> dict[str, Any]:
    """Place a one-line order through the API; it must succeed."""
    response = await client.post(
        ORDERS,
        json={"items": [{"product_id": str(product_id), "quantity": quantity}]},
        headers=headers,
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body
