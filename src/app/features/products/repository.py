"""SQL of the catalog. Returns models; turns constraint violations into domain errors."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from sqlalchemy import case, func, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.features.products.errors import SkuTakenError
from app.features.products.models import ImageStatus, Product, ProductImage


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


# Image writes of one product take this lock first (held to the end of their transaction): the
# count that enforces the limit and the positions they shift cannot change under them. Orders
# lock product rows, never this, so uploads and orders do not wait for each other.
_LOCK_IMAGES = text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))")


class ImageRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def lock_product(self, product_id: uuid.UUID) -> None:
        await self.session.execute(_LOCK_IMAGES, {"key": f"product_images:{product_id}"})

    async def count(self, product_id: uuid.UUID) -> int:
        statement = (
            select(func.count())
            .select_from(ProductImage)
            .where(col(ProductImage.product_id) == product_id)
        )
        return int((await self.session.execute(statement)).scalar_one())

    async def get(
        self, product_id: uuid.UUID, image_id: uuid.UUID, *, for_update: bool = False
    ) -> ProductImage | None:
        statement = select(ProductImage).where(
            col(ProductImage.id) == image_id, col(ProductImage.product_id) == product_id
        )
        if for_update:
            statement = statement.with_for_update()
        return (await self.session.execute(statement)).scalar_one_or_none()

    async def get_by_id(self, image_id: uuid.UUID) -> ProductImage | None:
        return await self.session.get(ProductImage, image_id)

    async def of_products(
        self, product_ids: Sequence[uuid.UUID]
    ) -> dict[uuid.UUID, list[ProductImage]]:
        """The images of these products, each list by position."""
        found: dict[uuid.UUID, list[ProductImage]] = {pid: [] for pid in product_ids}
        if not product_ids:
            return found
        statement = (
            select(ProductImage)
            .where(col(ProductImage.product_id).in_(list(product_ids)))
            .order_by(col(ProductImage.product_id), col(ProductImage.position))
        )
        for image in (await self.session.execute(statement)).scalars():
            found[image.product_id].append(image)
        return found

    async def add(self, image: ProductImage) -> ProductImage:
        self.session.add(image)
        await self.session.flush()
        return image

    async def move(self, image: ProductImage, position: int) -> None:
        """Put `image` at `position`, shifting the images in between by one (the unique
        position constraint is deferred to the commit)."""
        old = image.position
        if position == old:
            return
        step = 1 if position < old else -1
        low, high = min(old, position), max(old, position)
        statement = (
            update(ProductImage)
            .where(
                col(ProductImage.product_id) == image.product_id,
                col(ProductImage.position).between(low, high),
            )
            .values(
                position=case(
                    (col(ProductImage.id) == image.id, position),
                    else_=col(ProductImage.position) + step,
                ),
                updated_at=func.now(),
            )
            .execution_options(synchronize_session=False)
        )
        await self.session.execute(statement)
        await self.session.refresh(image)

    async def delete(self, image: ProductImage) -> None:
        """Delete the row and close the gap it leaves in the positions."""
        await self.session.delete(image)
        await self.session.flush()
        await self.session.execute(
            update(ProductImage)
            .where(
                col(ProductImage.product_id) == image.product_id,
                col(ProductImage.position) > image.position,
            )
            .values(position=col(ProductImage.position) - 1, updated_at=func.now())
            .execution_options(synchronize_session=False)
        )

    async def mark_ready(self, image_id: uuid.UUID, variants: dict[str, Any]) -> uuid.UUID | None:
        """`processing` -> `ready` with its variants; the product's id, or None when the image
        is gone or no longer processing."""
        statement = (
            update(ProductImage)
            .where(
                col(ProductImage.id) == image_id,
                col(ProductImage.status) == ImageStatus.processing,
            )
            .values(status=ImageStatus.ready, variants=variants, updated_at=func.now())
            .returning(col(ProductImage.product_id))
        )
        product_id: uuid.UUID | None = (await self.session.execute(statement)).scalar_one_or_none()
        return product_id

    async def mark_failed(self, image_id: uuid.UUID) -> uuid.UUID | None:
        statement = (
            update(ProductImage)
            .where(
                col(ProductImage.id) == image_id,
                col(ProductImage.status) == ImageStatus.processing,
            )
            .values(status=ImageStatus.failed, updated_at=func.now())
            .returning(col(ProductImage.product_id))
        )
        product_id: uuid.UUID | None = (await self.session.execute(statement)).scalar_one_or_none()
        return product_id
