"""SQL of the catalog. Returns models; turns constraint violations into domain errors."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.features.products.errors import SkuTakenError
from app.features.products.models import Product


def _constraint_of(exc: IntegrityError) -> str | None:
    cause = getattr(exc.orig, "__cause__", None)
    name = getattr(cause, "constraint_name", None)
    return str(name) if name else None


def _like_pattern(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


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

    async def list(
        self, *, offset: int, limit: int, q: str | None, include_inactive: bool
    ) -> tuple[Sequence[Product], int]:
        """One page ordered by name then id, and the total, in one round trip."""
        conditions: list[Any] = []
        if not include_inactive:
            conditions.append(col(Product.is_active).is_(True))
        if q:
            pattern = _like_pattern(q)
            conditions.append(
                or_(
                    col(Product.name).ilike(pattern, escape="\\"),
                    col(Product.sku).ilike(pattern, escape="\\"),
                )
            )
        total = func.count().over().label("total")
        statement = (
            select(Product, total)
            .where(*conditions)
            .order_by(col(Product.name), col(Product.id))
            .offset(offset)
            .limit(limit)
        )
        rows = (await self.session.execute(statement)).all()
        if rows:
            return [row[0] for row in rows], int(rows[0][1])
        if offset == 0:
            return [], 0
        # Past the last page: the window count has no row to ride on.
        count = select(func.count()).select_from(Product).where(*conditions)
        return [], int((await self.session.execute(count)).scalar_one())

    async def get_many(self, product_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Product]:
        """The products by id, read without locks (prices and names for an order's lines)."""
        statement = (
            select(Product)
            .where(col(Product.id).in_(product_ids))
            .execution_options(populate_existing=True)
        )
        rows = (await self.session.execute(statement)).scalars().all()
        return {product.id: product for product in rows}

    async def take_stock(self, product_id: uuid.UUID, quantity: int) -> bool:
        """Take `quantity` if an active product has that much: one conditional UPDATE.

        Under READ COMMITTED a concurrent taker waits for the row lock and then re-checks
        `stock >= quantity` against the committed row, so stock can never go below zero.
        """
        statement = (
            update(Product)
            .where(
                col(Product.id) == product_id,
                col(Product.is_active).is_(True),
                col(Product.stock) >= quantity,
            )
            .values(stock=col(Product.stock) - quantity, updated_at=func.now())
            .returning(col(Product.id))
            .execution_options(synchronize_session=False)
        )
        return (await self.session.execute(statement)).scalar_one_or_none() is not None

    async def add_stock(self, product_id: uuid.UUID, quantity: int) -> None:
        statement = (
            update(Product)
            .where(col(Product.id) == product_id)
            .values(stock=col(Product.stock) + quantity, updated_at=func.now())
            .execution_options(synchronize_session=False)
        )
        await self.session.execute(statement)

    async def stock_state(self, product_id: uuid.UUID) -> tuple[int, bool] | None:
        """The committed stock and activity of a product (why a take failed)."""
        statement = select(col(Product.stock), col(Product.is_active)).where(
            col(Product.id) == product_id
        )
        row = (await self.session.execute(statement)).one_or_none()
        return None if row is None else (int(row[0]), bool(row[1]))
