"""ProductService's stock operations, as orders use them, on a real session."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.core.cache import Cache
from app.features.products.errors import InsufficientStockError, ProductUnavailableError
from app.features.products.service import ProductService, StockLine
from tests.integration.catalog import ProductFactory


@pytest.fixture
async def service(db_engine: AsyncEngine, redis_client: Redis) -> AsyncIterator[ProductService]:
    async with AsyncSession(db_engine, expire_on_commit=False) as session:
        yield ProductService(session, Cache(redis_client), currency="USD")
        await session.rollback()


class TestTakeStock:
    """What `take_stock` does when the catalog changed after the lines were priced."""

    async def test_a_product_deactivated_meanwhile_is_unavailable_with_its_line(
        self, service: ProductService, make_product: ProductFactory
    ) -> None:
        kept = await make_product(stock=5)
        retired = await make_product(stock=5, is_active=False)
        with pytest.raises(ProductUnavailableError) as raised:
            await service.take_stock([StockLine(kept.id, 1), StockLine(retired.id, 1)])
        assert raised.value.line_indexes == [1]

    async def test_a_product_gone_is_unavailable(self, service: ProductService) -> None:
        with pytest.raises(ProductUnavailableError):
            await service.take_stock([StockLine(uuid.uuid4(), 1)])

    async def test_stock_sold_meanwhile_is_insufficient_with_what_is_left(
        self, service: ProductService, make_product: ProductFactory
    ) -> None:
        product = await make_product(stock=2)
        with pytest.raises(InsufficientStockError) as raised:
            await service.take_stock([StockLine(product.id, 3)])
        assert raised.value.extra == {
            "product_id": str(product.id),
            "requested": 3,
            "available": 2,
        }

    async def test_taken_and_given_back_stock_is_exact(
        self,
        service: ProductService,
        make_product: ProductFactory,
        db_conn: asyncpg.Connection,
    ) -> None:
        first, second = await make_product(stock=5), await make_product(stock=7)
        lines = [StockLine(second.id, 7), StockLine(first.id, 2)]
        await service.take_stock(lines)
        await service.session.commit()
        stocks = {
            r["id"]: r["stock"] for r in await db_conn.fetch("SELECT id, stock FROM products")
        }
        assert stocks == {first.id: 3, second.id: 0}
        await service.give_back_stock(lines)
        await service.session.commit()
        stocks = {
            r["id"]: r["stock"] for r in await db_conn.fetch("SELECT id, stock FROM products")
        }
        assert stocks == {first.id: 5, second.id: 7}
