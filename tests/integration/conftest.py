"""Fixtures of every integration test directory: catalog products and logged-in users.

The base fixtures (the app, `client`, `make_user`, `auth_headers`, the database) are in
`tests/conftest.py`; helpers that are not fixtures (URLs, `place_order`) in
`tests/integration/catalog.py`.
"""

from __future__ import annotations

import secrets
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.features.products.models import Product
from app.features.users.models import Role, User
from tests.conftest import HeadersFactory, UserFactory
from tests.integration.catalog import Login, ProductFactory


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


@pytest.fixture
def login(make_user: UserFactory, auth_headers: HeadersFactory) -> Login:
    """A new user and their Authorization header: `user, headers = await login(role=...)`."""

    async def make(*, role: Role = Role.user, **kwargs: Any) -> tuple[User, dict[str, str]]:
        user = await make_user(role=role, **kwargs)
        headers: dict[str, str] = await auth_headers(user)
        return user, headers

    return make
