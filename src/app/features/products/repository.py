"""SQL of the catalog. Returns models; turns constraint violations into domain errors."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import NamedTuple

from sqlalchemy import func, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.features.products.errors import SkuTakenError
from app.features.products.models import Product


class StockRow(NamedTuple):
    """What an order needs of a product: its snapshot for the line, and its stock."""

    id: uuid.UUID
    sku: str
    name: str
    price_cents: int
    stock: int
    is_active: bool


# Built once: the hot path of every order then skips building and hashing the statement.
# `FOR NO KEY UPDATE` is the lock the stock UPDATE takes anyway (foreign keys from new order
# lines still only need `KEY SHARE`). Rows are locked in id order, the order every stock change
# takes them in, so two orders of the same products cannot deadlock.
_LOCK_FOR_ORDER = text(
    "SELECT id, sku, name, price_cents, stock, is_active FROM products "
    "WHERE id = ANY(CAST(:ids AS uuid[])) ORDER BY id FOR NO KEY UPDATE"
)
_TAKE_LOCKED_STOCK = text(
    "UPDATE products SET stock = products.stock - taken.quantity, updated_at = now() "
    "FROM unnest(CAST(:ids AS uuid[]), CAST(:quantities AS integer[])) AS taken(id, quantity) "
    "WHERE products.id = taken.id"
)


def _constraint_of(exc: IntegrityError) -> str | None:
    cause = getattr(exc.orig, "__cause__", None)
    name = getattr(cause, "constraint_name", None)
    return str(name) if name else None


class ProductRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, product_id: uuid.UUID) -> Product | None:
        return await self.session.get(Product, product_id)

    async def add(self, product: Product) -> Product:
        self.session.add(product)
        try:
            # A savepoint, so that a taken sku leaves the request's transaction usable.
            async with self.session.begin_nested():
                await self.session.flush()
        except IntegrityError as exc:
            if _constraint_of(exc) == "uq_products_sku":
                raise SkuTakenError(product.sku) from None
            raise
        return product

    async def flush(self) -> None:
        await self.session.flush()

    async def lock_for_order(self, product_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, StockRow]:
        """The products by id, each row locked until the transaction ends, for an order to take
        their stock: what they cost, whether they are on sale and how many are left."""
        result = await self.session.execute(_LOCK_FOR_ORDER, {"ids": list(product_ids)})
        return {row.id: StockRow(*row) for row in result}

    async def take_locked_stock(self, quantities: Mapping[uuid.UUID, int]) -> int:
        """Take each product's quantity in one UPDATE; returns how many rows it changed.

        Only for rows this transaction has locked (`lock_for_order`) and checked: the stock
        cannot have moved since, and the CHECK (stock >= 0) still stands behind it.
        """
        result = await self.session.execute(
            _TAKE_LOCKED_STOCK, {"ids": list(quantities), "quantities": list(quantities.values())}
        )
        return int(getattr(result, "rowcount", 0) or 0)

    async def add_stock(self, product_id: uuid.UUID, quantity: int) -> None:
        statement = (
            update(Product)
            .where(col(Product.id) == product_id)
            .values(stock=col(Product.stock) + quantity, updated_at=func.now())
            .execution_options(synchronize_session=False)
        )
        await self.session.execute(statement)
